/// LunarLanderContinuous-v2 on Box2D: geometry and masses, free fall and engines, the reward identity,
/// every way an episode ends, determinism, and a hand-written landing controller against random actions.
module MetaGenRL.Tests.Box2DEnvTests

open System
open Expecto
open MetaGenRL.Core.Envs
open MetaGenRL.Tests.TestUtil

let private id = "LunarLanderContinuous-v2"
let private dt = 1.0 / 50.0
let private W, H = 20.0, 400.0 / 30.0
let private legMass = 4.0 * (2.0 / 30.0) * (8.0 / 30.0)          // box 4/30 × 16/30, density 1
let private landerMass = 5.0 * (867.0 / 900.0)                     // hull area 867 px² (trapezoid 527 + box 340), density 5

let private clamp lo hi (v: float) = max lo (min hi v)

/// A hand-written PD lander: lean towards the pad centre (positive tilt pushes towards −x), descend at a
/// speed proportional to the height, and cut the engines once a leg touches.
let landingController (o: float32[]) =
    let x, y, vx, vy, th, om = float o.[0], float o.[1], float o.[2], float o.[3], float o.[4], float o.[5]
    if o.[6] > 0.5f || o.[7] > 0.5f then [| -1f; 0f |]
    else
        let tilt = clamp -0.4 0.4 (0.5 * x + 1.0 * vx)
        let turn = 8.0 * (tilt - th) - 6.0 * om              // a1 > 0 fires the left nozzle: pushes right, turns clockwise
        let sink = -(0.03 + 0.3 * max 0.0 y)
        [| float32 (clamp -1.0 1.0 (15.0 * (sink - vy))); float32 (clamp -1.0 1.0 -turn) |]

/// Holds the craft at a fixed height above the pad: never lands, never crashes.
let private hoverController (o: float32[]) =
    let a = landingController [| o.[0]; o.[1]; o.[2]; o.[3]; o.[4]; o.[5]; 0f; 0f |]
    [| float32 (clamp -1.0 1.0 (15.0 * (0.5 * (0.5 - float o.[1]) - float o.[3]))); a.[1] |]

/// Plays one episode; returns the return, the number of steps and the last step.
let private episode seed (policy: float32[] -> float32[]) =
    use env = new LunarLanderContinuousEnv(seed)
    let mutable o = env.Reset()
    let mutable ret, n = 0.0, 0
    let mutable last = Unchecked.defaultof<StepResult>
    while n = 0 || not last.Done do
        last <- env.Step(policy o)
        ret <- ret + last.Reward
        o <- last.Observation
        n <- n + 1
    ret, n, last

let private freshEnv seed =
    let env = new LunarLanderContinuousEnv(seed)
    env.Reset() |> ignore
    env

