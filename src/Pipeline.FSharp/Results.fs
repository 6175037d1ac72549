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

/// Writes <paramref name="text"/> to <paramref name="path"/> via a temp file in the same folder and a rename,
/// so a reader never sees a half-written file.
let writeAllTextAtomic (path: string) (text: string) =
    let tmp = path + ".tmp-" + Guid.NewGuid().ToString("N").Substring(0, 8)
    File.WriteAllText(tmp, text)
    File.Move(tmp, path, true)

/// Writes rows to a Parquet file atomically (temp + rename) with key-value metadata.
let writeParquet (path: string) (metadata: IReadOnlyDictionary<string, string>) (rows: Row seq) =
    let tmp = path + ".tmp-" + Guid.NewGuid().ToString("N").Substring(0, 8)
    try
        let opts = ParquetOptions(CompressionMethod = CompressionMethod.Zstd)
        ParquetSerializer.SerializeAsync(rows, tmp, opts, metadata).GetAwaiter().GetResult() |> ignore
        File.Move(tmp, path, true)
    with _ ->
        (try File.Delete tmp with _ -> ())
        reraise ()

/// Reads rows back (used by reports and tests).
let readParquet (path: string) : Row list =
    let r = ParquetSerializer.DeserializeAsync<Row>(path).GetAwaiter().GetResult()
    List.ofSeq r.Data

/// Collects rows for one run and flushes them to `<dir>/metrics.parquet` (always a complete, valid file)
/// together with `<dir>/run.json`, whose "status" says whether the run finished.
type RunWriter(dir: string, key: RunKey, configJson: string, command: string, envOfAgent: int -> string, initialRows: Row seq) =
    let rows = List<Row>(initialRows)
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
        let versions = JsonObject()
        for (k, v) in Provenance.packageVersions () do versions[k] <- JsonValue.Create v
        o["versions"] <- versions
        o["config"] <- JsonNode.Parse configJson
        o

    do Directory.CreateDirectory dir |> ignore

    /// A single-env run starting from nothing.
    new(dir, key, configJson, command) = RunWriter(dir, key, configJson, command, (fun _ -> key.Env), Seq.empty)

    member _.ParquetPath = parquetPath
    member _.RunJsonPath = runJsonPath

    /// Thread-safe: records one observation stamped with this run's key and the wall time.
    member _.Add(agent: int, envStep: int64, metric: string, value: float) =
        let row =
            { run_id = key.RunId; experiment = key.Experiment; variant = key.Variant; phase = key.Phase
              env = envOfAgent agent; seed = key.Seed; agent = agent; env_step = envStep
              wall_time_s = clockOffset + clock.Elapsed.TotalSeconds; metric = metric; value = value }
        lock gate (fun () -> rows.Add row)


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
        writeParquet parquetPath kv snapshot
        // run.json last: "complete" in run.json is the marker that the Parquet file beside it is final.
        writeAllTextAtomic runJsonPath json)
