/// `./metagenrl meta-train`: a population of agents meta-training an objective on Akka.NET actors, with
/// checkpoints and resume. The population settings and the resume point are shared with the experiment runner.
module MetaGenRL.Pipeline.PopulationRun

open System
open System.Collections.Generic
open System.IO
open System.Text.Json.Nodes
open MetaGenRL.Actors
open MetaGenRL.Core.Agents
open MetaGenRL.Core.Checkpoints
open MetaGenRL.Core.Config
open MetaGenRL.Core.Engine
open MetaGenRL.Pipeline.Errors
open MetaGenRL.Pipeline.Settings
open MetaGenRL.Pipeline.RunCommand

/// The metric row written just before each checkpoint (see Engine).
let CheckpointMarker = Engine.CheckpointMarker

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
      Force: bool
      /// Groups on cluster workers; None: every group in this process.
      Cluster: ClusterCoordinator.ClusterSpec option }

    static member Default =
        { Envs = [ "LunarLanderContinuous-v2"; "HalfCheetah-v2" ]; Agents = 2; Steps = 10_000L; Seed = 0; Out = None
          Variant = "full"; Mode = ScheduleMode.Sync; Resume = false; Overrides = []; Device = "cpu"
          CheckpointEvery = None; LossLogEvery = 100; TorchThreads = 0; Experiment = "meta-train"; Force = false
          Cluster = None }

let defaultMetaTrainOut (r: MetaTrainRequest) =
    Path.Combine("results", r.Experiment, sprintf "%s-%s-n%d-s%d" r.Variant (String.Join("+", r.Envs)) r.Agents r.Seed)

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
    match r.Cluster with
    | Some c ->
        if c.SpanOver < 1 then usageError "--workers %d: must be ≥ 1" c.SpanOver
        try MetaGenRL.Actors.Cluster.ClusterNode.ParseEndpoint(c.Endpoint, "--cluster") |> ignore
        with :? ArgumentException as e -> usageError "%s" e.Message
    | None -> ()
    validateRun r.Steps r.LossLogEvery r.Device

/// The engine run of a meta-train request: agent i on env i mod n, seeded as the run seed's agent i.
let engineRun (r: MetaTrainRequest) (cfg: RunConfig) =
    let seeds = Array.init r.Agents (Engine.agentSeed r.Seed)
    { Engine.create cfg Algorithm.MetaTrain r.Envs seeds r.Steps r.Mode with
        Device = r.Device; LossLogEvery = r.LossLogEvery; TorchThreads = r.TorchThreads }

/// Refuses a resume whose seed, variant or config (envs, population, budget and every other key) differs from the
/// run it continues: the rows would mix two runs under one run_id. No key is exempt.
let checkResume (out: string) (r: MetaTrainRequest) (configJson: string) (previous: JsonObject) =
    match previous["seed"] with
    | null -> ()
    | s when s.GetValue<int>() <> r.Seed ->
        usageError "--resume: '%s' holds a run with seed %d, this command gives seed %d; resume with --seed %d or start a new run elsewhere" out (s.GetValue<int>()) r.Seed (s.GetValue<int>())
    | _ -> ()
    match previous["variant"] with
    | null -> ()
    | v when v.GetValue<string>() <> r.Variant ->
        usageError "--resume: '%s' holds a run of variant %s, this command gives %s" out (v.GetValue<string>()) r.Variant
    | _ -> ()
    match previous["config"] with
    | :? JsonObject as stored ->
        let now = JsonNode.Parse(configJson).AsObject()
        let keys = Seq.append (stored |> Seq.map (fun kv -> kv.Key)) (now |> Seq.map (fun kv -> kv.Key)) |> Seq.distinct |> Seq.sort
        match differingKey keys stored now with
        | Some (k, was, want) ->
            usageError "--resume: config key '%s' was %s in the run in '%s', this command gives %s; resume with the run's settings, or start a new run (--force, or another --out)" k was out want
        | None -> ()
    | _ -> usageError "--resume: '%s'/run.json has no config to check the resume against" out

/// Checks a meta-train run folder this process holds: a new run refuses a folder that holds a run (unless
/// `--force`, which empties it, keeping the lock), a resume refuses a completed one.
let checkFolder (out: string) (store: CheckpointStore) (r: MetaTrainRequest) =
    if not r.Resume && not r.Force && (Results.isComplete out || store.Latest().HasValue) then
        usageError "--out '%s' already holds a run; pass --resume to continue it, --force to start over, or choose another folder" out
    if r.Resume && Results.isComplete out && not r.Force then
        usageError "--out '%s' holds a completed run; nothing to resume" out
    if r.Force && not r.Resume then FolderLock.clear out

/// Meta-trains an objective with a population of agents; resumable with `Resume = true`.
let metaTrain (r: MetaTrainRequest) (command: string) : int =
    validateMetaTrain r
    let cfg = metaTrainConfig r
    let out = r.Out |> Option.defaultWith (fun () -> defaultMetaTrainOut r)
    use _lock = FolderLock.acquire out   // before the checks: another writer cannot slip in between
    let store = CheckpointStore out
    let previous = Results.readRunJson out
    checkFolder out store r
    let run = engineRun r cfg
    if r.Resume then previous |> Option.iter (checkResume out r (run.Config.ToJson()))
    let resume = if r.Resume then Engine.resumePoint out store else Engine.ResumePoint.Start
    if r.Resume then for line in resume.Describe out do printfn "%s" line
    let runId =
        match previous with
        | Some j when r.Resume && j.ContainsKey "run_id" -> j["run_id"].GetValue<string>()
        | _ -> Results.newRunId (sprintf "%s-n%d" r.Variant r.Agents) r.Seed
    let key : Results.RunKey =
        { RunId = runId; Experiment = r.Experiment; Variant = r.Variant; Phase = "meta-train"
          Env = String.Join(",", r.Envs); Seed = r.Seed }
    let writer = Results.RunWriter(out, key, run.Config.ToJson(), command, run.EnvOf, resume.Rows)
    if r.Resume then writer.Resumed(resume.ToJson(), previous)
    let options = Engine.populationOptions run store resume.Index r.Resume
    let title = sprintf "meta-train %s × %d agents seed %d" (String.Join("+", r.Envs)) r.Agents r.Seed
    match r.Cluster with
    | None ->
        execute writer title r.Steps
            (fun onMetric onFailure progress ct -> Engine.run None run (options onFailure) onMetric progress ct)
            Engine.describe
    | Some c ->
        // The coordinator, the objective server and the writer stay here; the groups go to the workers.
        let system = ClusterCoordinator.start c
        try
            let hosts =
                ClusterCoordinator.awaitWorkers system c.SpanOver MetaGenRL.Actors.Cluster.GroupHostActor.Name (TimeSpan.FromMinutes 10.0) Threading.CancellationToken.None
            writer.SetInfo("workers", JsonArray(hosts |> List.map (fun h -> JsonValue.Create(string h.Path.Address) :> JsonNode) |> Array.ofList))
            let groups = run.Groups.Length
            printfn "%d group%s on %d worker%s: %s" groups (if groups = 1 then "" else "s") hosts.Length (if hosts.Length = 1 then "" else "s")
                (String.Join(", ", hosts |> List.map (fun h -> string h.Path.Address)))
            execute writer title r.Steps
                (fun onMetric onFailure progress ct ->
                    Engine.run (Some system) run (Engine.placeOn hosts run (options onFailure)) onMetric progress ct)
                Engine.describe
        finally
            system.Terminate().Wait(TimeSpan.FromSeconds 30.0) |> ignore
