module MetaGenRL.Tests.ReportTests

open System
open System.IO
open Expecto
open MetaGenRL.Pipeline
open MetaGenRL.Tests.TestUtil
open MetaGenRL.Tests.ResultsTests
open MetaGenRL.Tests.CliTests

let private inv = Globalization.CultureInfo.InvariantCulture
let private A, B = "Pendulum-v1", "MountainCarContinuous-v0"
let private methodMT = "full (Pendulum-v1) [obj_func_second_order_stepsize=0.01]"

/// Writes one trial's metrics.parquet with DuckDB (an independent writer), with the experiment columns and
/// one swept column. rows: (agent, env, env_step, metric, value).
let private writeTrial root trial variant phase (trainEnvs: string option) (seen: bool option) (stepsize: float option) rows =
    let dir = Path.Combine(root, "trials", trial)
    Directory.CreateDirectory dir |> ignore
    let sqlOpt f = function Some v -> f v | None -> "NULL"
    let values =
        rows |> List.map (fun (agent: int, env: string, step: int64, metric: string, value: float) ->
            sprintf "('%s-run', 'exp', '%s', '%s', '%s', 0, %d, %d, 1.5, '%s', %s, '%s', %s, 0, %s, %s)"
                trial variant phase env agent step metric (value.ToString("R", inv)) trial
                (sqlOpt (sprintf "'%s'") trainEnvs) (sqlOpt (fun b -> if b then "true" else "false") seen)
                (sqlOpt (fun (d: float) -> d.ToString("R", inv)) stepsize))
    duck (sprintf """COPY (SELECT run_id, experiment, variant, phase, env, seed::INTEGER AS seed, agent::INTEGER AS agent,
                     env_step::BIGINT AS env_step, wall_time_s::DOUBLE AS wall_time_s, metric, value::DOUBLE AS value,
                     trial_id, train_envs::VARCHAR AS train_envs, meta_seed::INTEGER AS meta_seed, seen::BOOLEAN AS seen,
                     ss::DOUBLE AS obj_func_second_order_stepsize
                   FROM (VALUES %s) t(run_id, experiment, variant, phase, env, seed, agent, env_step, wall_time_s, metric,
                                      value, trial_id, train_envs, meta_seed, seen, ss))
                   TO '%s' (FORMAT parquet)""" (String.Join(", ", values)) (Path.Combine(dir, "metrics.parquet")))
    |> ignore

let private episodes agent env (eps: (int64 * float) list) = eps |> List.map (fun (s, v) -> agent, env, s, "episode_return", v)

