/// The whole command-line grammar (Argu) and its dispatch.
module MetaGenRL.Pipeline.Cli

open System
open Argu
open MetaGenRL.Core.Config
open MetaGenRL.Core.Envs

let private scaleUsage =
    sprintf "network, batch and exploration sizes of a scale preset (%s; default: the paper's), applied before --set."
        (String.Join(", ", Experiment.Scale.all |> List.map Experiment.Scale.name))

type TrainArgs =
    | [<AltCommandLine("-a")>] Algo of name: string
    | [<AltCommandLine("-e")>] Env of id: string
    | [<AltCommandLine("-n")>] Steps of count: int64
    | Seed of seed: int
    | Seeds of seeds: string
    | [<AltCommandLine("-o")>] Out of dir: string
    | Set of ``key=value``: string
    | Device of device: string
    | Loss_Log_Every of updates: int
    | Experiment of name: string
    | Scale of name: string
    | Force

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Scale _ -> scaleUsage
            | Algo _ ->
                sprintf "algorithm: %s (default td3). reinforce-offpolicy is the fixed REINFORCE-with-GAE objective; random-objective an untrained, frozen L_α (the control a learned objective must beat)."
                    (String.Join(", ", Settings.algorithms))
            | Env _ -> "environment id, e.g. Pendulum-v1, HalfCheetah-v2 (list: ./metagenrl envs)."
            | Steps _ -> "environment steps to train for (default 15000)."
            | Seed _ -> "seed for networks, exploration, replay sampling and the env (default 0)."
            | Seeds _ -> "several seeds, e.g. 0,1,2,3: one run each (in <out>/s<seed>), computed as one batched group."
            | Out _ -> "output folder for metrics.parquet and run.json (default results/<experiment>/<algo>-<env>-s<seeds>)."
            | Set _ -> "override one config key with the official name, e.g. --set policy_units=64 (repeatable; keys: ./metagenrl config)."
            | Device _ -> "cpu (default), cuda or cuda:N."
            | Loss_Log_Every _ -> "write losses every N updates (default 100)."
            | Experiment _ -> "experiment name stamped on every row (default train)."
            | Force -> "overwrite a completed run in --out."

type MetaTrainArgs =
    | Algo of ``metagenrl|rl2|epg``: string
    | Envs of ``id,id,…``: string
    | Agents of count: int
    | [<AltCommandLine("-n")>] Steps of count: int64
    | Seed of seed: int
    | [<AltCommandLine("-o")>] Out of dir: string
    | Variant of name: string
    | Mode of ``sync|async``: string
    | Resume
    | Set of ``key=value``: string
    | Device of device: string
    | Checkpoint_Every of steps: int64
    | Loss_Log_Every of updates: int
    | Torch_Threads of count: int
    | Experiment of name: string
    | Scale of name: string
    | Force
    | Cluster of ``host:port``: string
    | Workers of count: int
    | Secret_File of path: string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Scale _ -> scaleUsage
            | Cluster _ -> "span the population over a cluster: start a coordinator node at HOST:PORT, wait for --workers workers (./metagenrl worker --join HOST:PORT) and run the agent groups there (group g on worker g mod n; set their size with --set group_size=K). The objective server and the results stay here. A worker lost mid-run has its groups rebuilt on another worker from the last checkpoint."
            | Workers _ -> "with --cluster: how many workers to wait for (default 1); workers beyond the groups stand by for lost ones."
            | Secret_File _ -> sprintf "with --cluster: a file whose first line is the cluster's shared secret (default: the %s variable)." MetaGenRL.Actors.Cluster.ClusterNode.SecretVariable
            | Algo _ -> "meta-learner: metagenrl (default; a learned objective, population of agents), rl2 (a GRU policy meta-trained with PPO on trials of the envs) or epg (a loss network evolved by ES over inner loops that train fresh agents; --steps counts every inner loop's env steps, whole ES epochs; sizes: --set epg_*). --agents, --variant and --mode apply to metagenrl only."
            | Envs _ -> "meta-training envs, assigned to agents round-robin (default LunarLanderContinuous-v2,HalfCheetah-v2)."
            | Agents _ -> "population size, at least 2 (default 2; the paper uses 20)."
            | Steps _ -> "env steps per agent (timesteps_total; default 10000)."
            | Seed _ -> "run seed; every agent's generators derive from it (default 0)."
            | Out _ -> "run folder: metrics.parquet, run.json, checkpoints/ (default results/<experiment>/<variant>-<envs>-n<agents>-s<seed>)."
            | Variant _ -> sprintf "objective variant: %s (default full)." (String.Join(", ", Settings.variantNames))
            | Mode _ -> "sync (default; deterministic for a seed) or async (agents run without waiting for each other)."
            | Resume -> "continue an interrupted run in --out from its latest complete checkpoint (also after kill -9)."
            | Set _ -> "override one config key by its official name (repeatable; keys: ./metagenrl config)."
            | Device _ -> "cpu (default), cuda or cuda:N."
            | Checkpoint_Every _ -> "env steps between checkpoints, taken at round boundaries (config key checkpoint_every; default max(1000, steps/5)). A checkpoint is also written at the end."
            | Loss_Log_Every _ -> "write losses every N updates (default 100)."
            | Torch_Threads _ -> "torch threads per agent (default: cores / agents, at least 1; epg runs one inner loop per core on one thread each)."
            | Experiment _ -> "experiment name stamped on every row (default meta-train)."
            | Force -> "delete a previous run in --out and start over."

