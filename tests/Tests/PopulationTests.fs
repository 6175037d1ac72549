module MetaGenRL.Tests.PopulationTests

open System
open System.Collections.Concurrent
open System.IO
open System.Threading
open Akka.Actor
open Expecto
open MetaGenRL.Core.Objective
open MetaGenRL.Core.Engine
open MetaGenRL.Actors

// ── A DETERMINISTIC FAKE GROUP ──

/// Where a fault is injected: the nth call (1-based, counted per agent and incarnation: a new group or a restored
/// slot starts again at 1) of a method for one agent; fires once. Throw: the group method throws (the whole group
/// breaks); SlotFail: the group reports that slot failed; NaN: a NaN critic loss (reported as a slot failure by the
/// group, as the contract asks) or a NaN entry in the gradient (returned as if fine: the actor must catch it).
type FaultKind = Throw | SlotFail | NaN
type Fault = { Agent: int; Call: string; At: int; Kind: FaultKind; mutable Fired: bool }

/// A restore of one slot by the actor: LoadState with these bytes, or ResetAgent (None).
type Restore = { Agent: int; State: byte[] option }

/// Tiny float math, no torch, per-slot state: "policy" w drifts with α at each update; ∇α depends on α, w and the
/// agent index. Episodes have a fixed length per agent. Every call is checked to come from the creating thread.
type FakeGroup(spec: GroupSpec, lengths: int[], traces: ConcurrentQueue<string>[], grads: ConcurrentQueue<float32[] option>[],
               restores: ConcurrentQueue<Restore>, faults: Fault list) =
    let thread = Thread.CurrentThread
    let agents = spec.Agents
    let k = agents.Length
    let initAlpha (a: int) = [| 0.3f + 0.1f * float32 a; -0.2f; 0.05f * float32 (a + 1) |]
    let alpha = agents |> Array.map initAlpha
    let w = Array.zeroCreate<float32> k
    let env = Array.zeroCreate<int64> k
    let counts = Array.init k (fun _ -> Collections.Generic.Dictionary<string, int>())
    let checkThread (call: string) =
        if Thread.CurrentThread.ManagedThreadId <> thread.ManagedThreadId then failwithf "%s called from another thread" call
    let enter (slot: int) (call: string) =
        checkThread call
        let c = counts.[slot]
        c.[call] <- (match c.TryGetValue call with | true, n -> n + 1 | _ -> 1)
        let fault =
            faults |> List.tryFind (fun f -> not f.Fired && f.Agent = agents.[slot] && f.Call = call && f.At = c.[call])
            |> Option.map (fun f -> f.Fired <- true; f.Kind)
        if fault = Some Throw then failwithf "injected %s failure" call
        fault
    let save (slot: int) =
        use ms = new MemoryStream()
        use bw = new BinaryWriter(ms)
        for a in alpha.[slot] do bw.Write a
        bw.Write w.[slot]; bw.Write env.[slot]
        bw.Flush(); ms.ToArray()
    member _.Thread = thread
    interface MetaGenRL.Core.Engine.IAgentGroup with
        member _.Agents = agents :> Collections.Generic.IReadOnlyList<int>
        member _.Size = k
        member _.EnvId = "Fake-v0"
        member _.EnvSteps = Array.copy env
        member _.ObjectiveSize = 3
        member _.ComputesObjectiveGradients = true
        member _.Collect(targets, limits, onMetric) =
            Array.init k (fun s ->
                if limits.[s] = 0L then MetaGenRL.Core.Engine.SlotCollect(0L, Nullable(), null) else
                let fault = enter s "collect"
                let a = agents.[s]
                traces.[a].Enqueue(sprintf "C%d" targets.[s])
                if fault = Some SlotFail then MetaGenRL.Core.Engine.SlotCollect(0L, Nullable(), "injected collect failure") else
                let len = int64 lengths.[a]
                let mutable steps = 0L
                let mutable shortest = Nullable()
                while steps < targets.[s] && steps < limits.[s] do
                    let n = min len (limits.[s] - steps)   // the budget may stop the last episode mid-way
                    steps <- steps + n
                    env.[s] <- env.[s] + n
                    if n = len then
                        onMetric.Invoke(Metric(env.[s], "episode_return", float w.[s], a))
                        shortest <- Nullable(int len)
                MetaGenRL.Core.Engine.SlotCollect(steps, shortest, null))
        member _.Update(j, active, onMetric) =
            Array.init k (fun s ->
                if not active.[s] then null else
                let fault = enter s "update"
                let a = agents.[s]
                traces.[a].Enqueue(sprintf "U%d:%.6f" j alpha.[s].[0])
                if fault = Some SlotFail then "injected update failure" else
                w.[s] <- w.[s] + 0.01f * Array.sum alpha.[s] + 0.001f * float32 j
                if j % 2L = 0L || fault = Some NaN then
                    onMetric.Invoke(Metric(env.[s], "critic_loss", (if fault = Some NaN then nan else float w.[s]), a))
                if fault = Some NaN then "critic_loss = NaN" else null)
        member _.ObjectiveGradients(active, onMetric) =
            Array.init k (fun s ->
                if not active.[s] then MetaGenRL.Core.Engine.SlotGradient(null, null) else
                let fault = enter s "grad"
                let a = agents.[s]
                traces.[a].Enqueue(sprintf "G:%.6f" alpha.[s].[0])
                if fault = Some SlotFail then
                    grads.[a].Enqueue None
                    MetaGenRL.Core.Engine.SlotGradient(null, "injected gradient failure")
                else
                let g = alpha.[s] |> Array.mapi (fun i x -> 0.5f * x - 0.1f * w.[s] + 0.01f * float32 ((a + 1) * (i + 1)))
                if fault = Some NaN then g.[1] <- Single.NaN
                grads.[a].Enqueue(if fault = Some NaN then None else Some(Array.copy g))
                onMetric.Invoke(Metric(env.[s], "objective_loss", float (Array.sum g), a))
                MetaGenRL.Core.Engine.SlotGradient(g, null))
        member _.LoadObjective(x) =
            for s in 0 .. k - 1 do
                enter s "load" |> ignore
                alpha.[s] <- Array.copy x
        member _.ObjectiveParameters(slot) = checkThread "parameters"; Array.copy alpha.[slot]
        member _.SaveState(slot, _includeReplay) = checkThread "save"; save slot
        member _.LoadState(slot, bytes) =
            checkThread "load state"
            restores.Enqueue { Agent = agents.[slot]; State = Some bytes }
            use br = new BinaryReader(new MemoryStream(bytes))
            alpha.[slot] <- Array.init 3 (fun _ -> br.ReadSingle())
            w.[slot] <- br.ReadSingle(); env.[slot] <- br.ReadInt64()
            counts.[slot].Clear()
        member _.ResetAgent(slot) =
            checkThread "reset"
            restores.Enqueue { Agent = agents.[slot]; State = None }
            alpha.[slot] <- initAlpha agents.[slot]; w.[slot] <- 0.0f; env.[slot] <- 0L
            counts.[slot].Clear()
        member _.Dispose() = ()

