using Akka.Actor;
using MetaGenRL.Actors.Cluster;
using MetaGenRL.Core.Engine;

namespace MetaGenRL.Actors;

/// <summary>Thrown by a group actor after it reported <see cref="GroupFailed"/>, so that its parent restarts it.</summary>
public sealed class GroupFaultException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>A population that gave up: an agent failed more often than allowed. The message names the agent and its
/// first and last causes; <see cref="Reasons"/> lists every failure in order.</summary>
public sealed class PopulationFailedException(string message, IReadOnlyList<string> reasons) : Exception(message)
{
    /// <summary>"agent i: cause; …" for every failure of the run, in order.</summary>
    public IReadOnlyList<string> Reasons { get; } = reasons;
}

/// <summary>
/// Owns one <see cref="IAgentGroup"/> (K agents computed as one batch). Runs on its own pinned thread (dispatcher
/// <see cref="Population.GroupDispatcher"/>): the group is created, used and disposed on that thread, because
/// TorchSharp dispose scopes and no_grad are per thread. Work is done synchronously in the handlers.
/// Sync mode answers the coordinator's requests, with the rows of each request in the reply (the coordinator orders
/// them). Async and independent modes drive the group's own loop (<see cref="GroupLoop"/>) one unit per message, so
/// the latest α published by the server is taken in between units, and send rows straight to the sink, in order.
/// <para>Failures: a slot the group reports failed is restored at once from its last checkpointed state (or reset),
/// reported (<see cref="AgentFailed"/>, and agent_failure/agent_restart rows) and its gradient dropped; the other slots
/// and α are untouched. A method that throws breaks the whole group: <see cref="GroupFailed"/> goes to the parent, then
/// <see cref="GroupFaultException"/> makes the parent restart this actor, whose new incarnation rebuilds the group and
/// restores every slot from the states the parent sends.</para>
/// </summary>
public sealed class GroupActor : ReceiveActor, IWithUnboundedStash
{
    const long CollectJ = -1, SaveJ = -2, NoRequest = -3;

    readonly GroupSpec _spec;
    readonly PopulationOptions _o;
    readonly Func<GroupSpec, IAgentGroup> _factory;
    readonly IActorRef _sink;
    readonly IActorRef _server;
    readonly IActorRef? _coordinator;   // null: the parent (a group in the coordinator's process)
    IAgentGroup? _group;
    byte[]?[] _restore;             // per slot: the state a failed slot is restored from (null: reset)
    bool _restarted;                // this incarnation follows a group failure
    bool _catchUpAlpha;             // sync, after a restart: load the α carried by the next update request
    float[]? _loadedAlpha;          // the α last loaded into every slot
    long _loadedVersion = -1;
    float[]? _latestAlpha;          // async: the newest α published by the server
    long _latestVersion = -1;
    readonly List<Metric> _rows = new();
    GroupLoop? _loop;
    bool _looping;
    long _nextMark = long.MaxValue;
    readonly PartAssembler _parts = new();   // state messages from a coordinator on another node, in parts

    public IStash Stash { get; set; } = null!;

    /// <param name="coordinator">where the group's lifecycle messages go when its parent is not the coordinator (a
    /// <see cref="Cluster.GroupHostActor"/> on another node); null: the parent.</param>
    /// <param name="restarted">this group replaces one that was lost (its node left the cluster): it starts as a
    /// restarted group does.</param>
    public static Props Props(GroupSpec spec, PopulationOptions options, Func<GroupSpec, IAgentGroup> factory,
                              IActorRef sink, IActorRef server, IActorRef? coordinator = null, bool restarted = false) =>
        Akka.Actor.Props.Create(() => new GroupActor(spec, options, factory, sink, server, coordinator, restarted))
            .WithDispatcher(Population.GroupDispatcher);

