module MetaGenRL.Tests.ExperimentTests

open System
open System.IO
open System.Text.Json.Nodes
open Expecto
open MetaGenRL.Pipeline
open MetaGenRL.Pipeline.Experiment
open MetaGenRL.Tests.TestUtil
open MetaGenRL.Tests.ResultsTests

/// UsageError carries its message in Data0; match on it.
let expectUsage (what: string) (text: string) (f: unit -> unit) =
    try
        f ()
        failtestf "%s: expected a usage error containing '%s', nothing was thrown" what text
    with Errors.UsageError msg ->
        if not (msg.Contains text) then failtestf "%s: expected a usage error containing '%s', got '%s'" what text msg

let private grid =
    { Experiment.create "grid" with
        MetaTrain = [ [ "Pendulum-v1"; "MountainCarContinuous-v0" ]; [ "Pendulum-v1"; "Reacher-v2" ] ]
        MetaTest = [ "Pendulum-v1"; "Hopper-v2" ]
        MetaTrainSeeds = [ 0; 1 ]
        MetaTestSeeds = [ 0; 1; 2 ]
        BaselineSeeds = [ 3; 4 ]
        Variants = [ objective "full"; variant "fixed" [ "paper_quirks", "false" ] ]
        Sweep = [ axis "obj_func_second_order_stepsize" [ 0.001; 0.01 ]; axis "agent_count" [ 2; 4 ] ]
        Baselines = [ "td3"; "reinforce-offpolicy" ]
        Scale = Tiny }

/// A tiny experiment that runs in seconds: one variant on Pendulum, one baseline.
let private micro name =
    { Experiment.create name with
        MetaTrain = [ [ "Pendulum-v1"; "Pendulum-v1" ] ]
        MetaTest = [ "Pendulum-v1"; "InvertedPendulum-v2" ]
        Variants = [ objective "full" ]
        Baselines = [ "td3" ]
        Sweep = [ axis "obj_func_second_order_stepsize" [ 0.001 ] ]
        Scale = Micro
        MetaTrainSteps = Some 200L
        MetaTestSteps = Some 200L }

/// Runs an experiment script with dotnet fsi as a user would; returns (exit code, stdout + stderr).
let fsiScript (script: string) (args: string list) =
    let psi = Diagnostics.ProcessStartInfo("dotnet", RedirectStandardOutput = true, RedirectStandardError = true,
                                           UseShellExecute = false, WorkingDirectory = repoRoot)
    for a in [ "fsi"; Path.Combine(repoRoot, "experiments", script); "--" ] @ args do psi.ArgumentList.Add a
    use p = Diagnostics.Process.Start psi
    let out = p.StandardOutput.ReadToEndAsync()
    let err = p.StandardError.ReadToEndAsync()
    if not (p.WaitForExit 600_000) then (p.Kill true; failtestf "%s timed out" script)
    p.ExitCode, out.Result + err.Result

let statusOf (dir: string) = (Results.readRunJson dir).Value["status"].GetValue<string>()

