using TorchSharp;
using static TorchSharp.torch;

namespace MetaGenRL.Core.Agents;

/// <summary>
/// A minibatch of B trajectory windows of T steps, as flat row-major CPU arrays (shapes in brackets).
/// Steps t ≥ Lens[b] are zero padding with Mask 0.
/// </summary>
/// <param name="Obs">[B, T, obs]</param>
/// <param name="Act">[B, T, act]</param>
/// <param name="Rew">[B, T]</param>
/// <param name="NextObs">[B, T, obs]</param>
/// <param name="Done">[B, T] the done flag used for learning (1 = do not bootstrap)</param>
/// <param name="Terminated">[B, T] true terminal states, as the env reported them</param>
/// <param name="Truncated">[B, T] time-limit ends, as the env reported them</param>
/// <param name="Mask">[B, T] 1 for valid steps, 0 for padding</param>
/// <param name="Lens">[B] valid length of each window, in 1..T</param>
public sealed record TrajectoryBatch(
    int B, int T, int ObsSize, int ActSize,
    float[] Obs, float[] Act, float[] Rew, float[] NextObs,
    float[] Done, float[] Terminated, float[] Truncated, float[] Mask, int[] Lens)
{
    /// <summary>Stacks K slots' batches (each B windows of T steps; null: an all-zero batch with mask 0) into tensors
    /// [K, B, T, …] of <paramref name="dtype"/> on <paramref name="device"/>: one copy per field.</summary>
    public static TrajectoryTensors Stack(IReadOnlyList<TrajectoryBatch?> slots, int b, int t, int obsSize, int actSize,
                                          Device device, ScalarType dtype = ScalarType.Float32)
    {
        int K = slots.Count, bt = b * t;
        foreach (var s in slots)
            if (s is not null && (s.B != b || s.T != t || s.ObsSize != obsSize || s.ActSize != actSize))
                throw new ArgumentException($"stack: a batch of [{s.B}, {s.T}] windows (obs {s.ObsSize}, act {s.ActSize}) " +
                                            $"among [{b}, {t}] (obs {obsSize}, act {actSize})");
        Tensor Field(Func<TrajectoryBatch, float[]> field, int per, params long[] shape)
        {
            var all = new float[K * bt * per];
            for (int k = 0; k < K; k++)
                if (slots[k] is { } s) field(s).CopyTo(all, k * bt * per);
            var x = torch.tensor(all, shape);
            return dtype == ScalarType.Float32 && device.type == DeviceType.CPU ? x : x.to(dtype, device);
        }
        return new TrajectoryTensors(
            Field(s => s.Obs, obsSize, K, b, t, obsSize), Field(s => s.Act, actSize, K, b, t, actSize),
            Field(s => s.Rew, 1, K, b, t), Field(s => s.NextObs, obsSize, K, b, t, obsSize),
            Field(s => s.Done, 1, K, b, t), Field(s => s.Terminated, 1, K, b, t), Field(s => s.Truncated, 1, K, b, t),
            Field(s => s.Mask, 1, K, b, t));
    }
}

/// <summary>The stacked batches of a group's K slots on a device. Owned by the caller's dispose scope.</summary>
/// <param name="Obs">[K, B, T, obs]</param>
/// <param name="Act">[K, B, T, act]</param>
/// <param name="Rew">[K, B, T]</param>
/// <param name="NextObs">[K, B, T, obs]</param>
/// <param name="Done">[K, B, T]</param>
/// <param name="Terminated">[K, B, T]</param>
/// <param name="Truncated">[K, B, T]</param>
/// <param name="Mask">[K, B, T]</param>
public sealed record TrajectoryTensors(
    Tensor Obs, Tensor Act, Tensor Rew, Tensor NextObs, Tensor Done, Tensor Terminated, Tensor Truncated, Tensor Mask)
{
    /// <summary>Slots K.</summary>
    public long K => Mask.shape[0];
    /// <summary>Windows B per slot.</summary>
    public long B => Mask.shape[1];
    /// <summary>Window length T.</summary>
    public long T => Mask.shape[2];

    /// <summary>Windows [start, start+count) of every slot (views).</summary>
    public TrajectoryTensors Windows(long start, long count) => new(
        Obs.narrow(1, start, count), Act.narrow(1, start, count), Rew.narrow(1, start, count),
        NextObs.narrow(1, start, count), Done.narrow(1, start, count), Terminated.narrow(1, start, count),
        Truncated.narrow(1, start, count), Mask.narrow(1, start, count));
}

