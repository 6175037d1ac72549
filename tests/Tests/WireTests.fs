/// The population protocol on the wire: every message through WireSerializer and back, bitwise; what a bad payload
/// does; which serializer Akka picks under WireSerializer.Hocon; a 1M-float α across two ActorSystems on loopback.
module MetaGenRL.Tests.WireTests

open System
open System.Reflection
open System.Runtime.Serialization
open System.Threading.Tasks
open Akka.Actor
open Akka.Configuration
open Expecto
open MetaGenRL.Core.Engine
open MetaGenRL.Actors
open MetaGenRL.Actors.Cluster

/// Replies every message to its sender, as received.
type Echo() =
    inherit UntypedActor()
    override this.OnReceive m = this.Sender.Tell(m, this.Self)

/// Puts a large message's parts together and replies it to its sender (in parts again when large); counts the parts
/// it received; completes `whole` with the first whole message that is not a part.
type Reassembler(whole: TaskCompletionSource<obj>, received: int ref) =
    inherit UntypedActor()
    let parts = PartAssembler()
    override this.OnReceive m =
        let system = UntypedActor.Context.System
        match m with
        | :? MessagePart as p ->
            received.Value <- received.Value + 1
            match parts.Add(p, this.Sender, system) with
            | null -> ()
            | message -> this.Self.Tell(message, this.Sender)
        | message when isNull whole -> LargeMessages.Tell(this.Sender, message, this.Self, system)
        | message -> whole.TrySetResult message |> ignore

/// Completes the task with the first log event whose text or cause contains the given string.
type LogWatch(found: TaskCompletionSource<string>, text: string) =
    inherit UntypedActor()
    override _.OnReceive m =
        match m with
        | :? Akka.Event.LogEvent as e when (string e).Contains text -> found.TrySetResult(string e) |> ignore
        | _ -> ()

/// Structural equality, floats and doubles bit for bit (NaN payloads, −0.0), nulls equal only to nulls.
let rec deepEqual (a: obj) (b: obj) =
    match a, b with
    | null, null -> true
    | null, _ | _, null -> false
    | (:? (float32[]) as x), (:? (float32[]) as y) ->
        x.Length = y.Length && Array.forall2 (fun (p: float32) q -> BitConverter.SingleToInt32Bits p = BitConverter.SingleToInt32Bits q) x y
    | (:? float as x), (:? float as y) -> BitConverter.DoubleToInt64Bits x = BitConverter.DoubleToInt64Bits y
    | (:? IActorRef as x), (:? IActorRef as y) -> x.Equals y
    | _ when a.GetType() <> b.GetType() -> false
    | (:? Array as x), (:? Array as y) -> x.Length = y.Length && Seq.forall2 deepEqual (Seq.cast<obj> x) (Seq.cast<obj> y)
    | _ when a.GetType().Namespace.StartsWith "MetaGenRL.Actors" || (a :? Metric) ->
        a.GetType().GetProperties(BindingFlags.Public ||| BindingFlags.Instance)
        |> Array.forall (fun p -> deepEqual (p.GetValue a) (p.GetValue b))
    | _ -> a.Equals b

let f32 (bits: int) = BitConverter.Int32BitsToSingle bits
let f64 (bits: int64) = BitConverter.Int64BitsToDouble bits

/// Floats that a text or a careless copy would change: NaNs with payloads and signs, a signalling NaN, −0.0,
/// infinities, the smallest subnormal, the extremes.
let edgeFloats =
    [| 0.0f; -0.0f; 1.5f; f32 0x7fc00000; f32 0x7fc12345; f32 (int 0xffc00001u); f32 0x7f800001
       Single.PositiveInfinity; Single.NegativeInfinity; Single.Epsilon; Single.MaxValue; Single.MinValue |]

let rows =
    [| Metric(0L, "episode_return", -123.25, 3)
       Metric(Int64.MaxValue, "critic_loss", f64 0x7ff8000000000123L)
       Metric(-1L, "sps ∇α é", -0.0, -7)
       Unchecked.defaultof<Metric> |]   // null name

let bytesOf (n: int) = Array.init n byte

