/// `./metagenrl meta-train --algo epg` and `./metagenrl meta-test --algo epg`, and an experiment's epg trials: EPG (a
/// loss network evolved by evolution strategies over inner loops that train fresh agents on it; a meta-test trains
/// fresh agents on any env with the frozen loss). Meta-train rows carry agent = the env's index in the meta-train set
/// (the env column names the inner loop's env); meta-test rows agent = the seed's index.
module MetaGenRL.Pipeline.EpgRun

open System
open System.IO
open System.Text.Json.Nodes
open System.Threading
open MetaGenRL.Actors
open MetaGenRL.Core.Agents
open MetaGenRL.Core.Checkpoints
open MetaGenRL.Core.Config
open MetaGenRL.Core.Engine
open MetaGenRL.Core.Envs
open MetaGenRL.Pipeline.Errors
open MetaGenRL.Pipeline.Settings
open MetaGenRL.Pipeline.RunCommand

/// The checkpoint part holding φ, its Adam state and the ES generator (a meta-test reads φ).
let part = "epg"

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

/// The config keys EPG takes besides checkpoint_every (the others tune MetaGenRL).
let keys = [ "epg_inner_steps"; "epg_pairs"; "epg_sigma"; "epg_es_learning_rate" ]

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

let private epochRows (start: int64) (s: EpgSettings) (jobs: Collections.Generic.IReadOnlyList<EpgJob>)
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

/// Meta-trains an EPG loss on `job.Envs` for `job.Steps` env steps in all: whole ES epochs while they fit, the inner
/// loops of each run concurrently by `job.Cores` InnerLoopActors (one torch thread each); a checkpoint (φ, its Adam
/// state, the ES generator) at an epoch's end once `job.CheckpointEvery` env steps have passed since the last, and one
/// at the end. From `job.Resume`'s checkpoint it continues with the numbers of an uninterrupted run. Its settings come
/// from `job.Config`'s epg_* keys and go to run.json as `epg`. The CLI's `meta-train --algo epg` and an experiment's
/// epg meta-train trial.
let trainInto (job: MetaLearnerRun.TrainJob) (onMetric: Action<Metric>) (progress: IProgress<int64>) (ct: CancellationToken) : PopulationResult =
    let s = settingsOf "epg_*" job.Config
    checkBudget "budget" job.Steps s
    job.SetInfo "epg" (settingsJson s)
    let epochs = job.Steps / s.StepsPerEpoch
    let store = job.Store
    let trainer, first =
        match job.Resume.Index with
        | Some i -> EpgTrainer.Load((store.Load i).Parts[part], s, job.Envs.Length, int64 job.Seed), i + 1
        | None -> EpgTrainer(s, job.Envs.Length, int64 job.Seed), 0
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
    use pool = new EpgWorkerPool(null, s, max 1 (min job.Cores (2 * s.Pairs)), 1)
    let ids = Array.ofList job.Envs
    progress.Report stepsDone
    while trainer.Epochs < epochs do
        ct.ThrowIfCancellationRequested()
        let jobs = trainer.Propose()
        let lives = pool.Run(jobs, ids, ct)
        let norm = trainer.Apply(lives |> Seq.map (fun l -> l.Fitness) |> Array.ofSeq)
        for m in epochRows stepsDone s jobs lives norm do onMetric.Invoke m
        stepsDone <- stepsDone + s.StepsPerEpoch
        progress.Report stepsDone
        if stepsDone - lastCheckpoint >= job.CheckpointEvery && trainer.Epochs < epochs then checkpoint ()
    if lastCheckpoint <> stepsDone || index = 0 then checkpoint ()
    PopulationResult([||], trainer.Epochs, trainer.Epochs, stepsDone, [| stepsDone |], 0, 0, written, [||])

let describe (r: PopulationResult) =
    sprintf "%d ES epochs, %d env steps, %d checkpoints" r.Rounds r.GlobalStep r.CheckpointsWritten

