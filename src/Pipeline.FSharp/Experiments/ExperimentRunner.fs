/// Runs an expanded experiment: its trials on one in-process ActorSystem, as many at once as the cores allow,
/// each trial a population (one agent for meta-test and baselines) or another meta-learner's run (RL²), with its own
/// Parquet file and checkpoints. Completed trials are skipped, interrupted ones resume from their checkpoints,
/// Ctrl-C stops cleanly.
module MetaGenRL.Pipeline.ExperimentRunner

open System
open System.Collections.Concurrent
open System.IO
open System.Text.Json
open System.Text.Json.Nodes
open System.Threading
open System.Threading.Tasks
open Akka.Actor
open MetaGenRL.Actors
open MetaGenRL.Core.Checkpoints
open MetaGenRL.Core.Engine
open MetaGenRL.Pipeline.Errors
open MetaGenRL.Pipeline.Settings
open MetaGenRL.Pipeline.Experiment

/// Where a trial stands.
type TrialStatus =
    | Pending
    | Running
    | Complete
    /// Complete before this invocation started.
    | Done
    | Interrupted
    | Failed of string
    /// Its meta-train trial did not complete.
    | Blocked of string

    member s.Name =
        match s with
        | Pending -> "pending" | Running -> "running" | Complete -> "complete" | Done -> "complete (earlier)"
        | Interrupted -> "interrupted" | Failed _ -> "failed" | Blocked _ -> "blocked"

    member s.Finished = match s with Complete | Done -> true | _ -> false

/// Live state of one trial, read by the progress display.
type TrialRun(trial: Trial) =
    let mutable steps = 0L
    member val Status = Pending with get, set
    member val LastReturn = nan with get, set
    member val Episodes = 0 with get, set
    member val Clock = Diagnostics.Stopwatch() with get
    /// What the trial's console line should say besides its status: checkpoints skipped, agent failures.
    member val Notes = Collections.Generic.List<string>() with get
    /// Whether a worker was lost while it ran this trial (it then runs again on another).
    member val Lost = false with get, set
    member _.Trial = trial
    member _.Steps with get () = Interlocked.Read &steps and set (v: int64) = Interlocked.Exchange(&steps, v) |> ignore
    /// Env steps for display: only with budget_check_per_iteration can the schedule run past the budget.
    member r.ShownSteps = min r.Steps trial.Steps
    /// The last episode return, formatted ("" before the first episode).
    member r.ReturnText = if Double.IsNaN r.LastReturn then "" else sprintf "%.1f" r.LastReturn

/// How an experiment is run.
type RunOptions =
    { Out: string
      /// Cores trials may use at once (each agent takes one).
      Cores: int
      /// torch intra-op threads per agent.
      TorchThreads: int
      LossLogEvery: int
      Command: string }

let trialDir (out: string) (t: Trial) = Path.Combine(out, "trials", t.Id)
let experimentJsonPath (out: string) = Path.Combine(out, "experiment.json")
let mergedPath (out: string) = Path.Combine(out, "results.parquet")

/// The swept columns every trial file of the experiment carries.
let sweptColumnsOf (e: Experiment) = Results.sweptColumns (e.Sweep |> List.map (fun a -> a.Key, a.Values))

let private columnsOf (t: Trial) : Results.TrialColumns =
    { TrialId = t.Id; TrainEnvs = t.TrainEnvs |> Option.map (fun s -> String.Join("+", s)); MetaSeed = t.MetaSeed
      Seen = t.Seen; Swept = t.Swept }

/// The engine run of a trial: its config, algorithm (meta-train, meta-test or the baseline's), agents on its envs
/// round-robin, agent i seeded as the trial seed's agent i (so a baseline trial of seed s trains the agent
/// `./metagenrl train --seed s` trains).
let private trialEngine (t: Trial) (mode: ScheduleMode) =
    let algorithm =
        match t.Phase with
        | MetaTrainPhase -> Algorithm.MetaTrain
        | MetaTestPhase -> Algorithm.MetaTest
        | BaselinePhase -> Algorithms.Parse t.Variant
    let seeds = Array.init t.Agents (Engine.agentSeed t.Seed)
    Engine.create (trialConfig t) algorithm t.Envs seeds t.Steps mode

/// The engine run of a trial in schedule `mode` on `device`, with the run options' logging and threads.
let private trialRunWith (mode: ScheduleMode) (device: string) (opts: RunOptions) (t: Trial) : Engine.EngineRun =
    { trialEngine t mode with Device = device; LossLogEvery = opts.LossLogEvery; TorchThreads = opts.TorchThreads }

let trialRun (e: Experiment) (opts: RunOptions) (t: Trial) : Engine.EngineRun = trialRunWith e.Mode e.Device opts t

/// The meta-train and meta-test of each meta-learner that runs outside the population engine: the one place a
/// learner's functions are named (see MetaLearnerRun). None: MetaGenRL, which runs on the engine.
let private learnerRuns (l: MetaLearner) : (MetaLearnerRun.Train * MetaLearnerRun.Test) option =
    match l with
    | MetaGenRL -> None
    | Rl2 -> Some(Rl2Run.trainInto, Rl2Run.testInto)
    | Epg -> Some(EpgRun.trainInto, EpgRun.testInto)

