/// The experiment DSL: an experiment is a value built from `Experiment.create`, validated once (every message
/// names the field), and expanded into trials: meta-train runs of each variant's meta-learner (MetaGenRL's
/// populations, RL²), meta-test runs of what they learned, and baselines, over variants × sweep points × seeds × envs.
/// A dry run prints the grid and writes nothing.
module MetaGenRL.Pipeline.Experiment

open System
open System.Globalization
open System.Security.Cryptography
open System.Text
open System.Text.Json.Nodes
open MetaGenRL.Actors
open MetaGenRL.Core.Config
open MetaGenRL.Core.Envs
open MetaGenRL.Pipeline.Errors
open MetaGenRL.Pipeline.Settings

/// How big the networks, batches, populations and step budgets are.
type Scale =
    /// Pipeline check in seconds (tests): nothing learns.
    | Micro
    /// Minutes on a 2-core laptop: hidden 32, batch 16 windows, 2 agents.
    | Tiny
    /// Hours on a workstation: hidden 64, batch 32, 4 agents, 50k steps (200k agent-steps at ≈ 40 ms each: about 2 h).
    | Small
    /// The paper's settings: hidden 350, batch 100, 20 agents, 700k steps (GPUs or a cluster).
    | Paper

module Scale =
    let all = [ Micro; Tiny; Small; Paper ]
    let name = function Micro -> "micro" | Tiny -> "tiny" | Small -> "small" | Paper -> "paper"
    let parse (s: string) =
        match all |> List.tryFind (fun x -> name x = s.Trim().ToLowerInvariant()) with
        | Some x -> x
        | None -> usageError "--scale '%s': unknown scale; valid: %s" s (String.Join(", ", all |> List.map name))

/// What a scale sets before the experiment's own overrides.
type Preset =
    { /// Every trial's settings (networks, batch, exploration, anneal).
      Set: (string * string) list
      /// What meta-tests and baselines change on top of Set: the test protocol, not the meta-train run's settings
      /// (the official test config explores at random for its first 10k steps at paper scale).
      TestSet: (string * string) list
      /// What the meta-learners other than MetaGenRL take at this scale (EPG's inner-loop size), before Set.
      LearnerSet: (string * string) list
      Agents: int
      MetaTrainSteps: int64
      MetaTestSteps: int64 }

let preset =
    function
    | Micro ->
        { Set = [ "policy_units", "16"; "critic_units", "16"; "buffer_sample_size", "4"; "recurrent_time_steps", "10"
                  "steps", "2"; "policy_random_exploration_steps", "100"; "obj_func_anneal_steps", "100" ]
          TestSet = []
          LearnerSet = [ "epg_inner_steps", "100"; "epg_pairs", "2" ]
          Agents = 2; MetaTrainSteps = 400L; MetaTestSteps = 400L }
    | Tiny ->
        { Set = [ "policy_units", "32"; "critic_units", "32"; "buffer_sample_size", "16"
                  "policy_random_exploration_steps", "1000"; "obj_func_anneal_steps", "2000" ]
          TestSet = []
          LearnerSet = [ "epg_inner_steps", "1000"; "epg_pairs", "2" ]
          Agents = 2; MetaTrainSteps = 5_000L; MetaTestSteps = 6_000L }
    | Small ->
        { Set = [ "policy_units", "64"; "critic_units", "64"; "buffer_sample_size", "32"
                  "policy_random_exploration_steps", "2000"; "obj_func_anneal_steps", "10000" ]
          TestSet = [ "policy_random_exploration_steps", "5000" ]
          LearnerSet = []
          Agents = 4; MetaTrainSteps = 50_000L; MetaTestSteps = 50_000L }
    | Paper -> { Set = []; TestSet = [ "policy_random_exploration_steps", "10000" ]; LearnerSet = []; Agents = 20; MetaTrainSteps = 700_000L; MetaTestSteps = 700_000L }

// ── META-LEARNERS ──

/// The meta-learner a variant runs. Adding one (e.g. EPG): a case here, its name and cost in the functions that match
/// on it (the compiler lists them), a DSL value (`let epg = learner Epg`), and its meta-train and meta-test
/// (MetaLearnerRun.Train and Test) in ExperimentRunner.learnerRuns.
type MetaLearner =
    /// The paper's method: an objective L_α meta-trained by a population of TD3 agents; a meta-test trains a fresh
    /// agent with it frozen. Its variants are objective variants (`objective "full"`, `variant name set`).
    | MetaGenRL
    /// RL² (Rl2Run): a GRU policy meta-trained with PPO on trials of the env set, one learner (Rl2Settings); a
    /// meta-test runs it frozen, so only on envs no larger than the set's largest (its input padding).
    | Rl2
    /// EPG (EpgRun): a loss network evolved by ES over inner loops that train fresh agents on the set's envs
    /// (EpgSettings, sized by the epg_* keys); a meta-test trains a fresh agent on any env with the frozen loss.
    | Epg

