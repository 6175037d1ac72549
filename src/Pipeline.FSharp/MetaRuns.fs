/// Population runs: meta-training an objective on Akka.NET actors (with checkpoints and resume), and
/// meta-testing a frozen objective on any env.
module MetaGenRL.Pipeline.MetaRuns

open System
open System.Collections.Generic
open System.IO
open System.Text.Json
open System.Text.Json.Nodes
open MetaGenRL.Actors
open MetaGenRL.Core.Agents
open MetaGenRL.Core.Checkpoints
open MetaGenRL.Core.Config
open MetaGenRL.Core.Envs
open MetaGenRL.Core.Meta
open MetaGenRL.Core.Training
open MetaGenRL.Pipeline.Runs

/// The metric row written just before each checkpoint: its position in the row stream marks which rows the
/// checkpoint already covers, so a resumed run keeps exactly those and regenerates the rest.
let CheckpointMarker = PopulationCoordinator.CheckpointMarker

/// Everything `./metagenrl meta-train` needs.
type MetaTrainRequest =
    { Envs: string list
      Agents: int
      Steps: int64
      Seed: int
      Out: string option
      Variant: string
      Mode: ScheduleMode
      Resume: bool
      Overrides: string list
      Device: string
      CheckpointEvery: int64 option
      LossLogEvery: int
      TorchThreads: int
      Experiment: string
      Force: bool }

    static member Default =
        { Envs = [ "LunarLanderContinuous-v2"; "HalfCheetah-v2" ]; Agents = 2; Steps = 10_000L; Seed = 0; Out = None
          Variant = "full"; Mode = ScheduleMode.Sync; Resume = false; Overrides = []; Device = "cpu"
          CheckpointEvery = None; LossLogEvery = 100; TorchThreads = 0; Experiment = "meta-train"; Force = false }

let defaultMetaTrainOut (r: MetaTrainRequest) =
    Path.Combine("results", r.Experiment, sprintf "%s-%s-n%d-s%d" r.Variant (String.Join("+", r.Envs)) r.Agents r.Seed)

/// The seed of population member `i`: distinct, and derived from the run seed only.
let memberSeed (seed: int) (i: int) : int64 = int64 (Seeds.Derive(int64 seed, 1000 + i))

/// The config a meta-train run uses: the paper's defaults, the variant, then the user's overrides.
let metaTrainConfig (r: MetaTrainRequest) =
    let fromFlags =
        [ sprintf "agent_count=%d" r.Agents; sprintf "timesteps_total=%d" r.Steps
          sprintf "env_name=%s" (String.Join(",", r.Envs)) ]
        @ (r.CheckpointEvery |> Option.map (sprintf "checkpoint_every=%d") |> Option.toList)
    resolveConfigFrom (resolveConfig [ sprintf "obj_func_variant=%s" r.Variant ]) (r.Overrides @ fromFlags)

let validateMetaTrain (r: MetaTrainRequest) =
    if List.isEmpty r.Envs then usageError "--envs: give at least one env id"
    for e in r.Envs do validateEnv "--envs" e
    if r.Agents < 2 then usageError "--agents %d: meta-training needs at least 2 agents (the objective server averages their gradients)" r.Agents
    if r.TorchThreads < 0 then usageError "--torch-threads %d: must be ≥ 0" r.TorchThreads
    match r.CheckpointEvery with
    | Some n when n < 0L -> usageError "--checkpoint-every %d: must be ≥ 0" n
    | _ -> ()
    validateRun r.Steps r.LossLogEvery r.Device

/// Rows of an interrupted run that its checkpoint `index` covers: everything up to that checkpoint's marker.
let rowsCoveredBy (index: int) (rows: Results.Row list) =
    let marker = rows |> List.tryFindIndex (fun r -> r.metric = CheckpointMarker && int r.value = index)
    marker |> Option.map (fun i -> List.take (i + 1) rows)

/// The checkpoint store of a run folder, seen by the population as its sink. `resumeFrom` is the checkpoint a
/// resumed run starts from: the newest valid one whose marker row reached metrics.parquet (chosen by metaTrain).
/// Part names like `agent/3` become file names like `agent__3` (the store takes plain file names only).
type FileCheckpointSink(store: CheckpointStore, resumeFrom: int option, keepLast: int) =
    static let toFile (part: string) = part.Replace("/", "__")
    static let ofFile (file: string) = file.Replace("__", "/")
    interface ICheckpointSink with
        member _.Write(index, envStep, parts) =
            let meta = JsonObject()
            meta["env_step"] <- JsonValue.Create envStep
            let files = Dictionary<string, byte[]>()
            for kv in parts do files[toFile kv.Key] <- kv.Value
            store.Write(index, files, meta) |> ignore
            store.Prune keepLast |> ignore
        member _.LoadLatest() =
            match resumeFrom with
            | Some i ->
                let parts = Dictionary<string, byte[]>()
                for kv in (store.Load i).Parts do parts[ofFile kv.Key] <- kv.Value
                Nullable(struct (i, parts :> IReadOnlyDictionary<string, byte[]>))
            | None -> Nullable()

