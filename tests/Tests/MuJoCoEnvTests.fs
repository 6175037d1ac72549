/// The 8 gym v2 MuJoCo envs against their specification: compiled models, observation layouts, reward formulas
/// recomputed by hand, termination rules, seeding, and MuJoCo errors surfacing as exceptions. Real physics.
module MetaGenRL.Tests.MuJoCoEnvTests

open System
open System.IO
open System.Threading.Tasks
open Expecto
open MetaGenRL.Core.Envs
open MetaGenRL.Tests.TestUtil

// ── SPECIFICATION TABLES ──

/// What the spec tables say about one env. Masses are in body-id order after the world body; "" marks an
/// unnamed body. MassTol gives the tolerance for an expected mass (as printed in the tables).
type Spec =
    { Id: string
      Obs: int
      Act: int
      ActHigh: float32
      Nq: int
      Nv: int
      Nu: int
      NBody: int
      FrameSkip: int
      Dt: float
      MaxSteps: int
      Qpos0: float[]
      Masses: (string * float)[]
      Total: float
      MassTol: float -> float }

let relTol (m: float) = 1e-4 * m
let printed3 (_: float) = 5e-4

let antLeg i =
    let hip = [| "front_left_leg"; "front_right_leg"; "back_leg"; "right_back_leg" |].[i - 1]
    [| hip, 0.03915775; sprintf "aux_%d" i, 0.03915775; "", 0.0675922 |]

let specs =
    [ { Id = "HalfCheetah-v2"; Obs = 17; Act = 6; ActHigh = 1.0f; Nq = 9; Nv = 9; Nu = 6; NBody = 8; FrameSkip = 5; Dt = 0.05
        MaxSteps = 1000; Qpos0 = Array.zeroCreate 9
        Masses = [| "torso", 6.250; "bthigh", 1.544; "bshin", 1.587; "bfoot", 1.095; "fthigh", 1.438; "fshin", 1.201; "ffoot", 0.885 |]
        Total = 14.0; MassTol = printed3 }
      { Id = "Hopper-v2"; Obs = 11; Act = 3; ActHigh = 1.0f; Nq = 6; Nv = 6; Nu = 3; NBody = 5; FrameSkip = 4; Dt = 0.008
        MaxSteps = 1000; Qpos0 = [| 0.0; 1.25; 0.0; 0.0; 0.0; 0.0 |]
        Masses = [| "torso", 3.665; "thigh", 4.058; "leg", 2.781; "foot", 5.316 |]
        Total = 15.82; MassTol = printed3 }
      { Id = "Walker2d-v2"; Obs = 17; Act = 6; ActHigh = 1.0f; Nq = 9; Nv = 9; Nu = 6; NBody = 8; FrameSkip = 4; Dt = 0.008
        MaxSteps = 1000; Qpos0 = [| 0.0; 1.25; 0.0; 0.0; 0.0; 0.0; 0.0; 0.0; 0.0 |]
        Masses =
          [| "torso", 3.665191; "thigh", 4.057891; "leg", 2.781357; "foot", 3.166725
             "thigh_left", 4.057891; "leg_left", 2.781357; "foot_left", 3.166725 |]
        Total = 23.67714; MassTol = relTol }
      { Id = "Ant-v2"; Obs = 111; Act = 8; ActHigh = 1.0f; Nq = 15; Nv = 14; Nu = 8; NBody = 14; FrameSkip = 5; Dt = 0.05
        MaxSteps = 1000; Qpos0 = Array.append [| 0.0; 0.0; 0.75; 1.0 |] (Array.zeroCreate 11)
        Masses = Array.concat [ [| "torso", 0.3272492 |]; antLeg 1; antLeg 2; antLeg 3; antLeg 4 ]
        Total = 0.9108801; MassTol = relTol }
      { Id = "InvertedPendulum-v2"; Obs = 4; Act = 1; ActHigh = 3.0f; Nq = 2; Nv = 2; Nu = 1; NBody = 3; FrameSkip = 2; Dt = 0.04
        MaxSteps = 1000; Qpos0 = Array.zeroCreate 2
        Masses = [| "cart", 10.47198; "pole", 5.018592 |]
        Total = 15.49057; MassTol = relTol }
      { Id = "InvertedDoublePendulum-v2"; Obs = 11; Act = 1; ActHigh = 1.0f; Nq = 3; Nv = 3; Nu = 1; NBody = 4; FrameSkip = 5
        Dt = 0.05; MaxSteps = 1000; Qpos0 = Array.zeroCreate 3
        Masses = [| "cart", 10.47198; "pole", 4.198739; "pole2", 4.198739 |]
        Total = 18.86945; MassTol = relTol }
      { Id = "Reacher-v2"; Obs = 11; Act = 2; ActHigh = 1.0f; Nq = 4; Nv = 4; Nu = 2; NBody = 5; FrameSkip = 2; Dt = 0.02
        MaxSteps = 50; Qpos0 = [| 0.0; 0.0; 0.1; -0.1 |]
        Masses = [| "body0", 0.03560472; "body1", 0.03560472; "fingertip", 0.00418879; "target", 0.003053628 |]
        Total = 0.07845185; MassTol = relTol }
      { Id = "Swimmer-v2"; Obs = 8; Act = 2; ActHigh = 1.0f; Nq = 5; Nv = 5; Nu = 2; NBody = 4; FrameSkip = 4; Dt = 0.04
        MaxSteps = 1000; Qpos0 = Array.zeroCreate 5
        Masses = [| "torso", 35.60472; "mid", 35.60472; "back", 35.60472 |]
        Total = 106.8142; MassTol = relTol } ]

