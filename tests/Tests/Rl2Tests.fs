/// RL²: its input construction and padding by hand, the agent's determinism and state, and a tiny meta-train →
/// meta-test run through the CLI on a seen and an unseen env.
module MetaGenRL.Tests.Rl2Tests

open System
open System.IO
open Expecto
open MetaGenRL.Core.Agents
open MetaGenRL.Core.Envs
open MetaGenRL.Pipeline
open MetaGenRL.Tests.TestUtil

let private tiny = Rl2Settings(Hidden = 8, EpisodesPerTrial = 2, TrialsPerIteration = 2, Epochs = 2, MinibatchTrials = 1)

[<Tests>]
let tests =
    testList "RL2" [
        test "inputs: observation and previous action zero-padded, then previous reward and done; sizes checked" {
            let x = Rl2Inputs.Build([| 1.0f; 2.0f |], [| 0.5f |], 3.0, true, 4, 2)
            Expect.equal x [| 1.0f; 2.0f; 0.0f; 0.0f; 0.5f; 0.0f; 3.0f; 1.0f |] "x_t = [o, 0, 0 | a, 0 | r | d]"
            let first = Rl2Inputs.Build([| 1.0f; 2.0f; 3.0f; 4.0f |], null, 0.0, false, 4, 2)
            Expect.equal first [| 1.0f; 2.0f; 3.0f; 4.0f; 0.0f; 0.0f; 0.0f; 0.0f |] "a trial's first step: no previous action, reward or done"
            Expect.equal (Rl2Inputs.ActionMask(1, 3)) [| 1.0f; 0.0f; 0.0f |] "only the env's action dims count"
            throwsContaining<ArgumentException> "5 values exceeds the policy's padding of 4" "an observation too large"
                (fun () -> Rl2Inputs.Build(Array.zeroCreate 5, null, 0.0, false, 4, 2) |> ignore)
            throwsContaining<ArgumentException> "3 values exceeds the policy's padding of 2" "an action too large"
                (fun () -> Rl2Inputs.ActionMask(3, 2) |> ignore)
        }

        test "the agent: same seed, same trials; a trial carries its hidden state over two episodes; save and load continue identically" {
            let trial (agent: Rl2Agent) =
                use env = EnvRegistry.Make("Pendulum-v1", 7)
                agent.RunTrial(env, 10_000L)
            use a = new Rl2Agent(tiny, 4, 1, 5L)
            use b = new Rl2Agent(tiny, 4, 1, 5L)
            let ta, tb = trial a, trial b
            Expect.equal ta.Length 400 "two 200-step episodes"
            Expect.equal ta.EpisodeReturns.Length 2 "two returns"
            Expect.equal (ta.EpisodeEnds |> Array.filter id |> Array.length) 2 "two episode ends"
            let second = ta.Inputs.[200]
            Expect.equal second.[4] ta.Actions.[199].[0] "the second episode's first input holds the first episode's last action"
            Expect.equal second.[6] 1.0f "…and its done flag"
            Expect.equal tb.Rewards ta.Rewards "same seed, same trial"
            let struct (pl, vl, _) = a.Train([| ta |])
            Expect.isTrue (Double.IsFinite pl && Double.IsFinite vl) "finite losses"
            Expect.equal a.Updates 2L "two epochs of one trial"
            let saved = a.Save()
            use c = Rl2Agent.Load(saved, tiny)
            Expect.equal (trial c).Rewards (trial a).Rewards "a loaded agent continues with the same trial"
            Expect.notEqual (trial b).Rewards ta.Rewards "an untrained agent's second trial differs (its noise moved on)"
        }

        test "meta-train --algo rl2 on two envs, then meta-test on a seen and an unseen env; a too large env is refused" {
            let trained = tempDir "rl2-train"
            let tested = tempDir "rl2-test"
            try
                let rc, out, err =
                    CliTests.cli [ "meta-train"; "--algo"; "rl2"; "--envs"; "Pendulum-v1,InvertedPendulum-v2"; "--steps"; "3000"
                                   "--seed"; "2"; "--out"; trained ]
                Expect.equal rc 0 (sprintf "meta-train; stdout %s stderr %s" out err)
                let rows = Results.readParquet (Path.Combine(trained, "metrics.parquet"))
                Expect.equal (rows |> List.filter (fun r -> r.metric = "episode_return") |> List.map (fun r -> r.env) |> List.distinct |> List.sort)
                    [ "InvertedPendulum-v2"; "Pendulum-v1" ] "trials drawn from both envs"
                for m in [ "trial_return"; "policy_loss"; "value_loss"; "approx_kl" ] do
                    Expect.isTrue (rows |> List.exists (fun r -> r.metric = m)) (sprintf "%s logged" m)
                Expect.isTrue (Results.isComplete trained) "complete"
                for env, steps, episodes in [ "Pendulum-v1", "400", 2; "MountainCarContinuous-v0", "1000", 1 ] do
                    let rc, out, err =
                        CliTests.cli [ "meta-test"; "--algo"; "rl2"; "--objective"; trained; "--env"; env; "--steps"; steps; "--out"; tested; "--force" ]
                    Expect.equal rc 0 (sprintf "meta-test on %s; stdout %s stderr %s" env out err)
                    let test = Results.readParquet (Path.Combine(tested, "metrics.parquet"))
                    Expect.equal (test |> List.filter (fun r -> r.metric = "episode_return") |> List.length) episodes (env + ": episodes")
                    Expect.isTrue (test |> List.forall (fun r -> r.phase = "meta-test" && r.env = env && r.variant = "rl2")) (env + ": row keys")
                    Expect.isFalse (test |> List.exists (fun r -> r.metric = "policy_loss")) (env + ": frozen, no gradient steps")
                    let objective = Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(tested, "run.json"))).["objective"]
                    Expect.isTrue (objective.["meta_train_complete"].GetValue<bool>()) "run.json records the policy's run as complete"
                CliTests.expectError [ "meta-test"; "--algo"; "rl2"; "--objective"; trained; "--env"; "HalfCheetah-v2"; "--out"; tested; "--force" ]
                    [ "HalfCheetah-v2"; "17 observations and 6 actions do not fit"; "4 and 1" ]
                CliTests.expectError [ "meta-train"; "--algo"; "ddpg" ] [ "--algo 'ddpg'"; "metagenrl, rl2 or epg" ]
                CliTests.expectError [ "meta-train"; "--algo"; "rl2"; "--envs"; "Pendulum-v1"; "--steps"; "100"; "--out"; trained ]
                    [ trained; "already holds a run" ]
            finally
                for d in [ trained; tested ] do Directory.Delete(d, true)
        }

        test "an rl2 meta-train killed with kill -9 resumes from its checkpoint to the numbers of an uninterrupted run" {
            CliTests.killAndResume "rl2" (fun out extra ->
                [ "meta-train"; "--algo"; "rl2"; "--envs"; "InvertedPendulum-v2,Pendulum-v1"; "--steps"; "12000"
                  "--checkpoint-every"; "2000"; "--seed"; "4"; "--out"; out ] @ extra)
            |> ignore
        }
    ]
