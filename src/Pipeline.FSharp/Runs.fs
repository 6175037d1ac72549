/// Single runs shared by the CLI and the experiment scripts: resolve, validate, train, write results.
module MetaGenRL.Pipeline.Runs

open System
open System.IO
open System.Threading
open MetaGenRL.Core
open MetaGenRL.Core.Config
open MetaGenRL.Core.Envs
open MetaGenRL.Core.Training

/// A user-facing error: printed as "error: <message>" with a non-zero exit, no stack trace.
exception UsageError of string

let usageError fmt = Printf.kprintf (fun s -> raise (UsageError s)) fmt

/// The algorithms `train` runs (meta-test has its own command).
let algorithms = ObjectiveTrainer.Algorithms |> Seq.filter (fun a -> a <> "meta-test") |> List.ofSeq

/// Splits "key=value"; the message names the malformed override.
let parseOverride (s: string) =
    match s.IndexOf '=' with
    | i when i > 0 -> s.Substring(0, i).Trim(), s.Substring(i + 1).Trim()
    | _ -> usageError "--set '%s': expected key=value (keys: see ./metagenrl train --help or results/README.md)" s

/// Applies `key=value` overrides to `baseConfig`; unknown keys and bad values name themselves.
let resolveConfigFrom (baseConfig: RunConfig) (overrides: string list) : RunConfig =
    overrides
    |> List.map parseOverride
    |> List.fold (fun (cfg: RunConfig) (k, v) ->
        try cfg.With(k, v) with :? ArgumentException as e -> raise (UsageError(sprintf "--set %s=%s: %s" k v e.Message)))
        baseConfig

/// Applies `key=value` overrides to the paper's defaults.
let resolveConfig (overrides: string list) : RunConfig = resolveConfigFrom RunConfig.Default overrides

/// Everything `./metagenrl train` needs.
type TrainRequest =
    { Algo: string
      Env: string
      Steps: int64
      Seed: int
      Out: string option
      Overrides: string list
      Device: string
      LossLogEvery: int
      Experiment: string
      Force: bool }

    static member Default =
        { Algo = "td3"; Env = "Pendulum-v1"; Steps = 15_000L; Seed = 0; Out = None; Overrides = []
          Device = "cpu"; LossLogEvery = 100; Experiment = "train"; Force = false }

/// Where a request writes when --out is not given.
let defaultOut (r: TrainRequest) =
    Path.Combine("results", r.Experiment, sprintf "%s-%s-s%d" r.Algo r.Env r.Seed)

/// An unknown env id, as a usage error naming the flag and listing the valid ids.
let validateEnv (flag: string) (id: string) =
    try EnvRegistry.Validate id with :? ArgumentException as e -> raise (UsageError(flag + ": " + e.Message))

/// The checks every run command shares: step budget, loss-log interval and device.
let validateRun (steps: int64) (lossLogEvery: int) (device: string) =
    if steps <= 0L then usageError "--steps %d: must be positive" steps
    if lossLogEvery <= 0 then usageError "--loss-log-every %d: must be positive" lossLogEvery
    (try MetaGenRL.Core.Torch.Devices.Resolve device |> ignore
     with :? ArgumentException as e -> raise (UsageError("--device: " + e.Message)))

/// Checks a request before anything is created; every message names the offending field and value.
let validate (r: TrainRequest) =
    if not (List.contains r.Algo algorithms) then
        usageError "--algo '%s': unknown algorithm; valid: %s" r.Algo (String.Join(", ", algorithms))
    validateEnv "--env" r.Env
    validateRun r.Steps r.LossLogEvery r.Device

/// Reads run.json of a run folder (None when absent).
let readRunJson (dir: string) =
    let p = Path.Combine(dir, "run.json")
    if File.Exists p then Some(Text.Json.Nodes.JsonNode.Parse(File.ReadAllText p).AsObject()) else None

/// True when `dir` holds a run whose run.json says it completed.
let isComplete (dir: string) =
    try
        match readRunJson dir with
        | Some j -> j["status"].GetValue<string>() = "complete"
        | None -> false
    with _ -> false

