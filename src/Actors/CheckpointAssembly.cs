using MetaGenRL.Core.Engine;

namespace MetaGenRL.Actors;

/// <summary>
/// Puts population checkpoints together: gathers every group's slot states (sync, and at the end of a loop run) or
/// each group's own saves at a mark (async, independent: written once every group passed the mark), adds the server
/// and coordinator parts, and holds a checkpoint until the metric sink delivered the rows up to its marker row. Keeps
/// every agent's last checkpointed state, the state a failed agent is restored from, and reads the counters back on
/// resume. Plain state, no actor.
/// </summary>
public sealed class CheckpointAssembly
{
    /// <summary>Name of the metric row emitted just before each checkpoint is written (value: its index).</summary>
    public const string Marker = "checkpoint";
    const int CounterFormat = 1;

    readonly PopulationOptions _o;
    readonly GroupSpec[] _groups;
    readonly int _n;
    readonly byte[]?[] _agentStates;     // per agent: the last checkpointed state (restores start from here)
    readonly Queue<(int Index, long EnvStep, Dictionary<string, byte[]> Parts, byte[][] Agents)> _pending = new();
    // a checkpoint being gathered from all groups
    readonly byte[]?[] _saving;
    readonly bool[] _saved;
    int _savePending;
    bool _saveBroken;
    // async marks
    readonly long[] _marks;              // per group: its latest own checkpoint mark
    byte[][]? _asyncSnapshot;
    long _asyncMark;

    public CheckpointAssembly(PopulationOptions options, GroupSpec[] groups)
    {
        _o = options; _groups = groups; _n = options.AgentCount;
        _agentStates = new byte[]?[_n];
        _saving = new byte[]?[_n];
        _saved = new bool[groups.Length];
        _marks = Enumerable.Repeat(-1L, groups.Length).ToArray();
    }

    /// <summary>Env step of the last checkpoint written (checkpointed).</summary>
    public long LastStep { get; private set; }
    /// <summary>Index the next checkpoint gets (checkpointed).</summary>
    public long NextIndex { get; private set; }
    /// <summary>Async: the mark every group must pass before the next checkpoint (checkpointed).</summary>
    public long NextAsyncMark { get; private set; }
    /// <summary>Checkpoints stored in this run.</summary>
    public int Written { get; private set; }
    /// <summary>The server part of the checkpoint resumed from (null: none).</summary>
    public byte[]? ResumedServer { get; private set; }
    /// <summary>This run continues from a checkpoint.</summary>
    public bool Resumed { get; private set; }
    /// <summary>Async: the server's state for the gathered snapshot has been asked for.</summary>
    public bool AsyncExporting { get; private set; }

    /// <summary>The last checkpointed states of a group's slots (null: none yet).</summary>
    public byte[]?[] StatesOf(GroupSpec g) => g.Agents.Select(a => _agentStates[a]).ToArray();

    /// <summary>Where a failed agent goes back to, for its failure message.</summary>
    public string RestorePointOf(int agent) =>
        _agentStates[agent] is null ? "restarted from its initial state (no checkpoint yet)" : "restored from its last checkpoint";

    // ── GATHERING (sync, and the end of a loop run) ──
    public void BeginSave()
    {
        Array.Clear(_saving); Array.Clear(_saved);
        _savePending = _groups.Length;
        _saveBroken = false;
    }

    public bool Expects(int group) => !_saved[group];

    /// <summary>Takes a group's states; true when every group answered.</summary>
    public bool Saved(StatesSaved s)
    {
        var agents = _groups[s.Group].Agents;
        for (int k = 0; k < agents.Length; k++) _saving[agents[k]] = s.States[k];
        return Answer(s.Group);
    }

    /// <summary>A group failed while saving: this checkpoint is skipped. True when every group answered.</summary>
    public bool SaveFailed(int group)
    {
        _saveBroken = true;
        return Answer(group);
    }

    /// <summary>The gathered states, or null when a group failed to save.</summary>
    public byte[][]? Gathered() => _saveBroken ? null : _saving.Select(s => s!).ToArray();

    bool Answer(int group)
    {
        _saved[group] = true;
        return --_savePending == 0;
    }

