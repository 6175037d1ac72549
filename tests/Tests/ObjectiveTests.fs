module MetaGenRL.Tests.ObjectiveTests

open System
open Expecto
open TorchSharp
open MetaGenRL.Core.Config
open MetaGenRL.Core.Agents
open MetaGenRL.Core.Objective
open MetaGenRL.Tests.TestUtil

let f64 = torch.ScalarType.Float64
let t64 (xs: float list) = torch.tensor(Array.ofList xs, dtype = f64)
let values (t: torch.Tensor) = t.detach().to_type(f64).cpu().contiguous().data<float>().ToArray()
let closeAll tol (actual: float[]) (expected: float list) what =
    Expect.equal actual.Length expected.Length (what + ": length")
    List.iteri (fun i e -> close tol actual.[i] e (sprintf "%s[%d]" what i)) expected
let withKeys (c: RunConfig) (kvs: (string * string) list) =
    kvs |> List.fold (fun (c: RunConfig) (k, v) -> c.With(k, v)) c
let maxAbsDiff (a: torch.Tensor) (b: torch.Tensor) = (a.detach() - b.detach()).abs().max().ToDouble()

/// Float64 random inputs for L_α, one slot (K = 1): B windows of T steps, A action dims, window lengths lens
/// (padding zeroed).
let randomInputs (gen: torch.Generator) (b: int) (t: int) (a: int) (lens: int list) =
    let mask = torch.zeros([| int64 b; int64 t |], dtype = f64)
    lens |> List.iteri (fun i l -> mask.[int64 i].narrow(0, 0L, int64 l).fill_(1.0) |> ignore)
    let r (shape: int64[]) = torch.randn(shape, dtype = f64, generator = gen)
    let act = (torch.rand([| int64 b; int64 t; int64 a |], dtype = f64, generator = gen) * 2.0 - 1.0) * mask.unsqueeze(-1)
    let pi = (torch.rand([| int64 b; int64 t; int64 a |], dtype = f64, generator = gen) * 2.0 - 1.0)
    let dn = torch.zeros([| int64 b; int64 t |], dtype = f64)
    // a short window ends in a terminal step
    lens |> List.iteri (fun i l -> if l < t then dn.[int64 i, int64 (l - 1)] <- torch.tensor(1.0, dtype = f64))
    let k1 (x: torch.Tensor) = x.unsqueeze(0L)
    ObjectiveInputs(k1 act, k1 pi, k1 (r [| int64 b; int64 t |] * mask), k1 dn, k1 mask, k1 (r [| int64 b; int64 t + 1L |]), k1 (r [| int64 b; int64 t |]))

let smallObjectiveConfig =
    withKeys RunConfig.Default
        [ "obj_func_units", "8"; "obj_func_lstm_units", "6"; "obj_func_input_transform_units", "8"
          "obj_func_input_transform_out_units", "4" ]

/// One slot's α (stacked, K = 1).
let makeAlpha (spec: ObjectiveSpec) (seed: int64) =
    use gen = new torch.Generator(uint64 seed, torch.CPU)
    ObjectiveNetwork.Init(spec, [| gen |], torch.CPU, f64)

