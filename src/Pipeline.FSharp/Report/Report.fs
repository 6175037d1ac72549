/// `./metagenrl report DIR`: tables (summary.md), learning curves (PNG and one HTML page) and optional
/// TensorBoard event files for an experiment folder, a run folder or any folder of tidy Parquet results.
module MetaGenRL.Pipeline.Report

open System
open System.IO
open System.Text
open MetaGenRL.Pipeline.ReportData

type ReportOptions =
    { /// Output folder (default: DIR/report).
      Out: string option
      /// Also write TensorBoard event files per run and agent under <out>/tensorboard/.
      TensorBoard: bool }

    static member Default = { Out = None; TensorBoard = false }

type ReportResult =
    { /// The Markdown written to summary.md.
      Summary: string
      OutDir: string
      /// Every file written, in order.
      Files: string list }

/// Points of a learning-curve grid and the bootstrap every table uses (deterministic: fixed seed).
let gridPoints = 50
let bootstrap = Stats.defaultBootstrap

let private inv = Globalization.CultureInfo.InvariantCulture
let private num (x: float) = if Double.IsNaN x then "n/a" else x.ToString("F2", inv)
let private ci (lo: float, hi: float) = sprintf "[%s, %s]" (num lo) (num hi)
let private isBaseline (r: Run) = r.Phase = "train"
let private isEvaluation (r: Run) = r.Phase = "meta-test" || r.Phase = "train"
let private isMetaTrain (r: Run) = r.Phase = "meta-train"
let private fileSafe (s: string) = String(s |> Seq.map (fun c -> if Char.IsLetterOrDigit c || c = '-' || c = '.' || c = '_' then c else '_') |> Array.ofSeq)

let definitions = """## Definitions

- **Run**: one trial_id (run_id where there is no trial_id). **Method**: variant + train envs (meta-train env set,
  when known) + swept values, e.g. `full (Pendulum-v1+MountainCarContinuous-v0) [agent_count=4]`. Baselines
  (phase `train`) are named by their algorithm (`td3`, `ddpg`, `reinforce-offpolicy`, `random-objective`).
- **Final return** of a run on an env: per agent, the mean `episode_return` of the episodes that ended at
  env_step ≥ 0.9 × the run's largest env_step on that env (the last 10 % of its steps), or its last episode if
  none did; agents on the same env are averaged.
- Tables use phases `meta-test` and `train`. Cells: mean ± sample std (ddof 1; `n/a` for n = 1) over runs.
- **IQM**: interquartile mean as rliable computes it (scipy.stats.trim_mean(x, 0.25): drop floor(n/4) runs at each
  end, average the rest; nothing is dropped for n < 4). **95 % CI**: percentile bootstrap, 2000 resamples, seed 0.
- **P(> td3)**: probability of improvement over TD3, P(X > Y) + ½ P(X = Y) over all pairs of a run X of the method
  and a run Y of td3 on the same env.
- **Normalised score** on an env: (x − r) / (t − r) with r = mean final return of `random-objective` and t = mean
  of `td3` there (min and max over all runs of the env when either is missing or t = r). Aggregate IQM pools all
  runs of all envs; its CI and that of the aggregate P (the mean over envs of the per-env P) come from a
  **stratified** bootstrap: runs are resampled with replacement within each env (and method) independently.
- Curves: each agent's values (episode returns, or meta-training diagnostics) are averaged per bin of a 50-point
  grid over [0, max step] and carried forward through empty bins (nothing before its first value); a run is the
  mean of its agents; lines are the mean across runs, shaded bands ± 1 std across runs.
"""

// ── TABLES ──

