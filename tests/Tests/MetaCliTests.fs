module MetaGenRL.Tests.MetaCliTests

open System
open System.Diagnostics
open System.IO
open Expecto
open MetaGenRL.Core.Objective
open MetaGenRL.Core.Checkpoints
open MetaGenRL.Pipeline
open MetaGenRL.Tests.TestUtil
open MetaGenRL.Tests.CliTests

/// A population small enough for a test: 2 agents, tiny networks, short exploration.
let private tiny =
    [ "--set"; "policy_units=16"; "--set"; "critic_units=16"; "--set"; "buffer_sample_size=4"
      "--set"; "policy_random_exploration_steps=100"; "--set"; "obj_func_anneal_steps=200"; "--loss-log-every"; "20" ]

let private metaTrainArgs (out: string) (extra: string list) =
    // steps=1: one round per training iteration, so the budget is checked after every round.
    [ "meta-train"; "--envs"; "Pendulum-v1,InvertedPendulum-v2"; "--agents"; "2"; "--steps"; "600"; "--seed"; "5"
      "--out"; out; "--checkpoint-every"; "200"; "--set"; "steps=1" ] @ tiny @ extra

/// Rows without what legitimately differs between two runs (ids, wall time, throughput).
let private comparable (dir: string) =
    Results.readParquet (Path.Combine(dir, "metrics.parquet"))
    |> List.filter (fun r -> r.metric <> "sps")
    |> List.map (fun r -> r.phase, r.env, r.seed, r.agent, r.env_step, r.metric, r.value)

let private finalAlpha (dir: string) =
    let store = CheckpointStore dir
    let parts = (store.Load(store.Latest().Value)).Parts
    ObjectiveAdam.Import(parts["server"]).Alpha

/// Flips one byte in the middle of a checkpoint's first agent part (its manifest still lists the old hash).
let private damage (store: CheckpointStore) (index: int) =
    let part = Path.Combine(store.PathOf index, "agent__0")
    let bytes = File.ReadAllBytes part
    bytes[bytes.Length / 2] <- bytes[bytes.Length / 2] ^^^ 0xFFuy
    File.WriteAllBytes(part, bytes)

let private runJson (dir: string) = Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "run.json")))

