module MetaGenRL.Tests.MetaGradientTests

open System
open System.IO
open Expecto
open TorchSharp
open MetaGenRL.Core.Config
open MetaGenRL.Core.Agents
open MetaGenRL.Core.Objective
open MetaGenRL.Core.Meta
open MetaGenRL.Core.Training
open MetaGenRL.Tests.TestUtil
open MetaGenRL.Tests.ObjectiveTests

/// SIMPLE_CONFIG-sized nets (depth 2, 5 units), T = 3, a small objective with LN and a mixed activation. All
/// activations are smooth (tanh; tanh/square in L_α): the meta-loss depends on ∂L_α/∂π, which is a step function of
/// α at a ReLU kink, so finite differences across a kink would see a jump.
let tinyMetaConfig (kvs: (string * string) list) =
    withKeys RunConfig.Default
        ([ "policy_depth", "2"; "policy_units", "5"; "critic_depth", "2"; "critic_units", "5"
           "policy_activation", "tanh"; "critic_activation", "tanh"; "recurrent_time_steps", "3"; "buffer_sample_size", "2"
           "obj_func_units", "8"; "obj_func_lstm_units", "8"; "obj_func_input_transform_units", "8"
           "obj_func_input_transform_out_units", "4"; "buffer_size", "100"; "obj_func_activation", "tanh,square" ] @ kvs)

/// (steps+1)·B random windows of length T with one short window.
let randomBatch (gen: torch.Generator) (n: int) (t: int) (obs: int) (act: int) =
    let lens = [ for i in 0 .. n - 1 -> if i = 1 then t - 1 else t ]
    let x = randomInputs gen n t act lens
    let o = torch.randn([| int64 n; int64 t; int64 obs |], dtype = f64, generator = gen) * x.Mask.unsqueeze(-1)
    let o2 = torch.randn([| int64 n; int64 t; int64 obs |], dtype = f64, generator = gen) * x.Mask.unsqueeze(-1)
    TrajectoryTensors(o, x.Act, x.Rew, o2, x.Done, x.Done, torch.zeros_like(x.Done), x.Mask)

/// A float64 agent whose policy biases are small random numbers instead of TF's zeros. With zero biases the
/// policy maps the zero observations of padding to exactly 0, padding actions are 0 too, and the pair (0, 0)
/// reaches L_α's LayerNorm as a constant vector, whose Jacobian is ~1/sqrt(1e-12) per layer. Under paper_quirks
/// the padding feeds the backward LSTM, so such a freshly initialised agent gets huge inner gradients (the
/// official code shares this). Trained policies never map to exact zeros; the tests use such a policy.
let perturbedAgent (cfg: RunConfig) (seed: int) =
    let agent = new Td3Agent(cfg, 3, [| -1f; -1f |], [| 1f; 1f |], int64 seed, torch.CPU, f64)
    use gen = new torch.Generator(uint64 seed + 100UL, torch.CPU)
    (use _ = torch.no_grad()
     for p in agent.Policy do
        if p.shape.Length = 1 then p.add_(torch.randn(p.shape, dtype = f64, generator = gen) * 0.1) |> ignore)
    agent

/// Central-difference check of ∂(−J)/∂α on a sample of α coordinates (relative error ≤ 1e-6).
let checkMetaGradient (cfg: RunConfig) (seed: int) =
    use agent = perturbedAgent cfg seed
    let spec = ObjectiveSpec.FromConfig cfg
    let alpha = makeAlpha spec (int64 seed + 1L)
    use gen = new torch.Generator(uint64 seed + 2UL, torch.CPU)
    let o = InnerStepOptions.FromConfig cfg
    let batch = randomBatch gen ((o.Steps + 1) * cfg.BufferSampleSize) cfg.RecurrentTimeSteps 3 2
    let lossOf () = let struct (l, _, _) = FuturePolicyValue.MetaLoss(agent, spec, alpha, batch, o) in l
    let grads = FuturePolicyValue.Gradient(lossOf (), alpha) |> Seq.map values |> Array.ofSeq
    let gmax = grads |> Array.map (Array.map abs >> Array.max) |> Array.max
    Expect.isGreaterThan gmax 1e-8 "the meta-gradient is not zero"
    let rng = Random(seed)
    let mutable checkedCount = 0
    for pi in 0 .. alpha.Count - 1 do
        let flat = alpha.[pi].detach().view(-1L)
        let n = int (flat.numel())
        for i in (if n <= 2 then [ 0 .. n - 1 ] else [ rng.Next n; rng.Next n ]) do
            let orig = flat.[int64 i].ToDouble()
            let eval (v: float) =
                (use _ = torch.no_grad()
                 flat.[int64 i] <- torch.tensor(v, dtype = f64))
                (lossOf ()).ToDouble()
            // central differences with one Richardson step (error O(h⁴))
            let d (h: float) = (eval (orig + h) - eval (orig - h)) / (2.0 * h)
            let h = 1e-4
            let fd = (4.0 * d (h / 2.0) - d h) / 3.0
            eval orig |> ignore
            let an = grads.[pi].[i]
            let scale = max (max (abs an) (abs fd)) (1e-3 * gmax)
            if abs (an - fd) / scale > 1e-6 then
                failtestf "∂(−J)/∂α: tensor %d [%d]: analytic %.12g, finite difference %.12g (rel %.3g)" pi i an fd (abs (an - fd) / scale)
            checkedCount <- checkedCount + 1
    Expect.isGreaterThan checkedCount 40 "coordinates checked"

