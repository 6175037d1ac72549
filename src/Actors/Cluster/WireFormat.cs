using System.Runtime.InteropServices;
using System.Runtime.Serialization;
using System.Text;
using Akka.Actor;
using MetaGenRL.Core.Engine;

namespace MetaGenRL.Actors.Cluster;

// The primitives of the wire format, little-endian: int32/int64/double as BinaryWriter writes them, bool as one
// byte 0/1, a nullable value or array as a presence byte 0/1 then the value, every array and string as an int32
// length then its elements (float[], byte[] and long[] as one raw block), a string's elements as UTF-8 bytes.

/// <summary>Writes the wire primitives (see the comment at the top of this file). Named apart from BinaryWriter's own
/// overloads: its Write(string) and Write(byte[]) would silently win over same-named extensions.</summary>
internal static class WireWriter
{
    public static void WriteString(this BinaryWriter w, string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        w.Write(bytes.Length);
        w.Write(bytes);
    }

    public static void WriteNullableString(this BinaryWriter w, string? s)
    {
        if (w.Present(s)) w.WriteString(s!);
    }

    public static void WriteBool(this BinaryWriter w, bool b) => w.Write((byte)(b ? 1 : 0));

    /// <summary>One presence byte; true when <paramref name="x"/> is not null and its value follows.</summary>
    public static bool Present(this BinaryWriter w, object? x)
    {
        w.Write((byte)(x is null ? 0 : 1));
        return x is not null;
    }

    public static void WriteFloats(this BinaryWriter w, float[] a) => WriteBlock(w, a);
    public static void WriteBytes(this BinaryWriter w, byte[] a) => WriteBlock(w, a);
    public static void WriteLongs(this BinaryWriter w, long[] a) => WriteBlock(w, a);
    public static void WriteInts(this BinaryWriter w, int[] a) => WriteBlock(w, a);

    /// <summary>Length, then the elements as one block: a 1M-float α is one 4 MB copy, not a million calls.</summary>
    static void WriteBlock<T>(BinaryWriter w, T[] a) where T : unmanaged
    {
        w.Write(a.Length);
        if (BitConverter.IsLittleEndian) { w.Write(MemoryMarshal.AsBytes(a.AsSpan())); return; }
        foreach (var x in a)   // big-endian host: element by element, BinaryWriter writes little-endian
            switch (x)
            {
                case float f: w.Write(f); break;
                case byte b: w.Write(b); break;
                case long l: w.Write(l); break;
                case int i: w.Write(i); break;
                default: throw new NotSupportedException(typeof(T).Name);
            }
    }

    public static void WriteNullableFloats(this BinaryWriter w, float[]? a)
    {
        if (w.Present(a)) w.WriteFloats(a!);
    }

    public static void WriteFloatsArrays(this BinaryWriter w, float[]?[] a)
    {
        w.Write(a.Length);
        foreach (var x in a) w.WriteNullableFloats(x);
    }

    public static void WriteBytesArrays(this BinaryWriter w, byte[][] a)
    {
        w.Write(a.Length);
        foreach (var x in a) w.WriteBytes(x);
    }

    public static void WriteNullableBytesArrays(this BinaryWriter w, byte[]?[] a)
    {
        w.Write(a.Length);
        foreach (var x in a) if (w.Present(x)) w.WriteBytes(x!);
    }

    public static void WriteNullableInts(this BinaryWriter w, int?[] a)
    {
        w.Write(a.Length);
        foreach (var x in a) if (w.Present(x)) w.Write(x!.Value);
    }

    public static void WriteMetrics(this BinaryWriter w, Metric[] rows)
    {
        w.Write(rows.Length);
        foreach (var m in rows)
        {
            w.Write(m.EnvStep);
            w.WriteNullableString(m.Name);   // default(Metric) has a null name
            w.Write(m.Value);
            w.Write(m.Agent);
        }
    }

    /// <summary>An actor reference as its full path with this node's address, resolvable on the receiving node.</summary>
    public static void WriteActorRefs(this BinaryWriter w, IActorRef[] refs)
    {
        w.Write(refs.Length);
        foreach (var r in refs) w.WriteString(Akka.Serialization.Serialization.SerializedActorPath(r));
    }
}