/// The checkpoint part of a meta-train of learner `l` that its meta-tests read.
let private resultPart (l: MetaLearner) =
    match l with
    | MetaGenRL -> MetaTestRun.objectivePart
    | Rl2 -> Rl2Run.part
    | Epg -> EpgRun.part

/// The config a trial runs with and records in run.json: an engine run's (its algorithm's settings applied), or
/// another meta-learner's (Experiment.trialConfig).
let private recordedConfig (t: Trial) =
    match t.Learner |> Option.bind learnerRuns with
    | Some _ -> trialConfig t
    | None -> (trialEngine t ScheduleMode.Sync).Config

/// Which env a row's agent index names: the engine's agent i runs env i mod n; another meta-learner's rows carry
/// the env's index in the set (the same rule).
let private envOfAgent (t: Trial) (agent: int) = Grouping.EnvOf(t.Envs, agent)

/// The meta-train folder whose result a meta-test trial tests: its meta-train trial's, or an external one.
let private sourceOf (opts: RunOptions) (t: Trial) =
    t.ObjectiveDir |> Option.orElse (t.DependsOn |> Option.map (fun d -> Path.Combine(opts.Out, "trials", d)))

/// Where the process that computes a meta-test trial gets what it tests.
type ObjectiveSource =
    /// A meta-train folder it reads: a local run, a worker that shares --out (RL², EPG).
    | Folder of string
    /// A MetaGenRL α that the coordinator loaded from its folder and sent with the trial.
    | Sent of MetaTestRun.LoadedObjective

/// Whether the coordinator sends trial `t` its objective with the trial: a MetaGenRL meta-test's α (about 62 KB) does
/// travel, so no worker needs to see the meta-train folder; an RL² policy or EPG loss is read from it on the worker.
let private objectiveTravels (t: Trial) = t.Learner |> Option.bind learnerRuns |> Option.isNone

// ── ONE TRIAL ──

/// A trial's computation: rows through the Action, env steps through the progress; cancellation throws.
type TrialWork = Action<Metric> -> IProgress<int64> -> CancellationToken -> PopulationResult

/// The work of trial `t` (schedule `mode`, `device`) in this process on `system`, from `point` in its folder's
/// `store`: its meta-learner's meta-train or meta-test (of `source`), or the population engine (MetaGenRL and the
/// baselines; its groups on the `span` group hosts when that is not empty, see Engine.placeOn). `setInfo` sets a
/// run.json field, `note` adds a line to the trial's notes.
let trialWork (system: ActorSystem) (mode: ScheduleMode) (device: string) (opts: RunOptions) (t: Trial) (source: ObjectiveSource option)
              (span: IActorRef list) (store: CheckpointStore) (point: Engine.ResumePoint) (resume: bool)
              (setInfo: string -> JsonNode -> unit) (note: string -> unit) : TrialWork =
    // A meta-learner computes on the trial's thread, with the intra-op threads an agent gets.
    let onTrialThread (f: TrialWork) onMetric progress ct =
        if opts.TorchThreads > 0 then MetaGenRL.Core.Torch.TorchThreads.Use opts.TorchThreads
        f onMetric progress ct
    match t.Phase, t.Learner |> Option.bind learnerRuns with
    | MetaTrainPhase, Some (train, _) ->
        let cfg = trialConfig t
        onTrialThread (train { Envs = t.Envs; Seed = t.Seed; Steps = t.Steps; CheckpointEvery = cfg.CheckpointEvery
                               Store = store; Resume = point; Config = cfg; Cores = min opts.Cores t.Agents
                               SetInfo = setInfo })
    | MetaTestPhase, Some (_, test) ->
        let dir =
            match source with
            | Some (Folder dir) -> dir
            | _ -> invalidOp (sprintf "meta-test trial %s has no meta-train folder to read" t.Id)
        onTrialThread (test { Source = dir; Env = t.Envs.Head; Seed = t.Seed; Steps = t.Steps; SetInfo = setInfo; Note = note })
    | _ ->
        fun onMetric progress ct ->
            let objective =
                source |> Option.map (function
                    | Folder dir -> MetaTestRun.loadObjective dir None
                    | Sent o -> o)
            objective |> Option.iter (fun o ->
                setInfo "objective" (o.ToJson())
                o.Describe() |> List.filter (fun l -> l.StartsWith "skipping") |> List.iter note)
            let engine = { trialRunWith mode device opts t with Objective = objective |> Option.map (fun o -> o.Value) }
            let options = Engine.populationOptions engine store point.Index resume note
            let options = if span.IsEmpty then options else Engine.placeOn span engine options
            Engine.run (Some system) engine options onMetric progress ct

/// The file by which a worker knows whether it shares the experiment folder: a coordinator writes a fresh random token
/// there when it starts and sends it with every trial; a worker that reads the same token at --out's path sees the
/// coordinator's folder (a copy of an old folder holds an old token).
let clusterTokenPath (out: string) = Path.Combine(out, ".cluster-token")