/// At least one value of every covered message, with the edge cases of its fields.
let samples (subscribers: IActorRef[]) : obj list =
    [ GroupStarted(3, true)
      GroupStarted(0, false)
      RestoreGroup([| bytesOf 5; null; [||] |])
      RestoreGroup([||])
      GroupReady(0, false, edgeFloats, [| 5L; -1L; Int64.MaxValue |])
      GroupReady(1, true, null, [||])
      RestorePoints([| null; bytesOf 300 |])
      LoadObjective(edgeFloats, 7L)
      LoadObjective([||], -1L)
      AgentFailed(2, "boom — ∇α é 🎲")
      AgentFailed(0, "")
      GroupFailed(1, 4L, -2L, "TorchSharp threw", rows)
      CollectRequest(0L, 1000L, Int64.MaxValue)
      Collected(0, 3L, [| 10L; 12L |], [| Nullable 5; Nullable() |], [| 100L; 200L |], rows)
      Collected(1, 0L, [||], [||], [||], [||])
      UpdateRequest(1L, 2L, true, edgeFloats, 3L)
      UpdateRequest(1L, 2L, false, null, -1L)
      Updated(0, 1L, 2L, [| edgeFloats; null; [||] |], [||])
      Updated(2, 9L, 0L, [||], rows)
      SaveStatesRequest(true)
      SaveStatesRequest(false)
      StatesSaved(1, -1L, [| bytesOf 1000; [||] |], [| 0L; 1L |])
      StartLoop()
      StopLoop()
      GroupFinished(2, [| 1L |], [| 3L |])
      SubmitGradient(5, edgeFloats, 9L)
      InitObjective(edgeFloats)
      ApplyGradients(4L, [| null; edgeFloats; [||] |])
      ObjectivePublished(2L, edgeFloats, 3)
      ServeAsync(4, TimeSpan.FromTicks 1234567L, subscribers)
      ServeAsync(1, TimeSpan.Zero, [||])
      DrainObjective()
      ExportObjectiveState()
      ImportObjectiveState(bytesOf 256)
      ObjectiveServerState([||])
      MetricRows(rows)
      MetricRows([||])
      ProgressReport(123L)
      AgentProgress(3, 456L)
      FlushMetrics()
      CancelRun()
      ObjectiveRequest()
      GroupObjective(0, edgeFloats)
      // groups on other nodes
      HostGroup("{\"config\":{}} ∇α", PopulationOptions(AgentCount = 4, TimestepsTotal = Int64.MaxValue, BudgetCheckPerIteration = true,
                                                         Mode = ScheduleMode.Async, Steps = 3, PolicyUpdateDelay = 5, ObjFuncUpdateDelay = -1,
                                                         ObjFuncLearningRate = f64 0x3f50624dd2f1a9fcL, CheckpointEvery = 1234L,
                                                         CheckpointIncludesReplay = false, TorchThreadsPerGroup = 2, MaxRestartsPerAgent = 0,
                                                         AsyncServerMaxWait = TimeSpan.FromTicks 98765L),
                GroupSpec(1, [| 2; 3 |]), subscribers.[0], Array.last subscribers, subscribers.[0], true, 2)
      HostGroup("", PopulationOptions(), GroupSpec(0, [| 0 |]), subscribers.[0], Array.last subscribers, null, false, 0)
      GroupHostFailed(2, "unknown env é")
      MessagePart(7L, 1, 3, 1234L, "SS", bytesOf 100)
      // the trial protocol of a cluster sweep
      RunTrialOnWorker("td3_Pendulum-v1_s0", "{\"trial\":{}} ∇", subscribers.[0])
      StopTrial("t")
      TrialRows("t", rows)
      TrialRows("", [||])
      TrialProgress("t", Int64.MaxValue)
      TrialInfo("t", "objective", "{\"dir\":\"/x\"}")
      TrialNote("t", "skipping checkpoint 4: damaged")
      TrialFinished("t", [| "agent 1: NaN"; "" |])
      TrialFinished("t", [||])
      TrialResult("t", 3, "{\"env_step\":200}", "/w/trials/t/checkpoints/ckpt-000003", [| "server"; "é" |], [| bytesOf 256; [||] |])
      TrialResult("t", 0, "{}", "", [||], [||])
      TrialError("t", "stopped", true)
      TrialRefused("t", "does not share é")
      TrialError("t", "boom é", false) ]

let quiet = "akka.loglevel = WARNING\nakka.suppress-json-serializer-warning = on\n"

