/// The one path every command (train, meta-train, meta-test) and every experiment trial runs through: a typed run
/// (config, algorithm, agents and their seeds) becomes a population of batched agent groups on Akka.NET actors,
/// with checkpoints in the run folder and resume from the newest checkpoint whose rows reached disk.
module MetaGenRL.Pipeline.Engine

open System
open System.Collections.Generic
open System.IO
open System.Text.Json.Nodes
open System.Threading
open Akka.Actor
open MetaGenRL.Actors
open MetaGenRL.Core.Agents
open MetaGenRL.Core.Checkpoints
open MetaGenRL.Core.Config
open MetaGenRL.Core.Engine
open MetaGenRL.Core.Randomness

/// The metric row written just before each checkpoint: its position in the row stream marks which rows the
/// checkpoint already covers, so a resumed run keeps exactly those and regenerates the rest.
let CheckpointMarker = PopulationCoordinator.CheckpointMarker

/// One engine run, parsed once at the edge.
type EngineRun =
    { /// The config that runs: env_name, timesteps_total, agent_count and checkpoint_every as they are used, and the
      /// algorithm's own settings applied (what run.json and the Parquet metadata record).
      Config: RunConfig
      Algorithm: Algorithm
      /// Agent i's seed (its networks, generators and env derive from it).
      AgentSeeds: int64[]
      /// α loaded into every agent before the first step (meta-test).
      Objective: float32[] option
      /// Sync or async for meta-training; every other algorithm runs Independent (each agent on its own schedule).
      Mode: ScheduleMode
      Device: string
      LossLogEvery: int
      /// torch intra-op threads per group; 0: the config's torch_threads, else the cores split evenly over the groups.
      TorchThreads: int }

    member r.EnvOf(agent: int) = Grouping.EnvOf(r.Config.EnvName, agent)
    member r.Steps = r.Config.TimestepsTotal
    member r.Agents = r.AgentSeeds.Length
    /// The groups: agents of one env in batches of group_size.
    member r.Groups = Grouping.Partition([| for i in 0 .. r.Agents - 1 -> r.EnvOf i |], r.Config.GroupSize)

/// Agent i's seed in a run with seed `runSeed` (the same in every command, so `train --seed 0` and an experiment's
/// seed-0 trial train the same agent).
let agentSeed (runSeed: int) (index: int) = Seeds.AgentSeed(int64 runSeed, index)

/// Sets a key from its value (F# cannot use C#'s `with` on the record).
let private set (key: string) (value: string) (c: RunConfig) = c.With(key, value)

/// The checkpoint interval a run of `steps` env steps uses: checkpoint_every as configured, or max(1000, steps / 5)
/// when it is 0 (or negative).
let checkpointEvery (configured: int64) (steps: int64) = if configured > 0L then configured else max 1000L (steps / 5L)

/// Builds a run: `cfg` with the algorithm's settings, the envs (agent i runs env i mod n), the step budget, the
/// population size and the checkpoint interval as they will run (see checkpointEvery).
let create (cfg: RunConfig) (algorithm: Algorithm) (envs: string list) (agentSeeds: int64[]) (steps: int64) (mode: ScheduleMode) =
    let every = checkpointEvery cfg.CheckpointEvery steps
    let config =
        (try AgentGroup.EffectiveConfig(cfg, algorithm) with :? ArgumentException as e -> raise (Errors.UsageError(Errors.messageOf e)))
        |> set "env_name" (String.Join(",", envs))
        |> set "timesteps_total" (string steps)
        |> set "agent_count" (string agentSeeds.Length)
        |> set "checkpoint_every" (string every)
    { Config = config; Algorithm = algorithm; AgentSeeds = agentSeeds; Objective = None
      Mode = (if algorithm = Algorithm.MetaTrain then mode else ScheduleMode.Independent)
      Device = "cpu"; LossLogEvery = 100; TorchThreads = 0 }

// ── CHECKPOINTS AND RESUME ──

/// Rows of an interrupted run that its checkpoint `index` covers: everything up to that checkpoint's marker.
let rowsCoveredBy (index: int) (rows: Results.Row list) =
    let marker = rows |> List.tryFindIndex (fun r -> r.metric = CheckpointMarker && int r.value = index)
    marker |> Option.map (fun i -> List.take (i + 1) rows)

/// The checkpoint store of a run folder, seen by the population as its sink. `resumeFrom` is the checkpoint a
/// resumed run starts from (see resumePoint). Part names like `agent/3` become file names like `agent__3`.
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

/// Checkpoints passed over, as run.json lists them: [{checkpoint, reason}].
let skippedJson (skipped: (int * string) list) =
    JsonArray(skipped |> List.map (fun (i, why) ->
        let x = JsonObject()
        x["checkpoint"] <- JsonValue.Create i
        x["reason"] <- JsonValue.Create why
        x :> JsonNode) |> Array.ofList)

