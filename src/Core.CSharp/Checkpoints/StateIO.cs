using System.Runtime.InteropServices;
using System.Text;
using MetaGenRL.Core.Randomness;
using MetaGenRL.Core.Torch;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaGenRL.Core.Checkpoints;

/// <summary>
/// Building blocks of the binary state format, shared by <see cref="AgentState"/> and by anything else that
/// checkpoints tensors (the objective α and its Adam state): section tags, float arrays, tensor lists,
/// TF-Adam, torch generators and <see cref="SeededRandom"/>. Little-endian throughout; raw element bytes, so
/// every value round-trips bit-for-bit. Readers validate what they read and throw
/// <see cref="InvalidDataException"/> naming the item (and <see cref="EndOfStreamException"/> on truncation).
/// </summary>
public static class StateIO
{
    static StateIO()
    {
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("checkpoints assume a little-endian machine");
    }

    // ── SECTIONS ──

    /// <summary>Writes a four-character section tag.</summary>
    public static void WriteTag(BinaryWriter w, string tag) => w.Write(TagBytes(tag));

    /// <summary>Reads a four-character tag and requires it to be <paramref name="expected"/>.</summary>
    public static void ExpectTag(BinaryReader r, string expected, string what)
    {
        var got = ReadTag(r);
        if (got != expected)
            throw new InvalidDataException($"{what}: expected section '{expected}', found '{Printable(got)}' (corrupt or from another format version)");
    }

    /// <summary>A state's header: its tag and format version.</summary>
    public static void WriteHeader(BinaryWriter w, string tag, int version)
    {
        WriteTag(w, tag);
        w.Write(version);
    }

    /// <summary>Reads <see cref="WriteHeader"/>'s header and requires its tag and version, naming <paramref name="what"/>.</summary>
    public static void ExpectHeader(BinaryReader r, string tag, int version, string what)
    {
        ExpectTag(r, tag, what);
        int got = r.ReadInt32();
        if (got != version) throw new InvalidDataException($"{what} version {got}, expected {version}");
    }

    /// <summary>Reads a four-character tag.</summary>
    public static string ReadTag(BinaryReader r) => Encoding.ASCII.GetString(ReadExactly(r, 4, "section tag"));

    static byte[] TagBytes(string tag)
    {
        if (tag.Length != 4 || tag.Any(c => c < 0x20 || c > 0x7E)) throw new ArgumentException($"section tag '{tag}' must be 4 printable ASCII characters");
        return Encoding.ASCII.GetBytes(tag);
    }

    static string Printable(string s) => new(s.Select(c => c >= 0x20 && c <= 0x7E ? c : '?').ToArray());

    /// <summary>Reads exactly <paramref name="count"/> bytes or throws <see cref="EndOfStreamException"/>.</summary>
    public static byte[] ReadExactly(BinaryReader r, int count, string what)
    {
        var b = new byte[count];
        ReadExactly(r, b, what);
        return b;
    }

    static void ReadExactly(BinaryReader r, Span<byte> dst, string what)
    {
        int got = 0;
        while (got < dst.Length)
        {
            int n = r.Read(dst[got..]);
            if (n == 0) throw new EndOfStreamException($"checkpoint ends early: {what} needs {dst.Length} bytes, only {got} left");
            got += n;
        }
    }

    // ── ARRAYS ──

    /// <summary>Writes length then the raw floats.</summary>
    public static void WriteFloats(BinaryWriter w, ReadOnlySpan<float> xs)
    {
        w.Write((long)xs.Length);
        w.Write(MemoryMarshal.AsBytes(xs));
    }

    /// <summary>Reads floats written by <see cref="WriteFloats"/>; <paramref name="expectedLength"/> (if given) is checked.</summary>
    public static float[] ReadFloats(BinaryReader r, string what, long? expectedLength = null)
    {
        long n = ReadLength(r, what, expectedLength, sizeof(float));
        var xs = new float[n];
        ReadExactly(r, MemoryMarshal.AsBytes(xs.AsSpan()), what);
        return xs;
    }

    /// <summary>Reads floats written by <see cref="WriteFloats"/> into <paramref name="dst"/>, whose length they must have.</summary>
    public static void ReadFloatsInto(BinaryReader r, Span<float> dst, string what)
    {
        ReadLength(r, what, dst.Length, sizeof(float));
        ReadExactly(r, MemoryMarshal.AsBytes(dst), what);
    }

    static long ReadLength(BinaryReader r, string what, long? expected, int elementSize)
    {
        long n = r.ReadInt64();
        if (n < 0 || n > Array.MaxLength / elementSize) throw new InvalidDataException($"{what}: invalid length {n}");
        if (expected is long e && n != e) throw new InvalidDataException($"{what}: checkpoint has {n} values, expected {e}");
        return n;
    }