/// A local ActorSystem configured with WireSerializer.Hocon, its wire serializer and an echo actor.
let withWire (f: ActorSystem -> WireSerializer -> IActorRef -> unit) =
    use system = ActorSystem.Create("wire", ConfigurationFactory.ParseString(quiet + WireSerializer.Hocon))
    let wire = system.Serialization.FindSerializerForType(typeof<LoadObjective>) :?> WireSerializer
    f system wire (system.ActorOf(Props.Create<Echo>(), "echo"))
    system.Terminate().Wait()

let roundTrip (wire: WireSerializer) (m: obj) = wire.FromBinary(wire.ToBinary m, wire.Manifest m)

/// An ActorSystem with Akka.Remote on 127.0.0.1 at a free port.
let remoteSystem (name: string) (extra: string) =
    ActorSystem.Create(name, ConfigurationFactory.ParseString(
        quiet + extra + "\nakka.actor.provider = remote\nakka.remote.dot-netty.tcp { hostname = 127.0.0.1, port = 0 }"))

let portOf (system: ActorSystem) = (system :?> ExtendedActorSystem).Provider.DefaultAddress.Port.Value

let millionFloats () =
    let rng = Random 5
    let a = Array.init 1_000_000 (fun _ -> float32 (rng.NextDouble() * 2.0 - 1.0))
    Array.blit edgeFloats 0 a 1000 edgeFloats.Length
    a

