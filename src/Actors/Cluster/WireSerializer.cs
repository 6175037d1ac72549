using System.Runtime.Serialization;
using System.Text;
using Akka.Actor;
using Akka.Serialization;

namespace MetaGenRL.Actors.Cluster;

/// <summary>
/// Raw little-endian bytes for the population protocol (<c>Messages.cs</c>) when it crosses nodes over Akka.Remote.
/// Akka's default serializer writes JSON: a float[1M] α becomes 16.8 MB of text (here 4 MB), which is over any
/// sensible frame and is dropped. Configure an ActorSystem with <see cref="Hocon"/> to use it.
/// </summary>
/// <remarks>
/// Each message is its fields in declaration order in the primitives of <c>WireFormat.cs</c>; its manifest is two
/// letters. A message whose layout changes takes a new manifest, so that nodes of two versions drop what they cannot
/// read instead of misreading it. <see cref="FromBinary"/> throws <see cref="SerializationException"/> (which
/// Akka.Remote logs, dropping the message, where any other exception would tear down the association) naming the
/// manifest and what was wrong: an unknown manifest, a length or presence byte that does not fit, a payload too short
/// or too long.
/// Not covered (they keep Akka's default serializer): <see cref="LoopTick"/>, a group's message to itself;
/// <see cref="Flushed"/>, whose exception is the metric callback's, raised in the caller's process where the sink
/// runs; the EPG worker messages (<see cref="RunInnerLoop"/>, <see cref="InnerLoopDone"/>), another protocol.
/// </remarks>
public sealed class WireSerializer : SerializerWithStringManifest
{
    public WireSerializer(ExtendedActorSystem system) : base(system) { }

    /// <summary>This serializer's Akka identifier. Akka's own serializers take small numbers (0–100 are left to
    /// them here); above that the number is arbitrary, but it travels in every remote envelope, so every node must
    /// agree on it, and it must never change or be given to another serializer.</summary>
    public const int Id = 4207;

    /// <summary>The name under <c>akka.actor.serializers</c>.</summary>
    public const string Name = "metagenrl-wire";

    /// <summary>Frame and socket buffer size: 64 MiB. The largest message a paper-scale population sends is a group's
    /// <see cref="StatesSaved"/> without replay: 10 agents per env (20 over HalfCheetah and LunarLander) × 6.39 MB
    /// per TD3 agent (350×3 policy and twin critics, their targets and Adam moments) ≈ 64 MB. α is 15,497 floats
    /// (62 KB), so a <see cref="LoadObjective"/> or a 20-slot <see cref="Updated"/> (1.2 MB) fits many times over.
    /// States with the replay buffer (about 170 MB per HalfCheetah agent at 1M transitions) fit no frame: keep them
    /// on the node that owns the group.</summary>
    public const int FrameBytes = 64 << 20;

    public override int Identifier => Id;

    // ── MESSAGES ──

    delegate void Writer(BinaryWriter w, object message);
    delegate object Reader(WireReader r);

    sealed record Entry(Type Type, string Manifest, Writer Write, Reader Read);

    static Entry Of<T>(string manifest, Action<BinaryWriter, T> write, Func<WireReader, T> read) where T : notnull =>
        new(typeof(T), manifest, (w, m) => write(w, (T)m), r => read(r));

    static Entry Empty<T>(string manifest) where T : new() => new(typeof(T), manifest, (_, _) => { }, _ => new T());

