module MetaGenRL.Tests.PopulationTests

open System
open System.Collections.Concurrent
open System.IO
open System.Threading
open Akka.Actor
open Expecto
open MetaGenRL.Core.Meta
open MetaGenRL.Core.Training
open MetaGenRL.Actors

// ── A DETERMINISTIC FAKE MEMBER ──

/// Where a fault is injected: the nth call (1-based, counted per incarnation) of a method of one agent; fires once.
type FaultKind = Throw | NaN
type Fault = { Agent: int; Call: string; At: int; Kind: FaultKind; mutable Fired: bool }

/// Tiny float math, no torch: "policy" w drifts with α at each update; ∇α depends on α, w and the index.
/// Episodes have a fixed length per agent. Every call is checked to come from the creating thread.
type FakeMember(index: int, episodeLen: int, trace: ConcurrentQueue<string>, faults: Fault list) =
    let thread = Thread.CurrentThread
    let mutable alpha = [| 0.3f + 0.1f * float32 index; -0.2f; 0.05f * float32 (index + 1) |]
    let mutable w = 0.0f
    let mutable envSteps = 0L
    let counts = Collections.Generic.Dictionary<string, int>()
    let enter (call: string) =
        if Thread.CurrentThread.ManagedThreadId <> thread.ManagedThreadId then failwithf "%s called from another thread" call
        counts.[call] <- (match counts.TryGetValue call with | true, n -> n + 1 | _ -> 1)
        faults |> List.tryFind (fun f -> not f.Fired && f.Agent = index && f.Call = call && f.At = counts.[call])
        |> Option.map (fun f -> f.Fired <- true; f.Kind)
    member _.Thread = thread
    interface IPopulationMember with
        member _.Index = index
        member _.EnvId = "Fake-v0"
        member _.EnvSteps = envSteps
        member _.ObjectiveSize = 3
        member _.Collect(target, onMetric) =
            let fault = enter "collect"
            trace.Enqueue(sprintf "C%d" target)
            if fault = Some Throw then failwith "injected collect failure"
            let mutable steps = 0L
            while steps < target do
                steps <- steps + int64 episodeLen
                envSteps <- envSteps + int64 episodeLen
                onMetric.Invoke(Metric(envSteps, "episode_return", float w, index))
            CollectResult(steps, Nullable episodeLen)
        member _.Update(j, onMetric) =
            let fault = enter "update"
            trace.Enqueue(sprintf "U%d:%.6f" j alpha.[0])
            if fault = Some Throw then failwith "injected update failure"
            w <- w + 0.01f * Array.sum alpha + 0.001f * float32 j
            if j % 2L = 0L || fault = Some NaN then
                onMetric.Invoke(Metric(envSteps, "critic_loss", (if fault = Some NaN then nan else float w), index))
        member _.ObjectiveGradient(onMetric) =
            let fault = enter "grad"
            trace.Enqueue(sprintf "G:%.6f" alpha.[0])
            if fault = Some Throw then failwith "injected gradient failure"
            let g = alpha |> Array.mapi (fun k a -> 0.5f * a - 0.1f * w + 0.01f * float32 ((index + 1) * (k + 1)))
            if fault = Some NaN then g.[1] <- Single.NaN
            onMetric.Invoke(Metric(envSteps, "objective_loss", float (Array.sum g), index))
            g
        member _.LoadObjective(a) = enter "load" |> ignore; alpha <- Array.copy a
        member _.ObjectiveParameters() = Array.copy alpha
        member _.SaveState(_includeReplay) =
            use ms = new MemoryStream()
            use bw = new BinaryWriter(ms)
            for a in alpha do bw.Write a
            bw.Write w; bw.Write envSteps
            bw.Flush(); ms.ToArray()
        member _.LoadState(bytes) =
            use br = new BinaryReader(new MemoryStream(bytes))
            alpha <- Array.init 3 (fun _ -> br.ReadSingle())
            w <- br.ReadSingle(); envSteps <- br.ReadInt64()
        member _.Dispose() = ()

/// Members with the given episode lengths; keeps each agent's trace and every member made (restarts included).
type Fakes(lengths: int[], ?faults: Fault list) =
    let traces = lengths |> Array.map (fun _ -> ConcurrentQueue<string>())
    let made = ConcurrentBag<FakeMember>()
    member _.Make = Func<int, IPopulationMember>(fun i ->
        let m = new FakeMember(i, lengths.[i], traces.[i], defaultArg faults [])
        made.Add m
        m :> IPopulationMember)
    member _.Trace i = List.ofSeq traces.[i]
    member _.Made = List.ofSeq made

let opts n total =
    PopulationOptions(AgentCount = n, TimestepsTotal = total, Steps = 1, Mode = ScheduleMode.Sync)

/// Runs a population; returns the result and every metric row in the order the sink delivered them.
let run (o: PopulationOptions) (fakes: Fakes) =
    let rows = ResizeArray<Metric>()
    let result = Population.Run(o, fakes.Make, Action<Metric>(rows.Add), null, CancellationToken.None)
    // the pinned agent threads end with the ActorSystem
    let deadline = DateTime.UtcNow.AddSeconds 5.0
    while fakes.Made |> List.exists (fun m -> m.Thread.IsAlive) && DateTime.UtcNow < deadline do Thread.Sleep 10
    for m in fakes.Made do Expect.isFalse m.Thread.IsAlive "agent thread ended after the run"
    result, List.ofSeq rows