    public GroupActor(GroupSpec spec, PopulationOptions options, Func<GroupSpec, IAgentGroup> factory, IActorRef sink, IActorRef server,
                      IActorRef? coordinator = null, bool restarted = false)
    {
        _spec = spec; _o = options; _factory = factory; _sink = sink; _server = server; _coordinator = coordinator;
        _restarted = restarted;
        _catchUpAlpha = restarted;
        _restore = new byte[]?[spec.Agents.Length];
        Receive<RestoreGroup>(OnRestore);
        // restore points sent before the RestoreGroup this incarnation waits for are no newer than its states
        Receive<RestorePoints>(_ => { });
        ReceiveAny(_ => Stash.Stash());
    }

    IActorRef Coordinator => _coordinator ?? Context.Parent;

    /// <summary>A large message from another node arrives in parts (<see cref="LargeMessages"/>): it is handled once
    /// whole.</summary>
    protected override bool AroundReceive(Receive receive, object message)
    {
        if (message is not MessagePart part) return base.AroundReceive(receive, message);
        var whole = _parts.Add(part, Sender, Context.System);
        return whole is null || base.AroundReceive(receive, whole);
    }

    protected override void PreStart() => Coordinator.Tell(new GroupStarted(_spec.Group, _restarted));

    protected override void PostRestart(Exception reason)
    {
        _restarted = true;
        _catchUpAlpha = true;
        PreStart();
    }

    protected override void PostStop()
    {
        _group?.Dispose();
        _group = null;
    }

    IAgentGroup Group => _group ?? throw new InvalidOperationException("group not created");
    int K => _spec.Agents.Length;

    // ── STARTING ──
    void OnRestore(RestoreGroup m) => Guard(-1, NoRequest, () =>
    {
        if (_o.TorchThreadsPerGroup > 0) MetaGenRL.Core.Torch.TorchThreads.Use(_o.TorchThreadsPerGroup);
        _group = _factory(_spec);
        if (!_group.Agents.SequenceEqual(_spec.Agents) || _group.Size != K)
            throw new InvalidOperationException($"group {_spec.Group}: made with agents [{string.Join(",", _group.Agents)}], expected [{string.Join(",", _spec.Agents)}]");
        _restore = (byte[]?[])m.States.Clone();
        for (int k = 0; k < K; k++)
            if (_restore[k] is { } state) _group.LoadState(k, state);
        long every = _o.CheckpointEvery;
        if (_o.Mode != ScheduleMode.Sync && every > 0) _nextMark = (_group.EnvSteps.Min() / every + 1) * every;
        Become(Ready);
        Stash.UnstashAll();
        int agent0 = Array.IndexOf(_spec.Agents, 0);
        Coordinator.Tell(new GroupReady(_spec.Group, _restarted, agent0 >= 0 ? _group.ObjectiveParameters(agent0) : null, _group.EnvSteps));
    });

    void Ready()
    {
        Receive<LoadObjective>(m => Guard(-1, NoRequest, () =>
        {
            Load(m.Alpha, m.Version);
            _catchUpAlpha = false;
            Remember(m.Alpha, m.Version);
        }));
        Receive<ObjectivePublished>(m => Remember(m.Alpha, m.Version));
        Receive<RestorePoints>(m => _restore = (byte[]?[])m.States.Clone());
        Receive<CollectRequest>(OnCollect);
        Receive<UpdateRequest>(OnUpdate);
        Receive<SaveStatesRequest>(m => Guard(-1, SaveJ, () =>
            LargeMessages.Tell(Sender, new StatesSaved(_spec.Group, -1, SaveAll(m.IncludeReplay), Group.EnvSteps), Self, Context.System)));
        Receive<StartLoop>(_ =>
        {
            _loop = new GroupLoop(K, _o);
            _looping = true;
            Self.Tell(new LoopTick());
        });
        Receive<StopLoop>(_ => Finish());   // also answers when not looping (stopped before a restart resumed the loop)
        Receive<LoopTick>(_ => OnTick());
        Receive<ObjectiveRequest>(_ => Guard(-1, NoRequest, () =>
            Sender.Tell(new GroupObjective(_spec.Group, Group.ObjectiveParameters(Math.Max(0, Array.IndexOf(_spec.Agents, 0)))))));
    }

