using MetaGenRL.Core.Agents;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaGenRL.Core.Checkpoints;

/// <summary>What <see cref="AgentState.Load(Td3Group, int, BinaryReader)"/> restored.</summary>
/// <param name="HasReplay">the state carried the replay buffer; when false the agent's replay is now empty</param>
/// <param name="EnvSteps">the agent's env step count after loading</param>
/// <param name="CriticUpdates">critic Adam steps after loading</param>
/// <param name="PolicyUpdates">policy Adam steps after loading</param>
public readonly record struct AgentStateInfo(bool HasReplay, long EnvSteps, long CriticUpdates, long PolicyUpdates);

/// <summary>
/// Saves and restores everything one slot (agent) of a <see cref="Td3Group"/> needs to continue bit-for-bit, in the
/// layout of a lone agent (tensors unstacked), so a slot's state restores into any slot of any group of the same sizes: the six parameter lists
/// (policy, Q1, Q2 and their targets), both TF-Adam states (m, v, t, lr), the smoothing-noise torch generator,
/// the exploration/replay <see cref="Randomness.SeededRandom"/>, the env step count and, optionally, the replay
/// buffer (stored slots, ring position, finished-episode markers, the running episode's start).
/// The policy objective is not part of the agent; whoever owns it appends its own sections after this one.
/// </summary>
/// <remarks>
/// Format (little-endian): magic <c>MGRLAGNT</c>, int32 version, then tagged sections in fixed order:
/// <c>HEAD</c> (obs, act, dtype code), <c>NETS</c> (six tensor lists), <c>ADAM</c> (critic, policy),
/// <c>RNGS</c> (SeededRandom words, torch generator bytes), <c>CNTR</c> (env steps; from version 2 also the step its current life began at), <c>RPLY</c> or <c>NORP</c>,
/// <c>END!</c>. Tensors are dtype + shape + raw element bytes (see <see cref="StateIO"/>).
/// Loading validates every size against the agent before changing anything, except that a replay section that
/// turns out truncated or corrupt leaves the agent's replay empty.
/// </remarks>
public static class AgentState
{
    /// <summary>The first 8 bytes of every agent state.</summary>
    public const string Magic = "MGRLAGNT";
    /// <summary>Current format version.</summary>
    public const int Version = 2;

    // ── SAVE ──

    /// <summary>Writes slot <paramref name="k"/>'s state of <paramref name="agent"/> to <paramref name="w"/>.</summary>
    public static void Save(Td3Group agent, int k, BinaryWriter w, bool includeReplay)
    {
        using var scope = torch.NewDisposeScope();
        w.Write(System.Text.Encoding.ASCII.GetBytes(Magic));
        w.Write(Version);

        StateIO.WriteTag(w, "HEAD");
        w.Write(agent.ObsSize);
        w.Write(agent.ActSize);
        w.Write((int)agent.DType);

        StateIO.WriteTag(w, "NETS");
        foreach (var (name, ps) in Nets(agent)) StateIO.WriteTensors(w, name, Slot(ps, k));

        StateIO.WriteTag(w, "ADAM");
        StateIO.WriteAdam(w, "critic_adam", agent.CriticOptimizer, k);
        StateIO.WriteAdam(w, "policy_adam", agent.PolicyOptimizer, k);

        StateIO.WriteTag(w, "RNGS");
        StateIO.WriteRandom(w, agent.Rng[k]);
        StateIO.WriteGenerator(w, agent.NoiseGen[k]);

        StateIO.WriteTag(w, "CNTR");
        w.Write(agent.EnvSteps[k]);
        w.Write(agent.LifeStart[k]);

        if (includeReplay) { StateIO.WriteTag(w, "RPLY"); WriteReplay(w, agent.Replay[k]); }
        else StateIO.WriteTag(w, "NORP");

        StateIO.WriteTag(w, "END!");
    }