/// Where a trial computes: in this process, or on a cluster worker (its TrialHostActor), followed from this process;
/// `token` is the one in the experiment folder's clusterTokenPath.
type Placement =
    | Here
    | OnWorker of host: IActorRef * token: string
    /// Computed here, its population's groups on these workers' GroupHostActors (--span-populations).
    | Spanning of groupHosts: IActorRef list

/// A MetaGenRL objective as it travels with a trial: α bit for bit (base64 of its bytes) and what run.json records
/// about the checkpoint the coordinator loaded it from.
let private sentObjectiveJson (o: MetaTestRun.LoadedObjective) =
    let x = JsonObject()
    x["alpha"] <- JsonValue.Create(Engine.floatsToBase64 o.Value)
    x["config"] <- JsonNode.Parse(o.Config.ToJson())
    x["variant"] <- JsonValue.Create o.Variant
    x["dir"] <- JsonValue.Create(Path.GetFullPath o.Dir)   // the coordinator's folder, not one on the worker
    x["checkpoint"] <- JsonValue.Create o.Checkpoint
    x["sha256"] <- JsonValue.Create o.Hash
    x["skipped"] <- Engine.skippedJson o.Skipped
    x["meta_train_status"] <- JsonValue.Create o.MetaTrainStatus
    x["meta_train_run_id"] <- JsonValue.Create o.MetaTrainRunId
    x

let private sentObjectiveOfJson (x: JsonObject) : MetaTestRun.LoadedObjective =
    let text (key: string) = x[key].GetValue<string>()
    { Value = Engine.floatsOfBase64 (text "alpha"); Config = MetaGenRL.Core.Config.RunConfig.FromJson(x["config"].ToJsonString()); Variant = text "variant"
      Dir = text "dir"; Checkpoint = x["checkpoint"].GetValue<int>(); Hash = text "sha256"
      Skipped = [ for s in x["skipped"].AsArray() -> s["checkpoint"].GetValue<int>(), s["reason"].GetValue<string>() ]
      MetaTrainStatus = text "meta_train_status"; MetaTrainRunId = text "meta_train_run_id" }

/// What a worker needs to run trial `t` as this process would: the trial, the schedule, the device, the run options,
/// the experiment folder's token, where the coordinator resumes it from (a worker that shares the folder finds the
/// same checkpoint) and, for a MetaGenRL meta-test, the objective (objectiveTravels).
let private remoteSpec (e: Experiment) (opts: RunOptions) (t: Trial) (token: string) (resume: bool) (point: Engine.ResumePoint) =
    let o = JsonObject()
    o["trial"] <- trialToJson t
    o["mode"] <- JsonValue.Create(string e.Mode)
    o["device"] <- JsonValue.Create e.Device
    o["out"] <- JsonValue.Create(Path.GetFullPath opts.Out)
    o["out_token"] <- JsonValue.Create token
    o["torch_threads"] <- JsonValue.Create opts.TorchThreads
    o["loss_log_every"] <- JsonValue.Create opts.LossLogEvery
    o["command"] <- JsonValue.Create opts.Command
    o["resume"] <- JsonValue.Create resume
    point.Index |> Option.iter (fun i -> o["resume_index"] <- JsonValue.Create i)
    if objectiveTravels t then
        sourceOf opts t |> Option.iter (fun dir -> o["objective"] <- sentObjectiveJson (MetaTestRun.loadObjective dir None))
    o.ToJsonString()

/// A meta-train's result that a worker which does not share --out sends back (see sendResult): the part its
/// meta-tests read, of its checkpoint `Index` in the worker's folder `From`, with that checkpoint's metadata.
type SentResult = { Index: int; Meta: JsonObject; From: string; Parts: Collections.Generic.IReadOnlyDictionary<string, byte[]> }

/// The work of a trial placed on a worker: a RemoteTrialActor in `system` sends it there and hands back what comes.
let private remoteWork (system: ActorSystem) (host: IActorRef) (t: Trial) (spec: string) (setInfo: string -> JsonNode -> unit)
                       (note: string -> unit) (result: SentResult -> unit) : TrialWork =
    fun onMetric progress ct ->
        let finished = TaskCompletionSource<string[]>(TaskCreationOptions.RunContinuationsAsynchronously)
        let reporter =
            { new MetaGenRL.Actors.Cluster.ITrialReporter with
                member _.SetInfo(key, json) = setInfo key (JsonNode.Parse json)
                member _.Note line = note line
                member _.Result(index, meta, from, parts) =
                    result { Index = index; Meta = JsonNode.Parse(meta).AsObject(); From = from; Parts = parts } }
        let proxy = system.ActorOf(MetaGenRL.Actors.Cluster.RemoteTrialActor.Props(host, t.Id, spec, Action<Metric>(fun m -> onMetric.Invoke m), progress, reporter, finished))
        use _stop = ct.Register(fun () -> proxy.Tell(MetaGenRL.Actors.Cluster.StopTrial t.Id))
        let reasons =
            try finished.Task.GetAwaiter().GetResult()
            with :? TaskCanceledException -> raise (OperationCanceledException ct)
        PopulationResult([||], 0L, 0L, t.Steps, [||], 0, 0, 0, reasons)

