using System.Buffers.Binary;
using System.Numerics;

namespace MetaGenRL.Core.Randomness;

/// <summary>
/// xoshiro256** (Blackman &amp; Vigna 2018) seeded through SplitMix64, as a drop-in <see cref="System.Random"/>
/// whose whole state is four 64-bit words that can be read and restored (<see cref="GetState"/>,
/// <see cref="SetState"/>), so a checkpointed run continues the exact same stream. Every virtual member of
/// <see cref="System.Random"/> is overridden, so no draw goes through the base class's hidden generator.
/// The bounded draws reject (Lemire's method), so they are unbiased. Not thread-safe.
/// </summary>
public sealed class SeededRandom : System.Random
{
    /// <summary>Length of the array <see cref="GetState"/> returns.</summary>
    public const int StateLength = 4;

    ulong _s0, _s1, _s2, _s3;

    /// <summary>A generator whose state is four SplitMix64 outputs from <paramref name="seed"/>.</summary>
    public SeededRandom(ulong seed)
    {
        ulong x = seed;
        _s0 = SplitMix64(ref x); _s1 = SplitMix64(ref x); _s2 = SplitMix64(ref x); _s3 = SplitMix64(ref x);
        // SplitMix64 is a bijection on distinct counters, so four zero words cannot happen; kept as a guard.
        if ((_s0 | _s1 | _s2 | _s3) == 0) _s0 = 0x9E3779B97F4A7C15UL;
    }

    /// <summary>Same as the <see cref="ulong"/> constructor; negative seeds are reinterpreted bit-for-bit.</summary>
    public SeededRandom(long seed) : this(unchecked((ulong)seed)) { }

    /// <summary>A generator continuing from <paramref name="state"/> (from <see cref="GetState"/>).</summary>
    public static SeededRandom FromState(ulong[] state)
    {
        var r = new SeededRandom(0UL);
        r.SetState(state);
        return r;
    }