    /// <summary><see cref="Save(Td3Group, int, BinaryWriter, bool)"/> into a byte array.</summary>
    public static byte[] Save(Td3Group agent, int k, bool includeReplay)
    {
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, System.Text.Encoding.UTF8, leaveOpen: true)) Save(agent, k, w, includeReplay);
        return ms.ToArray();
    }

    static void WriteReplay(BinaryWriter w, TrajectoryReplay rb)
    {
        w.Write(rb.Capacity);
        w.Write(rb.ObsSize);
        w.Write(rb.ActSize);
        w.Write(rb.TotalAdded);
        w.Write(rb.RunningEpisodeStart);
        w.Write(rb.EpisodeCount);
        for (int i = 0; i < rb.EpisodeCount; i++)
        {
            var (start, len) = rb.Episode(i);
            w.Write(start);
            w.Write(len);
        }
        int n = rb.Count;   // slots 0..n-1 hold data (transition k sits in slot k % capacity)
        var s = rb.Storage;
        StateIO.WriteFloats(w, s.Obs.AsSpan(0, n * rb.ObsSize));
        StateIO.WriteFloats(w, s.Act.AsSpan(0, n * rb.ActSize));
        StateIO.WriteFloats(w, s.Rew.AsSpan(0, n));
        StateIO.WriteFloats(w, s.NextObs.AsSpan(0, n * rb.ObsSize));
        StateIO.WriteFloats(w, s.Done.AsSpan(0, n));
        StateIO.WriteFloats(w, s.Terminated.AsSpan(0, n));
        StateIO.WriteFloats(w, s.Truncated.AsSpan(0, n));
    }

    // ── LOAD ──

    /// <summary>Restores a state written by <see cref="Save(Td3Group, int, BinaryWriter, bool)"/> into slot
    /// <paramref name="k"/> of <paramref name="agent"/>, which must have the same sizes, dtype and replay capacity (its
    /// seed does not matter); the other slots are untouched. Without a replay section the slot's replay is emptied.</summary>
    /// <exception cref="InvalidDataException">not an agent state, or a size/shape/dtype mismatch (the message names it)</exception>
    /// <exception cref="EndOfStreamException">truncated state</exception>
    public static AgentStateInfo Load(Td3Group agent, int k, BinaryReader r)
    {
        using var scope = torch.NewDisposeScope();
        var magic = System.Text.Encoding.ASCII.GetString(StateIO.ReadExactly(r, Magic.Length, "magic"));
        if (magic != Magic) throw new InvalidDataException($"not an agent state (magic '{magic}', expected '{Magic}')");
        int version = r.ReadInt32();
        if (version is not (1 or Version)) throw new InvalidDataException($"agent state version {version} is not supported (this build reads 1 and {Version})");

        StateIO.ExpectTag(r, "HEAD", "agent state");
        int obs = r.ReadInt32(), act = r.ReadInt32();
        var dtype = (ScalarType)r.ReadInt32();
        if (obs != agent.ObsSize || act != agent.ActSize)
            throw new InvalidDataException($"checkpoint agent has obs {obs}, act {act}; the agent has obs {agent.ObsSize}, act {agent.ActSize}");
        if (dtype != agent.DType)
            throw new InvalidDataException($"checkpoint agent has dtype {dtype}, the agent uses {agent.DType}");

        // Phase 1: read and validate everything but the replay, changing nothing.
        StateIO.ExpectTag(r, "NETS", "agent state");
        var nets = new List<(List<StateIO.StoredTensor>, List<Tensor>)>();
        foreach (var (name, all) in Nets(agent))
        {
            var ps = Slot(all, k);
            var stored = StateIO.ReadStoredTensors(r, name);
            StateIO.Validate(stored, ps, name, StateIO.MlpNames(name.StartsWith("policy") ? agent.PolicySpec : agent.CriticSpec));
            nets.Add((stored, ps));
        }
        StateIO.ExpectTag(r, "ADAM", "agent state");
        var criticNames = CriticListNames(agent);
        var criticAdam = StateIO.ReadAdam(r, "critic_adam", agent.CriticOptimizer, k, criticNames);
        var policyAdam = StateIO.ReadAdam(r, "policy_adam", agent.PolicyOptimizer, k, StateIO.MlpNames(agent.PolicySpec));
        StateIO.ExpectTag(r, "RNGS", "agent state");
        var rng = StateIO.ReadRandom(r, "checkpoint exploration generator");
        var noise = StateIO.ReadGenerator(r, agent.NoiseGen[k], "checkpoint noise generator");
        StateIO.ExpectTag(r, "CNTR", "agent state");
        long envSteps = r.ReadInt64();
        if (envSteps < 0) throw new InvalidDataException($"checkpoint env step count {envSteps} is negative");
        long lifeStart = version >= 2 ? r.ReadInt64() : 0;   // version 1 predates agent lifetimes: one life
        if (lifeStart < 0 || lifeStart > envSteps)
            throw new InvalidDataException($"checkpoint life start {lifeStart} is outside [0, {envSteps}]");

        // Phase 2: the replay, read straight into the agent's buffer (too big to stage).
        var tag = StateIO.ReadTag(r);
        bool hasReplay = tag == "RPLY";
        if (!hasReplay && tag != "NORP")
            throw new InvalidDataException($"agent state: expected section 'RPLY' or 'NORP', found '{tag}'");
        try
        {
            if (hasReplay) ReadReplay(r, agent.Replay[k]);
            else agent.Replay[k].Clear();
            StateIO.ExpectTag(r, "END!", "agent state");
        }
        catch
        {
            agent.Replay[k].Clear();
            throw;
        }

        // Phase 3: apply.
        foreach (var (stored, ps) in nets) StateIO.CopyInto(stored, ps);
        StateIO.Apply(agent.CriticOptimizer, k, criticAdam);
        StateIO.Apply(agent.PolicyOptimizer, k, policyAdam);
        agent.Rng[k].SetState(rng);
        StateIO.Apply(agent.NoiseGen[k], noise);
        agent.EnvSteps[k] = envSteps;
        agent.LifeStart[k] = lifeStart;
        return new AgentStateInfo(hasReplay, envSteps, agent.CriticOptimizer.Steps(k), agent.PolicyOptimizer.Steps(k));
    }

    /// <summary><see cref="Load(Td3Group, int, BinaryReader)"/> from a byte array (trailing bytes are an error).</summary>
    public static AgentStateInfo Load(Td3Group agent, int k, byte[] state)
    {
        using var ms = new MemoryStream(state, writable: false);
        using var r = new BinaryReader(ms);
        var info = Load(agent, k, r);
        if (ms.Position != ms.Length)
            throw new InvalidDataException($"agent state has {ms.Length - ms.Position} unexpected bytes after its end");
        return info;
    }

    static void ReadReplay(BinaryReader r, TrajectoryReplay rb)
    {
        int cap = r.ReadInt32(), obs = r.ReadInt32(), act = r.ReadInt32();
        if (cap != rb.Capacity || obs != rb.ObsSize || act != rb.ActSize)
            throw new InvalidDataException($"checkpoint replay has capacity {cap}, obs {obs}, act {act}; " +
                                           $"the agent's has capacity {rb.Capacity}, obs {rb.ObsSize}, act {rb.ActSize}");
        long written = r.ReadInt64(), episodeStart = r.ReadInt64();
        int epCount = r.ReadInt32();
        if (written < 0 || epCount < 0 || epCount > Math.Min(written, cap))
            throw new InvalidDataException($"checkpoint replay: invalid counts (written {written}, {epCount} episodes)");
        var eps = new (long, int)[epCount];
        for (int i = 0; i < epCount; i++) eps[i] = (r.ReadInt64(), r.ReadInt32());
        int n = (int)Math.Min(written, cap);
        var s = rb.Storage;
        StateIO.ReadFloatsInto(r, s.Obs.AsSpan(0, n * obs), "checkpoint replay observations");
        StateIO.ReadFloatsInto(r, s.Act.AsSpan(0, n * act), "checkpoint replay actions");
        StateIO.ReadFloatsInto(r, s.Rew.AsSpan(0, n), "checkpoint replay rewards");
        StateIO.ReadFloatsInto(r, s.NextObs.AsSpan(0, n * obs), "checkpoint replay next observations");
        StateIO.ReadFloatsInto(r, s.Done.AsSpan(0, n), "checkpoint replay done flags");
        StateIO.ReadFloatsInto(r, s.Terminated.AsSpan(0, n), "checkpoint replay terminated flags");
        StateIO.ReadFloatsInto(r, s.Truncated.AsSpan(0, n), "checkpoint replay truncated flags");
        rb.RestoreCounters(written, episodeStart, eps);
    }

    // ── LAYOUT ──

    static IEnumerable<(string Name, List<Tensor> Params)> Nets(Td3Group a) =>
    [
        ("policy", a.Policy), ("q1", a.Q1), ("q2", a.Q2),
        ("policy_target", a.PolicyTarget), ("q1_target", a.Q1Target), ("q2_target", a.Q2Target),
    ];

    /// <summary>Slot k's views of stacked tensors (owned by the caller's dispose scope).</summary>
    static List<Tensor> Slot(IReadOnlyList<Tensor> stacked, int k) => stacked.Select(p => p[k]).ToList();

    /// <summary>Names the critic optimiser's tensors (Q1's list then Q2's).</summary>
    static Func<int, string> CriticListNames(Td3Group a)
    {
        var inner = StateIO.MlpNames(a.CriticSpec);
        int n = a.CriticSpec.ParameterCount;
        return i => i < n ? "q1 " + inner(i) : "q2 " + inner(i - n);
    }
}