/// <summary>Reads the wire primitives, checking every length, presence byte and bool against the bytes that are left,
/// so that a truncated or garbled payload fails with what was wrong instead of yielding a wrong value.</summary>
internal sealed class WireReader(byte[] bytes, ExtendedActorSystem system)
{
    readonly BinaryReader _r = new(new MemoryStream(bytes, writable: false));
    long Left => bytes.Length - _r.BaseStream.Position;

    /// <summary>Throws unless every byte was read (a payload longer than its message is garbled too).</summary>
    public void End()
    {
        if (Left != 0) throw Bad($"left over after the message: {Left} bytes");
    }

    Exception Bad(string what) => new InvalidDataException($"{what} (at byte {_r.BaseStream.Position} of {bytes.Length})");

    BinaryReader Need(long n) => n <= Left ? _r : throw Bad($"needs {n} more bytes, {Left} left");

    public int Int() => Need(4).ReadInt32();
    public long Long() => Need(8).ReadInt64();
    public double Double() => Need(8).ReadDouble();

    public bool Bool() => Need(1).ReadByte() switch
    {
        0 => false,
        1 => true,
        var b => throw Bad($"bool byte {b}, expected 0 or 1"),
    };

    /// <summary>Reads a presence byte: true when a value follows.</summary>
    public bool Present() => Need(1).ReadByte() switch
    {
        0 => false,
        1 => true,
        var b => throw Bad($"presence byte {b}, expected 0 or 1"),
    };

    /// <summary>A length prefix of elements of <paramref name="size"/> bytes, checked against the bytes left
    /// (variable-size elements take at least one byte each).</summary>
    int Length(int size)
    {
        int n = Int();
        if (n < 0) throw Bad($"negative length {n}");
        if ((long)n * size > Left) throw Bad($"length {n} × {size} bytes, {Left} bytes left");
        return n;
    }

    public string String()
    {
        var utf8 = _r.ReadBytes(Length(1));
        try { return StrictUtf8.GetString(utf8); }
        catch (DecoderFallbackException e) { throw Bad($"invalid UTF-8 in a string: {e.Message}"); }
    }

    static readonly UTF8Encoding StrictUtf8 = new(false, throwOnInvalidBytes: true);

    public string? NullableString() => Present() ? String() : null;

    public float[] Floats() => Block<float>();
    public byte[] Bytes() => Block<byte>();
    public long[] Longs() => Block<long>();
    public int[] Ints() => Block<int>();

    T[] Block<T>() where T : unmanaged
    {
        int size = System.Runtime.CompilerServices.Unsafe.SizeOf<T>();
        var a = GC.AllocateUninitializedArray<T>(Length(size));   // every byte is read into it below
        var raw = MemoryMarshal.AsBytes(a.AsSpan());
        _r.BaseStream.ReadExactly(raw);   // Length checked that the bytes are there
        if (!BitConverter.IsLittleEndian && size > 1)
            for (int i = 0; i < raw.Length; i += size) raw.Slice(i, size).Reverse();
        return a;
    }

    public float[]? NullableFloats() => Present() ? Floats() : null;

    public float[]?[] FloatsArrays() => Array(1, NullableFloats);
    public byte[]?[] NullableBytesArrays() => Array(1, () => Present() ? Bytes() : null);
    public byte[][] BytesArrays() => Array(4, Bytes);
    public int?[] NullableInts() => Array(1, () => Present() ? Int() : (int?)null);
    public Metric[] Metrics() => Array(21, () => new Metric(Long(), NullableString()!, Double(), Int()));

    public IActorRef[] ActorRefs() => Array(4, () =>
    {
        var path = String();
        return system.Provider.ResolveActorRef(path) ?? throw Bad($"actor path '{path}' does not resolve");
    });

    T[] Array<T>(int minSize, Func<T> element)
    {
        var a = new T[Length(minSize)];
        for (int i = 0; i < a.Length; i++) a[i] = element();
        return a;
    }
}