/// Runs (or resumes) one trial to completion, here on `system` or on a worker. Returns its final status; never throws
/// for the trial's own failures (they are recorded in its run.json and returned). A worker lost mid-trial and a worker
/// that refuses the trial are the exceptions (WorkerLostException, TrialRefusedException, after the trial is marked
/// interrupted): the caller runs it again elsewhere.
let runTrialOn (placement: Placement) (system: ActorSystem) (e: Experiment) (opts: RunOptions) (run: TrialRun) (ct: CancellationToken) : TrialStatus =
    let t = run.Trial
    let dir = trialDir opts.Out t
    let store = CheckpointStore dir
    let resume = Directory.Exists dir
    Directory.CreateDirectory dir |> ignore
    let point = if resume then Engine.resumePoint dir store else Engine.ResumePoint.Start
    let previous = Results.readRunJson dir
    let runId =
        match previous with
        | Some j when point.Index.IsSome && j.ContainsKey "run_id" -> j["run_id"].GetValue<string>()
        | _ -> Results.newRunId t.Id t.Seed
    let key : Results.RunKey =
        { RunId = runId; Experiment = e.Name; Variant = t.Variant; Phase = t.Phase.Name
          Env = String.Join(",", t.Envs); Seed = t.Seed }
    let writer = Results.RunWriter(dir, key, (recordedConfig t).ToJson(), opts.Command, envOfAgent t, point.Rows, Some(columnsOf t, sweptColumnsOf e))
    let note (line: string) = lock run.Notes (fun () -> run.Notes.Add line)
    if resume then
        writer.Resumed(point.ToJson(), previous)
        point.Describe dir |> List.filter (fun l -> l.StartsWith "skipping") |> List.iter note
    if run.Lost then
        note (match point.Index with
              | Some i -> sprintf "after the lost worker it resumes from checkpoint %d" i
              | None -> sprintf "after the lost worker it runs again from the start: %s holds no checkpoint of it" dir)
    try
        writer.Flush "running"
        let setInfo (k: string) (v: JsonNode) = writer.SetInfo(k, v)
        let sent = ref None   // set on the trial's RemoteTrialActor, read here once it has finished
        let work =
            match placement with
            | Here -> trialWork system e.Mode e.Device opts t (sourceOf opts t |> Option.map Folder) [] store point resume setInfo note
            | Spanning hosts ->
                writer.SetInfo("workers", JsonArray(hosts |> List.map (fun h -> JsonValue.Create(string h.Path.Address) :> JsonNode) |> Array.ofList))
                trialWork system e.Mode e.Device opts t (sourceOf opts t |> Option.map Folder) hosts store point resume setInfo note
            | OnWorker (host, token) ->
                writer.SetInfo("worker", JsonValue.Create(string host.Path.Address))
                let received (r: SentResult) =
                    let x = JsonObject()
                    x["checkpoint"] <- JsonValue.Create r.Index
                    x["parts"] <- JsonArray(r.Parts.Keys |> Seq.map (fun p -> JsonValue.Create p :> JsonNode) |> Array.ofSeq)
                    x["copied_from"] <- JsonValue.Create r.From
                    setInfo "result_checkpoint" x
                    sent.Value <- Some r
                remoteWork system host t (remoteSpec e opts t token resume point) setInfo note received
        let onMetric =
            Action<Metric>(fun m ->
                writer.Add(m.Agent, m.EnvStep, m.Name, m.Value)
                if m.Name = "episode_return" then
                    run.LastReturn <- m.Value
                    run.Episodes <- run.Episodes + 1
                if m.Name = Engine.CheckpointMarker then writer.Flush "running")
        let progress = { new IProgress<int64> with member _.Report v = run.Steps <- v }
        use _timer = new Timer((fun _ -> try writer.Flush "running" with _ -> ()), null, 60_000, 60_000)
        let res = work onMetric progress ct
        writer.AddFailures res.FailureReasons
        writer.Flush "complete"
        // A meta-train's result from a worker's own folder becomes a checkpoint here (what its meta-tests load), holding
        // that part alone: written once the trial is complete, so that it is never taken for one to resume from.
        sent.Value |> Option.iter (fun r ->
            let meta = r.Meta.DeepClone().AsObject()
            meta["copied_from"] <- JsonValue.Create r.From
            store.Write(r.Index, r.Parts, meta) |> ignore)
        Complete
    with
    | :? OperationCanceledException when ct.IsCancellationRequested ->
        (try writer.Flush "interrupted" with ex -> writer.Failed(sprintf "interrupted, and the results could not be written: %s" (messageOf ex)))
        Interrupted
    | :? MetaGenRL.Actors.Cluster.WorkerLostException | :? MetaGenRL.Actors.Cluster.TrialRefusedException ->
        (try writer.Flush "interrupted" with _ -> ())
        reraise ()
    | ex ->
        RunCommand.recordFailure writer ex
        Failed(messageOf ex)