/// Groups over agents with the given episode lengths; keeps each agent's trace, its gradients, the slot restores
/// and every group made (restarts included).
type Fakes(lengths: int[], ?faults: Fault list) =
    let traces = lengths |> Array.map (fun _ -> ConcurrentQueue<string>())
    let grads = lengths |> Array.map (fun _ -> ConcurrentQueue<float32[] option>())
    let restores = ConcurrentQueue<Restore>()
    let made = ConcurrentQueue<FakeGroup>()
    member _.Make = Func<GroupSpec, MetaGenRL.Core.Engine.IAgentGroup>(fun spec ->
        let g = new FakeGroup(spec, lengths, traces, grads, restores, defaultArg faults [])
        made.Enqueue g
        g :> MetaGenRL.Core.Engine.IAgentGroup)
    member _.Trace i = List.ofSeq traces.[i]
    /// Agent i's gradients in order (None: failed or NaN, excluded by the actor).
    member _.Gradients i = List.ofSeq grads.[i]
    member _.Restores = List.ofSeq restores
    member _.Made = List.ofSeq made

let opts n total =
    PopulationOptions(AgentCount = n, TimestepsTotal = total, Steps = 1, Mode = ScheduleMode.Sync)

/// Runs a population; returns the result and every metric row in the order the sink delivered them.
let runWith (o: PopulationOptions) (fakes: Fakes) (progress: IProgress<int64>) =
    let rows = ResizeArray<Metric>()
    let result = Population.Run(o, fakes.Make, Action<Metric>(rows.Add), progress, CancellationToken.None)
    // the pinned group threads end with the ActorSystem
    let deadline = DateTime.UtcNow.AddSeconds 5.0
    while fakes.Made |> List.exists (fun m -> m.Thread.IsAlive) && DateTime.UtcNow < deadline do Thread.Sleep 10
    for m in fakes.Made do Expect.isFalse m.Thread.IsAlive "group thread ended after the run"
    result, List.ofSeq rows

let run (o: PopulationOptions) (fakes: Fakes) = runWith o fakes null

let count name (rows: Metric list) = rows |> List.filter (fun r -> r.Name = name) |> List.length

/// Every progress report, in order (reported from the sink's thread).
type ProgressLog() =
    let values = ConcurrentQueue<int64>()
    member _.Values = List.ofSeq values
    interface IProgress<int64> with
        member _.Report v = values.Enqueue v

