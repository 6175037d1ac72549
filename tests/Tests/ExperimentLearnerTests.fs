/// Meta-learners as experiment variants (`Variants = [ objective "full"; rl2; epg ]`): how RL² and EPG variants expand and are
/// validated, and micro runs through the experiment runner: meta-train → meta-test beside MetaGenRL's, a re-run that
/// does nothing, an RL² meta-train from another experiment tested as an objective folder, and a resume.
module MetaGenRL.Tests.ExperimentLearnerTests

open System
open System.IO
open System.Text.Json.Nodes
open Expecto
open MetaGenRL.Pipeline
open MetaGenRL.Pipeline.Experiment
open MetaGenRL.Tests.TestUtil
open MetaGenRL.Tests.ResultsTests

let private expectUsage = ExperimentTests.expectUsage

let private statusOf = ExperimentTests.statusOf

let private grid =
    { Experiment.create "learners" with
        MetaTrain = [ [ "Pendulum-v1"; "InvertedPendulum-v2" ]; [ "Pendulum-v1"; "Reacher-v2" ] ]
        MetaTest = [ "Pendulum-v1"; "MountainCarContinuous-v0" ]
        MetaTrainSeeds = [ 0; 1 ]
        MetaTestSeeds = [ 0; 1; 2 ]
        Variants = [ objective "full"; rl2 ]
        Sweep = [ axis "obj_func_second_order_stepsize" [ 0.001; 0.01 ] ]
        Set = [ "checkpoint_every", "3000"; "critic_units", "8" ]
        Baselines = []
        Scale = Tiny }

/// RL² beside the full objective on Reacher & InvertedPendulum (RL²'s padding: 11 observations, 2 actions); tested on
/// Reacher (seen; 200 steps are 4 of its 50-step episodes) and Pendulum (unseen; one 200-step episode).
let private micro name =
    { Experiment.create name with
        MetaTrain = [ [ "Reacher-v2"; "InvertedPendulum-v2" ] ]
        MetaTest = [ "Reacher-v2"; "Pendulum-v1" ]
        Variants = [ objective "full"; rl2 ]
        Baselines = []
        Scale = Micro
        MetaTrainSteps = Some 200L
        MetaTestSteps = Some 200L }

let private options out : ExperimentRunner.RunOptions =
    { Out = out; Cores = 2; TorchThreads = 1; LossLogEvery = 100; Command = "test" }

/// (trial, agent, env_step, metric, value) of every row but the checkpoint markers, from the per-trial files.
let private values (out: string) (trialGlob: string) =
    duck (sprintf "SELECT trial_id, env, agent, env_step, metric, value FROM read_parquet('%s/trials/%s/metrics.parquet') WHERE metric <> 'checkpoint' ORDER BY ALL" out trialGlob)

