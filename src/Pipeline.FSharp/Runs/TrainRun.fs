/// `./metagenrl train`: agents trained with a fixed algorithm (a baseline), one run per seed, all seeds computed as
/// one batched group on the engine.
module MetaGenRL.Pipeline.TrainRun

open System
open System.IO
open MetaGenRL.Core.Checkpoints
open MetaGenRL.Core.Config
open MetaGenRL.Core.Engine
open MetaGenRL.Core.Engine
open MetaGenRL.Pipeline.Errors
open MetaGenRL.Pipeline.Settings
open MetaGenRL.Pipeline.RunCommand

/// Everything `./metagenrl train` needs.
type TrainRequest =
    { Algo: string
      Env: string
      Steps: int64
      /// One run per seed; several seeds run as one group.
      Seeds: int list
      Out: string option
      Overrides: string list
      Device: string
      LossLogEvery: int
      Experiment: string
      Force: bool }

    static member Default =
        { Algo = "td3"; Env = "Pendulum-v1"; Steps = 15_000L; Seeds = [ 0 ]; Out = None; Overrides = []
          Device = "cpu"; LossLogEvery = 100; Experiment = "train"; Force = false }

/// Where a request writes when --out is not given.
let defaultOut (r: TrainRequest) =
    Path.Combine("results", r.Experiment, sprintf "%s-%s-s%s" r.Algo r.Env (String.Join(",", r.Seeds)))

/// Checks a request before anything is created; every message names the offending field and value.
let validate (r: TrainRequest) =
    if not (List.contains r.Algo algorithms) then
        usageError "--algo '%s': unknown algorithm; valid: %s" r.Algo (String.Join(", ", algorithms))
    validateEnv "--env" r.Env
    validateRun r.Steps r.LossLogEvery r.Device
    validateSeeds r.Seeds

/// The engine run of a request: one agent per seed, agent k seeded as seed k's agent 0.
let engineRun (r: TrainRequest) (cfg: RunConfig) (algorithm: Algorithm) =
    let seeds = r.Seeds |> List.map (fun s -> Engine.agentSeed s 0) |> Array.ofList
    { Engine.create cfg algorithm [ r.Env ] seeds r.Steps MetaGenRL.Actors.ScheduleMode.Independent with
        Device = r.Device; LossLogEvery = r.LossLogEvery }

/// Trains one agent per seed with a fixed algorithm. One seed writes `<out>/metrics.parquet` and `<out>/run.json`;
/// several write one such run per seed under `<out>/s<seed>/` (the population's checkpoints stay in `<out>`).
/// Returns the exit code: 0 complete, 130 interrupted (Ctrl-C; what was collected is kept).
let train (r: TrainRequest) (command: string) : int =
    validate r
    let algorithm = Algorithms.Parse r.Algo
    let run = engineRun r (resolveConfig r.Overrides) algorithm
    let out = r.Out |> Option.defaultWith (fun () -> defaultOut r)
    let key seed : Results.RunKey =
        { RunId = Results.newRunId (sprintf "%s-%s" r.Algo r.Env) seed; Experiment = r.Experiment; Variant = r.Algo
          Phase = "train"; Env = r.Env; Seed = seed }
    let writers, locks = seedWriters out r.Seeds r.Force key (run.Config.ToJson()) command
    use _locks = locks
    let store = CheckpointStore out
    let options = Engine.populationOptions run store None false
    executeRuns writers (sprintf "%s %s seed %s" r.Algo r.Env (String.Join(",", r.Seeds))) r.Steps
        (fun onMetric onFailure progress ct -> Engine.run None run (options onFailure) onMetric progress ct)
        Engine.describe