/// Reference TF-Adam in double, written out independently of ObjectiveAdam.
let adamReference (alpha0: float[]) (grads: float[] list) =
    let n = alpha0.Length
    let a = Array.copy alpha0
    let m = Array.zeroCreate<float> n
    let v = Array.zeroCreate<float> n
    grads |> List.iteri (fun i g ->
        let t = float (i + 1)
        let lrT = 1e-3 * sqrt (1.0 - 0.999 ** t) / (1.0 - 0.9 ** t)
        for k in 0 .. n - 1 do
            m.[k] <- 0.9 * m.[k] + 0.1 * g.[k]
            v.[k] <- 0.999 * v.[k] + 0.001 * g.[k] * g.[k]
            a.[k] <- a.[k] - lrT * m.[k] / (sqrt v.[k] + 1e-8))
    a

let expectFloats (tol: float) (actual: float32[]) (expected: float[]) what =
    Expect.equal actual.Length expected.Length (what + " length")
    Array.iteri2 (fun i (a: float32) e -> TestUtil.close tol (float a) e (sprintf "%s[%d]" what i)) actual expected

[<Tests>]
let tests =
    testSequenced <| testList "Population" [
        testCase "ObjectiveAdam: mean of the non-excluded gradients, then TF-Adam, 3 steps by hand" <| fun () ->
            let s = ObjectiveAdam([| 1.0f; -2.0f |])
            Expect.equal (s.Step([| [| 0.2f; -0.4f |]; [| 0.4f; 0.0f |] |])) 2 "two gradients used"
            // t=1: m = 0.1·g, v = 0.001·g², lr_t = 1e-3·√0.001/0.1 ⇒ step ≈ lr·sign(g) = 1e-3
            expectFloats 1e-6 s.Alpha [| 0.999; -1.999 |] "α after step 1"
            Expect.equal (s.Step([| [| -0.1f; 0.2f |]; null; [| 0.3f; 0.6f |] |])) 2 "the null (failed) gradient is excluded"
            Expect.equal (s.Step([| null; null |])) 0 "no gradient, no step"
            Expect.equal s.Steps 2L "t counts applied steps only"
            Expect.equal (s.Step([| [| 0.05f; -0.05f |] |])) 1 "one gradient"
            let expected = adamReference [| 1.0; -2.0 |] [ [| 0.3; -0.2 |]; [| 0.1; 0.4 |]; [| 0.05; -0.05 |] ]
            expectFloats 2e-6 s.Alpha expected "α after 3 steps"
            // by hand, step 2 of coordinate 0: m = 0.9·0.03 + 0.1·0.1 = 0.037, v = 0.999·9e-5 + 0.001·0.01 = 9.991e-5,
            // lr_t = 1e-3·√(1−0.999²)/(1−0.9²)
            let lr2 = 1e-3 * sqrt (1.0 - 0.999 * 0.999) / (1.0 - 0.81)
            TestUtil.close 1e-6 expected.[0] (0.999 - lr2 * 0.037 / (sqrt 9.991e-5 + 1e-8) - (1e-3 * sqrt (1.0 - 0.999 ** 3.0) / (1.0 - 0.9 ** 3.0)) * (0.9 * 0.037 + 0.1 * 0.05) / (sqrt (0.999 * 9.991e-5 + 0.001 * 0.0025) + 1e-8)) "reference by hand"
            let back = ObjectiveAdam.Import(s.Export())
            Expect.equal back.Alpha s.Alpha "export/import α"
            Expect.equal back.Steps 3L "export/import t"
            back.Apply([| 0.1f; 0.1f |]); s.Apply([| 0.1f; 0.1f |])
            Expect.equal back.Alpha s.Alpha "moments survive export/import"

        testCase "ObjectiveServer actor: averages in order, publishes versions, exports its state" <| fun () ->
            use system = ActorSystem.Create("server-test", Akka.Configuration.ConfigurationFactory.ParseString "akka.loglevel = WARNING")
            let server = system.ActorOf(ObjectiveServer.Props 1e-3)
            let ask (m: obj) = server.Ask<ObjectivePublished>(m, TimeSpan.FromSeconds 5.0).Result
            let p0 = ask (InitObjective [| 1.0f; -2.0f |])
            Expect.equal p0.Version 0L "version 0"
            let p1 = ask (ApplyGradients(0L, [| [| 0.2f; -0.4f |]; null; [| 0.4f; 0.0f |] |]))
            Expect.equal (p1.Version, p1.Used) (1L, 2) "one step from two gradients"
            expectFloats 1e-6 p1.Alpha [| 0.999; -1.999 |] "α₁"
            let p2 = ask (ApplyGradients(2L, [| null; null |]))
            Expect.equal (p2.Version, p2.Used, p2.Alpha) (1L, 0, p1.Alpha) "no gradients: no step"
            let state = server.Ask<ObjectiveServerState>(ExportObjectiveState(), TimeSpan.FromSeconds 5.0).Result
            let copy = ObjectiveAdam.Import state.State
            Expect.equal (copy.Alpha, copy.Steps) (p1.Alpha, 1L) "exported state"
            system.Terminate().Wait()

        testCase "sync: the §2.1 schedule with different episode lengths" <| fun () ->
            let fakes = Fakes [| 3; 5 |]
            let result, rows = run (opts 2 17) fakes
            // round 0: target 1 → 3 and 5 steps, L=5; then target max(3,5)=5 → 6 and 5 steps, L=6 (twice): 5+6+6 = 17
            Expect.equal result.Rounds 3L "rounds"
            Expect.equal result.GlobalStep 17L "global step = Σ max_interaction_length"
            Expect.equal result.AgentEnvSteps [| 15L; 15L |] "env steps"
            Expect.equal result.ObjectiveVersion 9L "server steps: j ∈ {0,2,4} in each round"
            Expect.equal (result.Failures, result.Restarts) (0, 0) "no failures"
            let t0 = fakes.Trace 0
            let collects = t0 |> List.filter (fun s -> s.StartsWith "C")
            Expect.equal collects [ "C1"; "C5"; "C5" ] "collect targets"
            let ops = t0 |> List.filter (fun s -> not (s.StartsWith "C")) |> List.map (fun s -> s.Substring(0, s.IndexOf ':'))
            let round l = [ for j in 0 .. l - 1 do yield sprintf "U%d" j; if j % 2 = 0 then yield "G" ]
            Expect.equal ops (round 5 @ round 6 @ round 6) "update(j) each j, a gradient at even j"
            // staleness: the policy step at j=2 still uses α₀; the gradient at j=2 loads α₁, which the j=4 policy step uses
            let value (s: string) = s.Substring(s.IndexOf ':' + 1)
            let r0 = t0 |> List.skip 1 |> List.take 8 |> Array.ofList   // U0 G U1 U2 G U3 U4 G
            Expect.equal (value r0.[0]) (value r0.[1]) "j=0: gradient at the α the policy used (α₀)"
            Expect.equal (value r0.[3]) (value r0.[0]) "j=2: policy step with the stale α₀"
            Expect.notEqual (value r0.[4]) (value r0.[3]) "j=2: gradient after loading α₁"
            Expect.equal (value r0.[6]) (value r0.[4]) "j=4: policy step with α₁"
            Expect.equal (count "critic_loss" rows) (2 * (3 + 3 + 3)) "critic_loss at even j for both agents"
            Expect.equal (count "objective_loss" rows) (2 * 9) "objective_loss per gradient"

        testCase "sync: same inputs ⇒ identical α and metric sequence" <| fun () ->
            let o = opts 3 30
            let r1, rows1 = run o (Fakes [| 2; 3; 4 |])
            let r2, rows2 = run o (Fakes [| 2; 3; 4 |])
            Expect.isGreaterThan r1.ObjectiveVersion 5L "several server steps"
            Expect.equal r2.Objective r1.Objective "final α"
            Expect.equal rows2 rows1 "metric rows in order"
            Expect.isTrue (rows1 |> List.exists (fun r -> r.Agent = 2)) "rows from every agent"

        testCase "async: every agent stops exactly at the budget, the server steps" <| fun () ->
            for groupSize in [ 0; 1 ] do
                let o = PopulationOptions(AgentCount = 3, TimestepsTotal = 40, Mode = ScheduleMode.Async, GroupSize = groupSize,
                                          AsyncServerMaxWait = TimeSpan.FromMilliseconds 20.0)
                let fakes = Fakes [| 2; 3; 4 |]
                let progress = ProgressLog()
                let result, rows = runWith o fakes progress
                Expect.equal result.AgentEnvSteps [| 40L; 40L; 40L |] "every agent stopped exactly at the budget"
                Expect.isTrue (progress.Values |> List.forall (fun v -> v <= 40L)) "progress never above the budget"
                Expect.isGreaterThan result.ObjectiveVersion 0L "the server stepped"
                Expect.isTrue (result.Objective |> Array.forall Single.IsFinite) "α finite"
                Expect.equal result.Failures 0 "no failures"
                Expect.isGreaterThan (count "objective_loss" rows) 0 "gradients were computed"

        testCase "async: a failed group restarts from its own checkpoint and finishes" <| fun () ->
            // groups of one: only agent 1 fails; one group of three: its throw breaks every slot of the group
            for groupSize, failed in [ 1, 1; 0, 3 ] do
                let sink = InMemoryCheckpointSink()
                let o = PopulationOptions(AgentCount = 3, TimestepsTotal = 40, Mode = ScheduleMode.Async, CheckpointEvery = 10,
                                          GroupSize = groupSize, Checkpoints = sink, AsyncServerMaxWait = TimeSpan.FromMilliseconds 20.0)
                let fakes = Fakes([| 2; 3; 4 |], [ { Agent = 1; Call = "update"; At = 21; Kind = Throw; Fired = false } ])
                let r, rows = run o fakes
                Expect.equal (r.Failures, r.Restarts) (failed, failed) "one failure and one restart per agent of the group"
                Expect.equal (count "agent_restart" rows) failed "agent_restart rows"
                Expect.equal (count "agent_failure" rows) failed "agent_failure rows"
                Expect.isTrue (r.FailureReasons |> Array.forall (fun m -> m.Contains "injected update failure")) "the reason is kept"
                Expect.equal r.AgentEnvSteps [| 40L; 40L; 40L |] "every agent reached the budget"
                Expect.equal fakes.Made.Length ((if groupSize = 1 then 3 else 1) + 1) "the failed group was rebuilt"
                let restored = fakes.Restores |> List.filter (fun x -> x.State.IsSome) |> List.map (fun x -> x.Agent) |> List.sort
                Expect.equal restored (if groupSize = 1 then [ 1 ] else [ 0; 1; 2 ]) "the rebuilt group's slots load their own checkpointed states"
                Expect.isGreaterThan sink.All.Count 1 "periodic and final checkpoints"
                let struct (_, _, parts) = Seq.last sink.All
                Expect.isTrue (parts.ContainsKey "server" && parts.ContainsKey "agent/2") "checkpoint parts"

        testCase "a NaN, failed or throwing gradient is excluded from the step" <| fun () ->
            // one round of 3-step episodes: server steps at j=0 and j=2; agent 2 fails both gradients (the second in
            // its restored slot or rebuilt group), so α must follow Adam on the mean of agents 0 and 1 alone, i.e. a
            // 2-agent run. A throw breaks a group, so that case runs one agent per group.
            let healthy2, _ = run (opts 2 3) (Fakes [| 3; 3 |])
            let healthy3, _ = run (opts 3 3) (Fakes [| 3; 3; 3 |])
            Expect.equal healthy2.ObjectiveVersion 2L "two server steps"
            Expect.notEqual healthy3.Objective healthy2.Objective "agent 2's gradient matters when healthy"
            for kind, groupSize in [ NaN, 0; SlotFail, 0; Throw, 1 ] do
                let faults = [ for _ in 1 .. 2 -> { Agent = 2; Call = "grad"; At = 1; Kind = kind; Fired = false } ]
                let o = PopulationOptions(AgentCount = 3, TimestepsTotal = 3L, Steps = 1, GroupSize = groupSize)
                let r, rows = run o (Fakes([| 3; 3; 3 |], faults))
                Expect.equal r.ObjectiveVersion 2L (sprintf "%A: two steps" kind)
                Expect.equal r.Objective healthy2.Objective (sprintf "%A: α = Adam on the mean of agents 0 and 1" kind)
                Expect.equal r.Failures 2 (sprintf "%A: two failures" kind)
                Expect.equal (rows |> List.filter (fun m -> m.Name = "agent_failure" && m.Agent = 2 && m.Value = 1.0) |> List.length) 2 "agent_failure rows"
                Expect.equal r.FailureReasons.Length 2 "two reasons"
                Expect.isTrue (r.FailureReasons |> Array.forall (fun m -> m.StartsWith "agent 2: ")) "reasons name the agent"

        testCase "failed agents restart from the last checkpoint and the run completes" <| fun () ->
            let faults =
                [ { Agent = 1; Call = "update"; At = 7; Kind = Throw; Fired = false }     // exception: its group is rebuilt
                  { Agent = 2; Call = "update"; At = 13; Kind = NaN; Fired = false }      // NaN critic loss: slot restored
                  { Agent = 0; Call = "collect"; At = 4; Kind = Throw; Fired = false } ]  // failed collect: group rebuilt
            let sink = InMemoryCheckpointSink()
            let o = PopulationOptions(AgentCount = 3, TimestepsTotal = 40, Steps = 1, CheckpointEvery = 5, Checkpoints = sink, GroupSize = 1)
            let fakes = Fakes([| 2; 3; 4 |], faults)
            let r, rows = run o fakes
            Expect.equal r.Failures 3 "three failures"
            Expect.equal r.Restarts 3 "three restarts"
            Expect.equal (count "agent_failure" rows) 3 "agent_failure rows"
            Expect.equal (count "agent_restart" rows) 3 "agent_restart rows"
            Expect.equal r.GlobalStep 40L "ran exactly to the budget"
            Expect.isTrue (r.Objective |> Array.forall Single.IsFinite) "α finite"
            Expect.equal fakes.Made.Length 5 "the two groups that threw were rebuilt; the NaN slot was restored in place"
            let agent2 = fakes.Restores |> List.filter (fun x -> x.Agent = 2)
            Expect.equal agent2.Length 1 "agent 2 restored once"
            let stored = sink.All |> Seq.map (fun (struct (_, _, parts)) -> parts.["agent/2"]) |> List.ofSeq
            Expect.isTrue (stored |> List.exists (fun b -> Some b = agent2.Head.State)) "agent 2 restored from a stored checkpoint"
            Expect.isGreaterThan sink.All.Count 1 "checkpoints written"

        testCase "sync: resume from a checkpoint ⇒ same α and metrics as an uninterrupted run" <| fun () ->
            let o total (sink: ICheckpointSink) resume =
                PopulationOptions(AgentCount = 2, TimestepsTotal = total, Steps = 1, CheckpointEvery = 10,
                                  Checkpoints = sink, Resume = resume)
            let full, fullRows = run (o 40L (InMemoryCheckpointSink()) false) (Fakes [| 3; 5 |])
            let sink = InMemoryCheckpointSink()
            let first, firstRows = run (o 17L sink false) (Fakes [| 3; 5 |])
            Expect.equal first.GlobalStep 17L "first part stops after 3 rounds"
            Expect.equal (sink.All |> Seq.map (fun (struct (i, s, _)) -> i, s) |> List.ofSeq) [ (0, 11L); (1, 17L) ] "periodic + final checkpoint"
            let rest, restRows = run (o 40L sink true) (Fakes [| 3; 5 |])
            Expect.equal rest.Objective full.Objective "final α"
            Expect.equal rest.ObjectiveVersion full.ObjectiveVersion "server steps"
            Expect.equal (rest.Rounds, rest.GlobalStep) (full.Rounds, full.GlobalStep) "counters"
            Expect.equal rest.AgentEnvSteps full.AgentEnvSteps "env steps"
            // Checkpoint marker rows differ by design: the interrupted run also checkpointed at its end (17).
            let noMarkers = List.filter (fun (m: Metric) -> m.Name <> PopulationCoordinator.CheckpointMarker)
            Expect.equal (noMarkers (firstRows @ restRows)) (noMarkers fullRows) "metric rows"
            let markers rows = rows |> List.filter (fun (m: Metric) -> m.Name = PopulationCoordinator.CheckpointMarker) |> List.map (fun m -> m.EnvStep, int m.Value)
            Expect.equal (markers firstRows) [ (11L, 0); (17L, 1) ] "one marker row per checkpoint, before it is written"

        testCase "cancellation stops the run and throws" <| fun () ->
            use cts = new CancellationTokenSource()
            let fakes = Fakes [| 1; 1 |]
            let o = opts 2 1_000_000_000L
            let progress = Progress<int64>(fun s -> if s > 50L then cts.Cancel())
            Expect.throwsT<OperationCanceledException>
                (fun () -> Population.Run(o, fakes.Make, Action<Metric>(ignore), progress, cts.Token) |> ignore) "cancelled"

        testCase "sync: one group of 4, four groups of 1 and an explicit partition give the same traces, α and rows" <| fun () ->
            let lengths = [| 2; 3; 4; 5 |]
            let o groupSize groups =
                PopulationOptions(AgentCount = 4, TimestepsTotal = 50L, Steps = 2, CheckpointEvery = 15,
                                  Checkpoints = InMemoryCheckpointSink(), GroupSize = groupSize, Groups = groups)
            let one = Fakes lengths
            let r1, rows1 = run (o 0 null) one
            Expect.equal one.Made.Length 1 "one group"
            Expect.isGreaterThan r1.ObjectiveVersion 5L "several server steps"
            for variant in [ o 1 null; o 0 [| [| 3; 1 |]; [| 0; 2 |] |] ] do
                let fakes = Fakes lengths
                let r, rows = run variant fakes
                Expect.equal fakes.Made.Length (variant.Partition().Length) "groups made"
                for i in 0 .. 3 do Expect.equal (fakes.Trace i) (one.Trace i) (sprintf "agent %d's trace" i)
                Expect.equal r.Objective r1.Objective "final α"
                Expect.equal (r.ObjectiveVersion, r.Rounds, r.GlobalStep) (r1.ObjectiveVersion, r1.Rounds, r1.GlobalStep) "counters"
                Expect.equal r.AgentEnvSteps r1.AgentEnvSteps "env steps"
                Expect.equal rows rows1 "metric rows in order (agent-index order per phase)"

        testCase "sync: a slot failure leaves the other slots and α untouched; the agent is restored from its checkpoint" <| fun () ->
            let lengths = [| 2; 3; 4; 5 |]
            let o delay sink = PopulationOptions(AgentCount = 4, TimestepsTotal = 40L, Steps = 1, CheckpointEvery = 10,
                                                 ObjFuncUpdateDelay = delay, Checkpoints = sink)
            // (a) frozen α (no gradients): every other agent's trace is exactly the fault-free one
            let clean = Fakes lengths
            let rClean, _ = run (o -1 (InMemoryCheckpointSink())) clean
            let sink = InMemoryCheckpointSink()
            let faulty = Fakes(lengths, [ { Agent = 2; Call = "update"; At = 20; Kind = SlotFail; Fired = false } ])
            let r, rows = run (o -1 sink) faulty
            Expect.equal (r.Failures, r.Restarts) (1, 1) "one failure, one restore"
            Expect.equal r.FailureReasons [| "agent 2: injected update failure; restored from its last checkpoint" |] "the reason and the restore point are kept for the log"
            Expect.equal (rows |> List.filter (fun m -> m.Name = "agent_failure") |> List.map (fun m -> m.Agent, m.Value)) [ (2, 1.0) ] "agent_failure row"
            Expect.equal (count "agent_restart" rows) 1 "agent_restart row"
            Expect.equal faulty.Made.Length 1 "the group was not rebuilt"
            for i in [ 0; 1; 3 ] do Expect.equal (faulty.Trace i) (clean.Trace i) (sprintf "agent %d untouched" i)
            Expect.equal r.Objective rClean.Objective "α untouched"
            Expect.isLessThan r.AgentEnvSteps.[2] rClean.AgentEnvSteps.[2] "agent 2 was set back to its checkpoint"
            for i in [ 0; 1; 3 ] do Expect.equal r.AgentEnvSteps.[i] rClean.AgentEnvSteps.[i] (sprintf "agent %d's env steps" i)
            match faulty.Restores with
            | [ { Agent = 2; State = Some state } ] ->
                let struct (_, step, parts) = sink.All.[0]
                Expect.equal state parts.["agent/2"] (sprintf "agent 2 restored from checkpoint 0 (step %d)" step)
            | other -> failtestf "expected one restore of agent 2 from a checkpoint, got %A" other
            // (b) learned α: the failed gradient is excluded and α is Adam on the mean of the others, step by step
            let faulty = Fakes(lengths, [ { Agent = 2; Call = "grad"; At = 9; Kind = SlotFail; Fired = false } ])
            let r, _ = run (o 2 (InMemoryCheckpointSink())) faulty
            Expect.equal r.Failures 1 "one failure"
            let perAgent = [ for i in 0 .. 3 -> faulty.Gradients i |> Array.ofList ]
            let steps = perAgent.[0].Length
            Expect.isTrue (perAgent |> List.forall (fun g -> g.Length = steps)) "every agent computed a gradient at every step"
            Expect.equal (perAgent.[2] |> Array.filter Option.isNone |> Array.length) 1 "agent 2's gradient is missing once"
            let means =
                [ for t in 0 .. steps - 1 ->
                    let gs = perAgent |> List.choose (fun g -> g.[t])
                    Array.init 3 (fun k -> (gs |> List.sumBy (fun g -> float g.[k])) / float gs.Length) ]
            Expect.equal r.ObjectiveVersion (int64 steps) "one server step per gradient step"
            expectFloats 2e-6 r.Objective (adamReference [| 0.3; -0.2; 0.05 |] means) "α = Adam on the means without the failed gradient"

        testCase "budget: sync stops exactly at timesteps_total; BudgetCheckPerIteration runs to the iteration end" <| fun () ->
            // episodes of 3 and 5 steps: L = 5, then 6 per round; 37 is no multiple of either, and steps = 10 rounds
            let o perIteration = PopulationOptions(AgentCount = 2, TimestepsTotal = 37L, Steps = 10, BudgetCheckPerIteration = perIteration)
            let progress = ProgressLog()
            let r, _ = runWith (o false) (Fakes [| 3; 5 |]) progress
            Expect.equal r.GlobalStep 37L "global step == budget"
            Expect.equal r.Rounds 7L "5 + 6·5 = 35, then a round limited to 2 steps"
            Expect.isTrue (progress.Values |> List.forall (fun v -> v <= 37L)) "progress never above the budget"
            Expect.equal (List.last progress.Values) 37L "progress ends at the budget"
            Expect.isTrue (r.AgentEnvSteps |> Array.forall (fun s -> s <= 37L)) "no agent collected past the budget"
            let official = ProgressLog()
            let r2, _ = runWith (o true) (Fakes [| 3; 5 |]) official
            Expect.equal (r2.Rounds, r2.GlobalStep) (10L, 59L) "the official check: the whole first iteration, 5 + 6·9"
            Expect.equal (List.last official.Values) 59L "progress as before"

        testCase "independent: an agent's trace is the same alone and in a group of 3 with other episode lengths" <| fun () ->
            let o n = PopulationOptions(AgentCount = n, TimestepsTotal = 25L, Mode = ScheduleMode.Independent)
            let alone = Fakes [| 3 |]
            let rAlone, rowsAlone = run (o 1) alone
            let grouped = Fakes [| 3; 5; 2 |]
            let r, rows = run (o 3) grouped
            Expect.equal grouped.Made.Length 1 "one group of 3"
            Expect.equal (grouped.Trace 0) (alone.Trace 0) "agent 0's trace"
            Expect.equal (rows |> List.filter (fun m -> m.Agent = 0)) rowsAlone "agent 0's rows"
            Expect.equal r.AgentEnvSteps [| 25L; 25L; 25L |] "every agent stops exactly at the budget"
            Expect.equal rAlone.AgentEnvSteps [| 25L |] "alone too"
            let collects = alone.Trace 0 |> List.filter (fun s -> s.StartsWith "C")
            Expect.equal collects ("C1" :: List.replicate 8 "C3") "its own target: 1, then its own shortest episode"
            Expect.equal (grouped.Trace 1 |> List.filter (fun s -> s.StartsWith "C") |> List.take 2) [ "C1"; "C5" ] "agent 1 follows its own"
            Expect.isFalse (grouped.Trace 0 |> List.exists (fun s -> s.StartsWith "G")) "no gradients"
            Expect.equal (r.ObjectiveVersion, count "objective_loss" rows) (0L, 0) "no server"
            let r2, rows2 = run (o 3) (Fakes [| 3; 5; 2 |])
            Expect.equal rows2 rows "deterministic: a group's rows are sent in order"
            Expect.equal r2.Objective r.Objective "agent 0's α"

        testCase "options: the partition covers every agent exactly once" <| fun () ->
            let o = PopulationOptions(AgentCount = 5, GroupSize = 2)
            Expect.equal (o.Partition() |> Array.map (fun g -> List.ofArray g.Agents)) [| [ 0; 1 ]; [ 2; 3 ]; [ 4 ] |] "chunks of 2"
            Expect.equal (PopulationOptions(AgentCount = 3).Partition().Length) 1 "0: one group"
            for bad, word in [ [| [| 0; 1 |]; [| 1; 2 |] |], "more than one"; [| [| 0; 1 |] |], "no group"; [| [| 0; 1; 2; 3 |] |], "not in"; [| [| 0; 1; 2 |]; [||] |], "empty" ] do
                TestUtil.throwsContaining<ArgumentException> word (sprintf "%A rejected" bad)
                    (fun () -> PopulationOptions(AgentCount = 3, Groups = bad).Validate())
    ]