/// Runs (or resumes) one trial here on `system` (see runTrialOn).
let runTrial (system: ActorSystem) (e: Experiment) (opts: RunOptions) (run: TrialRun) (ct: CancellationToken) : TrialStatus =
    runTrialOn Here system e opts run ct

/// Where a worker runs the trials it is sent (`./metagenrl worker --local-out`).
type WorkerFolders =
    /// In the experiment's --out where this worker sees it (it reads the coordinator's token there, see
    /// clusterTokenPath), else in a folder of its own under `local`.
    | OutOr of local: string
    /// Always in a folder of its own under `local`: this worker does not share --out.
    | LocalOnly of local: string

/// Where a worker that does not share --out keeps the trial folders of the experiment whose folder is `out` (the
/// coordinator's path): a folder of `local` named after the experiment folder and a hash of its path.
let localExperimentDir (local: string) (out: string) =
    let full = Path.GetFullPath(out).TrimEnd(Path.DirectorySeparatorChar)
    let hash = Convert.ToHexStringLower(Security.Cryptography.SHA256.HashData(Text.Encoding.UTF8.GetBytes full)).Substring(0, 8)
    Path.Combine(local, sprintf "%s-%s" (Path.GetFileName full) hash)

/// Sends back what the meta-tests of meta-train trial `t`, run in this worker's own folder (`store`), read: that part
/// of its newest checkpoint that verifies (the coordinator writes it into its trial folder, see runTrialOn).
let private sendResult (t: Trial) (store: CheckpointStore) (reporter: MetaGenRL.Actors.Cluster.ITrialReporter) =
    let part = resultPart (defaultArg t.Learner MetaGenRL)
    match Option.ofNullable (store.Latest()) with
    | None -> failwithf "meta-train trial %s ended without a checkpoint in %s" t.Id store.Root
    | Some k ->
        let c = store.Load k
        match c.Parts.TryGetValue part with
        | true, bytes -> reporter.Result(k, c.Meta.ToJsonString(), c.Path, readOnlyDict [ part, bytes ])
        | _ -> failwithf "checkpoint %s of meta-train trial %s holds no part '%s'" c.Path t.Id part

/// Refuses a trial on this worker (another worker may run it): TrialRefusedException with the formatted reason.
let private refuse fmt = Printf.kprintf (fun msg -> raise (MetaGenRL.Actors.Cluster.TrialRefusedException msg)) fmt

/// A worker's TrialHostActor.RunSpec: reads a remoteSpec and runs its trial's work in this process on `system`,
/// reporting run.json fields and notes back. Where the worker shares the experiment folder (`folders` allows it and
/// the folder's token is the coordinator's), it runs the trial in the coordinator's trial folder and checks that it
/// sees the checkpoint the coordinator resumes from. Else it runs the trial from the start in a folder of its own,
/// emptied first (the coordinator, which sees no checkpoint of it, starts the trial's rows afresh), refuses a resume
/// from a checkpoint, which it cannot see, and an RL² or EPG meta-test, whose meta-train folder it cannot read (a
/// MetaGenRL objective comes with the trial), and sends a meta-train's result back (sendResult). run.json's
/// `worker_folder` says which.
let runSpec (system: ActorSystem) (folders: WorkerFolders) (cores: int) : MetaGenRL.Actors.Cluster.TrialHostActor.RunSpec =
    MetaGenRL.Actors.Cluster.TrialHostActor.RunSpec(fun spec onMetric progress reporter ct ->
        let j = JsonNode.Parse(spec).AsObject()
        let t = trialOfJson (j["trial"].AsObject())
        let opts =
            { Out = j["out"].GetValue<string>(); Cores = cores; TorchThreads = j["torch_threads"].GetValue<int>()
              LossLogEvery = j["loss_log_every"].GetValue<int>(); Command = j["command"].GetValue<string>() }
        let mode = Enum.Parse<ScheduleMode>(j["mode"].GetValue<string>())
        let resume = j["resume"].GetValue<bool>()
        let wanted = match j["resume_index"] with null -> None | v -> Some(v.GetValue<int>())
        let token = match j["out_token"] with null -> None | v -> Some(v.GetValue<string>())
        let setInfo (k: string) (v: JsonNode) = reporter.SetInfo(k, v.ToJsonString())
        let shares =
            match folders, token with
            | OutOr _, Some token ->
                (try File.ReadAllText(clusterTokenPath opts.Out).Trim() = token
                 with :? IOException | :? UnauthorizedAccessException -> false)
            | _ -> false
        let source =
            match j["objective"] with
            | null ->
                sourceOf opts t |> Option.map (fun dir ->
                    if not shares then
                        refuse "trial %s meta-tests what the meta-train in %s learned, which this worker cannot read: it does not share the experiment folder %s (only a MetaGenRL objective travels with a trial)"
                            t.Id dir opts.Out
                    Folder dir)
            | x -> Some(Sent(sentObjectiveOfJson (x.AsObject())))
        let dir, point =
            if shares then
                let dir = trialDir opts.Out t
                if not (Directory.Exists dir) then
                    failwithf "this worker does not see the trial folder %s: the experiment's --out must be a folder every node reaches at the same path" dir
                let point = if resume then Engine.resumePoint dir (CheckpointStore dir) else Engine.ResumePoint.Start
                if point.Index <> wanted then
                    failwithf "this worker resumes %s from checkpoint %A, the coordinator from %A: is --out the same folder on every node?" t.Id point.Index wanted
                dir, point
            else
                let local = localExperimentDir (match folders with OutOr l | LocalOnly l -> l) opts.Out
                if t.Id <> Path.GetFileName t.Id || t.Id.StartsWith "." then failwithf "trial id '%s' is not a folder name" t.Id
                let dir = trialDir local t
                wanted |> Option.iter (fun i ->
                    refuse "this worker does not share the experiment folder %s (it keeps its trial folders under %s), so it cannot resume trial %s from checkpoint %d in %s: only a worker that shares --out resumes a trial"
                        opts.Out local t.Id i (trialDir opts.Out t))
                // An earlier attempt's checkpoints here must not be resumed: the coordinator's rows start afresh.
                if Directory.Exists dir then Directory.Delete(dir, true)
                Directory.CreateDirectory dir |> ignore
                dir, Engine.ResumePoint.Start
        let folder = JsonObject()
        folder["path"] <- JsonValue.Create dir
        folder["shares_out"] <- JsonValue.Create shares
        if not shares then
            folder["note"] <- JsonValue.Create "the worker does not share --out: it ran the trial from the start in its own folder, where its checkpoints stay"
        setInfo "worker_folder" folder
        let store = CheckpointStore dir
        let res = trialWork system mode (j["device"].GetValue<string>()) opts t source [] store point (resume && shares) setInfo reporter.Note onMetric progress ct
        if not shares && t.Phase = MetaTrainPhase then sendResult t store reporter
        res.FailureReasons)