[<Tests>]
let dslTests =
    testList "Experiment DSL" [
        test "expansion: counts, seen flags, dependencies, overrides and agents" {
            let trials = expand grid
            let count p = trials |> List.filter (fun t -> t.Phase = p) |> List.length
            // 4 sweep points × 2 variants × 2 sets × 2 seeds.
            Expect.equal (count MetaTrainPhase) 32 "meta-train trials"
            // each meta-train trial × 2 test envs × 3 test seeds
            Expect.equal (count MetaTestPhase) 192 "meta-test trials"
            // the axes are objective/population keys: baselines do not vary along them; 2 algos × 2 envs × 2 seeds
            Expect.equal (count BaselinePhase) 8 "baseline trials"
            Expect.equal (trials |> List.map (fun t -> t.Id) |> List.distinct |> List.length) trials.Length "unique ids"
            let ids = trials |> List.map (fun t -> t.Id) |> Set.ofList
            for t in trials do
                match t.DependsOn with
                | Some d -> Expect.isTrue (ids.Contains d) (sprintf "%s depends on an existing trial" t.Id)
                | None -> Expect.notEqual t.Phase MetaTestPhase "meta-test trials depend on a meta-train trial"
            let test1 =
                trials |> List.find (fun t ->
                    t.Phase = MetaTestPhase && t.Envs = [ "Hopper-v2" ] && t.Variant = "fixed" && t.Seed = 2
                    && t.TrainEnvs = Some [ "Pendulum-v1"; "Reacher-v2" ] && t.MetaSeed = Some 1
                    && t.Swept = [ "obj_func_second_order_stepsize", "0.01"; "agent_count", "4" ])
            Expect.equal test1.Seen (Some false) "Hopper is unseen"
            Expect.equal test1.Agents 1 "one fresh agent per meta-test"
            Expect.equal test1.Steps (preset Tiny).MetaTestSteps "the scale's budget"
            let source = trials |> List.find (fun t -> Some t.Id = test1.DependsOn)
            Expect.equal source.Agents 4 "agent_count axis sets the population"
            Expect.equal source.Envs [ "Pendulum-v1"; "Reacher-v2" ] "source set"
            // scale first, then variant, then sweep point: later keys win
            Expect.equal (List.last source.Overrides) ("agent_count", "4") "sweep point last"
            Expect.isTrue (List.contains ("paper_quirks", "false") source.Overrides) "variant diff applied"
            let cfg = trialConfig source
            Expect.equal cfg.PaperQuirks false "variant in the config"
            Expect.equal cfg.ObjFuncSecondOrderStepsize 0.01 "sweep value in the config"
            Expect.equal cfg.PolicyUnits 32 "tiny preset"
            Expect.equal cfg.AgentCount 4 "agent count"
            Expect.equal cfg.TimestepsTotal (preset Tiny).MetaTrainSteps "budget"
            let seenTest = trials |> List.find (fun t -> t.Phase = MetaTestPhase && t.Envs = [ "Pendulum-v1" ])
            Expect.equal seenTest.Seen (Some true) "Pendulum is seen"
        }

        test "TestSet reaches the meta-test and baseline trials only, after Set" {
            let e = { grid with Set = [ "env_params", "train" ]; TestSet = [ "env_params", "held-out" ] }
            for t in expand e do
                let expected = if t.Phase = MetaTrainPhase then "train" else "held-out"
                Expect.equal (trialConfig t).EnvParams expected (sprintf "%s: env_params" t.Id)
            expectUsage "a bad key is named by its field" "TestSet"
                (fun () -> validate { grid with TestSet = [ "env_parms", "held-out" ] })
        }

        test "baselines follow axes that are not objective or population keys" {
            let e = { grid with Sweep = [ axis "critic_learning_rate" [ 0.001; 0.0003 ]; axis "agent_count" [ 2; 4 ] ] }
            let baselines = expand e |> List.filter (fun t -> t.Phase = BaselinePhase)
            Expect.equal baselines.Length 16 "2 learning rates × 2 algos × 2 envs × 2 seeds"
            Expect.isTrue (baselines |> List.forall (fun t -> t.Swept.Length = 1 && fst t.Swept.Head = "critic_learning_rate")) "only the critic axis"
        }

        test "AgentsPerEnv scales populations with the set size; AtScale adjusts at its scale only" {
            let e =
                { grid with
                    Sweep = []; AgentsPerEnv = Some 10; MetaTrain = [ [ "Pendulum-v1"; "Hopper-v2" ]; [ "Pendulum-v1"; "Hopper-v2"; "Ant-v2"; "Walker2d-v2" ] ]
                    AtScale = [ Paper, fun x -> { x with MetaTrainSeeds = [ 0 .. 5 ] } ] }
            let agents = expand e |> List.filter (fun t -> t.Phase = MetaTrainPhase) |> List.map (fun t -> t.Agents) |> List.distinct
            Expect.equal agents [ 20; 40 ] "10 per env"
            Expect.equal (atScale e).MetaTrainSeeds [ 0; 1 ] "tiny: unchanged"
            Expect.equal (atScale { e with Scale = Paper }).MetaTrainSeeds [ 0 .. 5 ] "paper: adjusted"
        }

        test "the config id is stable and follows the declaration" {
            let a = configId grid (expand grid)
            Expect.equal (configId grid (expand grid)) a "same declaration, same id"
            Expect.stringStarts a "tiny-" "scale prefix"
            let other = { grid with MetaTestSeeds = [ 0; 1 ] }
            Expect.notEqual (configId other (expand other)) a "a change gives another id"
        }

        test "validation names the field and the value" {
            let v e = fun () -> validate e
            expectUsage "unknown test env" "MetaTest: unknown env id 'Hoper-v2'" (v { grid with MetaTest = [ "Hoper-v2" ] })
            expectUsage "unknown train env" "MetaTrain[1]: unknown env id 'Nope'" (v { grid with MetaTrain = [ [ "Pendulum-v1" ]; [ "Nope" ] ] })
            expectUsage "unknown variant value" "Variants[bad].Set: obj_func_variant=no-such" (v { grid with Variants = [ variant "bad" [ "obj_func_variant", "no-such" ] ] })
            expectUsage "unknown key" "Set: polcy_units=3" (v { grid with Set = [ "polcy_units", "3" ] })
            expectUsage "reserved key" "key 'env_name' is set by the experiment's MetaTrain/MetaTest fields" (v { grid with Set = [ "env_name", "Hopper-v2" ] })
            expectUsage "negative budget" "MetaTestSteps: -5 env steps" (v { grid with MetaTestSteps = Some -5L })
            expectUsage "zero budget" "MetaTrainSteps: 0 env steps" (v { grid with MetaTrainSteps = Some 0L })
            expectUsage "unknown baseline" "Baselines: unknown algorithm 'a2c'" (v { grid with Baselines = [ "a2c" ] })
            expectUsage "repeated seeds" "MetaTrainSeeds: seeds repeat" (v { grid with MetaTrainSeeds = [ 1; 1 ] })
            expectUsage "negative seed" "BaselineSeeds: seed -1 is negative" (v { grid with BaselineSeeds = [ -1 ] })
            expectUsage "empty axis" "Sweep[critic_units]: no values" (v { grid with Sweep = [ { Key = "critic_units"; Values = [] } ] })
            expectUsage "bad axis value" "Sweep[critic_units]: critic_units=abc" (v { grid with Sweep = [ axis "critic_units" [ "abc" ] ] })
            expectUsage "one agent" "Agents: 1; meta-training needs at least 2 agents" (v { grid with Agents = Some 1 })
            expectUsage "bad name" "Name 'a/b'" (v { grid with Name = "a/b" })
            expectUsage "nothing to run" "nothing to run" (v { grid with Variants = []; Baselines = [] })
            expectUsage "missing objective folder" "Objectives: '/nonexistent/x' is not a folder" (v { grid with Objectives = [ "/nonexistent/x" ] })
            expectUsage "unknown scale" "--scale 'huge': unknown scale; valid: micro, tiny, small, paper" (fun () -> Scale.parse "huge" |> ignore)
            validate grid
        }
    ]

