module MetaGenRL.Tests.MetaGradientTests

open System
open System.IO
open Expecto
open TorchSharp
open MetaGenRL.Core.Envs
open MetaGenRL.Core.Config
open MetaGenRL.Core.Agents
open MetaGenRL.Core.Objective
open MetaGenRL.Core.Engine
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

/// One slot's (steps+1)·B random windows of length T with one short window: [1, n, T, …].
let randomBatch (gen: torch.Generator) (n: int) (t: int) (obs: int) (act: int) =
    let lens = [ for i in 0 .. n - 1 -> if i = 1 then t - 1 else t ]
    let x = randomInputs gen n t act lens
    let o = torch.randn([| 1L; int64 n; int64 t; int64 obs |], dtype = f64, generator = gen) * x.Mask.unsqueeze(-1)
    let o2 = torch.randn([| 1L; int64 n; int64 t; int64 obs |], dtype = f64, generator = gen) * x.Mask.unsqueeze(-1)
    TrajectoryTensors(o, x.Act, x.Rew, o2, x.Done, x.Done, torch.zeros_like(x.Done), x.Mask)

/// Slots' batches stacked: [K, n, T, …].
let stackBatches (bs: TrajectoryTensors list) =
    let cat (f: TrajectoryTensors -> torch.Tensor) = torch.cat(bs |> List.map f |> Array.ofList, 0L)
    TrajectoryTensors(cat (fun b -> b.Obs), cat (fun b -> b.Act), cat (fun b -> b.Rew), cat (fun b -> b.NextObs),
                      cat (fun b -> b.Done), cat (fun b -> b.Terminated), cat (fun b -> b.Truncated), cat (fun b -> b.Mask))

/// A float64 agent whose policy biases are small random numbers instead of TF's zeros. With zero biases the
/// policy maps the zero observations of padding to exactly 0, padding actions are 0 too, and the pair (0, 0)
/// reaches L_α's LayerNorm as a constant vector, whose Jacobian is ~1/sqrt(1e-12) per layer. Under paper_quirks
/// the padding feeds the backward LSTM, so such a freshly initialised agent gets huge inner gradients (the
/// official code shares this). Trained policies never map to exact zeros; the tests use such a policy.
let perturbedGroup (cfg: RunConfig) (seeds: int list) =
    let agent = new Td3Group(cfg, 3, [| -1f; -1f |], [| 1f; 1f |], seeds |> List.map int64 |> Array.ofList, torch.CPU, f64)
    seeds |> List.iteri (fun k seed ->
        use gen = new torch.Generator(uint64 seed + 100UL, torch.CPU)
        use _ = torch.no_grad()
        for p in agent.Policy do
            if p.shape.Length = 2 then p.[int64 k].add_(torch.randn(p.[int64 k].shape, dtype = f64, generator = gen) * 0.1) |> ignore)
    agent

let perturbedAgent (cfg: RunConfig) (seed: int) = perturbedGroup cfg [ seed ]

/// Central-difference check of ∂(−J)/∂α on a sample of α coordinates (relative error ≤ 1e-6).
let checkMetaGradient (cfg: RunConfig) (seed: int) =
    use agent = perturbedAgent cfg seed
    let spec = ObjectiveSpec.FromConfig cfg
    let alpha = makeAlpha spec (int64 seed + 1L)
    use gen = new torch.Generator(uint64 seed + 2UL, torch.CPU)
    let o = InnerStepOptions.FromConfig cfg
    let batch = randomBatch gen ((o.Steps + 1) * cfg.BufferSampleSize) cfg.RecurrentTimeSteps 3 2
    let lossOf () = let struct (l, _, _) = FuturePolicyValue.MetaLoss(agent, spec, alpha, batch, o) in l.sum()
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

let on1 = [| true |]
let unlimited = [| Int64.MaxValue |]

/// A one-agent group on a point mass.
let pointMassGroup (algo: Algorithm) (envSeed: int) (seed: int64) =
    new AgentGroup(smokeConfig, [| new PointMassEnv(envSeed, 30) :> MetaGenRL.Core.Envs.IEnv |], [| 0 |], [| seed |], "cpu", algo, ownsEnvs = true)