type MetaTestArgs =
    | Algo of ``metagenrl|rl2|epg``: string
    | [<Mandatory>] Objective of dir: string
    | Checkpoint of index: int
    | [<AltCommandLine("-e")>] Env of id: string
    | [<AltCommandLine("-n")>] Steps of count: int64
    | Seed of seed: int
    | Seeds of seeds: string
    | [<AltCommandLine("-o")>] Out of dir: string
    | Set of ``key=value``: string
    | Device of device: string
    | Loss_Log_Every of updates: int
    | Experiment of name: string
    | Scale of name: string
    | Force

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Algo _ -> "meta-learner of --objective: metagenrl (default; trains a fresh agent with the frozen objective), rl2 (runs the frozen recurrent policy, no gradient steps) or epg (trains a fresh agent with the frozen evolved loss)."
            | Objective _ -> "a meta-train run folder whose objective (α) is loaded, frozen."
            | Checkpoint _ -> "checkpoint index to load (default: the latest complete one)."
            | Env _ -> "env to train a fresh agent on; need not be one seen in meta-training."
            | Steps _ -> "env steps (default 15000)."
            | Seed _ -> "seed of the fresh agent (default 0)."
            | Seeds _ -> "several seeds, e.g. 0,1,2,3: one fresh agent and run each (in <out>/s<seed>), computed as one batched group."
            | Out _ -> "output folder (default results/<experiment>/<variant>-<env>-s<seeds>)."
            | Set _ -> "override a config key. The fresh agent's settings come from --scale's meta-test preset (default: the paper's test config), not from the meta-train run; only the objective's own keys (obj_func_*, paper_quirks, normalize_actions) come from there."
            | Device _ -> "cpu (default), cuda or cuda:N."
            | Loss_Log_Every _ -> "write losses every N updates (default 100)."
            | Experiment _ -> "experiment name stamped on every row (default meta-test)."
            | Scale _ -> scaleUsage
            | Force -> "overwrite a completed run in --out."

type ReportArgs =
    | [<MainCommand; ExactlyOnce>] Dir of dir: string
    | [<AltCommandLine("-o")>] Out of dir: string
    | Tensorboard

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Dir _ -> "an experiment folder (results.parquet or trials/*/metrics.parquet), a run folder, or any folder of metrics.parquet files."
            | Out _ -> "where to write summary.md, the PNG curves and report.html (default DIR/report)."
            | Tensorboard -> "also write TensorBoard event files per run and agent under <out>/tensorboard/."