[<Tests>]
let tests =
    testList "Envs.Box2D" [
        testCase "spaces, registry and the first observation" <| fun () ->
            use env = EnvRegistry.Make(id, 0)
            Expect.equal env.Id id "id"
            Expect.equal env.ObservationSize 8 "obs size"
            Expect.equal env.ActionSize 2 "action size"
            Expect.equal env.ActionLow [| -1f; -1f |] "low"
            Expect.equal env.ActionHigh [| 1f; 1f |] "high"
            let o = env.Reset()
            Expect.equal o.Length 8 "obs length"
            Expect.isTrue (abs o.[0] < 0.1f) "starts near the centre"
            Expect.isTrue (o.[1] > 1.3f && o.[1] < 1.5f) "starts high: (H − H/4 − 18/30)/(H/2) ≈ 1.41"
            Expect.equal (o.[6], o.[7]) (0f, 0f) "legs in the air"
            Expect.equal (env :?> EnvBase).ElapsedSteps 0 "the reset step is not counted"

        testCase "masses follow from the geometry" <| fun () ->
            use env = freshEnv 0
            close 1e-3 env.LanderMass 4.8167 "lander mass"
            close 1e-4 env.LanderMass landerMass "lander mass from the polygon area"
            close 1e-3 env.LegMass 0.0711 "leg mass"
            close 1e-5 env.LegMass legMass "leg mass from the box"

        testCase "terrain: the pad between the flags is flat at 0.99·H/4, the rest varies with the seed" <| fun () ->
            use a = freshEnv 1
            use b = freshEnv 2
            close 1e-6 a.HelipadY (H / 4.0) "pad height"
            close 1e-6 a.HelipadX1 (0.4 * W) "pad x1"
            close 1e-6 a.HelipadX2 (0.6 * W) "pad x2"
            for i in 4 .. 6 do close 1e-6 a.TerrainY.[i] (0.99 * H / 4.0) $"smoothed pad vertex {i}"
            Expect.equal a.TerrainY.Count 11 "11 vertices"
            close 1e-6 a.TerrainX.[10] W "spans the screen"
            Expect.notEqual a.TerrainY.[0] b.TerrainY.[0] "seeds differ"

        testCase "free fall: with the engines off, vy drops by g·dt = 0.2 m/s per step" <| fun () ->
            use env = freshEnv 1
            // Joint forces trade momentum between hull and legs while the legs snap into their limits (step
            // 1) and when the motors swing them onto their stops (steps 16–17), so the hull alone follows
            // pure free fall in between.
            env.Step [| 0f; 0f |] |> ignore
            let mutable vy = env.LanderState.Vy |> float
            for t in 2 .. 14 do
                let r = env.Step [| 0f; 0f |]
                let vy' = float env.LanderState.Vy
                close 1e-3 (vy' - vy) (-10.0 * dt) $"Δvy at step {t}"
                close 1e-5 (float r.Observation.[3]) (vy' * (H / 2.0) / 50.0) "obs[3] = vy·(H/2)/FPS"
                vy <- vy'

        testCase "main engine: full throttle lifts with ≈ 13·(4/30)/total mass per step against gravity" <| fun () ->
            let meanDvy action =
                use env = freshEnv 3
                env.Step [| 0f; 0f |] |> ignore          // let the legs settle (see free fall)
                let v0 = float env.LanderState.Vy
                for _ in 1 .. 20 do env.Step action |> ignore
                (float env.LanderState.Vy - v0) / 20.0
            let free, burn = meanDvy [| 0f; 0f |], meanDvy [| 1f; 0f |]
            close 2e-3 free (-0.2) "free fall"
            Expect.isGreaterThan burn 0.0 "the engine overcomes gravity"
            // The engine impulse is 13·(4/30 ± dispersion); the legs ride along through their joints.
            close 0.06 (burn - free) (13.0 * (4.0 / 30.0) / (landerMass + 2.0 * legMass)) "Δv per step from the engine"

        testCase "reward = Δshaping − 0.3·main power − 0.03·side power" <| fun () ->
            use env = freshEnv 4
            let check (a: float32[]) mPower sPower =
                let before = env.Shaping
                let r = env.Step a
                let o = r.Observation |> Array.map float
                let shaping =
                    -100.0 * sqrt (o.[0] ** 2.0 + o.[1] ** 2.0) - 100.0 * sqrt (o.[2] ** 2.0 + o.[3] ** 2.0)
                    - 100.0 * abs o.[4] + 10.0 * o.[6] + 10.0 * o.[7]
                close 1e-4 env.Shaping shaping "shaping from the observation"
                close 1e-9 r.Reward (env.Shaping - before - 0.3 * mPower - 0.03 * sPower) $"reward for %A{a}"
            check [| 0f; 0f |] 0.0 0.0
            check [| 1f; 1f |] 1.0 1.0
            check [| 0.5f; -0.75f |] 0.75 0.75
            check [| -0.5f; 0.4f |] 0.0 0.0           // main off below 0, side off within ±0.5
            check [| 3f; -7f |] 1.0 1.0               // clipped to the box

        testCase "crash: falling without engines ends with −100 and the hull touched" <| fun () ->
            for seed in 0 .. 2 do
                let _, n, last = episode seed (fun _ -> [| 0f; 0f |])
                Expect.isTrue last.Terminated $"seed {seed} terminated"
                Expect.equal last.Reward -100.0 $"seed {seed} reward"
                Expect.isLessThan n 200 "falls within a few seconds"
                Expect.isLessThan (abs last.Observation.[0]) 1f "on screen: a crash, not an exit"

        testCase "out of bounds: |x| ≥ 1 ends with −100" <| fun () ->
            use env = freshEnv 5
            env.SetLanderVelocity(25.0, 4.0)
            let mutable last = env.Step [| 0f; 0f |]
            while not last.Done do last <- env.Step [| 0f; 0f |]
            Expect.isTrue last.Terminated "terminated"
            Expect.isGreaterThanOrEqual last.Observation.[0] 1f "past the right edge"
            Expect.isFalse env.GameOver "no contact: it flew off"
            Expect.equal last.Reward -100.0 "reward"

        testCase "hovering is truncated at 1000 steps, not terminated" <| fun () ->
            let _, n, last = episode 6 hoverController
            Expect.equal n 1000 "steps"
            Expect.isTrue last.Truncated "truncated"
            Expect.isFalse last.Terminated "not terminated"

        testCase "same seed twice gives identical trajectories, other seeds differ" <| fun () ->
            let run seed =
                use env = new LunarLanderContinuousEnv(seed)
                let first = env.Reset()
                let rest =
                    [| for t in 0 .. 149 do
                         let r = env.Step [| float32 (sin (0.1 * float t)); float32 (cos (0.23 * float t)) |]
                         yield r.Observation, r.Reward
                         if r.Done then env.Reset() |> ignore |]
                first, rest
            Expect.equal (run 11) (run 11) "same seed"
            Expect.notEqual (fst (run 11)) (fst (run 12)) "different seeds"

        testCase "a hand-written landing controller solves it; random actions score far below" <| fun () ->
            let seeds = [ 0 .. 4 ]
            let landings = seeds |> List.map (fun s -> episode s landingController)
            for (ret, _, last) in landings do
                Expect.equal last.Reward 100.0 $"comes to rest on the pad (return {ret:F1})"
            let landed = landings |> List.averageBy (fun (r, _, _) -> r)
            let rng = Random 0
            let random = seeds |> List.averageBy (fun s ->
                let ret, _, _ = episode s (fun _ -> [| float32 (rng.NextDouble() * 2.0 - 1.0); float32 (rng.NextDouble() * 2.0 - 1.0) |])
                ret)
            Expect.isGreaterThan landed 200.0 "controller mean return"
            Expect.isLessThan random 0.0 "random mean return"
            Expect.isGreaterThan (landed - random) 200.0 "gap"

        testCase "coming to rest on both legs: the hull falls asleep and the episode ends with +100" <| fun () ->
            use env = freshEnv 7
            let mutable last = env.Step [| 0f; 0f |]
            while not last.Done do last <- env.Step(landingController last.Observation)
            Expect.isTrue last.Terminated "terminated"
            Expect.equal last.Reward 100.0 "landing bonus"
            Expect.isFalse env.LanderAwake "asleep"
            Expect.isFalse env.GameOver "the hull never touched"
            Expect.equal (last.Observation.[6], last.Observation.[7]) (1f, 1f) "both legs down"
            Expect.isTrue (float last.Observation.[0] * 10.0 + 10.0 > env.HelipadX1 && float last.Observation.[0] * 10.0 + 10.0 < env.HelipadX2) "between the flags"

        testCase "invalid actions name the env; Step before Reset throws" <| fun () ->
            use env = new LunarLanderContinuousEnv(0)
            throwsContaining<InvalidOperationException> "Reset" "step before reset" (fun () -> env.Step [| 0f; 0f |] |> ignore)
            env.Reset() |> ignore
            throwsContaining<ArgumentException> id "wrong length" (fun () -> env.Step [| 0f |] |> ignore)
            throwsContaining<ArgumentException> id "NaN" (fun () -> env.Step [| 0f; nanf |] |> ignore)
            let r = env.Step [| 0f; 0f |]
            Expect.equal r.Observation.Length 8 "still usable after rejected actions"

        testCase "Dispose frees the world and is idempotent" <| fun () ->
            let env = freshEnv 0
            env.Dispose()
            env.Dispose()
            throwsContaining<InvalidOperationException> "Reset" "no world after dispose" (fun () -> env.LanderMass |> ignore)
    ]
