/// The on-policy baselines (PPO, on-policy REINFORCE): their formulas against hand-computed values, their gradients
/// against the closed form, and their agents: determinism, save/load and the CLI.
module MetaGenRL.Tests.OnPolicyTests

open System
open System.IO
open Expecto
open TorchSharp
open MetaGenRL.Core.Agents
open MetaGenRL.Core.Config
open MetaGenRL.Core.Engine
open MetaGenRL.Pipeline
open MetaGenRL.Pipeline.Experiment
open MetaGenRL.Tests.TestUtil

let private f64 = torch.ScalarType.Float64
let private t (xs: float list) = torch.tensor(Array.ofList xs, dtype = f64)
let private values (x: torch.Tensor) = x.to_type(f64).data<float>().ToArray()

/// A small rollout so a test runs in seconds.
let private small (algo: string) =
    Settings.resolveConfig [ "onpolicy_rollout_steps=256"; "onpolicy_minibatch_size=64"; "onpolicy_epochs=2"; "onpolicy_units=16" ]
    |> fun c -> AgentGroup.EffectiveConfig(c, Algorithms.Parse algo)

/// One collect and its update iterations on every slot; returns the rows.
let private round (g: IAgentGroup) =
    let rows = ResizeArray<Metric>()
    let res = g.Collect(Array.create g.Size 1L, Array.create g.Size 100_000L, Action<Metric>(rows.Add))
    let updates = res |> Array.map (fun r -> r.Updates.Value)
    for j in 0L .. (Array.max updates) - 1L do
        let failures = g.Update(j, updates |> Array.map (fun u -> j < u), Action<Metric>(rows.Add))
        Expect.isTrue (failures |> Array.forall isNull) (sprintf "no failure at update %d" j)
    List.ofSeq rows