    /// <summary>Writes length then the words.</summary>
    public static void WriteUInt64s(BinaryWriter w, ReadOnlySpan<ulong> xs)
    {
        w.Write((long)xs.Length);
        w.Write(MemoryMarshal.AsBytes(xs));
    }

    /// <summary>Reads words written by <see cref="WriteUInt64s"/>.</summary>
    public static ulong[] ReadUInt64s(BinaryReader r, string what, long? expectedLength = null)
    {
        long n = ReadLength(r, what, expectedLength, sizeof(ulong));
        var xs = new ulong[n];
        ReadExactly(r, MemoryMarshal.AsBytes(xs.AsSpan()), what);
        return xs;
    }

    /// <summary>Writes length then the bytes.</summary>
    public static void WriteBytes(BinaryWriter w, ReadOnlySpan<byte> xs)
    {
        w.Write((long)xs.Length);
        w.Write(xs);
    }

    /// <summary>Reads bytes written by <see cref="WriteBytes"/>.</summary>
    public static byte[] ReadBytes(BinaryReader r, string what, long? expectedLength = null)
    {
        long n = ReadLength(r, what, expectedLength, 1);
        return ReadExactly(r, (int)n, what);
    }

    // ── AGENT STATE HEADER ──

    /// <summary>Writes the header of one agent's state: tag, format version, env id and algorithm name.</summary>
    public static void WriteAgentHeader(BinaryWriter w, string tag, int version, string envId, string algorithm)
    {
        WriteTag(w, tag);
        w.Write(version);
        w.Write(envId);
        w.Write(algorithm);
    }

    /// <summary>Reads and checks an agent state's header (see <see cref="WriteAgentHeader"/>) for agent
    /// <paramref name="agent"/>, which runs <paramref name="envId"/> with <paramref name="algorithm"/>; returns the
    /// format version, one of <paramref name="versions"/>.</summary>
    public static int ReadAgentHeader(BinaryReader r, string tag, int[] versions, int agent, string envId, string algorithm)
    {
        ExpectTag(r, tag, "agent state");
        int version = r.ReadInt32();
        if (!versions.Contains(version))
            throw new InvalidDataException($"agent state version {version}, expected {string.Join(" or ", versions)}");
        string env = r.ReadString();
        if (env != envId) throw new InvalidDataException($"agent {agent}: state is for env {env}, this agent runs {envId}");
        string algo = r.ReadString();
        if (algo != algorithm) throw new InvalidDataException($"agent {agent}: state is for algorithm {algo}, this agent runs {algorithm}");
        return version;
    }

    // ── TENSORS ──

    /// <summary>Writes a list of tensors (any dtype, any device; copied through the CPU): the list name, the
    /// count, then per tensor dtype, shape and raw element bytes.</summary>
    public static void WriteTensors(BinaryWriter w, string name, IReadOnlyList<Tensor> tensors)
    {
        w.Write(name);
        w.Write(tensors.Count);
        foreach (var t in tensors)
        {
            using var scope = torch.NewDisposeScope();
            var c = t.detach().cpu().contiguous();
            w.Write((int)c.dtype);
            w.Write(c.shape.Length);
            foreach (var d in c.shape) w.Write(d);
            WriteBytes(w, c.bytes);
        }
    }

    /// <summary>One stored tensor: dtype, shape and raw little-endian element bytes.</summary>
    public sealed record StoredTensor(ScalarType DType, long[] Shape, byte[] Data)
    {
        /// <summary>A new CPU tensor holding the stored values (caller disposes).</summary>
        public Tensor ToTensor()
        {
            var t = torch.empty(Shape, DType, torch.CPU);
            if (Data.Length > 0) t.bytes = Data;
            return t;
        }
    }

    /// <summary>Reads a list written by <see cref="WriteTensors"/> without a target (e.g. to build new tensors).</summary>
    public static List<StoredTensor> ReadStoredTensors(BinaryReader r, string name)
    {
        var got = r.ReadString();
        if (got != name) throw new InvalidDataException($"checkpoint holds tensor list '{got}' where '{name}' was expected");
        int count = r.ReadInt32();
        if (count < 0) throw new InvalidDataException($"checkpoint {name}: invalid tensor count {count}");
        var list = new List<StoredTensor>(count);
        for (int i = 0; i < count; i++)
        {
            var dtype = (ScalarType)r.ReadInt32();
            int ndim = r.ReadInt32();
            if (ndim < 0 || ndim > 16) throw new InvalidDataException($"checkpoint {name} tensor {i}: invalid rank {ndim}");
            var shape = new long[ndim];
            for (int k = 0; k < ndim; k++)
            {
                shape[k] = r.ReadInt64();
                if (shape[k] < 0) throw new InvalidDataException($"checkpoint {name} tensor {i}: negative dimension {shape[k]}");
            }
            long elemSize = ElementSize(dtype, name, i);
            long expectBytes = shape.Aggregate(1L, (a, b) => a * b) * elemSize;
            var data = ReadBytes(r, $"checkpoint {name} tensor {i}", expectBytes);
            list.Add(new StoredTensor(dtype, shape, data));
        }
        return list;
    }