let count name (rows: Metric list) = rows |> List.filter (fun r -> r.Name = name) |> List.length

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

        testCase "async: every agent reaches the budget, the server steps" <| fun () ->
            let o = PopulationOptions(AgentCount = 3, TimestepsTotal = 40, Mode = ScheduleMode.Async,
                                      AsyncServerMaxWait = TimeSpan.FromMilliseconds 20.0)
            let fakes = Fakes [| 2; 3; 4 |]
            let result, rows = run o fakes
            for s in result.AgentEnvSteps do Expect.isGreaterThanOrEqual s 40L "agent reached the budget"
            Expect.isGreaterThan result.ObjectiveVersion 0L "the server stepped"
            Expect.isTrue (result.Objective |> Array.forall Single.IsFinite) "α finite"
            Expect.equal result.Failures 0 "no failures"
            Expect.isGreaterThan (count "objective_loss" rows) 0 "gradients were computed"

        testCase "async: a failed agent restarts from its own checkpoint and finishes" <| fun () ->
            let sink = InMemoryCheckpointSink()
            let o = PopulationOptions(AgentCount = 3, TimestepsTotal = 40, Mode = ScheduleMode.Async, CheckpointEvery = 10,
                                      Checkpoints = sink, AsyncServerMaxWait = TimeSpan.FromMilliseconds 20.0)
            let fakes = Fakes([| 2; 3; 4 |], [ { Agent = 1; Call = "update"; At = 15; Kind = Throw; Fired = false } ])
            let r, rows = run o fakes
            Expect.equal (r.Failures, r.Restarts) (1, 1) "one failure, one restart"
            Expect.equal (count "agent_restart" rows) 1 "agent_restart row"
            for s in r.AgentEnvSteps do Expect.isGreaterThanOrEqual s 40L "agent reached the budget"
            Expect.isGreaterThan sink.All.Count 1 "periodic and final checkpoints"
            let struct (_, _, parts) = Seq.last sink.All
            Expect.isTrue (parts.ContainsKey "server" && parts.ContainsKey "agent/2") "checkpoint parts"

        testCase "a NaN or a throwing gradient is excluded from the step" <| fun () ->
            // one round of 3-step episodes: server steps at j=0 and j=2; agent 2 fails both gradients (the second in
            // its restarted incarnation), so α must follow Adam on the mean of agents 0 and 1 alone, i.e. a 2-agent run
            let o = opts 3 3
            let healthy2, _ = run (opts 2 3) (Fakes [| 3; 3 |])
            let healthy3, _ = run o (Fakes [| 3; 3; 3 |])
            Expect.equal healthy2.ObjectiveVersion 2L "two server steps"
            Expect.notEqual healthy3.Objective healthy2.Objective "agent 2's gradient matters when healthy"
            for kind in [ NaN; Throw ] do
                let faults = [ for _ in 1 .. 2 -> { Agent = 2; Call = "grad"; At = 1; Kind = kind; Fired = false } ]
                let r, rows = run o (Fakes([| 3; 3; 3 |], faults))
                Expect.equal r.ObjectiveVersion 2L (sprintf "%A: two steps" kind)
                Expect.equal r.Objective healthy2.Objective (sprintf "%A: α = Adam on the mean of agents 0 and 1" kind)
                Expect.equal r.Failures 2 (sprintf "%A: two failures" kind)
                Expect.equal (rows |> List.filter (fun m -> m.Name = "agent_failure" && m.Agent = 2 && m.Value = 1.0) |> List.length) 2 "agent_failure rows"

        testCase "failed agents restart from the last checkpoint and the run completes" <| fun () ->
            let faults =
                [ { Agent = 1; Call = "update"; At = 7; Kind = Throw; Fired = false }     // exception
                  { Agent = 2; Call = "update"; At = 13; Kind = NaN; Fired = false }      // NaN critic loss
                  { Agent = 0; Call = "collect"; At = 4; Kind = Throw; Fired = false } ]  // failed collect
            let sink = InMemoryCheckpointSink()
            let o = PopulationOptions(AgentCount = 3, TimestepsTotal = 40, Steps = 1, CheckpointEvery = 5, Checkpoints = sink)
            let fakes = Fakes([| 2; 3; 4 |], faults)
            let r, rows = run o fakes
            Expect.equal r.Failures 3 "three failures"
            Expect.equal r.Restarts 3 "three restarts"
            Expect.equal (count "agent_failure" rows) 3 "agent_failure rows"
            Expect.equal (count "agent_restart" rows) 3 "agent_restart rows"
            Expect.isGreaterThanOrEqual r.GlobalStep 40L "ran to the budget"
            Expect.isTrue (r.Objective |> Array.forall Single.IsFinite) "α finite"
            Expect.equal fakes.Made.Length 6 "three members re-created"
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