/// <summary>
/// The official <c>model.ReplayBuffer</c>: a preallocated FIFO ring of <c>buffer_size</c> transitions plus a list
/// of finished episodes. An episode is registered only when it ends, so the running episode is never sampled;
/// when the ring overwrites the first transition of an episode, that whole episode is dropped (so a buffer must
/// hold more transitions than the longest episode). Sampling picks episodes uniformly (not length-weighted) and a
/// window start uniform in [0, max(len−T, 0)]; windows never cross episodes and are zero-padded to T.
/// Not thread-safe.
/// </summary>
public sealed class TrajectoryReplay
{
    readonly int _cap, _obs, _act;
    readonly float[] _o, _a, _r, _o2, _d, _term, _trunc;
    long _written;              // transitions ever added; transition k lives at slot k % cap
    long _episodeStart;         // absolute index of the running episode's first transition
    // finished episodes, oldest first, as a ring deque of (absolute start, length)
    (long Start, int Len)[] _eps = new (long, int)[1024];
    int _epHead, _epCount;

    /// <param name="capacity">transitions held (buffer_size)</param>
    /// <param name="obsSize">observation size</param>
    /// <param name="actSize">action size</param>
    public TrajectoryReplay(int capacity, int obsSize, int actSize)
    {
        if (capacity < 1) throw new ArgumentOutOfRangeException(nameof(capacity), capacity, "buffer_size must be ≥ 1");
        if (obsSize < 1 || actSize < 1) throw new ArgumentException($"obs size {obsSize} and act size {actSize} must be ≥ 1");
        _cap = capacity; _obs = obsSize; _act = actSize;
        _o = new float[(long)capacity * obsSize];
        _o2 = new float[(long)capacity * obsSize];
        _a = new float[(long)capacity * actSize];
        _r = new float[capacity];
        _d = new float[capacity];
        _term = new float[capacity];
        _trunc = new float[capacity];
    }

    public int Capacity => _cap;
    public int ObsSize => _obs;
    public int ActSize => _act;
    /// <summary>Transitions currently stored (≤ capacity), including the running episode's.</summary>
    public int Count => (int)Math.Min(_written, _cap);
    /// <summary>Transitions ever added.</summary>
    public long TotalAdded => _written;
    /// <summary>Finished episodes available for sampling.</summary>
    public int EpisodeCount => _epCount;
    /// <summary>Steps in the running (unfinished, unsampleable) episode.</summary>
    public int RunningEpisodeLength => (int)(_written - _episodeStart);

    // ── CHECKPOINT ACCESS ── (used by Checkpoints.AgentState; slot k holds transition k % capacity)

    /// <summary>The storage arrays (full capacity; only the first <see cref="Count"/> slots hold data).</summary>
    internal (float[] Obs, float[] Act, float[] Rew, float[] NextObs, float[] Done, float[] Terminated, float[] Truncated) Storage =>
        (_o, _a, _r, _o2, _d, _term, _trunc);

    /// <summary>Absolute index of the running episode's first transition.</summary>
    internal long RunningEpisodeStart => _episodeStart;

    /// <summary>Sets the counters after the storage arrays were filled: <paramref name="written"/> transitions ever
    /// added, the running episode's start, and the finished episodes oldest first. Validated here.</summary>
    internal void RestoreCounters(long written, long episodeStart, IReadOnlyList<(long Start, int Len)> episodes)
    {
        if (written < 0 || episodeStart < 0 || episodeStart > written)
            throw new InvalidDataException($"replay: inconsistent counters (written {written}, running episode starts at {episodeStart})");
        long oldest = written - _cap;
        long prevEnd = long.MinValue;
        foreach (var (start, len) in episodes)
            if (len < 1 || start < Math.Max(oldest, 0) || start < prevEnd || start + len > episodeStart)
                throw new InvalidDataException($"replay: episode (start {start}, length {len}) is outside the stored range " +
                                               $"[{Math.Max(oldest, 0)}, {episodeStart}) or out of order");
            else prevEnd = start + len;
        int size = _eps.Length;
        while (size < episodes.Count) size *= 2;
        _eps = new (long, int)[size];
        for (int i = 0; i < episodes.Count; i++) _eps[i] = episodes[i];
        _epHead = 0;
        _epCount = episodes.Count;
        _written = written;
        _episodeStart = episodeStart;
    }

    /// <summary>Forgets every transition (the arrays are not zeroed: nothing reads beyond the counters).</summary>
    internal void Clear() => RestoreCounters(0, 0, []);

    /// <summary>The i-th sampleable episode, oldest first: (absolute start index, length).</summary>
    public (long Start, int Length) Episode(int i)
    {
        if ((uint)i >= (uint)_epCount) throw new ArgumentOutOfRangeException(nameof(i));
        return _eps[(_epHead + i) % _eps.Length];
    }

