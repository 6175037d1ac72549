/// `./metagenrl meta-train --algo epg` and `./metagenrl meta-test --algo epg`: EPG (an evolved loss network, trained
/// by evolution strategies over inner loops that train fresh agents on it; meta-test trains fresh agents on any env
/// with the frozen loss). Meta-train rows carry agent = the env's index in the meta-train set (the env column names the
/// inner loop's env); meta-test rows agent = the seed's index.
module MetaGenRL.Pipeline.EpgRun

open System
open System.IO
open System.Text.Json.Nodes
open System.Threading
open Akka.Actor
open MetaGenRL.Actors
open MetaGenRL.Core.Agents
open MetaGenRL.Core.Checkpoints
open MetaGenRL.Core.Config
open MetaGenRL.Core.Engine
open MetaGenRL.Core.Envs
open MetaGenRL.Pipeline.Errors
open MetaGenRL.Pipeline.Settings
open MetaGenRL.Pipeline.RunCommand

/// The checkpoint part holding φ, its Adam state and the ES generator.
let private part = "epg"

let settingsJson (s: EpgSettings) =
    let o = JsonObject()
    o["buffer_steps"] <- JsonValue.Create s.BufferSteps
    o["update_every"] <- JsonValue.Create s.UpdateEvery
    o["loss_channels"] <- JsonValue.Create s.LossChannels
    o["policy_units"] <- JsonValue.Create s.PolicyUnits
    o["policy_learning_rate"] <- JsonValue.Create s.PolicyLearningRate
    o["max_grad_norm"] <- JsonValue.Create s.MaxGradNorm
    o["inner_steps"] <- JsonValue.Create s.InnerSteps
    o["pairs"] <- JsonValue.Create s.Pairs
    o["sigma"] <- JsonValue.Create s.Sigma
    o["es_learning_rate"] <- JsonValue.Create s.EsLearningRate
    o["fitness_episodes"] <- JsonValue.Create s.FitnessEpisodes
    o["loss_parameters"] <- JsonValue.Create(EpgLoss.Size s.LossChannels)
    o

/// The settings of a run config (its epg_* keys), checked; `field` names where the keys came from in messages.
let settingsOf (field: string) (cfg: RunConfig) =
    let s = EpgSettings.From cfg
    try s.Validate() with :? ArgumentException as ex -> usageError "%s: %s" field (messageOf ex)
    s

/// Checks that `steps` env steps hold at least one ES epoch; `flag` names the budget in the message.
let checkBudget (flag: string) (steps: int64) (s: EpgSettings) =
    if steps < s.StepsPerEpoch then
        usageError "%s %d: one EPG epoch takes 2 × %d pairs × %d inner steps = %d env steps; give at least that, or lower epg_inner_steps or epg_pairs (--set)"
            flag steps s.Pairs s.InnerSteps s.StepsPerEpoch

let private epochRows (envs: string list) (start: int64) (s: EpgSettings) (jobs: Collections.Generic.IReadOnlyList<EpgJob>)
                      (lives: Collections.Generic.IReadOnlyList<EpgLifetime>) (gradNorm: float) =
    [ for m in 0 .. jobs.Count - 1 do
        let j, life = jobs[m], lives[m]
        let offset = start + int64 m * s.InnerSteps
        for ep in life.Episodes do
            if ep.Finished then
                yield Metric(offset + ep.Step, "episode_return", ep.Return, j.EnvIndex)
                yield Metric(offset + ep.Step, "episode_length", float ep.Length, j.EnvIndex)
        yield Metric(offset + life.Steps, "fitness", life.Fitness, j.EnvIndex)
      let stop = start + s.StepsPerEpoch
      yield Metric(stop, "fitness_mean", lives |> Seq.averageBy (fun l -> l.Fitness), 0)
      yield Metric(stop, "es_grad_norm", gradNorm, 0) ]