    /// <summary>Every covered message type with its manifest, writer and reader (fields in declaration order;
    /// C# evaluates constructor arguments left to right, so each reader reads in the writer's order).</summary>
    static readonly Entry[] Entries =
    [
        // group lifecycle
        Of<GroupStarted>("GS", (w, m) => { w.Write(m.Group); w.WriteBool(m.Restarted); }, r => new(r.Int(), r.Bool())),
        Of<RestoreGroup>("RG", (w, m) => w.WriteNullableBytesArrays(m.States), r => new(r.NullableBytesArrays())),
        Of<GroupReady>("GR", (w, m) => { w.Write(m.Group); w.WriteBool(m.Restarted); w.WriteNullableFloats(m.Agent0Objective); w.WriteLongs(m.EnvSteps); },
            r => new(r.Int(), r.Bool(), r.NullableFloats(), r.Longs())),
        Of<RestorePoints>("RP", (w, m) => w.WriteNullableBytesArrays(m.States), r => new(r.NullableBytesArrays())),
        Of<LoadObjective>("LO", (w, m) => { w.WriteFloats(m.Alpha); w.Write(m.Version); }, r => new(r.Floats(), r.Long())),
        Of<AgentFailed>("AF", (w, m) => { w.Write(m.Agent); w.WriteString(m.Reason); }, r => new(r.Int(), r.String())),
        Of<GroupFailed>("GF", (w, m) => { w.Write(m.Group); w.Write(m.Round); w.Write(m.J); w.WriteString(m.Reason); w.WriteMetrics(m.Rows); },
            r => new(r.Int(), r.Long(), r.Long(), r.String(), r.Metrics())),
        // sync schedule
        Of<CollectRequest>("CQ", (w, m) => { w.Write(m.Round); w.Write(m.Target); w.Write(m.Limit); }, r => new(r.Long(), r.Long(), r.Long())),
        Of<Collected>("CD", (w, m) =>
            {
                w.Write(m.Group); w.Write(m.Round); w.WriteLongs(m.Steps); w.WriteNullableInts(m.ShortestEpisode);
                w.WriteLongs(m.EnvSteps); w.WriteMetrics(m.Rows);
            },
            r => new(r.Int(), r.Long(), r.Longs(), r.NullableInts(), r.Longs(), r.Metrics())),
        Of<UpdateRequest>("UQ", (w, m) => { w.Write(m.Round); w.Write(m.J); w.WriteBool(m.ObjectiveGradient); w.WriteNullableFloats(m.Alpha); w.Write(m.AlphaVersion); },
            r => new(r.Long(), r.Long(), r.Bool(), r.NullableFloats(), r.Long())),
        Of<Updated>("UD", (w, m) => { w.Write(m.Group); w.Write(m.Round); w.Write(m.J); w.WriteFloatsArrays(m.Gradients); w.WriteMetrics(m.Rows); },
            r => new(r.Int(), r.Long(), r.Long(), r.FloatsArrays(), r.Metrics())),
        Of<SaveStatesRequest>("SQ", (w, m) => w.WriteBool(m.IncludeReplay), r => new(r.Bool())),
        Of<StatesSaved>("SS", (w, m) => { w.Write(m.Group); w.Write(m.Mark); w.WriteBytesArrays(m.States); w.WriteLongs(m.EnvSteps); },
            r => new(r.Int(), r.Long(), r.BytesArrays(), r.Longs())),
        // async and independent schedules
        Empty<StartLoop>("SL"),
        Empty<StopLoop>("XL"),
        Of<GroupFinished>("GD", (w, m) => { w.Write(m.Group); w.WriteLongs(m.EnvSteps); w.WriteLongs(m.Rounds); }, r => new(r.Int(), r.Longs(), r.Longs())),
        Of<SubmitGradient>("SG", (w, m) => { w.Write(m.Agent); w.WriteFloats(m.Gradient); w.Write(m.AlphaVersion); }, r => new(r.Int(), r.Floats(), r.Long())),
        // objective server
        Of<InitObjective>("IO", (w, m) => w.WriteFloats(m.Alpha), r => new(r.Floats())),
        Of<ApplyGradients>("AG", (w, m) => { w.Write(m.Step); w.WriteFloatsArrays(m.Gradients); }, r => new(r.Long(), r.FloatsArrays())),
        Of<ObjectivePublished>("OP", (w, m) => { w.Write(m.Version); w.WriteFloats(m.Alpha); w.Write(m.Used); }, r => new(r.Long(), r.Floats(), r.Int())),
        Of<ServeAsync>("SA", (w, m) => { w.Write(m.GradientsPerStep); w.Write(m.MaxWait.Ticks); w.WriteActorRefs(m.Subscribers); },
            r => new(r.Int(), TimeSpan.FromTicks(r.Long()), r.ActorRefs())),
        Empty<DrainObjective>("DO"),
        Empty<ExportObjectiveState>("EX"),
        Of<ImportObjectiveState>("IM", (w, m) => w.WriteBytes(m.State), r => new(r.Bytes())),
        Of<ObjectiveServerState>("OS", (w, m) => w.WriteBytes(m.State), r => new(r.Bytes())),
        // metric sink
        Of<MetricRows>("MR", (w, m) => w.WriteMetrics(m.Rows), r => new(r.Metrics())),
        Of<ProgressReport>("PR", (w, m) => w.Write(m.EnvSteps), r => new(r.Long())),
        Of<AgentProgress>("AP", (w, m) => { w.Write(m.Agent); w.Write(m.EnvSteps); }, r => new(r.Int(), r.Long())),
        Empty<FlushMetrics>("FM"),
        // caller
        Empty<CancelRun>("CR"),
        // the trial protocol of a cluster sweep (TrialProtocol.cs)
        Of<RunTrialOnWorker>("TR", (w, m) => { w.WriteString(m.TrialId); w.WriteString(m.Spec); w.WriteActorRefs([m.ReplyTo]); },
            r => new(r.String(), r.String(), One(r.ActorRefs()))),
        Of<StopTrial>("TX", (w, m) => w.WriteString(m.TrialId), r => new(r.String())),
        Of<TrialRows>("TW", (w, m) => { w.WriteString(m.TrialId); w.WriteMetrics(m.Rows); }, r => new(r.String(), r.Metrics())),
        Of<TrialProgress>("TP", (w, m) => { w.WriteString(m.TrialId); w.Write(m.Steps); }, r => new(r.String(), r.Long())),
        Of<TrialInfo>("TI", (w, m) => { w.WriteString(m.TrialId); w.WriteString(m.Key); w.WriteString(m.Json); }, r => new(r.String(), r.String(), r.String())),
        Of<TrialNote>("TN", (w, m) => { w.WriteString(m.TrialId); w.WriteString(m.Line); }, r => new(r.String(), r.String())),
        Of<TrialFinished>("TF", (w, m) =>
            {
                w.WriteString(m.TrialId);
                w.Write(m.FailureReasons.Length);
                foreach (var x in m.FailureReasons) w.WriteString(x);
            },
            r => new(r.String(), Enumerable.Range(0, r.Int()).Select(_ => r.String()).ToArray())),
        Of<TrialResult>("TC", (w, m) =>
            {
                w.WriteString(m.TrialId); w.Write(m.Checkpoint); w.WriteString(m.Meta); w.WriteString(m.From);
                w.Write(m.Names.Length);
                foreach (var x in m.Names) w.WriteString(x);
                w.WriteBytesArrays(m.Parts);
            },
            r => new(r.String(), r.Int(), r.String(), r.String(), Enumerable.Range(0, r.Int()).Select(_ => r.String()).ToArray(), r.BytesArrays())),
        Of<TrialRefused>("TZ", (w, m) => { w.WriteString(m.TrialId); w.WriteString(m.Reason); }, r => new(r.String(), r.String())),
        Of<TrialError>("TE", (w, m) => { w.WriteString(m.TrialId); w.WriteString(m.Message); w.WriteBool(m.Stopped); }, r => new(r.String(), r.String(), r.Bool())),
        // groups on other nodes (GroupHost.cs)
        Of<HostGroup>("HG", (w, m) =>
            {
                w.WriteString(m.Blueprint); WriteGroupOptions(w, m.Options); w.Write(m.Spec.Group); w.WriteInts(m.Spec.Agents);
                w.WriteActorRefs(m.Server is null ? [m.Coordinator, m.Sink] : [m.Coordinator, m.Sink, m.Server]); w.WriteBool(m.Restarted);
                w.Write(m.GroupsOnHost);
            },
            r =>
            {
                var (blueprint, options, spec, refs, restarted, onHost) =
                    (r.String(), ReadGroupOptions(r), new GroupSpec(r.Int(), r.Ints()), r.ActorRefs(), r.Bool(), r.Int());
                if (refs.Length is not (2 or 3)) throw new InvalidDataException($"expected 2 or 3 actor references, found {refs.Length}");
                return new HostGroup(blueprint, options, spec, refs[0], refs[1], refs.Length == 3 ? refs[2] : null, restarted, onHost);
            }),
        Of<GroupHostFailed>("HF", (w, m) => { w.Write(m.Group); w.WriteString(m.Reason); }, r => new(r.Int(), r.String())),
        Of<MessagePart>("MP", (w, m) => { w.Write(m.Id); w.Write(m.Index); w.Write(m.Count); w.Write(m.TotalBytes); w.WriteString(m.Manifest); w.WriteBytes(m.Bytes); },
            r => new(r.Long(), r.Int(), r.Int(), r.Long(), r.String(), r.Bytes())),
        Empty<ObjectiveRequest>("OQ"),
        Of<GroupObjective>("GO", (w, m) => { w.Write(m.Group); w.WriteFloats(m.Alpha); }, r => new(r.Int(), r.Floats())),
    ];