    static ulong SplitMix64(ref ulong x)
    {
        ulong z = unchecked(x += 0x9E3779B97F4A7C15UL);
        z = unchecked((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL);
        z = unchecked((z ^ (z >> 27)) * 0x94D049BB133111EBUL);
        return z ^ (z >> 31);
    }

    // ── STATE ──

    /// <summary>A copy of the four state words.</summary>
    public ulong[] GetState() => [_s0, _s1, _s2, _s3];

    /// <summary>Continues from a state written by <see cref="GetState"/>.</summary>
    public void SetState(ulong[] state)
    {
        ArgumentNullException.ThrowIfNull(state);
        if (state.Length != StateLength)
            throw new ArgumentException($"SeededRandom: a state has {StateLength} words, got {state.Length}", nameof(state));
        if ((state[0] | state[1] | state[2] | state[3]) == 0)
            throw new ArgumentException("SeededRandom: the all-zero state is not a valid xoshiro256** state", nameof(state));
        (_s0, _s1, _s2, _s3) = (state[0], state[1], state[2], state[3]);
    }

    // ── CORE ──

    /// <summary>The next 64 raw bits.</summary>
    public ulong NextUInt64()
    {
        ulong s0 = _s0, s1 = _s1, s2 = _s2, s3 = _s3;
        ulong result = unchecked(BitOperations.RotateLeft(s1 * 5, 7) * 9);
        ulong t = s1 << 17;
        s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3; s2 ^= t;
        s3 = BitOperations.RotateLeft(s3, 45);
        _s0 = s0; _s1 = s1; _s2 = s2; _s3 = s3;
        return result;
    }

    /// <summary>The next 32 raw bits (the high half of a 64-bit draw, the better-mixed bits).</summary>
    public uint NextUInt32() => (uint)(NextUInt64() >> 32);

    /// <summary>Uniform in [0, <paramref name="bound"/>), unbiased (Lemire's multiply-and-reject). bound ≥ 1.</summary>
    uint NextUInt32(uint bound)
    {
        ulong product = (ulong)bound * NextUInt32();
        uint low = (uint)product;
        if (low < bound)
        {
            uint threshold = unchecked(0u - bound) % bound;
            while (low < threshold)
            {
                product = (ulong)bound * NextUInt32();
                low = (uint)product;
            }
        }
        return (uint)(product >> 32);
    }

    /// <summary>Uniform in [0, <paramref name="bound"/>), unbiased. bound ≥ 1.</summary>
    ulong NextUInt64(ulong bound)
    {
        ulong high = Math.BigMul(bound, NextUInt64(), out ulong low);
        if (low < bound)
        {
            ulong threshold = unchecked(0UL - bound) % bound;
            while (low < threshold)
                high = Math.BigMul(bound, NextUInt64(), out low);
        }
        return high;
    }

    // ── System.Random ──

    /// <summary>Uniform in [0, int.MaxValue).</summary>
    public override int Next()
    {
        while (true)
        {
            uint r = NextUInt32() >> 1;
            if (r != int.MaxValue) return (int)r;
        }
    }

    /// <summary>Uniform in [0, maxValue); 0 when maxValue is 0 or 1 (no draw then).</summary>
    public override int Next(int maxValue)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxValue);
        return maxValue > 1 ? (int)NextUInt32((uint)maxValue) : 0;
    }

    /// <summary>Uniform in [minValue, maxValue); minValue when the range has at most one value (no draw then).</summary>
    public override int Next(int minValue, int maxValue)
    {
        if (minValue > maxValue)
            throw new ArgumentOutOfRangeException(nameof(minValue), minValue, $"minValue must be ≤ maxValue ({maxValue})");
        ulong range = (ulong)((long)maxValue - minValue);
        return range > 1 ? (int)(minValue + NextUInt32((uint)range)) : minValue;
    }

    /// <summary>Uniform in [0, long.MaxValue).</summary>
    public override long NextInt64()
    {
        while (true)
        {
            ulong r = NextUInt64() >> 1;
            if (r != long.MaxValue) return (long)r;
        }
    }

    /// <summary>Uniform in [0, maxValue).</summary>
    public override long NextInt64(long maxValue)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxValue);
        return maxValue > 1 ? (long)NextUInt64((ulong)maxValue) : 0;
    }

    /// <summary>Uniform in [minValue, maxValue).</summary>
    public override long NextInt64(long minValue, long maxValue)
    {
        if (minValue > maxValue)
            throw new ArgumentOutOfRangeException(nameof(minValue), minValue, $"minValue must be ≤ maxValue ({maxValue})");
        ulong range = unchecked((ulong)maxValue - (ulong)minValue);
        return range > 1 ? unchecked(minValue + (long)NextUInt64(range)) : minValue;
    }

    /// <summary>Uniform in [0, 1) on the 2⁻⁵³ grid (the top 53 bits of one draw).</summary>
    public override double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>A standard normal draw by Box–Muller from two <see cref="NextDouble"/> draws (the first mapped to
    /// (0, 1] so the logarithm is finite).</summary>
    public double NextGaussian()
    {
        double u1 = 1.0 - NextDouble();
        double u2 = NextDouble();
        return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2.0 * Math.PI * u2);
    }

    /// <summary>Uniform in [0, 1) on the 2⁻²⁴ grid (the top 24 bits of one draw).</summary>
    public override float NextSingle() => (NextUInt64() >> 40) * (1.0f / (1U << 24));

    /// <summary>Fills <paramref name="buffer"/> with random bytes, 8 per draw (little-endian).</summary>
    public override void NextBytes(byte[] buffer)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        NextBytes(buffer.AsSpan());
    }

    /// <summary>Fills <paramref name="buffer"/> with random bytes, 8 per draw (little-endian).</summary>
    public override void NextBytes(Span<byte> buffer)
    {
        while (buffer.Length >= 8)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(buffer, NextUInt64());
            buffer = buffer[8..];
        }
        if (buffer.Length > 0)
        {
            Span<byte> last = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(last, NextUInt64());
            last[..buffer.Length].CopyTo(buffer);
        }
    }

    /// <summary>Same as <see cref="NextDouble"/> (for callers of the protected base API).</summary>
    protected override double Sample() => NextDouble();
}
