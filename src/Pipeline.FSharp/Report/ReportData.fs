/// What a report reads: the tidy Parquet files of an experiment (or of any folder of runs), grouped into runs
/// and methods, with final returns and learning curves on a common grid.
///
/// Definitions (also written into summary.md):
/// - A run is one trial_id (or run_id where trial_id is absent).
/// - A method is variant + train_envs (when not null) + the swept values, e.g. "full (A+B) [agent_count=4]".
///   Baselines have phase `train` and their variant is the algorithm name.
/// - Final return of a run on an env: per agent, the mean episode_return over episodes that ended at
///   env_step ≥ 0.9 · (the run's largest env_step on that env, over all its rows), or the agent's last
///   episode if none did; agents on the same env are then averaged.
module MetaGenRL.Pipeline.ReportData

open System
open System.Collections.Generic
open System.IO
open System.Threading
open Parquet
open Parquet.Schema

/// One column of a row group: numbers (NaN for null; bool as 1/0) or strings (null for null).
type Column =
    | Num of float[]
    | Str of string[]

let private known =
    set [ "run_id"; "experiment"; "variant"; "phase"; "env"; "seed"; "agent"; "env_step"; "wall_time_s"; "metric"
          "value"; "trial_id"; "train_envs"; "meta_seed"; "seen" ]

let private readNum<'T when 'T: struct and 'T: (new: unit -> 'T) and 'T :> ValueType>
    (rg: ParquetRowGroupReader) (f: DataField) (n: int) (conv: 'T -> float) =
    if f.IsNullable then
        let a = Array.zeroCreate<Nullable<'T>> n
        rg.ReadAsync<'T>(f, Memory<Nullable<'T>> a, Nullable(), CancellationToken.None).AsTask().Wait()
        a |> Array.map (fun v -> if v.HasValue then conv v.Value else nan)
    else
        let a = Array.zeroCreate<'T> n
        rg.ReadAsync<'T>(f, Memory<'T> a, Nullable(), CancellationToken.None).AsTask().Wait()
        a |> Array.map conv

let private readColumn (rg: ParquetRowGroupReader) (f: DataField) (n: int) : Column option =
    let t = f.ClrType
    if t = typeof<string> || t = typeof<ReadOnlyMemory<char>> then // Parquet.Net 6 reports strings as ReadOnlyMemory<char>
        let a = Array.zeroCreate<string> n
        rg.ReadAsync(f, Memory<string> a, Nullable(), CancellationToken.None).AsTask().Wait()
        Some(Str a)
    elif t = typeof<float> then Some(Num(readNum<float> rg f n id))
    elif t = typeof<float32> then Some(Num(readNum<float32> rg f n float))
    elif t = typeof<int> then Some(Num(readNum<int> rg f n float))
    elif t = typeof<int64> then Some(Num(readNum<int64> rg f n float))
    elif t = typeof<int16> then Some(Num(readNum<int16> rg f n float))
    elif t = typeof<bool> then Some(Num(readNum<bool> rg f n (fun b -> if b then 1.0 else 0.0)))
    else None // a column of another type cannot be a key the report uses

/// One metric observation; `Run` indexes Data.Runs.
[<Struct>]
type Obs = { Run: int; Env: string; Agent: int; Step: int64; Metric: string; Value: float }

/// One run and the method it belongs to. `Seen` maps each meta-test env to the `seen` flag.
type Run =
    { Id: string; Variant: string; Phase: string; TrainEnvs: string option; Swept: (string * string) list
      Method: string; Seen: Map<string, bool> }

type Data = { Runs: Run[]; Obs: Obs[]; Sources: string list }

/// "variant (train_envs) [k=v, …]".
let methodName (variant: string) (trainEnvs: string option) (swept: (string * string) list) =
    let envs = trainEnvs |> Option.map (sprintf " (%s)") |> Option.defaultValue ""
    let sw = if swept.IsEmpty then "" else swept |> List.map (fun (k, v) -> k + "=" + v) |> String.concat ", " |> sprintf " [%s]"
    variant + envs + sw

/// The Parquet files a report reads under `dir`: results.parquet if present, else every metrics.parquet
/// below it (skipping report/). A missing folder or no file is a usage error naming the folder.
let findSources (dir: string) =
    if not (Directory.Exists dir) then Errors.usageError "report '%s': no such folder" dir
    let merged = Path.Combine(dir, "results.parquet")
    let files =
        if File.Exists merged then [ merged ]
        else
            try
                let reportDir = Path.GetFullPath(Path.Combine(dir, "report")) + string Path.DirectorySeparatorChar
                Directory.EnumerateFiles(dir, "metrics.parquet", SearchOption.AllDirectories)
                |> Seq.filter (fun f -> not (Path.GetFullPath(f).StartsWith reportDir))
                |> Seq.sort |> List.ofSeq
            with :? UnauthorizedAccessException | :? IOException as e -> Errors.usageError "report '%s': %s" dir e.Message
    if files.IsEmpty then Errors.usageError "report '%s': no results.parquet or metrics.parquet found" dir
    files