    static readonly Dictionary<Type, Entry> ByType = Entries.ToDictionary(e => e.Type);
    static readonly Dictionary<string, Entry> ByManifest = Entries.ToDictionary(e => e.Manifest);

    /// <summary>Every covered message type and its manifest.</summary>
    public static IReadOnlyDictionary<Type, string> Manifests { get; } = Entries.ToDictionary(e => e.Type, e => e.Manifest);

    // ── SERIALIZER ──

    public override string Manifest(object o) => Find(o).Manifest;

    /// <summary>Two passes: the first only counts the bytes, so the second writes into one array of the exact size
    /// (no growing buffer, no final copy: a 4 MB α costs one 4 MB copy).</summary>
    public override byte[] ToBinary(object obj) => Encode(obj);

    /// <summary>The wire bytes of a covered message (what <see cref="ToBinary"/> returns).</summary>
    public static byte[] Encode(object obj)
    {
        var entry = Find(obj);
        long size = Measure(obj);
        if (size > Array.MaxLength)
            throw new SerializationException($"wire: {entry.Type.Name} is {size:N0} bytes, more than one array holds ({Array.MaxLength:N0})");
        var bytes = GC.AllocateUninitializedArray<byte>((int)size);
        Guarded(entry, () => { using var w = new BinaryWriter(new MemoryStream(bytes)); entry.Write(w, obj); });
        return bytes;
    }