/// Where a resumed population run in `out` starts: the newest valid checkpoint whose marker row reached
/// metrics.parquet, with the rows it covers. Checkpoints newer than it (none, normally: a checkpoint is stored only
/// after its rows) are deleted, as they would collide with the ones the resumed run writes.
let resumePoint (out: string) (store: CheckpointStore) : int option * Results.Row list =
    let p = Path.Combine(out, "metrics.parquet")
    let oldRows = if File.Exists p then Results.readParquet p else []
    let covered =
        oldRows |> List.filter (fun row -> row.metric = CheckpointMarker) |> List.map (fun row -> int row.value) |> Set.ofList
    let resumeFrom = store.List() |> Seq.filter covered.Contains |> Seq.sortDescending |> Seq.tryHead
    for i in store.List() do
        if resumeFrom.IsNone || i > resumeFrom.Value then Directory.Delete(store.PathOf i, true)
    resumeFrom, (resumeFrom |> Option.bind (fun i -> rowsCoveredBy i oldRows) |> Option.defaultValue [])

/// Population settings from a resolved config; checkpoints every `checkpoint_every` steps (default: 5 per run).
let populationOptions (cfg: RunConfig) (agents: int) (steps: int64) (mode: ScheduleMode) (store: CheckpointStore)
                      (resumeFrom: int option) (resume: bool) (torchThreads: int) =
    let checkpointEvery = if cfg.CheckpointEvery > 0L then cfg.CheckpointEvery else max 1000L (steps / 5L)
    PopulationOptions(
        AgentCount = agents,
        TimestepsTotal = steps,
        Mode = mode,
        Steps = cfg.Steps,
        PolicyUpdateDelay = cfg.PolicyUpdateDelay,
        ObjFuncUpdateDelay = cfg.ObjFuncUpdateDelay,
        ObjFuncLearningRate = cfg.ObjFuncLearningRate,
        CheckpointEvery = checkpointEvery,
        CheckpointIncludesReplay = cfg.CheckpointReplay,
        Checkpoints = FileCheckpointSink(store, (if resume then resumeFrom else None), 3),
        Resume = (resume && resumeFrom.IsSome),
        // One agent per group while groups are MemberGroupAdapters (they loop over their members): agents keep a
        // thread each, and agents on different envs are never grouped.
        GroupSize = 1,
        // More OpenMP threads than cores makes libgomp stop spin-waiting, which halves the speed of these small,
        // frequent ops: callers split the cores.
        TorchThreadsPerGroup = torchThreads)

/// A population's group factory over members made by `makeMember` (agent index → member); temporary, until the
/// batched group replaces MemberGroupAdapter.
let memberGroups (makeMember: int -> MetaAgent) : Func<GroupSpec, MetaGenRL.Core.Engine.IAgentGroup> =
    Func<GroupSpec, MetaGenRL.Core.Engine.IAgentGroup>(fun spec ->
        new MemberGroupAdapter(spec.Agents |> Array.map makeMember, Func<int, MetaAgent> makeMember))