[<Tests>]
let tests =
    testList "OnPolicy" [
        test "GAE by hand: a terminal end, a truncated end with its bootstrap value, restarts between episodes" {
            // γ 0.9, λ 0.8, one episode ending terminal: δ2 = 3 − 1.5, δ1 = 2 + 0.9·1.5 − 1, δ0 = 1 + 0.9·1 − 0.5
            let struct (adv, ret) = OnPolicyMath.Gae([| 1.0; 2.0; 3.0 |], [| 0.5; 1.0; 1.5 |], [| 0.0; 0.0; 0.0 |], [| 0uy; 0uy; 1uy |], 0.9, 0.8)
            for i, e in List.indexed [ 1.4 + 0.72 * (2.35 + 0.72 * 1.5); 2.35 + 0.72 * 1.5; 1.5 ] do close 1e-12 adv[i] e (sprintf "Â%d" i)
            for i, e in List.indexed [ 3.8696 + 0.5; 3.43 + 1.0; 3.0 ] do close 1e-12 ret[i] e (sprintf "return %d" i)
            // γ 0.5, λ 0.5: episode 1 truncated after 2 steps (V of its true next state = 10), episode 2 terminal
            let struct (adv, _) = OnPolicyMath.Gae([| 1.0; 1.0; 1.0; 1.0 |], [| 1.0; 2.0; 3.0; 4.0 |], [| 0.0; 10.0; 0.0; 0.0 |], [| 0uy; 2uy; 0uy; 1uy |], 0.5, 0.5)
            for i, e in List.indexed [ 2.0; 4.0; -0.75; -3.0 ] do close 1e-12 adv[i] e (sprintf "Â%d (two episodes)" i)
            throwsContaining<ArgumentException> "must end at an episode end" "a rollout cut mid-episode"
                (fun () -> OnPolicyMath.Gae([| 1.0 |], [| 0.0 |], [| 0.0 |], [| 0uy |], 0.9, 0.9) |> ignore)
        }

        test "Gaussian log-probability and entropy by hand" {
            // a = (0.5, −1), μ = 0, σ = (2, 1): Σ −½(a/σ)² − log σ − ½ log 2π
            let lp = OnPolicyMath.GaussianLogProb(t [ 0.5; -1.0 ], t [ 0.0; 0.0 ], t [ log 2.0; 0.0 ])
            let expected = (-0.5 * 0.0625 - log 2.0) + (-0.5) - log (2.0 * Math.PI)
            close 1e-12 (values lp).[0] expected "log π(a)"
            let h = OnPolicyMath.GaussianEntropy(t [ log 2.0; 0.0 ])
            close 1e-12 (values h).[0] (log 2.0 + log (2.0 * Math.PI * Math.E)) "entropy"
        }

        test "PPO's clipped surrogate by hand, with and without clipping and padding; its gradient in closed form" {
            let oldLp = t [ 0.0; 0.0; 0.0 ]
            let adv = t [ 1.0; -1.0; 2.0 ]
            let lp = torch.tensor([| log 1.5; log 0.5; log 1.1 |], dtype = f64, requires_grad = true)
            // ratios 1.5, 0.5, 1.1 with ε 0.2: min(1.5, 1.2)·1, min(−0.5, −0.8), min(2.2, 2.2)
            let loss = OnPolicyMath.ClippedSurrogate(lp, oldLp, adv, 0.2)
            close 1e-12 (values loss).[0] (-(1.2 - 0.8 + 2.2) / 3.0) "clipped"
            close 1e-12 (values (OnPolicyMath.ClippedSurrogate(lp, oldLp, adv, 0.0))).[0] (-(1.5 - 0.5 + 2.2) / 3.0) "unclipped"
            close 1e-12 (values (OnPolicyMath.ClippedSurrogate(lp, oldLp, adv, 0.2, t [ 1.0; 1.0; 0.0 ]))).[0] (-(1.2 - 0.8) / 2.0) "padding left out"
            // the clipped terms carry no gradient; the third, inside the clip range, carries −Â·ρ/n
            let g = torch.autograd.grad([| loss |], [| lp |]).[0]
            let gv = values g
            close 1e-12 gv.[0] 0.0 "clipped above (Â > 0)"
            close 1e-12 gv.[1] 0.0 "clipped below (Â < 0)"
            close 1e-12 gv.[2] (-2.0 * 1.1 / 3.0) "inside the range"
            // at π = π_old the unclipped surrogate's gradient is REINFORCE's −Â/n
            let lp0 = torch.zeros(3L, dtype = f64, requires_grad = true)
            let g0 = values (torch.autograd.grad([| OnPolicyMath.ClippedSurrogate(lp0, oldLp, adv, 0.0) |], [| lp0 |]).[0])
            for i, a in List.indexed [ 1.0; -1.0; 2.0 ] do close 1e-12 g0.[i] (-a / 3.0) (sprintf "REINFORCE gradient %d" i)
        }

        test "settings: each algorithm's defaults, overridden key by key; updates per rollout" {
            Expect.equal (OnPolicySettings.Ppo.Epochs, OnPolicySettings.Ppo.MinibatchSize, OnPolicySettings.Ppo.Clip) (10, 64, 0.2) "PPO"
            Expect.equal (OnPolicySettings.Reinforce.GaeLambda, OnPolicySettings.Reinforce.Clip, OnPolicySettings.Reinforce.PolicyEveryStep) (0.97, 0.0, false) "REINFORCE"
            let s = OnPolicySettings.From(OnPolicySettings.Ppo, Settings.resolveConfig [ "onpolicy_epochs=3"; "onpolicy_clip=0.1" ])
            Expect.equal (s.Epochs, s.Clip, s.MinibatchSize) (3, 0.1, 64) "set keys replace defaults, the rest stay"
            Expect.equal (s.UpdatesFor 200L) 9L "3 epochs × ⌊200/64⌋"
            Expect.equal (OnPolicySettings.Reinforce.UpdatesFor 4100L) 80L "REINFORCE: 80 full-batch steps"
            Expect.equal (s.UpdatesFor 0L) 0L "nothing collected, nothing to learn"
        }

        test "an on-policy group: same seed twice gives the same rows; a saved and loaded slot continues identically" {
            for algo in [ "ppo"; "reinforce-onpolicy" ] do
                let make () = new OnPolicyGroup(small algo, "Pendulum-v1", [| 0; 1 |], [| 11L; 12L |], "cpu", Algorithms.Parse algo, LossLogEvery = 1)
                use a = make ()
                use b = make ()
                let ra = round a
                Expect.equal (round b) ra (algo + ": same seeds, same rows")
                Expect.isTrue (ra |> List.exists (fun m -> m.Name = "policy_loss")) (algo + ": losses logged")
                Expect.equal (a.EnvSteps) [| 400L; 400L |] (algo + ": whole 200-step episodes until ≥ 256 steps")
                let states = [| a.SaveState(0, true); a.SaveState(1, true) |]
                let next = round a
                use c = make ()
                c.LoadState(0, states[0]); c.LoadState(1, states[1])
                Expect.equal (round c) next (algo + ": a loaded group continues with the same rows")
                c.ResetAgent 1
                Expect.equal c.EnvSteps [| 800L; 0L |] (algo + ": a reset slot starts again")
        }

        test "train --algo ppo and reinforce-onpolicy run from the CLI, one group for several seeds, each seed as alone" {
            for algo in [ "ppo"; "reinforce-onpolicy" ] do
                let dir = tempDir ("cli-" + algo)
                try
                    let args seeds out =
                        [ "train"; "--algo"; algo; "--env"; "Pendulum-v1"; "--steps"; "800"; "--out"; out
                          "--set"; "onpolicy_rollout_steps=256"; "--set"; "onpolicy_units=16"; "--loss-log-every"; "5" ] @ seeds
                    let rc, out, err = CliTests.cli (args [ "--seeds"; "0,1" ] dir)
                    Expect.equal rc 0 (sprintf "%s: exit code; stdout %s stderr %s" algo out err)
                    let alone = Path.Combine(dir, "alone")
                    let rc1, _, err1 = CliTests.cli (args [ "--seed"; "1" ] alone)
                    Expect.equal rc1 0 (sprintf "%s alone: %s" algo err1)
                    // seed 1 in a group of two follows its own rollouts and updates: the rows of its lone run, up to
                    // the rounding of the batched kernels (float32 through a few dozen updates: 1e-3 relative)
                    let returns (d: string) =
                        MetaGenRL.Pipeline.Results.readParquet (Path.Combine(d, "metrics.parquet")) |> List.filter (fun r -> r.metric = "episode_return")
                    let inGroup, lone = returns (Path.Combine(dir, "s1")), returns alone
                    Expect.equal (inGroup |> List.map (fun r -> r.env_step)) (lone |> List.map (fun r -> r.env_step)) (algo + ": same episodes")
                    for a, b in List.zip inGroup lone do close (1e-3 * (abs b.value + 1.0)) a.value b.value (algo + ": episode return in a group and alone")
                    for s in [ 0; 1 ] do
                        let rows = MetaGenRL.Pipeline.Results.readParquet (Path.Combine(dir, sprintf "s%d" s, "metrics.parquet"))
                        Expect.equal (rows |> List.filter (fun r -> r.metric = "episode_return") |> List.length) 4 (sprintf "%s seed %d: four episodes" algo s)
                        for m in [ "policy_loss"; "value_loss"; "policy_entropy"; "approx_kl" ] do
                            Expect.isTrue (rows |> List.exists (fun r -> r.metric = m)) (sprintf "%s: %s logged" algo m)
                        Expect.isTrue (rows |> List.forall (fun r -> r.variant = algo && Double.IsFinite r.value)) (algo + ": rows")
                finally Directory.Delete(dir, true)
        }

        test "ppo and reinforce-onpolicy are experiment baselines like any other" {
            let out = tempDir "onpolicy-exp"
            try
                let e =
                    { Experiment.create "onpolicy" with
                        MetaTest = [ "Pendulum-v1" ]; Baselines = [ "ppo"; "reinforce-onpolicy" ]; BaselineSeeds = [ 0 ]
                        Scale = Micro; MetaTestSteps = Some 400L
                        Set = [ "onpolicy_rollout_steps", "200"; "onpolicy_units", "16" ] }
                Expect.equal (Script.main e [| "x.fsx"; "--out"; out; "--no-report" |]) 0 "the experiment completes"
                let rows = Results.readParquet (Path.Combine(out, "results.parquet"))
                for algo in [ "ppo"; "reinforce-onpolicy" ] do
                    let returns = rows |> List.filter (fun r -> r.variant = algo && r.metric = "episode_return")
                    Expect.equal returns.Length 2 (sprintf "%s: two 200-step episodes in 400 steps" algo)
            finally Directory.Delete(out, true)
        }
    ]