    /// <summary>How many bytes <see cref="Encode"/> writes for a covered message (counted, not written: arrays are
    /// counted whole, so this costs little even for large states).</summary>
    public static long Measure(object obj)
    {
        var entry = Find(obj);
        var count = new CountingStream();
        Guarded(entry, () => { using var w = new BinaryWriter(count); entry.Write(w, obj); });
        return count.Length;
    }

    static void Guarded(Entry entry, Action write)
    {
        try { write(); }
        catch (Exception e) when (e is NullReferenceException or ArgumentNullException)
        {
            throw new SerializationException($"wire: cannot write {entry.Type.Name} ({entry.Manifest}): a non-nullable field is null", e);
        }
    }

    public override object FromBinary(byte[] bytes, string manifest)
    {
        if (!ByManifest.TryGetValue(manifest, out var entry))
            throw new SerializationException($"wire: unknown manifest '{manifest}' ({bytes.Length} bytes)");
        try
        {
            var r = new WireReader(bytes, system);
            var message = entry.Read(r);
            r.End();
            return message;
        }
        catch (Exception e) when (e is InvalidDataException or EndOfStreamException)
        {
            throw new SerializationException($"wire: manifest '{manifest}' ({entry.Type.Name}), {bytes.Length} bytes: {e.Message}", e);
        }
    }

    /// <summary>The settings a group reads (<see cref="GroupActor"/>, <see cref="GroupLoop"/>); the coordinator's own
    /// (checkpoint sink, callbacks, placement, groups) stay with it.</summary>
    static void WriteGroupOptions(BinaryWriter w, PopulationOptions o)
    {
        w.Write(o.AgentCount); w.Write(o.TimestepsTotal); w.WriteBool(o.BudgetCheckPerIteration); w.Write((int)o.Mode);
        w.Write(o.Steps); w.Write(o.PolicyUpdateDelay); w.Write(o.ObjFuncUpdateDelay); w.Write(o.ObjFuncLearningRate);
        w.Write(o.CheckpointEvery); w.WriteBool(o.CheckpointIncludesReplay); w.Write(o.TorchThreadsPerGroup);
        w.Write(o.MaxRestartsPerAgent); w.Write(o.AsyncServerMaxWait.Ticks);
    }

