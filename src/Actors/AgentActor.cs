using Akka.Actor;
using MetaGenRL.Core.Meta;
using MetaGenRL.Core.Training;

namespace MetaGenRL.Actors;

/// <summary>What an agent needs to know about the run (fixed for its lifetime, restarts included).</summary>
public sealed record AgentSettings(
    int Index, int AgentCount, long TimestepsTotal, int ObjFuncUpdateDelay, int TorchThreads,
    long CheckpointEvery, bool IncludeReplay)
{
    public bool ObjectiveGradientAt(long j) => AgentCount > 1 && ObjFuncUpdateDelay > 0 && j % ObjFuncUpdateDelay == 0;
}

/// <summary>Thrown by an agent after it reported <see cref="AgentFailed"/>, so that its parent restarts it.</summary>
public sealed class AgentFaultException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// Owns one <see cref="IPopulationMember"/>. Runs on its own pinned thread (dispatcher
/// <see cref="Population.AgentDispatcher"/>): the member is created, used and disposed on that thread, because
/// TorchSharp dispose scopes and no_grad are per thread. Work is done synchronously in the handlers.
/// Sync mode answers the coordinator's requests, with the metrics of each request in the reply (the coordinator
/// orders them). Async mode drives its own collect/update loop one unit per message, so the latest α published by
/// the server is taken in between units, and sends metrics straight to the sink.
/// A failure (exception, or NaN/Inf in a reported loss or the gradient) is reported as <see cref="AgentFailed"/>
/// and then rethrown as <see cref="AgentFaultException"/>: the parent restarts this actor, and the new incarnation
/// asks the parent for the last checkpointed state of its member.
/// </summary>
public sealed class AgentActor : ReceiveActor, IWithUnboundedStash
{
    readonly AgentSettings _s;
    readonly Func<int, IPopulationMember> _factory;
    readonly IActorRef _sink;
    readonly IActorRef _server;
    IPopulationMember? _member;
    bool _restarted;          // this incarnation follows a failure
    bool _catchUpAlpha;       // sync, after a restart: load the server's α with the first request that carries it
    long _loadedVersion = -1; // version of the α last loaded into the member
    readonly List<Metric> _metrics = new();
    string? _nonFinite;

    // async loop
    bool _looping, _collectNext = true;
    long _target = 1, _length, _j, _rounds, _nextMark;
    float[]? _latestAlpha;
    long _latestVersion = -1;

    public IStash Stash { get; set; } = null!;

    public static Props Props(AgentSettings settings, Func<int, IPopulationMember> factory, IActorRef sink, IActorRef server) =>
        Akka.Actor.Props.Create(() => new AgentActor(settings, factory, sink, server)).WithDispatcher(Population.AgentDispatcher);

    public AgentActor(AgentSettings settings, Func<int, IPopulationMember> factory, IActorRef sink, IActorRef server)
    {
        _s = settings; _factory = factory; _sink = sink; _server = server;
        Receive<RestoreMember>(OnRestore);
        ReceiveAny(_ => Stash.Stash());
    }

    protected override void PreStart() => Context.Parent.Tell(new AgentStarted(_s.Index, _restarted));

    protected override void PostRestart(Exception reason)
    {
        _restarted = true;
        _catchUpAlpha = true;
        PreStart();
    }

    protected override void PostStop()
    {
        _member?.Dispose();
        _member = null;
    }

    IPopulationMember Member => _member ?? throw new InvalidOperationException("member not created");

    // ── STARTING ──
    void OnRestore(RestoreMember m)
    {
        try
        {
            if (_s.TorchThreads > 0) TorchSharp.torch.set_num_threads(_s.TorchThreads);
            _member = _factory(_s.Index);
            if (m.State is not null) _member.LoadState(m.State);
            long every = _s.CheckpointEvery;
            _nextMark = every > 0 ? (_member.EnvSteps / every + 1) * every : long.MaxValue;
        }
        catch (Exception e)
        {
            throw new AgentFaultException($"agent {_s.Index}: creating/restoring the member failed: {e.Message}", e);
        }
        Become(Ready);
        Stash.UnstashAll();
        Context.Parent.Tell(new AgentReady(_s.Index, _restarted, Member.ObjectiveParameters(), Member.EnvSteps));
    }

    void Ready()
    {
        Receive<LoadObjective>(m => { Load(m.Alpha, m.Version); _catchUpAlpha = false; Remember(m.Alpha, m.Version); });
        Receive<ObjectivePublished>(m => Remember(m.Alpha, m.Version));
        Receive<CollectRequest>(OnCollect);
        Receive<UpdateRequest>(OnUpdate);
        Receive<SaveStateRequest>(m => Guard(Sender, -1, -2, () =>
            new StateSaved(_s.Index, -1, Member.SaveState(m.IncludeReplay), Member.EnvSteps)));
        Receive<StartAsync>(_ => { _looping = true; _collectNext = true; _target = 1; Self.Tell(new AsyncTick()); });
        Receive<StopAsync>(_ => { if (_looping) Finish(); });
        Receive<AsyncTick>(_ => OnTick());
        Receive<ObjectiveRequest>(_ => Sender.Tell(new MemberObjective(_s.Index, Member.ObjectiveParameters())));
    }

