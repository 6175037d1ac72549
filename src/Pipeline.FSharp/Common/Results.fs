/// Tidy (long) Parquet results: one row per metric observation, written atomically.
module MetaGenRL.Pipeline.Results

open System
open System.Collections.Generic
open System.IO
open System.Text.Json
open System.Text.Json.Nodes
open Parquet
open Parquet.Serialization

/// One metric observation. Column names are the ones analysis code joins on (see results/README.md).
[<CLIMutable>]
type Row =
    { run_id: string
      experiment: string
      variant: string
      phase: string
      env: string
      seed: int
      agent: int
      env_step: int64
      wall_time_s: float
      metric: string
      value: float }

/// What identifies a run; stamped on every row.
type RunKey =
    { RunId: string; Experiment: string; Variant: string; Phase: string; Env: string; Seed: int }

/// Writes `path` through `write` on a temp file in the same folder, then renames it, so a reader never sees a
/// half-written file; on failure the temp file is removed and the error rethrown.
let writeAtomic (path: string) (write: string -> unit) =
    let tmp = path + ".tmp-" + Guid.NewGuid().ToString("N").Substring(0, 8)
    try
        write tmp
        File.Move(tmp, path, true)
    with _ ->
        (try File.Delete tmp with _ -> ())
        reraise ()

let writeAllTextAtomic (path: string) (text: string) = writeAtomic path (fun tmp -> File.WriteAllText(tmp, text))

let writeAllBytesAtomic (path: string) (bytes: byte[]) = writeAtomic path (fun tmp -> File.WriteAllBytes(tmp, bytes))

/// For a status that must not stay stale after a failure (e.g. on a full disk): an atomic write, else an in-place
/// rewrite (truncating first frees the old file's blocks), else nothing. Returns whether it was written.
let writeAllTextBestEffort (path: string) (text: string) =
    try writeAllTextAtomic path text; true
    with _ ->
        try File.WriteAllText(path, text); true
        with _ -> false

/// Writes rows to a Parquet file atomically (temp + rename) with key-value metadata.
let writeParquet (path: string) (metadata: IReadOnlyDictionary<string, string>) (rows: Row seq) =
    writeAtomic path (fun tmp ->
        let opts = ParquetOptions(CompressionMethod = CompressionMethod.Zstd)
        ParquetSerializer.SerializeAsync(rows, tmp, opts, metadata).GetAwaiter().GetResult() |> ignore)

/// The columns an experiment adds to each row of a trial (constant within the trial).
type TrialColumns =
    { TrialId: string
      /// The meta-train env set joined with '+'; None for baselines.
      TrainEnvs: string option
      MetaSeed: int option
      Seen: bool option
      /// The sweep point: one value per swept key.
      Swept: (string * string) list }

/// A swept key as a column: float64 when all its values are numbers, text otherwise.
type SweptColumn = { Key: string; Numeric: bool }

let private parseNumber (s: string) =
    match Double.TryParse(s, Globalization.NumberStyles.Float, Globalization.CultureInfo.InvariantCulture) with
    | true, v -> Some v
    | _ -> None

/// The swept columns for the given keys and all their values.
let sweptColumns (axes: (string * string list) list) =
    axes |> List.map (fun (k, values) -> { Key = k; Numeric = values |> List.forall (parseNumber >> Option.isSome) })