    static PopulationOptions ReadGroupOptions(WireReader r)
    {
        var o = new PopulationOptions
        {
            AgentCount = r.Int(), TimestepsTotal = r.Long(), BudgetCheckPerIteration = r.Bool(), Mode = ReadMode(r.Int()),
            Steps = r.Int(), PolicyUpdateDelay = r.Int(), ObjFuncUpdateDelay = r.Int(), ObjFuncLearningRate = r.Double(),
            CheckpointEvery = r.Long(), CheckpointIncludesReplay = r.Bool(), TorchThreadsPerGroup = r.Int(),
            MaxRestartsPerAgent = r.Int(), AsyncServerMaxWait = TimeSpan.FromTicks(r.Long()),
        };
        try { o.Validate(); }
        catch (ArgumentException e) { throw new InvalidDataException($"group options: {e.Message}"); }
        return o;
    }

    static ScheduleMode ReadMode(int mode) =>
        Enum.IsDefined((ScheduleMode)mode) ? (ScheduleMode)mode : throw new InvalidDataException($"schedule mode {mode} is not one of {string.Join(", ", Enum.GetNames<ScheduleMode>())}");

    static IActorRef One(IActorRef[] refs) =>
        refs.Length == 1 ? refs[0] : throw new InvalidDataException($"expected one actor reference, found {refs.Length}");

    static Entry Find(object o) => ByType.TryGetValue(o.GetType(), out var e)
        ? e
        : throw new SerializationException($"wire: no manifest for {o.GetType().FullName}");

    // ── CONFIGURATION ──

    /// <summary>HOCON that registers this serializer, binds every covered message type to it and sizes Akka.Remote's
    /// frames and socket buffers at <see cref="FrameBytes"/> (the reference config's 128,000-byte frame is under a
    /// 20-slot <see cref="Updated"/>). Put it in front of a system's own config, or append it.</summary>
    public static string Hocon { get; } = BuildHocon();

    static string BuildHocon()
    {
        static string Qualified(Type t) => $"\"{t.FullName}, {t.Assembly.GetName().Name}\"";
        var s = new StringBuilder();
        s.AppendLine("akka.actor {");
        s.AppendLine($"  serializers {{ {Name} = {Qualified(typeof(WireSerializer))}, {RejectingSerializer.Name} = {Qualified(typeof(RejectingSerializer))} }}");
        s.AppendLine("  serialization-bindings {");
        s.AppendLine($"    \"System.Object\" = {RejectingSerializer.Name}");
        foreach (var e in Entries) s.AppendLine($"    {Qualified(e.Type)} = {Name}");
        s.AppendLine("  }");
        s.AppendLine("}");
        s.AppendLine("akka.remote.dot-netty.tcp {");
        s.AppendLine($"  maximum-frame-size = {FrameBytes}b");
        s.AppendLine($"  send-buffer-size = {FrameBytes}b");
        s.AppendLine($"  receive-buffer-size = {FrameBytes}b");
        s.AppendLine("}");
        return s.ToString();
    }

    /// <summary>A write-only stream that keeps only the number of bytes written to it.</summary>
    sealed class CountingStream : Stream
    {
        long _length;
        public override long Length => _length;
        public override long Position { get => _length; set => throw new NotSupportedException(); }
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override void Write(byte[] buffer, int offset, int count) => _length += count;
        public override void Write(ReadOnlySpan<byte> buffer) => _length += buffer.Length;
        public override void WriteByte(byte value) => _length++;
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }
}

/// <summary>
/// Refuses every message type that no serializer is bound to (it is bound to <c>System.Object</c>, in place of
/// Akka's JSON serializer, which would read any type a peer names). Akka's own messages keep their own serializers;
/// MetaGenRL's travel through <see cref="WireSerializer"/>; anything else is neither sent nor accepted: writing throws
/// naming the type, and an incoming one is dropped (Akka.Remote logs the SerializationException).
/// </summary>
public sealed class RejectingSerializer(ExtendedActorSystem system) : Serializer(system)
{
    public const int Id = 4208;
    public const string Name = "metagenrl-reject";
    public override int Identifier => Id;
    public override bool IncludeManifest => true;

    public override byte[] ToBinary(object obj) =>
        throw new SerializationException($"wire: {obj.GetType().FullName} may not cross nodes (only MetaGenRL's wire messages and Akka's own do)");

    public override object FromBinary(byte[] bytes, Type? type) =>
        throw new SerializationException($"wire: refused an incoming message of type {type?.FullName ?? "unknown"} ({bytes.Length} bytes): no serializer of this node accepts it");
}
