/// `./metagenrl meta-train --algo rl2` and `./metagenrl meta-test --algo rl2`: RL² (a GRU policy meta-trained with
/// PPO on trials drawn from the meta-train envs; meta-test runs it frozen on any env whose sizes fit its padding).
/// Rows carry agent = the env's index in the meta-train set (so the env column names the trial's env).
module MetaGenRL.Pipeline.Rl2Run

open System
open System.IO
open System.Text.Json.Nodes
open MetaGenRL.Actors
open MetaGenRL.Core.Agents
open MetaGenRL.Core.Checkpoints
open MetaGenRL.Core.Config
open MetaGenRL.Core.Engine
open MetaGenRL.Core.Envs
open MetaGenRL.Core.Randomness
open MetaGenRL.Pipeline.Errors
open MetaGenRL.Pipeline.Settings
open MetaGenRL.Pipeline.RunCommand

/// The checkpoint part holding the agent (what a meta-test reads).
let part = "rl2"

let private settingsJson (s: Rl2Settings) =
    let o = JsonObject()
    o["hidden"] <- JsonValue.Create s.Hidden
    o["episodes_per_trial"] <- JsonValue.Create s.EpisodesPerTrial
    o["trials_per_iteration"] <- JsonValue.Create s.TrialsPerIteration
    o["epochs"] <- JsonValue.Create s.Epochs
    o["minibatch_trials"] <- JsonValue.Create s.MinibatchTrials
    o["clip"] <- JsonValue.Create s.Clip
    o["gae_lambda"] <- JsonValue.Create s.GaeLambda
    o["learning_rate"] <- JsonValue.Create s.LearningRate
    o["max_grad_norm"] <- JsonValue.Create s.MaxGradNorm
    o["gamma"] <- JsonValue.Create s.Gamma
    o

/// The env a seed's run uses for env id `id` (index `i` in its list).
let private makeEnv (seed: int) (i: int) (id: string) = EnvRegistry.Make(id, Seeds.DeriveInt(Engine.agentSeed seed i, Seeds.EnvStream))

/// The rows of one trial: episode_return and episode_length per finished episode, trial_return; env steps counted
/// from `before`.
let private trialRows (agent: int) (before: int64) (t: Rl2Trial) =
    let rows = Collections.Generic.List<Metric>()
    let mutable step = before
    let mutable len = 0
    let mutable ep = 0
    for i in 0 .. t.Length - 1 do
        step <- step + 1L
        len <- len + 1
        if t.EpisodeEnds[i] then
            if ep < t.EpisodeReturns.Length then
                rows.Add(Metric(step, "episode_return", t.EpisodeReturns[ep], agent))
                rows.Add(Metric(step, "episode_length", float len, agent))
            ep <- ep + 1
            len <- 0
    rows.Add(Metric(step, "trial_return", Array.sum t.Rewards, agent))
    List.ofSeq rows

let private result (agent: Rl2Agent) (iterations: int64) (steps: int64) (checkpoints: int) =
    PopulationResult([||], agent.Updates, iterations, steps, [| steps |], 0, 0, checkpoints, [||])

let private describe (r: PopulationResult) =
    sprintf "%d iterations, %d env steps, %d PPO updates, %d checkpoints" r.Rounds r.GlobalStep r.ObjectiveVersion r.CheckpointsWritten

/// The env generators of a run, one after another (a checkpoint part: between trials every env sits at an episode
/// boundary, so its generator is all of its state).
let private envStates (envs: IEnv[]) =
    use ms = new MemoryStream()
    use w = new BinaryWriter(ms)
    for e in envs do StateIO.WriteUInt64s(w, (e :?> EnvBase).GetRngState())
    w.Flush()
    ms.ToArray()

let private restoreEnvStates (envs: IEnv[]) (bytes: byte[]) =
    use r = new BinaryReader(new MemoryStream(bytes))
    for e in envs do (e :?> EnvBase).SetRngState(StateIO.ReadUInt64s(r, "env generator"))

/// The padding of a policy meta-trained on `envs`: their largest observation and action sizes.
let private padding (envs: IEnv seq) =
    (envs |> Seq.map (fun e -> e.ObservationSize) |> Seq.max), (envs |> Seq.map (fun e -> e.ActionSize) |> Seq.max)

/// The padding of a policy meta-trained on the env ids `envs` (each made once, to read its sizes).
let paddingOf (envs: string list) =
    let made = envs |> List.map (fun id -> EnvRegistry.Make(id, 0))
    try padding made finally for e in made do e.Dispose()

