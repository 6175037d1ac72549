/// The whole command-line grammar (Argu) and its dispatch.
module MetaGenRL.Pipeline.Cli

open System
open Argu
open MetaGenRL.Core.Config
open MetaGenRL.Core.Envs

type TrainArgs =
    | [<AltCommandLine("-a")>] Algo of name: string
    | [<AltCommandLine("-e")>] Env of id: string
    | [<AltCommandLine("-n")>] Steps of count: int64
    | Seed of seed: int
    | [<AltCommandLine("-o")>] Out of dir: string
    | Set of ``key=value``: string
    | Device of device: string
    | Loss_Log_Every of updates: int
    | Experiment of name: string
    | Force

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Algo _ -> "algorithm: td3 (default td3)."
            | Env _ -> "environment id, e.g. Pendulum-v1, HalfCheetah-v2 (list: ./metagenrl envs)."
            | Steps _ -> "environment steps to train for (default 15000)."
            | Seed _ -> "seed for networks, exploration, replay sampling and the env (default 0)."
            | Out _ -> "output folder for metrics.parquet and run.json (default results/<experiment>/<algo>-<env>-s<seed>)."
            | Set _ -> "override one config key with the official name, e.g. --set policy_units=64 (repeatable; keys: ./metagenrl config)."
            | Device _ -> "cpu (default), cuda or cuda:N."
            | Loss_Log_Every _ -> "write losses every N updates (default 100)."
            | Experiment _ -> "experiment name stamped on every row (default train)."
            | Force -> "overwrite a completed run in --out."

type CliArgs =
    | [<CliPrefix(CliPrefix.None)>] Train of ParseResults<TrainArgs>
    | [<CliPrefix(CliPrefix.None)>] Envs
    | [<CliPrefix(CliPrefix.None)>] Config
    | Version

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Train _ -> "train one agent with a fixed algorithm; writes tidy Parquet + run.json."
            | Envs -> "list the environment ids with their observation and action sizes."
            | Config -> "list every config key with its default (use with --set key=value)."
            | Version -> "print the version and the package versions."

let parser = ArgumentParser.Create<CliArgs>(programName = "metagenrl")

let private trainRequest (a: ParseResults<TrainArgs>) : Runs.TrainRequest =
    let d = Runs.TrainRequest.Default
    { Algo = a.GetResult(Algo, d.Algo)
      Env = a.GetResult(Env, d.Env)
      Steps = a.GetResult(Steps, d.Steps)
      Seed = a.GetResult(Seed, d.Seed)
      Out = a.TryGetResult Out
      Overrides = a.GetResults Set
      Device = a.GetResult(Device, d.Device)
      LossLogEvery = a.GetResult(Loss_Log_Every, d.LossLogEvery)
      Experiment = a.GetResult(Experiment, d.Experiment)
      Force = a.Contains Force }

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
    | [ Train a ] -> Runs.train (trainRequest a) command
    | [ Envs ] -> listEnvs ()
    | [ Config ] -> listConfig ()
    | [ Version ] ->
        for (k, v) in Provenance.packageVersions () do printfn "%-12s %s" k v
        0
    | _ ->
        eprintfn "%s" (parser.PrintUsage(message = "expected exactly one command"))
        2