let private fmtSwept (v: obj) =
    match v with
    | :? float as d -> d.ToString("G6", Globalization.CultureInfo.InvariantCulture)
    | v -> string v

/// Reads every source into runs and observations. A file Parquet.Net cannot read is an error naming it.
let load (dir: string) : Data =
    let sources = findSources dir
    let runIndex = Dictionary<string, int>()
    let runs = List<Run>()
    let obs = List<Obs>()
    for path in sources do
        try
            let reader = ParquetReader.CreateAsync(path).GetAwaiter().GetResult()
            use _ = { new IDisposable with member _.Dispose() = reader.DisposeAsync().AsTask().Wait() }
            let fields = reader.Schema.GetDataFields()
            for g in 0 .. reader.RowGroupCount - 1 do
                use rg = reader.OpenRowGroupReader g
                let n = int rg.RowCount
                let cols = fields |> Array.choose (fun f -> readColumn rg f n |> Option.map (fun c -> f.Name, c)) |> dict
                let str name = match cols.TryGetValue name with | true, Str a -> (fun i -> a.[i]) | _ -> (fun _ -> null)
                let num name = match cols.TryGetValue name with | true, Num a -> (fun i -> a.[i]) | _ -> (fun _ -> nan)
                let need name = if not (cols.ContainsKey name) then failwithf "column '%s' is missing" name
                for c in [ "variant"; "phase"; "env"; "env_step"; "metric"; "value" ] do need c
                let runId, trialId, variant, phase, env = str "run_id", str "trial_id", str "variant", str "phase", str "env"
                let trainEnvs, seen, agent, step, metric, value =
                    str "train_envs", num "seen", num "agent", num "env_step", str "metric", num "value"
                let swept =
                    cols |> Seq.filter (fun kv -> not (known.Contains kv.Key)) |> Seq.sortBy (fun kv -> kv.Key)
                    |> Seq.map (fun kv ->
                        kv.Key, (match kv.Value with
                                 | Num a -> fun i -> if Double.IsNaN a.[i] then None else Some(fmtSwept (box a.[i]))
                                 | Str a -> fun i -> Option.ofObj a.[i]))
                    |> List.ofSeq
                for i in 0 .. n - 1 do
                    let id = match trialId i with null -> (match runId i with null -> path | r -> r) | t -> t
                    let e = env i
                    let ri =
                        match runIndex.TryGetValue id with
                        | true, ri -> ri
                        | _ ->
                            let sw = swept |> List.choose (fun (k, f) -> f i |> Option.map (fun v -> k, v))
                            let te = Option.ofObj (trainEnvs i)
                            runs.Add { Id = id; Variant = variant i; Phase = phase i; TrainEnvs = te; Swept = sw
                                       Method = methodName (variant i) te sw; Seen = Map.empty }
                            runIndex[id] <- runs.Count - 1
                            runs.Count - 1
                    let s = seen i
                    if not (Double.IsNaN s) && not (runs[ri].Seen.ContainsKey e) then
                        runs[ri] <- { runs[ri] with Seen = runs[ri].Seen.Add(e, (s = 1.0)) }
                    let a = agent i
                    obs.Add { Run = ri; Env = e; Agent = (if Double.IsNaN a then 0 else int a); Step = int64 (step i)
                              Metric = metric i; Value = value i }
        with
        | Errors.UsageError _ -> reraise ()
        | e -> Errors.usageError "report: cannot read '%s': %s" path (e.GetBaseException().Message)
    { Runs = runs.ToArray(); Obs = obs.ToArray(); Sources = sources }

// ── FINAL RETURNS ──

/// Mean of the values observed at step ≥ 0.9 · maxStep, or the last value (largest step) if none is there.
/// NaN for no values. `points` are (env_step, value) of one agent.
let finalMean (maxStep: int64) (points: (int64 * float)[]) =
    if points.Length = 0 then nan
    else
        let cut = 0.9 * float maxStep
        match points |> Array.filter (fun (s, _) -> float s >= cut) with
        | [||] -> points |> Array.maxBy fst |> snd
        | w -> w |> Array.averageBy snd