[<Tests>]
let expansionTests =
    testList "Experiment meta-learners" [
        test "an rl2 variant: one meta-train per set and seed at no sweep point, meta-tests on every env, only its keys" {
            let trials = expand grid
            let of' learner phase = trials |> List.filter (fun t -> t.Learner = Some learner && t.Phase = phase)
            Expect.equal (of' MetaGenRL MetaTrainPhase).Length 8 "full: 2 sweep points × 2 sets × 2 seeds"
            Expect.equal (of' Rl2 MetaTrainPhase).Length 4 "rl2: 2 sets × 2 seeds, not per sweep point"
            Expect.equal (of' Rl2 MetaTestPhase).Length 24 "rl2: 4 meta-trains × 2 envs × 3 seeds"
            Expect.equal (trials |> List.map (fun t -> t.Id) |> List.distinct).Length trials.Length "unique ids"
            let mt = of' Rl2 MetaTrainPhase |> List.find (fun t -> t.Seed = 1 && t.Envs = [ "Pendulum-v1"; "Reacher-v2" ])
            Expect.equal mt.Id "mt_rl2_Pendulum-v1+Reacher-v2_s1" "id: as MetaGenRL's, without a sweep point"
            Expect.equal (mt.Variant, mt.Agents, mt.Swept) ("rl2", 1, []) "variant rl2, one learner, no sweep point"
            Expect.equal mt.Steps (2L * 5000L) "the env steps of the population beside it (Tiny: 2 agents × 5000)"
            Expect.equal mt.Overrides [ "checkpoint_every", "3000" ] "of the overrides only checkpoint_every"
            Expect.equal ((trialConfig mt).ToJson()) ((MetaLearnerRun.config mt.Envs mt.Steps (Some 3000L) []).ToJson()) "the config it records: envs, budget, one agent, checkpoint interval"
            let tests = of' Rl2 MetaTestPhase |> List.filter (fun t -> t.DependsOn = Some mt.Id)
            Expect.equal tests.Length 6 "2 envs × 3 seeds"
            for t in tests do
                Expect.equal t.Seen (Some(t.Envs = [ "Pendulum-v1" ])) (t.Id + ": Pendulum seen, MountainCar unseen")
                Expect.equal (t.TrainEnvs, t.MetaSeed, t.Overrides) (Some mt.Envs, Some 1, []) (t.Id + ": trial columns, no overrides")
                Expect.equal ((trialConfig t).ToJson()) ((MetaLearnerRun.config t.Envs t.Steps None []).ToJson()) (t.Id + ": config as meta-test --algo rl2")
            let full = of' MetaGenRL MetaTrainPhase |> List.head
            Expect.equal (trialConfig full).CriticUnits 8 "MetaGenRL trials keep every key"
            // an rl2 meta-train costs ≈ 1/1500 s per env step, one core
            let seconds = estimateSeconds Tiny 1 [ { mt with Steps = 3000L } ]
            Expect.floatClose Accuracy.high seconds 2.0 "3000 env steps ≈ 2 s"
        }

        test "a declaration of MetaGenRL variants keeps its identity (no learner fields in its JSON)" {
            let e = { grid with Variants = [ objective "full"; variant "fixed" [ "paper_quirks", "false" ] ] }
            let json = (toJson e (expand e)).ToJsonString()
            Expect.isFalse (json.Contains "\"learner\":") "no learner field: earlier experiments keep their folder id"
            Expect.stringContains ((toJson grid (expand grid)).ToJsonString()) "\"learner\":\"rl2\"" "an rl2 variant is recorded"
        }

        test "validation of rl2 variants names the field" {
            let v e = fun () -> validate e
            expectUsage "a population key in its Set" "Variants[rl2].Set: key 'policy_units' does not apply to rl2"
                (v { grid with Variants = [ { rl2 with Set = [ "policy_units", "8" ] } ] })
            expectUsage "renamed" "Variants[rl2-b]: a rl2 variant is named 'rl2'" (v { grid with Variants = [ { rl2 with Name = "rl2-b" } ] })
            expectUsage "an objective variant named rl2" "Variants[rl2]: 'rl2' names the rl2 meta-learner"
                (v { grid with Variants = [ variant "rl2" [ "paper_quirks", "false" ] ] })
            expectUsage "twice" "Variants: two variants share a name" (v { grid with Variants = [ rl2; rl2 ] })
            expectUsage "a test env larger than the set" "MetaTest Hopper-v2: 11 observations and 3 actions do not fit the rl2 policy's padding of 4 and 1"
                (v { grid with MetaTest = [ "Pendulum-v1"; "Hopper-v2" ] })
            expectUsage "not on cuda" "Device: cuda; the rl2 variant runs on the CPU only" (v { grid with Device = "cuda" })
            validate { grid with Variants = [ { rl2 with Set = [ "checkpoint_every", "500" ] } ]; Agents = Some 1 }
            validate grid
        }

        test "an epg variant: the scale's LearnerSet and its epg_* keys, the population's budget, any test env; validation" {
            let e = { grid with Variants = [ objective "full"; { epg with Set = [ "epg_sigma", "0.1" ] } ]; MetaTest = [ "Pendulum-v1"; "Hopper-v2" ] }
            validate e
            let trials = expand e
            let mt = trials |> List.find (fun t -> t.Learner = Some Epg && t.Phase = MetaTrainPhase)
            Expect.equal mt.Overrides [ "epg_inner_steps", "1000"; "epg_pairs", "2"; "checkpoint_every", "3000"; "epg_sigma", "0.1" ]
                "Tiny's LearnerSet, the experiment's checkpoint_every, its own Set; not critic_units"
            Expect.equal mt.Steps 10_000L "2 agents × 5000 env steps"
            let cfg = trialConfig mt
            Expect.equal (cfg.EpgInnerSteps, cfg.EpgPairs, cfg.EpgSigma, cfg.CheckpointEvery) (Nullable 1000L, Nullable 2, Nullable 0.1, 3000L) "recorded config"
            Expect.equal (trials |> List.filter (fun t -> t.Learner = Some Epg && t.Phase = MetaTestPhase)).Length 24 "Hopper is fine: a fresh agent of its own size"
            let v x = fun () -> validate x
            expectUsage "a population key" "Variants[epg].Set: key 'policy_units' does not apply to epg, which takes only checkpoint_every, epg_inner_steps"
                (v { e with Variants = [ { epg with Set = [ "policy_units", "8" ] } ] })
            expectUsage "less than an epoch" "MetaTrainSteps: the epg trial mt_epg_Pendulum-v1+InvertedPendulum-v2_s0 gets 400 env steps (agents × MetaTrainSteps), less than one ES epoch (2 × 2 pairs × 1000 inner steps = 4000)"
                (v { e with MetaTrainSteps = Some 200L })
            expectUsage "a bad σ" "epg_sigma=0" (v { e with Variants = [ { epg with Set = [ "epg_sigma", "0" ] } ] })
        }
    ]

[<Tests>]
let runTests =
    testSequenced <| testList "Experiment meta-learner runs" [
        test "rl2 beside the full objective: meta-train → meta-test on a seen and an unseen env, trial columns, report; a re-run does nothing" {
            let root = tempDir "learners"
            try
                let out = Path.Combine(root, "a")
                let e = micro "learners"
                Expect.equal (Script.main e [| "x.fsx"; "--out"; out; "--no-report" |]) 0 "exit code"
                let trials = expand (atScale e)
                Expect.equal trials.Length 6 "per learner: 1 meta-train, 2 meta-tests"
                for t in trials do Expect.equal (statusOf (ExperimentRunner.trialDir out t)) "complete" t.Id
                let exp = JsonNode.Parse(File.ReadAllText(ExperimentRunner.experimentJsonPath out))
                let entries = exp["trials"].AsArray() |> Seq.filter (fun n -> n["variant"].GetValue<string>() = "rl2") |> List.ofSeq
                Expect.equal entries.Length 3 "rl2 trials in experiment.json"
                for n in entries do
                    Expect.equal (n["status"].GetValue<string>(), n["learner"].GetValue<string>()) ("complete", "rl2") "status and learner"
                let merged = ExperimentRunner.mergedPath out
                let episodes =
                    duck (sprintf "SELECT env, train_envs, meta_seed, seen, count(*) FROM read_parquet('%s') WHERE variant = 'rl2' AND phase = 'meta-test' AND metric = 'episode_return' GROUP BY ALL ORDER BY ALL" merged)
                Expect.equal episodes
                    [ [ "Pendulum-v1"; "Reacher-v2+InvertedPendulum-v2"; "0"; "False"; "1" ]
                      [ "Reacher-v2"; "Reacher-v2+InvertedPendulum-v2"; "0"; "True"; "4" ] ] "meta-test episodes and trial columns, seen and unseen"
                let trainMetrics = duck (sprintf "SELECT DISTINCT metric FROM read_parquet('%s') WHERE variant = 'rl2' AND phase = 'meta-train' ORDER BY 1" merged) |> List.map List.head
                for m in [ "checkpoint"; "policy_loss"; "trial_return" ] do Expect.contains trainMetrics m (sprintf "meta-train logs %s" m)
                let frozen = duck (sprintf "SELECT count(*) FROM read_parquet('%s') WHERE variant = 'rl2' AND phase = 'meta-test' AND metric = 'policy_loss'" merged)
                Expect.equal frozen [ [ "0" ] ] "a meta-test takes no gradient step"
                let mt = trials |> List.find (fun t -> t.Learner = Some Rl2 && t.Phase = MetaTrainPhase)
                let run = (Results.readRunJson (ExperimentRunner.trialDir out mt)).Value
                Expect.equal (run["variant"].GetValue<string>()) "rl2" "run.json variant"
                Expect.equal (run.["rl2"].["obs_pad"].GetValue<int>()) 11 "run.json records its settings and padding"
                let test = trials |> List.find (fun t -> t.Learner = Some Rl2 && t.Seen = Some false)
                let testRun = (Results.readRunJson (ExperimentRunner.trialDir out test)).Value
                Expect.equal (testRun.["objective"].["dir"].GetValue<string>()) (Path.GetFullPath(ExperimentRunner.trialDir out mt)) "the policy of its meta-train trial"
                // the report: rl2's meta-tests in the final-returns table, grouped by train envs, seen/unseen marked
                let report = Report.write out Report.ReportOptions.Default
                let line = report.Summary.Split('\n') |> Array.find (fun l -> l.StartsWith "| Reacher-v2+InvertedPendulum-v2 | rl2 ")
                Expect.stringContains line "(n = 1) (unseen)" "Pendulum unseen"
                Expect.stringContains line "(n = 1) (seen)" "Reacher seen"
                // a second run finds everything done; a changed rl2 declaration is refused
                let stamps () = trials |> List.map (fun t -> File.GetLastWriteTimeUtc(Path.Combine(ExperimentRunner.trialDir out t, "metrics.parquet")))
                let before = stamps ()
                Expect.equal (Script.main e [| "x.fsx"; "--out"; out; "--no-report" |]) 0 "re-run"
                Expect.equal (stamps ()) before "no trial re-ran"
                let rl2Trials (x: Experiment) = expand (atScale x) |> List.filter (fun t -> t.Learner = Some Rl2)
                expectUsage "changed checkpoint interval" (sprintf "trial %s was run with checkpoint_every=1000, this declaration gives 300" mt.Id)
                    (fun () -> ExperimentRunner.checkExisting (rl2Trials { e with Set = [ "checkpoint_every", "300" ] }) out)
                ExperimentRunner.checkExisting (rl2Trials { e with Set = [ "critic_units", "8" ] }) out   // a key rl2 ignores
                // its meta-train folder as an objective of another experiment: an rl2 meta-test, the same numbers
                let other = Path.Combine(root, "b")
                let e2 = { micro "external" with Variants = []; Objectives = [ ExperimentRunner.trialDir out mt ]; MetaTest = [ "Pendulum-v1" ] }
                let external = expand (atScale e2)
                Expect.equal (external |> List.map (fun t -> t.Learner, t.Id, t.Seen)) [ Some Rl2, test.Id, Some false ] "an rl2 meta-test trial"
                Expect.equal (Script.main e2 [| "x.fsx"; "--out"; other; "--no-report" |]) 0 "external"
                Expect.equal (values other test.Id) (values out test.Id) "the same rows as the first experiment's meta-test"
            finally Directory.Delete(root, true)
        }

        test "epg: meta-train → meta-test on a seen and an unseen env with the population's budget; a re-run does nothing" {
            let root = tempDir "learners-epg"
            try
                let out = Path.Combine(root, "a")
                let e = { micro "epg" with Variants = [ epg ]; MetaTrain = [ [ "Pendulum-v1"; "InvertedPendulum-v2" ] ]; MetaTest = [ "Pendulum-v1"; "MountainCarContinuous-v0" ] }
                Expect.equal (Script.main e [| "x.fsx"; "--out"; out; "--no-report" |]) 0 "exit code"
                let trials = expand (atScale e)
                Expect.equal (trials |> List.map (fun t -> t.Phase, t.Steps)) [ MetaTrainPhase, 400L; MetaTestPhase, 200L; MetaTestPhase, 200L ] "1 epoch of 4 × 100 steps, 2 meta-tests"
                for t in trials do Expect.equal (statusOf (ExperimentRunner.trialDir out t)) "complete" t.Id
                let merged = ExperimentRunner.mergedPath out
                let fitness = duck (sprintf "SELECT count(*) FROM read_parquet('%s') WHERE phase = 'meta-train' AND metric = 'fitness'" merged)
                Expect.equal fitness [ [ "4" ] ] "one fitness row per inner loop"
                let tests = duck (sprintf "SELECT env, seen, count(*) FROM read_parquet('%s') WHERE phase = 'meta-test' AND metric = 'last_loss' GROUP BY ALL ORDER BY ALL" merged)
                Expect.equal tests [ [ "MountainCarContinuous-v0"; "False"; "1" ]; [ "Pendulum-v1"; "True"; "1" ] ] "each meta-test trained on the loss; seen and unseen"
                let mt = trials.Head
                let run = (Results.readRunJson (ExperimentRunner.trialDir out mt)).Value
                Expect.equal (run.["epg"].["inner_steps"].GetValue<int64>(), run.["epg"].["pairs"].GetValue<int>()) (100L, 2) "run.json records its settings"
                let testRun = (Results.readRunJson (ExperimentRunner.trialDir out trials.[1])).Value
                Expect.equal (testRun.["objective"].["dir"].GetValue<string>()) (Path.GetFullPath(ExperimentRunner.trialDir out mt)) "the loss of its meta-train trial"
                let stamps () = trials |> List.map (fun t -> File.GetLastWriteTimeUtc(Path.Combine(ExperimentRunner.trialDir out t, "metrics.parquet")))
                let before = stamps ()
                Expect.equal (Script.main e [| "x.fsx"; "--out"; out; "--no-report" |]) 0 "re-run"
                Expect.equal (stamps ()) before "no trial re-ran"
            finally Directory.Delete(root, true)
        }

        test "an interrupted rl2 meta-train resumes from its checkpoint to the rows of an uninterrupted run" {
            let root = tempDir "learners-resume"
            try
                // 2 micro agents × 2400 = 4800 env steps: 8 Pendulum trials (3200 steps) per PPO iteration, checkpoint 0
                // after the first, 3 more trials (the stop comes between two of them), checkpoint 1 at the end
                let e =
                    atScale { micro "resume" with
                                Variants = [ rl2 ]; MetaTrain = [ [ "Pendulum-v1" ] ]; MetaTest = []; MetaTrainSteps = Some 2400L
                                Set = [ "checkpoint_every", "400" ] }
                let trials = expand e
                let whole, cut = Path.Combine(root, "whole"), Path.Combine(root, "cut")
                let _, status = ExperimentRunner.run e trials (options whole) Threading.CancellationToken.None (fun _ w -> w.Wait())
                Expect.equal status "complete" "uninterrupted"
                use cts = new Threading.CancellationTokenSource()
                let dir = ExperimentRunner.trialDir cut trials.Head
                let watch (_: ExperimentRunner.TrialRun list) (work: Threading.Tasks.Task) =
                    while not work.IsCompleted do
                        if Directory.Exists(Path.Combine(dir, "checkpoints", "ckpt-000000")) then cts.Cancel()
                        work.Wait 10 |> ignore
                let _, status1 = ExperimentRunner.run e trials (options cut) cts.Token watch
                Expect.equal status1 "interrupted" "stopped after its first checkpoint"
                Expect.equal (statusOf dir) "interrupted" "trial run.json"
                let runs, status2 = ExperimentRunner.run e trials (options cut) Threading.CancellationToken.None (fun _ w -> w.Wait())
                Expect.equal status2 "complete" "resumed"
                Expect.equal runs.Head.Status ExperimentRunner.Complete "the trial ran again"
                let resumes = (Results.readRunJson dir).Value["resumes"].AsArray()
                Expect.equal (resumes.[resumes.Count - 1].["checkpoint"].GetValue<int>()) 0 "from checkpoint 0"
                let markers = Results.readParquet (Path.Combine(dir, "metrics.parquet")) |> List.filter (fun r -> r.metric = Engine.CheckpointMarker) |> List.map (fun r -> int r.value)
                Expect.equal markers [ 0; 1 ] "each checkpoint marker once, in order"
                Expect.equal (values cut "*") (values whole "*") "the rows of the uninterrupted run"
            finally Directory.Delete(root, true)
        }
    ]