// ── THROUGH AKKA TESTKIT ──

/// The coordinator driven inside a TestKit ActorSystem, with a TestProbe standing in for the metric sink: the
/// protocol (rows, progress, the final flush handshake) is observed message by message.
[<Tests>]
let testKitTests =
    testList "Population.TestKit" [
        testCase "2-agent sync population: the probe sees every row, then the flush, and the result matches Population.Run" <| fun () ->
            let o = opts 2 20L
            let expected, expectedRows = run o (Fakes [| 3; 5 |])
            let kit = new Akka.TestKit.Xunit2.TestKit(Population.SystemConfig, "population-testkit")
            try
                let sink = kit.CreateTestProbe "sink"
                let finished = Tasks.TaskCompletionSource<PopulationResult>(Tasks.TaskCreationOptions.RunContinuationsAsynchronously)
                let fakes = Fakes [| 3; 5 |]
                kit.Sys.ActorOf(PopulationCoordinator.Props(o, fakes.Make, sink.Ref, finished), "population") |> ignore
                let rows = ResizeArray<Metric>()
                let mutable flushed = false
                while not flushed do
                    match sink.ReceiveOne(TimeSpan.FromSeconds 20.0) with
                    | :? MetricRows as m -> rows.AddRange m.Rows
                    | :? FlushMetrics ->
                        sink.Reply(Flushed(null))
                        flushed <- true
                    | :? ProgressReport | :? AgentProgress -> ()
                    | null -> failtest "no message from the coordinator within 20 s"
                    | other -> failtestf "unexpected message to the sink: %A" other
                Expect.isTrue (finished.Task.Wait(TimeSpan.FromSeconds 10.0)) "the run completes after the flush"
                let r = finished.Task.Result
                Expect.equal r.Objective expected.Objective "same α as Population.Run"
                Expect.equal r.ObjectiveVersion expected.ObjectiveVersion "same number of server steps"
                Expect.equal (List.ofSeq rows) expectedRows "same rows, same order"
                sink.ExpectNoMsg(TimeSpan.FromMilliseconds 200.0)
            finally
                kit.Shutdown()
    ]