/// Two collect/update rounds, then one meta-gradient.
let twoRounds (algo: Algorithm) (seed: int) =
    use m = pointMassGroup algo seed (int64 seed)
    let metrics = ResizeArray<Metric>()
    let mutable target = 1L
    for _ in 1 .. 2 do
        let c = (m.Collect([| target |], unlimited, Action<Metric>(metrics.Add))).[0]
        target <- int64 (c.ShortestEpisode.GetValueOrDefault 1)
        for j in 0L .. c.Steps - 1L do m.Update(j, on1, Action<Metric>(metrics.Add)) |> ignore
    let g = (m.ObjectiveGradients(on1, Action<Metric>(metrics.Add))).[0].Gradient
    g, m.ObjectiveSize, metrics, m.ObjectiveParameters 0

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
            let r = FuturePolicyValue.Compute(agent, spec, alpha, batch, InnerStepOptions.FromConfig cfg).[0]
            Expect.equal (int64 r.Gradient.Length) spec.Scalars "length"
            let norm = r.Gradient |> Array.sumBy (fun x -> float x * float x) |> sqrt
            Expect.isGreaterThan r.GradientNorm 1e-4 "raw norm above the clip"
            close 1e-8 norm 1e-4 "clipped to the global norm"
            Expect.isTrue (Double.IsFinite r.ObjectiveLoss && Double.IsFinite r.PolicyValueGain && abs r.CriticCorrelation <= 1.0) "finite diagnostics"
        }
        test "a group of two gives each agent the meta-gradient it gets alone (float64, stacked α)" {
            let cfg = tinyMetaConfig [ "obj_func_second_order_stepsize", "0.05" ]
            let spec = ObjectiveSpec.FromConfig cfg
            use gen = new torch.Generator(8UL, torch.CPU)
            let o = InnerStepOptions.FromConfig cfg
            let n = (o.Steps + 1) * cfg.BufferSampleSize
            let b0, b1 = randomBatch gen n 3 3 2, randomBatch gen n 3 3 2
            let alone seed (b: TrajectoryTensors) =
                use g = perturbedAgent cfg seed
                let alpha = makeAlpha spec 5L
                FuturePolicyValue.Compute(g, spec, alpha, b, o).[0]
            use both = perturbedGroup cfg [ 21; 22 ]
            let alpha2 = ObjectiveNetwork.Init(spec, [| new torch.Generator(5UL, torch.CPU); new torch.Generator(5UL, torch.CPU) |], torch.CPU, f64)
            let rs = FuturePolicyValue.Compute(both, spec, alpha2, stackBatches [ b0; b1 ], o)
            for k, r1 in [ 0, alone 21 b0; 1, alone 22 b1 ] do
                let r2 = rs.[k]
                // float32 output of float64 math: the batched kernels' rounding (~1e-15) is far below float32's 6e-8
                Expect.isGreaterThan (r1.Gradient |> Array.map abs |> Array.max) 0f (sprintf "slot %d: non-zero" k)
                Array.iteri2 (fun i (a: float32) (b: float32) -> close (1e-6 * (abs (float b) + 1e-3)) (float a) (float b) (sprintf "slot %d ∇α[%d]" k i)) r2.Gradient r1.Gradient
                close 1e-10 r2.ObjectiveLoss r1.ObjectiveLoss (sprintf "slot %d −J" k)
            Expect.isTrue (rs.[0].Gradient <> rs.[1].Gradient) "the two agents' gradients differ"
        }
        test "AgentGroup: 2 rounds on a point mass give a finite gradient of the right length; same seed ⇒ same gradient" {
            let g1, size, metrics, _ = twoRounds Algorithm.MetaTrain 3
            let g2, _, _, _ = twoRounds Algorithm.MetaTrain 3
            Expect.isNotNull g1 "meta-train computes a gradient"
            Expect.equal g1.Length size "length"
            Expect.isTrue (g1 |> Array.forall Single.IsFinite) "finite"
            Expect.isTrue (g1 |> Array.exists (fun x -> x <> 0f)) "non-zero"
            Expect.sequenceEqual g2 g1 "deterministic"
            let names = metrics |> Seq.map (fun m -> m.Name) |> set
            for n in [ "episode_return"; "episode_length"; "episode_action_extremity"; "critic_loss"; "objective_loss"; "policy_value_gain"; "objective_critic_correlation" ] do
                Expect.contains names n (sprintf "metric %s" n)
            for m in metrics do
                if m.Name = "episode_action_extremity" then
                    Expect.isTrue (m.Value >= 0.0 && m.Value <= 1.0) (sprintf "extremity %g in [0, 1] (actions are clipped to the box)" m.Value)
        }
        test "AgentGroup: frozen and fixed algorithms return no gradient; α loads and flattens" {
            let g, size, _, _ = twoRounds Algorithm.MetaTest 4
            Expect.isNull g "meta-test is frozen"
            Expect.isGreaterThan size 0 "meta-test has α"
            let g2, size2, _, _ = twoRounds Algorithm.Reinforce 4
            Expect.isNull g2 "reinforce has no gradient"
            Expect.equal size2 0 "reinforce has no α"
            use m = pointMassGroup Algorithm.MetaTrain 1 1L
            let a = Array.init m.ObjectiveSize (fun i -> float32 (i % 7) * 0.01f)
            m.LoadObjective a
            Expect.sequenceEqual (m.ObjectiveParameters 0) a "round trip"
        }
        test "AgentGroup: a saved slot restored into a fresh group (other seeds) continues bit-for-bit" {
            let noMetrics = Action<Metric>(ignore)
            use m = pointMassGroup Algorithm.MetaTrain 1 1L
            m.Collect([| 40L |], unlimited, noMetrics) |> ignore
            for j in 0L .. 3L do m.Update(j, on1, noMetrics) |> ignore
            let state = m.SaveState(0, true)
            // the same computation (a group of one) from the restored state: bitwise
            use m1 = pointMassGroup Algorithm.MetaTrain 99 7L
            m1.LoadState(0, state)
            Expect.sequenceEqual (m1.ObjectiveParameters 0) (m.ObjectiveParameters 0) "α"
            // restored into slot 1 of a group of two: slot 0 untouched, and the same numbers up to the rounding of the
            // batched kernels (float32, ε 6e-8, through the ~10² ops of the second-order chain: 1e-4 relative). Each
            // element is a sum of terms of either sign, so its rounding scales with the terms, i.e. with the gradient's
            // largest elements, not with the element itself: the bound is 1e-4 of max |∇α|.
            let envs : MetaGenRL.Core.Envs.IEnv[] = [| new PointMassEnv(98, 30); new PointMassEnv(99, 30) |]
            use m2 = new AgentGroup(smokeConfig, envs, [| 3; 4 |], [| 6L; 7L |], "cpu", Algorithm.MetaTrain, ownsEnvs = true)
            let other = m2.SaveState(0, true)
            m2.LoadState(1, state)
            Expect.sequenceEqual (m2.ObjectiveParameters 1) (m.ObjectiveParameters 0) "α in slot 1"
            Expect.sequenceEqual (m2.SaveState(0, true)) other "the other slot is untouched"
            let g = (m.ObjectiveGradients(on1, noMetrics)).[0].Gradient
            Expect.sequenceEqual ((m1.ObjectiveGradients(on1, noMetrics)).[0].Gradient) g "next meta-gradient, bitwise"
            let g2 = (m2.ObjectiveGradients([| false; true |], noMetrics)).[1].Gradient
            let scale = g |> Array.map (fun x -> abs (float x)) |> Array.max
            Expect.isGreaterThan scale 1e-3 "a meta-gradient of some size"
            Array.iteri2 (fun i (a: float32) (b: float32) -> close (1e-4 * scale) (float a) (float b) (sprintf "slot 1 ∇α[%d] (max |∇α| %g)" i scale)) g2 g
            let returns (a: AgentGroup) =
                let rows = ResizeArray<Metric>()
                a.Collect([| 30L |], unlimited, Action<Metric>(rows.Add)) |> ignore
                for j in 0L .. 3L do a.Update(j, on1, Action<Metric>(rows.Add)) |> ignore
                rows |> Seq.map (fun r -> r.Name, r.Value) |> List.ofSeq
            Expect.equal (returns m1) (returns m) "next episode and updates"
            Expect.sequenceEqual (m1.SaveState(0, true)) (m.SaveState(0, true)) "identical state afterwards"
            throwsContaining<InvalidDataException> "Pendulum-v1" "state of another env"
                (fun () -> (use p = new AgentGroup(smokeConfig, "Pendulum-v1", [| 0 |], [| 1L |], "cpu", Algorithm.MetaTrain)
                            p.LoadState(0, state)))
        }
        test "agent lifetimes: staggered first lives, a fresh agent from the life's seed, steps and α carry on, state round-trips" {
            // population of 2 (members 0 and 1), lifetime 100: member 0's first life is 100 steps, member 1's 50
            let noMetrics = Action<Metric>(ignore)
            let cfg = withKeys smokeConfig [ "agent_lifetime", "100"; "agent_count", "2" ]
            let group () =
                let envs : MetaGenRL.Core.Envs.IEnv[] = [| new PointMassEnv(1, 30); new PointMassEnv(2, 30) |]
                new AgentGroup(cfg, envs, [| 0; 1 |], [| 10L; 11L |], "cpu", Algorithm.MetaTrain, ownsEnvs = true)
            use g = group ()
            Expect.equal [ g.LifeLength(0, 0); g.LifeLength(1, 0); g.LifeLength(1, 1) ] [ 100L; 50L; 100L ] "staggered first lives, then the lifetime"
            let rows = ResizeArray<Metric>()
            let both = [| true; true |]
            let collect () = g.Collect([| 30L; 30L |], [| Int64.MaxValue; Int64.MaxValue |], Action<Metric>(rows.Add)) |> ignore
            for round in 0 .. 1 do
                collect ()
                for j in 0L .. 29L do g.Update(j, both, noMetrics) |> ignore
            Expect.equal g.EnvSteps [| 60L; 60L |] "two rounds of one 30-step episode"
            Expect.isEmpty (rows |> Seq.filter (fun r -> r.Name = "agent_reset")) "no life has ended before the third collect starts"
            let alphaBefore = g.ObjectiveParameters 1
            collect ()   // member 1's life (50 steps) is over at 60: it starts life 1; member 0 (100) goes on
            let resets = rows |> Seq.filter (fun r -> r.Name = "agent_reset") |> List.ofSeq
            Expect.equal [ for r in resets -> r.Agent, r.EnvStep, r.Value ] [ 1, 60L, 1.0 ] "one reset row: member 1, at step 60, life 1"
            Expect.equal [ g.Life 0; g.Life 1 ] [ 0; 1 ] "life indices"
            Expect.equal g.EnvSteps [| 90L; 90L |] "env steps carry on through a reset"
            Expect.equal (g.Td3.LifeSteps 1) 30L "the new life counts its own steps (exploration and anneal restart)"
            Expect.equal (g.Td3.Replay.[1].EpisodeCount) 1 "the replay holds only the new life's episode"
            Expect.sequenceEqual (g.ObjectiveParameters 1) alphaBefore "α carries on"
            Expect.equal (g.Td3.CriticOptimizer.Steps 1) 0L "fresh optimiser"
            // the fresh networks are those of an agent seeded with the life's seed
            use fresh = new AgentGroup(cfg, [| new PointMassEnv(2, 30) :> MetaGenRL.Core.Envs.IEnv |], [| 1 |],
                                       [| MetaGenRL.Core.Randomness.Seeds.LifeSeed(11L, 1) |], "cpu", Algorithm.MetaTrain, ownsEnvs = true)
            for p, q in Seq.zip g.Td3.Policy fresh.Td3.Policy do
                Expect.sequenceEqual (p.[1L].data<float32>().ToArray()) (q.[0L].data<float32>().ToArray()) "policy of the new life"
            // a saved slot restores its life and continues identically
            let state = g.SaveState(1, true)
            use g2 = group ()
            g2.LoadState(1, state)
            Expect.equal (g2.Life 1) 1 "life index restored"
            Expect.equal (g2.Td3.LifeSteps 1) 30L "life start restored"
            let after (x: AgentGroup) =
                let r = ResizeArray<Metric>()
                x.Collect([| 0L; 30L |], [| 0L; Int64.MaxValue |], Action<Metric>(r.Add)) |> ignore
                [ for m in r -> m.Name, m.EnvStep, m.Value ]
            Expect.equal (after g2) (after g) "the next collect of the restored slot"
            // lifetimes are a meta-training device: a meta-test agent lives on
            use t = new AgentGroup(cfg, [| new PointMassEnv(3, 30) :> MetaGenRL.Core.Envs.IEnv |], [| 0 |], [| 1L |], "cpu", Algorithm.MetaTest, ownsEnvs = true)
            Expect.equal (t.LifeLength(0, 0)) Int64.MaxValue "no lifetimes at meta-test"
        }
        test "env families: each life's parameters drawn, reported once as env_param rows, restored with the slot" {
            // Pendulum episodes are 200 steps; lives of 200 (member 0) and 100 → 200 (member 1)
            let cfg = withKeys smokeConfig [ "agent_lifetime", "200"; "agent_count", "2"; "env_params", "train" ]
            let group () = new AgentGroup(cfg, "Pendulum-v1", [| 0; 1 |], [| 10L; 11L |], "cpu", Algorithm.MetaTrain)
            let envOf (g: AgentGroup) k = g.Envs.[k] :?> MetaGenRL.Core.Envs.PendulumEnv
            use g = group ()
            let ps = MetaGenRL.Core.Envs.PendulumEnv.FamilyParameters
            let drawn seed life = List.ofArray (MetaGenRL.Core.Envs.EnvFamily.Draw(ps, MetaGenRL.Core.Envs.EnvParams.Train, seed, life))
            Expect.equal (List.ofSeq (envOf g 0).ParameterValues) (drawn 10L 0) "slot 0: life 0's draw"
            Expect.equal (List.ofSeq (envOf g 1).ParameterValues) (drawn 11L 0) "slot 1: life 0's draw"
            let rows = ResizeArray<Metric>()
            let collect () = g.Collect([| 200L; 200L |], [| Int64.MaxValue; Int64.MaxValue |], Action<Metric>(rows.Add)) |> ignore
            let paramRows () = [ for r in rows do if r.Name.StartsWith "env_param_" then r.Agent, r.EnvStep, r.Name, r.Value ]
            collect ()
            let first = [ for a, seed in [ 0, 10L; 1, 11L ] do for p, v in List.zip (List.ofSeq ps) (drawn seed 0) -> a, 0L, "env_param_" + p.Name, v ]
            Expect.equal (paramRows ()) first "one row per parameter and agent, at the life's first step"
            collect ()   // member 1's first life (100 steps) ended at 200: life 1 draws anew; member 0's (200) too
            Expect.equal (List.ofSeq (envOf g 1).ParameterValues) (drawn 11L 1) "slot 1: life 1's draw"
            Expect.notEqual (drawn 11L 1) (drawn 11L 0) "a new life, new physics"
            Expect.equal (paramRows () |> List.filter (fun (_, step, _, _) -> step = 200L) |> List.length) 8 "both new lives reported"
            // a restored slot runs its life's physics; nominal runs leave the env as gym defines it
            let state = g.SaveState(1, true)
            use g2 = group ()
            g2.LoadState(1, state)
            Expect.equal (List.ofSeq (envOf g2 1).ParameterValues) (drawn 11L 1) "restored life's draw"
            use n = new AgentGroup(withKeys smokeConfig [ "agent_count", "1" ], "Pendulum-v1", [| 0 |], [| 10L |], "cpu", Algorithm.MetaTest)
            Expect.equal (List.ofSeq (envOf n 0).ParameterValues) [ 10.0; 1.0; 1.0; 2.0 ] "nominal"
            let nrows = ResizeArray<Metric>()
            n.Collect([| 200L |], [| Int64.MaxValue |], Action<Metric>(nrows.Add)) |> ignore
            Expect.isFalse (nrows |> Seq.exists (fun r -> r.Name.StartsWith "env_param_")) "no env_param rows when nominal"
        }
        test "agent lifetimes: log-uniform lengths within their range, seeded per agent and life" {
            let cfg = withKeys smokeConfig [ "agent_lifetime", "8000"; "agent_lifetime_min", "1000"; "agent_count", "1" ]
            let make seed = new AgentGroup(cfg, [| new PointMassEnv(1, 30) :> MetaGenRL.Core.Envs.IEnv |], [| 0 |], [| seed |], "cpu", Algorithm.MetaTrain, ownsEnvs = true)
            use a = make 5L
            use b = make 5L
            let lengths (x: AgentGroup) = [ for life in 0 .. 39 -> x.LifeLength(0, life) ]
            Expect.equal (lengths a) (lengths b) "same seed, same lengths"
            Expect.isTrue (lengths a |> List.forall (fun l -> l >= 1000L && l <= 8000L)) "within [min, lifetime]"
            Expect.isGreaterThan (lengths a |> List.distinct |> List.length) 30 "drawn afresh per life"
            // log-uniform: about half of the draws below the geometric mean sqrt(1000 · 8000) ≈ 2828
            let below = lengths a |> List.filter (fun l -> float l < sqrt (1000.0 * 8000.0)) |> List.length
            Expect.isTrue (below >= 10 && below <= 30) (sprintf "%d of 40 below the geometric mean" below)
            throwsContaining<ArgumentException> "agent_lifetime_min" "min above the lifetime"
                (fun () -> (use _ = new AgentGroup(withKeys smokeConfig [ "agent_lifetime", "100"; "agent_lifetime_min", "500" ], "Pendulum-v1", [| 0 |], [| 1L |], "cpu", Algorithm.MetaTrain) in ()))
        }
        test "policy_objective_alignment: 1 for L = −Q1, −1 for L = +Q1, over valid steps only" {
            use g = pointMassGroup Algorithm.MetaTrain 1 1L
            let td3 = g.Td3
            use gen = new TorchSharp.torch.Generator(5UL)
            let n = 12L
            let obs = TorchSharp.torch.randn([| 1L; n; int64 td3.ObsSize |], generator = gen)
            let act = td3.Pi(td3.Policy, obs)                                    // [1, n, act], differentiable
            let q = td3.Q(td3.Q1, obs, act)                                        // [1, n]
            let mask = TorchSharp.torch.cat([| TorchSharp.torch.ones(1L, 8L); TorchSharp.torch.zeros(1L, 4L) |], 1L)
            let value (t: TorchSharp.torch.Tensor) = t.item<float32>() |> float
            close 1e-6 (value (LearnedObjective.Alignment(td3, q.neg(), act, obs, mask))) 1.0 "L = −Q1: the DDPG direction"
            close 1e-6 (value (LearnedObjective.Alignment(td3, q, act, obs, mask))) -1.0 "L = +Q1: against it"
            // padding steps do not count: L = −Q1 on valid steps and +Q1 on padding still gives 1
            let mixed = TorchSharp.torch.where(mask.gt(TorchSharp.Scalar.op_Implicit 0.5), q.neg(), q)
            close 1e-6 (value (LearnedObjective.Alignment(td3, mixed, act, obs, mask))) 1.0 "padding ignored"
        }
        test "AgentGroup runs every algorithm with its metrics; unknown names are rejected" {
            for name in Algorithms.Names |> Seq.filter (fun n -> not (Algorithms.IsOnPolicy(Algorithms.Parse n))) do
                let algo = Algorithms.Parse name
                use g = pointMassGroup algo 5 5L
                g.LossLogEvery <- 10
                let metrics = ResizeArray<Metric>()
                let c = (g.Collect([| 120L |], unlimited, Action<Metric>(metrics.Add))).[0]
                for j in 0L .. c.Steps - 1L do g.Update(j, on1, Action<Metric>(metrics.Add)) |> ignore
                g.ObjectiveGradients(on1, Action<Metric>(metrics.Add)) |> ignore
                let names = metrics |> Seq.map (fun m -> m.Name) |> set
                Expect.contains names "critic_loss" (name + ": critic_loss")
                Expect.contains names "policy_loss" (name + ": policy_loss")
                if name <> "td3" && name <> "ddpg" then Expect.contains names "policy_obj_loss" (name + ": policy_obj_loss")
                Expect.equal (name = "meta-train") (names.Contains "objective_loss") (name + ": objective_loss only when meta-training")
                Expect.equal (Algorithms.UsesObjectiveNetwork algo) (names.Contains "policy_objective_alignment") (name + ": alignment for L_α-driven policies")
                for m in metrics do
                    if m.Name = "policy_objective_alignment" then
                        Expect.isTrue (m.Value >= -1.0 - 1e-6 && m.Value <= 1.0 + 1e-6) (sprintf "%s: alignment %g is a mean of cosines" name m.Value)
                Expect.isTrue (metrics |> Seq.forall (fun m -> Double.IsFinite m.Value)) (name + ": finite")
            throwsContaining<ArgumentException> "unknown algorithm" "bad algo" (fun () -> Algorithms.Parse "a2c" |> ignore)
            // the on-policy baselines run in an OnPolicyGroup (see OnPolicyTests); an AgentGroup refuses them by name
            throwsContaining<ArgumentException> "ppo is an on-policy algorithm" "ppo in an AgentGroup" (fun () -> pointMassGroup Algorithm.Ppo 5 5L |> ignore)
        }
        test "a collect limit stops a slot mid-episode; the partial episode is dropped when the state is saved" {
            use g = pointMassGroup Algorithm.Td3 8 8L
            let c = (g.Collect([| 100L |], [| 45L |], Action<Metric>(ignore))).[0]
            Expect.equal c.Steps 45L "stopped at the limit"
            Expect.equal g.Td3.Replay.[0].RunningEpisodeLength 15 "15 steps of a running episode"
            g.SaveState(0, true) |> ignore
            Expect.equal g.Td3.Replay.[0].RunningEpisodeLength 0 "abandoned when saved"
        }
        test "a NaN in one agent is reported for that slot only; the other agent's numbers are untouched" {
            let make () =
                let envs : MetaGenRL.Core.Envs.IEnv[] = [| new PointMassEnv(1, 30); new PointMassEnv(2, 30) |]
                let g = new AgentGroup(smokeConfig, envs, [| 0; 1 |], [| 1L; 2L |], "cpu", Algorithm.MetaTrain, ownsEnvs = true)
                g.LossLogEvery <- 1
                g.Collect([| 40L; 40L |], [| 100L; 100L |], Action<Metric>(ignore)) |> ignore
                g
            let run (poison: bool) =
                use g = make ()
                if poison then
                    use _ = TorchSharp.torch.no_grad()
                    g.Td3.Q1.[0].[1L].fill_(nan) |> ignore
                let rows = ResizeArray<Metric>()
                let failures = [ for j in 0L .. 3L -> g.Update(j, [| true; true |], Action<Metric>(rows.Add)) ]
                let grads = g.ObjectiveGradients([| true; true |], Action<Metric>(rows.Add))
                failures, grads, rows |> Seq.filter (fun m -> m.Agent = 0) |> Seq.map (fun m -> m.Name, m.Value) |> List.ofSeq, g.SaveState(0, true)
            let f0, g0, rows0, state0 = run false
            let f1, g1, rows1, state1 = run true
            Expect.isTrue (f0 |> List.forall (Array.forall isNull)) "no failure without the NaN"
            Expect.isTrue (f1 |> List.forall (fun f -> isNull f.[0])) "agent 0 never fails"
            Expect.stringContains f1.Head.[1] "non-finite critic_loss" "agent 1's failure names the loss"
            Expect.isNull g1.[1].Gradient "agent 1's gradient is withheld"
            Expect.isNotNull g1.[1].Failure "and its failure given"
            // agent 0 computed in the same batch as a poisoned agent: the same computation, bitwise
            Expect.equal rows1 rows0 "agent 0's rows"
            Expect.sequenceEqual g1.[0].Gradient g0.[0].Gradient "agent 0's meta-gradient"
            Expect.sequenceEqual state1 state0 "agent 0's whole state"
        }
        test "ResetAgent puts a slot back to its initial state" {
            use g = pointMassGroup Algorithm.MetaTrain 8 8L
            let fresh = g.SaveState(0, true)
            g.Collect([| 40L |], unlimited, Action<Metric>(ignore)) |> ignore
            for j in 0L .. 3L do g.Update(j, on1, Action<Metric>(ignore)) |> ignore
            Expect.notEqual (g.SaveState(0, true)) fresh "trained"
            g.ResetAgent 0
            Expect.sequenceEqual (g.SaveState(0, true)) fresh "back to the initial state"
        }
        test "AgentGroup resets lazily: after Collect the env waits at an episode boundary" {
            use env = new PointMassEnv(8, 10)
            use m = new AgentGroup(smokeConfig, [| env :> MetaGenRL.Core.Envs.IEnv |], [| 0 |], [| 8L |], "cpu", Algorithm.Td3)
            let c = (m.Collect([| 15L |], unlimited, Action<Metric>(ignore))).[0]
            Expect.isGreaterThanOrEqual c.Steps 15L "≥ target"
            Expect.equal (c.Steps % 10L) 0L "whole 10-step episodes (the point mass rarely leaves |x| ≤ 3)"
            Expect.isTrue env.AtEpisodeBoundary "no reset until the next step"
        }
    ]