/// Where a resumed run starts: the checkpoint (None: the beginning), the rows it covers, its manifest's SHA-256, and
/// each newer checkpoint that was passed over with why.
type ResumePoint =
    { Index: int option
      Rows: Results.Row list
      Hash: string option
      Skipped: (int * string) list }

    static member Start = { Index = None; Rows = []; Hash = None; Skipped = [] }

    /// The lines a resume prints: what it starts from and why newer checkpoints were skipped.
    member p.Describe(dir: string) =
        let start =
            match p.Index with
            | Some i -> sprintf "resuming from checkpoint %d (%d rows kept)" i p.Rows.Length
            | None -> sprintf "no usable checkpoint in %s: starting from the beginning" dir
        (p.Skipped |> List.map (fun (i, why) -> sprintf "skipping checkpoint %d: %s" i why)) @ [ start ]

    /// What run.json records about it (an entry of its `resumes` list).
    member p.ToJson() =
        let o = JsonObject()
        o["checkpoint"] <- (match p.Index with Some i -> JsonValue.Create i :> JsonNode | None -> null)
        o["sha256"] <- (match p.Hash with Some h -> JsonValue.Create h :> JsonNode | None -> null)
        o["rows_kept"] <- JsonValue.Create p.Rows.Length
        o["skipped"] <- skippedJson p.Skipped
        o

/// Where a resumed run in `out` starts: the newest checkpoint that verifies and whose marker row reached
/// metrics.parquet, with the rows it covers. Newer checkpoints (damaged ones, or, rarely, one whose rows never reached
/// disk) are reported as skipped and deleted, as they would collide with the ones the resumed run writes.
let resumePoint (out: string) (store: CheckpointStore) : ResumePoint =
    let p = Path.Combine(out, "metrics.parquet")
    let oldRows =
        if not (File.Exists p) then []
        else
            try Results.readParquet p
            with e -> Errors.usageError "'%s' cannot be read (%s), so the run in '%s' cannot be resumed; start it again in another folder (or with --force)" p e.Message out
    let covered =
        oldRows |> List.filter (fun row -> row.metric = CheckpointMarker) |> List.map (fun row -> int row.value) |> Set.ofList
    let struct (newest, damaged) = store.NewestValid(Func<int, bool>(covered.Contains))
    let damaged = damaged |> Seq.map (fun struct (i, why) -> i, why) |> Map.ofSeq
    let newer = store.List() |> Seq.filter (fun i -> not newest.HasValue || i > newest.Value) |> List.ofSeq
    let skipped =
        newer |> List.map (fun i ->
            i, (match damaged.TryFind i with
                | Some why -> why
                | None -> "its rows never reached metrics.parquet"))
    let index = Option.ofNullable newest
    let hash = index |> Option.map store.ManifestHash
    for i in newer do Directory.Delete(store.PathOf i, true)
    { Index = index; Rows = (index |> Option.bind (fun i -> rowsCoveredBy i oldRows) |> Option.defaultValue [])
      Hash = hash; Skipped = skipped }

// ── THE POPULATION ──

/// The population settings of a run; checkpoints in `store`, resumed from `resumeFrom` when `resume`; each agent
/// failure ("agent i: cause; where it restarts from") goes to `onFailure` as it happens.
let populationOptions (r: EngineRun) (store: CheckpointStore) (resumeFrom: int option) (resume: bool) (onFailure: string -> unit) =
    let cfg = r.Config
    let groups = r.Groups
    PopulationOptions(
        AgentCount = r.Agents,
        Groups = groups,
        TimestepsTotal = cfg.TimestepsTotal,
        BudgetCheckPerIteration = cfg.BudgetCheckPerIteration,
        Mode = r.Mode,
        Steps = cfg.Steps,
        PolicyUpdateDelay = cfg.PolicyUpdateDelay,
        ObjFuncUpdateDelay = cfg.ObjFuncUpdateDelay,
        ObjFuncLearningRate = cfg.ObjFuncLearningRate,
        CheckpointEvery = cfg.CheckpointEvery,
        CheckpointIncludesReplay = cfg.CheckpointReplay,
        Checkpoints = FileCheckpointSink(store, (if resume then resumeFrom else None), 3),
        Resume = (resume && resumeFrom.IsSome),
        OnAgentFailure = Action<string>(onFailure),
        // More OpenMP threads than cores makes libgomp stop spin-waiting, which halves the speed of these small,
        // frequent ops: the cores are split over the groups.
        TorchThreadsPerGroup =
            (if r.TorchThreads > 0 then r.TorchThreads
             elif cfg.TorchThreads.HasValue then cfg.TorchThreads.Value
             else max 1 (Environment.ProcessorCount / groups.Length)))

/// Makes group `spec` of a run (on the group actor's own thread).
let makeGroup (r: EngineRun) (spec: GroupSpec) : IAgentGroup =
    let seeds = spec.Agents |> Array.map (fun i -> r.AgentSeeds[i])
    if Algorithms.IsOnPolicy r.Algorithm then
        new OnPolicyGroup(r.Config, r.EnvOf spec.Agents[0], spec.Agents, seeds, r.Device, r.Algorithm, LossLogEvery = r.LossLogEvery)
    else
        let g = new AgentGroup(r.Config, r.EnvOf spec.Agents[0], spec.Agents, seeds, r.Device, r.Algorithm, LossLogEvery = r.LossLogEvery)
        r.Objective |> Option.iter g.LoadObjective
        g

