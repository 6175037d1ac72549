module MetaGenRL.Tests.Td3Tests

open System
open System.Collections.Generic
open Expecto
open TorchSharp
open MetaGenRL.Core.Config
open MetaGenRL.Core.Agents
open MetaGenRL.Core.Envs
open MetaGenRL.Core.Torch
open MetaGenRL.Core.Engine
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

/// Sets slot 0 of a stacked parameter list (and nothing else) from flat values.
let setParams (ps: IReadOnlyList<torch.Tensor>) (vals: float list list) =
    use _ = torch.no_grad()
    for p, v in Seq.zip ps vals do
        p.[0L].copy_(torch.tensor(Array.ofList v, dtype = p.dtype).reshape(p.[0L].shape)) |> ignore

let on1 = [| true |]

/// A one-agent group.
let single (cfg: RunConfig) obs (low: float32[]) (high: float32[]) (seed: int64) (dtype: torch.ScalarType) =
    new Td3Group(cfg, obs, low, high, [| seed |], torch.CPU, dtype)

/// A linear (depth-1) agent in float64 with known weights: π(s) = tanh(0.5 s), Q1 = 0.1 s + 0.2 a, Q2 = 0.3 s − 0.4 a.
let linearAgent (quirks: bool) =
    let cfg = withKeys RunConfig.Default
                [ "policy_depth", "1"; "critic_depth", "1"; "buffer_sample_size", "1"; "recurrent_time_steps", "2"
                  "critic_noise", "0"; "paper_quirks", string quirks; "policy_random_exploration_steps", "0"; "buffer_size", "100" ]
    let agent = single cfg 1 [| -1f |] [| 1f |] 7L torch.ScalarType.Float64
    for ps in [ agent.Policy; agent.PolicyTarget ] do setParams ps [ [ 0.5 ]; [ 0.0 ] ]
    for ps in [ agent.Q1; agent.Q1Target ] do setParams ps [ [ 0.1; 0.2 ]; [ 0.0 ] ]
    for ps in [ agent.Q2; agent.Q2Target ] do setParams ps [ [ 0.3; -0.4 ]; [ 0.0 ] ]
    agent

let runUpdates (agent: Td3Group) n =
    [ for j in 0L .. int64 n - 1L do
        let r = agent.Update(j, true)
        yield r.CriticLoss.[0], (if r.PolicyUpdated then r.PolicyLoss.[0] else nan) ]

/// Fills slot `k`'s replay by acting in the point-mass env for `steps` steps (other slots do not step).
let collectSlot (agent: Td3Group) (k: int) (env: IEnv) steps =
    let mutable obs = env.Reset()
    for _ in 1 .. steps do
        let input = Array.init agent.K (fun i -> if i = k then obs else null)
        let a = (agent.Act input).[k]
        let s = env.Step a
        agent.Observe(k, obs, a, s)
        obs <- if s.Done then env.Reset() else s.Observation

let collect (agent: Td3Group) (env: IEnv) steps = collectSlot agent 0 env steps

