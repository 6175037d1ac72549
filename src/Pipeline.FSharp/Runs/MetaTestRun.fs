/// `./metagenrl meta-test`: a fresh agent trained on any env with a frozen objective from a meta-train run folder.
module MetaGenRL.Pipeline.MetaTestRun

open System
open System.IO
open MetaGenRL.Actors
open MetaGenRL.Core.Checkpoints
open MetaGenRL.Core.Config
open MetaGenRL.Core.Training
open MetaGenRL.Pipeline.Errors
open MetaGenRL.Pipeline.Settings
open MetaGenRL.Pipeline.RunCommand

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

/// Trains a fresh agent on any env with a frozen objective from a meta-train run (no objective updates).
let metaTest (r: MetaTestRequest) (command: string) : int =
    validateEnv "--env" r.Env
    validateRun r.Steps r.LossLogEvery r.Device
    let alpha, trainedCfg, variant = loadObjective r.Objective r.Checkpoint
    let cfg = resolveConfigFrom trainedCfg r.Overrides
    let out = r.Out |> Option.defaultWith (fun () -> Path.Combine("results", r.Experiment, sprintf "%s-%s-s%d" variant r.Env r.Seed))
    prepareOut out r.Force
    let key : Results.RunKey =
        { RunId = Results.newRunId (sprintf "meta-test-%s-%s" variant r.Env) r.Seed; Experiment = r.Experiment; Variant = variant
          Phase = "meta-test"; Env = r.Env; Seed = r.Seed }
    let writer = Results.RunWriter(out, key, cfg.ToJson(), command)
    writer.Flush "running"
    let opts = TrainOptions(r.Env, r.Steps, r.Seed, r.Device, r.LossLogEvery)
    execute writer (sprintf "meta-test %s seed %d" r.Env r.Seed) r.Steps
        (fun onMetric progress ct -> ObjectiveTrainer.Train(cfg, "meta-test", alpha, opts, onMetric, progress, ct))
        describeTrain