    static long ElementSize(ScalarType dtype, string name, int i) => dtype switch
    {
        ScalarType.Byte or ScalarType.Int8 or ScalarType.Bool => 1,
        ScalarType.Int16 or ScalarType.Float16 or ScalarType.BFloat16 => 2,
        ScalarType.Int32 or ScalarType.Float32 => 4,
        ScalarType.Int64 or ScalarType.Float64 or ScalarType.ComplexFloat32 => 8,
        ScalarType.ComplexFloat64 => 16,
        _ => throw new InvalidDataException($"checkpoint {name} tensor {i}: unknown dtype code {(int)dtype}"),
    };

    /// <summary>Checks stored tensors against <paramref name="targets"/> (count, dtype, shape) without touching them.
    /// <paramref name="describe"/> names tensor i in errors (default "tensor i").</summary>
    public static void Validate(IReadOnlyList<StoredTensor> stored, IReadOnlyList<Tensor> targets, string name, Func<int, string>? describe = null)
    {
        describe ??= i => $"tensor {i}";
        if (stored.Count != targets.Count)
            throw new InvalidDataException($"checkpoint {name} has {stored.Count} tensors, the agent expects {targets.Count}");
        for (int i = 0; i < stored.Count; i++)
        {
            var s = stored[i];
            var t = targets[i];
            if (!s.Shape.SequenceEqual(t.shape))
                throw new InvalidDataException($"checkpoint {name} {describe(i)} has shape {Shape(s.Shape)}, the agent expects {Shape(t.shape)}");
            if (s.DType != t.dtype)
                throw new InvalidDataException($"checkpoint {name} {describe(i)} has dtype {s.DType}, the agent expects {t.dtype}");
        }
    }

    /// <summary>Copies validated stored values into <paramref name="targets"/> in place (their device, no autograd).</summary>
    public static void CopyInto(IReadOnlyList<StoredTensor> stored, IReadOnlyList<Tensor> targets)
    {
        using var _ = no_grad();
        for (int i = 0; i < stored.Count; i++)
        {
            using var src = stored[i].ToTensor();
            targets[i].copy_(src);
        }
    }

    /// <summary>Reads a list written by <see cref="WriteTensors"/> into existing tensors of the same count, shapes
    /// and dtypes; on any mismatch nothing is changed.</summary>
    public static void ReadTensorsInto(BinaryReader r, string name, IReadOnlyList<Tensor> targets, Func<int, string>? describe = null)
    {
        var stored = ReadStoredTensors(r, name);
        Validate(stored, targets, name, describe);
        CopyInto(stored, targets);
    }

    /// <summary>Reads a list written by <see cref="WriteTensors"/> as new tensors on <paramref name="device"/>
    /// (detached from any dispose scope; the caller owns them).</summary>
    public static List<Tensor> ReadTensors(BinaryReader r, string name, Device device)
    {
        var result = new List<Tensor>();
        foreach (var s in ReadStoredTensors(r, name))
        {
            using var cpu = s.ToTensor();
            var t = cpu.to(device).clone();
            t.DetachFromDisposeScope();
            result.Add(t);
        }
        return result;
    }

    /// <summary>"[350, 17]".</summary>
    public static string Shape(IEnumerable<long> shape) => "[" + string.Join(", ", shape) + "]";

    /// <summary>Names tensor i of an <see cref="MlpSpec"/> parameter list: "layer 2 weight", "layer 0 ln_gain", ….</summary>
    public static Func<int, string> MlpNames(MlpSpec spec) => i =>
    {
        int layer = Math.Min(i / spec.PerHidden, spec.Hidden);
        int k = layer < spec.Hidden ? i % spec.PerHidden : i - spec.Hidden * spec.PerHidden;
        string part = k switch { 0 => "weight", 1 => "bias", 2 => "ln_gain", _ => "ln_bias" };
        return $"layer {layer} {part}";
    };

    // ── OPTIMISER ──