// ── HELPERS ──

let make id seed = MuJoCoEnvs.Make(id, seed) :?> MuJoCoEnv

/// A fixed pseudo-random action sequence in [−high, high].
let actions (seed: int) (n: int) (size: int) (high: float32) =
    let rng = Random seed
    Array.init n (fun _ -> Array.init size (fun _ -> high * float32 (2.0 * rng.NextDouble() - 1.0)))

/// Observations and rewards of `steps` env steps, resetting whenever an episode ends.
let rollout (env: IEnv) (acts: float32[][]) =
    let first = env.Reset()
    let trace = ResizeArray<float32[] * float>()
    trace.Add((first, 0.0))
    for a in acts do
        let r = env.Step a
        trace.Add((r.Observation, r.Reward))
        if r.Done then trace.Add((env.Reset(), 0.0))
    trace.ToArray()

/// Runs `f`, expecting an exception of type 'E, and returns it for checks on its message.
let throwsWith<'E when 'E :> exn> (f: unit -> unit) (what: string) : 'E =
    try
        f ()
        failtestf "%s: expected %s, nothing was thrown" what typeof<'E>.Name
    with
    | :? 'E as e -> e
    | e when (e :? AssertException) -> raise e
    | e -> failtestf "%s: expected %s, got %s: %s" what typeof<'E>.Name (e.GetType().Name) e.Message

let sq (a: float32[]) = a |> Array.sumBy (fun x -> float x * float x)
let f32 (xs: float seq) = xs |> Seq.map float32 |> Array.ofSeq
let clip lo hi (x: float) = Math.Clamp(x, lo, hi)

/// Resets, puts the env in (qpos, qvel), steps once with `action`; returns the state before and the step result.
let stepFrom (env: MuJoCoEnv) (qpos: float[]) (qvel: float[]) (action: float32[]) =
    env.Reset() |> ignore
    env.SetState(qpos, qvel)
    let before = env.Qpos
    before, env.Step action

let obsEqual (actual: float32[]) (expected: float32[]) what =
    Expect.equal actual.Length expected.Length (what + ": obs length")
    for i in 0 .. actual.Length - 1 do
        close 1e-6 (float actual.[i]) (float expected.[i]) (sprintf "%s: obs[%d]" what i)

