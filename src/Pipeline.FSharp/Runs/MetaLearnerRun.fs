/// What a meta-learner that runs outside MetaGenRL's population engine (RL² in Rl2Run) gives the experiment runner:
/// a meta-train into a run folder, resumable from its checkpoints, and a meta-test of what it learned on one env and
/// seed. Its CLI commands call the same two functions, so a trial and the command with the same seed give the same
/// numbers. The runner owns the folder, the writer (run.json, metrics.parquet) and the resume point; the learner
/// owns its loop, its checkpoint parts and the `onMetric` rows.
module MetaGenRL.Pipeline.MetaLearnerRun

open System
open System.Text.Json.Nodes
open System.Threading
open MetaGenRL.Actors
open MetaGenRL.Core.Checkpoints
open MetaGenRL.Core.Engine

/// A meta-train in a run folder this process holds.
type TrainJob =
    { /// The meta-train env set; rows carry agent = the env's index in it.
      Envs: string list
      Seed: int
      /// Env steps in all, over the whole set.
      Steps: int64
      /// Env steps between checkpoints (see Engine.checkpointEvery); one more at the end.
      CheckpointEvery: int64
      /// The run folder's checkpoints. Each checkpoint is preceded by an Engine.CheckpointMarker row (value: its
      /// index), which is how a resume knows the rows it covers.
      Store: CheckpointStore
      /// Where it starts: ResumePoint.Start, or the checkpoint a resumed run continues from (Engine.resumePoint).
      Resume: Engine.ResumePoint
      /// The config it records (see `config`): the learner reads its own keys from it (EPG's epg_*).
      Config: MetaGenRL.Core.Config.RunConfig
      /// Cores it may use (EPG: inner loops at once).
      Cores: int
      /// Sets a field of run.json (the learner records its settings under its own name).
      SetInfo: string -> JsonNode -> unit }

/// A meta-test of a meta-trained run on one env and seed: no checkpoints (an interrupted one starts over).
type TestJob =
    { /// The meta-train run folder; its newest checkpoint that verifies is tested.
      Source: string
      Env: string
      Seed: int
      Steps: int64
      /// Sets a field of run.json (`objective`: what was loaded, from which checkpoint).
      SetInfo: string -> JsonNode -> unit
      /// A line for the trial's console notes (e.g. a damaged checkpoint passed over).
      Note: string -> unit }

/// A meta-learner's meta-train: rows through the Action, env steps so far through the progress; cancellation throws
/// OperationCanceledException.
type Train = TrainJob -> Action<Metric> -> IProgress<int64> -> CancellationToken -> PopulationResult

/// A meta-learner's meta-test, as Train.
type Test = TestJob -> Action<Metric> -> IProgress<int64> -> CancellationToken -> PopulationResult

/// The config such a run records in run.json and its Parquet metadata: the defaults with its envs, its budget, one
/// agent, for a meta-train its checkpoint interval, and the learner's own keys (`keys`, e.g. EPG's epg_*). Its
/// resolved settings go to run.json under its name.
let config (envs: string list) (steps: int64) (checkpointEvery: int64 option) (keys: (string * string) list) =
    Settings.resolveConfig (
        [ sprintf "env_name=%s" (String.Join(",", envs)); sprintf "timesteps_total=%d" steps; "agent_count=1" ]
        @ (checkpointEvery |> Option.map (sprintf "checkpoint_every=%d") |> Option.toList)
        @ (keys |> List.map (fun (k, v) -> k + "=" + v)))

/// The `key=value` overrides (from --set and --scale) that are among `keys`, as pairs: a learner's own keys (a
/// malformed override is an error naming it, as everywhere).
let ownKeys (keys: string list) (overrides: string list) =
    overrides |> List.map Settings.parseOverride |> List.filter (fun (k, _) -> List.contains k keys)

/// The CLI's `meta-train --algo <name>`: checks the request, holds the run folder (refusing a run already there
/// unless --resume or --force), resumes from the newest checkpoint that verifies, and runs `train` with a writer for
/// run.json and metrics.parquet. `keys`: the learner's own config keys taken from --set/--scale (the others tune
/// MetaGenRL and do not apply); `check` validates the resolved config and returns the env steps the run will take.
let metaTrainCommand (name: string) (train: Train) (describe: PopulationResult -> string) (keys: string list)
                     (check: MetaGenRL.Core.Config.RunConfig -> int64) (r: PopulationRun.MetaTrainRequest) (command: string) : int =
    if List.isEmpty r.Envs then Errors.usageError "--envs: give at least one env id"
    for e in r.Envs do Settings.validateEnv "--envs" e
    Settings.validateRun r.Steps r.LossLogEvery r.Device
    if r.Device <> "cpu" then Errors.usageError "--device %s: %s runs on the CPU only" r.Device name
    let every = Engine.checkpointEvery (defaultArg r.CheckpointEvery 0L) r.Steps
    let cfg = config r.Envs r.Steps (Some every) (ownKeys keys r.Overrides)
    let total = check cfg
    let envs = String.Join("+", r.Envs)
    let out = r.Out |> Option.defaultWith (fun () -> IO.Path.Combine("results", r.Experiment, sprintf "%s-%s-s%d" name envs r.Seed))
    use _lock = FolderLock.acquire out
    let store = CheckpointStore out
    let previous = Results.readRunJson out
    PopulationRun.checkFolder out store r
    if r.Resume then previous |> Option.iter (PopulationRun.checkResume out { r with Variant = name } (cfg.ToJson()))
    let resume = if r.Resume then Engine.resumePoint out store else Engine.ResumePoint.Start
    if r.Resume then for line in resume.Describe out do printfn "%s" line
    let runId =
        match previous with
        | Some j when resume.Index.IsSome && j.ContainsKey "run_id" -> j["run_id"].GetValue<string>()
        | _ -> Results.newRunId name r.Seed
    let key : Results.RunKey =
        { RunId = runId; Experiment = r.Experiment; Variant = name; Phase = "meta-train"; Env = String.Join(",", r.Envs); Seed = r.Seed }
    let writer = Results.RunWriter(out, key, cfg.ToJson(), command, (fun i -> r.Envs[i % r.Envs.Length]), resume.Rows)
    if r.Resume then writer.Resumed(resume.ToJson(), previous)
    let job =
        { Envs = r.Envs; Seed = r.Seed; Steps = r.Steps; CheckpointEvery = every; Store = store; Resume = resume
          Config = cfg; Cores = Environment.ProcessorCount; SetInfo = fun k v -> writer.SetInfo(k, v) }
    RunCommand.execute writer (sprintf "%s meta-train %s seed %d" name envs r.Seed) total
        (fun onMetric _ progress ct -> train job onMetric progress ct)
        describe