/// Two envs; td3 and random-objective baselines; a meta-test method seen on A and unseen on B; one meta-train
/// trial with two agents and diagnostics. Final returns (last 10 % of 1000 steps, i.e. step ≥ 900) by hand:
///   td3 A: mean(-300,-100) = -200 and -400        → -300.00 ± 141.42 (n = 2)
///   random-objective A: -1300                      → -1300.00 ± n/a (n = 1)
///   td3 B: 10, 30 → 20.00 ± 14.14;  random-objective B: -10
///   meta-test A (seen): -300, mean(-100,100) = 0  → -150.00 ± 212.13 (n = 2) (seen)
///   meta-test B (unseen): 25, 35                   → 30.00 ± 7.07 (n = 2) (unseen)
let private syntheticExperiment () =
    let root = tempDir "report"
    let baseline trial variant rows = writeTrial root trial variant "train" None None None rows
    baseline "td3-A-0" "td3" (episodes 0 A [ 500L, -900.0; 950L, -300.0; 1000L, -100.0 ])
    baseline "td3-A-1" "td3" (episodes 0 A [ 500L, -800.0; 1000L, -400.0 ])
    baseline "ro-A-0" "random-objective" (episodes 0 A [ 500L, -1500.0; 1000L, -1300.0 ])
    baseline "td3-B-0" "td3" (episodes 0 B [ 400L, 0.0; 1000L, 10.0 ])
    baseline "td3-B-1" "td3" (episodes 0 B [ 400L, 5.0; 1000L, 30.0 ])
    baseline "ro-B-0" "random-objective" (episodes 0 B [ 1000L, -10.0 ])
    let metaTest trial env seen rows = writeTrial root trial "full" "meta-test" (Some A) (Some seen) (Some 0.01) rows
    metaTest "mt-A-0" A true (episodes 0 A [ 500L, -700.0; 1000L, -300.0 ])
    metaTest "mt-A-1" A true (episodes 0 A [ 500L, -600.0; 950L, -100.0; 1000L, 100.0 ])
    metaTest "mt-B-0" B false (episodes 0 B [ 1000L, 25.0 ])
    metaTest "mt-B-1" B false (episodes 0 B [ 1000L, 35.0 ])
    // Diagnostics: objective_loss finals 0.5 (agent 0) and 0.3 (agent 1) → 0.40; value gain 0.2, 0.4 → 0.30.
    writeTrial root "meta-train-0" "full" "meta-train" (Some A) None (Some 0.01)
        (episodes 0 A [ 500L, -900.0; 1000L, -500.0 ] @ episodes 1 A [ 600L, -800.0; 1000L, -700.0 ]
         @ [ 0, A, 500L, "objective_loss", 1.0; 0, A, 1000L, "objective_loss", 0.5; 1, A, 1000L, "objective_loss", 0.3
             0, A, 1000L, "policy_value_gain", 0.2; 1, A, 1000L, "policy_value_gain", 0.4
             0, A, 1000L, "objective_critic_correlation", 0.5; 1, A, 1000L, "objective_critic_correlation", 0.5 ])
    root

let private usageMessage (f: unit -> unit) =
    try f (); failtest "expected a UsageError" with Errors.UsageError msg -> msg

/// Payloads of a TFRecord file (TensorBoard event file): [u64 length][u32 crc][payload][u32 crc] …
let private tfRecords (path: string) =
    let bytes = File.ReadAllBytes path
    let rec go i acc =
        if i >= bytes.Length then List.rev acc
        else
            let n = int (BitConverter.ToUInt64(bytes, i))
            go (i + 12 + n + 4) (bytes.[i + 12 .. i + 12 + n - 1] :: acc)
    go 0 []

let private isPng (path: string) =
    let b = File.ReadAllBytes path
    b.Length > 10_000 && b.[0..7] = [| 0x89uy; 0x50uy; 0x4Euy; 0x47uy; 0x0Duy; 0x0Auy; 0x1Auy; 0x0Auy |]

