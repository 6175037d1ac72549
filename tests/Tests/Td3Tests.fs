module MetaGenRL.Tests.Td3Tests

open System
open System.Collections.Generic
open Expecto
open TorchSharp
open MetaGenRL.Core.Config
open MetaGenRL.Core.Agents
open MetaGenRL.Core.Envs
open MetaGenRL.Core.Torch
open MetaGenRL.Core.Training
open MetaGenRL.Tests.TestUtil

let t64 (xs: float list) = torch.tensor(Array.ofList xs, dtype = torch.ScalarType.Float64)
let values (t: torch.Tensor) = t.to_type(torch.ScalarType.Float64).cpu().data<float>().ToArray()
let closeAll tol (actual: float[]) (expected: float list) what =
    Expect.equal actual.Length expected.Length (what + ": length")
    List.iteri (fun i e -> close tol actual.[i] e (sprintf "%s[%d]" what i)) expected

let withKeys (c: RunConfig) (kvs: (string * string) list) =
    kvs |> List.fold (fun (c: RunConfig) (k, v) -> c.With(k, v)) c

/// A tiny config: small nets, small batches, few random steps.
let tinyConfig =
    withKeys RunConfig.Default
        [ "policy_units", "16"; "critic_units", "16"; "buffer_sample_size", "4"; "recurrent_time_steps", "5"
          "policy_random_exploration_steps", "50"; "buffer_size", "10000" ]

/// Sets a parameter list (and nothing else) from flat values.
let setParams (ps: IReadOnlyList<torch.Tensor>) (vals: float list list) =
    use _ = torch.no_grad()
    for p, v in Seq.zip ps vals do
        p.copy_(torch.tensor(Array.ofList v, dtype = p.dtype).reshape(p.shape)) |> ignore

/// A linear (depth-1) agent in float64 with known weights: π(s) = tanh(0.5 s), Q1 = 0.1 s + 0.2 a, Q2 = 0.3 s − 0.4 a.
let linearAgent (quirks: bool) =
    let cfg = withKeys RunConfig.Default
                [ "policy_depth", "1"; "critic_depth", "1"; "buffer_sample_size", "1"; "recurrent_time_steps", "2"
                  "critic_noise", "0"; "paper_quirks", string quirks; "policy_random_exploration_steps", "0"; "buffer_size", "100" ]
    let agent = new Td3Agent(cfg, 1, [| -1f |], [| 1f |], 7L, torch.CPU, torch.ScalarType.Float64)
    for ps in [ agent.Policy; agent.PolicyTarget ] do setParams ps [ [ 0.5 ]; [ 0.0 ] ]
    for ps in [ agent.Q1; agent.Q1Target ] do setParams ps [ [ 0.1; 0.2 ]; [ 0.0 ] ]
    for ps in [ agent.Q2; agent.Q2Target ] do setParams ps [ [ 0.3; -0.4 ]; [ 0.0 ] ]
    agent

let runUpdates (agent: Td3Agent) n =
    [ for j in 0L .. int64 n - 1L do
        let r = agent.Update(j, true)
        yield r.CriticLoss.Value, (if r.PolicyUpdated then r.PolicyLoss.Value else nan) ]

/// Fills an agent's replay by acting in the point-mass env for `steps` steps.
let collect (agent: Td3Agent) (env: IEnv) steps =
    let mutable obs = env.Reset()
    for _ in 1 .. steps do
        let a = agent.Act obs
        let s = env.Step a
        agent.Observe(obs, a, s)
        obs <- if s.Done then env.Reset() else s.Observation