/// The observation each env should return, recomputed from its public state with gym's formulas.
let expectedObs (env: MuJoCoEnv) =
    let q, v = env.Qpos, env.Qvel
    match env.Id with
    | "HalfCheetah-v2" -> f32 (Seq.append q.[1..] v)
    | "Hopper-v2" | "Walker2d-v2" -> f32 (Seq.append q.[1..] (Seq.map (clip -10.0 10.0) v))
    // cfrc_ext stays zero under v2 semantics (mj_rnePostConstraint is never called).
    | "Ant-v2" -> Array.concat [ f32 q.[2..]; f32 v; Array.zeroCreate 84 ]
    | "InvertedPendulum-v2" -> f32 (Seq.append q v)
    // qfrc_constraint is zero away from the rail's ends, where these checks run.
    | "InvertedDoublePendulum-v2" ->
        Array.concat [ f32 [ q.[0]; sin q.[1]; sin q.[2]; cos q.[1]; cos q.[2] ]; f32 (Seq.map (clip -10.0 10.0) v); Array.zeroCreate 3 ]
    | "Reacher-v2" ->
        let tip, target = env.BodyPosition "fingertip", env.BodyPosition "target"
        f32 [ cos q.[0]; cos q.[1]; sin q.[0]; sin q.[1]; q.[2]; q.[3]; v.[0]; v.[1]
              tip.[0] - target.[0]; tip.[1] - target.[1]; tip.[2] - target.[2] ]
    | "Swimmer-v2" -> f32 (Seq.append q.[2..] v)
    | id -> failwithf "no observation formula for %s" id

let tempXml (text: string) =
    let dir = tempDir "mjcf"
    let path = Path.Combine(dir, "model.xml")
    File.WriteAllText(path, text)
    path

// ── PER-ENV TESTS ──

let modelTests (s: Spec) =
    test "model, sizes and compiled masses match the tables" {
        use env = make s.Id 0
        Expect.equal env.ObservationSize s.Obs "obs size"
        Expect.equal env.ActionSize s.Act "action size"
        Expect.equal (env.Reset().Length) s.Obs "reset obs length"
        Expect.equal (env.Nq, env.Nv, env.Nu, env.NBody) (s.Nq, s.Nv, s.Nu, s.NBody) "nq/nv/nu/nbody"
        Expect.equal env.Qpos0 s.Qpos0 "qpos0"
        Expect.equal env.FrameSkip s.FrameSkip "frame skip"
        close 1e-12 env.Dt s.Dt "dt"
        Expect.equal env.MaxEpisodeSteps s.MaxSteps "time limit"
        Expect.equal env.ActionLow (Array.create s.Act -s.ActHigh) "action low"
        Expect.equal env.ActionHigh (Array.create s.Act s.ActHigh) "action high"
        let masses = env.BodyMasses
        Expect.equal masses.[0] 0.0 "the world body has no mass"
        s.Masses |> Array.iteri (fun i (name, m) ->
            close (s.MassTol m) masses.[i + 1] m (sprintf "mass of body %d (%s)" (i + 1) name)
            if name <> "" then close 0.0 (env.BodyMass name) masses.[i + 1] (sprintf "BodyMass %s" name))
        close (s.MassTol s.Total) (Array.sum masses) s.Total "total mass"
    }

let determinismTests (s: Spec) =
    test "same seed ⇒ identical trajectories; other seed differs; obs layout" {
        let acts = actions 123 200 s.Act s.ActHigh
        use a = make s.Id 7
        use b = make s.Id 7
        use c = make s.Id 8
        let ta, tb = rollout a acts, rollout b acts
        Expect.isTrue (Array.forall2 (fun (oa: float32[], ra: float) (ob, rb) -> oa = ob && ra = rb) ta tb) "bitwise identical with the same seed"
        Expect.notEqual (c.Reset()) (fst ta.[0]) "another seed gives another initial state"
        // The reset observation follows gym's layout, and the reset noise is small around qpos0.
        let o = a.Reset()
        obsEqual o (expectedObs a) (s.Id + " reset")
        // (Reacher's target is redrawn anywhere in the disc of radius 0.2, up to 0.34 from its qpos0.)
        let bound = if s.Id = "Reacher-v2" then 0.35 else 0.1
        Array.iteri2 (fun i q q0 -> Expect.isLessThanOrEqual (abs (q - q0)) bound (sprintf "reset qpos[%d] near qpos0" i)) a.Qpos s.Qpos0
    }

