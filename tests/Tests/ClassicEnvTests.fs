/// Pendulum-v1 and MountainCarContinuous-v0: spaces, hand-computed dynamics and rewards, episode ends,
/// determinism and action validation.
module MetaGenRL.Tests.ClassicEnvTests

open System
open Expecto
open MetaGenRL.Core.Envs
open MetaGenRL.Tests.TestUtil

/// Runs a fixed action sequence from reset and returns every observation and reward.
let private rollout (env: IEnv) (actions: float32[][]) =
    let first = env.Reset()
    let steps = actions |> Array.map (fun a -> let r = env.Step a in r.Observation, r.Reward)
    first, steps

let private actionSeq n scale = Array.init n (fun t -> [| float32 (scale * sin (0.37 * float t)) |])

let private pendulum () =
    let env = new PendulumEnv(0)
    env.Reset() |> ignore
    env

let private car () =
    let env = new MountainCarContinuousEnv(0)
    env.Reset() |> ignore
    env

let private commonTests (id: string) (make: int -> IEnv) obsSize (bound: float32) =
    [ testCase $"{id}: spaces" <| fun () ->
        use env = make 0
        Expect.equal env.Id id "id"
        Expect.equal env.ObservationSize obsSize "obs size"
        Expect.equal env.ActionSize 1 "action size"
        Expect.equal env.ActionLow [| -bound |] "low"
        Expect.equal env.ActionHigh [| bound |] "high"
        Expect.equal (env.Reset().Length) obsSize "reset obs length"

      testCase $"{id}: registry builds it" <| fun () ->
        use env = EnvRegistry.Make(id, 3)
        Expect.equal env.Id id "id"

      testCase $"{id}: same seed twice gives identical trajectories, other seeds differ" <| fun () ->
        let actions = actionSeq 150 (float bound)
        use a = make 7
        use b = make 7
        use c = make 8
        let ra, rb, rc = rollout a actions, rollout b actions, rollout c actions
        Expect.equal ra rb "same seed"
        Expect.notEqual (fst ra) (fst rc) "different seeds start differently"

      testCase $"{id}: invalid actions name the env; Step before Reset throws" <| fun () ->
        use env = make 0
        throwsContaining<InvalidOperationException> "Reset" "step before reset" (fun () -> env.Step [| 0f |] |> ignore)
        env.Reset() |> ignore
        throwsContaining<ArgumentException> id "wrong length" (fun () -> env.Step [| 0f; 0f |] |> ignore)
        throwsContaining<ArgumentException> id "NaN" (fun () -> env.Step [| nanf |] |> ignore)
        throwsContaining<ArgumentException> id "inf" (fun () -> env.Step [| infinityf |] |> ignore) ]