// ── THE EXPERIMENT ──

/// experiment.json: the resolved declaration, each trial's status, and provenance.
let private experimentJson (e: Experiment) (trials: Trial list) (runs: TrialRun list) (opts: RunOptions) (status: string)
                            (started: DateTimeOffset) (error: string option) =
    let o = toJson e trials
    o["id"] <- JsonValue.Create(Path.GetFileName(Path.GetFullPath(opts.Out).TrimEnd('/')))
    o["status"] <- JsonValue.Create status
    o["command"] <- JsonValue.Create opts.Command
    o["git_commit"] <- JsonValue.Create Provenance.gitCommit.Value
    o["git_dirty"] <- JsonValue.Create Provenance.gitDirty.Value
    o["host"] <- JsonValue.Create(Provenance.host ())
    o["started"] <- JsonValue.Create(started.ToString "o")
    if status <> "running" then o["finished"] <- JsonValue.Create(DateTimeOffset.Now.ToString "o")
    error |> Option.iter (fun msg -> o["error"] <- JsonValue.Create msg)
    let versions = JsonObject()
    for (k, v) in Provenance.packageVersions () do versions[k] <- JsonValue.Create v
    o["versions"] <- versions
    let byId = runs |> List.map (fun r -> r.Trial.Id, r) |> dict
    for node in o["trials"].AsArray() do
        let x = node.AsObject()
        let r = byId[x["trial_id"].GetValue<string>()]
        x["status"] <- JsonValue.Create(if r.Status.Finished then "complete" else r.Status.Name)
        match r.Status with
        | Failed msg | Blocked msg -> x["error"] <- JsonValue.Create msg
        | _ -> ()
        let notes = lock r.Notes (fun () -> List.ofSeq r.Notes)
        if not notes.IsEmpty then x["notes"] <- JsonArray(notes |> List.map (fun n -> JsonValue.Create n :> JsonNode) |> Array.ofList)
    o.ToJsonString(JsonSerializerOptions(WriteIndented = true))

/// experiment.json: the resolved declaration, each trial's status, provenance and, when it failed, why.
let writeExperimentJson (e: Experiment) (trials: Trial list) (runs: TrialRun list) (opts: RunOptions) (status: string)
                        (started: DateTimeOffset) (error: string option) =
    Results.writeAllTextAtomic (experimentJsonPath opts.Out) (experimentJson e trials runs opts status started error)

/// After the experiment itself failed (not one trial: e.g. a full disk): running trials are marked failed with the
/// cause, and experiment.json says failed, best effort (see Results.writeAllTextBestEffort).
let private markFailed (e: Experiment) (trials: Trial list) (runs: TrialRun list) (opts: RunOptions) (started: DateTimeOffset) (cause: string) =
    for r in runs do if r.Status = Running then r.Status <- Failed cause
    Results.writeAllTextBestEffort (experimentJsonPath opts.Out) (experimentJson e trials runs opts "failed" started (Some cause)) |> ignore