[<Tests>]
let tests =
    testSequenced <| testList "Wire" [
        testCase "every covered message round-trips to an equal value (bitwise floats, nulls, empty arrays)" <| fun () ->
            withWire <| fun _ wire echo ->
                let all = samples [| echo; echo |]
                let covered = Collections.Generic.HashSet<Type>(all |> List.map (fun m -> m.GetType()))
                for t in WireSerializer.Manifests.Keys do
                    Expect.isTrue (covered.Contains t) (sprintf "a sample of %s" t.Name)
                for m in all do
                    let back = roundTrip wire m
                    Expect.isFalse (obj.ReferenceEquals(back, m)) "a new object"
                    if not (deepEqual back m) then failtestf "%s came back as %A" (m.GetType().Name) back
                Expect.equal (WireSerializer.Manifests.Values |> Seq.distinct |> Seq.length) WireSerializer.Manifests.Count
                    "one manifest per type"

        testCase "a message type no serializer is bound to is refused both ways, naming it; Akka's own messages are not" <| fun () ->
            // a node's configuration: Akka.Remote's serializers (Identify, Status, …) and the wire HOCON
            let hocon = quiet + "akka.actor.provider = remote\nakka.remote.dot-netty.tcp { hostname = 127.0.0.1, port = 0 }\n" + WireSerializer.Hocon
            use system = ActorSystem.Create("wire-node", ConfigurationFactory.ParseString hocon)
            try
                let stranger = Uri "http://example.org"
                let serializer = system.Serialization.FindSerializerFor stranger
                Expect.equal serializer.Identifier RejectingSerializer.Id "unbound types go to the rejecting serializer"
                Expect.throwsT<SerializationException> (fun () -> serializer.ToBinary stranger |> ignore) "writing is refused"
                try
                    serializer.ToBinary stranger |> ignore
                with :? SerializationException as e -> Expect.stringContains e.Message "System.Uri may not cross nodes" "names the type"
                Expect.throwsT<SerializationException> (fun () -> serializer.FromBinary([| 1uy |], typeof<Uri>) |> ignore) "reading is refused"
                Expect.notEqual (system.Serialization.FindSerializerFor(Identify 1)).Identifier RejectingSerializer.Id "Identify keeps Akka's serializer"
                Expect.notEqual (system.Serialization.FindSerializerFor "text").Identifier RejectingSerializer.Id "strings keep Akka's serializer"
            finally system.Terminate().Wait() |> ignore

        testCase "an unknown manifest throws naming it" <| fun () ->
            withWire <| fun _ wire _ ->
                TestUtil.throwsContaining<SerializationException> "unknown manifest 'ZZ'" "unknown manifest" (fun () ->
                    wire.FromBinary([| 1uy; 2uy |], "ZZ") |> ignore)

        testCase "a truncated, extended or garbled payload throws naming the manifest; so does writing a null where none belongs" <| fun () ->
            withWire <| fun _ wire echo ->
                for m in samples [| echo |] do
                    let bytes = wire.ToBinary m
                    let manifest = wire.Manifest m
                    let cuts = [ 0 .. min 40 (bytes.Length - 1) ] @ [ bytes.Length / 2; bytes.Length - 1 ] |> List.filter (fun n -> n >= 0 && n < bytes.Length)
                    for n in cuts do
                        TestUtil.throwsContaining<SerializationException> (sprintf "manifest '%s'" manifest)
                            (sprintf "%s cut to %d of %d bytes" manifest n bytes.Length) (fun () ->
                                wire.FromBinary(bytes[.. n - 1], manifest) |> ignore)
                    TestUtil.throwsContaining<SerializationException> "left over after the message: 1 bytes" (manifest + " with a byte more") (fun () ->
                        wire.FromBinary(Array.append bytes [| 0uy |], manifest) |> ignore)
                // a length prefix far beyond the payload is refused before anything is allocated
                let huge = Array.append (BitConverter.GetBytes Int32.MaxValue) (Array.zeroCreate 8)
                TestUtil.throwsContaining<SerializationException> "length 2147483647 × 4 bytes" "huge length" (fun () ->
                    wire.FromBinary(huge, "LO") |> ignore)
                // a presence byte that is neither 0 nor 1 (GroupReady's α)
                let ready = wire.ToBinary(GroupReady(0, false, null, [||]))
                ready[5] <- 7uy
                TestUtil.throwsContaining<SerializationException> "presence byte 7" "garbled presence byte" (fun () ->
                    wire.FromBinary(ready, "GR") |> ignore)
                TestUtil.throwsContaining<SerializationException> "no manifest for" "an uncovered type" (fun () ->
                    wire.ToBinary(LoopTick()) |> ignore)
                TestUtil.throwsContaining<SerializationException> "LoadObjective (LO): a non-nullable field is null" "a null α" (fun () ->
                    wire.ToBinary(LoadObjective(null, 0L)) |> ignore)

        testCase "Akka picks the wire serializer for every covered type under WireSerializer.Hocon" <| fun () ->
            withWire <| fun system _ echo ->
                for m in samples [| echo |] do
                    let s = system.Serialization.FindSerializerFor m
                    Expect.equal (s.GetType(), s.Identifier) (typeof<WireSerializer>, WireSerializer.Id) (m.GetType().Name)
                Expect.isFalse (system.Serialization.FindSerializerFor(LoopTick()) :? WireSerializer) "LoopTick stays local"
                let cfg = system.Settings.Config
                for key in [ "maximum-frame-size"; "send-buffer-size"; "receive-buffer-size" ] do
                    Expect.equal (cfg.GetByteSize("akka.remote.dot-netty.tcp." + key)) (Nullable(int64 WireSerializer.FrameBytes)) key

        testCase "Akka.Remote on 127.0.0.1: a 1M-float LoadObjective crosses two ActorSystems and back bitwise, actor refs resolve" <| fun () ->
            use b = remoteSystem "wire-b" WireSerializer.Hocon
            use a = remoteSystem "wire-a" WireSerializer.Hocon
            b.ActorOf(Props.Create<Echo>(), "echo") |> ignore
            let timeout = TimeSpan.FromSeconds 10.0
            let echo = a.ActorSelection(sprintf "akka.tcp://wire-b@127.0.0.1:%d/user/echo" (portOf b)).ResolveOne(timeout).Result
            let msg = LoadObjective(millionFloats (), 42L)
            let bytes = (a.Serialization.FindSerializerFor msg).ToBinary msg
            Expect.equal bytes.Length (4 + 4_000_000 + 8) "4 MB and 12 bytes on the wire"
            let back = echo.Ask<LoadObjective>(msg, timeout).Result
            Expect.isFalse (obj.ReferenceEquals(back, msg)) "the reply was deserialized"
            Expect.isTrue (deepEqual back msg) "α and version intact, bit for bit"
            // an actor reference goes out with a's address and comes back as the same local actor
            let serve = ServeAsync(8, TimeSpan.FromMilliseconds 500.0, [| a.ActorOf(Props.Create<Echo>(), "subscriber") |])
            Expect.isTrue (deepEqual (echo.Ask<ServeAsync>(serve, timeout).Result) serve) "ServeAsync's subscribers"
            a.Terminate().Wait(); b.Terminate().Wait()

        testCase "a 100 MB StatesSaved crosses two ActorSystems in 16 MiB parts and back, put together bitwise; under the split size a message goes whole" <| fun () ->
            use b = remoteSystem "parts-b" WireSerializer.Hocon
            use a = remoteSystem "parts-a" WireSerializer.Hocon
            let inB = ref 0
            b.ActorOf(Props.Create(typeof<Reassembler>, (null: TaskCompletionSource<obj>), inB), "reassembler") |> ignore
            let timeout = TimeSpan.FromSeconds 60.0
            let remote = a.ActorSelection(sprintf "akka.tcp://parts-b@127.0.0.1:%d/user/reassembler" (portOf b)).ResolveOne(timeout).Result
            let rng = Random 11
            let state (n: int) = let x = Array.zeroCreate<byte> n in rng.NextBytes x; x
            let big = StatesSaved(1, 2000L, [| state 35_000_000; state 35_000_000; state 35_000_001 |], [| 10L; 20L; 30L |])
            Expect.equal (LargeMessages.SplitAbove a) (32L <<< 20) "the default split size"
            let size = WireSerializer.Measure big
            Expect.equal size (int64 (WireSerializer.Encode big).Length) "Measure counts what Encode writes"
            let parts = int ((size + int64 LargeMessages.PartBytes - 1L) / int64 LargeMessages.PartBytes)
            Expect.isGreaterThan size (int64 WireSerializer.FrameBytes) "over one frame"
            let exchange (message: obj) =
                let back = TaskCompletionSource<obj>()
                let inA = ref 0
                let collector = a.ActorOf(Props.Create(typeof<Reassembler>, back, inA))
                LargeMessages.Tell(remote, message, collector, a)
                Expect.isTrue (back.Task.Wait timeout) (sprintf "%s came back" (message.GetType().Name))
                back.Task.Result, inA.Value
            inB.Value <- 0
            let came, partsBack = exchange big
            Expect.equal inB.Value parts (sprintf "%d parts went out" parts)
            Expect.equal partsBack parts "and came back"
            Expect.isTrue (deepEqual came big) "every state byte for byte"
            inB.Value <- 0
            let small = StatesSaved(0, -1L, [| state 1000 |], [| 5L |])
            let came, partsBack = exchange small
            Expect.equal (inB.Value, partsBack) (0, 0) "a small message goes whole"
            Expect.isTrue (deepEqual came small) "intact"
            // a part out of sequence drops what was gathered; the next message starting at part 0 is put together
            let assembler = PartAssembler()
            let bytes = WireSerializer.Encode small
            Expect.isNull (assembler.Add(MessagePart(1L, 1, 2, int64 bytes.Length, "SS", bytes), remote, a)) "a part without its first"
            let whole = assembler.Add(MessagePart(2L, 0, 1, int64 bytes.Length, "SS", bytes), remote, a)
            Expect.isTrue (deepEqual whole small) "a one-part message"
            a.Terminate().Wait(); b.Terminate().Wait()

        testCase "the default serializer: the same α is 16 MB of JSON, over the 128,000-byte frame, and the message is dropped" <| fun () ->
            // no console logger: the drop below is expected, LogWatch reads it from the event stream
            use b = remoteSystem "json-b" "akka.loggers = []"
            use a = remoteSystem "json-a" "akka.loggers = []"
            b.ActorOf(Props.Create<Echo>(), "echo") |> ignore
            let found = TaskCompletionSource<string>()
            a.EventStream.Subscribe(a.ActorOf(Props.Create(typeof<LogWatch>, found, "oversized payload")), typeof<Akka.Event.LogEvent>) |> ignore
            let timeout = TimeSpan.FromSeconds 10.0
            let echo = a.ActorSelection(sprintf "akka.tcp://json-b@127.0.0.1:%d/user/echo" (portOf b)).ResolveOne(timeout).Result
            let msg = LoadObjective(millionFloats (), 42L)
            let json = a.Serialization.FindSerializerFor msg
            Expect.isTrue (json :? Akka.Serialization.NewtonSoftJsonSerializer) "Newtonsoft by default"
            let size = (json.ToBinary msg).Length
            Expect.isGreaterThan size 16_000_000 "JSON is about 4× the raw bytes"
            Expect.equal (a.Settings.Config.GetByteSize "akka.remote.dot-netty.tcp.maximum-frame-size") (Nullable 128000L) "default frame"
            let reply = echo.Ask<LoadObjective>(msg, timeout)
            Expect.isTrue (found.Task.Wait timeout) "Akka.Remote logs the oversized payload"
            Expect.stringContains found.Task.Result "max allowed size 128000 bytes" "the frame limit"
            Expect.isFalse reply.IsCompleted "no reply: the message was dropped"
            a.Terminate().Wait(); b.Terminate().Wait()
    ]