/// Meta-trains an EPG loss on `r.Envs` for `r.Steps` env steps in all (whole ES epochs; `--set epg_*` sizes them),
/// with a checkpoint every `--checkpoint-every` env steps (default max(1000, steps / 5)) and at the end; `--resume`
/// continues from the newest checkpoint that verifies, with the numbers of an uninterrupted run.
let metaTrain (r: PopulationRun.MetaTrainRequest) (command: string) : int =
    let check (cfg: RunConfig) =
        let s = settingsOf "--set" cfg
        checkBudget "--steps" r.Steps s
        r.Steps / s.StepsPerEpoch * s.StepsPerEpoch
    MetaLearnerRun.metaTrainCommand "epg" trainInto describe keys check r command

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
    if loaded.Value.Length <> EpgLoss.Size settings.LossChannels then
        usageError "--objective '%s': checkpoint %d holds a loss of %d parameters; this version's loss has %d"
            dir loaded.Checkpoint loaded.Value.Length (EpgLoss.Size settings.LossChannels)
    settings, loaded

/// Trains a fresh agent per seed (its index k the rows' agent) on `env` for `steps` env steps with the frozen loss
/// `phi`, its episodes streamed as rows.
let private trainFresh (s: EpgSettings) (phi: float32[]) (env: string) (seeds: int list) (steps: int64) (onMetric: Action<Metric>)
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

/// Checks that a meta-test of `steps` env steps lets the loss act at least once.
let private checkTestSteps (flag: string) (steps: int64) (s: EpgSettings) =
    if steps < int64 s.BufferSteps then
        usageError "%s %d: shorter than the EPG loss's buffer of %d steps (no update would happen)" flag steps s.BufferSteps

/// Meta-tests the EPG loss of the meta-train run `job.Source` (its newest checkpoint that verifies): a fresh agent
/// trained on `job.Env` for `job.Steps` env steps with seed `job.Seed`, as `meta-test --algo epg --seed` does;
/// records what it loaded as run.json's `objective`. An experiment's epg meta-test trial.
let testInto (job: MetaLearnerRun.TestJob) (onMetric: Action<Metric>) (progress: IProgress<int64>) (ct: CancellationToken) =
    let settings, loaded = loadLoss job.Source None
    checkTestSteps "MetaTestSteps" job.Steps settings
    job.SetInfo "objective" (loaded.ToJson())
    for line in loaded.Describe() do if line.StartsWith "skipping" then job.Note line
    trainFresh settings loaded.Value job.Env [ job.Seed ] job.Steps onMetric progress ct

/// Trains a fresh agent per seed on `r.Env` for `r.Steps` env steps with the frozen EPG loss of `r.Objective`.
let metaTest (r: MetaTestRun.MetaTestRequest) (command: string) : int =
    validateEnv "--env" r.Env
    validateRun r.Steps r.LossLogEvery r.Device
    validateSeeds r.Seeds
    if r.Device <> "cpu" then usageError "--device %s: epg runs on the CPU only" r.Device
    let settings, loaded = loadLoss r.Objective r.Checkpoint
    for line in loaded.Describe() do printfn "%s" line
    checkTestSteps "--steps" r.Steps settings
    let out = r.Out |> Option.defaultWith (fun () -> Path.Combine("results", r.Experiment, sprintf "epg-%s-s%s" r.Env (String.Join(",", r.Seeds))))
    let cfg = MetaLearnerRun.config [ r.Env ] r.Steps None []
    let key seed : Results.RunKey =
        { RunId = Results.newRunId (sprintf "meta-test-epg-%s" r.Env) seed; Experiment = r.Experiment; Variant = "epg"
          Phase = "meta-test"; Env = r.Env; Seed = seed }
    let writers, locks = seedWriters out r.Seeds r.Force key (cfg.ToJson()) command
    use _locks = locks
    for w in writers do w.SetInfo("objective", loaded.ToJson())
    executeRuns writers (sprintf "epg meta-test %s seed %s" r.Env (String.Join(",", r.Seeds))) (r.Steps * int64 r.Seeds.Length)
        (fun onMetric _ progress ct -> trainFresh settings loaded.Value r.Env r.Seeds r.Steps onMetric progress ct)
        (fun res -> sprintf "%d env steps per seed, %d policy updates on the frozen loss" res.GlobalStep res.ObjectiveVersion)
