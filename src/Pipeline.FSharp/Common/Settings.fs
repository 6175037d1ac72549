/// What every run takes from the command line or a declaration: the names of algorithms and objective variants
/// (defined once, in Core), `key=value` config overrides, and the checks of env ids, budgets and devices.
module MetaGenRL.Pipeline.Settings

open System
open MetaGenRL.Core.Config
open MetaGenRL.Core.Envs
open MetaGenRL.Core.Objective
open MetaGenRL.Core.Engine
open MetaGenRL.Pipeline.Errors

/// The fixed algorithms a single run (`train`, an experiment's baselines) can use (Core's list).
let algorithms = List.ofSeq MetaGenRL.Core.Engine.Algorithms.Baselines

/// The objective variants `obj_func_variant` accepts (Core's list).
let variantNames = List.ofSeq ObjectiveSpec.VariantNames

/// Splits "key=value"; the message names the malformed override.
let parseOverride (s: string) =
    match s.IndexOf '=' with
    | i when i > 0 -> s.Substring(0, i).Trim(), s.Substring(i + 1).Trim()
    | _ -> usageError "--set '%s': expected key=value (keys and defaults: ./metagenrl config)" s

/// Applies `key=value` overrides to `baseConfig`; unknown keys and bad values name themselves.
let resolveConfigFrom (baseConfig: RunConfig) (overrides: string list) : RunConfig =
    overrides
    |> List.map parseOverride
    |> List.fold (fun (cfg: RunConfig) (k, v) ->
        try cfg.With(k, v) with :? ArgumentException as e -> raise (UsageError(sprintf "--set %s=%s: %s" k v (messageOf e))))
        baseConfig

/// A JSON value as compact text ("null" for null), for comparing config values.
let jsonText (n: Text.Json.Nodes.JsonNode) = if isNull n then "null" else n.ToJsonString()

/// The first of `keys` whose value differs between a stored config and a wanted one, as (key, stored text, wanted
/// text), "(absent)" standing for a key one side lacks.
let differingKey (keys: string seq) (stored: Text.Json.Nodes.JsonObject) (wanted: Text.Json.Nodes.JsonObject) =
    let text (o: Text.Json.Nodes.JsonObject) k = if o.ContainsKey k then jsonText o[k] else "(absent)"
    keys |> Seq.tryPick (fun k -> let a, b = text stored k, text wanted k in if a <> b then Some(k, a, b) else None)

/// The keys of a trained objective that its meta-tests keep, where they differ from the defaults: L_α's shape and
/// settings (obj_func_*), paper_quirks and normalize_actions, as (key, value text) pairs. Everything else a
/// meta-test takes from its own preset, not from the meta-train run.
let objectiveKeys (cfg: RunConfig) : (string * string) list =
    let json = Text.Json.Nodes.JsonNode.Parse(cfg.ToJson()).AsObject()
    let defaults = Text.Json.Nodes.JsonNode.Parse(RunConfig.Default.ToJson()).AsObject()
    let text (n: Text.Json.Nodes.JsonNode) =
        if isNull n then "null"
        elif n.GetValueKind() = Text.Json.JsonValueKind.String then n.GetValue<string>()
        else n.ToJsonString()
    [ for kv in json do
        let differs = not (defaults.ContainsKey kv.Key) || jsonText defaults[kv.Key] <> jsonText kv.Value
        if (kv.Key.StartsWith "obj_func_" || kv.Key = "paper_quirks" || kv.Key = "normalize_actions") && differs then
            kv.Key, text kv.Value ]

/// Applies `key=value` overrides to the paper's defaults.
let resolveConfig (overrides: string list) : RunConfig = resolveConfigFrom RunConfig.Default overrides

/// An unknown env id, as a usage error naming the flag and listing the valid ids.
let validateEnv (flag: string) (id: string) =
    try EnvRegistry.Validate id with :? ArgumentException as e -> raise (UsageError(flag + ": " + messageOf e))

/// The checks every run command shares: step budget, loss-log interval and device.
let validateRun (steps: int64) (lossLogEvery: int) (device: string) =
    if steps <= 0L then usageError "--steps %d: must be positive" steps
    if lossLogEvery <= 0 then usageError "--loss-log-every %d: must be positive" lossLogEvery
    (try MetaGenRL.Core.Torch.Devices.Resolve device |> ignore
     with :? ArgumentException as e -> raise (UsageError("--device: " + messageOf e)))

/// Seeds of a multi-seed run: at least one, no repeats.
let validateSeeds (seeds: int list) =
    if List.isEmpty seeds then usageError "--seeds: give at least one seed"
    match seeds |> List.countBy id |> List.tryFind (fun (_, n) -> n > 1) with
    | Some (s, _) -> usageError "--seeds: seed %d is given twice" s
    | None -> ()
