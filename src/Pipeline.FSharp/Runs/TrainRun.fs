/// `./metagenrl train`: one agent trained with a fixed algorithm (a baseline), written as a run folder.
module MetaGenRL.Pipeline.TrainRun

open System
open System.IO
open MetaGenRL.Core.Training
open MetaGenRL.Pipeline.Errors
open MetaGenRL.Pipeline.Settings
open MetaGenRL.Pipeline.RunCommand

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

/// Checks a request before anything is created; every message names the offending field and value.
let validate (r: TrainRequest) =
    if not (List.contains r.Algo algorithms) then
        usageError "--algo '%s': unknown algorithm; valid: %s" r.Algo (String.Join(", ", algorithms))
    validateEnv "--env" r.Env
    validateRun r.Steps r.LossLogEvery r.Device

/// Trains one agent with a fixed algorithm and writes `<out>/metrics.parquet` and `<out>/run.json`.
/// Returns the exit code: 0 complete, 130 interrupted (Ctrl-C; what was collected is kept).
let train (r: TrainRequest) (command: string) : int =
    validate r
    let cfg = resolveConfig r.Overrides
    let out = r.Out |> Option.defaultWith (fun () -> defaultOut r)
    prepareOut out r.Force
    let key : Results.RunKey =
        { RunId = Results.newRunId (sprintf "%s-%s" r.Algo r.Env) r.Seed; Experiment = r.Experiment; Variant = r.Algo
          Phase = "train"; Env = r.Env; Seed = r.Seed }
    let writer = Results.RunWriter(out, key, cfg.ToJson(), command)
    writer.Flush "running"
    let opts = TrainOptions(r.Env, r.Steps, r.Seed, r.Device, r.LossLogEvery)
    execute writer (sprintf "%s %s seed %d" r.Algo r.Env r.Seed) r.Steps
        (fun onMetric progress ct ->
            if r.Algo = "td3" then Td3Trainer.Train(cfg, opts, onMetric, progress, ct)
            else ObjectiveTrainer.Train(cfg, r.Algo, null, opts, onMetric, progress, ct))
        describeTrain