/// Refuses to test a policy padded to (obsPad, actPad) on `env` when the env is larger; `what` names where the env
/// was given (a flag or a field) and `why` ends the message.
let checkFits (what: string) (env: string) (obsPad: int, actPad: int) (why: string) =
    use probe = EnvRegistry.Make(env, 0)
    if probe.ObservationSize > obsPad || probe.ActionSize > actPad then
        usageError "%s %s: %d observations and %d actions do not fit the rl2 policy's padding of %d and %d (%s)"
            what env probe.ObservationSize probe.ActionSize obsPad actPad why

/// Meta-trains an RL² policy on `job.Envs` for `job.Steps` env steps in all: trials of the envs drawn uniformly, a PPO
/// update per Rl2Settings.TrialsPerIteration trials, a checkpoint (policy, Adam state and generators, the envs'
/// generators) every `job.CheckpointEvery` env steps at an iteration's end and one at the end. From `job.Resume`'s
/// checkpoint it continues with the numbers of an uninterrupted run. Records its settings and padding as run.json's
/// `rl2`. The CLI's `meta-train --algo rl2` and an experiment's rl2 meta-train trial.
let trainInto (job: MetaLearnerRun.TrainJob) (onMetric: Action<Metric>) (progress: IProgress<int64>) (ct: Threading.CancellationToken) =
    let settings = Rl2Settings()
    let store = job.Store
    let envs = job.Envs |> List.mapi (makeEnv job.Seed) |> Array.ofList
    try
        let obsPad, actPad = padding envs
        let info = settingsJson settings
        info["obs_pad"] <- JsonValue.Create obsPad
        info["act_pad"] <- JsonValue.Create actPad
        job.SetInfo "rl2" info
        let mutable steps = 0L
        let mutable iterations = 0L
        let mutable index = 0
        let mutable written = 0
        let agent =
            match job.Resume.Index with
            | Some i ->
                let ckpt = store.Load i
                steps <- ckpt.Meta["env_step"].GetValue<int64>()
                iterations <- ckpt.Meta["iterations"].GetValue<int64>()
                index <- i + 1
                restoreEnvStates envs ckpt.Parts["envs"]
                Rl2Agent.Load(ckpt.Parts[part], settings)
            | None -> new Rl2Agent(settings, obsPad, actPad, Engine.agentSeed job.Seed 0)
        use _agent = agent
        let mutable lastCheckpoint = steps
        let checkpoint () =
            onMetric.Invoke(Metric(steps, Engine.CheckpointMarker, float index, 0))
            let meta = JsonObject()
            meta["env_step"] <- JsonValue.Create steps
            meta["iterations"] <- JsonValue.Create iterations
            store.Write(index, readOnlyDict [ part, agent.Save(); "envs", envStates envs ], meta) |> ignore
            store.Prune 3 |> ignore
            index <- index + 1
            written <- written + 1
            lastCheckpoint <- steps
        progress.Report steps
        while steps < job.Steps do
            let trials = Collections.Generic.List<Rl2Trial>()
            while trials.Count < settings.TrialsPerIteration && steps < job.Steps do
                // between trials: a stop loses at most one trial's work (the iteration resumes from its checkpoint)
                ct.ThrowIfCancellationRequested()
                let i = agent.Choose envs.Length
                let t = agent.RunTrial(envs[i], job.Steps - steps)
                for m in trialRows i steps t do onMetric.Invoke m
                steps <- steps + int64 t.Length
                trials.Add t
                progress.Report steps
            let struct (pl, vl, kl) = agent.Train(trials)
            iterations <- iterations + 1L
            for name, v in [ "policy_loss", pl; "value_loss", vl; "approx_kl", kl ] do onMetric.Invoke(Metric(steps, name, v, 0))
            if steps - lastCheckpoint >= job.CheckpointEvery && steps < job.Steps then checkpoint ()
        if lastCheckpoint <> steps || index = 0 then checkpoint ()
        result agent iterations steps written
    finally
        for e in envs do e.Dispose()

/// Meta-trains an RL² policy on `r.Envs` for `r.Steps` env steps in all (see trainInto), with a checkpoint every
/// `--checkpoint-every` env steps (default max(1000, steps / 5)); `--resume` continues from the newest checkpoint
/// that verifies, with the same numbers as an uninterrupted run.
let metaTrain (r: PopulationRun.MetaTrainRequest) (command: string) : int =
    MetaLearnerRun.metaTrainCommand "rl2" trainInto describe [] (fun cfg -> cfg.TimestepsTotal) r command