/// Writes rows with the experiment columns atomically: the tidy columns, then trial_id, train_envs, meta_seed, seen
/// and one column per swept key. Each block is one trial's rows with that trial's columns.
let writeTrialParquet (path: string) (metadata: IReadOnlyDictionary<string, string>) (swept: SweptColumn list)
                      (blocks: (TrialColumns * Row[]) list) =
    let rows = blocks |> Array.ofList |> Array.collect (fun (c, rs) -> rs |> Array.map (fun r -> c, r))
    let col (f: TrialColumns * Row -> 'a) = rows |> Array.map f
    // Strings are nullable, as the serializer writes them, so `readParquet` reads these files too.
    let field name (t: Type) nullable = Schema.DataField(name, t, Nullable(nullable || t = typeof<string>), Nullable(false), null)
    let fields =
        [ field "run_id" typeof<string> false; field "experiment" typeof<string> false; field "variant" typeof<string> false
          field "phase" typeof<string> false; field "env" typeof<string> false; field "seed" typeof<int> false
          field "agent" typeof<int> false; field "env_step" typeof<int64> false; field "wall_time_s" typeof<float> false
          field "metric" typeof<string> false; field "value" typeof<float> false
          field "trial_id" typeof<string> false; field "train_envs" typeof<string> true
          field "meta_seed" typeof<int> true; field "seen" typeof<bool> true ]
        @ (swept |> List.map (fun s -> field s.Key (if s.Numeric then typeof<float> else typeof<string>) true))
    let sweptValue (c: TrialColumns) key = c.Swept |> List.tryFind (fun (k, _) -> k = key) |> Option.map snd
    writeAtomic path (fun tmp ->
        (task {
            use stream = File.Create tmp
            let! writer = ParquetWriter.CreateAsync(Schema.ParquetSchema(fields |> List.map (fun f -> f :> Schema.Field) |> Array.ofList), stream, ParquetOptions(CompressionMethod = CompressionMethod.Zstd))
            writer.CustomMetadata <- metadata
            let rg = writer.CreateRowGroup()
            let f i = fields[i]
            let str i (xs: string[]) = rg.WriteAsync(f i, xs :> IReadOnlyCollection<string>, Nullable())
            let mem i (xs: 'a[]) = rg.WriteAsync<'a>(f i, ReadOnlyMemory<'a>(xs), Nullable(), null, Threading.CancellationToken.None)
            let memN i (xs: Nullable<'a>[]) = rg.WriteAsync<'a>(f i, ReadOnlyMemory<Nullable<'a>>(xs), Nullable(), null, Threading.CancellationToken.None)
            do! str 0 (col (fun (_, r) -> r.run_id))
            do! str 1 (col (fun (_, r) -> r.experiment))
            do! str 2 (col (fun (_, r) -> r.variant))
            do! str 3 (col (fun (_, r) -> r.phase))
            do! str 4 (col (fun (_, r) -> r.env))
            do! mem 5 (col (fun (_, r) -> r.seed))
            do! mem 6 (col (fun (_, r) -> r.agent))
            do! mem 7 (col (fun (_, r) -> r.env_step))
            do! mem 8 (col (fun (_, r) -> r.wall_time_s))
            do! str 9 (col (fun (_, r) -> r.metric))
            do! mem 10 (col (fun (_, r) -> r.value))
            do! str 11 (col (fun (c, _) -> c.TrialId))
            do! str 12 (col (fun (c, _) -> Option.toObj c.TrainEnvs))
            do! memN 13 (col (fun (c, _) -> Option.toNullable c.MetaSeed))
            do! memN 14 (col (fun (c, _) -> Option.toNullable c.Seen))
            for i, s in List.indexed swept do
                if s.Numeric then
                    do! memN (15 + i) (col (fun (c, _) -> sweptValue c s.Key |> Option.bind parseNumber |> Option.toNullable))
                else
                    do! str (15 + i) (col (fun (c, _) -> sweptValue c s.Key |> Option.toObj))
            rg.Dispose()
            do! writer.DisposeAsync()
        }).GetAwaiter().GetResult())

/// Reads rows back (used by reports and tests).
let readParquet (path: string) : Row list =
    let r = ParquetSerializer.DeserializeAsync<Row>(path).GetAwaiter().GetResult()
    List.ofSeq r.Data

/// Collects rows for one run and flushes them to `<dir>/metrics.parquet` (always a complete, valid file)
/// together with `<dir>/run.json`, whose "status" says whether the run finished.
/// With `trial`, the file also carries the experiment columns (see `writeTrialParquet`).
type RunWriter(dir: string, key: RunKey, configJson: string, command: string, envOfAgent: int -> string, initialRows: Row seq,
               trial: (TrialColumns * SweptColumn list) option) =
    let rows = List<Row>(initialRows)
    let failures = List<string>()
    let info = JsonObject()              // further provenance fields (resumes, the objective loaded, …)
    let mutable error: string option = None
    // A resumed run continues the wall clock where its kept rows stop.
    let clockOffset = if rows.Count = 0 then 0.0 else rows |> Seq.map (fun r -> r.wall_time_s) |> Seq.max
    let gate = obj ()
    let flushGate = obj ()
    let started = DateTimeOffset.Now
    let clock = Diagnostics.Stopwatch.StartNew()
    let parquetPath = Path.Combine(dir, "metrics.parquet")
    let runJsonPath = Path.Combine(dir, "run.json")

    let provenance (status: string) (finished: DateTimeOffset option) =
        let o = JsonObject()
        o["run_id"] <- JsonValue.Create key.RunId
        o["experiment"] <- JsonValue.Create key.Experiment
        o["variant"] <- JsonValue.Create key.Variant
        o["phase"] <- JsonValue.Create key.Phase
        o["env"] <- JsonValue.Create key.Env
        o["seed"] <- JsonValue.Create key.Seed
        o["status"] <- JsonValue.Create status
        o["command"] <- JsonValue.Create command
        o["git_commit"] <- JsonValue.Create(Provenance.gitCommit.Value)
        o["git_dirty"] <- JsonValue.Create(Provenance.gitDirty.Value)
        o["host"] <- JsonValue.Create(Provenance.host ())
        o["started"] <- JsonValue.Create(started.ToString "o")
        match finished with
        | Some f -> o["finished"] <- JsonValue.Create(f.ToString "o")
        | None -> ()
        o["rows"] <- JsonValue.Create rows.Count
        if failures.Count > 0 then
            o["failures"] <- JsonArray(failures |> Seq.map (fun f -> JsonValue.Create f :> JsonNode) |> Array.ofSeq)
        error |> Option.iter (fun e -> o["error"] <- JsonValue.Create e)
        for kv in info do o[kv.Key] <- (if isNull kv.Value then null else kv.Value.DeepClone())
        let versions = JsonObject()
        for (k, v) in Provenance.packageVersions () do versions[k] <- JsonValue.Create v
        o["versions"] <- versions
        o["config"] <- JsonNode.Parse configJson
        o

    do Directory.CreateDirectory dir |> ignore

    /// A single-env run starting from nothing.
    new(dir, key, configJson, command) = RunWriter(dir, key, configJson, command, (fun _ -> key.Env), Seq.empty, None)

    /// A population run without experiment columns.
    new(dir, key, configJson, command, envOfAgent, initialRows) = RunWriter(dir, key, configJson, command, envOfAgent, initialRows, None)

    member _.ParquetPath = parquetPath
    member _.RunJsonPath = runJsonPath

    /// Thread-safe: records one observation stamped with this run's key and the wall time.
    member _.Add(agent: int, envStep: int64, metric: string, value: float) =
        let row =
            { run_id = key.RunId; experiment = key.Experiment; variant = key.Variant; phase = key.Phase
              env = envOfAgent agent; seed = key.Seed; agent = agent; env_step = envStep
              wall_time_s = clockOffset + clock.Elapsed.TotalSeconds; metric = metric; value = value }
        lock gate (fun () -> rows.Add row)


    /// Thread-safe: records why agents failed ("agent i: reason", as the population reports them), for run.json's
    /// `failures` list; the rows hold only the agent_failure and agent_restart markers.
    member _.AddFailures(reasons: string seq) = lock gate (fun () -> failures.AddRange reasons)

    /// Thread-safe: a further field of run.json (e.g. `objective`: the checkpoint a meta-test loaded).
    member _.SetInfo(key: string, value: JsonNode) = lock gate (fun () -> info[key] <- value)

    /// Records a resume in run.json's `resumes` list (the previous run.json's entries, then this one).
    member w.Resumed(point: JsonObject, previous: JsonObject option) =
        let all = JsonArray()
        match previous |> Option.map (fun p -> p["resumes"]) with
        | Some (:? JsonArray as earlier) -> for x in earlier do all.Add(x.DeepClone())
        | _ -> ()
        all.Add point
        w.SetInfo("resumes", all)

    /// Marks the run failed with its cause. Best effort when the disk is full: if the Parquet file cannot be
    /// written, run.json alone is rewritten (in place, as a last resort) so it never says "running" after the
    /// process is gone; the Parquet file keeps its last complete flush.
    member w.Failed(cause: string) =
        lock gate (fun () -> error <- Some cause)
        try w.Flush "failed"
        with _ ->
            let json = lock gate (fun () -> (provenance "failed" (Some DateTimeOffset.Now)).ToJsonString(JsonSerializerOptions(WriteIndented = true)))
            writeAllTextBestEffort runJsonPath json |> ignore

    /// Writes everything recorded so far; `status` is "running", "complete", "interrupted" or "failed".
    member _.Flush(status: string) =
      lock flushGate (fun () ->
        let snapshot, meta =
            lock gate (fun () ->
                let finished = if status = "running" then None else Some DateTimeOffset.Now
                let p = provenance status finished
                rows.ToArray(), p)
        let json = meta.ToJsonString(JsonSerializerOptions(WriteIndented = true))
        let kv = Dictionary<string, string>()
        kv["metagenrl.run"] <- json
        kv["metagenrl.config"] <- configJson
        kv["metagenrl.git_commit"] <- Provenance.gitCommit.Value
        kv["metagenrl.status"] <- status
        match trial with
        | Some (columns, swept) -> writeTrialParquet parquetPath kv swept [ columns, snapshot ]
        | None -> writeParquet parquetPath kv snapshot
        // run.json last: "complete" in run.json is the marker that the Parquet file beside it is final.
        writeAllTextAtomic runJsonPath json)

/// A run id: what ran, and when.
let newRunId (what: string) (seed: int) = sprintf "%s-s%d-%s" what seed (DateTime.UtcNow.ToString "yyyyMMddTHHmmss")

/// Reads run.json of a run folder (None when absent); a damaged file (truncated, not a JSON object) is a
/// UsageError naming it.
let readRunJson (dir: string) =
    let p = Path.Combine(dir, "run.json")
    if not (File.Exists p) then None
    else
        let parsed =
            try JsonNode.Parse(File.ReadAllText p) with
            | :? JsonException as e -> Errors.usageError "%s is damaged (not valid JSON: %s)" p e.Message
            | :? IOException | :? UnauthorizedAccessException as e -> Errors.usageError "%s cannot be read (%s)" p e.Message
        match parsed with
        | :? JsonObject as o -> Some o
        | _ -> Errors.usageError "%s is damaged (not a JSON object)" p

/// True when `dir` holds a run whose run.json says it completed.
let isComplete (dir: string) =
    try
        match readRunJson dir with
        | Some j -> j["status"].GetValue<string>() = "complete"
        | None -> false
    with _ -> false