let badActionTests (s: Spec) =
    test "bad actions are rejected naming the env" {
        use env = make s.Id 0
        env.Reset() |> ignore
        let tooLong = Array.zeroCreate (s.Act + 1)
        let ex1 = throwsWith<ArgumentException> (fun () -> env.Step tooLong |> ignore) "wrong length"
        let withNaN = Array.create s.Act 0.0f
        withNaN.[s.Act - 1] <- nanf
        let ex2 = throwsWith<ArgumentException> (fun () -> env.Step withNaN |> ignore) "NaN"
        let withInf = Array.create s.Act infinityf
        Expect.throwsT<ArgumentException> (fun () -> env.Step withInf |> ignore) "Inf" |> ignore
        Expect.stringContains ex1.Message s.Id "length message names the env"
        Expect.stringContains ex2.Message s.Id "NaN message names the env"
        Expect.isFalse (env.Step(Array.zeroCreate s.Act).Done) "still usable afterwards"
    }

// ── REWARD FORMULAS ON HAND-MADE STATES ──

/// Forward-progress envs: reward = Δqpos[0]/dt + alive − ctrlWeight·‖a‖², with the raw (unclipped) action.
let forwardRewardTest id alive ctrlWeight (qpos: float[]) (qvel: float[]) =
    test (sprintf "%s reward = Δx/dt + %g − %g·‖a‖² (raw action)" id alive ctrlWeight) {
        use env = make id 0
        let rng = Random 5
        // Deliberately beyond the ctrlrange: the cost uses the raw values, MuJoCo clamps the control.
        let a = Array.init env.ActionSize (fun _ -> float32 (3.0 * rng.NextDouble() - 1.5))
        let before, r = stepFrom env qpos qvel a
        let after = env.Qpos
        close 1e-9 r.Reward ((after.[0] - before.[0]) / env.Dt + alive - ctrlWeight * sq a) "reward"
        obsEqual r.Observation (expectedObs env) (id + " step")
        // Same dynamics as the clipped action.
        let _, _ = stepFrom env qpos qvel (a |> Array.map (fun x -> Math.Clamp(x, -1.0f, 1.0f)))
        Expect.equal env.Qpos after "MuJoCo clamps ctrl to ctrlrange"
    }