[<Tests>]
let runTests =
    testSequenced <| testList "Experiment runs" [
        test "a dry run prints the grid and writes nothing" {
            let root = tempDir "dry"
            try
                let out = Path.Combine(root, "exp")
                let code = Script.main (micro "dry") [| "dry.fsx"; "--dry-run"; "--out"; out |]
                Expect.equal code 0 "exit code"
                Expect.isFalse (Directory.Exists out) "no folder"
                Expect.isEmpty (Directory.GetFileSystemEntries root) "nothing written"
            finally Directory.Delete(root, true)
        }

        test "bad script input exits 2 and leaves nothing looking complete" {
            let root = tempDir "bad"
            try
                let out = Path.Combine(root, "exp")
                Expect.equal (Script.main (micro "bad") [| "x.fsx"; "--scale"; "huge"; "--out"; out |]) 2 "unknown scale"
                Expect.equal (Script.main (micro "bad") [| "x.fsx"; "--meta-test-steps"; "-5"; "--out"; out |]) 2 "negative budget"
                Expect.equal (Script.main (micro "bad") [| "x.fsx"; "--set"; "polcy_units=3"; "--out"; out |]) 2 "unknown key"
                Expect.equal (Script.main (micro "bad") [| "x.fsx"; "--no-such-flag" |]) 2 "unknown flag"
                Expect.equal (Script.main (micro "bad") [| "x.fsx"; "--mode"; "sometimes"; "--out"; out |]) 2 "unknown mode"
                Expect.isFalse (Directory.Exists out) "nothing written"
                // an unreadable results folder: a damaged experiment.json
                Directory.CreateDirectory out |> ignore
                File.WriteAllText(Path.Combine(out, "experiment.json"), "{ not json")
                Expect.equal (Script.main (micro "bad") [| "x.fsx"; "--out"; out |]) 2 "damaged experiment.json"
                Expect.isFalse (Directory.Exists(Path.Combine(out, "trials"))) "no trials started"
                // a file where the folder should be
                let file = Path.Combine(root, "file")
                File.WriteAllText(file, "x")
                Expect.equal (Script.main (micro "bad") [| "x.fsx"; "--out"; file |]) 2 "out is a file"
            finally Directory.Delete(root, true)
        }

        test "a run writes per-trial and merged Parquet with experiment columns and provenance; a re-run skips everything" {
            let out = tempDir "exp"
            try
                let e = micro "schema"
                Expect.equal (Script.main e [| "x.fsx"; "--out"; out; "--no-report" |]) 0 "exit code"
                let trials = expand (atScale e)
                Expect.equal trials.Length 5 "1 meta-train, 2 meta-test, 2 baselines"
                for t in trials do Expect.equal (statusOf (ExperimentRunner.trialDir out t)) "complete" t.Id
                let exp = JsonNode.Parse(File.ReadAllText(Path.Combine(out, "experiment.json")))
                Expect.equal (exp["status"].GetValue<string>()) "complete" "experiment status"
                Expect.isNotNull (exp["git_commit"]) "commit"
                Expect.isNotNull (exp["versions"]["TorchSharp"]) "versions"
                Expect.isNotNull (exp["finished"]) "end time"
                let merged = ExperimentRunner.mergedPath out
                let schema = duck (sprintf "DESCRIBE SELECT * FROM read_parquet('%s')" merged) |> List.map (fun r -> r.[0], r.[1])
                Expect.equal schema
                    [ "run_id", "VARCHAR"; "experiment", "VARCHAR"; "variant", "VARCHAR"; "phase", "VARCHAR"
                      "env", "VARCHAR"; "seed", "INTEGER"; "agent", "INTEGER"; "env_step", "BIGINT"
                      "wall_time_s", "DOUBLE"; "metric", "VARCHAR"; "value", "DOUBLE"; "trial_id", "VARCHAR"
                      "train_envs", "VARCHAR"; "meta_seed", "INTEGER"; "seen", "BOOLEAN"
                      "obj_func_second_order_stepsize", "DOUBLE" ] "merged schema"
                let perTrial =
                    duck (sprintf "SELECT trial_id, phase, count(*), any_value(train_envs), any_value(meta_seed), any_value(seen), any_value(obj_func_second_order_stepsize) FROM read_parquet('%s/trials/*/metrics.parquet') GROUP BY ALL ORDER BY trial_id" out)
                let mergedCounts = duck (sprintf "SELECT trial_id, phase, count(*), any_value(train_envs), any_value(meta_seed), any_value(seen), any_value(obj_func_second_order_stepsize) FROM read_parquet('%s') GROUP BY ALL ORDER BY trial_id" merged)
                Expect.equal mergedCounts perTrial "merged = union of the trial files"
                let row id = perTrial |> List.find (fun r -> r.[0] = id)
                let unseen = trials |> List.find (fun t -> t.Seen = Some false)
                Expect.equal (row unseen.Id).[3..5] [ "Pendulum-v1+Pendulum-v1"; "0"; "False" ] "meta-test columns"
                let baseline = trials |> List.find (fun t -> t.Phase = BaselinePhase)
                Expect.equal (row baseline.Id).[1] "train" "baseline phase"
                // the swept key is an objective key: baselines do not vary along it, so its column is null for them
                Expect.equal (row baseline.Id).[3..6] [ "NULL"; "NULL"; "NULL"; "NULL" ] "baseline: no objective columns"
                let returns = duck (sprintf "SELECT count(*) FROM read_parquet('%s') WHERE metric = 'episode_return' AND phase = 'meta-test'" merged)
                Expect.isGreaterThan (int returns.Head.Head) 1 "episode returns recorded"
                let kv = duck (sprintf "SELECT decode(key) FROM parquet_kv_metadata('%s')" merged) |> List.map List.head
                Expect.contains kv "metagenrl.experiment" "experiment provenance in the merged file"
                let trialKv = duck (sprintf "SELECT decode(value) FROM parquet_kv_metadata('%s/trials/%s/metrics.parquet') WHERE decode(key) = 'metagenrl.config'" out unseen.Id)
                let cfg = JsonNode.Parse(trialKv.Head.Head)
                Expect.equal (cfg["env_name"].ToJsonString()) """["InvertedPendulum-v2"]""" "resolved config in the trial file"
                // a second run finds everything done
                let stamps () = trials |> List.map (fun t -> File.GetLastWriteTimeUtc(Path.Combine(ExperimentRunner.trialDir out t, "metrics.parquet")))
                let before = stamps ()
                Expect.equal (Script.main e [| "x.fsx"; "--out"; out; "--no-report" |]) 0 "re-run"
                Expect.equal (stamps ()) before "no trial re-ran"
                // the same folder with a changed declaration is refused, and nothing changes
                Expect.equal (Script.main e [| "x.fsx"; "--out"; out; "--no-report"; "--meta-test-steps"; "300" |]) 2 "changed budget"
                expectUsage "changed budget" "was run with timesteps_total=200, this declaration gives 300" (fun () ->
                    ExperimentRunner.checkExisting (expand (atScale { e with MetaTestSteps = Some 300L })) out)
                Expect.equal (stamps ()) before "nothing touched"
            finally Directory.Delete(out, true)
        }

        test "objectives meta-trained by one experiment are meta-tested by another" {
            let root = tempDir "objectives"
            try
                let mt = { micro "mt" with MetaTest = []; Baselines = []; Sweep = [] }
                Expect.equal (Script.main mt [| "x.fsx"; "--out"; Path.Combine(root, "mt"); "--no-report" |]) 0 "meta-train"
                let test = { micro "test" with Variants = []; Sweep = []; Objectives = [ root ]; MetaTest = [ "InvertedPendulum-v2" ]; MetaTestSeeds = [ 0; 1 ] }
                let trials = expand (atScale test)
                let tests = trials |> List.filter (fun t -> t.Phase = MetaTestPhase)
                Expect.equal tests.Length 2 "one objective × one env × two seeds"
                Expect.isTrue (tests |> List.forall (fun t -> t.ObjectiveDir.IsSome && t.Seen = Some false && t.TrainEnvs = Some [ "Pendulum-v1"; "Pendulum-v1" ])) "from the run.json"
                Expect.equal (Script.main test [| "x.fsx"; "--out"; Path.Combine(root, "test"); "--no-report" |]) 0 "meta-test"
                let rows = duck (sprintf "SELECT DISTINCT variant, train_envs, meta_seed, seen FROM read_parquet('%s') WHERE phase = 'meta-test'" (ExperimentRunner.mergedPath (Path.Combine(root, "test"))))
                Expect.equal rows [ [ "full"; "Pendulum-v1+Pendulum-v1"; "0"; "False" ] ] "objective columns"
                expectUsage "an empty search folder" "no complete meta-train run under" (fun () ->
                    let empty = Path.Combine(root, "empty")
                    Directory.CreateDirectory empty |> ignore
                    validate { test with Objectives = [ empty ] })
            finally Directory.Delete(root, true)
        }

        test "the same experiment twice gives the same numbers, trials running concurrently" {
            let root = tempDir "twice"
            try
                let e = { micro "twice" with MetaTest = [ "Pendulum-v1"; "InvertedPendulum-v2" ]; Baselines = [ "td3"; "random-objective" ] }
                let values (out: string) =
                    Expect.equal (Script.main e [| "x.fsx"; "--out"; out; "--no-report"; "--cores"; "2" |]) 0 out
                    duck (sprintf "SELECT trial_id, agent, env_step, metric, value FROM read_parquet('%s') WHERE metric <> 'sps' ORDER BY ALL" (ExperimentRunner.mergedPath out))
                let a = values (Path.Combine(root, "a"))
                let b = values (Path.Combine(root, "b"))
                Expect.isGreaterThan a.Length 50 "rows"
                Expect.equal b a "identical rows (trial, agent, step, metric, value)"
            finally Directory.Delete(root, true)
        }

        test "a failing trial is recorded, the others finish, and the exit code says so" {
            let out = tempDir "failing"
            try
                let e = { micro "failing" with MetaTest = [ "Pendulum-v1" ]; Sweep = [] }
                Expect.equal (Script.main e [| "x.fsx"; "--out"; out; "--no-report" |]) 0 "first run"
                let trials = expand (atScale e)
                let mt = trials |> List.find (fun t -> t.Phase = MetaTrainPhase)
                let test = trials |> List.find (fun t -> t.Phase = MetaTestPhase)
                // The meta-test must run again, but its objective's checkpoints are gone.
                Directory.Delete(Path.Combine(ExperimentRunner.trialDir out mt, "checkpoints"), true)
                Directory.Delete(ExperimentRunner.trialDir out test, true)
                File.Delete(ExperimentRunner.mergedPath out)
                Expect.equal (Script.main e [| "x.fsx"; "--out"; out; "--no-report" |]) 1 "a trial failed"
                let exp = JsonNode.Parse(File.ReadAllText(Path.Combine(out, "experiment.json")))
                Expect.equal (exp["status"].GetValue<string>()) "failed" "experiment status"
                let entry = exp["trials"].AsArray() |> Seq.find (fun n -> n["trial_id"].GetValue<string>() = test.Id)
                Expect.equal (entry["status"].GetValue<string>()) "failed" "trial status"
                Expect.stringContains (entry["error"].GetValue<string>()) "no checkpoint under" "the error says why"
                Expect.stringContains (exp["error"].GetValue<string>()) (sprintf "trial %s failed: " test.Id) "experiment.json names the failed trial"
                Expect.equal (statusOf (ExperimentRunner.trialDir out test)) "failed" "the trial's run.json"
                Expect.stringContains ((Results.readRunJson (ExperimentRunner.trialDir out test)).Value["error"].GetValue<string>()) "no checkpoint under" "…with the cause"
                Expect.isFalse (File.Exists(ExperimentRunner.mergedPath out)) "no merged file"
            finally Directory.Delete(out, true)
        }

        test "a trial whose agent diverges records every failure and the cause that ended it" {
            let out = tempDir "diverging"
            try
                let e =
                    { micro "diverging" with
                        Variants = []; Sweep = []; MetaTest = [ "Pendulum-v1" ]; BaselineSeeds = [ 0 ]; MetaTestSteps = Some 600L
                        Set = [ "critic_learning_rate", "1e30"; "policy_random_exploration_steps", "100" ] }
                Expect.equal (Script.main e [| "x.fsx"; "--out"; out; "--no-report" |]) 1 "a trial failed"
                let exp = JsonNode.Parse(File.ReadAllText(Path.Combine(out, "experiment.json")))
                let entry = exp["trials"].AsArray() |> Seq.exactlyOne
                Expect.stringContains (entry["error"].GetValue<string>()) "first cause: non-finite" "the cause that ended the trial"
                let notes = entry["notes"].AsArray()
                Expect.equal notes.Count 11 "every agent failure, as it happened"
                Expect.stringContains (notes[0].GetValue<string>()) "restarted from its initial state" "…with where the agent restarted from"
                let trial = Directory.GetDirectories(Path.Combine(out, "trials")) |> Array.exactlyOne
                Expect.equal ((Results.readRunJson trial).Value["failures"].AsArray().Count) 11 "the trial's run.json lists them too"
            finally Directory.Delete(out, true)
        }

        test "async meta-training runs through the same runner" {
            let out = tempDir "async"
            try
                let e = { micro "async" with MetaTest = [ "Pendulum-v1" ]; Baselines = []; Sweep = [] }
                Expect.equal (Script.main e [| "x.fsx"; "--out"; out; "--no-report"; "--mode"; "async" |]) 0 "exit code"
                let exp = JsonNode.Parse(File.ReadAllText(Path.Combine(out, "experiment.json")))
                Expect.equal (exp["mode"].GetValue<string>()) "Async" "mode recorded"
                let returns = duck (sprintf "SELECT count(*) FROM read_parquet('%s') WHERE metric = 'episode_return' AND phase = 'meta-train'" (ExperimentRunner.mergedPath out))
                Expect.isGreaterThan (int returns.Head.Head) 1 "meta-train episodes"
            finally Directory.Delete(out, true)
        }

        test "an experiment folder held by another writer is refused with its holder named, before anything is written" {
            let out = tempDir "held"
            try
                let e = atScale (micro "held")
                let opts : ExperimentRunner.RunOptions = { Out = out; Cores = 2; TorchThreads = 1; LossLogEvery = 100; Command = "test" }
                do
                    use _held = FolderLock.acquire out
                    expectUsage "a second writer" (sprintf "in use by pid %d" Environment.ProcessId)
                        (fun () -> ExperimentRunner.run e (expand e) opts Threading.CancellationToken.None (fun _ w -> w.Wait()) |> ignore)
                    Expect.isFalse (File.Exists(Path.Combine(out, "experiment.json"))) "nothing written by the refused writer"
                // released: the folder can be taken again
                use again = FolderLock.acquire out
                Expect.equal again.Dir out "taken after release"
            finally Directory.Delete(out, true)
        }

        test "an interrupted experiment resumes: completed trials are skipped, interrupted ones finish" {
            let out = tempDir "resume"
            try
                let e = atScale (micro "resume")
                let trials = expand e
                let opts : ExperimentRunner.RunOptions = { Out = out; Cores = 2; TorchThreads = 1; LossLogEvery = 100; Command = "test" }
                // Stop as soon as the meta-train trial completes: its tests are then pending or just started.
                use cts = new Threading.CancellationTokenSource()
                let watch (runs: ExperimentRunner.TrialRun list) (work: Threading.Tasks.Task) =
                    while not work.IsCompleted do
                        if runs |> List.exists (fun r -> r.Trial.Phase = MetaTrainPhase && r.Status.Finished) then cts.Cancel()
                        work.Wait 20 |> ignore
                let runs, status = ExperimentRunner.run e trials opts cts.Token watch
                Expect.equal status "interrupted" "first run"
                Expect.isFalse (File.Exists(ExperimentRunner.mergedPath out)) "no merged file for an unfinished experiment"
                let exp = JsonNode.Parse(File.ReadAllText(Path.Combine(out, "experiment.json")))
                Expect.equal (exp["status"].GetValue<string>()) "interrupted" "experiment.json says so"
                let mt = trials |> List.find (fun t -> t.Phase = MetaTrainPhase)
                let unfinished = runs |> List.filter (fun r -> not r.Status.Finished) |> List.map (fun r -> r.Trial.Id)
                Expect.isNonEmpty unfinished "something was left"
                let mtStamp = File.GetLastWriteTimeUtc(Path.Combine(ExperimentRunner.trialDir out mt, "metrics.parquet"))
                let runs2, status2 = ExperimentRunner.run e trials opts Threading.CancellationToken.None (fun _ w -> w.Wait())
                Expect.equal status2 "complete" "second run"
                for r in runs2 do
                    let expected = if List.contains r.Trial.Id unfinished then ExperimentRunner.Complete else ExperimentRunner.Done
                    Expect.equal r.Status expected r.Trial.Id
                Expect.equal (File.GetLastWriteTimeUtc(Path.Combine(ExperimentRunner.trialDir out mt, "metrics.parquet"))) mtStamp "meta-train not re-run"
                Expect.isTrue (File.Exists(ExperimentRunner.mergedPath out)) "merged file"
            finally Directory.Delete(out, true)
        }

        test "a trial resumes from its checkpoint and keeps the rows it covers" {
            let out = tempDir "ckpt"
            try
                let e = atScale { micro "ckpt" with Baselines = []; MetaTest = []; MetaTrainSteps = Some 1200L; Set = [ "checkpoint_every", "200" ] }
                let trials = expand e
                Expect.equal trials.Length 1 "one meta-train trial"
                let opts : ExperimentRunner.RunOptions = { Out = out; Cores = 2; TorchThreads = 1; LossLogEvery = 100; Command = "test" }
                use cts = new Threading.CancellationTokenSource()
                let dir = ExperimentRunner.trialDir out trials.Head
                let watch (_: ExperimentRunner.TrialRun list) (work: Threading.Tasks.Task) =
                    while not work.IsCompleted do
                        if Directory.Exists(Path.Combine(dir, "checkpoints", "ckpt-000001")) then cts.Cancel()
                        work.Wait 10 |> ignore
                let _, status = ExperimentRunner.run e trials opts cts.Token watch
                Expect.equal status "interrupted" "stopped after a checkpoint"
                Expect.equal (statusOf dir) "interrupted" "trial run.json"
                let _, status2 = ExperimentRunner.run e trials opts Threading.CancellationToken.None (fun _ w -> w.Wait())
                Expect.equal status2 "complete" "resumed"
                let rows = Results.readParquet (Path.Combine(dir, "metrics.parquet"))
                let markers = rows |> List.filter (fun r -> r.metric = PopulationRun.CheckpointMarker) |> List.map (fun r -> int r.value)
                Expect.equal markers (List.sort markers |> List.distinct) "each checkpoint marker once, in order"
                Expect.isGreaterThan markers.Length 2 "checkpoints before and after the resume"
            finally Directory.Delete(out, true)
        }
    
        test "ablation.fsx runs end to end at micro scale, and a second run only re-reports" {
            let out = tempDir "ablation"
            try
                let rc, text = fsiScript "ablation.fsx" [ "--scale"; "micro"; "--out"; out ]
                Expect.equal rc 0 (sprintf "exit code; output:\n%s" text)
                Expect.stringContains text "18 trials (4 meta-train, 8 meta-test, 6 baseline)" "the Figure 5 grid"
                Expect.isTrue (File.Exists(ExperimentRunner.mergedPath out)) "merged results"
                let trials = Directory.GetDirectories(Path.Combine(out, "trials"))
                Expect.equal trials.Length 18 "a folder per trial"
                for d in trials do Expect.equal (statusOf d) "complete" d
                for f in [ "summary.md"; "report.html"; "diagnostics.png"; "curves-Pendulum-v1.png"; "curves-InvertedDoublePendulum-v2.png" ] do
                    Expect.isTrue (File.Exists(Path.Combine(out, "report", f))) (sprintf "report/%s" f)
                Expect.stringContains text "| baseline | td3 |" "the summary table is printed"
                Expect.stringContains text "(unseen)" "seen/unseen marks"
                let rc2, text2 = fsiScript "ablation.fsx" [ "--scale"; "micro"; "--out"; out ]
                Expect.equal rc2 0 "second run"
                Expect.stringContains text2 "all 18 trials are complete; re-reporting" "nothing re-ran"
                let rc3, text3 = fsiScript "ablation.fsx" [ "--dry-run"; "--scale"; "paper" ]
                Expect.equal rc3 0 "paper dry run"
                Expect.stringContains text3 "LunarLanderContinuous-v2+HalfCheetah-v2" "paper: Lunar & Cheetah"
                Expect.stringContains text3 "Hopper-v2 (unseen)" "paper: Hopper unseen"
                let rc4, text4 = fsiScript "ablation.fsx" [ "--scale"; "huge" ]
                Expect.equal rc4 2 "unknown scale"
                Expect.stringContains text4 "--scale 'huge': unknown scale" "named"
            finally Directory.Delete(out, true)
        }

        test "kill -9 in the middle of an experiment, run it again: the results equal an uninterrupted run's" {
            let root = tempDir "kill"
            try
                let args out = [ "--scale"; "micro"; "--out"; out; "--no-report"; "--set"; "checkpoint_every=200"; "--meta-train-steps"; "1600" ]
                let a, b = Path.Combine(root, "a"), Path.Combine(root, "b")
                let rcA, textA = fsiScript "meta_train.fsx" (args a)
                Expect.equal rcA 0 textA
                // Start b and kill it (SIGKILL, the whole process tree) once its second checkpoint is on disk.
                let psi = Diagnostics.ProcessStartInfo("dotnet", UseShellExecute = false, WorkingDirectory = repoRoot,
                                                       RedirectStandardOutput = true, RedirectStandardError = true)
                for x in [ "fsi"; Path.Combine(repoRoot, "experiments", "meta_train.fsx"); "--" ] @ args b do psi.ArgumentList.Add x
                use p = Diagnostics.Process.Start psi
                p.OutputDataReceived.Add ignore
                p.ErrorDataReceived.Add ignore
                p.BeginOutputReadLine()
                p.BeginErrorReadLine()
                let second () =
                    Directory.Exists(Path.Combine(b, "trials"))
                    && Directory.GetDirectories(Path.Combine(b, "trials"), "ckpt-000002", SearchOption.AllDirectories).Length > 0
                let clock = Diagnostics.Stopwatch.StartNew()
                while not (second ()) && not p.HasExited && clock.Elapsed.TotalMinutes < 5.0 do Threading.Thread.Sleep 20
                Expect.isFalse p.HasExited "killed before it finished"
                p.Kill true
                p.WaitForExit()
                let trial = Directory.GetDirectories(Path.Combine(b, "trials")).[0]
                Expect.equal (statusOf trial) "running" "a killed trial is not marked complete"
                Expect.isFalse (File.Exists(ExperimentRunner.mergedPath b)) "no merged file"
                let rcB, textB = fsiScript "meta_train.fsx" (args b)
                Expect.equal rcB 0 textB
                let rows dir =
                    duck (sprintf "SELECT trial_id, agent, env_step, metric, value FROM read_parquet('%s') ORDER BY ALL" (ExperimentRunner.mergedPath dir))
                let rowsA = rows a
                Expect.isGreaterThan rowsA.Length 100 "rows"
                Expect.equal (rows b) rowsA "identical rows"
            finally Directory.Delete(root, true)
        }

        test "kill -9 of the dotnet fsi parent alone: its script process stops within seconds and frees the folder" {
            let out = tempDir "orphan"
            try
                let psi = Diagnostics.ProcessStartInfo("dotnet", UseShellExecute = false, WorkingDirectory = repoRoot,
                                                       RedirectStandardOutput = true, RedirectStandardError = true)
                for x in [ "fsi"; Path.Combine(repoRoot, "experiments", "meta_train.fsx"); "--"; "--scale"; "micro"; "--out"; out
                           "--no-report"; "--meta-train-steps"; "1000000" ] do psi.ArgumentList.Add x
                use p = Diagnostics.Process.Start psi
                p.OutputDataReceived.Add ignore
                p.ErrorDataReceived.Add ignore
                p.BeginOutputReadLine()
                p.BeginErrorReadLine()
                let holder = Path.Combine(out, FolderLock.holderFile)
                let clock = Diagnostics.Stopwatch.StartNew()
                while not (File.Exists holder) && not p.HasExited && clock.Elapsed.TotalMinutes < 3.0 do Threading.Thread.Sleep 100
                Expect.isTrue (File.Exists holder) "the experiment holds its folder"
                // the script runs in a child of `dotnet fsi`; find it by its parent pid
                let parentOf (pid: string) =
                    try
                        let stat = File.ReadAllText(sprintf "/proc/%s/stat" pid)
                        int (stat.Substring(stat.LastIndexOf ')' + 2).Split(' ').[1])
                    with _ -> -1
                let children =
                    Directory.GetDirectories "/proc" |> Array.map Path.GetFileName
                    |> Array.filter (fun d -> d |> Seq.forall Char.IsDigit && parentOf d = p.Id)
                Expect.equal children.Length 1 "one script process under dotnet fsi"
                let child = children.[0]
                p.Kill false   // SIGKILL to the parent only
                p.WaitForExit()
                clock.Restart()
                while Directory.Exists(sprintf "/proc/%s" child) && clock.Elapsed.TotalSeconds < 60.0 do Threading.Thread.Sleep 100
                Expect.isFalse (Directory.Exists(sprintf "/proc/%s" child)) "the orphaned script process stopped within a minute"
                let exp = JsonNode.Parse(File.ReadAllText(Path.Combine(out, "experiment.json")))
                Expect.equal (exp["status"].GetValue<string>()) "interrupted" "stopped as on Ctrl-C"
                use _again = FolderLock.acquire out
                ()
            finally Directory.Delete(out, true)
        }

        test "every script answers --help and --dry-run" {
            for script in [ "ablation.fsx"; "meta_train.fsx"; "table1.fsx"; "sweep.fsx"; "baselines.fsx" ] do
                let rc, text = fsiScript script [ "--help" ]
                Expect.equal rc 0 (script + " --help")
                Expect.stringContains text "--dry-run" (script + " help lists --dry-run")
                let rc2, text2 = fsiScript script [ "--dry-run" ]
                Expect.equal rc2 0 (sprintf "%s --dry-run: %s" script text2)
                Expect.stringContains text2 "dry run: nothing was written" script
            // no script makes the compiler speak (warnings or notes such as FS3886)
            for script in [ "ablation.fsx"; "meta_train.fsx"; "meta_test.fsx"; "table1.fsx"; "sweep.fsx"; "baselines.fsx"; "transfer.fsx" ] do
                let _, text = fsiScript script [ "--help" ]
                Expect.isFalse (Text.RegularExpressions.Regex.IsMatch(text, @"\b(warning|info|error) FS\d+")) (sprintf "%s compiles silently: %s" script text)
            // a bad flag is named as the flag the user typed, in one line, exit 2
            for flag, value, named in [ "--meta-train-steps", "0", "--meta-train-steps: 0"; "--set", "nokey=1", "--set: nokey=1" ] do
                let rc, text = fsiScript "ablation.fsx" [ flag; value; "--dry-run" ]
                Expect.equal rc 2 (sprintf "%s %s: exit code" flag value)
                Expect.stringContains text ("error: " + named) (sprintf "%s %s is named as the flag" flag value)
                Expect.isFalse (text.Contains "MetaTrainSteps" || text.Contains "Set:" || text.Contains "   at ") "no internal field names, no stack trace"
            // meta_test.fsx needs objectives: without any it says where they come from
            let rc, text = fsiScript "meta_test.fsx" [ "--dry-run"; "--objective"; "/nonexistent/objective" ]
            Expect.equal rc 2 "meta_test.fsx with a missing objective"
            Expect.stringContains text "'/nonexistent/objective' is not a folder" "named"
        }
    ]