[<Tests>]
let tests =
    testList "TD3" [
        test "TD target with and without +d" {
            let row (xs: float list) = (t64 xs).reshape(1L, -1L)
            let r, d = row [ 1.0; 2.0; -1.0 ], row [ 0.0; 1.0; 0.0 ]
            let q1t, q2t = row [ 3.0; 5.0; -2.0 ], row [ 4.0; 1.0; -3.0 ]
            closeAll 1e-12 (values (Td3Group.TdTarget(r, d, q1t, q2t, 0.9, true))) [ 1.0 + 0.9 * 3.0; 3.0; -1.0 + 0.9 * -3.0 ] "+d"
            closeAll 1e-12 (values (Td3Group.TdTarget(r, d, q1t, q2t, 0.9, false))) [ 1.0 + 0.9 * 3.0; 2.0; -1.0 + 0.9 * -3.0 ] "no +d"
        }
        test "smoothing noise is clipped to ±noise_clip and the action to ±act_limit" {
            let pi = t64 [ 0.9; -0.2; 0.0; 0.1 ]
            let noise = t64 [ 5.0; -5.0; 0.3; -0.45 ]
            closeAll 1e-12 (values (Td3Group.TargetAction(pi, noise, 0.5, 1.0))) [ 1.0; -0.7; 0.3; -0.35 ] "target action"
        }
        test "masked mean divides by B·T including padding; critic loss sums both critics" {
            // two slots [K = 2, N = 4]; each slot divides by its own N
            let two (a: float list) (b: float list) = (t64 (a @ b)).reshape(2L, 4L)
            let x, m = two [ 1.0; 2.0; 3.0; 4.0 ] [ 4.0; 4.0; 4.0; 4.0 ], two [ 1.0; 1.0; 0.0; 0.0 ] [ 1.0; 0.0; 0.0; 0.0 ]
            closeAll 1e-12 (values (Td3Group.MaskedMean(x, m))) [ 0.75; 1.0 ] "masked mean per slot"
            let q1, q2, y = two [ 1.0; 2.0; 9.0; 9.0 ] [ 0.0; 0.0; 0.0; 0.0 ], two [ 0.0; 3.0; 9.0; 9.0 ] [ 0.0; 0.0; 0.0; 0.0 ], two [ 1.0; 1.0; 0.0; 0.0 ] [ 2.0; 0.0; 0.0; 0.0 ]
            closeAll 1e-12 (values (Td3Group.CriticLoss(q1, q2, y, m))) [ (0.0 + 1.0) / 4.0 + (1.0 + 4.0) / 4.0; 4.0 / 4.0 + 4.0 / 4.0 ] "critic loss per slot"
        }
        test "Polyak averaging on known tensors" {
            // two slots: slot 0 averages with τ 0.25, slot 1 (τ 0) stays exactly as it was
            let target = ResizeArray [ (t64 [ 1.0; 2.0; 7.0; 8.0 ]).reshape(2L, 2L); (t64 [ -4.0; 5.0 ]).reshape(2L, 1L) ]
            let source = ResizeArray [ (t64 [ 3.0; 4.0; 0.0; 0.0 ]).reshape(2L, 2L); (t64 [ 0.0; 1.0 ]).reshape(2L, 1L) ]
            ParamOps.Polyak(target, source, [| 0.25; 0.0 |])
            closeAll 1e-12 (values target.[0]) [ 1.5; 2.5; 7.0; 8.0 ] "tensor 0"
            closeAll 1e-12 (values target.[1]) [ -3.0; 5.0 ] "tensor 1"
        }
        test "global-norm clipping scales each slot by clip / max(norm, clip)" {
            // slot 0: norm 13 (clipped); slot 1: norm 0.5 (below the clip, unchanged)
            let g = ResizeArray [ (t64 [ 3.0; 4.0; 0.3; 0.4 ]).reshape(2L, 2L); (t64 [ 12.0; 0.0 ]).reshape(2L, 1L) ]
            let norm = ParamOps.ClipByGlobalNorm(g, 1.0)
            closeAll 1e-12 (values norm) [ 13.0; 0.5 ] "norms before clipping"
            closeAll 1e-12 (values g.[0]) [ 3.0 / 13.0; 4.0 / 13.0; 0.3; 0.4 ] "scaled 0"
            closeAll 1e-12 (values g.[1]) [ 12.0 / 13.0; 0.0 ] "scaled 1"
        }
        test "TF-Adam first and second steps match the closed form; an inactive slot is left exactly" {
            // two slots of 2 entries each; slot 1 is active only in the first step
            let p = (t64 [ 1.0; -2.0; 5.0; 6.0 ]).reshape(2L, 2L)
            let adam = new TfAdam(ResizeArray [ p ], 0.1)
            adam.Step(ResizeArray [ (t64 [ 0.5; -3.0; 1.0; 1.0 ]).reshape(2L, 2L) ])
            // step 1: lr_t = lr·sqrt(1−β2)/(1−β1); m = 0.1 g; v = 0.001 g²
            let step1 g = 0.1 * sqrt 0.001 / 0.1 * (0.1 * g) / (sqrt (0.001 * g * g) + 1e-8)
            closeAll 1e-12 (values p).[0..1] [ 1.0 - step1 0.5; -2.0 - step1 -3.0 ] "after step 1"
            let slot1 = (values p).[2..3]
            let before = values p
            adam.Step(ResizeArray [ (t64 [ 1.0; 1.0; 9.0; 9.0 ]).reshape(2L, 2L) ], [| true; false |])
            Expect.equal (values p).[2..3] slot1 "the inactive slot's parameters are unchanged"
            Expect.equal (adam.Steps 1) 1L "the inactive slot's step count is unchanged"
            Expect.equal (adam.Steps 0) 2L "the active slot stepped twice"
            let step2 g1 g2 =
                let m = 0.9 * 0.1 * g1 + 0.1 * g2
                let v = 0.999 * 0.001 * g1 * g1 + 0.001 * g2 * g2
                0.1 * sqrt (1.0 - 0.999 ** 2.0) / (1.0 - 0.9 ** 2.0) * m / (sqrt v + 1e-8)
            closeAll 1e-12 (values p).[0..1] [ before.[0] - step2 0.5 1.0; before.[1] - step2 -3.0 1.0 ] "after step 2"
        }
        test "MLP: Glorot-uniform weights, zero biases, LN gain 1; forward matches a hand computation" {
            let spec = MlpSpec(3, 4, 3, 2, true, "relu", MlpOutput.TanhScaled, 2.0)
            use gen = new torch.Generator(1UL, torch.CPU)
            let ps = Mlp.Init(spec, [| gen |], torch.CPU, torch.ScalarType.Float64)
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
            let w0 = (t64 [ 1.0; -1.0 ]).reshape(1L, 2L, 1L)
            let w1 = (t64 [ 1.0; 1.0 ]).reshape(1L, 1L, 2L)
            let p2 = ResizeArray [ w0; (t64 [ 0.0; 3.0 ]).reshape(1L, 2L); (t64 [ 2.0; 1.0 ]).reshape(1L, 2L); (t64 [ 0.5; 0.0 ]).reshape(1L, 2L); w1; (t64 [ 0.25 ]).reshape(1L, 1L) ]
            let x = (t64 [ 2.0 ]).reshape(1L, 1L, 1L)
            // hidden = relu([2, 1]) = [2, 1]; LN: mean 1.5, var 0.25 → [1, −1] (ε 1e-12); affine → [2.5, −1]; out = 1.5 + 0.25
            close 1e-9 ((Mlp.Forward(spec2, p2, x)).item<float>()) 1.75 "forward"
        }
        test "critic step on a hand-computed batch, with paper quirks (terminal, +d)" {
            use agent = linearAgent true
            // one 1-step episode ending by time limit: with quirks it is stored as terminal
            agent.Observe(0, [| 1f |], [| 0.5f |], StepResult([| 3f |], 2.0, false, true))
            let struct (loss, _) = agent.CriticStep(on1, true)
            let q1, q2 = 0.1 * 1.0 + 0.2 * 0.5, 0.3 * 1.0 - 0.4 * 0.5
            let y = 2.0 + 1.0                      // r + γ·0·… + d
            close 1e-9 loss.[0] (((q1 - y) ** 2.0 + (q2 - y) ** 2.0) / 2.0) "loss over B·T = 2 (one padded step)"
        }
        test "critic step without quirks: truncation bootstraps through the smoothed target action" {
            use agent = linearAgent false
            agent.Observe(0, [| 1f |], [| 0.5f |], StepResult([| 3f |], 2.0, false, true))
            let struct (loss, q1mean) = agent.CriticStep(on1, true)
            let aT = tanh (0.5 * 3.0)
            let y = 2.0 + 0.99 * min (0.1 * 3.0 + 0.2 * aT) (0.3 * 3.0 - 0.4 * aT)
            let q1, q2 = 0.2, 0.1
            close 1e-9 loss.[0] (((q1 - y) ** 2.0 + (q2 - y) ** 2.0) / 2.0) "loss"
            close 1e-9 q1mean.[0] q1 "q1 mean over valid steps"
        }
        test "policy loss is −masked mean Q1(s, π(s)) and the policy step is clipped Adam" {
            use agent = linearAgent true
            agent.Observe(0, [| 1f |], [| 0.5f |], StepResult([| 3f |], 2.0, true, false))
            let before = values agent.Policy.[0]
            let loss = agent.PolicyStep(on1, true)
            close 1e-9 loss.[0] (-(0.1 * 1.0 + 0.2 * tanh 0.5) / 2.0) "policy loss"
            // first Adam step moves each parameter by ≈ lr in the direction of −grad (dQ/dw > 0 ⇒ w grows)
            close 1e-6 ((values agent.Policy.[0]).[0] - before.[0]) 1e-3 "first step size"
        }
        test "truncation is stored as terminal only with paper_quirks" {
            for quirks, expected in [ true, 1f; false, 0f ] do
                use agent = linearAgent quirks
                agent.Observe(0, [| 1f |], [| 0f |], StepResult([| 2f |], 0.0, false, true))
                let b = agent.Replay.[0].Sample(1, 2, Random 0)
                Expect.equal (b.Done.[0], b.Truncated.[0], b.Terminated.[0]) (expected, 1f, 0f) (sprintf "quirks=%b" quirks)
        }
        test "exploration: uniform in the box first, then π(s) + noise clipped to the box" {
            let cfg = withKeys tinyConfig [ "policy_random_exploration_steps", "5"; "policy_exploration", "10" ]
            use agent = single cfg 2 [| -0.5f; -2f |] [| 0.5f; 2f |] 3L torch.ScalarType.Float32
            for i in 1 .. 10 do
                let a = (agent.Act [| [| 0.1f; 0.2f |] |]).[0]
                Expect.isTrue (abs a.[0] <= 0.5f && abs a.[1] <= 2f) (sprintf "step %d inside the box" i)
                agent.Observe(0, [| 0.1f; 0.2f |], a, StepResult([| 0.1f; 0.2f |], 0.0, false, false))
        }
        test "same seed twice gives bitwise-identical losses" {
            let run () =
                use env = new PointMassEnv(11)
                use agent = single tinyConfig 2 env.ActionLow env.ActionHigh 42L torch.ScalarType.Float32
                collect agent env 200
                runUpdates agent 10
            let a, b = run (), run ()
            Expect.equal (List.length a) 10 "ten updates"
            for (c1, p1), (c2, p2) in List.zip a b do
                Expect.equal (BitConverter.DoubleToInt64Bits c1) (BitConverter.DoubleToInt64Bits c2) "critic loss bitwise"
                Expect.equal (BitConverter.DoubleToInt64Bits p1) (BitConverter.DoubleToInt64Bits p2) "policy loss bitwise"
            Expect.isTrue (a |> List.forall (fun (c, _) -> Double.IsFinite c)) "finite"
            use env = new PointMassEnv(11)
            use other = single tinyConfig 2 env.ActionLow env.ActionHigh 43L torch.ScalarType.Float32
            collect other env 200
            Expect.notEqual (runUpdates other 10) a "another seed differs"
        }
        test "updates leak no tensors" {
            use env = new PointMassEnv(5)
            use agent = new Td3Group(tinyConfig, 2, env.ActionLow, env.ActionHigh, [| 1L; 2L |], torch.CPU)
            collectSlot agent 0 env 200
            collectSlot agent 1 env 200
            runUpdates agent 4 |> ignore
            let live0 = DisposeScopeManager.Statistics.ThreadTotalLiveCount
            for j in 0L .. 199L do agent.Update(j, [| true; j % 3L <> 0L |], j % 7L = 0L) |> ignore
            agent.ActDeterministic [| [| 0.1f; 0.0f |]; null |] |> ignore
            Expect.equal DisposeScopeManager.Statistics.ThreadTotalLiveCount live0 "live tensors unchanged after 200 updates"
        }
        test "MLP: a stack too large for one activation runs in slot chunks with the outputs and gradients of each slot alone" {
            // 3 slots × 30000 rows × 64 units exceed Mlp.MaxActivationElements, so slots run in chunks (2 + 1); float64,
            // so the rounding of differently shaped kernels stays ~1e-15 relative, far below the 1e-10 asked
            let spec = MlpSpec(3, 64, 3, 2, true, "relu", MlpOutput.TanhScaled, 2.0)
            let n = 30000L
            Expect.isGreaterThan (3L * n * 64L) Mlp.MaxActivationElements "the stack exceeds one activation"
            Expect.isLessThan (2L * n * 64L) (2L * Mlp.MaxActivationElements) "and runs in more than one chunk"
            let gens = [| for k in 1UL .. 3UL -> new torch.Generator(k, torch.CPU) |]
            let ps = Mlp.Init(spec, gens, torch.CPU, torch.ScalarType.Float64)
            use gen = new torch.Generator(9UL, torch.CPU)
            let x = torch.randn([| 3L; n; 3L |], dtype = torch.ScalarType.Float64, generator = gen)
            let y = Mlp.Forward(spec, ps, x)
            let weights = torch.linspace(-1.0, 1.0, int64 (y.numel()), dtype = torch.ScalarType.Float64).reshape(y.shape)
            let grads = torch.autograd.grad([| y.mul(weights).sum() |], ps)
            for k in 0L .. 2L do
                let pk = ResizeArray [ for p in ps -> p.[k].unsqueeze(0).detach().requires_grad_(true) ]
                let yk = Mlp.Forward(spec, pk, x.[k].unsqueeze(0))
                let gk = torch.autograd.grad([| yk.mul(weights.[k].unsqueeze(0)).sum() |], pk)
                close 1e-10 ((y.[k].unsqueeze(0) - yk).abs().max().item<float>()) 0.0 (sprintf "slot %d output" k)
                for i in 0 .. ps.Count - 1 do
                    let scale = max 1.0 (gk.[i].abs().max().item<float>())
                    close (1e-10 * scale) ((grads.[i].[k].unsqueeze(0) - gk.[i]).abs().max().item<float>()) 0.0 (sprintf "slot %d gradient %d" k i)
        }
        test "a group of two computes what each agent computes alone (up to batched-kernel rounding)" {
            // same seeds, same data: slot k of a group of 2 vs a group of 1; float64 so rounding differences of the
            // batched matmul stay ~1e-15 relative, far below the 1e-9 asked here
            let cfg = withKeys tinyConfig [ "policy_random_exploration_steps", "20" ]
            let run (seeds: int64[]) =
                use env = new PointMassEnv(11)
                use g = new Td3Group(cfg, 2, env.ActionLow, env.ActionHigh, seeds, torch.CPU, torch.ScalarType.Float64)
                for k in 0 .. seeds.Length - 1 do
                    use e = new PointMassEnv(20 + int seeds.[k])
                    collectSlot g k e 150
                [ for j in 0L .. 5L -> let r = g.Update(j, true) in r.CriticLoss, r.PolicyLoss ]
            let both = run [| 5L; 6L |]
            for k, alone in [ 0, run [| 5L |]; 1, run [| 6L |] ] do
                for (c2, p2), (c1, p1) in List.zip both alone do
                    close 1e-9 c2.[k] c1.[0] (sprintf "slot %d critic loss" k)
                    if not (isNull p1) then close 1e-9 p2.[k] p1.[0] (sprintf "slot %d policy loss" k)
        }
        test "an inactive slot draws nothing and is left exactly as it was" {
            use env = new PointMassEnv(4)
            use g = new Td3Group(tinyConfig, 2, env.ActionLow, env.ActionHigh, [| 1L; 2L |], torch.CPU)
            collectSlot g 0 env 120
            collectSlot g 1 env 120
            let snapshot () = [ for ps in [ g.Policy; g.Q1; g.Q2; g.PolicyTarget ] do for p in ps -> values p.[1L] ]
            let before = snapshot ()
            let rng = g.Rng.[1].GetState()
            for j in 0L .. 5L do g.Update(j, [| true; false |], true) |> ignore
            Expect.equal (snapshot ()) before "slot 1's networks unchanged"
            Expect.equal (g.Rng.[1].GetState()) rng "slot 1's generator unchanged"
            Expect.equal (g.CriticOptimizer.Steps 1) 0L "slot 1 took no critic step"
            Expect.equal (g.CriticOptimizer.Steps 0) 6L "slot 0 took six"
        }
    ]