[<Tests>]
let tests =
    testList "Objective" [
        test "L_α at the official defaults has 15,497 parameters (2,400 + 1,480 + 9,344 + 2,273)" {
            let spec = ObjectiveSpec.FromConfig RunConfig.Default
            Expect.equal spec.Scalars 15497L "full"
            let shapes = spec.ParameterShapes() |> Seq.map (fun s -> Array.fold (*) 1L s) |> Array.ofSeq
            // action net: 3 × (W, b, LN gain, LN bias) = 12 tensors; reward/value net: 2 × (W, b) + (W, b) = 6; LSTM: 2; head: 2 × 4 + 2
            Expect.equal shapes.Length 30 "tensors"
            Expect.equal (Array.sum shapes.[0..11]) 2400L "action net"
            Expect.equal (Array.sum shapes.[12..17]) 1480L "reward/value net"
            Expect.equal (Array.sum shapes.[18..19]) 9344L "LSTM"
            Expect.equal (Array.sum shapes.[20..29]) 2273L "head"
        }
        test "variants are small diffs with the expected parameter counts; unknown variants are rejected" {
            let count v = (ObjectiveSpec.FromConfig (RunConfig.Default.With("obj_func_variant", v))).Scalars
            Expect.equal (count "no-value") (15497L - 2L * 32L) "no-value drops two g_rv inputs"
            Expect.equal (count "no-time") (15497L - 32L) "no-time"
            Expect.equal (count "no-reward") (15497L - 32L) "no-reward"
            Expect.equal (count "q-input") (15497L + 32L) "q-input adds one"
            Expect.equal (count "forward-lstm") 15497L "forward-lstm"
            Expect.equal (count "no-lstm") (15497L - 9344L + (40L * 32L + 32L + 64L)) "no-lstm: Dense 40→32 + LN"
            throwsContaining<ArgumentException> "obj_func_variant" "bad variant" (fun () -> RunConfig.Default.With("obj_func_variant", "bogus") |> ignore)
        }
        test "init: Glorot-uniform matrices within ±sqrt(6/(fan_in+fan_out)), zero biases, LN gains 1" {
            let spec = ObjectiveSpec.FromConfig RunConfig.Default
            let alpha = makeAlpha spec 3L
            let shapes = spec.ParameterShapes()
            for i in 0 .. alpha.Count - 1 do
                let v = values alpha.[i]
                let s = shapes.[i]
                if s.Length = 2 then
                    let lim = sqrt (6.0 / float (s.[0] + s.[1]))
                    Expect.isTrue (v |> Array.forall (fun x -> abs x <= lim)) (sprintf "tensor %d within Glorot limit" i)
                    Expect.isTrue (v |> Array.exists (fun x -> abs x > lim * 0.5)) (sprintf "tensor %d not degenerate" i)
            Expect.sequenceEqual (values alpha.[2]) (Array.create 32 1.0) "first LN gain"
            Expect.sequenceEqual (values alpha.[1]) (Array.create 32 0.0) "first bias"
            Expect.sequenceEqual (values alpha.[19]) (Array.create 128 0.0) "LSTM bias (forget +1 is added at run time)"
        }
        test "z-normalisation over every entry of a slot (population variance, ε 1e-8), each slot apart" {
            let xs = [ 1.0; 2.0; 3.0; 4.0; 0.0; 0.0 ]
            let ys = [ 10.0; 10.0; 10.0; 10.0; 10.0; 16.0 ]
            let x = (t64 (xs @ ys)).reshape(2L, 2L, 3L)
            let z (vs: float list) =
                let mean = List.average vs
                let var = (vs |> List.sumBy (fun v -> (v - mean) ** 2.0)) / float vs.Length
                vs |> List.map (fun v -> (v - mean) / sqrt (var + 1e-8))
            closeAll 1e-12 (values (ObjectiveNetwork.ZNormalize x)) (z xs @ z ys) "z per slot"
        }
        test "GAE inside the window, with and without the +d quirk" {
            let r = t64 [ 1.0; 0.0; 2.0 ] |> fun t -> t.reshape(1L, 3L)
            let d = t64 [ 0.0; 0.0; 1.0 ] |> fun t -> t.reshape(1L, 3L)
            let v = t64 [ 0.5; 1.0; 1.5; 2.0 ] |> fun t -> t.reshape(1L, 4L)
            // δ = [1 + 0.9·1 − 0.5, 0.9·1.5 − 1, 2 − 1.5 (+1)], Â_t = δ_t + 0.72·Â_{t+1}
            closeAll 1e-12 (values (ReinforceObjective.Gae(r, d, v, 0.9, 0.8, false))) [ 1.4 + 0.72 * (0.35 + 0.72 * 0.5); 0.35 + 0.72 * 0.5; 0.5 ] "no +d"
            closeAll 1e-12 (values (ReinforceObjective.Gae(r, d, v, 0.9, 0.8, true))) [ 1.4 + 0.72 * (0.35 + 0.72 * 1.5); 0.35 + 0.72 * 1.5; 1.5 ] "+d"
        }
        test "annealing: p = min(1, t/steps), p = 1 without annealing; L̃ = p·L − (1−p)·Q" {
            close 1e-15 (LearnedObjective.AnnealFraction(0L, 10000L)) 0.0 "p(0)"
            close 1e-15 (LearnedObjective.AnnealFraction(2500L, 10000L)) 0.25 "p(2500)"
            close 1e-15 (LearnedObjective.AnnealFraction(20000L, 10000L)) 1.0 "p(20000)"
            close 1e-15 (LearnedObjective.AnnealFraction(5L, 0L)) 1.0 "anneal 0"
            // two slots with their own p: 0.25 and 1
            let l, q = (t64 [ 2.0; -1.0; 2.0; -1.0 ]).reshape(2L, 2L), (t64 [ 3.0; 4.0; 3.0; 4.0 ]).reshape(2L, 2L)
            closeAll 1e-12 (values (LearnedObjective.Anneal(l, q, [| 0.25; 1.0 |]))) [ 0.5 - 0.75 * 3.0; -0.25 - 0.75 * 4.0; 2.0; -1.0 ] "L̃"
        }
        test "the annealed policy loss is the masked mean (÷B·T) of p·L_α − (1−p)·Q1(s, π(s)), V from the main Q1" {
            let cfg = withKeys smallObjectiveConfig [ "policy_depth", "2"; "policy_units", "5"; "critic_depth", "2"; "critic_units", "5"; "buffer_size", "100" ]
            use agent = new Td3Group(cfg, 3, [| -1f; -1f |], [| 1f; 1f |], [| 5L |], torch.CPU, f64)
            let spec = ObjectiveSpec.FromConfig cfg
            let alpha = makeAlpha spec 7L
            use gen = new torch.Generator(11UL, torch.CPU)
            let x = randomInputs gen 3 4 2 [ 4; 2; 4 ]
            let obs = torch.randn([| 1L; 3L; 4L; 3L |], dtype = f64, generator = gen)
            let nobs = torch.randn([| 1L; 3L; 4L; 3L |], dtype = f64, generator = gen)
            let bt = TrajectoryTensors(obs, x.Act, x.Rew, nobs, x.Done, x.Done, torch.zeros_like(x.Done), x.Mask)
            let s = obs.reshape(1L, 12L, 3L)
            let aPi = agent.Pi(agent.Policy, s)
            let obj = LearnedObjective(spec, alpha, 1000L, true)
            let loss = obj.Loss(PolicyLossContext(agent, bt, s, aPi, [| 250L |]))
            // by hand
            use _ = torch.no_grad()
            let q = agent.Q(agent.Q1, s, aPi)
            let sLast = nobs.select(2, 3L)
            let vT = agent.Q(agent.Q1, sLast, agent.Pi(agent.Policy, sLast))
            let vals = torch.cat([| q.reshape(1L, 3L, 4L); vT.unsqueeze(2) |], 2L)
            let l = ObjectiveNetwork.Forward(spec, alpha, ObjectiveInputs(x.Act, aPi.reshape(1L, 3L, 4L, 2L), x.Rew, x.Done, x.Mask, vals), true).reshape(-1L)
            let qf, mf = q.reshape(-1L), x.Mask.reshape(-1L)
            let expected = ((l * 0.25 - qf * 0.75) * mf).sum().ToDouble() / 12.0
            Expect.equal loss.shape [| 1L |] "one loss per slot"
            close 1e-12 (loss.[0L].ToDouble()) expected "annealed loss"
            close 1e-12 (obj.LastValueLoss.[0L].ToDouble()) (-(qf * mf).sum().ToDouble() / 12.0) "policy_loss diagnostic"
        }
        test "L_α is invariant to permuting action dimensions" {
            let spec = ObjectiveSpec.FromConfig RunConfig.Default
            let alpha = makeAlpha spec 1L
            use gen = new torch.Generator(2UL, torch.CPU)
            let x = randomInputs gen 4 6 3 [ 6; 6; 3; 6 ]
            let perm = torch.tensor([| 2L; 0L; 1L |])
            let xp = ObjectiveInputs(x.Act.index_select(3L, perm), x.PolicyAct.index_select(3L, perm), x.Rew, x.Done, x.Mask, x.Values)
            let l1 = ObjectiveNetwork.Forward(spec, alpha, x, true)
            let l2 = ObjectiveNetwork.Forward(spec, alpha, xp, true)
            Expect.equal (l1.shape) [| 1L; 4L; 6L |] "shape [K, B, T]"
            // permuted inputs sum the action dims in another order: float64 through the objective (outputs of order 1)
            // rounds at ~1e-15 (1.9e-15 measured), so 1e-12
            Expect.isLessThan (maxAbsDiff l1 l2) 1e-12 "permutation invariance"
            Expect.isGreaterThan (l1.abs().max().ToDouble()) 1e-3 "non-trivial output"
        }
        test "no-value ignores V, full does not; q-input needs Q; the output is bounded by 1/error_scale" {
            use gen = new torch.Generator(4UL, torch.CPU)
            let x = randomInputs gen 2 5 2 [ 5; 5 ]
            let x2 = ObjectiveInputs(x.Act, x.PolicyAct, x.Rew, x.Done, x.Mask, x.Values * 3.0 + torch.randn_like(x.Values))
            let run v (inp: ObjectiveInputs) =
                let spec = ObjectiveSpec.FromConfig (RunConfig.Default.With("obj_func_variant", v))
                ObjectiveNetwork.Forward(spec, makeAlpha spec 9L, inp, true)
            // an ignored input leaves the same ops on the same shapes and values, so these stay bitwise
            Expect.equal (maxAbsDiff (run "no-value" x) (run "no-value" x2)) 0.0 "no-value ignores V"
            Expect.isGreaterThan (maxAbsDiff (run "full" x) (run "full" x2)) 1e-6 "full reads V"
            let xr = ObjectiveInputs(x.Act, x.PolicyAct, x.Rew * 2.0 + 1.0, x.Done, x.Mask, x.Values)
            Expect.equal (maxAbsDiff (run "no-reward" x) (run "no-reward" xr)) 0.0 "no-reward ignores r"
            for v in ObjectiveSpec.VariantNames do
                let l = run v x
                Expect.isTrue (l.isfinite().all().ToBoolean()) (sprintf "%s finite" v)
            throwsContaining<ArgumentException> "Q" "q-input without Q" (fun () ->
                run "q-input" (ObjectiveInputs(x.Act, x.PolicyAct, x.Rew, x.Done, x.Mask, x.Values)) |> ignore)
            // the bound: tanh(f·s)/s with s = 1 ⇒ |L| < 1
            let spec = ObjectiveSpec.FromConfig (RunConfig.Default.With("obj_func_error_scale", "1"))
            let l = ObjectiveNetwork.Forward(spec, makeAlpha spec 9L, x, true)
            Expect.isLessThan (l.abs().max().ToDouble()) 1.0 "bounded"
        }
        test "L_α rejects wrongly shaped inputs before any autograd call" {
            let spec = ObjectiveSpec.FromConfig RunConfig.Default
            use gen = new torch.Generator(4UL, torch.CPU)
            let x = randomInputs gen 2 5 2 [ 5; 5 ]
            let bad = ObjectiveInputs(x.Act, x.PolicyAct, x.Rew, x.Done, x.Mask, x.Values.narrow(2, 0L, 5L))
            throwsContaining<ArgumentException> "values" "values [B, T]" (fun () -> ObjectiveNetwork.Forward(spec, makeAlpha spec 1L, bad, true) |> ignore)
        }
        test "hand-written LSTM: gradients w.r.t. inputs and weights match central differences (float64)" {
            use gen = new torch.Generator(5UL, torch.CPU)
            let z = torch.randn([| 1L; 2L; 4L; 3L |], dtype = f64, generator = gen).requires_grad_(true)
            let w = (torch.randn([| 1L; 8L; 5L |], dtype = f64, generator = gen) * 0.5).requires_grad_(true)
            let b = (torch.randn([| 1L; 8L |], dtype = f64, generator = gen) * 0.1).requires_grad_(true)
            let mask = t64 [ 1.0; 1.0; 1.0; 1.0; 1.0; 1.0; 1.0; 0.0 ] |> fun t -> t.reshape(1L, 2L, 4L)
            let wOut = torch.randn([| 1L; 2L; 4L; 2L |], dtype = f64, generator = gen)
            for quirks in [ true; false ] do
                let f () = (ObjectiveNetwork.Lstm(z, w, b, mask, true, quirks) * wOut).sum()
                let grads = torch.autograd.grad([| f () |], [| z; w; b |])
                for (p: torch.Tensor), (g: torch.Tensor) in Seq.zip [ z; w; b ] grads do
                    let flat = p.detach().view(-1L)
                    let gv = values g
                    for i in 0 .. int (p.numel()) - 1 do
                        let h = 1e-6
                        let orig = flat.[int64 i].ToDouble()
                        let eval (v: float) =
                            use _ = torch.no_grad()
                            flat.[int64 i] <- torch.tensor(v, dtype = f64)
                            f().ToDouble()
                        let fd = (eval (orig + h) - eval (orig - h)) / (2.0 * h)
                        eval orig |> ignore
                        close (1e-7 * max 1.0 (abs fd)) gv.[i] fd (sprintf "quirks=%b dL/dp[%d]" quirks i)
        }
        test "paper_quirks short-window masking: true zeroes valid early steps, false equals the unpadded sequence" {
            use gen = new torch.Generator(6UL, torch.CPU)
            let T = 5L
            let z = torch.randn([| 1L; 2L; T; 3L |], dtype = f64, generator = gen)
            let w = torch.randn([| 1L; 8L; 5L |], dtype = f64, generator = gen) * 0.5
            let b = torch.randn([| 1L; 8L |], dtype = f64, generator = gen) * 0.1
            let mask = t64 [ 1.0; 1.0; 1.0; 1.0; 1.0; 1.0; 1.0; 0.0; 0.0; 0.0 ] |> fun t -> t.reshape(1L, 2L, T)   // lengths 5 and 2
            let quirk = ObjectiveNetwork.Lstm(z, w, b, mask, true, true).[0L]
            // official: reversed whole window, sequence_length 2 ⇒ only reversed steps 0, 1 (= t 4, 3, padding) run
            Expect.equal (quirk.[1L].narrow(0, 0L, 3L).abs().max().ToDouble()) 0.0 "valid early steps t < T−L are zero (masked by where: exact)"
            Expect.isGreaterThan (quirk.[1L].narrow(0, 3L, 2L).abs().max().ToDouble()) 0.0 "the padding steps ran"
            let fixedOut = ObjectiveNetwork.Lstm(z, w, b, mask, true, false).[0L]
            let alone = ObjectiveNetwork.Lstm(z.[0L].[1L].narrow(0, 0L, 2L).reshape(1L, 1L, 2L, 3L), w, b, torch.ones([| 1L; 1L; 2L |], dtype = f64), true, false).[0L]
            Expect.isGreaterThan (fixedOut.[1L].narrow(0, 0L, 2L).abs().min().ToDouble()) 0.0 "valid steps are non-zero"
            // Differently shaped runs (B = 2, T = 5, masked vs B = 1, T = 2, unmasked) use other matmul kernels and
            // summation orders, so they agree to rounding, not bitwise: float64 over ≤ 5 LSTM steps with |h| < 1 rounds
            // at ~1e-16 (1.4e-17 measured), so 1e-12; a masking error would differ by O(0.1).
            close 1e-12 (maxAbsDiff (fixedOut.[1L].narrow(0, 0L, 2L)) (alone.[0L])) 0.0 "equals the unpadded sequence"
            Expect.equal (fixedOut.[1L].narrow(0, 2L, 3L).abs().max().ToDouble()) 0.0 "padding outputs are zero (masked by where: exact)"
            // full windows are the same in both modes: row 0 goes through the same ops on the same shapes, so bitwise
            Expect.equal (maxAbsDiff quirk.[0L] fixedOut.[0L]) 0.0 "full window unaffected"
        }
        test "a stacked α runs each slot's own objective: slot k of a 2-slot call equals a 1-slot call (float64)" {
            let spec = ObjectiveSpec.FromConfig smallObjectiveConfig
            use gen = new torch.Generator(12UL, torch.CPU)
            let x0, x1 = randomInputs gen 3 4 2 [ 4; 2; 4 ], randomInputs gen 3 4 2 [ 4; 4; 1 ]
            let a0, a1 = makeAlpha spec 1L, makeAlpha spec 2L
            let cat (f: ObjectiveInputs -> torch.Tensor) = torch.cat([| f x0; f x1 |], 0L)
            let both = ObjectiveInputs(cat (fun x -> x.Act), cat (fun x -> x.PolicyAct), cat (fun x -> x.Rew), cat (fun x -> x.Done), cat (fun x -> x.Mask), cat (fun x -> x.Values))
            let alpha = Seq.map2 (fun (p: torch.Tensor) (q: torch.Tensor) -> torch.cat([| p; q |], 0L)) a0 a1 |> ResizeArray
            for quirks in [ true; false ] do
                let l = ObjectiveNetwork.Forward(spec, alpha, both, quirks)
                // batched vs alone: other kernel shapes; float64 rounding ~1e-15 relative on outputs of order 1
                Expect.isLessThan (maxAbsDiff l.[0L] (ObjectiveNetwork.Forward(spec, a0, x0, quirks).[0L])) 1e-10 (sprintf "slot 0, quirks %b" quirks)
                Expect.isLessThan (maxAbsDiff l.[1L] (ObjectiveNetwork.Forward(spec, a1, x1, quirks).[0L])) 1e-10 (sprintf "slot 1, quirks %b" quirks)
        }
        test "flatten / load round-trips α" {
            let spec = ObjectiveSpec.FromConfig smallObjectiveConfig
            let a1 = makeAlpha spec 1L
            let a2 = makeAlpha spec 2L
            let flat = ObjectiveNetwork.Flatten(a1, 0)
            Expect.equal (int64 flat.Length) spec.Scalars "length"
            ObjectiveNetwork.Load(a2, flat)
            // Flatten stores float32, so the round trip gives α rounded to float32, exactly
            for p, q in Seq.zip a1 a2 do Expect.sequenceEqual (values q) (values (p.to_type(torch.ScalarType.Float32))) "same after load"
            throwsContaining<ArgumentException> "expected" "wrong length" (fun () -> ObjectiveNetwork.Load(a2, Array.zeroCreate 3))
        }
    ]
