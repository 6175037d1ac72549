/// `./metagenrl meta-test`: fresh agents trained on any env with a frozen objective from a meta-train run folder,
/// one run per seed, all seeds computed as one batched group on the engine.
module MetaGenRL.Pipeline.MetaTestRun

open System
open System.IO
open System.Text.Json.Nodes
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

/// What a meta-test loads from a meta-train run folder (α, an EPG loss, an RL² policy), with what it records about
/// where it came from.
type Loaded<'T> =
    { /// What the checkpoint part holds: α, an EPG loss, an RL² policy's bytes.
      Value: 'T
      /// The meta-train run's config.
      Config: RunConfig
      Variant: string
      Dir: string
      Checkpoint: int
      /// SHA-256 of the checkpoint's manifest (which lists every part's hash).
      Hash: string
      /// Newer checkpoints passed over, with why (damaged ones).
      Skipped: (int * string) list
      /// The meta-train run's status: complete, or interrupted/failed/running (an objective from a run that did not
      /// finish).
      MetaTrainStatus: string
      MetaTrainRunId: string }

    /// The lines a meta-test prints about the objective it loads.
    member o.Describe() =
        let loaded =
            sprintf "objective: %s, checkpoint %d (sha256 %s…)%s" o.Dir o.Checkpoint (o.Hash.Substring(0, 12))
                (if o.MetaTrainStatus = "complete" then "" else sprintf "; its meta-train run is %s, not complete" o.MetaTrainStatus)
        (o.Skipped |> List.map (fun (i, why) -> sprintf "skipping checkpoint %d of %s: %s" i o.Dir why)) @ [ loaded ]

    /// run.json's `objective` field.
    member o.ToJson() =
        let x = JsonObject()
        x["dir"] <- JsonValue.Create(Path.GetFullPath o.Dir)
        x["checkpoint"] <- JsonValue.Create o.Checkpoint
        x["sha256"] <- JsonValue.Create o.Hash
        x["meta_train_run_id"] <- JsonValue.Create o.MetaTrainRunId
        x["meta_train_status"] <- JsonValue.Create o.MetaTrainStatus
        x["meta_train_complete"] <- JsonValue.Create(o.MetaTrainStatus = "complete")
        x["skipped"] <- Engine.skippedJson o.Skipped
        x

/// A MetaGenRL objective α as loaded for a meta-test.
type LoadedObjective = Loaded<float32[]>

/// The learned parameters of a meta-train run folder, read by `read` from checkpoint part `part` (`what` names them in
/// messages): checkpoint `index`, or the newest one that verifies (damaged newer ones are skipped, with their
/// reasons). A named checkpoint that is missing or damaged is a UsageError naming it.
let loadFrom (part: string) (what: string) (read: byte[] -> 'T) (dir: string) (index: int option) : Loaded<'T> =
    if not (Directory.Exists dir) then usageError "--objective '%s': no such folder" dir
    let runJson = Results.readRunJson dir |> Option.defaultWith (fun () -> usageError "--objective '%s': no run.json (not a meta-train run folder)" dir)
    let cfg =
        try RunConfig.FromJson(runJson["config"].ToJsonString())
        with e -> usageError "--objective '%s': run.json has no readable config (%s)" dir e.Message
    let store = CheckpointStore dir
    let available = store.List()
    let k, skipped =
        match index with
        | Some k when Seq.contains k available ->
            match store.Validate k with
            | null -> k, []
            | why -> usageError "--checkpoint %d: damaged (%s); the newest intact one is %s" k why
                        (match store.Latest() |> Option.ofNullable with Some i -> string i | None -> "none")
        | Some k -> usageError "--checkpoint %d: not in %s (available: %s)" k store.Root (String.Join(", ", available))
        | None ->
            let struct (newest, passed) = store.NewestValid()
            let passed = passed |> Seq.map (fun struct (i, why) -> i, why) |> List.ofSeq
            match Option.ofNullable newest with
            | Some k -> k, passed
            | None when passed.IsEmpty -> usageError "--objective '%s': no checkpoint under %s" dir store.Root
            | None -> usageError "--objective '%s': no intact checkpoint under %s (%s)" dir store.Root (snd passed.Head)
    let parts =
        try (store.Load k).Parts
        with :? InvalidDataException as e -> usageError "--objective '%s': checkpoint %d is damaged (%s)" dir k e.Message
    let value =
        match parts.TryGetValue part with
        | true, bytes -> read bytes
        | _ -> usageError "--objective '%s': checkpoint %d holds no %s (part '%s')" dir k what part
    let text (key: string) fallback = match runJson[key] with null -> fallback | v -> v.GetValue<string>()
    { Value = value; Config = cfg; Variant = text "variant" "full"; Dir = dir; Checkpoint = k; Hash = store.ManifestHash k
      Skipped = skipped; MetaTrainStatus = text "status" "unknown"; MetaTrainRunId = text "run_id" "" }

/// The checkpoint part of a MetaGenRL meta-train that holds α and its Adam state (the objective server's).
let objectivePart = "server"

/// The objective α of a MetaGenRL meta-train run folder (see loadFrom).
let loadObjective (dir: string) (index: int option) : LoadedObjective =
    match Results.readRunJson dir with
    | Some j ->
        for learner in [ "rl2"; "epg" ] do
            if j.ContainsKey learner then usageError "--objective '%s' holds an %s meta-train run; meta-test it with --algo %s" dir learner learner
    | None -> ()
    loadFrom objectivePart "objective" (fun bytes -> ObjectiveAdam.Import(bytes).Alpha) dir index

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
    let objective = loadObjective r.Objective r.Checkpoint
    let variant = objective.Variant
    let cfg = resolveConfig (r.Preset @ (objectiveKeys objective.Config |> List.map (fun (k, v) -> k + "=" + v)) @ r.Overrides)
    let run = { engineRun cfg objective.Value r.Env r.Seeds r.Steps with Device = r.Device; LossLogEvery = r.LossLogEvery }
    let out = r.Out |> Option.defaultWith (fun () -> Path.Combine("results", r.Experiment, sprintf "%s-%s-s%s" variant r.Env (String.Join(",", r.Seeds))))
    let key seed : Results.RunKey =
        { RunId = Results.newRunId (sprintf "meta-test-%s-%s" variant r.Env) seed; Experiment = r.Experiment
          Variant = variant; Phase = "meta-test"; Env = r.Env; Seed = seed }
    let writers, locks = seedWriters out r.Seeds r.Force key (run.Config.ToJson()) command
    use _locks = locks
    for line in objective.Describe() do printfn "%s" line
    for w in writers do w.SetInfo("objective", objective.ToJson())
    executeRuns writers (sprintf "meta-test %s seed %s" r.Env (String.Join(",", r.Seeds))) r.Steps
        (fun onMetric onFailure progress ct -> Engine.run None run (Engine.populationOptions run (CheckpointStore out) None false onFailure) onMetric progress ct)
        Engine.describe