let rewardTests =
    testList "rewards" [
        forwardRewardTest "HalfCheetah-v2" 0.0 0.1 [| 0.0; 0.05; 0.1; 0.2; -0.2; 0.1; 0.3; -0.3; 0.2 |] [| 1.5; 0.0; 0.2; 0.0; 1.0; 0.0; 0.0; -1.0; 0.0 |]
        forwardRewardTest "Hopper-v2" 1.0 1e-3 [| 0.0; 1.25; 0.05; -0.1; -0.1; 0.1 |] [| 1.0; 0.0; 0.0; 0.5; 0.0; 30.0 |]
        forwardRewardTest "Walker2d-v2" 1.0 1e-3 [| 0.0; 1.25; 0.05; -0.1; -0.1; 0.1; -0.2; -0.3; 0.0 |] [| 1.0; 0.0; 0.0; 0.5; 0.0; 30.0; 0.0; 0.0; 0.0 |]
        forwardRewardTest "Swimmer-v2" 0.0 1e-4 [| 0.0; 0.1; 0.2; 0.5; -0.5 |] [| 0.3; 0.0; 0.1; 1.0; -1.0 |]

        test "Hopper and Walker2d clip velocities at ±10 in the observation" {
            for id in [ "Hopper-v2"; "Walker2d-v2" ] do
                use env = make id 0
                let qvel = Array.zeroCreate env.Nv
                // The thigh starts at its upper limit (0), so spin it into its range.
                qvel.[3] <- -40.0
                let _, r = stepFrom env env.Qpos0 qvel (Array.zeroCreate env.ActionSize)
                Expect.isLessThan env.Qvel.[3] -10.0 "the joint still spins fast"
                Expect.equal r.Observation.[env.Nq - 1 + 3] -10.0f (id + ": clipped qvel[3]")
        }

        test "Ant reward = Δx_torso/dt − 0.5·‖a‖² − contact cost (zero in v2) + 1" {
            use env = make "Ant-v2" 0
            let qpos = Array.copy env.Qpos0
            qpos.[2] <- 0.6
            qpos.[7] <- 0.2
            qpos.[8] <- 0.5
            let qvel = Array.zeroCreate env.Nv
            qvel.[0] <- 0.8
            qvel.[1] <- -0.3
            let a = [| 0.5f; -0.5f; 1.2f; 0.0f; -0.3f; 0.7f; 0.1f; -1.0f |]
            env.Reset() |> ignore
            env.SetState(qpos, qvel)
            let xBefore = (env.BodyPosition "torso").[0]
            close 0.0 xBefore qpos.[0] "after SetState the torso origin is the free joint's x"
            let r = env.Step a
            let xAfter = (env.BodyPosition "torso").[0]
            close 1e-9 r.Reward ((xAfter - xBefore) / env.Dt - 0.5 * sq a + 1.0) "reward"
            obsEqual r.Observation (expectedObs env) "Ant step"
        }

        test "Reacher reward uses the positions before the step" {
            use env = make "Reacher-v2" 0
            let qpos = [| 0.7; -1.2; 0.15; 0.05 |]
            let qvel = [| 2.0; -3.0; 0.0; 0.0 |]
            let a = [| 0.4f; -0.9f |]
            let _, r = stepFrom env qpos qvel a
            // Fingertip by forward kinematics of the two links (0.1 m, then 0.11 m to the tip); the target sits at
            // qpos[2:4]; both at z = 0.01.
            let tipX = 0.1 * cos qpos.[0] + 0.11 * cos (qpos.[0] + qpos.[1])
            let tipY = 0.1 * sin qpos.[0] + 0.11 * sin (qpos.[0] + qpos.[1])
            let dist = sqrt ((tipX - qpos.[2]) ** 2.0 + (tipY - qpos.[3]) ** 2.0)
            close 1e-9 r.Reward (-dist - sq a) "reward from the pre-step state"
            let moved = env.Qpos
            Expect.isGreaterThan (abs (moved.[0] - qpos.[0])) 1e-3 "the arm moved, so a post-step reward would differ"
            obsEqual r.Observation (expectedObs env) "Reacher step"
            Expect.equal r.Observation.[10] 0.0f "the fingertip−target z component is zero"
            Expect.isFalse r.Terminated "Reacher never terminates"
        }

        test "InvertedDoublePendulum upright at rest earns 10 − (1.2 − 2)² = 9.36" {
            use env = make "InvertedDoublePendulum-v2" 0
            let _, r = stepFrom env (Array.zeroCreate 3) (Array.zeroCreate 3) [| 0.0f |]
            close 1e-3 r.Reward 9.36 "reward"
            close 1e-3 (env.SitePosition "tip").[2] 1.2 "tip height"
            Expect.isFalse r.Terminated "upright is healthy"
        }

        test "InvertedDoublePendulum reward formula on a moving state" {
            use env = make "InvertedDoublePendulum-v2" 0
            let _, r = stepFrom env [| 0.2; 0.1; -0.15 |] [| 0.5; 1.0; -2.0 |] [| 0.3f |]
            let tip, v = env.SitePosition "tip", env.Qvel
            let expected = 10.0 - 0.01 * tip.[0] ** 2.0 - (tip.[2] - 2.0) ** 2.0 - 1e-3 * v.[1] ** 2.0 - 5e-3 * v.[2] ** 2.0
            close 1e-9 r.Reward expected "reward"
            obsEqual r.Observation (expectedObs env) "InvertedDoublePendulum step"
        }

        test "InvertedPendulum pays 1 per step, the terminal one included" {
            use env = make "InvertedPendulum-v2" 0
            let _, r = stepFrom env [| 0.0; 0.01 |] [| 0.0; 0.0 |] [| 0.5f |]
            Expect.equal r.Reward 1.0 "healthy step"
            obsEqual r.Observation (expectedObs env) "InvertedPendulum step"
            let _, t = stepFrom env [| 0.0; 0.5 |] [| 0.0; 0.0 |] [| 0.0f |]
            Expect.isTrue t.Terminated "fallen"
            Expect.equal t.Reward 1.0 "terminal step"
        }
    ]