    // ── SYNC REQUESTS ──
    void OnCollect(CollectRequest r) => Guard(Sender, r.Round, -1, () =>
    {
        var res = Member.Collect(r.TargetSteps, OnMetric);
        CheckLosses();
        return new Collected(_s.Index, r.Round, res.Steps, res.ShortestEpisode, Member.EnvSteps, _metrics.ToArray());
    });

    void OnUpdate(UpdateRequest r) => Guard(Sender, r.Round, r.J, () =>
    {
        if (_catchUpAlpha && r.Alpha is not null) Load(r.Alpha, r.AlphaVersion);
        _catchUpAlpha = false;
        Member.Update(r.J, OnMetric);     // the policy step uses the α loaded before this request (stale by a step)
        CheckLosses();
        float[]? g = null;
        if (r.ObjectiveGradient)
        {
            if (r.Alpha is not null && r.AlphaVersion != _loadedVersion) Load(r.Alpha, r.AlphaVersion);
            g = Gradient();
        }
        return new Updated(_s.Index, r.Round, r.J, g, _metrics.ToArray());
    });

    // ── ASYNC LOOP ──
    void OnTick()
    {
        if (!_looping) return;
        _metrics.Clear(); _nonFinite = null;
        try
        {
            if (_collectNext)
            {
                MaybeCheckpoint();
                if (Member.EnvSteps >= _s.TimestepsTotal) { Finish(); return; }
                var res = Member.Collect(_target, OnMetric);
                CheckLosses();
                _rounds++;
                _length = res.Steps; _j = 0; _collectNext = _length == 0;
                if (res.ShortestEpisode is int shortest) _target = shortest;
                _sink.Tell(new AgentProgress(_s.Index, Member.EnvSteps));
            }
            else
            {
                Member.Update(_j, OnMetric);
                CheckLosses();
                if (_s.ObjectiveGradientAt(_j))
                {
                    if (_latestAlpha is not null && _latestVersion != _loadedVersion) Load(_latestAlpha, _latestVersion);
                    var g = Gradient();
                    if (g is not null) _server.Tell(new SubmitGradient(_s.Index, g, _loadedVersion));
                }
                if (++_j >= _length) _collectNext = true;
            }
        }
        catch (Exception e)
        {
            _looping = false;
            Fail(Context.Parent, _rounds, _collectNext ? -1 : _j, e);
        }
        if (_metrics.Count > 0) _sink.Tell(new MetricRows(_metrics.ToArray()));
        Self.Tell(new AsyncTick());
    }

    void MaybeCheckpoint()
    {
        if (Member.EnvSteps < _nextMark) return;
        long mark = Member.EnvSteps / _s.CheckpointEvery * _s.CheckpointEvery;
        Context.Parent.Tell(new StateSaved(_s.Index, mark, Member.SaveState(_s.IncludeReplay), Member.EnvSteps));
        _nextMark = mark + _s.CheckpointEvery;
    }

    void Finish()
    {
        _looping = false;
        Context.Parent.Tell(new AgentFinished(_s.Index, Member.EnvSteps, _rounds));
    }

    // ── HELPERS ──
    void Remember(float[] alpha, long version)
    {
        if (version > _latestVersion) { _latestAlpha = alpha; _latestVersion = version; }
    }

    void Load(float[] alpha, long version)
    {
        Member.LoadObjective(alpha);
        _loadedVersion = version;
    }

    float[]? Gradient()
    {
        var g = Member.ObjectiveGradient(OnMetric);
        CheckLosses();
        if (g is null) return null;
        if (g.Length != Member.ObjectiveSize)
            throw new InvalidOperationException($"gradient has {g.Length} entries, the objective has {Member.ObjectiveSize}");
        for (int i = 0; i < g.Length; i++)
            if (!float.IsFinite(g[i])) throw new ArithmeticException($"objective gradient entry {i} is {g[i]}");
        return g;
    }

    void OnMetric(Metric m)
    {
        _metrics.Add(m);
        if (_nonFinite is null && m.Name.Contains("loss", StringComparison.Ordinal) && !double.IsFinite(m.Value))
            _nonFinite = $"{m.Name} = {m.Value}";
    }

    void CheckLosses()
    {
        if (_nonFinite is not null) throw new ArithmeticException($"non-finite loss reported: {_nonFinite}");
    }

    /// <summary>Runs one request; replies its result, or <see cref="AgentFailed"/> and then faults this actor.</summary>
    void Guard(IActorRef replyTo, long round, long j, Func<object> body)
    {
        _metrics.Clear(); _nonFinite = null;
        object reply;
        try { reply = body(); }
        catch (Exception e) { Fail(replyTo, round, j, e); return; }
        replyTo.Tell(reply);
    }

    void Fail(IActorRef replyTo, long round, long j, Exception e)
    {
        string reason = $"{e.GetType().Name}: {e.Message}";
        replyTo.Tell(new AgentFailed(_s.Index, round, j, reason, _metrics.ToArray()));
        throw new AgentFaultException($"agent {_s.Index} failed (round {round}, j {j}): {reason}", e);
    }
}