type WorkerArgs =
    | [<Mandatory>] Join of ``host:port``: string
    | Host of address: string
    | Port of port: int
    | Role of name: string
    | Secret_File of path: string
    | Join_Timeout of seconds: float
    | Local_Out of dir: string
    | Cores of count: int

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Join _ -> "the coordinator (or any member) to join."
            | Host _ -> "the address this worker binds and is reached at (default 127.0.0.1: only this host; give the machine's address to join across machines)."
            | Port _ -> "the port to listen on (default 0: a free one)."
            | Role _ -> "a role besides worker (repeatable)."
            | Secret_File _ -> sprintf "a file whose first line is the cluster's shared secret (default: the %s variable)." MetaGenRL.Actors.Cluster.ClusterNode.SecretVariable
            | Join_Timeout _ -> "seconds to wait for the join (default 60)."
            | Cores _ -> "cores the trials sent to this worker may use at once, one per agent (default: all of this machine's); the coordinator packs trials onto them as a local run does."
            | Local_Out _ ->
                "this worker does not share the experiment's --out: it runs each trial from the start in a folder of its own under DIR, where its checkpoints stay, and a trial it loses runs again from the start elsewhere (default: --out where this worker sees it at the same path, else a folder under the system temp folder named after the worker)."

type CliArgs =
    | [<CliPrefix(CliPrefix.None)>] Train of ParseResults<TrainArgs>
    | [<CliPrefix(CliPrefix.None); CustomCommandLine("meta-train")>] Meta_Train of ParseResults<MetaTrainArgs>
    | [<CliPrefix(CliPrefix.None); CustomCommandLine("meta-test")>] Meta_Test of ParseResults<MetaTestArgs>
    | [<CliPrefix(CliPrefix.None)>] Report of ParseResults<ReportArgs>
    | [<CliPrefix(CliPrefix.None)>] Worker of ParseResults<WorkerArgs>
    | [<CliPrefix(CliPrefix.None)>] Envs
    | [<CliPrefix(CliPrefix.None)>] Config
    | Version
    | Verbose

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Train _ -> "train one agent with a fixed algorithm; writes tidy Parquet + run.json."
            | Meta_Train _ -> "meta-train an objective with a population of agents (Akka.NET), with checkpoints and --resume."
            | Meta_Test _ -> "train a fresh agent with a frozen objective from a meta-train run."
            | Report _ -> "tables (summary.md), learning curves (PNG, HTML) and optional TensorBoard files for a results folder."
            | Worker _ -> "join a MetaGenRL cluster (Akka.Cluster) as a worker node; the shared secret comes from METAGENRL_CLUSTER_SECRET or --secret-file."
            | Envs -> "list the environment ids with their observation and action sizes."
            | Config -> "list every config key with its default (use with --set key=value)."
            | Version -> "print the version and the package versions."
            | Verbose -> "on an error, also print its stack trace (may be given anywhere on the line; or METAGENRL_VERBOSE=1). Exit codes: 0 done, 1 a run failed, 2 bad input, 130 interrupted."

let parser = ArgumentParser.Create<CliArgs>(programName = "metagenrl")

/// The `key=value` overrides of a scale preset (with its meta-test settings for a meta-test or a baseline `train`).
let private scaleOverrides (test: bool) (scale: string option) =
    match scale with
    | Some s ->
        let p = Experiment.preset (Experiment.Scale.parse s)
        (if test then p.Set @ p.TestSet else p.Set) |> List.map (fun (k, v) -> k + "=" + v)
    | None -> []

/// `--seeds 0,1,2` or `--seed 0` (not both); `fallback` when neither is given.
let private seedList (seed: int option) (seeds: string option) (fallback: int list) =
    match seed, seeds with
    | Some _, Some _ -> Errors.usageError "--seed and --seeds: give one of them"
    | Some s, None -> [ s ]
    | None, Some text ->
        text.Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries)
        |> Array.map (fun x -> match Int32.TryParse x with | true, v -> v | _ -> Errors.usageError "--seeds '%s': '%s' is not an integer" text x)
        |> List.ofArray
    | None, None -> fallback