/// Final returns by (method, env), runs sorted by id, and the method order: meta-test methods grouped by
/// train envs, then the baselines.
let private finalTable (data: Data) =
    let finals = finalValues data "episode_return" isEvaluation
    let envs = finals |> Array.map (fun (_, e, _) -> e) |> Array.distinct |> Array.sort
    let byMethod =
        finals |> Array.groupBy (fun (r, _, _) -> data.Runs.[r].Method)
        |> Array.map (fun (m, xs) -> m, xs |> Array.map (fun (r, _, _) -> data.Runs.[r]) |> Array.distinct)
        |> Array.sortBy (fun (m, runs) -> isBaseline runs.[0], runs.[0].TrainEnvs |> Option.defaultValue "", m)
    let scores (pick: Run -> bool) env =
        finals |> Array.filter (fun (r, e, _) -> e = env && pick data.Runs.[r])
        |> Array.sortBy (fun (r, _, _) -> data.Runs.[r].Id) |> Array.map (fun (_, _, v) -> v)
    envs, byMethod, scores

let private isAlgo name (r: Run) = isBaseline r && r.Variant = name

let private table1 (sb: StringBuilder) (data: Data) =
    let envs, methods, scores = finalTable data
    sb.AppendLine("## Final returns\n") |> ignore
    sb.AppendLine("| train envs | method | " + String.Join(" | ", envs) + " |") |> ignore
    sb.AppendLine("|---|---|" + String.replicate envs.Length "---|") |> ignore
    for (m, runs) in methods do
        let cells =
            envs |> Array.map (fun env ->
                match scores (fun r -> r.Method = m) env with
                | [||] -> "—"
                | xs -> sprintf "%s ± %s (n = %d)%s" (num (Stats.mean xs)) (num (Stats.sampleStd xs)) xs.Length (seenMark runs env))
        let group = if isBaseline runs.[0] then "baseline" else runs.[0].TrainEnvs |> Option.defaultValue "—"
        sb.AppendLine(sprintf "| %s | %s | %s |" group m (String.Join(" | ", cells))) |> ignore

let private table2 (sb: StringBuilder) (data: Data) =
    let envs, methods, scores = finalTable data
    sb.AppendLine("\n## IQM and probability of improvement over TD3, per env\n") |> ignore
    sb.AppendLine("| env | method | n | IQM | 95 % CI | P(> td3) |\n|---|---|---|---|---|---|") |> ignore
    for env in envs do
        let td3 = scores (isAlgo "td3") env
        for (m, _) in methods do
            match scores (fun r -> r.Method = m) env with
            | [||] -> ()
            | xs ->
                let p = if td3.Length = 0 then "—" else num (Stats.probabilityOfImprovement xs td3)
                sb.AppendLine(sprintf "| %s | %s | %d | %s | %s | %s |" env m xs.Length (num (Stats.iqm xs))
                                  (ci (Stats.percentileBootstrapCI bootstrap Stats.iqm xs)) p) |> ignore

let private table3 (sb: StringBuilder) (data: Data) =
    let envs, methods, scores = finalTable data
    let norm env =
        let all = scores (fun _ -> true) env
        let r, t = Stats.mean (scores (isAlgo "random-objective") env), Stats.mean (scores (isAlgo "td3") env)
        let lo, hi = if Double.IsNaN r || Double.IsNaN t || t = r then Array.min all, Array.max all else r, t
        if hi = lo then (fun _ -> 0.0) else Stats.normalise lo hi
    sb.AppendLine("\n## Aggregate over envs (normalised: 0 = random-objective, 1 = td3)\n") |> ignore
    sb.AppendLine("| method | envs | IQM | 95 % CI | P(> td3) | 95 % CI |\n|---|---|---|---|---|---|") |> ignore
    for (m, _) in methods do
        let present = envs |> Array.filter (fun env -> (scores (fun r -> r.Method = m) env).Length > 0)
        let strata = present |> Array.map (fun env -> scores (fun r -> r.Method = m) env |> Array.map (norm env))
        let tasks =
            present |> Array.map (fun env -> scores (fun r -> r.Method = m) env, scores (isAlgo "td3") env)
            |> Array.filter (fun (_, y) -> y.Length > 0)
        let p, pci =
            if tasks.Length = 0 then "—", "—"
            else num (Stats.aggregateProbabilityOfImprovement tasks), ci (Stats.aggregateProbabilityOfImprovementCI bootstrap tasks)
        sb.AppendLine(sprintf "| %s | %d | %s | %s | %s | %s |" m present.Length (num (Stats.aggregateIqm strata))
                          (ci (Stats.stratifiedBootstrapCI bootstrap Stats.aggregateIqm strata)) p pci) |> ignore