// ── TERMINATION AND TRUNCATION ──

let terminates id (qpos: float[]) what =
    test (sprintf "%s terminates: %s" id what) {
        use env = make id 0
        let _, r = stepFrom env qpos (Array.zeroCreate env.Nv) (Array.zeroCreate env.ActionSize)
        Expect.isTrue r.Terminated what
        Expect.isFalse r.Truncated "terminated, not truncated"
    }

let healthyAtRest id =
    test (sprintf "%s is healthy near its initial state" id) {
        use env = make id 0
        env.Reset() |> ignore
        let r = env.Step(Array.zeroCreate env.ActionSize)
        Expect.isFalse r.Done "first step from reset"
    }

let with' (q0: float[]) (changes: (int * float) list) =
    let q = Array.copy q0
    for i, x in changes do q.[i] <- x
    q

let neverTerminates id (qpos: float[]) =
    test (sprintf "%s never terminates, even from a wild state" id) {
        use env = make id 0
        env.Reset() |> ignore
        env.SetState(qpos, Array.zeroCreate env.Nv)
        let acts = actions 3 30 env.ActionSize 1.0f
        for a in acts do Expect.isFalse (env.Step a).Terminated "no termination"
    }

let truncates id steps =
    test (sprintf "%s truncates after %d steps" id steps) {
        use env = make id 1
        env.Reset() |> ignore
        let acts = actions 9 steps env.ActionSize 1.0f
        for i in 0 .. steps - 1 do
            let r = env.Step acts.[i]
            Expect.isFalse r.Terminated "never terminated"
            Expect.equal r.Truncated (i = steps - 1) (sprintf "truncated only at the last step (step %d)" (i + 1))
    }