let private trainRequest (a: ParseResults<TrainArgs>) : TrainRun.TrainRequest =
    let d = TrainRun.TrainRequest.Default
    { Algo = a.GetResult(TrainArgs.Algo, d.Algo)
      Env = a.GetResult(TrainArgs.Env, d.Env)
      Steps = a.GetResult(TrainArgs.Steps, d.Steps)
      Seeds = seedList (a.TryGetResult TrainArgs.Seed) (a.TryGetResult TrainArgs.Seeds) d.Seeds
      Out = a.TryGetResult TrainArgs.Out
      Overrides = scaleOverrides true (a.TryGetResult TrainArgs.Scale) @ a.GetResults TrainArgs.Set
      Device = a.GetResult(TrainArgs.Device, d.Device)
      LossLogEvery = a.GetResult(TrainArgs.Loss_Log_Every, d.LossLogEvery)
      Experiment = a.GetResult(TrainArgs.Experiment, d.Experiment)
      Force = a.Contains TrainArgs.Force }

let private metaTrainRequest (a: ParseResults<MetaTrainArgs>) : PopulationRun.MetaTrainRequest =
    let d = PopulationRun.MetaTrainRequest.Default
    let mode =
        match a.GetResult(MetaTrainArgs.Mode, "sync").ToLowerInvariant() with
        | "sync" -> MetaGenRL.Actors.ScheduleMode.Sync
        | "async" -> MetaGenRL.Actors.ScheduleMode.Async
        | m -> Errors.usageError "--mode '%s': expected sync or async" m
    { Envs =
        match a.TryGetResult MetaTrainArgs.Envs with
        | Some s -> s.Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries) |> List.ofArray
        | None -> d.Envs
      Agents = a.GetResult(Agents, d.Agents)
      Steps = a.GetResult(MetaTrainArgs.Steps, d.Steps)
      Seed = a.GetResult(MetaTrainArgs.Seed, d.Seed)
      Out = a.TryGetResult MetaTrainArgs.Out
      Variant = a.GetResult(Variant, d.Variant)
      Mode = mode
      Resume = a.Contains Resume
      Overrides = scaleOverrides false (a.TryGetResult MetaTrainArgs.Scale) @ a.GetResults MetaTrainArgs.Set
      Device = a.GetResult(MetaTrainArgs.Device, d.Device)
      CheckpointEvery = a.TryGetResult Checkpoint_Every
      LossLogEvery = a.GetResult(MetaTrainArgs.Loss_Log_Every, d.LossLogEvery)
      TorchThreads = a.GetResult(Torch_Threads, d.TorchThreads)
      Experiment = a.GetResult(MetaTrainArgs.Experiment, d.Experiment)
      Force = a.Contains MetaTrainArgs.Force
      Cluster =
        match a.TryGetResult MetaTrainArgs.Cluster with
        | Some endpoint ->
            Some { Endpoint = endpoint; Secret = Worker.readSecret (a.TryGetResult MetaTrainArgs.Secret_File); SpanOver = a.GetResult(Workers, 1) }
        | None ->
            if a.Contains Workers then Errors.usageError "--workers: only with --cluster HOST:PORT"
            if a.Contains MetaTrainArgs.Secret_File then Errors.usageError "--secret-file: only with --cluster HOST:PORT"
            None }

let private metaTestRequest (a: ParseResults<MetaTestArgs>) : MetaTestRun.MetaTestRequest =
    { Objective = a.GetResult MetaTestArgs.Objective
      Checkpoint = a.TryGetResult MetaTestArgs.Checkpoint
      Env = a.GetResult(MetaTestArgs.Env, "HalfCheetah-v2")
      Steps = a.GetResult(MetaTestArgs.Steps, 15_000L)
      Seeds = seedList (a.TryGetResult MetaTestArgs.Seed) (a.TryGetResult MetaTestArgs.Seeds) [ 0 ]
      Out = a.TryGetResult MetaTestArgs.Out
      Preset = scaleOverrides true (a.TryGetResult MetaTestArgs.Scale)
      Overrides = a.GetResults MetaTestArgs.Set
      Device = a.GetResult(MetaTestArgs.Device, "cpu")
      LossLogEvery = a.GetResult(MetaTestArgs.Loss_Log_Every, 100)
      Experiment = a.GetResult(MetaTestArgs.Experiment, "meta-test")
      Force = a.Contains MetaTestArgs.Force }