/// Final value of a per-agent metric per method and env (meta-tests and baselines), when recorded.
let private finalMetricTable (sb: StringBuilder) (data: Data) (metric: string) (title: string) =
    let finals = finalValues data metric isEvaluation
    if finals.Length > 0 then
        let envs = finals |> Array.map (fun (_, e, _) -> e) |> Array.distinct |> Array.sort
        let methods = finals |> Array.map (fun (r, _, _) -> data.Runs.[r].Method) |> Array.distinct |> Array.sort
        sb.AppendLine(sprintf "\n## %s\n" title) |> ignore
        sb.AppendLine("| method | " + String.Join(" | ", envs) + " |") |> ignore
        sb.AppendLine("|---|" + String.replicate envs.Length "---|") |> ignore
        for m in methods do
            let cells =
                envs |> Array.map (fun env ->
                    match finals |> Array.filter (fun (r, e, _) -> e = env && data.Runs.[r].Method = m) |> Array.map (fun (_, _, v) -> v) with
                    | [||] -> "—"
                    | xs -> num (Stats.mean xs))
            sb.AppendLine(sprintf "| %s | %s |" m (String.Join(" | ", cells))) |> ignore

let diagnosticMetrics = [ "objective_loss"; "policy_value_gain"; "objective_critic_correlation"; "policy_objective_alignment" ]

let private diagnosticsLines (sb: StringBuilder) (data: Data) =
    let finals = diagnosticMetrics |> List.map (fun m -> m, finalValues data m isMetaTrain)
    let methods = data.Runs |> Array.filter isMetaTrain |> Array.map (fun r -> r.Method) |> Array.distinct |> Array.sort
    if methods.Length > 0 then
        sb.AppendLine("\n## Meta-training diagnostics (final values: last 10 % of steps, mean over agents, envs and runs)\n") |> ignore
        for m in methods do
            let parts =
                finals |> List.map (fun (metric, vs) ->
                    let xs = vs |> Array.filter (fun (r, _, _) -> data.Runs.[r].Method = m) |> Array.map (fun (_, _, v) -> v)
                    sprintf "%s %s" metric (num (Stats.mean xs)))
            let n = data.Runs |> Array.filter (fun r -> isMetaTrain r && r.Method = m) |> Array.length
            sb.AppendLine(sprintf "- %s (n = %d): %s" m n (String.Join("; ", parts))) |> ignore

// ── TENSORBOARD ──

/// One event-file folder per run and agent: <out>/tensorboard/<run>/agent<i>/, every metric as a scalar
/// against env_step.
let private writeTensorBoard (data: Data) (outDir: string) =
    MetaGenRL.Core.Native.EnsureLoaded()
    let root = Path.Combine(outDir, "tensorboard")
    if Directory.Exists root then Directory.Delete(root, true)
    [ for (r, a), rows in data.Obs |> Array.groupBy (fun o -> o.Run, o.Agent) |> Array.sortBy fst do
        let dir = Path.Combine(root, fileSafe data.Runs.[r].Id, sprintf "agent%d" a)
        Directory.CreateDirectory dir |> ignore
        let w = TorchSharp.torch.utils.tensorboard.SummaryWriter(dir)
        for o in rows |> Array.sortBy (fun o -> o.Step) do
            w.add_scalar(o.Metric, float32 o.Value, int (min o.Step (int64 Int32.MaxValue)))
        yield dir ]

// ── WRITE ──