[<Tests>]
let tests =
    testSequenced <| testList "MetaCLI" [
        test "meta-train rejects bad input by name" {
            expectError [ "meta-train"; "--envs"; "Pendulum-v1,Nope-v0" ] [ "Nope-v0" ]
            expectError [ "meta-train"; "--agents"; "1" ] [ "--agents" ]
            expectError [ "meta-train"; "--variant"; "no-such" ] [ "obj_func_variant"; "no-such" ]
            expectError [ "meta-train"; "--mode"; "later" ] [ "later" ]
            expectError [ "meta-test"; "--objective"; "/nonexistent/run" ] [ "/nonexistent/run" ]
        }

        test "meta-train survives kill -9, resumes to the same numbers, and meta-test runs on an unseen env" {
            let whole = tempDir "meta-whole"
            let killed = tempDir "meta-killed"
            let tested = tempDir "meta-test"
            try
                let rc, out, err = cli (metaTrainArgs whole [])
                Expect.equal rc 0 (sprintf "uninterrupted run; stdout %s stderr %s" out err)
                Expect.isTrue (Results.isComplete whole) "complete"
                let rows = Results.readParquet (Path.Combine(whole, "metrics.parquet"))
                for m in [ "episode_return"; "objective_loss"; "policy_value_gain"; "objective_critic_correlation"; "checkpoint" ] do
                    Expect.isTrue (rows |> List.exists (fun r -> r.metric = m)) (sprintf "rows include %s" m)
                Expect.equal (rows |> List.map (fun r -> r.agent) |> List.distinct |> List.sort) [ 0; 1 ] "both agents"
                Expect.isTrue (rows |> List.forall (fun r -> r.phase = "meta-train")) "phase"
                Expect.isTrue (rows |> List.forall (fun r -> r.env = (if r.agent = 0 then "Pendulum-v1" else "InvertedPendulum-v2"))) "envs round-robin"
                // the budget is honoured exactly (collection stops at it, mid-episode if need be)
                Expect.stringContains out "step 600," "the run ends at its 600-step budget"
                Expect.isLessThanOrEqual (rows |> List.map (fun r -> r.env_step) |> List.max) 600L "no row beyond the budget"
                // run.json records the config that ran
                let cfgOf (d: string) = Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(d, "run.json")))["config"]
                let cfg = cfgOf whole
                Expect.equal (cfg["agent_count"].GetValue<int>()) 2 "agent_count as run"
                Expect.equal (cfg["timesteps_total"].GetValue<int64>()) 600L "timesteps_total as run"
                Expect.equal (cfg["env_name"].ToJsonString()) "[\"Pendulum-v1\",\"InvertedPendulum-v2\"]" "env_name as run"
                Expect.equal (cfg["checkpoint_every"].GetValue<int64>()) 200L "checkpoint_every as run"

                // Same run, killed with SIGKILL once its second checkpoint is complete; that newest checkpoint is then
                // damaged, so the resume must fall back to the first one, say so, and still give the same numbers.
                use p = startCli (metaTrainArgs killed [])
                let store = CheckpointStore killed
                let clock = Stopwatch.StartNew()
                while not p.HasExited && store.Latest().GetValueOrDefault(-1) < 1 && clock.Elapsed.TotalSeconds < 240.0 do
                    Threading.Thread.Sleep 50
                Expect.isFalse p.HasExited "the run was still going when its second checkpoint appeared"
                p.Kill()   // SIGKILL
                p.WaitForExit()
                Expect.isFalse (Results.isComplete killed) "a killed run is not complete"
                let newest = store.Latest().Value
                damage store newest
                Expect.isNotNull (store.Validate newest) "the newest checkpoint no longer verifies"
                // a resume must continue the same run: another seed or another setting is refused by name
                let withSeed (seed: string) = metaTrainArgs killed [ "--resume" ] |> List.map (fun a -> if a = "5" then seed else a)
                expectError (withSeed "6") [ "--resume"; "seed 5"; "seed 6" ]
                expectError (metaTrainArgs killed [ "--resume"; "--set"; "policy_learning_rate=1e30" ]) [ "policy_learning_rate"; "was 0.001" ]
                let rc2, out2, err2 = cli (metaTrainArgs killed [ "--resume" ])
                Expect.equal rc2 0 (sprintf "resumed run; stdout %s stderr %s" out2 err2)
                Expect.stringContains out2 (sprintf "skipping checkpoint %d: " newest) "the damaged checkpoint is named"
                Expect.stringContains out2 "does not match its SHA-256" "with why it was skipped"
                Expect.stringContains out2 (sprintf "resuming from checkpoint %d " (newest - 1)) "it resumed from the one before"
                let resumes = (runJson killed).["resumes"].AsArray()
                Expect.equal resumes.Count 1 "run.json records the resume"
                Expect.equal (resumes.[0].["checkpoint"].GetValue<int>()) (newest - 1) "…its checkpoint"
                Expect.equal (resumes.[0].["sha256"].GetValue<string>().Length) 64 "…and that checkpoint's manifest hash"
                Expect.equal (resumes.[0].["skipped"].[0].["checkpoint"].GetValue<int>()) newest "…and the skipped one"
                Expect.equal (finalAlpha killed) (finalAlpha whole) "same final objective"
                Expect.equal (comparable killed) (comparable whole) "same metric rows"

                // meta-test loads the newest checkpoint that verifies and records which one, and a named damaged
                // checkpoint or a truncated run.json is a one-line error
                let wholeStore = CheckpointStore whole
                let last = wholeStore.Latest().Value
                damage wholeStore last
                let rc4, _, err4 = cli [ "meta-test"; "--objective"; whole; "--checkpoint"; string last; "--env"; "Pendulum-v1"; "--steps"; "10"; "--out"; tested ]
                Expect.equal rc4 2 "a named damaged checkpoint is refused"
                Expect.stringContains err4 (sprintf "--checkpoint %d: damaged" last) "named"
                Expect.equal (err4.Trim().Split('\n').Length) 1 (sprintf "one line: %s" err4)
                let truncated = tempDir "meta-truncated"
                try
                    File.WriteAllText(Path.Combine(truncated, "run.json"), (File.ReadAllText(Path.Combine(whole, "run.json"))).Substring(0, 100))
                    let rc5, _, err5 = cli [ "meta-test"; "--objective"; truncated; "--env"; "Pendulum-v1"; "--steps"; "10"; "--out"; tested ]
                    Expect.equal rc5 2 "a truncated run.json is refused"
                    Expect.stringContains err5 (Path.Combine(truncated, "run.json") + " is damaged") "named"
                    Expect.equal (err5.Trim().Split('\n').Length) 1 (sprintf "one line: %s" err5)
                finally Directory.Delete(truncated, true)

                // The frozen objective trains a fresh agent on an env it never saw.
                let rc3, out3, err3 =
                    cli [ "meta-test"; "--objective"; whole; "--env"; "Reacher-v2"; "--steps"; "300"; "--seed"; "1"
                          "--out"; tested; "--force"; "--scale"; "micro"; "--set"; "policy_random_exploration_steps=60" ]
                Expect.equal rc3 0 (sprintf "meta-test; stdout %s stderr %s" out3 err3)
                Expect.stringContains out3 (sprintf "skipping checkpoint %d of %s" last whole) "the damaged checkpoint is named"
                let objective = (runJson tested).["objective"]
                Expect.equal (objective.["checkpoint"].GetValue<int>()) (last - 1) "run.json: the checkpoint loaded"
                Expect.equal (objective.["sha256"].GetValue<string>()) (wholeStore.ManifestHash(last - 1)) "run.json: its hash"
                Expect.isTrue (objective.["meta_train_complete"].GetValue<bool>()) "run.json: the meta-train run was complete"
                Expect.equal (objective.["skipped"].[0].["checkpoint"].GetValue<int>()) last "run.json: the skipped checkpoint"
                let testRows = Results.readParquet (Path.Combine(tested, "metrics.parquet"))
                Expect.isTrue (testRows |> List.exists (fun r -> r.metric = "episode_return")) "episodes"
                Expect.isTrue (testRows |> List.forall (fun r -> r.phase = "meta-test" && r.env = "Reacher-v2")) "keys"
                let testCfg = cfgOf tested
                Expect.equal (testCfg["env_name"].ToJsonString()) "[\"Reacher-v2\"]" "meta-test records its own env, not the meta-train envs"
                Expect.equal (testCfg["timesteps_total"].GetValue<int64>()) 300L "meta-test records its own budget"
                Expect.equal (testCfg["agent_count"].GetValue<int>()) 1 "meta-test records its own agent count"
                Expect.equal (testCfg["obj_func_update_delay"].GetValue<int>()) -1 "the objective is frozen"
                Expect.equal (testCfg["obj_func_anneal_steps"].GetValue<int64>()) 0L "no anneal at meta-test"
                Expect.equal (testCfg["policy_random_exploration_steps"].GetValue<int64>()) 60L "the override"
                // the fresh agent's settings come from the meta-test preset, not from the meta-train run (steps=1, T 20)
                Expect.equal (testCfg["steps"].GetValue<int>()) 2 "steps from the micro preset"
                Expect.equal (testCfg["recurrent_time_steps"].GetValue<int>()) 10 "recurrent_time_steps from the micro preset"
                let trainedCfg = cfgOf whole
                let trainedT = trainedCfg["recurrent_time_steps"].GetValue<int>()
                Expect.equal trainedT 20 "(the meta-train run used 20)"
            finally
                for d in [ whole; killed; tested ] do (try Directory.Delete(d, true) with _ -> ())
        }
    ]