let private report (a: ParseResults<ReportArgs>) =
    let r = Report.write (a.GetResult Dir) { Out = a.TryGetResult ReportArgs.Out; TensorBoard = a.Contains Tensorboard }
    printfn "%s" r.Summary
    for f in r.Files do printfn "wrote %s" f
    0

let private listEnvs () =
    for id in EnvRegistry.Ids do
        use env = EnvRegistry.Make(id, 0)
        printfn "%-28s obs %3d  act %2d  limit %4d" id env.ObservationSize env.ActionSize env.MaxEpisodeSteps
    0

let private listConfig () =
    let json = Text.Json.Nodes.JsonNode.Parse(RunConfig.Default.ToJson()).AsObject()
    for kv in json do
        printfn "%-40s %s" kv.Key (if isNull kv.Value then "null" else kv.Value.ToJsonString())
    0

/// Parses and runs one command line; returns the process exit code.
let run (argv: string[]) : int =
    let command = "metagenrl " + String.Join(" ", argv)
    let results = parser.ParseCommandLine(argv, raiseOnUsage = true)
    match results.GetAllResults() with
    | [ Train a ] -> TrainRun.train (trainRequest a) command
    | [ Meta_Train a ] ->
        let algo = a.GetResult(MetaTrainArgs.Algo, "metagenrl")
        if algo <> "metagenrl" && a.Contains MetaTrainArgs.Cluster then
            Errors.usageError "--cluster: only a metagenrl population spans nodes (--algo %s runs in this process)" algo
        match algo with
        | "metagenrl" -> PopulationRun.metaTrain (metaTrainRequest a) command
        | "rl2" -> Rl2Run.metaTrain (metaTrainRequest a) command
        | "epg" ->
            // --scale sizes EPG through the preset's LearnerSet (its Set tunes MetaGenRL's agents)
            let r = metaTrainRequest a
            let learnerSet =
                a.TryGetResult MetaTrainArgs.Scale
                |> Option.map (fun s -> (Experiment.preset (Experiment.Scale.parse s)).LearnerSet |> List.map (fun (k, v) -> k + "=" + v))
                |> Option.defaultValue []
            EpgRun.metaTrain { r with Overrides = learnerSet @ r.Overrides } command
        | other -> Errors.usageError "--algo '%s': expected metagenrl, rl2 or epg" other
    | [ Meta_Test a ] ->
        match a.GetResult(MetaTestArgs.Algo, "metagenrl") with
        | "metagenrl" -> MetaTestRun.metaTest (metaTestRequest a) command
        | "rl2" -> Rl2Run.metaTest (metaTestRequest a) command
        | "epg" -> EpgRun.metaTest (metaTestRequest a) command
        | other -> Errors.usageError "--algo '%s': expected metagenrl, rl2 or epg" other
    | [ Report a ] -> report a
    | [ Worker a ] ->
        Worker.run
            { Join = a.GetResult WorkerArgs.Join; Host = a.GetResult(WorkerArgs.Host, "127.0.0.1"); Port = a.GetResult(WorkerArgs.Port, 0)
              Roles = a.GetResults WorkerArgs.Role; SecretFile = a.TryGetResult WorkerArgs.Secret_File
              JoinTimeout = TimeSpan.FromSeconds(a.GetResult(Join_Timeout, 60.0)); LocalOut = a.TryGetResult Local_Out
              Cores = a.GetResult(WorkerArgs.Cores, Environment.ProcessorCount) }
    | [ Envs ] -> listEnvs ()
    | [ Config ] -> listConfig ()
    | [ Version ] ->
        for (k, v) in Provenance.packageVersions () do printfn "%-12s %s" k v
        0
    | _ ->
        eprintfn "%s" (parser.PrintUsage(message = "expected exactly one command"))
        2