let private experimentName (dir: string) =
    let path = Path.Combine(dir, "experiment.json")
    let fallback = Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath dir))
    try
        use doc = Text.Json.JsonDocument.Parse(File.ReadAllText path)
        match doc.RootElement.TryGetProperty "name" with
        | true, v when v.ValueKind = Text.Json.JsonValueKind.String -> v.GetString()
        | _ -> fallback
    with _ -> fallback

/// Reads DIR and writes summary.md, curves-<env>.png, meta-train-<env>.png, diagnostics.png, report.html
/// (and tensorboard/ on request) into opts.Out or DIR/report, each file atomically.
let write (dir: string) (opts: ReportOptions) : ReportResult =
    let data = load dir
    let outDir = opts.Out |> Option.defaultValue (Path.Combine(dir, "report"))
    Directory.CreateDirectory outDir |> ignore
    let files = Collections.Generic.List<string>()
    let save name (bytes: byte[]) =
        let p = Path.Combine(outDir, name)
        Results.writeAllBytesAtomic p bytes
        files.Add p
    let byEnv (o: Obs) = o.Env
    let evalCurves = curves data "episode_return" gridPoints isEvaluation byEnv
    let metaCurves = curves data "episode_return" gridPoints isMetaTrain byEnv
    let diagCurves =
        diagnosticMetrics |> List.collect (fun m -> curves data m gridPoints isMetaTrain (fun _ -> m) |> List.ofArray)
    // ── FIGURES ──
    for env, cs in evalCurves do
        save (sprintf "curves-%s.png" (fileSafe env)) (Plots.curvesPng (env + ": episode return (meta-test and baselines)") "episode return" cs)
    for env, cs in metaCurves do
        save (sprintf "meta-train-%s.png" (fileSafe env)) (Plots.curvesPng (env + ": episode return during meta-training") "episode return" cs)
    if not diagCurves.IsEmpty then
        save "diagnostics.png" (Plots.stackedPng [ for m, cs in diagCurves -> "meta-training: " + m, m, cs ])
    let name = experimentName dir
    let charts =
        [ for env, cs in evalCurves -> Plots.curvesChart (env + ": episode return") "episode return" cs
          for env, cs in metaCurves -> Plots.curvesChart (env + ": episode return during meta-training") "episode return" cs
          for m, cs in diagCurves -> Plots.curvesChart ("meta-training: " + m) m cs ]
    save "report.html" (Encoding.UTF8.GetBytes(Plots.htmlPage ("Report: " + name) charts))
    if opts.TensorBoard then files.AddRange(writeTensorBoard data outDir)
    // ── SUMMARY ──
    let sb = StringBuilder()
    sb.AppendLine(sprintf "# Report: %s\n" name) |> ignore
    sb.AppendLine(sprintf "%d runs from %d Parquet file(s) under `%s`.\n" data.Runs.Length data.Sources.Length dir) |> ignore
    table1 sb data
    table2 sb data
    table3 sb data
    finalMetricTable sb data "episode_action_extremity" "Final action extremity (mean |a| in the agent's box: 0 centre, 1 saturated)"
    finalMetricTable sb data "policy_objective_alignment" "Final objective alignment (cos(−∂L_α/∂a, ∂Q1/∂a) at π(s): 1 the critic's ascent direction, 0 unrelated)"
    diagnosticsLines sb data
    sb.AppendLine("\n## Figures\n") |> ignore
    for f in files do
        if not (f.StartsWith(Path.Combine(outDir, "tensorboard"))) then sb.AppendLine(sprintf "- `%s`" (Path.GetFileName f)) |> ignore
    sb.AppendLine("\nreport.html holds plotly.js itself, so it renders without a network.\n") |> ignore
    sb.Append(definitions) |> ignore
    let summary = sb.ToString()
    save "summary.md" (Encoding.UTF8.GetBytes summary)
    { Summary = summary; OutDir = outDir; Files = List.ofSeq files }