/// The work of an EPG meta-train run, shared by the CLI and experiment trials: whole ES epochs while they fit in
/// `steps` env steps, the inner loops of each run concurrently by `workers` actors (`threads` torch threads each) in
/// `system` (an own one when None);
/// a checkpoint (φ, its Adam state, the ES generator) at an epoch's end once `every` env steps have passed since the
/// last, and at the end. Continues from `resume`'s checkpoint with the numbers of an uninterrupted run.
let trainInto (envs: string list) (seed: int) (steps: int64) (every: int64) (s: EpgSettings) (workers: int) (threads: int) (system: ActorSystem option)
              (store: CheckpointStore) (resume: Engine.ResumePoint) (onMetric: Action<Metric>) (progress: IProgress<int64>)
              (ct: CancellationToken) : PopulationResult =
    let epochs = steps / s.StepsPerEpoch
    let trainer, first =
        match resume.Index with
        | Some i ->
            let ckpt = store.Load i
            EpgTrainer.Load(ckpt.Parts[part], s, envs.Length, int64 seed), i + 1
        | None -> EpgTrainer(s, envs.Length, int64 seed), 0
    let mutable index = first
    let mutable written = 0
    let mutable stepsDone = trainer.Epochs * s.StepsPerEpoch
    let mutable lastCheckpoint = stepsDone
    let checkpoint () =
        onMetric.Invoke(Metric(stepsDone, Engine.CheckpointMarker, float index, 0))
        let meta = JsonObject()
        meta["env_step"] <- JsonValue.Create stepsDone
        meta["epochs"] <- JsonValue.Create trainer.Epochs
        store.Write(index, readOnlyDict [ part, trainer.Save() ], meta) |> ignore
        store.Prune 3 |> ignore
        index <- index + 1
        written <- written + 1
        lastCheckpoint <- stepsDone
    use pool = new EpgWorkerPool(Option.toObj system, s, max 1 (min workers (2 * s.Pairs)), max 1 threads)
    let ids = Array.ofList envs
    progress.Report stepsDone
    while trainer.Epochs < epochs do
        ct.ThrowIfCancellationRequested()
        let jobs = trainer.Propose()
        let lives = pool.Run(jobs, ids, ct)
        let norm = trainer.Apply(lives |> Seq.map (fun l -> l.Fitness) |> Array.ofSeq)
        for m in epochRows envs stepsDone s jobs lives norm do onMetric.Invoke m
        stepsDone <- stepsDone + s.StepsPerEpoch
        progress.Report stepsDone
        if stepsDone - lastCheckpoint >= every && trainer.Epochs < epochs then checkpoint ()
    if lastCheckpoint <> stepsDone || index = 0 then checkpoint ()
    PopulationResult([||], trainer.Epochs, trainer.Epochs, stepsDone, [| stepsDone |], 0, 0, written, [||])

let describe (r: PopulationResult) =
    sprintf "%d ES epochs, %d env steps, %d checkpoints" r.Rounds r.GlobalStep r.CheckpointsWritten

/// Meta-trains an EPG loss on `r.Envs` for `r.Steps` env steps in all (whole ES epochs; `--set epg_*` changes their
/// size), with a checkpoint every `--checkpoint-every` env steps (default max(1000, steps / 5)) and at the end;
/// `--resume` continues from the newest checkpoint that verifies, with the numbers of an uninterrupted run.
let metaTrain (r: PopulationRun.MetaTrainRequest) (command: string) : int =
    if List.isEmpty r.Envs then usageError "--envs: give at least one env id"
    for e in r.Envs do validateEnv "--envs" e
    validateRun r.Steps r.LossLogEvery r.Device
    if r.Device <> "cpu" then usageError "--device %s: epg runs on the CPU only" r.Device
    let every = match r.CheckpointEvery with Some n when n > 0L -> n | _ -> max 1000L (r.Steps / 5L)
    let cfg =
        resolveConfig ([ sprintf "env_name=%s" (String.Join(",", r.Envs)); sprintf "timesteps_total=%d" r.Steps; "agent_count=1"
                         sprintf "checkpoint_every=%d" every ] @ r.Overrides)
    let settings = settingsOf "--set" cfg
    checkBudget "--steps" r.Steps settings
    let out = r.Out |> Option.defaultWith (fun () -> Path.Combine("results", r.Experiment, sprintf "epg-%s-s%d" (String.Join("+", r.Envs)) r.Seed))
    use _lock = FolderLock.acquire out
    let store = CheckpointStore out
    let previous = Results.readRunJson out
    PopulationRun.checkFolder out store r
    let request = { r with Variant = "epg" }
    if r.Resume then previous |> Option.iter (PopulationRun.checkResume out request (cfg.ToJson()))
    let resume = if r.Resume then Engine.resumePoint out store else Engine.ResumePoint.Start
    if r.Resume then for line in resume.Describe out do printfn "%s" line
    let runId =
        match previous with
        | Some j when resume.Index.IsSome && j.ContainsKey "run_id" -> j["run_id"].GetValue<string>()
        | _ -> Results.newRunId "epg" r.Seed
    let key : Results.RunKey =
        { RunId = runId; Experiment = r.Experiment; Variant = "epg"; Phase = "meta-train"; Env = String.Join(",", r.Envs); Seed = r.Seed }
    let writer = Results.RunWriter(out, key, cfg.ToJson(), command, (fun i -> r.Envs[i % r.Envs.Length]), resume.Rows)
    if r.Resume then writer.Resumed(resume.ToJson(), previous)
    writer.SetInfo("epg", settingsJson settings)
    let threads = max 1 r.TorchThreads
    let workers = max 1 (Environment.ProcessorCount / threads)
    execute writer (sprintf "epg meta-train %s seed %d" (String.Join("+", r.Envs)) r.Seed) (r.Steps / settings.StepsPerEpoch * settings.StepsPerEpoch)
        (fun onMetric _ progress ct -> trainInto r.Envs r.Seed r.Steps every settings workers threads None store resume onMetric progress ct)
        describe