/// One Parquet file with every trial's rows (written only when all trials completed).
let writeMerged (e: Experiment) (trials: Trial list) (opts: RunOptions) =
    let blocks =
        trials |> List.map (fun t ->
            columnsOf t, Results.readParquet (Path.Combine(trialDir opts.Out t, "metrics.parquet")) |> Array.ofList)
    let kv = Collections.Generic.Dictionary<string, string>()
    kv["metagenrl.experiment"] <- File.ReadAllText(experimentJsonPath opts.Out)
    kv["metagenrl.git_commit"] <- Provenance.gitCommit.Value
    kv["metagenrl.status"] <- "complete"
    Results.writeTrialParquet (mergedPath opts.Out) kv (sweptColumnsOf e) blocks

/// Refuses a folder whose trials were run with another config (a changed declaration under the same --out):
/// skipping or resuming them would mix results. The message names the trial and the first key that differs.
let checkExisting (trials: Trial list) (out: string) =
    for t in trials do
        match (try Results.readRunJson (trialDir out t) with _ -> None) with
        | Some j when not (isNull j["config"]) ->
            let stored = j["config"].AsObject()
            let wanted = JsonNode.Parse((recordedConfig t).ToJson()).AsObject()
            match differingKey (wanted |> Seq.map (fun kv -> kv.Key)) stored wanted with
            | Some (k, was, want) ->
                usageError "--out '%s': trial %s was run with %s=%s, this declaration gives %s; choose another --out (or move the folder away)"
                    out t.Id k was want
            | None -> ()
        | _ -> ()