[<Tests>]
let tests =
    testList "TD3" [
        test "TD target with and without +d" {
            let r, d = t64 [ 1.0; 2.0; -1.0 ], t64 [ 0.0; 1.0; 0.0 ]
            let q1t, q2t = t64 [ 3.0; 5.0; -2.0 ], t64 [ 4.0; 1.0; -3.0 ]
            closeAll 1e-12 (values (Td3Agent.TdTarget(r, d, q1t, q2t, 0.9, true))) [ 1.0 + 0.9 * 3.0; 3.0; -1.0 + 0.9 * -3.0 ] "+d"
            closeAll 1e-12 (values (Td3Agent.TdTarget(r, d, q1t, q2t, 0.9, false))) [ 1.0 + 0.9 * 3.0; 2.0; -1.0 + 0.9 * -3.0 ] "no +d"
        }
        test "smoothing noise is clipped to ±noise_clip and the action to ±act_limit" {
            let pi = t64 [ 0.9; -0.2; 0.0; 0.1 ]
            let noise = t64 [ 5.0; -5.0; 0.3; -0.45 ]
            closeAll 1e-12 (values (Td3Agent.TargetAction(pi, noise, 0.5, 1.0))) [ 1.0; -0.7; 0.3; -0.35 ] "target action"
        }
        test "masked mean divides by B·T including padding; critic loss sums both critics" {
            let x, m = t64 [ 1.0; 2.0; 3.0; 4.0 ], t64 [ 1.0; 1.0; 0.0; 0.0 ]
            close 1e-12 ((Td3Agent.MaskedMean(x, m)).item<float>()) 0.75 "masked mean"
            let q1, q2, y = t64 [ 1.0; 2.0; 9.0; 9.0 ], t64 [ 0.0; 3.0; 9.0; 9.0 ], t64 [ 1.0; 1.0; 0.0; 0.0 ]
            close 1e-12 ((Td3Agent.CriticLoss(q1, q2, y, m)).item<float>()) ((0.0 + 1.0) / 4.0 + (1.0 + 4.0) / 4.0) "critic loss"
        }
        test "Polyak averaging on known tensors" {
            let target = ResizeArray [ t64 [ 1.0; 2.0 ]; t64 [ -4.0 ] ]
            let source = ResizeArray [ t64 [ 3.0; 4.0 ]; t64 [ 0.0 ] ]
            ParamOps.Polyak(target, source, 0.25)
            closeAll 1e-12 (values target.[0]) [ 1.5; 2.5 ] "tensor 0"
            closeAll 1e-12 (values target.[1]) [ -3.0 ] "tensor 1"
        }
        test "global-norm clipping scales by clip / max(norm, clip)" {
            let g = ResizeArray [ t64 [ 3.0; 4.0 ]; t64 [ 12.0 ] ]
            let norm = ParamOps.ClipByGlobalNorm(g, 1.0)
            close 1e-12 (norm.item<float>()) 13.0 "norm before clipping"
            closeAll 1e-12 (values g.[0]) [ 3.0 / 13.0; 4.0 / 13.0 ] "scaled 0"
            closeAll 1e-12 (values g.[1]) [ 12.0 / 13.0 ] "scaled 1"
            let small = ResizeArray [ t64 [ 0.3; 0.4 ] ]
            ParamOps.ClipByGlobalNorm(small, 1.0) |> ignore
            closeAll 1e-12 (values small.[0]) [ 0.3; 0.4 ] "below the clip: unchanged"
        }
        test "TF-Adam first and second steps match the closed form" {
            let p = t64 [ 1.0; -2.0 ]
            let adam = new TfAdam(ResizeArray [ p ], 0.1)
            adam.Step(ResizeArray [ t64 [ 0.5; -3.0 ] ])
            // step 1: lr_t = lr·sqrt(1−β2)/(1−β1); m = 0.1 g; v = 0.001 g²
            let step1 g = 0.1 * sqrt 0.001 / 0.1 * (0.1 * g) / (sqrt (0.001 * g * g) + 1e-8)
            closeAll 1e-12 (values p) [ 1.0 - step1 0.5; -2.0 - step1 -3.0 ] "after step 1"
            let before = values p
            adam.Step(ResizeArray [ t64 [ 1.0; 1.0 ] ])
            let step2 g1 g2 =
                let m = 0.9 * 0.1 * g1 + 0.1 * g2
                let v = 0.999 * 0.001 * g1 * g1 + 0.001 * g2 * g2
                0.1 * sqrt (1.0 - 0.999 ** 2.0) / (1.0 - 0.9 ** 2.0) * m / (sqrt v + 1e-8)
            closeAll 1e-12 (values p) [ before.[0] - step2 0.5 1.0; before.[1] - step2 -3.0 1.0 ] "after step 2"
        }
        test "MLP: Glorot-uniform weights, zero biases, LN gain 1; forward matches a hand computation" {
            let spec = MlpSpec(3, 4, 3, 2, true, "relu", MlpOutput.TanhScaled, 2.0)
            use gen = new torch.Generator(1UL, torch.CPU)
            let ps = Mlp.Init(spec, gen, torch.CPU, torch.ScalarType.Float64)
            Expect.equal ps.Count spec.ParameterCount "parameter count"
            Expect.equal spec.Scalars (int64 (4*3+4+8 + 4*4+4+8 + 2*4+2)) "scalars"
            let lim0 = sqrt (6.0 / 7.0)
            Expect.isTrue (values ps.[0] |> Array.forall (fun w -> abs w <= lim0)) "layer 0 within Glorot bound"
            Expect.isTrue ((values ps.[0] |> Array.map abs |> Array.max) > 0.5 * lim0) "layer 0 uses the range"
            Expect.isTrue (values ps.[1] |> Array.forall ((=) 0.0)) "zero bias"
            Expect.isTrue (values ps.[2] |> Array.forall ((=) 1.0)) "LN gain 1"
            Expect.isTrue (values ps.[3] |> Array.forall ((=) 0.0)) "LN bias 0"
            // hand-computed forward of a 1-hidden-layer net with LN (depth 2, 2 units → 1 output)
            let spec2 = MlpSpec(1, 2, 2, 1, true, "relu", MlpOutput.Linear)
            let w0 = (t64 [ 1.0; -1.0 ]).reshape(2L, 1L)
            let w1 = (t64 [ 1.0; 1.0 ]).reshape(1L, 2L)
            let p2 = ResizeArray [ w0; t64 [ 0.0; 3.0 ]; t64 [ 2.0; 1.0 ]; t64 [ 0.5; 0.0 ]; w1; t64 [ 0.25 ] ]
            let x = (t64 [ 2.0 ]).reshape(1L, 1L)
            // hidden = relu([2, 1]) = [2, 1]; LN: mean 1.5, var 0.25 → [1, −1] (ε 1e-12); affine → [2.5, −1]; out = 1.5 + 0.25
            close 1e-9 ((Mlp.Forward(spec2, p2, x)).item<float>()) 1.75 "forward"
        }
        test "critic step on a hand-computed batch, with paper quirks (terminal, +d)" {
            use agent = linearAgent true
            // one 1-step episode ending by time limit: with quirks it is stored as terminal
            agent.Observe([| 1f |], [| 0.5f |], StepResult([| 3f |], 2.0, false, true))
            let struct (loss, _) = agent.CriticStep(true)
            let q1, q2 = 0.1 * 1.0 + 0.2 * 0.5, 0.3 * 1.0 - 0.4 * 0.5
            let y = 2.0 + 1.0                      // r + γ·0·… + d
            close 1e-9 loss.Value (((q1 - y) ** 2.0 + (q2 - y) ** 2.0) / 2.0) "loss over B·T = 2 (one padded step)"
        }
        test "critic step without quirks: truncation bootstraps through the smoothed target action" {
            use agent = linearAgent false
            agent.Observe([| 1f |], [| 0.5f |], StepResult([| 3f |], 2.0, false, true))
            let struct (loss, q1mean) = agent.CriticStep(true)
            let aT = tanh (0.5 * 3.0)
            let y = 2.0 + 0.99 * min (0.1 * 3.0 + 0.2 * aT) (0.3 * 3.0 - 0.4 * aT)
            let q1, q2 = 0.2, 0.1
            close 1e-9 loss.Value (((q1 - y) ** 2.0 + (q2 - y) ** 2.0) / 2.0) "loss"
            close 1e-9 q1mean.Value q1 "q1 mean over valid steps"
        }
        test "policy loss is −masked mean Q1(s, π(s)) and the policy step is clipped Adam" {
            use agent = linearAgent true
            agent.Observe([| 1f |], [| 0.5f |], StepResult([| 3f |], 2.0, true, false))
            let before = values agent.Policy.[0]
            let loss = agent.PolicyStep(true)
            close 1e-9 loss.Value (-(0.1 * 1.0 + 0.2 * tanh 0.5) / 2.0) "policy loss"
            // first Adam step moves each parameter by ≈ lr in the direction of −grad (dQ/dw > 0 ⇒ w grows)
            close 1e-6 ((values agent.Policy.[0]).[0] - before.[0]) 1e-3 "first step size"
        }
        test "truncation is stored as terminal only with paper_quirks" {
            for quirks, expected in [ true, 1f; false, 0f ] do
                use agent = linearAgent quirks
                agent.Observe([| 1f |], [| 0f |], StepResult([| 2f |], 0.0, false, true))
                let b = agent.Replay.Sample(1, 2, Random 0)
                Expect.equal (b.Done.[0], b.Truncated.[0], b.Terminated.[0]) (expected, 1f, 0f) (sprintf "quirks=%b" quirks)
        }
        test "exploration: uniform in the box first, then π(s) + noise clipped to the box" {
            let cfg = withKeys tinyConfig [ "policy_random_exploration_steps", "5"; "policy_exploration", "10" ]
            use agent = new Td3Agent(cfg, 2, [| -0.5f; -2f |], [| 0.5f; 2f |], 3L, torch.CPU)
            for i in 1 .. 10 do
                let a = agent.Act [| 0.1f; 0.2f |]
                Expect.isTrue (abs a.[0] <= 0.5f && abs a.[1] <= 2f) (sprintf "step %d inside the box" i)
                agent.CountEnvStep()
        }
        test "same seed twice gives bitwise-identical losses" {
            let run () =
                use env = new PointMassEnv(11)
                use agent = new Td3Agent(tinyConfig, 2, env.ActionLow, env.ActionHigh, 42L, torch.CPU)
                collect agent env 200
                runUpdates agent 10
            let a, b = run (), run ()
            Expect.equal (List.length a) 10 "ten updates"
            for (c1, p1), (c2, p2) in List.zip a b do
                Expect.equal (BitConverter.DoubleToInt64Bits c1) (BitConverter.DoubleToInt64Bits c2) "critic loss bitwise"
                Expect.equal (BitConverter.DoubleToInt64Bits p1) (BitConverter.DoubleToInt64Bits p2) "policy loss bitwise"
            Expect.isTrue (a |> List.forall (fun (c, _) -> Double.IsFinite c)) "finite"
            use env = new PointMassEnv(11)
            use other = new Td3Agent(tinyConfig, 2, env.ActionLow, env.ActionHigh, 43L, torch.CPU)
            collect other env 200
            Expect.notEqual (runUpdates other 10) a "another seed differs"
        }
        test "updates leak no tensors" {
            use env = new PointMassEnv(5)
            use agent = new Td3Agent(tinyConfig, 2, env.ActionLow, env.ActionHigh, 1L, torch.CPU)
            collect agent env 200
            runUpdates agent 4 |> ignore
            let live0 = DisposeScopeManager.Statistics.ThreadTotalLiveCount
            for j in 0L .. 199L do agent.Update(j, j % 7L = 0L) |> ignore
            agent.ActDeterministic [| 0.1f; 0.0f |] |> ignore
            Expect.equal DisposeScopeManager.Statistics.ThreadTotalLiveCount live0 "live tensors unchanged after 200 updates"
        }
        test "smoke: the trainer runs on the point mass and reports metrics" {
            let cfg = withKeys tinyConfig [ "policy_random_exploration_steps", "100" ]
            let metrics = ResizeArray<Metric>()
            let progress = ResizeArray<int64>()
            use env = new PointMassEnv(3, 40)
            let s = Td3Trainer.Train(cfg, env, TrainOptions("PointMass-v0", 400L, 9, LossLogEvery = 20),
                                     Action<Metric>(metrics.Add), { new IProgress<int64> with member _.Report v = progress.Add v })
            Expect.equal s.EnvSteps 400L "steps"
            Expect.isGreaterThanOrEqual s.Episodes 9 "episodes of ≤ 40 steps"
            let names = metrics |> Seq.map (fun m -> m.Name) |> Set.ofSeq
            for n in [ "episode_return"; "episode_length"; "critic_loss"; "policy_loss"; "q1_mean" ] do
                Expect.contains names n (sprintf "metric %s" n)
            Expect.equal (metrics |> Seq.filter (fun m -> m.Name = "episode_return") |> Seq.length) s.Episodes "one return per episode"
            Expect.isTrue (metrics |> Seq.forall (fun m -> Double.IsFinite m.Value)) "finite metrics"
            Expect.isNonEmpty progress "progress reported"
            use cts = new Threading.CancellationTokenSource()
            cts.Cancel()
            use env2 = new PointMassEnv(3, 40)
            let s2 = Td3Trainer.Train(cfg, env2, TrainOptions("PointMass-v0", 400L, 9), Action<Metric>(ignore), null, cts.Token)
            Expect.equal s2.EnvSteps 0L "a cancelled run stops at once"
        }
        test "trainer: one update iteration per collected step, policy on every 2nd" {
            let cfg = withKeys tinyConfig [ "policy_random_exploration_steps", "100" ]
            let metrics = ResizeArray<Metric>()
            use env = new PointMassEnv(4, 40)
            Td3Trainer.Train(cfg, env, TrainOptions("PointMass-v0", 400L, 1, LossLogEvery = 1), Action<Metric>(metrics.Add)) |> ignore
            let count n = metrics |> Seq.filter (fun m -> m.Name = n) |> Seq.length
            Expect.equal (count "critic_loss") 400 "a critic step per env step"
            Expect.isTrue (count "policy_loss" >= 200 && count "policy_loss" <= 215) (sprintf "about half as many policy steps (%d)" (count "policy_loss"))
        }
    ]
