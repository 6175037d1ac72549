/// EPG: the ES gradient estimate and fitness shaping by hand, the loss network on a hand-built φ, the inner loop's
/// and the trainer's determinism and state, the actor pool against sequential runs, and a tiny meta-train → meta-test
/// through the CLI on a seen and an unseen env.
module MetaGenRL.Tests.EpgTests

open System
open System.IO
open Expecto
open TorchSharp
open MetaGenRL.Actors
open MetaGenRL.Core.Agents
open MetaGenRL.Core.Envs
open MetaGenRL.Core.Randomness
open MetaGenRL.Pipeline
open MetaGenRL.Tests.TestUtil

/// Small enough for milliseconds per inner loop.
let private sized (inner: int64) = EpgSettings(BufferSteps = 16, UpdateEvery = 8, LossChannels = 4, PolicyUnits = 8, InnerSteps = inner, Pairs = 2)
let private tiny = sized 300L

let private lifetime (s: EpgSettings) (phi: float32[]) (seed: int64) =
    use env = EnvRegistry.Make("Pendulum-v1", EpgWorkerPool.EnvSeed seed)
    EpgInnerLoop.Run(s, phi, env, s.InnerSteps, seed)

[<Tests>]
let tests =
    testList "EPG" [
        test "centered ranks by hand: the i-th smallest of n ↦ i/(n−1) − ½, ties share their mean rank" {
            Expect.equal (EvolutionStrategies.CenteredRanks [| 3.0; 1.0; 2.0; 2.0 |]) [| 0.5; -0.5; 0.0; 0.0 |] "ranks 3, 0, 1.5, 1.5 of 4"
            Expect.equal (EvolutionStrategies.CenteredRanks [| -7.0; 100.0 |]) [| -0.5; 0.5 |] "two values"
            Expect.equal (EvolutionStrategies.CenteredRanks [| 4.0 |]) [| 0.0 |] "one value"
        }

        test "the ES gradient estimate by hand: 1/(2Kσ) Σ_k (u(F⁺_k) − u(F⁻_k)) ε_k" {
            // fitness (10, 0 | 4, 5) ranks to u = (½, −½ | −1/6, 1/6): pair 1 weighs ε₁ by ½ + 1/6 = 2/3, pair 2 weighs
            // ε₂ by −½ − 1/6 = −2/3; with K = 2, σ = ½: g = ½ (2/3 (1, 0) − 2/3 (0, 2)) = (1/3, −2/3).
            let g = EvolutionStrategies.Gradient([| [| 1.0f; 0.0f |]; [| 0.0f; 2.0f |] |], [| 10.0; 0.0 |], [| 4.0; 5.0 |], 0.5)
            close 1e-7 (float g.[0]) (1.0 / 3.0) "g₁"
            close 1e-7 (float g.[1]) (-2.0 / 3.0) "g₂"
            // shaping makes it invariant to the fitness scale and offset
            let g2 = EvolutionStrategies.Gradient([| [| 1.0f; 0.0f |]; [| 0.0f; 2.0f |] |], [| 1e6; -5.0 |], [| 0.0; 1.0 |], 0.5)
            Expect.equal g2 g "a monotone change of the fitness leaves the estimate unchanged"
            throwsContaining<ArgumentException> "2 noise vectors, 1 + and 2 −" "mismatched fitness"
                (fun () -> EvolutionStrategies.Gradient([| [| 1.0f |]; [| 1.0f |] |], [| 1.0 |], [| 1.0; 2.0 |], 0.5) |> ignore)
        }

        test "the ES estimate points along the true gradient of a smooth fitness (400 antithetic pairs, cosine > 0.9)" {
            // F(φ) = −‖φ − c‖² at φ = 0: ∇F = 2c. Rank shaping keeps the direction, not the length.
            let c = [| 1.0; -2.0; 0.5; 3.0 |]
            let rng = Seeds.Random(11L, Seeds.ExploreStream)
            let sigma = 0.1
            let noise = Array.init 400 (fun _ -> EvolutionStrategies.Noise(rng, 4))
            let fitness sign (e: float32[]) = -(Array.map2 (fun (x: float32) ci -> (float sign * sigma * float x - ci) ** 2.0) e c |> Array.sum)
            let g = EvolutionStrategies.Gradient(noise, noise |> Array.map (fitness 1), noise |> Array.map (fitness -1), sigma) |> Array.map float
            let dot = Array.map2 (*) g c |> Array.sum
            let cosine = dot / sqrt (Array.sumBy (fun x -> x * x) g) / sqrt (Array.sumBy (fun x -> x * x) c)
            Expect.isGreaterThan cosine 0.9 (sprintf "cosine(g, ∇F) = %.3f" cosine)
        }

        test "the loss network by hand: a φ that passes log π through both tanh layers gives mean(tanh(tanh(log π)))" {
            // 1 channel: W1 picks input channel 3 (log π) at the kernel's centre, W2 its centre, W3 = 1, biases 0.
            let channels = 1
            let phi = Array.zeroCreate<float32> (EpgLoss.Size channels)
            phi.[3 * 7 + 3] <- 1.0f                 // W1[0, 3, 3]
            phi.[EpgLoss.Inputs * 7 + 1 + 2] <- 1.0f // W2[0, 0, 2]
            phi.[EpgLoss.Inputs * 7 + 1 + 5 + 1] <- 1.0f // W3[0, 0, 0]
            Expect.equal (EpgLoss.Size channels) (5 * 7 + 1 + 5 + 1 + 1 + 1) "φ's size for one channel"
            use scope = torch.NewDisposeScope()
            let tensors = EpgLoss.Tensors(phi, channels)
            let logProb = [| -1.0f; 0.5f; 2.0f |]
            let data = EpgLoss.DataChannels([| 1.0; 2.0; 3.0 |], [| false; false; true |], [| 0; 1; 2 |])
            let loss = EpgLoss.Loss(tensors, torch.tensor(data).reshape(3L, 3L), torch.tensor logProb, torch.tensor 0.3f)
            let expected = logProb |> Array.averageBy (fun x -> tanh (tanh (float x)))
            close 1e-6 (float (loss.item<float32>())) expected "L_φ"
            // the data channels: rewards standardised over the buffer, ends, time / 1000
            let sd = sqrt (2.0 / 3.0)
            for (i, want) in List.indexed [ -1.0 / sd; 0.0; 1.0 / sd; 0.0; 0.0; 1.0; 0.0; 0.001; 0.002 ] do
                close 1e-6 (float data.[i]) want (sprintf "data[%d]" i)
        }

        test "an inner loop: same seed, same lifetime; the loss moves the policy; fitness is the mean of the last episodes" {
            let phi = EpgLoss.Init(tiny.LossChannels, 3L)
            let s = sized 500L
            let a = lifetime s phi 9L
            let b = lifetime s phi 9L
            Expect.equal (a.Episodes |> Seq.map (fun e -> e.Return) |> Array.ofSeq) (b.Episodes |> Seq.map (fun e -> e.Return) |> Array.ofSeq) "same returns"
            Expect.equal a.Updates ((500 - 16) / 8 + 1) "one update every 8 steps once 16 are buffered (steps 16, 24, …, 496)"
            Expect.equal a.Episodes.Count 3 "two 200-step episodes and the cut third"
            Expect.isFalse a.Episodes.[2].Finished "the last one is cut at the lifetime's end"
            close 1e-9 a.Fitness ((a.Episodes.[0].Return + a.Episodes.[1].Return) / 2.0) "fitness: the finished episodes' mean"
            let other = lifetime s (EpgLoss.Init(tiny.LossChannels, 4L)) 9L
            Expect.notEqual other.Episodes.[1].Return a.Episodes.[1].Return "another loss trains the same fresh agent differently"
            close 1e-9 (EpgInnerLoop.Fitness([| EpgEpisode(10L, -4.0, 10, false) |], 3)) -4.0 "no finished episode: the cut one's return"
        }

        test "the trainer: antithetic members share env and seed; ES ascends a quadratic; save and load continue identically" {
            let s = EpgSettings(LossChannels = 1, Pairs = 8, Sigma = 0.05, EsLearningRate = 0.02)
            let target = Array.init (EpgLoss.Size 1) (fun i -> float32 (i % 3) * 0.1f)
            let fitness (j: EpgJob) = -(Array.map2 (fun (a: float32) (b: float32) -> float ((a - b) * (a - b))) j.Phi target |> Array.sum)
            let epoch (t: EpgTrainer) =
                let jobs = t.Propose()
                t.Apply(jobs |> Seq.map fitness |> Array.ofSeq) |> ignore
                jobs
            let t = EpgTrainer(s, 3, 5L)
            let jobs = t.Propose()
            for k in 0 .. 7 do
                Expect.equal jobs.[k + 8].EnvIndex jobs.[k].EnvIndex "a pair shares its env"
                Expect.equal jobs.[k + 8].AgentSeed jobs.[k].AgentSeed "a pair shares its agent seed"
                let mid = Array.map2 (fun (a: float32) (b: float32) -> (a + b) / 2.0f) jobs.[k].Phi jobs.[k + 8].Phi
                Expect.isTrue (Array.forall2 (fun (a: float32) (b: float32) -> abs (a - b) < 1e-6f) mid t.Phi) "φ ± σε"
            let start = -(Array.map2 (fun (a: float32) (b: float32) -> float ((a - b) * (a - b))) t.Phi target |> Array.sum)
            t.Apply(jobs |> Seq.map fitness |> Array.ofSeq) |> ignore
            for _ in 1 .. 59 do epoch t |> ignore
            let finish = -(Array.map2 (fun (a: float32) (b: float32) -> float ((a - b) * (a - b))) t.Phi target |> Array.sum)
            Expect.isGreaterThan finish (start / 2.0) (sprintf "fitness %.3f → %.3f in 60 epochs" start finish)
            let saved = t.Save()
            let u = EpgTrainer.Load(saved, s, 3, 5L)
            Expect.equal u.Epochs 60L "epochs restored"
            let a, b = epoch t, epoch u
            Expect.equal (b |> Seq.map (fun j -> j.EnvIndex, j.AgentSeed) |> List.ofSeq) (a |> Seq.map (fun j -> j.EnvIndex, j.AgentSeed) |> List.ofSeq) "same next jobs"
            Expect.equal u.Phi t.Phi "same φ after the next epoch"
            Expect.equal (EpgTrainer.ReadLoss saved).Length (EpgLoss.Size 1) "the loss alone reads back"
            throwsContaining<InvalidOperationException> "Propose first" "Apply without Propose"
                (fun () -> u.Apply(Array.zeroCreate 16) |> ignore)
        }

        test "the actor pool returns the lifetimes of sequential runs, in member order" {
            let t = EpgTrainer(tiny, 2, 1L)
            let jobs = t.Propose()
            let envs = [| "Pendulum-v1"; "MountainCarContinuous-v0" |]
            use pool = new EpgWorkerPool(null, tiny, 2)
            let lives = pool.Run(jobs, envs)
            for j in jobs do
                use env = EnvRegistry.Make(envs.[j.EnvIndex], EpgWorkerPool.EnvSeed j.AgentSeed)
                let alone = EpgInnerLoop.Run(tiny, j.Phi, env, j.Steps, j.AgentSeed)
                Expect.equal lives.[j.Member].Fitness alone.Fitness (sprintf "member %d" j.Member)
            use failing = new EpgWorkerPool(null, tiny, 2)
            throwsContaining<InvalidOperationException> "EPG inner loop 0 on Nope-v0" "an env that cannot be made names the member"
                (fun () -> failing.Run(jobs, [| "Nope-v0"; "Nope-v0" |]) |> ignore)
        }

        test "meta-train --algo epg on two envs, then meta-test on a seen and an unseen env; bad budgets and folders are refused" {
            let trained = tempDir "epg-train"
            let again = tempDir "epg-again"
            let tested = tempDir "epg-test"
            try
                let args out =
                    [ "meta-train"; "--algo"; "epg"; "--envs"; "Pendulum-v1,InvertedPendulum-v2"; "--steps"; "1200"; "--seed"; "2"
                      "--set"; "epg_inner_steps=150"; "--set"; "epg_pairs=2"; "--checkpoint-every"; "600"; "--out"; out ]
                let rc, out, err = CliTests.cli (args trained)
                Expect.equal rc 0 (sprintf "meta-train; stdout %s stderr %s" out err)
                Expect.stringContains out "2 ES epochs, 1200 env steps" "two epochs of 4 × 150 steps"
                let rows = ResultsTests.duck (sprintf "SELECT metric, env, count(*) FROM '%s' GROUP BY ALL ORDER BY ALL" (Path.Combine(trained, "metrics.parquet")))
                let count metric = rows |> List.filter (fun r -> r.[0] = metric) |> List.sumBy (fun r -> int r.[2])
                Expect.equal (count "fitness") 8 "one fitness row per inner loop (DuckDB)"
                Expect.equal (count "fitness_mean") 2 "one per epoch"
                Expect.equal (rows |> List.filter (fun r -> r.[0] = "fitness") |> List.map (fun r -> r.[1]) |> List.sort)
                    [ "InvertedPendulum-v2"; "Pendulum-v1" ] "inner loops on both envs"
                Expect.isTrue (Results.isComplete trained) "complete"
                let rc, out, err = CliTests.cli (args again)
                Expect.equal rc 0 (sprintf "again; stdout %s stderr %s" out err)
                let comparable (d: string) =
                    Results.readParquet (Path.Combine(d, "metrics.parquet")) |> List.map (fun r -> r.env, r.agent, r.env_step, r.metric, r.value)
                Expect.equal (comparable again) (comparable trained) "same seed, same rows"
                for env in [ "Pendulum-v1"; "MountainCarContinuous-v0" ] do
                    let rc, out, err =
                        CliTests.cli [ "meta-test"; "--algo"; "epg"; "--objective"; trained; "--env"; env; "--steps"; "1000"; "--out"; tested; "--force" ]
                    Expect.equal rc 0 (sprintf "meta-test on %s; stdout %s stderr %s" env out err)
                    let test = Results.readParquet (Path.Combine(tested, "metrics.parquet"))
                    Expect.isTrue (test |> List.forall (fun r -> r.phase = "meta-test" && r.env = env && r.variant = "epg")) (env + ": row keys")
                    Expect.isTrue (test |> List.exists (fun r -> r.metric = "last_loss")) (env + ": the fresh agent took steps on the loss")
                    let objective = Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(tested, "run.json"))).["objective"]
                    Expect.equal (objective.["checkpoint"].GetValue<int>()) 1 "the newest checkpoint"
                Expect.equal (Results.readParquet (Path.Combine(tested, "metrics.parquet")) |> List.filter (fun r -> r.metric = "episode_return") |> List.length)
                    1 "MountainCarContinuous: one 999-step episode in 1000 steps"
                CliTests.expectError [ "meta-train"; "--algo"; "epg"; "--envs"; "Pendulum-v1"; "--steps"; "1000"; "--out"; again; "--force" ]
                    [ "--steps 1000"; "one EPG epoch takes 2 × 4 pairs × 4000 inner steps = 32000 env steps" ]
                CliTests.expectError [ "meta-train"; "--algo"; "epg"; "--envs"; "Pendulum-v1"; "--set"; "epg_sigma=0"; "--out"; again; "--force" ]
                    [ "epg_sigma=0"; "positive" ]
                CliTests.expectError [ "meta-test"; "--objective"; trained; "--env"; "Pendulum-v1"; "--out"; again; "--force" ]
                    [ trained; "holds an epg meta-train run; meta-test it with --algo epg" ]
                CliTests.expectError [ "meta-test"; "--algo"; "epg"; "--objective"; tested; "--env"; "Pendulum-v1"; "--out"; again; "--force" ]
                    [ tested; "epg meta-test run, not an epg meta-train run" ]
            finally
                for d in [ trained; again; tested ] do Directory.Delete(d, true)
        }

        test "an epg meta-train killed with kill -9 resumes from its checkpoint to the numbers of an uninterrupted run" {
            CliTests.killAndResume "epg" (fun out extra ->
                [ "meta-train"; "--algo"; "epg"; "--envs"; "Pendulum-v1,MountainCarContinuous-v0"; "--steps"; "36000"
                  "--set"; "epg_inner_steps=300"; "--set"; "epg_pairs=2"; "--checkpoint-every"; "1200"; "--seed"; "4"
                  "--out"; out ] @ extra)
            |> ignore
        }
    ]