/// Meta-trains an objective with a population of agents; resumable with `Resume = true`.
let metaTrain (r: MetaTrainRequest) (command: string) : int =
    validateMetaTrain r
    let cfg = metaTrainConfig r
    let out = r.Out |> Option.defaultWith (fun () -> defaultMetaTrainOut r)
    let store = CheckpointStore out
    let previous = readRunJson out
    if not r.Resume && not r.Force && (isComplete out || store.Latest().HasValue) then
        usageError "--out '%s' already holds a run; pass --resume to continue it, --force to start over, or choose another folder" out
    if r.Resume && isComplete out && not r.Force then
        usageError "--out '%s' holds a completed run; nothing to resume" out
    if r.Force && not r.Resume && Directory.Exists out then Directory.Delete(out, true)
    prepareOut out true
    let envOf i = r.Envs[i % r.Envs.Length]
    let resumeFrom, keptRows = if r.Resume then resumePoint out store else None, []
    if r.Resume then
        match resumeFrom with
        | Some i -> printfn "resuming from checkpoint %d (%d rows kept)" i keptRows.Length
        | None -> printfn "no usable checkpoint in %s: starting from the beginning" out
    let runId =
        match previous with
        | Some j when r.Resume && j.ContainsKey "run_id" -> j["run_id"].GetValue<string>()
        | _ -> newRunId (sprintf "%s-n%d" r.Variant r.Agents) r.Seed
    let key : Results.RunKey =
        { RunId = runId; Experiment = r.Experiment; Variant = r.Variant; Phase = "meta-train"
          Env = String.Join(",", r.Envs); Seed = r.Seed }
    let writer = Results.RunWriter(out, key, cfg.ToJson(), command, envOf, keptRows)
    writer.Flush "running"
    let threads = if r.TorchThreads > 0 then r.TorchThreads else max 1 (Environment.ProcessorCount / r.Agents)
    let options = populationOptions cfg r.Agents r.Steps r.Mode store resumeFrom r.Resume threads
    let makeMember (i: int) : MetaAgent =
        new MetaAgent(cfg, envOf i, i, memberSeed r.Seed i, r.Device, MemberMode.MetaTrain, LossLogEvery = r.LossLogEvery)
    execute writer (sprintf "meta-train %s × %d agents seed %d" (String.Join("+", r.Envs)) r.Agents r.Seed) r.Steps
        (fun onMetric progress ct ->
            // Flush on each marker so the rows a checkpoint covers are on disk soon after it.
            let onMetric' = Action<Metric>(fun m -> onMetric.Invoke m; if m.Name = CheckpointMarker then writer.Flush "running")
            Population.Run(options, memberGroups makeMember, onMetric', progress, ct))
        (fun res ->
            sprintf "%d rounds, global step %d, %d objective updates, %d checkpoints, %d agent failures%s"
                res.Rounds res.GlobalStep res.ObjectiveVersion res.CheckpointsWritten res.Failures
                (String.Join("", res.FailureReasons |> Array.map (sprintf "\n  %s"))))

/// Everything `./metagenrl meta-test` needs.
type MetaTestRequest =
    { Objective: string
      Checkpoint: int option
      Env: string
      Steps: int64
      Seed: int
      Out: string option
      Overrides: string list
      Device: string
      LossLogEvery: int
      Experiment: string
      Force: bool }

/// α and the meta-train config of an objective run folder's checkpoint (latest when `index` is None).
let loadObjective (dir: string) (index: int option) : float32[] * RunConfig * string =
    if not (Directory.Exists dir) then usageError "--objective '%s': no such folder" dir
    let runJson = readRunJson dir |> Option.defaultWith (fun () -> usageError "--objective '%s': no run.json (not a meta-train run folder)" dir)
    let cfg =
        try RunConfig.FromJson(runJson["config"].ToJsonString())
        with e -> usageError "--objective '%s': run.json has no readable config (%s)" dir e.Message
    let store = CheckpointStore dir
    let available = store.List()
    let k =
        match index with
        | Some k when Seq.contains k available -> k
        | Some k -> usageError "--checkpoint %d: not in %s (available: %s)" k store.Root (String.Join(", ", available))
        | None ->
            match store.Latest() |> Option.ofNullable with
            | Some k -> k
            | None -> usageError "--objective '%s': no complete checkpoint under %s" dir store.Root
    let parts = (store.Load k).Parts
    let alpha =
        match parts.TryGetValue "server" with
        | true, bytes -> ObjectiveAdam.Import(bytes).Alpha
        | _ -> usageError "--objective '%s': checkpoint %d holds no objective (part 'server')" dir k
    let variant = match runJson["variant"] with | null -> "full" | v -> v.GetValue<string>()
    alpha, cfg, variant

/// Trains a fresh agent on any env with a frozen objective from a meta-train run (no objective updates).
let metaTest (r: MetaTestRequest) (command: string) : int =
    validateEnv "--env" r.Env
    validateRun r.Steps r.LossLogEvery r.Device
    let alpha, trainedCfg, variant = loadObjective r.Objective r.Checkpoint
    let cfg = resolveConfigFrom trainedCfg r.Overrides
    let out = r.Out |> Option.defaultWith (fun () -> Path.Combine("results", r.Experiment, sprintf "%s-%s-s%d" variant r.Env r.Seed))
    prepareOut out r.Force
    let key : Results.RunKey =
        { RunId = newRunId (sprintf "meta-test-%s-%s" variant r.Env) r.Seed; Experiment = r.Experiment; Variant = variant
          Phase = "meta-test"; Env = r.Env; Seed = r.Seed }
    let writer = Results.RunWriter(out, key, cfg.ToJson(), command)
    writer.Flush "running"
    let opts = TrainOptions(r.Env, r.Steps, r.Seed, r.Device, r.LossLogEvery)
    execute writer (sprintf "meta-test %s seed %d" r.Env r.Seed) r.Steps
        (fun onMetric progress ct -> ObjectiveTrainer.Train(cfg, "meta-test", alpha, opts, onMetric, progress, ct))
        describeTrain