// ── GROUPS ON OTHER NODES ──

/// A float32 vector as JSON text, bit for bit: base64 of its bytes (α in a group blueprint or a trial spec).
let floatsToBase64 (a: float32[]) = Convert.ToBase64String(Runtime.InteropServices.MemoryMarshal.AsBytes(ReadOnlySpan a))

/// The vector floatsToBase64 wrote; throws when the bytes are not whole float32s.
let floatsOfBase64 (text: string) =
    let bytes = Convert.FromBase64String text
    if bytes.Length % sizeof<float32> <> 0 then failwithf "%d bytes are not whole float32 values" bytes.Length
    Runtime.InteropServices.MemoryMarshal.Cast<byte, float32>(ReadOnlySpan bytes).ToArray()

/// The run as a blueprint a worker's GroupHostActor builds groups from (JSON): the config, the algorithm, the agent
/// seeds, the loaded α (base64 of its float32 bytes), the device and the loss-logging interval. Placement and threads
/// are the coordinator's (PopulationOptions).
let toBlueprint (r: EngineRun) =
    let o = JsonObject()
    o["format"] <- JsonValue.Create 1
    o["config"] <- JsonNode.Parse(r.Config.ToJson())
    o["algorithm"] <- JsonValue.Create(string r.Algorithm)
    o["agent_seeds"] <- JsonArray(r.AgentSeeds |> Array.map (fun s -> JsonValue.Create s :> JsonNode))
    r.Objective |> Option.iter (fun a ->
        o["objective"] <- JsonValue.Create(floatsToBase64 a))
    o["mode"] <- JsonValue.Create(string r.Mode)
    o["device"] <- JsonValue.Create r.Device
    o["loss_log_every"] <- JsonValue.Create r.LossLogEvery
    o.ToJsonString()

/// The run a blueprint describes; throws naming what is missing or wrong.
let ofBlueprint (json: string) : EngineRun =
    let o =
        try JsonNode.Parse(json).AsObject()
        with e -> failwithf "the group blueprint is not a JSON object (%s)" e.Message
    let field (key: string) =
        match o[key] with
        | null -> failwithf "the group blueprint has no '%s'" key
        | v -> v
    match field("format").GetValue<int>() with
    | 1 -> ()
    | f -> failwithf "the group blueprint has format %d; this node reads format 1 (are all nodes on the same version?)" f
    let objective =
        match o["objective"] with
        | null -> None
        | v -> Some(floatsOfBase64 (v.GetValue<string>()))
    { Config = RunConfig.FromJson(field("config").ToJsonString())
      Algorithm = Enum.Parse<Algorithm>(field("algorithm").GetValue<string>())
      AgentSeeds = field("agent_seeds").AsArray() |> Seq.map (fun s -> s.GetValue<int64>()) |> Array.ofSeq
      Objective = objective
      Mode = Enum.Parse<ScheduleMode>(field("mode").GetValue<string>())
      Device = field("device").GetValue<string>()
      LossLogEvery = field("loss_log_every").GetValue<int>()
      TorchThreads = 0 }

/// A worker's GroupHostActor.Resolve: the groups of the run a blueprint describes.
let resolveBlueprint : MetaGenRL.Actors.Cluster.GroupHostActor.Resolve =
    MetaGenRL.Actors.Cluster.GroupHostActor.Resolve(fun json -> let r = ofBlueprint json in Func<GroupSpec, IAgentGroup>(makeGroup r))

/// Places the groups of `r` on `hosts` (group g on hosts[g mod n]; see GroupPlacement).
let placeOn (hosts: IActorRef list) (r: EngineRun) (options: PopulationOptions) =
    options.PlacedOn(GroupPlacement(Array.ofList hosts, toBlueprint r))

/// Runs to the budget on `system` (a fresh ActorSystem when None); blocks. Cancellation throws
/// OperationCanceledException.
let run (system: ActorSystem option) (r: EngineRun) (options: PopulationOptions) (onMetric: Action<Metric>)
        (progress: IProgress<int64>) (ct: CancellationToken) : PopulationResult =
    let make = Func<GroupSpec, IAgentGroup>(makeGroup r)
    match system with
    | Some s -> Population.RunAsync(s, options, make, onMetric, progress, ct).GetAwaiter().GetResult()
    | None -> Population.Run(options, make, onMetric, progress, ct)

/// The closing line of a run.
let describe (res: PopulationResult) =
    sprintf "%d rounds, step %d, %d objective updates, %d checkpoints, %d agent failures%s"
        res.Rounds res.GlobalStep res.ObjectiveVersion res.CheckpointsWritten res.Failures
        (if res.Failures > 0 then " (" + String.Join("; ", res.FailureReasons) + ")" else "")