/// The loss of an EPG meta-train folder (checkpoint `checkpoint`, else its newest that verifies) and the settings it
/// was trained with. Refuses a folder of another meta-learner by name.
let loadLoss (dir: string) (checkpoint: int option) : EpgSettings * MetaTestRun.LoadedObjective =
    let text (j: JsonObject) (key: string) = match j[key] with null -> "unknown" | v -> v.GetValue<string>()
    match Results.readRunJson dir with
    | Some j when text j "variant" <> "epg" || text j "phase" <> "meta-train" ->
        usageError "--objective '%s' holds a %s %s run, not an epg meta-train run" dir (text j "variant") (text j "phase")
    | _ -> ()
    let loaded = MetaTestRun.loadFrom part "EPG loss" (fun bytes -> EpgTrainer.ReadLoss bytes) dir checkpoint
    let settings = settingsOf (sprintf "--objective '%s'" dir) loaded.Config
    if loaded.Alpha.Length <> EpgLoss.Size settings.LossChannels then
        usageError "--objective '%s': checkpoint %d holds a loss of %d parameters; this version's loss has %d"
            dir loaded.Checkpoint loaded.Alpha.Length (EpgLoss.Size settings.LossChannels)
    settings, loaded

/// The work of an EPG meta-test, shared by the CLI and experiment trials: for each seed (its index k the rows' agent),
/// a fresh agent trained on `env` for `steps` env steps by the frozen loss `phi`, its episodes streamed as rows.
let testInto (s: EpgSettings) (phi: float32[]) (env: string) (seeds: int list) (steps: int64) (onMetric: Action<Metric>)
             (progress: IProgress<int64>) (ct: CancellationToken) : PopulationResult =
    let mutable total = 0L
    let mutable updates = 0L
    for k, seed in List.indexed seeds do
        let agentSeed = Engine.agentSeed seed 0
        use e = EnvRegistry.Make(env, EpgWorkerPool.EnvSeed agentSeed)
        let onEpisode (ep: EpgEpisode) =
            if ep.Finished then
                onMetric.Invoke(Metric(ep.Step, "episode_return", ep.Return, k))
                onMetric.Invoke(Metric(ep.Step, "episode_length", float ep.Length, k))
            progress.Report(total + ep.Step)
        let life = EpgInnerLoop.Run(s, phi, e, steps, agentSeed, Action<EpgEpisode> onEpisode, ct)
        onMetric.Invoke(Metric(steps, "last_loss", life.LastLoss, k))
        updates <- updates + int64 life.Updates
        total <- total + steps
        progress.Report total
    PopulationResult([||], updates, 0L, steps, Array.create seeds.Length steps, 0, 0, 0, [||])

/// Trains a fresh agent per seed on `r.Env` for `r.Steps` env steps with the frozen EPG loss of `r.Objective`.
let metaTest (r: MetaTestRun.MetaTestRequest) (command: string) : int =
    validateEnv "--env" r.Env
    validateRun r.Steps r.LossLogEvery r.Device
    validateSeeds r.Seeds
    if r.Device <> "cpu" then usageError "--device %s: epg runs on the CPU only" r.Device
    let settings, loaded = loadLoss r.Objective r.Checkpoint
    for line in loaded.Describe() do printfn "%s" line
    if r.Steps < int64 settings.BufferSteps then
        usageError "--steps %d: shorter than the EPG loss's buffer of %d steps (no update would happen)" r.Steps settings.BufferSteps
    let out = r.Out |> Option.defaultWith (fun () -> Path.Combine("results", r.Experiment, sprintf "epg-%s-s%s" r.Env (String.Join(",", r.Seeds))))
    let cfg = resolveConfig [ sprintf "env_name=%s" r.Env; sprintf "timesteps_total=%d" r.Steps; "agent_count=1" ]
    let key seed : Results.RunKey =
        { RunId = Results.newRunId (sprintf "meta-test-epg-%s" r.Env) seed; Experiment = r.Experiment; Variant = "epg"
          Phase = "meta-test"; Env = r.Env; Seed = seed }
    let writers, locks = seedWriters out r.Seeds r.Force key (cfg.ToJson()) command
    use _locks = locks
    for w in writers do w.SetInfo("objective", loaded.ToJson())
    executeRuns writers (sprintf "epg meta-test %s seed %s" r.Env (String.Join(",", r.Seeds))) (r.Steps * int64 r.Seeds.Length)
        (fun onMetric _ progress ct -> testInto settings loaded.Alpha r.Env r.Seeds r.Steps onMetric progress ct)
        (fun res -> sprintf "%d env steps per seed, %d policy updates on the frozen loss" res.GlobalStep res.ObjectiveVersion)