/// Runs every unfinished trial, here or, with `cluster`, on the workers that join the coordinator it starts (packed
/// onto each worker's advertised cores as a local run packs them onto its own, a trial to the worker with the most
/// free cores; a trial whose worker is lost runs again on another, from its last checkpoint where the worker shared
/// --out, else from the start). `watch` gets the live trial states and the work, and returns when the work is done (a
/// display). Returns the trial states and the experiment's status: complete, failed or interrupted.
let runOn (cluster: ClusterCoordinator.ClusterSpec option) (e: Experiment) (trials: Trial list) (opts: RunOptions) (ct: CancellationToken) (watch: TrialRun list -> Task -> unit) =
    use _lock = FolderLock.acquire opts.Out   // one writer per experiment folder (see FolderLock)
    Directory.CreateDirectory(Path.Combine(opts.Out, "trials")) |> ignore
    let started = DateTimeOffset.Now
    let runs = trials |> List.map TrialRun
    for r in runs do
        if Results.isComplete (trialDir opts.Out r.Trial) then
            r.Status <- Done
            r.Steps <- r.Trial.Steps
    // With a cluster, a fresh token each start: a worker that reads it at --out's path shares this folder (runSpec).
    let token = cluster |> Option.map (fun _ -> Guid.NewGuid().ToString("N"))
    (try
        writeExperimentJson e trials runs opts "running" started None
        token |> Option.iter (Results.writeAllTextAtomic (clusterTokenPath opts.Out))
     with ex -> markFailed e trials runs opts started (messageOf ex); reraise ())
    let system =
        match cluster with
        | None -> ActorSystem.Create("experiment", Population.SystemConfig)
        | Some c ->
            try ClusterCoordinator.start c
            with ex -> markFailed e trials runs opts started (messageOf ex); reraise ()
    let work =
        Task.Run(fun () ->
            let running = ConcurrentDictionary<string, Task>()
            let coresOf (t: Trial) = min opts.Cores t.Agents
            let mutable inUse = 0
            let busy = ConcurrentDictionary<string, Address * int>()   // trial id → its worker and the cores it takes there
            let refusedBy = ConcurrentDictionary<string, Set<Address>>()   // trial id → the workers that refused it
            // --span-populations: a MetaGenRL meta-train trial computed here with its groups on every worker, alone
            let spans (t: Trial) =
                cluster |> Option.exists (fun c -> c.SpanOver > 0) && t.Phase = MetaTrainPhase && (t.Learner |> Option.bind learnerRuns).IsNone
            let mutable spanning : string option = None
            let byId = runs |> List.map (fun r -> r.Trial.Id, r) |> dict
            let statusOf id = byId[id].Status
            let pendingRuns () = runs |> List.filter (fun r -> r.Status = Pending)
            let start (r: TrialRun) (placement: Placement) =
                r.Status <- Running
                r.Clock.Start()
                running[r.Trial.Id] <-
                    Task.Run(fun () ->
                        let s =
                            try runTrialOn placement system e opts r ct
                            with
                            | :? MetaGenRL.Actors.Cluster.WorkerLostException as ex ->
                                lock r.Notes (fun () -> r.Notes.Add(sprintf "%s; it runs again on another worker" ex.Message))
                                r.Lost <- true
                                Pending
                            | :? MetaGenRL.Actors.Cluster.TrialRefusedException as ex ->
                                let worker = fst busy[r.Trial.Id]
                                refusedBy.AddOrUpdate(r.Trial.Id, Set.singleton worker, fun _ s -> s.Add worker) |> ignore
                                lock r.Notes (fun () -> r.Notes.Add(sprintf "worker %O refused it (%s); it goes to another worker" worker ex.Message))
                                Pending
                            | ex -> Failed(messageOf ex)
                        r.Clock.Stop()
                        r.Status <- s
                        if s = Complete then r.Steps <- r.Trial.Steps)
            // After Ctrl-C nothing new starts; what never started stays pending for the next run.
            while not (running.IsEmpty && (ct.IsCancellationRequested || pendingRuns().IsEmpty)) do
                if not ct.IsCancellationRequested then
                    let mutable spanWaits = false   // a spanning trial is ready: nothing else starts until it has
                    for r in pendingRuns () do
                        match r.Trial.DependsOn |> Option.map statusOf with
                        | Some s when not s.Finished && s <> Pending && s <> Running ->
                            r.Status <- Blocked(sprintf "meta-train trial %s is %s" r.Trial.DependsOn.Value s.Name)
                        | Some s when not s.Finished -> ()
                        | _ ->
                            match cluster with
                            | None ->
                                let need = coresOf r.Trial
                                if ClusterCoordinator.fits opts.Cores inUse need then
                                    inUse <- inUse + need
                                    start r Here
                            | Some c when spans r.Trial ->
                                if running.IsEmpty && (ClusterCoordinator.upWorkers system).Length >= c.SpanOver then
                                    let workers = ClusterCoordinator.upWorkers system |> List.truncate c.SpanOver
                                    let hosts = workers |> List.choose (ClusterCoordinator.actorOn system MetaGenRL.Actors.Cluster.GroupHostActor.Name)
                                    if not hosts.IsEmpty && hosts.Length = workers.Length then
                                        spanning <- Some r.Trial.Id
                                        start r (Spanning hosts)
                                spanWaits <- true
                            | Some _ when spanWaits || spanning.IsSome -> ()
                            | Some _ ->
                                // the worker with the most free cores that the trial fits on, packed as here, among
                                // those that did not refuse it; when every worker there is refused it, it fails
                                let inUseOn a = busy.Values |> Seq.filter (fun (w, _) -> w = a) |> Seq.sumBy snd
                                let refused : Set<Address> = match refusedBy.TryGetValue r.Trial.Id with | true, s -> s | _ -> Set.empty
                                let workers = ClusterCoordinator.upWorkersWithCores system
                                if not refused.IsEmpty && not workers.IsEmpty && workers |> List.forall (fun (a, _) -> refused.Contains a) then
                                    r.Status <- Failed(sprintf "every worker in the cluster refused it (%s)" (lock r.Notes (fun () -> Seq.last r.Notes)))
                                let candidates =
                                    workers
                                    |> List.filter (fun (a, _) -> r.Status = Pending && not (refused.Contains a))
                                    |> List.map (fun (a, cores) -> a, cores, inUseOn a, min cores r.Trial.Agents)
                                    |> List.filter (fun (_, cores, used, need) -> ClusterCoordinator.fits cores used need)
                                    |> List.sortByDescending (fun (_, cores, used, _) -> cores - used)
                                match candidates with
                                | (address, _, _, need) :: _ ->
                                    match ClusterCoordinator.actorOn system MetaGenRL.Actors.Cluster.TrialHostActor.Name address with
                                    | Some host ->
                                        busy[r.Trial.Id] <- (address, need)
                                        start r (OnWorker(host, token.Value))
                                    | None -> ()
                                | [] -> ()
                let finished = running |> Seq.filter (fun kv -> kv.Value.IsCompleted) |> List.ofSeq
                for kv in finished do
                    running.TryRemove kv.Key |> ignore
                    match cluster with
                    | None -> inUse <- inUse - coresOf byId[kv.Key].Trial
                    | Some _ ->
                        busy.TryRemove kv.Key |> ignore
                        if spanning = Some kv.Key then spanning <- None
                if finished.IsEmpty then
                    let waiting = running.Values |> Array.ofSeq
                    if waiting.Length > 0 then Task.WaitAny(waiting, 200) |> ignore else Thread.Sleep 50)
    try
        try
            watch runs work
            work.GetAwaiter().GetResult()
        finally
            system.Terminate().Wait(TimeSpan.FromSeconds 30.0) |> ignore
        let all = runs |> List.forall (fun r -> r.Status.Finished)
        let status =
            if all then "complete"
            elif runs |> List.exists (fun r -> match r.Status with Failed _ -> true | _ -> false) then "failed"
            else "interrupted"
        let failure =
            runs |> List.tryPick (fun r -> match r.Status with Failed m -> Some(sprintf "trial %s failed: %s" r.Trial.Id m) | _ -> None)
        writeExperimentJson e trials runs opts status started failure
        if all then writeMerged e trials opts
        runs, status
    with ex ->
        markFailed e trials runs opts started (messageOf ex)
        reraise ()

/// Runs every unfinished trial in this process (see runOn).
let run (e: Experiment) (trials: Trial list) (opts: RunOptions) (ct: CancellationToken) (watch: TrialRun list -> Task -> unit) =
    runOn None e trials opts ct watch