module MetaLearner =
    /// Every case, read from the type, so a new one needs no entry here.
    let all =
        Reflection.FSharpType.GetUnionCases typeof<MetaLearner>
        |> Array.map (fun c -> Reflection.FSharpValue.MakeUnion(c, [||]) :?> MetaLearner) |> List.ofArray

    /// The name its results carry (run.json's and the rows' variant) and its variant's name; MetaGenRL's runs carry
    /// their objective variant's name instead.
    let name = function MetaGenRL -> "metagenrl" | Rl2 -> "rl2" | Epg -> "epg"

    /// The meta-learner other than MetaGenRL whose runs carry `variant`.
    let ofVariant (variant: string) = all |> List.tryFind (fun l -> l <> MetaGenRL && name l = variant)

/// The config keys a meta-learner other than MetaGenRL takes from the declaration (the scale's LearnerSet, Set, its
/// variant's Set): checkpoint_every and its own sizes (EPG's epg_*); its resolved settings are recorded in run.json.
/// Every other key tunes MetaGenRL's agents, objective or population.
let learnerKeys = function Epg -> "checkpoint_every" :: EpgRun.keys | _ -> [ "checkpoint_every" ]

/// A variant: the meta-learner it runs, a name, and for MetaGenRL the config keys it changes (a small diff from the
/// defaults).
type Variant = { Name: string; Set: (string * string) list; Learner: MetaLearner }

/// One axis of a sweep grid: a config key and its values. The grid is the product of all axes.
type Axis = { Key: string; Values: string list }

/// A whole experiment. Build it with `Experiment.create name` and `{ e with … }`; `validate` checks it once.
[<NoEquality; NoComparison>]
type Experiment =
    { /// Names the results folder: results/<Name>/<id>.
      Name: string
      /// The meta-training env sets; each (variant × sweep point × seed) meta-trains one population per set.
      MetaTrain: string list list
      /// The meta-test envs; each is seen or unseen relative to each meta-train set.
      MetaTest: string list
      /// Population size; None: the scale's (or AgentsPerEnv).
      Agents: int option
      /// Agents per env of a meta-train set, so larger sets get larger populations (the paper: 10, i.e. 20 agents
      /// for a pair and 40 for four envs); used when Agents is None.
      AgentsPerEnv: int option
      MetaTrainSeeds: int list
      /// Seeds of the fresh agents that each meta-trained objective trains on each meta-test env.
      MetaTestSeeds: int list
      /// Seeds of each baseline on each meta-test env.
      BaselineSeeds: int list
      /// The variants, each meta-trained on every MetaTrain set and seed and meta-tested on every MetaTest env and
      /// seed: MetaGenRL's objective variants (`objective`, `variant`) and other meta-learners (`rl2`).
      Variants: Variant list
      /// Objectives meta-trained elsewhere: meta-train run or trial folders, or folders to search for complete
      /// meta-train trials (e.g. results/meta_train). Each one's latest checkpoint is meta-tested on MetaTest.
      Objectives: string list
      /// Grid axes (config keys); baselines follow the axes that are not objective or population keys.
      Sweep: Axis list
      /// Fixed algorithms on the meta-test envs, from `Settings.algorithms` (e.g. td3, random-objective).
      Baselines: string list
      Scale: Scale
      /// Per-agent env steps of meta-training; None: the scale's.
      MetaTrainSteps: int64 option
      /// Env steps of each meta-test and baseline run; None: the scale's.
      MetaTestSteps: int64 option
      /// Config overrides for every trial, applied after the scale's.
      Set: (string * string) list
      /// Config overrides for the meta-test and baseline trials only, applied after Set (e.g. env_params=held-out
      /// when the meta-train env families draw from their training ranges).
      TestSet: (string * string) list
      /// Changes made when running at a scale (e.g. cheaper envs or fewer seeds at tiny scale).
      AtScale: (Scale * (Experiment -> Experiment)) list
      Mode: ScheduleMode
      Device: string }

/// An objective variant selected by `obj_func_variant` (one of `Settings.variantNames`).
let objective (name: string) = { Name = name; Set = [ "obj_func_variant", name ]; Learner = MetaGenRL }

/// A MetaGenRL variant that changes any keys.
let variant (name: string) (set: (string * string) list) = { Name = name; Set = set; Learner = MetaGenRL }

/// A meta-learner other than MetaGenRL as a variant, under its own name.
let learner (l: MetaLearner) = { Name = MetaLearner.name l; Set = []; Learner = l }

/// RL² as a variant (`Variants = [ objective "full"; rl2 ]`): per MetaTrain set and MetaTrainSeed, one RL²
/// meta-train of as many env steps in all as the MetaGenRL population of that set would take (its agents ×
/// MetaTrainSteps; one learner, so Mode does not apply), and its
/// meta-tests on every MetaTest env (seen or unseen) and MetaTestSeed, MetaTestSteps each, beside MetaGenRL's.
/// Its settings are Rl2Settings' (run.json records them under `rl2`). Of the config it takes only checkpoint_every
/// (see learnerKeys); the other keys of the scale preset, Set, TestSet and the sweep axes tune MetaGenRL and are
/// ignored by its trials, which run once per set and seed at no sweep point. A key other than checkpoint_every in its
/// own Set is refused, and so is a MetaTest env larger than a MetaTrain set's largest, or a Device other than cpu.
let rl2 = learner Rl2