    // ── SYNC REQUESTS ──
    void OnCollect(CollectRequest r) => Guard(r.Round, CollectJ, () =>
    {
        var results = Group.Collect(Fill(r.Target), Fill(r.Limit), OnMetric);
        var steps = new long[K];
        var shortest = new int?[K];
        for (int k = 0; k < K; k++)
        {
            if (results[k].Failure is { } reason) { SlotFailed(k, reason); continue; }
            steps[k] = results[k].Steps;
            shortest[k] = results[k].ShortestEpisode;
        }
        Sender.Tell(new Collected(_spec.Group, r.Round, steps, shortest, Group.EnvSteps, _rows.ToArray()));
    });

    void OnUpdate(UpdateRequest r) => Guard(r.Round, r.J, () =>
    {
        if (_catchUpAlpha && r.Alpha is not null) Load(r.Alpha, r.AlphaVersion);
        _catchUpAlpha = false;
        var active = Enumerable.Repeat(true, K).ToArray();
        Update(r.J, active);   // the policy step uses the α loaded before this request (stale by a server step)
        var gradients = new float[]?[K];
        if (r.ObjectiveGradient)
        {
            if (r.Alpha is not null && r.AlphaVersion != _loadedVersion) Load(r.Alpha, r.AlphaVersion);
            gradients = Gradients(active);
        }
        Sender.Tell(new Updated(_spec.Group, r.Round, r.J, gradients, _rows.ToArray()));
    });

    // ── ASYNC AND INDEPENDENT LOOP ──
    void OnTick()
    {
        if (!_looping || _loop is null) return;
        _rows.Clear();
        try
        {
            if (_loop.CollectNext) LoopCollect(_loop);
            else LoopUpdate(_loop);
        }
        catch (Exception e)
        {
            _looping = false;
            Fail(-1, _loop.CollectNext ? CollectJ : _loop.J, e);
        }
        if (_rows.Count > 0) _sink.Tell(new MetricRows(_rows.ToArray()));
        if (_looping) Self.Tell(new LoopTick());
    }

    void LoopCollect(GroupLoop loop)
    {
        MaybeCheckpoint();
        var next = loop.NextCollect(Group.EnvSteps);
        if (next is null) { Finish(); return; }
        var (targets, limits) = next.Value;
        var results = Group.Collect(targets, limits, OnMetric);
        var failed = new bool[K];
        for (int k = 0; k < K; k++)
            if (results[k].Failure is { } reason) { SlotFailed(k, reason); failed[k] = true; }
        loop.Collected(results, limits, failed);
        var env = Group.EnvSteps;
        for (int k = 0; k < K; k++)
            if (limits[k] > 0) _sink.Tell(new AgentProgress(_spec.Agents[k], env[k]));
    }

    void LoopUpdate(GroupLoop loop)
    {
        var active = loop.Active();
        if (active.Any(a => a))
        {
            var started = (bool[])active.Clone();
            Update(loop.J, active);
            if (_o.ObjectiveGradientAt(loop.J) && active.Any(a => a))
            {
                if (_latestAlpha is not null && _latestVersion != _loadedVersion) Load(_latestAlpha, _latestVersion);
                var gradients = Gradients(active);
                for (int k = 0; k < K; k++)
                    if (gradients[k] is { } g) _server.Tell(new SubmitGradient(_spec.Agents[k], g, _loadedVersion));
            }
            for (int k = 0; k < K; k++)
                if (started[k] && !active[k]) loop.SlotFailed(k);   // failed and restored: sits out the rest of the round
        }
        loop.Advance();
    }

    /// <summary>At a group round boundary: once the slowest slot crossed the next multiple of checkpoint_every, save
    /// every slot; the states become this group's restore points and go to the parent, which writes the checkpoint
    /// when every group passed that mark.</summary>
    void MaybeCheckpoint()
    {
        long min = Group.EnvSteps.Min();
        if (min < _nextMark) return;
        long mark = min / _o.CheckpointEvery * _o.CheckpointEvery;
        var states = SaveAll(_o.CheckpointIncludesReplay);
        _restore = states.ToArray<byte[]?>();
        LargeMessages.Tell(Coordinator, new StatesSaved(_spec.Group, mark, states, Group.EnvSteps), Self, Context.System);
        _nextMark = mark + _o.CheckpointEvery;
    }

