/// `./metagenrl meta-test`: fresh agents trained on any env with a frozen objective from a meta-train run folder,
/// one run per seed, all seeds computed as one batched group on the engine.
module MetaGenRL.Pipeline.MetaTestRun

open System
open System.IO
open MetaGenRL.Actors
open MetaGenRL.Core.Checkpoints
open MetaGenRL.Core.Config
open MetaGenRL.Core.Objective
open MetaGenRL.Core.Engine
open MetaGenRL.Pipeline.Errors
open MetaGenRL.Pipeline.Settings
open MetaGenRL.Pipeline.RunCommand

/// Everything `./metagenrl meta-test` needs.
type MetaTestRequest =
    { Objective: string
      Checkpoint: int option
      Env: string
      Steps: int64
      /// One run per seed; several seeds run as one group.
      Seeds: int list
      Out: string option
      /// The scale preset's meta-test settings (key=value), applied first; then the objective's own keys from its
      /// meta-train run, then Overrides.
      Preset: string list
      Overrides: string list
      Device: string
      LossLogEvery: int
      Experiment: string
      Force: bool }

/// α and the meta-train config of an objective run folder's checkpoint (latest when `index` is None).
let loadObjective (dir: string) (index: int option) : float32[] * RunConfig * string =
    if not (Directory.Exists dir) then usageError "--objective '%s': no such folder" dir
    let runJson = Results.readRunJson dir |> Option.defaultWith (fun () -> usageError "--objective '%s': no run.json (not a meta-train run folder)" dir)
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

/// The engine run of a meta-test: `cfg` (the test preset, the objective's own keys, the user's overrides), one fresh
/// agent per seed (seeded as that seed's agent 0) on `env` with the frozen α.
let engineRun (cfg: RunConfig) (alpha: float32[]) (env: string) (seeds: int list) (steps: int64) =
    let agentSeeds = seeds |> List.map (fun s -> Engine.agentSeed s 0) |> Array.ofList
    { Engine.create cfg Algorithm.MetaTest [ env ] agentSeeds steps ScheduleMode.Independent with
        Objective = Some alpha }

/// Trains fresh agents on any env with a frozen objective from a meta-train run (no objective updates).
let metaTest (r: MetaTestRequest) (command: string) : int =
    validateEnv "--env" r.Env
    validateRun r.Steps r.LossLogEvery r.Device
    validateSeeds r.Seeds
    let alpha, trainedCfg, variant = loadObjective r.Objective r.Checkpoint
    let cfg = resolveConfig (r.Preset @ (objectiveKeys trainedCfg |> List.map (fun (k, v) -> k + "=" + v)) @ r.Overrides)
    let run = { engineRun cfg alpha r.Env r.Seeds r.Steps with Device = r.Device; LossLogEvery = r.LossLogEvery }
    let out = r.Out |> Option.defaultWith (fun () -> Path.Combine("results", r.Experiment, sprintf "%s-%s-s%s" variant r.Env (String.Join(",", r.Seeds))))
    let key seed : Results.RunKey =
        { RunId = Results.newRunId (sprintf "meta-test-%s-%s" variant r.Env) seed; Experiment = r.Experiment
          Variant = variant; Phase = "meta-test"; Env = r.Env; Seed = seed }
    let writers, locks = seedWriters out r.Seeds r.Force key (run.Config.ToJson()) command
    use _locks = locks
    executeRuns writers (sprintf "meta-test %s seed %s" r.Env (String.Join(",", r.Seeds))) r.Steps
        (fun onMetric progress ct -> Engine.run None run (Engine.populationOptions run (CheckpointStore out) None false) onMetric progress ct)
        Engine.describe
