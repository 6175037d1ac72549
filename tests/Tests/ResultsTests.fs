module MetaGenRL.Tests.ResultsTests

open System
open System.IO
open Expecto
open DuckDB.NET.Data
open MetaGenRL.Pipeline
open MetaGenRL.Tests.TestUtil

/// Runs a query with DuckDB (an independent Parquet reader) and returns every row as string cells.
let duck (sql: string) : string list list =
    use conn = new DuckDBConnection("DataSource=:memory:")
    conn.Open()
    use cmd = conn.CreateCommand()
    cmd.CommandText <- sql
    use r = cmd.ExecuteReader()
    [ while r.Read() do
        yield [ for i in 0 .. r.FieldCount - 1 -> if r.IsDBNull i then "NULL" else Convert.ToString(r.GetValue i, Globalization.CultureInfo.InvariantCulture) ] ]

let private key : Results.RunKey =
    { RunId = "r1"; Experiment = "exp"; Variant = "td3"; Phase = "train"; Env = "Pendulum-v1"; Seed = 7 }

let private writeSample dir status =
    let w = Results.RunWriter(dir, key, """{"discount_factor":0.99}""", "metagenrl train")
    w.Add(0, 200L, "episode_return", -1234.5)
    w.Add(0, 400L, "episode_return", -987.25)
    w.Add(1, 400L, "critic_loss", 0.125)
    w.Flush status
    w

[<Tests>]
let tests =
    testList "Results" [
        test "tidy schema read back by DuckDB" {
            let dir = tempDir "results"
            try
                let w = writeSample dir "complete"
                let schema = duck (sprintf "DESCRIBE SELECT * FROM read_parquet('%s')" w.ParquetPath)
                let cols = schema |> List.map (fun r -> r.[0], r.[1])
                Expect.equal cols
                    [ "run_id", "VARCHAR"; "experiment", "VARCHAR"; "variant", "VARCHAR"; "phase", "VARCHAR"
                      "env", "VARCHAR"; "seed", "INTEGER"; "agent", "INTEGER"; "env_step", "BIGINT"
                      "wall_time_s", "DOUBLE"; "metric", "VARCHAR"; "value", "DOUBLE" ] "columns and types"
                let rows = duck (sprintf "SELECT run_id, phase, env, seed, agent, env_step, metric, value FROM read_parquet('%s') ORDER BY env_step, agent" w.ParquetPath)
                Expect.equal rows
                    [ [ "r1"; "train"; "Pendulum-v1"; "7"; "0"; "200"; "episode_return"; "-1234.5" ]
                      [ "r1"; "train"; "Pendulum-v1"; "7"; "0"; "400"; "episode_return"; "-987.25" ]
                      [ "r1"; "train"; "Pendulum-v1"; "7"; "1"; "400"; "critic_loss"; "0.125" ] ] "values"
            finally Directory.Delete(dir, true)
        }

        test "provenance in key-value metadata and run.json" {
            let dir = tempDir "results"
            try
                let w = writeSample dir "complete"
                let kv = duck (sprintf "SELECT decode(key), decode(value) FROM parquet_kv_metadata('%s')" w.ParquetPath)
                let find k = kv |> List.tryFind (fun r -> r.[0] = k) |> Option.map (fun r -> r.[1])
                Expect.equal (find "metagenrl.status") (Some "complete") "status in metadata"
                Expect.equal (find "metagenrl.config") (Some """{"discount_factor":0.99}""") "config in metadata"
                Expect.isSome (find "metagenrl.git_commit") "git commit in metadata"
                use doc = Text.Json.JsonDocument.Parse(File.ReadAllText w.RunJsonPath)
                let root = doc.RootElement
                Expect.equal (root.GetProperty("status").GetString()) "complete" "run.json status"
                Expect.equal (root.GetProperty("config").GetProperty("discount_factor").GetDouble()) 0.99 "run.json config"
                Expect.isTrue (root.GetProperty("versions").TryGetProperty("TorchSharp") |> fst) "versions"
                Expect.equal (root.GetProperty("rows").GetInt32()) 3 "row count"
            finally Directory.Delete(dir, true)
        }

        test "why agents failed is kept in run.json, and only when something failed" {
            let dir = tempDir "results"
            try
                let w = writeSample dir "complete"
                Expect.isFalse ((Text.Json.Nodes.JsonNode.Parse(File.ReadAllText w.RunJsonPath)).AsObject().ContainsKey "failures") "no failures, no list"
                w.AddFailures [ "agent 1: non-finite critic_loss = NaN at update 7"; "agent 3: InvertedPendulum-v2 step: boom" ]
                w.Flush "complete"
                let runJson = Text.Json.Nodes.JsonNode.Parse(File.ReadAllText w.RunJsonPath)
                let failures = runJson["failures"].AsArray()
                Expect.equal [ for f in failures -> f.GetValue<string>() ]
                    [ "agent 1: non-finite critic_loss = NaN at update 7"; "agent 3: InvertedPendulum-v2 step: boom" ] "reasons in order"
            finally Directory.Delete(dir, true)
        }

        test "writes are atomic: no temp files remain and a rewrite replaces the file" {
            let dir = tempDir "results"
            try
                let w = writeSample dir "running"
                w.Add(0, 600L, "episode_return", 1.0)
                w.Flush "complete"
                Expect.equal (Directory.GetFiles dir |> Array.map Path.GetFileName |> Array.sort) [| "metrics.parquet"; "run.json" |] "only final files"
                Expect.equal (Results.readParquet w.ParquetPath |> List.length) 4 "rows after rewrite"
                Expect.isTrue (Results.isComplete dir) "complete marker"
            finally Directory.Delete(dir, true)
        }

        test "a running flush is not complete" {
            let dir = tempDir "results"
            try
                writeSample dir "running" |> ignore
                Expect.isFalse (Results.isComplete dir) "running is not complete"
            finally Directory.Delete(dir, true)
        }
    ]