/// A run's final value of `metric` on each env it has: finalMean per agent, averaged over agents.
/// Returns (run index, env, value) for every run/env with at least one observation of the metric.
let finalValues (data: Data) (metric: string) (runFilter: Run -> bool) =
    data.Obs
    |> Array.filter (fun o -> runFilter data.Runs.[o.Run])
    |> Array.groupBy (fun o -> o.Run, o.Env)
    |> Array.choose (fun ((r, env), rows) ->
        let maxStep = rows |> Array.maxBy (fun o -> o.Step) |> fun o -> o.Step
        let perAgent =
            rows |> Array.filter (fun o -> o.Metric = metric) |> Array.groupBy (fun o -> o.Agent)
            |> Array.map (fun (_, xs) -> finalMean maxStep (xs |> Array.map (fun o -> o.Step, o.Value)))
        if perAgent.Length = 0 then None else Some(r, env, Array.average perAgent))

// ── CURVES ──

/// Bin ends of a grid of `points` equal bins over [0, maxStep]: maxStep·k/points for k = 1..points.
let grid (points: int) (maxStep: float) = Array.init points (fun k -> maxStep * float (k + 1) / float points)

/// One run's values on the grid: the mean of the values whose step falls in a bin (bin k is
/// (end(k−1), end(k)], the first bin includes 0), carried forward through empty bins; NaN before the first.
let onGrid (ends: float[]) (points: (int64 * float)[]) =
    let out = Array.create ends.Length nan
    let mutable last = nan
    let mutable lo = -infinity
    for k in 0 .. ends.Length - 1 do
        let hi = if k = ends.Length - 1 then infinity else ends.[k]
        let inBin = points |> Array.filter (fun (s, _) -> float s > lo && float s <= hi)
        if inBin.Length > 0 then last <- inBin |> Array.averageBy snd
        out.[k] <- last
        lo <- hi
    out

/// A run's curve: every agent on the grid (onGrid), then the mean over the agents that have a value there,
/// so agents logging at different steps do not alternate bin by bin.
let private runOnGrid (ends: float[]) (rows: Obs[]) =
    let agents = rows |> Array.groupBy (fun o -> o.Agent) |> Array.map (fun (_, xs) -> onGrid ends (xs |> Array.map (fun o -> o.Step, o.Value)))
    Array.init ends.Length (fun k -> agents |> Array.map (fun a -> a.[k]) |> Array.filter (Double.IsNaN >> not) |> Stats.mean)

/// A method's curve on one env: mean and sample std across runs at every grid point (std 0 for one run).
type Curve = { Method: string; Label: string; Runs: int; X: float[]; Mean: float[]; Std: float[] }

/// "(seen)", "(unseen)" or "(seen/unseen)" for meta-test runs on an env; "" otherwise.
let seenMark (runs: Run seq) (env: string) =
    match runs |> Seq.choose (fun r -> r.Seen.TryFind env) |> Seq.distinct |> List.ofSeq with
    | [ true ] -> " (seen)"
    | [ false ] -> " (unseen)"
    | [] -> ""
    | _ -> " (seen/unseen)"

/// Curves of `metric` per panel (panel → curves, one per method) for runs passing `runFilter`; `panelOf` is
/// usually the env. Each run averages its agents within a panel; a panel's grid spans [0, its largest step].
let curves (data: Data) (metric: string) (gridPoints: int) (runFilter: Run -> bool) (panelOf: Obs -> string) =
    data.Obs
    |> Array.filter (fun o -> o.Metric = metric && runFilter data.Runs.[o.Run])
    |> Array.groupBy panelOf
    |> Array.sortBy fst
    |> Array.map (fun (env, rows) ->
        let ends = grid gridPoints (rows |> Array.map (fun o -> float o.Step) |> Array.max)
        let perMethod =
            rows |> Array.groupBy (fun o -> data.Runs.[o.Run].Method) |> Array.sortBy fst
            |> Array.map (fun (m, mrows) ->
                let byRun = mrows |> Array.groupBy (fun o -> o.Run)
                let ys = byRun |> Array.map (fun (_, xs) -> runOnGrid ends xs)
                let at k = ys |> Array.map (fun y -> y.[k]) |> Array.filter (Double.IsNaN >> not)
                let runs = byRun |> Array.map (fun (r, _) -> data.Runs.[r])
                { Method = m; Label = sprintf "%s%s (n = %d)" m (seenMark runs env) byRun.Length; Runs = byRun.Length
                  X = ends; Mean = Array.init ends.Length (at >> Stats.mean)
                  Std = Array.init ends.Length (fun k -> let v = at k in if v.Length < 2 then 0.0 else Stats.sampleStd v) })
        env, perMethod)