let smokeConfig =
    withKeys RunConfig.Default
        [ "policy_units", "16"; "critic_units", "16"; "buffer_sample_size", "4"; "recurrent_time_steps", "5"
          "policy_random_exploration_steps", "30"; "buffer_size", "5000"; "obj_func_anneal_steps", "40"
          "obj_func_units", "8"; "obj_func_lstm_units", "8"; "obj_func_input_transform_units", "8" ]

/// Two collect/update rounds, then one meta-gradient.
let twoRounds (mode: MemberMode) (seed: int) =
    use m = new MetaAgent(smokeConfig, new PointMassEnv(seed, 30), 0, int64 seed, "cpu", mode)
    let metrics = ResizeArray<Metric>()
    let mutable target = 1L
    for _ in 1 .. 2 do
        let c = m.Collect(target, Action<Metric>(metrics.Add))
        target <- int64 (c.ShortestEpisode.GetValueOrDefault 1)
        for j in 0L .. c.Steps - 1L do m.Update(j, Action<Metric>(metrics.Add))
    let g = m.ObjectiveGradient(Action<Metric>(metrics.Add))
    g, m.ObjectiveSize, metrics, m.ObjectiveParameters()

[<Tests>]
let tests =
    testList "MetaGradient" [
        test "second-order meta-gradient ∂(−J)/∂α matches central differences (SGD inner step, float64)" {
            checkMetaGradient (tinyMetaConfig [ "obj_func_second_order_stepsize", "0.05" ]) 21
        }
        test "second-order meta-gradient matches central differences (differentiable Adam, 2 inner steps)" {
            checkMetaGradient (tinyMetaConfig [ "obj_func_second_order_adam", "true"; "obj_func_second_order_steps", "2"
                                                "obj_func_second_order_stepsize", "0.01" ]) 33
        }
        test "Compute clips to clip_gradient and reports the diagnostics" {
            let cfg = tinyMetaConfig [ "obj_func_second_order_stepsize", "0.05"; "clip_gradient", "1e-4" ]
            use agent = perturbedAgent cfg 4
            let spec = ObjectiveSpec.FromConfig cfg
            let alpha = makeAlpha spec 5L
            use gen = new torch.Generator(6UL, torch.CPU)
            let batch = randomBatch gen 4 3 3 2
            let r = FuturePolicyValue.Compute(agent, spec, alpha, batch, InnerStepOptions.FromConfig cfg)
            Expect.equal (int64 r.Gradient.Length) spec.Scalars "length"
            let norm = r.Gradient |> Array.sumBy (fun x -> float x * float x) |> sqrt
            Expect.isGreaterThan r.GradientNorm 1e-4 "raw norm above the clip"
            close 1e-8 norm 1e-4 "clipped to the global norm"
            Expect.isTrue (Double.IsFinite r.ObjectiveLoss && Double.IsFinite r.PolicyValueGain && abs r.CriticCorrelation <= 1.0) "finite diagnostics"
        }
        test "MetaAgent: 2 rounds on a point mass give a finite gradient of the right length; same seed ⇒ same gradient" {
            let g1, size, metrics, _ = twoRounds MemberMode.MetaTrain 3
            let g2, _, _, _ = twoRounds MemberMode.MetaTrain 3
            Expect.isNotNull g1 "meta-train computes a gradient"
            Expect.equal g1.Length size "length"
            Expect.isTrue (g1 |> Array.forall Single.IsFinite) "finite"
            Expect.isTrue (g1 |> Array.exists (fun x -> x <> 0f)) "non-zero"
            Expect.sequenceEqual g2 g1 "deterministic"
            let names = metrics |> Seq.map (fun m -> m.Name) |> set
            for n in [ "episode_return"; "episode_length"; "critic_loss"; "objective_loss"; "policy_value_gain"; "objective_critic_correlation" ] do
                Expect.contains names n (sprintf "metric %s" n)
        }
        test "MetaAgent: frozen and fixed members return no gradient; α loads and flattens" {
            let g, size, _, _ = twoRounds MemberMode.MetaTest 4
            Expect.isNull g "meta-test is frozen"
            Expect.isGreaterThan size 0 "meta-test has α"
            let g2, size2, _, _ = twoRounds MemberMode.Reinforce 4
            Expect.isNull g2 "reinforce has no gradient"
            Expect.equal size2 0 "reinforce has no α"
            use m = new MetaAgent(smokeConfig, new PointMassEnv(1, 30), 0, 1L, "cpu", MemberMode.MetaTrain)
            let a = Array.init m.ObjectiveSize (fun i -> float32 (i % 7) * 0.01f)
            m.LoadObjective a
            Expect.sequenceEqual (m.ObjectiveParameters()) a "round trip"
        }
        test "MetaAgent: a saved state restored into a fresh member (other seeds) continues bit-for-bit" {
            let noMetrics = Action<Metric>(ignore)
            use m = new MetaAgent(smokeConfig, new PointMassEnv(1, 30), 0, 1L, "cpu", MemberMode.MetaTrain)
            m.Collect(40L, noMetrics) |> ignore
            for j in 0L .. 3L do m.Update(j, noMetrics)
            Expect.isFalse m.EpisodeInProgress "collection ends at an episode boundary"
            let state = m.SaveState(true)
            use m2 = new MetaAgent(smokeConfig, new PointMassEnv(99, 30), 0, 7L, "cpu", MemberMode.MetaTrain)
            m2.LoadState state
            Expect.sequenceEqual (m2.ObjectiveParameters()) (m.ObjectiveParameters()) "α"
            Expect.sequenceEqual (m2.ObjectiveGradient noMetrics) (m.ObjectiveGradient noMetrics) "next meta-gradient"
            let returns (a: MetaAgent) =
                let rows = ResizeArray<Metric>()
                a.Collect(30L, Action<Metric>(rows.Add)) |> ignore
                for j in 0L .. 3L do a.Update(j, Action<Metric>(rows.Add))
                rows |> Seq.map (fun r -> r.Name, r.Value) |> List.ofSeq
            Expect.equal (returns m2) (returns m) "next episode and updates"
            Expect.sequenceEqual (m2.SaveState true) (m.SaveState true) "identical state afterwards"
            throwsContaining<InvalidDataException> "Pendulum-v1" "state of another env"
                (fun () -> (use p = new MetaAgent(smokeConfig, "Pendulum-v1", 0, 1L, "cpu", MemberMode.MetaTrain)
                            p.LoadState state))
        }
        test "ObjectiveTrainer runs every single-agent algorithm on the TD3 schedule with its metrics" {
            let alpha =
                use m = new MetaAgent(smokeConfig, new PointMassEnv(1, 30), 0, 1L, "cpu", MemberMode.MetaTrain)
                m.ObjectiveParameters()
            for algo in ObjectiveTrainer.Algorithms do
                let metrics = ResizeArray<Metric>()
                let opts = TrainOptions("PointMass-v0", 120L, 5, LossLogEvery = 10)
                let s = ObjectiveTrainer.Train(smokeConfig, algo, (if algo = "meta-test" then alpha else null), new PointMassEnv(5, 30), opts, Action<Metric>(metrics.Add))
                Expect.equal s.EnvSteps 120L (algo + ": steps")
                let names = metrics |> Seq.map (fun m -> m.Name) |> set
                Expect.contains names "critic_loss" (algo + ": critic_loss")
                Expect.contains names "policy_loss" (algo + ": policy_loss")
                if algo <> "td3" && algo <> "ddpg" then Expect.contains names "policy_obj_loss" (algo + ": policy_obj_loss")
                Expect.isTrue (metrics |> Seq.forall (fun m -> Double.IsFinite m.Value)) (algo + ": finite")
            throwsContaining<ArgumentException> "unknown algorithm" "bad algo" (fun () ->
                ObjectiveTrainer.Train(smokeConfig, "ppo", null, TrainOptions("Pendulum-v1", 10L, 1), Action<Metric>(ignore)) |> ignore)
        }
        test "MetaAgent resets lazily: after Collect the env waits at an episode boundary" {
            use env = new PointMassEnv(8, 10)
            use m = new MetaAgent(smokeConfig, env, 0, 8L, "cpu", MemberMode.Td3)
            let c = m.Collect(15L, Action<Metric>(ignore))
            Expect.isGreaterThanOrEqual c.Steps 15L "≥ target"
            Expect.equal (c.Steps % 10L) 0L "whole 10-step episodes (the point mass rarely leaves |x| ≤ 3)"
            Expect.isFalse m.EpisodeInProgress "no reset until the next step"
        }
    ]