[<Tests>]
let tests =
    testList "Report" [
        test "final-return window: mean of episodes at step ≥ 0.9 · max, else the last episode" {
            close 1e-12 (ReportData.finalMean 1000L [| 500L, 1.0; 900L, 3.0; 1000L, 5.0 |]) 4.0 "900 is inside"
            close 1e-12 (ReportData.finalMean 1000L [| 100L, 1.0; 300L, 7.0 |]) 7.0 "none inside: last episode"
            Expect.isTrue (Double.IsNaN(ReportData.finalMean 1000L [||])) "no episode"
        }

        test "curves on a grid: bin means carried forward, nothing before the first episode" {
            let ends = ReportData.grid 4 100.0
            Expect.equal ends [| 25.0; 50.0; 75.0; 100.0 |] "bin ends"
            let y = ReportData.onGrid ends [| 30L, 2.0; 40L, 4.0; 100L, 10.0 |]
            Expect.isTrue (Double.IsNaN y.[0]) "before the first episode"
            Expect.equal y.[1..] [| 3.0; 3.0; 10.0 |] "mean, carried, last"
        }

        test "report of a synthetic experiment: tables, figures, html, tensorboard" {
            let root = syntheticExperiment ()
            try
                let r = Report.write root { Report.ReportOptions.Default with TensorBoard = true }
                let md = File.ReadAllText(Path.Combine(root, "report", "summary.md"))
                Expect.equal md r.Summary "summary.md is the returned Markdown"
                for cell in [ "-300.00 ± 141.42 (n = 2)"; "-1300.00 ± n/a (n = 1)"; "20.00 ± 14.14 (n = 2)"
                              "-150.00 ± 212.13 (n = 2) (seen)"; "30.00 ± 7.07 (n = 2) (unseen)" ] do
                    Expect.stringContains md cell "table 1 cell"
                Expect.stringContains md (sprintf "| %s | %s | 30.00 ± 7.07 (n = 2) (unseen) | -150.00 ± 212.13 (n = 2) (seen) |" A methodMT) "meta-test row grouped by train envs; env columns sorted"
                // P(> td3) on A: X = [-300, 0], Y = [-200, -400]: 0 + 1 + 1 + 1 = 3 of 4 pairs.
                Expect.stringContains md (sprintf "| %s | %s | 2 | -150.00 |" A methodMT) "IQM of two runs is their mean"
                Expect.isTrue (md.Split('\n') |> Array.exists (fun l -> l.StartsWith(sprintf "| %s | %s | 2 |" A methodMT) && l.EndsWith "| 0.75 |")) "P on A"
                // Normalised (r, t): A (-1300, -300) → 1.0, 1.3; B (-10, 20) → 7/6, 1.5; IQM of 4 = mean(7/6, 1.3) = 1.23;
                // aggregate P = mean(3/4 on A, 3/4 on B: X = [25, 35], Y = [10, 30]).
                Expect.stringContains md (sprintf "| %s | 2 | 1.23 |" methodMT) "aggregate IQM"
                Expect.isTrue (md.Split('\n') |> Array.exists (fun l -> l.StartsWith(sprintf "| %s | 2 | 1.23 |" methodMT) && l.Contains "| 0.75 | [")) "aggregate P"
                Expect.stringContains md (sprintf "- %s (n = 1): objective_loss 0.40; policy_value_gain 0.30; objective_critic_correlation 0.50" methodMT) "diagnostics"
                Expect.isTrue (md.IndexOf("| baseline | td3 |") > md.IndexOf(methodMT)) "baselines last"
                let out = Path.Combine(root, "report")
                for png in [ "curves-Pendulum-v1.png"; "curves-MountainCarContinuous-v0.png"; "meta-train-Pendulum-v1.png"; "diagnostics.png" ] do
                    Expect.isTrue (isPng (Path.Combine(out, png))) (png + " is a non-trivial PNG")
                    Expect.contains r.Files (Path.Combine(out, png)) (png + " listed")
                Expect.isFalse (File.Exists(Path.Combine(out, "meta-train-MountainCarContinuous-v0.png"))) "no meta-train returns on B"
                let html = File.ReadAllText(Path.Combine(out, "report.html"))
                for s in [ A; B; "objective_loss"; "shaded: ± 1 std across runs" ] do Expect.stringContains html s "html"
                // self-contained: plotly.js is in the page, nothing is loaded from the network
                Expect.stringContains html "* plotly.js v" "plotly.js is embedded"
                Expect.isFalse (Text.RegularExpressions.Regex.IsMatch(html, @"<script[^>]*\bsrc\s*=")) "no <script src=…>: the page works offline"
                Expect.stringContains md "report.html holds plotly.js itself" "summary.md says the page works offline"
                Expect.isEmpty (Directory.GetFiles(out, "*.tmp-*")) "no temp files left"
                // TensorBoard: one folder per run and agent; every row is one event after the file-version event.
                // agent 0: 2 returns + 2 objective_loss + value gain + correlation; agent 1: 2 returns + 3 diagnostics.
                for agent, rows in [ 0, 6; 1, 5 ] do
                    let events = Directory.GetFiles(Path.Combine(out, "tensorboard", "meta-train-0", sprintf "agent%d" agent))
                    Expect.equal events.Length 1 "one event file"
                    let records = tfRecords events.[0]
                    Expect.equal records.Length (1 + rows) "file-version event + one event per row"
                    let text = records |> List.map Text.Encoding.ASCII.GetString |> String.concat ""
                    for tag in [ "episode_return"; "objective_loss"; "policy_value_gain" ] do Expect.stringContains text tag "tag"
            finally Directory.Delete(root, true)
        }

        test "a run folder (metrics.parquet + run.json from train) is a valid input" {
            let dir = tempDir "report-run"
            try
                let w = Results.RunWriter(dir, { RunId = "r"; Experiment = "e"; Variant = "td3"; Phase = "train"; Env = A; Seed = 0 }, "{}", "x")
                w.Add(0, 100L, "episode_return", -5.0)
                w.Add(0, 200L, "episode_return", -3.0)
                w.Flush "complete"
                let r = Report.write dir { Report.ReportOptions.Default with Out = Some(Path.Combine(dir, "elsewhere")) }
                Expect.stringContains r.Summary "-3.00 ± n/a (n = 1)" "final return of the one run"
                Expect.isTrue (isPng (Path.Combine(dir, "elsewhere", "curves-Pendulum-v1.png"))) "curve"
                // Parquet under DIR/report is never read back.
                Directory.CreateDirectory(Path.Combine(dir, "report", "x")) |> ignore
                File.Copy(w.ParquetPath, Path.Combine(dir, "report", "x", "metrics.parquet"))
                Expect.stringContains (Report.write dir Report.ReportOptions.Default).Summary "1 runs from 1 Parquet file(s)" "report/ skipped"
            finally Directory.Delete(dir, true)
        }

        test "an experiment folder with results.parquet is read from that file alone; experiment.json names it" {
            let root = syntheticExperiment ()
            try
                let trials = Path.Combine(root, "trials", "td3-*", "metrics.parquet")
                duck (sprintf "COPY (SELECT * FROM read_parquet('%s')) TO '%s' (FORMAT parquet)" trials (Path.Combine(root, "results.parquet"))) |> ignore
                File.WriteAllText(Path.Combine(root, "experiment.json"), """{"name": "ablation-small", "trials": []}""")
                let r = Report.write root Report.ReportOptions.Default
                Expect.stringContains r.Summary "# Report: ablation-small" "name from experiment.json"
                Expect.stringContains r.Summary "4 runs from 1 Parquet file(s)" "only the merged file"
                Expect.isFalse (r.Summary.Contains "(unseen)") "trial files not read"
            finally Directory.Delete(root, true)
        }

        test "bad input: missing folder, no Parquet, corrupt Parquet" {
            let missing = Path.Combine(Path.GetTempPath(), "no-such-report-dir-" + Guid.NewGuid().ToString("N"))
            Expect.stringContains (usageMessage (fun () -> Report.write missing Report.ReportOptions.Default |> ignore)) missing "names the folder"
            let empty = tempDir "report-empty"
            try
                Expect.stringContains (usageMessage (fun () -> Report.write empty Report.ReportOptions.Default |> ignore)) empty "names the folder"
                let bad = Path.Combine(empty, "metrics.parquet")
                File.WriteAllText(bad, "not parquet")
                Expect.stringContains (usageMessage (fun () -> Report.write empty Report.ReportOptions.Default |> ignore)) bad "names the file"
            finally Directory.Delete(empty, true)
        }

        test "CLI: report exits 0 and prints the summary; a missing folder exits 2" {
            let root = syntheticExperiment ()
            try
                let rc, out, err = cli [ "report"; root ]
                Expect.equal rc 0 (sprintf "exit code (stderr: %s)" err)
                Expect.stringContains out "(unseen)" "summary printed"
                Expect.stringContains out "summary.md" "paths printed"
            finally Directory.Delete(root, true)
            expectError [ "report"; "/no/such/folder" ] [ "/no/such/folder" ]
        }
    ]