    /// <summary>Writes slot <paramref name="k"/> of a TF-Adam's state: its step count t, the learning rate, (β1, β2, ε̂)
    /// and its moments m, v (unstacked).</summary>
    public static void WriteAdam(BinaryWriter w, string name, TfAdam adam, int k)
    {
        using var scope = torch.NewDisposeScope();
        w.Write(name);
        w.Write(adam.Steps(k));
        w.Write(adam.LearningRate);
        var (b1, b2, eps) = adam.Hyperparameters;
        w.Write(b1); w.Write(b2); w.Write(eps);
        WriteTensors(w, name + ".m", adam.FirstMoments.Select(m => m[k]).ToList());
        WriteTensors(w, name + ".v", adam.SecondMoments.Select(v => v[k]).ToList());
    }

    /// <summary>A TF-Adam state read and validated against an optimiser, not yet applied.</summary>
    public sealed record AdamState(long Steps, double LearningRate, List<StoredTensor> M, List<StoredTensor> V);

    /// <summary>Reads what <see cref="WriteAdam"/> wrote and validates it against <paramref name="adam"/> (same β, ε̂,
    /// moment shapes); apply with <see cref="Apply(TfAdam, AdamState)"/>.</summary>
    public static AdamState ReadAdam(BinaryReader r, string name, TfAdam adam, int k, Func<int, string>? describe = null)
    {
        using var scope = torch.NewDisposeScope();
        var got = r.ReadString();
        if (got != name) throw new InvalidDataException($"checkpoint holds optimiser '{got}' where '{name}' was expected");
        long steps = r.ReadInt64();
        if (steps < 0) throw new InvalidDataException($"checkpoint {name}: negative step count {steps}");
        double lr = r.ReadDouble();
        double b1 = r.ReadDouble(), b2 = r.ReadDouble(), eps = r.ReadDouble();
        var (eb1, eb2, eeps) = adam.Hyperparameters;
        if (b1 != eb1 || b2 != eb2 || eps != eeps)
            throw new InvalidDataException($"checkpoint {name}: Adam (β1, β2, ε) = ({b1}, {b2}, {eps}), the agent uses ({eb1}, {eb2}, {eeps})");
        var m = ReadStoredTensors(r, name + ".m");
        Validate(m, adam.FirstMoments.Select(x => x[k]).ToList(), name + ".m", describe);
        var v = ReadStoredTensors(r, name + ".v");
        Validate(v, adam.SecondMoments.Select(x => x[k]).ToList(), name + ".v", describe);
        return new AdamState(steps, lr, m, v);
    }

    /// <summary>Applies a validated <see cref="AdamState"/> to slot <paramref name="k"/>.</summary>
    public static void Apply(TfAdam adam, int k, AdamState s)
    {
        using var scope = torch.NewDisposeScope();
        CopyInto(s.M, adam.FirstMoments.Select(x => x[k]).ToList());
        CopyInto(s.V, adam.SecondMoments.Select(x => x[k]).ToList());
        adam.RestoreSteps(k, s.Steps);
        adam.LearningRate = s.LearningRate;
    }

    // ── GENERATORS ──

    /// <summary>Writes a torch generator's state (its device's opaque byte state).</summary>
    public static void WriteGenerator(BinaryWriter w, Generator g)
    {
        using var state = g.get_state();
        using var c = state.cpu().contiguous();
        WriteBytes(w, c.bytes);
    }

    /// <summary>Reads a state written by <see cref="WriteGenerator"/>; its size must match <paramref name="g"/>'s
    /// (a generator of another device kind has another layout). Apply with <see cref="Apply(Generator, byte[])"/>.</summary>
    public static byte[] ReadGenerator(BinaryReader r, Generator g, string what)
    {
        using var current = g.get_state();
        return ReadBytes(r, what, current.NumberOfElements * current.ElementSize);
    }

    /// <summary>Sets a torch generator's state from bytes read by <see cref="ReadGenerator"/>.</summary>
    public static void Apply(Generator g, byte[] state)
    {
        using var t = torch.empty([state.LongLength], ScalarType.Byte, torch.CPU);
        t.bytes = state;
        g.set_state(t);
    }

    /// <summary>Writes a <see cref="SeededRandom"/>'s four state words.</summary>
    public static void WriteRandom(BinaryWriter w, SeededRandom rng) => WriteUInt64s(w, rng.GetState());

    /// <summary>Reads a <see cref="SeededRandom"/> state (apply with <see cref="SeededRandom.SetState"/>).</summary>
    public static ulong[] ReadRandom(BinaryReader r, string what)
    {
        var s = ReadUInt64s(r, what, SeededRandom.StateLength);
        if ((s[0] | s[1] | s[2] | s[3]) == 0) throw new InvalidDataException($"{what}: all-zero generator state");
        return s;
    }
}