    /// <summary>Appends one transition. The episode ends (and becomes sampleable) when
    /// <paramref name="terminated"/> or <paramref name="truncated"/> is true.</summary>
    /// <param name="obs">[obs]</param>
    /// <param name="act">[act]</param>
    /// <param name="reward">reward</param>
    /// <param name="nextObs">[obs]</param>
    /// <param name="terminated">env terminal state</param>
    /// <param name="truncated">env time limit</param>
    /// <param name="done">the done flag the learner will see (the caller's terminal policy, see paper_quirks)</param>
    public void Add(ReadOnlySpan<float> obs, ReadOnlySpan<float> act, double reward, ReadOnlySpan<float> nextObs,
                    bool terminated, bool truncated, bool done)
    {
        if (obs.Length != _obs || nextObs.Length != _obs) throw new ArgumentException($"replay: observation length {obs.Length}/{nextObs.Length}, expected {_obs}");
        if (act.Length != _act) throw new ArgumentException($"replay: action length {act.Length}, expected {_act}");
        int slot = (int)(_written % _cap);
        obs.CopyTo(_o.AsSpan(slot * _obs, _obs));
        nextObs.CopyTo(_o2.AsSpan(slot * _obs, _obs));
        act.CopyTo(_a.AsSpan(slot * _act, _act));
        _r[slot] = (float)reward;
        _d[slot] = done ? 1f : 0f;
        _term[slot] = terminated ? 1f : 0f;
        _trunc[slot] = truncated ? 1f : 0f;
        _written++;
        // Evict finished episodes whose first transition has just been overwritten.
        long oldest = _written - _cap;
        while (_epCount > 0 && _eps[_epHead].Start < oldest)
        {
            _epHead = (_epHead + 1) % _eps.Length;
            _epCount--;
        }
        if (terminated || truncated) EndEpisode();
    }

    /// <summary>Array overload of <see cref="Add(ReadOnlySpan{float}, ReadOnlySpan{float}, double, ReadOnlySpan{float}, bool, bool, bool)"/> (for F# callers).</summary>
    public void Add(float[] obs, float[] act, double reward, float[] nextObs, bool terminated, bool truncated, bool done) =>
        Add(obs.AsSpan(), act.AsSpan(), reward, nextObs.AsSpan(), terminated, truncated, done);

    /// <summary>Marks the running episode as finished (as <see cref="Add"/> does on terminated/truncated).
    /// An empty episode, or one whose start was already overwritten, is dropped.</summary>
    public void EndEpisode()
    {
        long start = _episodeStart;
        int len = (int)(_written - start);
        _episodeStart = _written;
        if (len == 0 || start < _written - _cap) return;
        if (_epCount == _eps.Length)
        {
            var bigger = new (long, int)[_eps.Length * 2];
            for (int i = 0; i < _epCount; i++) bigger[i] = _eps[(_epHead + i) % _eps.Length];
            _eps = bigger;
            _epHead = 0;
        }
        _eps[(_epHead + _epCount) % _eps.Length] = (start, len);
        _epCount++;
    }

    /// <summary>Discards the running episode's partial data from sampling (it stays in the ring until overwritten).</summary>
    public void AbandonRunningEpisode() => _episodeStart = _written;

    /// <summary>Samples <paramref name="b"/> windows of <paramref name="t"/> steps (see the class summary).
    /// Uses only <paramref name="rng"/>: two draws per window (episode, then start).</summary>
    public TrajectoryBatch Sample(int b, int t, Random rng)
    {
        if (b < 1 || t < 1) throw new ArgumentException($"replay: sample sizes B={b}, T={t} must be ≥ 1");
        if (_epCount == 0) throw new InvalidOperationException("replay: no finished episode to sample from yet");
        var obs = new float[b * t * _obs];
        var nobs = new float[b * t * _obs];
        var act = new float[b * t * _act];
        var rew = new float[b * t];
        var done = new float[b * t];
        var term = new float[b * t];
        var trunc = new float[b * t];
        var mask = new float[b * t];
        var lens = new int[b];
        for (int i = 0; i < b; i++)
        {
            var (start, len) = _eps[(_epHead + rng.Next(_epCount)) % _eps.Length];
            int off = rng.Next(Math.Max(len - t, 0) + 1);
            int l = Math.Min(len, t);
            lens[i] = l;
            long first = start + off;
            // The window may wrap around the ring: copy in at most two contiguous pieces.
            int done0 = 0;
            while (done0 < l)
            {
                int slot = (int)((first + done0) % _cap);
                int n = Math.Min(l - done0, _cap - slot);
                int dst = i * t + done0;
                Array.Copy(_o, (long)slot * _obs, obs, (long)dst * _obs, (long)n * _obs);
                Array.Copy(_o2, (long)slot * _obs, nobs, (long)dst * _obs, (long)n * _obs);
                Array.Copy(_a, (long)slot * _act, act, (long)dst * _act, (long)n * _act);
                Array.Copy(_r, slot, rew, dst, n);
                Array.Copy(_d, slot, done, dst, n);
                Array.Copy(_term, slot, term, dst, n);
                Array.Copy(_trunc, slot, trunc, dst, n);
                done0 += n;
            }
            mask.AsSpan(i * t, l).Fill(1f);
        }
        return new TrajectoryBatch(b, t, _obs, _act, obs, act, rew, nobs, done, term, trunc, mask, lens);
    }
}