let terminationTests =
    let hop = [| 0.0; 1.25; 0.0; 0.0; 0.0; 0.0 |]
    let walk = [| 0.0; 1.25; 0.0; 0.0; 0.0; 0.0; 0.0; 0.0; 0.0 |]
    let ant = Array.append [| 0.0; 0.0; 0.75; 1.0 |] (Array.zeroCreate 11)
    testList "termination" [
        for id in [ "Hopper-v2"; "Walker2d-v2"; "Ant-v2"; "InvertedPendulum-v2"; "InvertedDoublePendulum-v2" ] do
            healthyAtRest id
        terminates "Hopper-v2" (with' hop [ 1, 0.5 ]) "torso height ≤ 0.7"
        terminates "Hopper-v2" (with' hop [ 2, 0.4 ]) "|pitch| ≥ 0.2"
        test "Hopper terminates on a huge joint velocity and still pays the +1" {
            use env = make "Hopper-v2" 0
            let qvel = Array.zeroCreate 6
            qvel.[5] <- 500.0
            let before, r = stepFrom env hop qvel (Array.zeroCreate 3)
            Expect.isTrue r.Terminated "|qvel| ≥ 100"
            close 1e-9 r.Reward ((env.Qpos.[0] - before.[0]) / env.Dt + 1.0) "terminal reward includes the healthy bonus"
        }
        terminates "Walker2d-v2" (with' walk [ 1, 0.5 ]) "torso height ≤ 0.8"
        terminates "Walker2d-v2" (with' walk [ 1, 2.5 ]) "torso height ≥ 2"
        terminates "Walker2d-v2" (with' walk [ 2, 1.2 ]) "pitch ≥ 1"
        terminates "Ant-v2" (with' ant [ 2, 1.5 ]) "torso z > 1"
        // (The lower bound, z < 0.2, needs the torso sphere of radius 0.25 sunk into the floor; contacts push it
        // back above 0.2 within one env step, so it is not reachable from a hand-made state.)
        terminates "InvertedPendulum-v2" [| 0.0; 0.3 |] "|pole angle| > 0.2"
        terminates "InvertedPendulum-v2" [| 0.0; -0.3 |] "|pole angle| > 0.2 (other side)"
        terminates "InvertedDoublePendulum-v2" [| 0.0; 1.5; 0.0 |] "tip height ≤ 1"
        neverTerminates "HalfCheetah-v2" [| 0.0; 0.3; 3.1; 0.0; 0.0; 0.0; 0.0; 0.0; 0.0 |]
        neverTerminates "Swimmer-v2" [| 0.0; 0.0; 3.0; 1.5; -1.5 |]
        neverTerminates "Reacher-v2" [| 3.0; 2.9; 0.25; -0.25 |]
        truncates "HalfCheetah-v2" 1000
        truncates "Swimmer-v2" 1000
        truncates "Reacher-v2" 50
    ]

// ── MUJOCO ERRORS ──

let errorTests =
    testList "errors" [
        test "an invalid model file gives MuJoCo's message, and the process survives" {
            let path = tempXml """<mujoco><worldbody><geom type="nonsense" size="1"/></worldbody></mujoco>"""
            try
                let ex = throwsWith<MuJoCoException> (fun () -> MuJoCoModel.Load path |> ignore) "invalid geom type"
                Expect.stringContains ex.Message "nonsense" "MuJoCo's own message names the bad value"
                Expect.stringContains ex.Message path "the message names the file"
            finally
                Directory.Delete(Path.GetDirectoryName path, true)
            let ex = throwsWith<MuJoCoException> (fun () -> MuJoCoModel.Load "/nonexistent/model.xml" |> ignore) "missing file"
            Expect.stringContains ex.Message "/nonexistent/model.xml" "names the file"
        }

        test "a range without limited is rejected by MuJoCo 2.2.2" {
            let path = tempXml """<mujoco><worldbody><body><joint type="hinge" range="-1 1"/><geom type="sphere" size="0.1"/></body></worldbody></mujoco>"""
            try
                let ex = throwsWith<MuJoCoException> (fun () -> MuJoCoModel.Load path |> ignore) "range needs limited"
                Expect.stringContains ex.Message "limited" "MuJoCo explains what is missing"
            finally
                Directory.Delete(Path.GetDirectoryName path, true)
        }

        test "a MuJoCo error during stepping becomes a MuJoCoException naming the owner" {
            // The bundled cheetah with a 200-slot stack compiles, but runs out of stack once contacts appear:
            // mju_error inside mj_step, which by default would exit the process.
            let xml = File.ReadAllText(MuJoCoModel.ModelPath "half_cheetah.xml").Replace("nstack=\"300000\"", "nstack=\"200\"")
            Expect.stringContains xml "nstack=\"200\"" "model rewritten"
            let path = tempXml xml
            try
                use model = MuJoCoModel.Load path
                use data = new MuJoCoData(model, "tiny-stack-cheetah")
                data.Reset()
                let ex = throwsWith<MuJoCoException> (fun () -> for _ in 1 .. 200 do data.Step 5) "stack overflow"
                Expect.stringContains ex.Message "tiny-stack-cheetah" "names the owner"
                Expect.stringContains ex.Message "Stack overflow" "carries MuJoCo's message"
                Expect.throwsT<InvalidOperationException> (fun () -> data.Step 1) "refuses to continue before a reset" |> ignore
            finally
                Directory.Delete(Path.GetDirectoryName path, true)
        }

        test "a numerical blow-up throws naming the env instead of silently resetting" {
            use env = make "HalfCheetah-v2" 0
            env.Reset() |> ignore
            let qvel = Array.zeroCreate 9
            qvel.[3] <- 1e12
            env.SetState(env.Qpos0, qvel)
            let ex = throwsWith<MuJoCoException> (fun () -> env.Step(Array.zeroCreate 6) |> ignore) "huge velocity"
            Expect.stringContains ex.Message "HalfCheetah-v2" "names the env"
            Expect.stringContains ex.Message "unstable" "says what happened"
            let again = throwsWith<InvalidOperationException> (fun () -> env.Step(Array.zeroCreate 6) |> ignore) "no silent continuation"
            Expect.stringContains again.Message "HalfCheetah-v2" "names the env"
            env.Reset() |> ignore
            Expect.isFalse (env.Step(Array.zeroCreate 6).Done) "usable again after Reset"
        }

        test "a NaN state throws naming the env" {
            use env = make "Hopper-v2" 0
            env.Reset() |> ignore
            let qpos = env.Qpos
            qpos.[3] <- nan
            env.SetState(qpos, env.Qvel)
            let ex = throwsWith<MuJoCoException> (fun () -> env.Step(Array.zeroCreate 3) |> ignore) "NaN qpos"
            Expect.stringContains ex.Message "Hopper-v2" "names the env"
        }

        test "SetState checks sizes, and a disposed env refuses to step" {
            let env = make "Swimmer-v2" 0
            env.Reset() |> ignore
            Expect.throwsT<ArgumentException> (fun () -> env.SetState(Array.zeroCreate 4, Array.zeroCreate 5)) "short qpos" |> ignore
            env.Dispose()
            env.Dispose()
            Expect.throwsT<ObjectDisposedException> (fun () -> env.Step(Array.zeroCreate 2) |> ignore) "disposed" |> ignore
        }
    ]

// ── MANY ENVS PER PROCESS ──

let concurrencyTests =
    testList "many envs" [
        test "two instances stepped interleaved match one stepped alone" {
            let acts = actions 42 150 6 1.0f
            let alone =
                use env = make "Walker2d-v2" 3
                rollout env acts
            use a = make "Walker2d-v2" 3
            use b = make "Walker2d-v2" 3
            use other = make "Ant-v2" 3
            let trace (env: IEnv) = ResizeArray [ (env.Reset(), 0.0) ]
            let ta, tb = trace a, trace b
            other.Reset() |> ignore
            for act in acts do
                for env, t in [ (a :> IEnv), ta; (b :> IEnv), tb ] do
                    let r = env.Step act
                    t.Add((r.Observation, r.Reward))
                    if r.Done then t.Add((env.Reset(), 0.0))
                if (other.Step(Array.create 8 0.3f)).Done then other.Reset() |> ignore
            Expect.isTrue (Seq.forall2 (=) ta alone) "first instance"
            Expect.isTrue (Seq.forall2 (=) tb alone) "second instance"
        }

        test "envs on parallel threads match the same envs run sequentially" {
            let ids = [| "HalfCheetah-v2"; "Hopper-v2"; "HalfCheetah-v2"; "Reacher-v2" |]
            let run i =
                use env = make ids.[i] i
                rollout env (actions i 100 env.ActionSize 1.0f)
            let sequential = Array.init ids.Length run
            let parallel = Array.zeroCreate ids.Length
            Parallel.For(0, ids.Length, fun i -> parallel.[i] <- run i) |> ignore
            for i in 0 .. ids.Length - 1 do
                Expect.isTrue (Array.forall2 (=) parallel.[i] sequential.[i]) ids.[i]
        }

        test "the registry builds every MuJoCo env and the raw step rate is measurable" {
            for id in MuJoCoEnvs.Ids do
                use env = EnvRegistry.Make(id, 0)
                Expect.equal env.Id id "id"
            Expect.isGreaterThan (MuJoCoEnvs.MeasureRawStepRate("HalfCheetah-v2", 0.05)) 1000.0 "steps/s"
            Expect.throwsT<ArgumentException> (fun () -> MuJoCoEnvs.Make("Humanoid-v2", 0) |> ignore) "unknown id" |> ignore
        }
    ]

[<Tests>]
let tests =
    testList "Envs.MuJoCo" [
        for s in specs do
            testList s.Id [ modelTests s; determinismTests s; badActionTests s ]
        rewardTests
        terminationTests
        errorTests
        concurrencyTests
    ]