    void Finish()
    {
        _looping = false;
        Coordinator.Tell(new GroupFinished(_spec.Group, Group.EnvSteps, _loop?.Rounds ?? new long[K]));
    }

    // ── ONE STEP, WITH SLOT FAILURES ──
    /// <summary>Update(j) on the active slots; a slot that failed is restored and marked inactive.</summary>
    void Update(long j, bool[] active)
    {
        var failures = Group.Update(j, active, OnMetric);
        for (int k = 0; k < K; k++)
            if (active[k] && failures[k] is { } reason) { SlotFailed(k, reason); active[k] = false; }
    }

    /// <summary>∇α per active slot; a failed, malformed or non-finite gradient is a slot failure: null, and the slot
    /// is marked inactive in <paramref name="active"/>.</summary>
    float[]?[] Gradients(bool[] active)
    {
        var gradients = new float[]?[K];
        if (!Group.ComputesObjectiveGradients) return gradients;
        var results = Group.ObjectiveGradients(active, OnMetric);
        for (int k = 0; k < K; k++)
        {
            if (!active[k]) continue;
            string? reason = results[k].Failure ?? Invalid(results[k].Gradient);
            if (reason is not null) { SlotFailed(k, reason); active[k] = false; }
            else gradients[k] = results[k].Gradient;
        }
        return gradients;
    }

    string? Invalid(float[]? g)
    {
        if (g is null) return null;
        if (g.Length != Group.ObjectiveSize) return $"gradient has {g.Length} entries, the objective has {Group.ObjectiveSize}";
        for (int i = 0; i < g.Length; i++)
            if (!float.IsFinite(g[i])) return $"objective gradient entry {i} is {g[i]}";
        return null;
    }

    /// <summary>Reports slot k's failure and restores it at once from its last checkpointed state (or resets it); it
    /// then carries the group's current α like the other slots.</summary>
    void SlotFailed(int k, string reason)
    {
        int agent = _spec.Agents[k];
        long env = Group.EnvSteps[k];
        _rows.Add(new Metric(env, "agent_failure", 1, agent));
        _rows.Add(new Metric(env, "agent_restart", 1, agent));
        if (_restore[k] is { } state)
        {
            Coordinator.Tell(new AgentFailed(agent, reason + "; restored from its last checkpoint"));
            Group.LoadState(k, state);
        }
        else
        {
            Coordinator.Tell(new AgentFailed(agent, reason + "; restarted from its initial state (no checkpoint yet)"));
            Group.ResetAgent(k);
        }
        if (_loadedAlpha is not null) Group.LoadObjective(_loadedAlpha);
    }

    // ── HELPERS ──
    byte[][] SaveAll(bool includeReplay) => Enumerable.Range(0, K).Select(k => Group.SaveState(k, includeReplay)).ToArray();

    void Remember(float[] alpha, long version)
    {
        if (version > _latestVersion) { _latestAlpha = alpha; _latestVersion = version; }
    }

    void Load(float[] alpha, long version)
    {
        Group.LoadObjective(alpha);
        _loadedAlpha = alpha;
        _loadedVersion = version;
    }

    void OnMetric(Metric m) => _rows.Add(m);

    T[] Fill<T>(T value) => Enumerable.Repeat(value, K).ToArray();

    /// <summary>Runs one request; on an exception reports <see cref="GroupFailed"/> and faults this actor.</summary>
    void Guard(long round, long j, Action body)
    {
        _rows.Clear();
        try { body(); }
        catch (Exception e) { Fail(round, j, e); }
    }

    void Fail(long round, long j, Exception e)
    {
        string reason = $"{e.GetType().Name}: {e.Message}";
        Coordinator.Tell(new GroupFailed(_spec.Group, round, j, reason, _rows.ToArray()));
        throw new GroupFaultException($"group {_spec.Group} failed (round {round}, j {j}): {reason}", e);
    }
}