    // ── ASYNC MARKS ──
    /// <summary>A group's own checkpoint at a mark: its states become the agents' restore points. True when
    /// <paramref name="canWrite"/> and every group has now passed the next mark: the snapshot is taken
    /// (<see cref="TakeAsyncSnapshot"/>).</summary>
    public bool GroupMark(StatesSaved s, bool canWrite)
    {
        var agents = _groups[s.Group].Agents;
        for (int k = 0; k < agents.Length; k++) _agentStates[agents[k]] = s.States[k];
        _marks[s.Group] = Math.Max(_marks[s.Group], s.Mark);
        if (!canWrite || AsyncExporting || _marks.Any(m => m < Math.Max(NextAsyncMark, 1))) return false;
        _asyncSnapshot = _agentStates.Select(a => a!).ToArray();
        _asyncMark = _marks.Min();
        AsyncExporting = true;
        return true;
    }

    /// <summary>The snapshot taken by <see cref="GroupMark"/> and its env step; the next mark follows it.</summary>
    public (byte[][] States, long Mark) TakeAsyncSnapshot()
    {
        AsyncExporting = false;
        NextAsyncMark = _asyncMark + _o.CheckpointEvery;
        return (_asyncSnapshot!, _asyncMark);
    }

    // ── WRITING ──
    /// <summary>Queues a checkpoint with all its parts and returns its marker row: rows before it are the ones this
    /// checkpoint covers, so a resumed run can keep exactly those. The caller emits the marker, then asks the sink to
    /// flush; the checkpoint is stored (<see cref="StorePending"/>) only once the sink delivered everything up to the
    /// marker, so a stored checkpoint always has its rows.</summary>
    public Metric Enqueue(byte[][] agents, byte[]? server, long envStep, SyncRound counters)
    {
        var parts = new Dictionary<string, byte[]>();
        for (int i = 0; i < _n; i++) parts[$"agent/{i}"] = agents[i];
        if (server is not null) parts["server"] = server;
        LastStep = envStep;
        long index = NextIndex++;
        parts["coordinator"] = Counters(counters);
        _pending.Enqueue(((int)index, envStep, parts, agents));
        return new Metric(envStep, Marker, index);
    }

    public bool HasPending => _pending.Count > 0;

    /// <summary>Stores the oldest queued checkpoint (the sink answers flushes in order); returns its agent states,
    /// the new restore points.</summary>
    public byte[][] StorePending()
    {
        var (index, envStep, parts, agents) = _pending.Dequeue();
        _o.Checkpoints?.Write(index, envStep, parts);
        Array.Copy(agents, _agentStates, _n);
        Written++;
        return agents;
    }

    // ── COUNTERS ──
    byte[] Counters(SyncRound r)
    {
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms))
        {
            w.Write(CounterFormat); w.Write(_n); w.Write((int)_o.Mode);
            w.Write(r.Round); w.Write(r.Target); w.Write(r.GlobalStep); w.Write(LastStep);
            w.Write(NextIndex); w.Write(NextAsyncMark);
        }
        return ms.ToArray();
    }

    /// <summary>Continues from checkpoint <paramref name="index"/>: counters into <paramref name="round"/> and here,
    /// agent states as restore points, the server part for the server.</summary>
    public void Restore(int index, IReadOnlyDictionary<string, byte[]> parts, SyncRound round)
    {
        if (!parts.TryGetValue("coordinator", out var counters)) throw new InvalidDataException($"checkpoint {index} has no coordinator part");
        using (var r = new BinaryReader(new MemoryStream(counters)))
        {
            int format = r.ReadInt32();
            if (format != CounterFormat) throw new InvalidDataException($"checkpoint {index}: coordinator format {format}, expected {CounterFormat}");
            int n = r.ReadInt32();
            if (n != _n) throw new InvalidDataException($"checkpoint {index} holds {n} agents, this population has {_n}");
            r.ReadInt32();   // the mode it was written in; any mode can continue from it
            long rounds = r.ReadInt64(), target = r.ReadInt64(), globalStep = r.ReadInt64();
            round.Set(rounds, target, globalStep);
            LastStep = r.ReadInt64(); NextIndex = r.ReadInt64(); NextAsyncMark = r.ReadInt64();
        }
        NextIndex = Math.Max(NextIndex, index + 1L);
        for (int i = 0; i < _n; i++)
            _agentStates[i] = parts.TryGetValue($"agent/{i}", out var s) ? s : throw new InvalidDataException($"checkpoint {index} has no agent/{i}");
        if (_o.HasServer)
            ResumedServer = parts.TryGetValue("server", out var sv) ? sv : throw new InvalidDataException($"checkpoint {index} has no server part");
        Resumed = true;
    }
}