[<Tests>]
let tests =
    testList "Envs.Classic" [
        yield! commonTests "Pendulum-v1" (fun s -> new PendulumEnv(s)) 3 2f
        yield! commonTests "MountainCarContinuous-v0" (fun s -> new MountainCarContinuousEnv(s)) 2 1f

        // ── PENDULUM ──
        testCase "Pendulum: reset draws θ in [−π, π) and θ̇ in [−1, 1), obs is (cos, sin, θ̇)" <| fun () ->
            use env = new PendulumEnv(1)
            for _ in 1 .. 50 do
                let o = env.Reset()
                Expect.isTrue (env.Theta >= -Math.PI && env.Theta < Math.PI) "θ range"
                Expect.isTrue (abs env.ThetaDot <= 1.0) "θ̇ range"
                close 1e-6 (float o.[0]) (cos env.Theta) "cos"
                close 1e-6 (float o.[1]) (sin env.Theta) "sin"
                close 1e-6 (float o.[2]) env.ThetaDot "θ̇"

        testCase "Pendulum: one step against hand-computed values" <| fun () ->
            use env = pendulum ()
            env.SetState(1.0, 0.5) |> ignore
            let r = env.Step [| 1.5f |]
            // cost = 1² + 0.1·0.5² + 0.001·1.5²; θ̇' = 0.5 + (15 sin 1 + 3·1.5)·0.05; θ' = 1 + θ̇'·0.05
            close 1e-12 r.Reward -1.02725 "reward"
            close 1e-12 env.ThetaDot 1.3561032386059226 "θ̇'"
            close 1e-12 env.Theta 1.0678051619302962 "θ'"
            close 1e-6 (float r.Observation.[0]) (cos 1.0678051619302962) "obs cos"
            close 1e-6 (float r.Observation.[2]) 1.3561032386059226 "obs θ̇"
            Expect.isFalse r.Done "never terminates"

        testCase "Pendulum: torque and speed are clipped, the cost uses the clipped torque" <| fun () ->
            use env = pendulum ()
            env.SetState(0.3, 7.9) |> ignore
            let r = env.Step [| 5f |]
            close 1e-12 r.Reward -6.335 "reward: 0.3² + 0.1·7.9² + 0.001·2²"
            close 1e-12 env.ThetaDot 8.0 "θ̇ clipped to 8"
            close 1e-12 env.Theta 0.7 "θ' = 0.3 + 8·0.05"

        testCase "Pendulum: the cost normalises the angle into [−π, π)" <| fun () ->
            use env = pendulum ()
            close 1e-12 (PendulumEnv.AngleNormalize 5.0) (5.0 - 2.0 * Math.PI) "normalize 5"
            close 1e-12 (PendulumEnv.AngleNormalize -4.0) (-4.0 + 2.0 * Math.PI) "normalize −4"
            env.SetState(5.0, -2.0) |> ignore
            let r = env.Step [| -0.5f |]
            close 1e-12 r.Reward -(1.2831853071795862 ** 2.0 + 0.4 + 0.00025) "reward"
            close 1e-12 env.ThetaDot -2.7941932059973538 "θ̇'"
            close 1e-12 env.Theta 4.860290339700132 "θ' stays unnormalised"

        testCase "Pendulum: truncated (not terminated) after 200 steps" <| fun () ->
            use env = new PendulumEnv(2)
            env.Reset() |> ignore
            for t in 1 .. 199 do
                let r = env.Step [| 0f |]
                Expect.isFalse r.Done $"step {t}"
            let last = env.Step [| 0f |]
            Expect.isTrue last.Truncated "truncated at 200"
            Expect.isFalse last.Terminated "not terminated"
            throwsContaining<InvalidOperationException> "Reset" "step after the end" (fun () -> env.Step [| 0f |] |> ignore)

        testCase "Pendulum family: gravity, mass, length and torque enter the dynamics (hand-computed)" <| fun () ->
            use env = new PendulumEnv(0)
            env.SetParameters [| 12.0; 0.8; 1.2; 2.4 |]
            env.Reset() |> ignore
            env.SetState(1.0, 0.5) |> ignore
            let r = env.Step [| 1.5f |]
            // u = 1.5·2.4/2 = 1.8; cost = 1 + 0.1·0.25 + 0.001·1.8²; θ̇' = 0.5 + (3·12/(2·1.2)·sin 1 + 3/(0.8·1.2²)·1.8)·0.05
            close 1e-12 r.Reward -1.0282399999999998 "reward on the applied torque"
            close 1e-12 env.ThetaDot 1.3654782386059225 "θ̇'"
            close 1e-12 env.Theta 1.0682739119302962 "θ'"
            Expect.equal env.ActionHigh [| 2f |] "the action box stays ±2"
            Expect.equal (List.ofSeq env.ParameterValues) [ 12.0; 0.8; 1.2; 2.4 ] "values"

        testCase "Env families: parameters change only between episodes, with named errors" <| fun () ->
            use env = new PendulumEnv(0)
            Expect.equal [ for p in env.Parameters -> p.Name ] [ "gravity"; "mass"; "length"; "torque" ] "names"
            Expect.equal (List.ofSeq env.ParameterValues) [ 10.0; 1.0; 1.0; 2.0 ] "nominal at construction"
            env.Reset() |> ignore
            env.Step [| 0f |] |> ignore
            throwsContaining<InvalidOperationException> "between episodes" "mid-episode"
                (fun () -> env.SetParameters [| 10.0; 1.0; 1.0; 2.0 |])
            env.AbandonEpisode()
            throwsContaining<ArgumentException> "expected 4 (gravity" "wrong count" (fun () -> env.SetParameters [| 10.0 |])
            throwsContaining<ArgumentException> "mass" "non-positive" (fun () -> env.SetParameters [| 10.0; 0.0; 1.0; 2.0 |])
            throwsContaining<ArgumentException> "length" "NaN" (fun () -> env.SetParameters [| 10.0; 1.0; nan; 2.0 |])
            throwsContaining<ArgumentException> "env_params" "unknown mode" (fun () -> EnvFamily.ParseMode "heldout" |> ignore)

        testCase "Env families: training draws stay in their ranges, held-out draws outside them, seeded per agent and life" <| fun () ->
            let ps = PendulumEnv.FamilyParameters
            let draws mode = [ for seed in 0L .. 99L do for life in 0 .. 4 -> EnvFamily.Draw(ps, mode, seed, life) ]
            for d in draws EnvParams.Train do
                Seq.iteri2 (fun i (p: EnvParameter) x -> Expect.isTrue (x >= p.TrainLow && x <= p.TrainHigh) $"{p.Name} = {x} in its training range") ps d
            let held = draws EnvParams.HeldOut
            for d in held do
                Seq.iteri2 (fun i (p: EnvParameter) x ->
                    Expect.isTrue (x >= p.OuterLow && x <= p.OuterHigh) $"{p.Name} = {x} within its band"
                    Expect.isFalse (x > p.TrainLow && x < p.TrainHigh) $"{p.Name} = {x} outside the training range") ps d
            // the band below and the band above (equal widths) are both drawn, about equally often
            let below = held |> List.filter (fun d -> d.[0] < ps.[0].TrainLow) |> List.length
            Expect.isTrue (below > 175 && below < 325) $"{below} of 500 gravity draws below the training range"
            Expect.equal (EnvFamily.Draw(ps, EnvParams.Train, 7L, 3)) (EnvFamily.Draw(ps, EnvParams.Train, 7L, 3)) "same agent and life, same draw"
            Expect.notEqual (EnvFamily.Draw(ps, EnvParams.Train, 7L, 3)) (EnvFamily.Draw(ps, EnvParams.Train, 7L, 4)) "a new life, a new draw"
            Expect.notEqual (EnvFamily.Draw(ps, EnvParams.Train, 7L, 3)) (EnvFamily.Draw(ps, EnvParams.Train, 8L, 3)) "another agent, another draw"
            Expect.equal (EnvFamily.Draw(ps, EnvParams.Nominal, 7L, 3)) [| 10.0; 1.0; 1.0; 2.0 |] "nominal"

        // ── MOUNTAIN CAR ──
        testCase "MountainCar: reset draws x in [−0.6, −0.4) with v = 0" <| fun () ->
            use env = new MountainCarContinuousEnv(1)
            for _ in 1 .. 50 do
                let o = env.Reset()
                Expect.isTrue (o.[0] >= -0.6f && o.[0] < -0.4f) "x range"
                Expect.equal o.[1] 0f "v"

        testCase "MountainCar: one step against hand-computed values" <| fun () ->
            use env = car ()
            env.SetState(-0.5, 0.01) |> ignore
            let r = env.Step [| 0.8f |]
            // v' = 0.01 + 0.8·0.0015 − 0.0025·cos(−1.5); x' = −0.5 + v'; reward = −0.1·0.8²
            close 1e-9 env.Velocity 0.011023156995830743 "v'"
            close 1e-9 env.Position -0.48897684300416927 "x'"
            close 1e-7 r.Reward -0.064 "reward"
            close 1e-7 (float r.Observation.[0]) -0.48897684300416927 "obs x"
            Expect.isFalse r.Done "not done"

        testCase "MountainCar family: the engine's power enters the dynamics (hand-computed)" <| fun () ->
            use env = new MountainCarContinuousEnv(0)
            Expect.equal [ for p in env.Parameters -> p.Name ] [ "power" ] "names"
            env.SetParameters [| 0.001 |]
            env.Reset() |> ignore
            env.SetState(-0.5, 0.01) |> ignore
            env.Step [| 0.5f |] |> ignore
            // v' = 0.01 + 0.5·0.001 − 0.0025·cos(−1.5) (0.5 is exact in float32)
            close 1e-15 env.Velocity 0.010323156995830744 "v'"
            close 1e-15 env.Position -0.48967684300416925 "x'"

        testCase "MountainCar: the cost uses the raw action, the force the clipped one; speed and position clip" <| fun () ->
            use env = car ()
            env.SetState(0.55, 0.069) |> ignore
            let r = env.Step [| 3f |]
            // v' = 0.069 + 0.0015 − 0.0025·cos(1.65) = 0.0707 → 0.07; x' = 0.62 → 0.6 (goal reached)
            close 1e-12 env.Velocity 0.07 "v clipped"
            close 1e-12 env.Position 0.6 "x clipped"
            Expect.isTrue r.Terminated "goal"
            close 1e-6 r.Reward (100.0 - 0.1 * 9.0) "100 − 0.1·3²"

        testCase "MountainCar: the left wall stops the car" <| fun () ->
            use env = car ()
            env.SetState(-1.19, -0.05) |> ignore
            let r = env.Step [| 0f |]
            close 1e-12 env.Position -1.2 "x clipped to −1.2"
            Expect.equal env.Velocity 0.0 "v zeroed at the wall"
            Expect.equal r.Reward 0.0 "no cost for a zero action"

        testCase "MountainCar: reaching the goal terminates with 100 − 0.1·a²" <| fun () ->
            use env = car ()
            env.SetState(0.44, 0.02) |> ignore
            let r = env.Step [| 0.5f |]
            close 1e-9 env.Position 0.4601295613708691 "x'"
            Expect.isTrue r.Terminated "terminated"
            Expect.isFalse r.Truncated "not truncated"
            close 1e-9 r.Reward 99.975 "reward"

        testCase "MountainCar: at the goal but moving left does not terminate" <| fun () ->
            use env = car ()
            env.SetState(0.5, -0.01) |> ignore
            let r = env.Step [| 0f |]
            Expect.isTrue (env.Position >= 0.45) "past the flag"
            Expect.isFalse r.Terminated "v < 0"

        testCase "MountainCar: truncated after 999 steps of doing nothing" <| fun () ->
            use env = new MountainCarContinuousEnv(4)
            env.Reset() |> ignore
            let results = Array.init 999 (fun _ -> env.Step [| 0f |])
            Expect.isTrue (results |> Array.take 998 |> Array.forall (fun r -> not r.Done)) "no early end"
            Expect.isTrue results.[998].Truncated "truncated at 999"
            Expect.isFalse results.[998].Terminated "not terminated"
            Expect.equal env.ElapsedSteps 999 "elapsed"

        testCase "MountainCar: a bang-bang policy along the velocity reaches the goal" <| fun () ->
            use env = new MountainCarContinuousEnv(5)
            env.Reset() |> ignore
            let mutable r = env.Step [| 1f |]
            while not r.Done do
                r <- env.Step [| (if r.Observation.[1] >= 0f then 1f else -1f) |]
            Expect.isTrue r.Terminated "reached the flag before the time limit"
    ]