/// EPG as a variant (`Variants = [ objective "full"; epg ]`): per MetaTrain set and MetaTrainSeed, one EPG meta-train
/// (whole ES epochs) and its meta-tests, each training a fresh agent with the frozen loss on a MetaTest env (seen or
/// unseen) and MetaTestSeed for MetaTestSteps. It takes checkpoint_every and the epg_* keys (the scale's LearnerSet,
/// Set, its own Set; see learnerKeys); like `rl2` it runs once per set and seed at no sweep point, on the CPU, with
/// the env steps of the population beside it. Its meta-train must hold at least one ES epoch.
let epg = learner Epg

/// A sweep axis over a config key.
let axis (key: string) (values: 'a list) = { Key = key; Values = values |> List.map (fun v -> Convert.ToString(v, CultureInfo.InvariantCulture)) }

/// The defaults: the full objective, meta-trained on Lunar & Cheetah and tested on Cheetah and Hopper, one seed.
let create (name: string) =
    { Name = name
      MetaTrain = [ [ "LunarLanderContinuous-v2"; "HalfCheetah-v2" ] ]
      MetaTest = [ "HalfCheetah-v2"; "Hopper-v2" ]
      Agents = None
      AgentsPerEnv = None
      MetaTrainSeeds = [ 0 ]
      MetaTestSeeds = [ 0 ]
      BaselineSeeds = [ 0 ]
      Variants = [ objective "full" ]
      Objectives = []
      Sweep = []
      Baselines = [ "td3" ]
      Scale = Tiny
      MetaTrainSteps = None
      MetaTestSteps = None
      Set = []
      TestSet = []
      AtScale = []
      Mode = ScheduleMode.Sync
      Device = "cpu" }

/// The complete meta-train trial folders under `root` (e.g. results/meta_train), newest experiment first: the
/// default objectives of a meta-test script.
let findObjectives (root: string) =
    if not (IO.Directory.Exists root) then []
    else
        IO.Directory.GetDirectories(root, "mt_*", IO.SearchOption.AllDirectories)
        |> Array.filter (fun d -> Results.isComplete d && IO.Directory.Exists(IO.Path.Combine(d, "checkpoints")))
        |> Array.sortByDescending (fun d -> IO.File.GetLastWriteTimeUtc(IO.Path.Combine(d, "run.json")))
        |> List.ofArray

/// The experiment as run at its scale: the scale's adjustments applied.
let atScale (e: Experiment) =
    e.AtScale |> List.filter (fun (s, _) -> s = e.Scale) |> List.fold (fun acc (_, f) -> f acc) e

/// Keys that change only the objective or the population; baselines do not vary along them.
let isMetaKey (key: string) = key.StartsWith "obj_func_" || key = "agent_count"

/// Config keys the DSL owns through its own fields.
let private reservedKeys = [ "env_name", "MetaTrain/MetaTest"; "timesteps_total", "MetaTrainSteps/MetaTestSteps" ]

// ── TRIALS ──

type Phase =
    | MetaTrainPhase
    | MetaTestPhase
    | BaselinePhase

    member p.Name = match p with MetaTrainPhase -> "meta-train" | MetaTestPhase -> "meta-test" | BaselinePhase -> "train"

/// One unit of work with its own folder, Parquet file and checkpoints.
type Trial =
    { Id: string
      Phase: Phase
      /// The meta-learner of a meta-train or meta-test trial; None for a baseline.
      Learner: MetaLearner option
      /// The variant's name (MetaGenRL's objective variant, or the meta-learner's name), or the baseline's algorithm.
      Variant: string
      /// Meta-train: the env set; otherwise the one env.
      Envs: string list
      TrainEnvs: string list option
      Seed: int
      /// The meta-train seed of the objective a meta-test trial uses.
      MetaSeed: int option
      Seen: bool option
      /// The sweep point: (key, value) per axis.
      Swept: (string * string) list
      /// Every config override from the defaults, in order: scale, experiment, variant, sweep point (another
      /// meta-learner's trials: only the keys it uses, see learnerKeys).
      Overrides: (string * string) list
      Agents: int
      Steps: int64
      /// The meta-train trial whose objective this trial tests.
      DependsOn: string option
      /// A meta-train folder outside the experiment whose objective this trial tests.
      ObjectiveDir: string option }

    member t.AgentSteps = int64 t.Agents * t.Steps

let private envList (envs: string list) = String.Join("+", envs)

/// A trial id: readable and safe as a folder name (characters outside letters, digits and -._=,+ become '-').
let private trialId (parts: string list) (swept: (string * string) list) =
    let sweep = if swept.IsEmpty then "" else "_" + String.Join(",", swept |> List.map (fun (k, v) -> k + "=" + v))
    let safe (c: char) = if Char.IsLetterOrDigit c || "-._=,+".Contains c then c else '-'
    String(String.Join("_", parts) + sweep |> Seq.map safe |> Array.ofSeq)

/// All points of the grid; one empty point when there are no axes.
let rec private grid (axes: Axis list) : (string * string) list list =
    match axes with
    | [] -> [ [] ]
    | a :: rest -> [ for v in a.Values do for tail in grid rest -> (a.Key, v) :: tail ]

/// What an external objective folder says about itself (its run.json).
type private External = { Variant: string; Learner: MetaLearner; Envs: string list; Seed: int; ObjectiveKeys: (string * string) list }

/// Reads an objective folder's run.json; the objective's own keys (obj_func_*, paper_quirks, normalize_actions) carry
/// over to its tests. A run of another meta-learner (its variant is the learner's name and run.json holds its
/// settings under that name, e.g. `rl2`) is tested as that learner.
let private readExternal (dir: string) : External =
    let fail why = usageError "Objectives: '%s' %s" dir why
    if not (IO.Directory.Exists dir) then fail "is not a folder (meta-train first, e.g. with experiments/meta_train.fsx, or pass --objective DIR)"
    let j = Results.readRunJson dir |> Option.defaultWith (fun () -> fail "has no run.json (not a meta-train run folder)")
    let str (k: string) = match j[k] with null -> fail (sprintf "has no '%s' in run.json" k) | v -> v.GetValue<string>()
    if str "phase" <> "meta-train" then fail (sprintf "holds a %s run, not a meta-train run" (str "phase"))
    let cfg =
        try RunConfig.FromJson(j["config"].ToJsonString())
        with ex -> fail (sprintf "has no readable config in run.json (%s)" ex.Message)
    let learner = MetaLearner.ofVariant (str "variant") |> Option.defaultValue MetaGenRL
    if learner <> MetaGenRL && isNull j[MetaLearner.name learner] then
        fail (sprintf "names variant %s but its run.json has no '%s' settings (not a %s meta-train run)" (str "variant") (MetaLearner.name learner) (MetaLearner.name learner))
    let keys = if learner = MetaGenRL then objectiveKeys cfg else []
    { Variant = str "variant"; Learner = learner; Envs = (str "env").Split(',') |> List.ofArray; Seed = j["seed"].GetValue<int>()
      ObjectiveKeys = keys }

/// The objective folders of `Objectives`: run folders as given, other folders searched for complete meta-train trials.
let objectiveDirs (e: Experiment) =
    e.Objectives
    |> List.collect (fun d ->
        if IO.File.Exists(IO.Path.Combine(d, "run.json")) || not (IO.Directory.Exists d) then [ d ]
        else
            match findObjectives d with
            | [] -> usageError "Objectives: no complete meta-train run under '%s'; run experiments/meta_train.fsx first or pass --objective DIR" d
            | found -> found)

/// Expands a (scale-adjusted) experiment into its trials: meta-train first, then meta-test, then baselines.
let expand (e: Experiment) : Trial list =
    let p = preset e.Scale
    let agentsOf (swept: (string * string) list) (set: string list) =
        match swept |> List.tryFind (fun (k, _) -> k = "agent_count"), e.Agents, e.AgentsPerEnv with
        | Some (_, v), _, _ -> int v
        | None, Some n, _ -> n
        | None, None, Some k -> k * set.Length
        | None, None, None -> p.Agents
    let mtSteps = defaultArg e.MetaTrainSteps p.MetaTrainSteps
    let testSteps = defaultArg e.MetaTestSteps p.MetaTestSteps
    let points = grid e.Sweep
    // meta-test and baseline trials: the scale's test protocol, then the experiment's keys and its test-only keys
    let testSet = p.Set @ p.TestSet @ e.Set @ e.TestSet
    let metaTrials =
        [ for point in points do
            for v in e.Variants do
                // Another meta-learner runs once per set and seed, at no sweep point, with only its keys (see `rl2`).
                let population = v.Learner = MetaGenRL
                if population || point = points.Head then
                    let point = if population then point else []
                    for set in e.MetaTrain do
                        for m in e.MetaTrainSeeds do
                            let overrides =
                                if population then p.Set @ e.Set @ v.Set @ point
                                else p.LearnerSet @ e.Set @ v.Set |> List.filter (fun (k, _) -> List.contains k (learnerKeys v.Learner))
                            let mt =
                                { Id = trialId [ "mt"; v.Name; envList set; sprintf "s%d" m ] point
                                  Phase = MetaTrainPhase; Learner = Some v.Learner; Variant = v.Name; Envs = set
                                  TrainEnvs = Some set; Seed = m; MetaSeed = Some m; Seen = None; Swept = point
                                  Overrides = overrides; Agents = (if population then agentsOf point set else 1)
                                  // another meta-learner gets the env steps of the population it stands beside
                                  Steps = (if population then mtSteps else mtSteps * int64 (agentsOf point set))
                                  DependsOn = None; ObjectiveDir = None }
                            yield mt
                            for env in e.MetaTest do
                                for t in e.MetaTestSeeds do
                                    yield { mt with
                                              Id = trialId [ "test"; v.Name; envList set; sprintf "s%d" m; env; sprintf "t%d" t ] point
                                              Phase = MetaTestPhase; Envs = [ env ]; Seed = t; Seen = Some(List.contains env set)
                                              Overrides = (if population then testSet @ v.Set @ point else [])
                                              Agents = 1; Steps = testSteps; DependsOn = Some mt.Id } ]
    let baselinePoints =
        grid (e.Sweep |> List.filter (fun a -> not (isMetaKey a.Key)))
    let baselines =
        [ for point in baselinePoints do
            for algo in e.Baselines do
                for env in e.MetaTest do
                    for s in e.BaselineSeeds do
                        { Id = trialId [ algo; env; sprintf "s%d" s ] point
                          Phase = BaselinePhase; Learner = None; Variant = algo; Envs = [ env ]; TrainEnvs = None; Seed = s; MetaSeed = None
                          Seen = None; Swept = point; Overrides = testSet @ point; Agents = 1; Steps = testSteps
                          DependsOn = None; ObjectiveDir = None } ]
    let external =
        [ for dir in objectiveDirs e do
            let o = readExternal dir
            for env in e.MetaTest do
                for t in e.MetaTestSeeds do
                    { Id = trialId [ "test"; o.Variant; envList o.Envs; sprintf "s%d" o.Seed; env; sprintf "t%d" t ] []
                      Phase = MetaTestPhase; Learner = Some o.Learner; Variant = o.Variant; Envs = [ env ]
                      TrainEnvs = Some o.Envs; Seed = t; MetaSeed = Some o.Seed; Seen = Some(List.contains env o.Envs); Swept = []
                      Overrides = (if o.Learner = MetaGenRL then testSet @ o.ObjectiveKeys else [])
                      Agents = 1; Steps = testSteps; DependsOn = None
                      ObjectiveDir = Some dir } ]
    // Meta-train trials first so their objectives are ready early; each meta-test follows its objective.
    (metaTrials |> List.filter (fun t -> t.Phase = MetaTrainPhase))
    @ (metaTrials |> List.filter (fun t -> t.Phase = MetaTestPhase))
    @ external
    @ baselines

/// The resolved config of a trial: the paper's defaults, then the trial's overrides, then its budget and envs. A
/// trial of another meta-learner records only what it uses (MetaLearnerRun.config): its envs, budget, one agent and,
/// for a meta-train, its checkpoint interval.
let trialConfig (t: Trial) : RunConfig =
    let resolved (extra: (string * string) list) = resolveConfigFrom RunConfig.Default ((t.Overrides @ extra) |> List.map (fun (k, v) -> k + "=" + v))
    match t.Learner with
    | Some MetaGenRL | None ->
        resolved [ "timesteps_total", string t.Steps; "env_name", String.Join(",", t.Envs); "agent_count", string t.Agents ]
    | Some l ->
        let every = Engine.checkpointEvery (resolved []).CheckpointEvery t.Steps
        let own = t.Overrides |> List.filter (fun (k, _) -> k <> "checkpoint_every" && List.contains k (learnerKeys l))
        MetaLearnerRun.config t.Envs t.Steps (if t.Phase = MetaTrainPhase then Some every else None) own

// ── VALIDATION ──

/// Checks `key=value` overrides given by `field` (a declaration field or a flag): known keys, parsable values, and
/// none of the keys the experiment sets through its own fields.
let checkOverrides (field: string) (set: (string * string) list) =
    for (k, v) in set do
        match reservedKeys |> List.tryFind (fun (r, _) -> r = k) with
        | Some (_, instead) -> usageError "%s: key '%s' is set by the experiment's %s fields, not as an override" field k instead
        | None -> ()
        try RunConfig.Default.With(k, v) |> ignore
        with :? ArgumentException as ex -> usageError "%s: %s=%s: %s" field k v (messageOf ex)

let private checkSafeName (field: string) (name: string) =
    if String.IsNullOrWhiteSpace name then usageError "%s: must not be empty" field
    if name |> Seq.exists (fun c -> not (Char.IsLetterOrDigit c || c = '-' || c = '.' || c = '_')) then
        usageError "%s '%s': use letters, digits, '-', '_' and '.' only (it names folders)" field name

/// Refuses a MetaTest env that what `l` meta-trains on `trainEnvs` cannot be tested on.
let private checkTestable (l: MetaLearner) (trainEnvs: string list) (env: string) =
    match l with
    | MetaGenRL -> ()   // the objective trains a fresh agent of the env's own sizes
    | Rl2 -> Rl2Run.checkFits "MetaTest" env (Rl2Run.paddingOf trainEnvs) (sprintf "the rl2 policy of %s is padded to its largest env" (envList trainEnvs))
    | Epg -> ()         // the loss trains a fresh agent of the env's own sizes

let private checkSeeds (field: string) (seeds: int list) =
    if seeds.IsEmpty then usageError "%s: give at least one seed" field
    match seeds |> List.tryFind (fun s -> s < 0) with
    | Some s -> usageError "%s: seed %d is negative" field s
    | None -> ()
    if List.distinct seeds <> seeds then usageError "%s: seeds repeat (%s)" field (String.Join(", ", seeds))

/// Checks an env-step budget given by `field` (a declaration field or a flag).
let checkBudget (field: string) (steps: int64 option) =
    match steps with
    | Some s when s <= 0L -> usageError "%s: %d env steps; the budget must be positive" field s
    | _ -> ()

/// Checks the (scale-adjusted) experiment once; every message names the field and the bad value.
let validate (e: Experiment) =
    checkSafeName "Name" e.Name
    if e.Variants.IsEmpty && e.Baselines.IsEmpty && e.Objectives.IsEmpty then
        usageError "Variants, Objectives and Baselines are all empty: nothing to run"
    if not e.Objectives.IsEmpty then
        if e.MetaTest.IsEmpty then usageError "MetaTest: give at least one env to test the Objectives on"
        checkSeeds "MetaTestSeeds" e.MetaTestSeeds
        for dir in objectiveDirs e do
            let o = readExternal dir
            for env in e.MetaTest do
                try checkTestable o.Learner o.Envs env
                with UsageError msg -> usageError "Objectives: '%s': %s" dir msg
    if not e.Variants.IsEmpty then
        if e.MetaTrain.IsEmpty then usageError "MetaTrain: give at least one env set to meta-train the variants on"
        e.MetaTrain |> List.iteri (fun i set ->
            if set.IsEmpty then usageError "MetaTrain[%d]: an empty env set" i
            for env in set do validateEnv (sprintf "MetaTrain[%d]" i) env)
        checkSeeds "MetaTrainSeeds" e.MetaTrainSeeds
        checkSeeds "MetaTestSeeds" e.MetaTestSeeds
    if e.MetaTest.IsEmpty && not e.Baselines.IsEmpty then usageError "MetaTest: give at least one env for the baselines"
    for env in e.MetaTest do validateEnv "MetaTest" env
    if List.distinct e.MetaTest <> e.MetaTest then usageError "MetaTest: an env is listed twice"
    if not e.Baselines.IsEmpty then checkSeeds "BaselineSeeds" e.BaselineSeeds
    match e.Agents with
    | Some n when n < 2 && e.Variants |> List.exists (fun v -> v.Learner = MetaGenRL) ->
        usageError "Agents: %d; meta-training needs at least 2 agents" n
    | _ -> ()
    match e.AgentsPerEnv with
    | Some n when n < 1 -> usageError "AgentsPerEnv: %d; must be ≥ 1" n
    | _ -> ()
    checkBudget "MetaTrainSteps" e.MetaTrainSteps
    checkBudget "MetaTestSteps" e.MetaTestSteps
    checkOverrides "Set" e.Set
    checkOverrides "TestSet" e.TestSet
    for v in e.Variants do
        checkSafeName "Variants" v.Name
        checkOverrides (sprintf "Variants[%s].Set" v.Name) v.Set
        match v.Learner with
        | MetaGenRL ->
            match MetaLearner.ofVariant v.Name with
            | Some l -> usageError "Variants[%s]: '%s' names the %s meta-learner (its value is `%s`); give this objective variant another name" v.Name v.Name (MetaLearner.name l) (MetaLearner.name l)
            | None -> ()
        | l ->
            let name = MetaLearner.name l
            if v.Name <> name then usageError "Variants[%s]: a %s variant is named '%s' (its results and meta-tests know it by that name)" v.Name name name
            for (k, _) in v.Set do
                if not (List.contains k (learnerKeys l)) then
                    usageError "Variants[%s].Set: key '%s' does not apply to %s, which takes only %s from the config (its own settings are fixed)"
                        v.Name k name (String.Join(", ", learnerKeys l))
            if e.Device <> "cpu" then usageError "Device: %s; the %s variant runs on the CPU only" e.Device name
            for set in e.MetaTrain do
                for env in e.MetaTest do checkTestable l set env
    if (e.Variants |> List.map (fun v -> v.Name) |> List.distinct).Length <> e.Variants.Length then
        usageError "Variants: two variants share a name"
    for b in e.Baselines do
        if not (List.contains b algorithms) then
            usageError "Baselines: unknown algorithm '%s'; valid: %s" b (String.Join(", ", algorithms))
    if List.distinct e.Baselines <> e.Baselines then usageError "Baselines: an algorithm is listed twice"
    for a in e.Sweep do
        if a.Values.IsEmpty then usageError "Sweep[%s]: no values" a.Key
        if List.distinct a.Values <> a.Values then usageError "Sweep[%s]: values repeat" a.Key
        checkOverrides (sprintf "Sweep[%s]" a.Key) (a.Values |> List.map (fun v -> a.Key, v))
        if a.Key = "agent_count" then
            for v in a.Values do
                if int v < 2 then usageError "Sweep[agent_count]: %s; meta-training needs at least 2 agents" v
    if (e.Sweep |> List.map (fun a -> a.Key) |> List.distinct).Length <> e.Sweep.Length then
        usageError "Sweep: a key has two axes"
    (try MetaGenRL.Core.Torch.Devices.Resolve e.Device |> ignore
     with :? ArgumentException as ex -> usageError "Device: %s" (messageOf ex))
    let trials = expand e
    for t in trials do
        if t.Phase = MetaTrainPhase && t.Learner = Some Epg then
            let s = EpgRun.settingsOf (sprintf "Variants[epg]: trial %s" t.Id) (trialConfig t)
            if t.Steps < s.StepsPerEpoch then
                usageError "MetaTrainSteps: the epg trial %s gets %d env steps (agents × MetaTrainSteps), less than one ES epoch (2 × %d pairs × %d inner steps = %d); raise MetaTrainSteps or lower epg_inner_steps or epg_pairs"
                    t.Id t.Steps s.Pairs s.InnerSteps s.StepsPerEpoch
    let ids = trials |> List.map (fun t -> t.Id)
    match ids |> List.countBy id |> List.tryFind (fun (_, n) -> n > 1) with
    | Some (dup, _) -> usageError "Objectives: two objective folders give the same trial id '%s' (same variant, envs and seed)" dup
    | None -> ()

// ── IDENTITY AND SUMMARY ──

/// The resolved declaration as JSON (what makes two runs "the same experiment").
let toJson (e: Experiment) (trials: Trial list) : JsonObject =
    let strs (xs: string seq) = JsonArray(xs |> Seq.map (fun s -> JsonValue.Create s :> JsonNode) |> Array.ofSeq)
    let pairs (xs: (string * string) list) =
        let o = JsonObject()
        for (k, v) in xs do o[k] <- JsonValue.Create v
        o
    let o = JsonObject()
    o["name"] <- JsonValue.Create e.Name
    o["scale"] <- JsonValue.Create(Scale.name e.Scale)
    o["meta_train"] <- JsonArray(e.MetaTrain |> List.map (fun s -> strs s :> JsonNode) |> Array.ofList)
    o["meta_test"] <- strs e.MetaTest
    o["mode"] <- JsonValue.Create(string e.Mode)
    o["device"] <- JsonValue.Create e.Device
    o["set"] <- pairs e.Set
    if not e.TestSet.IsEmpty then o["test_set"] <- pairs e.TestSet   // only when used: earlier experiments keep their identity
    // "learner" only for another meta-learner: experiments of MetaGenRL variants keep their identity
    o["variants"] <-
        JsonArray(e.Variants |> List.map (fun v ->
            let x = pairs v.Set
            x["name"] <- JsonValue.Create v.Name
            if v.Learner <> MetaGenRL then x["learner"] <- JsonValue.Create(MetaLearner.name v.Learner)
            x :> JsonNode) |> Array.ofList)
    o["sweep"] <- JsonArray(e.Sweep |> List.map (fun a -> let x = JsonObject() in x["key"] <- JsonValue.Create a.Key; x["values"] <- strs a.Values; x :> JsonNode) |> Array.ofList)
    o["baselines"] <- strs e.Baselines
    o["trials"] <-
        JsonArray(
            trials
            |> List.map (fun t ->
                let x = JsonObject()
                x["trial_id"] <- JsonValue.Create t.Id
                x["phase"] <- JsonValue.Create t.Phase.Name
                match t.Learner with
                | Some l when l <> MetaGenRL -> x["learner"] <- JsonValue.Create(MetaLearner.name l)
                | _ -> ()
                x["variant"] <- JsonValue.Create t.Variant
                x["envs"] <- strs t.Envs
                x["seed"] <- JsonValue.Create t.Seed
                t.MetaSeed |> Option.iter (fun m -> x["meta_seed"] <- JsonValue.Create m)
                t.Seen |> Option.iter (fun s -> x["seen"] <- JsonValue.Create s)
                t.DependsOn |> Option.iter (fun d -> x["depends_on"] <- JsonValue.Create d)
                t.ObjectiveDir |> Option.iter (fun d -> x["objective"] <- JsonValue.Create(IO.Path.GetFullPath d))
                x["agents"] <- JsonValue.Create t.Agents
                x["steps"] <- JsonValue.Create t.Steps
                x["swept"] <- pairs t.Swept
                x["overrides"] <- pairs t.Overrides
                x :> JsonNode)
            |> Array.ofList)
    o

/// A short id derived from the resolved declaration: the same experiment maps to the same folder.
let configId (e: Experiment) (trials: Trial list) =
    let json = (toJson e trials).ToJsonString()
    let hash = SHA256.HashData(Encoding.UTF8.GetBytes json)
    sprintf "%s-%s" (Scale.name e.Scale) (Convert.ToHexString(hash).Substring(0, 8).ToLowerInvariant())

/// Rough core-seconds per agent-step by scale and phase, measured on a 2-core machine (one torch thread per agent):
/// a meta-train step costs a critic update plus half a policy update and half a meta-gradient; the others a critic
/// update plus half a policy update. At small sizes per-op overhead dominates, so they differ little.
let private secondsPerAgentStep scale (phase: Phase) =
    let meta = phase = MetaTrainPhase
    match scale with
    | Micro -> if meta then 0.010 else 0.003
    | Tiny -> if meta then 0.015 else 0.004
    | Small -> if meta then 0.030 else 0.006
    | Paper -> if meta then 0.22 else 0.10

/// Core-seconds per env step of another meta-learner's trials, at every scale (None for MetaGenRL: by scale and
/// phase, above). RL²: ≈ 1,400–1,700 env-steps/s overall in the onpolicy benchmark; EPG: ≈ 6,000–8,700 env-steps/s
/// of a Pendulum meta-train on 2 cores (≈ 3,000–4,000 per core).
let private learnerSecondsPerStep = function MetaGenRL -> None | Rl2 -> Some(1.0 / 1500.0) | Epg -> Some(1.0 / 3000.0)

/// Core-seconds per agent-step of a trial: other meta-learners and the on-policy baselines run at their own size at
/// every scale (measured with the onpolicy benchmark: PPO ≈ 1,600–2,100 env-steps/s, on-policy REINFORCE ≈
/// 4,500–6,800 on 2 threads), the others as above.
let private secondsPerTrialStep scale (t: Trial) =
    match t.Learner |> Option.bind learnerSecondsPerStep, t.Phase, t.Variant with
    | Some s, _, _ -> s
    | None, BaselinePhase, "ppo" -> 0.0008
    | None, BaselinePhase, "reinforce-onpolicy" -> 0.0003
    | None, _, _ -> secondsPerAgentStep scale t.Phase

/// A rough wall-clock estimate on `cores` cores (trials spread over the cores).
let estimateSeconds (scale: Scale) (cores: int) (trials: Trial list) =
    let coreSeconds = trials |> List.sumBy (fun t -> float t.AgentSteps * secondsPerTrialStep scale t)
    coreSeconds / float (max 1 cores)

let formatDuration (s: float) =
    let t = TimeSpan.FromSeconds s
    if t.TotalHours >= 48.0 then sprintf "%.0f days" t.TotalDays
    elif t.TotalHours >= 1.0 then sprintf "%.1f h" t.TotalHours
    elif t.TotalMinutes >= 1.0 then sprintf "%.0f min" t.TotalMinutes
    else sprintf "%.0f s" s

// ── A TRIAL ON THE WIRE ──

/// A trial as JSON (what a cluster coordinator sends a worker); `trialOfJson` reads it back to an equal trial.
let trialToJson (t: Trial) : JsonObject =
    let strs (xs: string seq) = JsonArray(xs |> Seq.map (fun s -> JsonValue.Create s :> JsonNode) |> Array.ofSeq)
    let pairs (xs: (string * string) list) = JsonArray(xs |> List.map (fun (k, v) -> strs [ k; v ] :> JsonNode) |> Array.ofList)
    let o = JsonObject()
    o["id"] <- JsonValue.Create t.Id
    o["phase"] <- JsonValue.Create t.Phase.Name
    t.Learner |> Option.iter (fun l -> o["learner"] <- JsonValue.Create(MetaLearner.name l))
    o["variant"] <- JsonValue.Create t.Variant
    o["envs"] <- strs t.Envs
    t.TrainEnvs |> Option.iter (fun e -> o["train_envs"] <- strs e)
    o["seed"] <- JsonValue.Create t.Seed
    t.MetaSeed |> Option.iter (fun m -> o["meta_seed"] <- JsonValue.Create m)
    t.Seen |> Option.iter (fun s -> o["seen"] <- JsonValue.Create s)
    o["swept"] <- pairs t.Swept
    o["overrides"] <- pairs t.Overrides
    o["agents"] <- JsonValue.Create t.Agents
    o["steps"] <- JsonValue.Create t.Steps
    t.DependsOn |> Option.iter (fun d -> o["depends_on"] <- JsonValue.Create d)
    t.ObjectiveDir |> Option.iter (fun d -> o["objective_dir"] <- JsonValue.Create d)
    o

let trialOfJson (o: JsonObject) : Trial =
    let str (k: string) = o[k].GetValue<string>()
    let opt (k: string) (f: JsonNode -> 'a) = match o[k] with null -> None | v -> Some(f v)
    let strs (n: JsonNode) = n.AsArray() |> Seq.map (fun x -> x.GetValue<string>()) |> List.ofSeq
    let pairs (n: JsonNode) = n.AsArray() |> Seq.map (fun p -> p.[0].GetValue<string>(), p.[1].GetValue<string>()) |> List.ofSeq
    let phase =
        match str "phase" with
        | "meta-train" -> MetaTrainPhase
        | "meta-test" -> MetaTestPhase
        | "train" -> BaselinePhase
        | p -> invalidArg "phase" (sprintf "trial JSON: unknown phase '%s'" p)
    let learner (n: JsonNode) =
        let name = n.GetValue<string>()
        match MetaLearner.all |> List.tryFind (fun l -> MetaLearner.name l = name) with
        | Some l -> l
        | None -> invalidArg "learner" (sprintf "trial JSON: unknown learner '%s'" name)
    { Id = str "id"; Phase = phase; Learner = opt "learner" learner; Variant = str "variant"; Envs = strs o["envs"]
      TrainEnvs = opt "train_envs" strs; Seed = o["seed"].GetValue<int>(); MetaSeed = opt "meta_seed" (fun n -> n.GetValue<int>())
      Seen = opt "seen" (fun n -> n.GetValue<bool>()); Swept = pairs o["swept"]; Overrides = pairs o["overrides"]
      Agents = o["agents"].GetValue<int>(); Steps = o["steps"].GetValue<int64>()
      DependsOn = opt "depends_on" (fun n -> n.GetValue<string>()); ObjectiveDir = opt "objective_dir" (fun n -> n.GetValue<string>()) }