/// Loads the RL² policy of a meta-train run folder (its newest checkpoint that verifies, through MetaTestRun.loadFrom),
/// with what a meta-test records about it. Refuses a folder of another variant by name.
let loadPolicy (dir: string) : MetaTestRun.Loaded<byte[]> =
    match Results.readRunJson dir |> Option.bind (fun j -> Option.ofObj j["variant"]) with
    | Some v when v.GetValue<string>() <> "rl2" -> usageError "--objective '%s' holds a %s run, not an rl2 one (use --algo metagenrl)" dir (v.GetValue<string>())
    | _ -> ()
    MetaTestRun.loadFrom part "rl2 policy" id dir None

/// The padding a saved policy was built with.
let private policyPadding (bytes: byte[]) =
    use policy = Rl2Agent.Load(bytes, Rl2Settings())
    policy.ObsPad, policy.ActPad

/// Runs the frozen policy `bytes` on `env` for `steps` env steps per seed (trials of its episodes per trial, the
/// hidden state reset between trials; no gradient step); seed k's rows carry agent = k.
let private runFrozen (bytes: byte[]) (env: string) (seeds: int list) (steps: int64) (onMetric: Action<Metric>)
                      (progress: IProgress<int64>) (ct: Threading.CancellationToken) =
    let settings = Rl2Settings()
    let mutable total = 0L
    let mutable trials = 0L
    for k, seed in List.indexed seeds do
        use agent = Rl2Agent.Load(bytes, settings)
        agent.Reseed(Engine.agentSeed seed 0)
        use env = makeEnv seed 0 env
        let mutable ran = 0L
        while ran < steps do
            ct.ThrowIfCancellationRequested()
            let t = agent.RunTrial(env, steps - ran)
            for m in trialRows k ran t do onMetric.Invoke m
            ran <- ran + int64 t.Length
            trials <- trials + 1L
            progress.Report(total + ran)
        total <- total + ran
    PopulationResult([||], 0L, trials, steps, Array.create seeds.Length steps, 0, 0, 0, [||])

/// Meta-tests the RL² policy of the meta-train run `job.Source` (its newest checkpoint that verifies) on `job.Env`
/// for `job.Steps` env steps with seed `job.Seed`, as `meta-test --algo rl2 --seed` does; records what it loaded as
/// run.json's `objective`. An experiment's rl2 meta-test trial.
let testInto (job: MetaLearnerRun.TestJob) (onMetric: Action<Metric>) (progress: IProgress<int64>) (ct: Threading.CancellationToken) =
    let policy = loadPolicy job.Source
    checkFits "--env" job.Env (policyPadding policy.Value) "it was meta-trained on smaller envs"
    job.SetInfo "objective" (policy.ToJson())
    for line in policy.Describe() do if line.StartsWith "skipping" then job.Note line
    runFrozen policy.Value job.Env [ job.Seed ] job.Steps onMetric progress ct

/// Runs the frozen RL² policy of `r.Objective` on `r.Env` for `r.Steps` env steps per seed (trials of its episodes
/// per trial, the hidden state reset between trials); no gradient step.
let metaTest (r: MetaTestRun.MetaTestRequest) (command: string) : int =
    validateEnv "--env" r.Env
    validateRun r.Steps r.LossLogEvery r.Device
    validateSeeds r.Seeds
    if r.Checkpoint.IsSome then usageError "--checkpoint: an rl2 meta-test loads the newest checkpoint that verifies"
    let policy = loadPolicy r.Objective
    let bytes = policy.Value
    let out = r.Out |> Option.defaultWith (fun () -> Path.Combine("results", r.Experiment, sprintf "rl2-%s-s%s" r.Env (String.Join(",", r.Seeds))))
    let cfg = MetaLearnerRun.config [ r.Env ] r.Steps None []
    let key seed : Results.RunKey =
        { RunId = Results.newRunId (sprintf "meta-test-rl2-%s" r.Env) seed; Experiment = r.Experiment; Variant = "rl2"
          Phase = "meta-test"; Env = r.Env; Seed = seed }
    checkFits "--env" r.Env (policyPadding bytes) "it was meta-trained on smaller envs"
    let writers, locks = seedWriters out r.Seeds r.Force key (cfg.ToJson()) command
    use _locks = locks
    for w in writers do w.SetInfo("objective", policy.ToJson())
    executeRuns writers (sprintf "rl2 meta-test %s seed %s" r.Env (String.Join(",", r.Seeds))) (r.Steps * int64 r.Seeds.Length)
        (fun onMetric _ progress ct -> runFrozen bytes r.Env r.Seeds r.Steps onMetric progress ct)
        (fun res -> sprintf "%d trials, %d env steps per seed, no gradient steps" res.Rounds res.GlobalStep)