/// Runs `work` under the progress display with Ctrl-C handling and periodic flushes of `writer`, then writes
/// the final status. Returns 0 when complete, 130 when interrupted; a failure is flushed as "failed" and rethrown.
let execute (writer: Results.RunWriter) (title: string) (total: int64)
            (work: Action<Metric> -> IProgress<int64> -> CancellationToken -> 'T) (describe: 'T -> string) : int =
    use cts = new CancellationTokenSource()
    let onCancel = ConsoleCancelEventHandler(fun _ e -> e.Cancel <- true; cts.Cancel())
    Console.CancelKeyPress.AddHandler onCancel
    // Periodic flushes keep at most a minute of rows at risk if the process is killed.
    use _timer = new Timer((fun _ -> try writer.Flush "running" with _ -> ()), null, 60_000, 60_000)
    let mutable lastReturn = nan
    let mutable episodes = 0
    let onMetric =
        Action<Metric>(fun m ->
            writer.Add(m.Agent, m.EnvStep, m.Name, m.Value)
            if m.Name = "episode_return" then
                lastReturn <- m.Value
                episodes <- episodes + 1)
    let status () = if episodes = 0 then "" else sprintf "episode %d return %.1f" episodes lastReturn
    try
        try
            let result =
                try Some(Progress.run title total status (fun progress -> work onMetric progress cts.Token))
                with :? OperationCanceledException when cts.IsCancellationRequested -> None
            let finalStatus = if cts.IsCancellationRequested then "interrupted" else "complete"
            writer.Flush finalStatus
            match result with
            | Some r -> printfn "%s: %s" finalStatus (describe r)
            | None -> printfn "%s" finalStatus
            printfn "results: %s" writer.ParquetPath
            printfn "provenance: %s" writer.RunJsonPath
            if finalStatus = "complete" then 0 else 130
        with e ->
            (try writer.Flush "failed" with _ -> ())
            reraise ()
    finally
        Console.CancelKeyPress.RemoveHandler onCancel

/// Refuses to overwrite a completed run unless forced, and creates the folder.
let prepareOut (out: string) (force: bool) =
    if isComplete out && not force then
        usageError "--out '%s' already holds a completed run; pass --force to overwrite it or choose another folder" out
    try Directory.CreateDirectory out |> ignore
    with e -> usageError "--out '%s': cannot create the folder (%s)" out e.Message

/// A run id: what ran, and when.
let newRunId (what: string) (seed: int) = sprintf "%s-s%d-%s" what seed (DateTime.UtcNow.ToString "yyyyMMddTHHmmss")

let describeTrain (summary: TrainSummary) =
    sprintf "%d env steps, %d episodes, %.1f s (%.0f steps/s), last episode return %s"
        summary.EnvSteps summary.Episodes summary.WallSeconds
        (float summary.EnvSteps / max summary.WallSeconds 1e-9)
        (if summary.LastEpisodeReturn.HasValue then sprintf "%.2f" summary.LastEpisodeReturn.Value else "n/a")

/// Trains one agent with a fixed algorithm and writes `<out>/metrics.parquet` and `<out>/run.json`.
/// Returns the exit code: 0 complete, 130 interrupted (Ctrl-C; what was collected is kept).
let train (r: TrainRequest) (command: string) : int =
    validate r
    let cfg = resolveConfig r.Overrides
    let out = r.Out |> Option.defaultWith (fun () -> defaultOut r)
    prepareOut out r.Force
    let key : Results.RunKey =
        { RunId = newRunId (sprintf "%s-%s" r.Algo r.Env) r.Seed; Experiment = r.Experiment; Variant = r.Algo
          Phase = "train"; Env = r.Env; Seed = r.Seed }
    let writer = Results.RunWriter(out, key, cfg.ToJson(), command)
    writer.Flush "running"
    let opts = TrainOptions(r.Env, r.Steps, r.Seed, r.Device, r.LossLogEvery)
    execute writer (sprintf "%s %s seed %d" r.Algo r.Env r.Seed) r.Steps
        (fun onMetric progress ct ->
            if r.Algo = "td3" then Td3Trainer.Train(cfg, opts, onMetric, progress, ct)
            else ObjectiveTrainer.Train(cfg, r.Algo, null, opts, onMetric, progress, ct))
        describeTrain
