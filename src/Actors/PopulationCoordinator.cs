using Akka.Actor;
using MetaGenRL.Actors.Cluster;
using MetaGenRL.Core.Engine;

namespace MetaGenRL.Actors;

/// <summary>
/// Parent and supervisor of the group actors and the <see cref="ObjectiveServer"/>; routes the messages of the
/// schedule. The state lives in two plain classes: <see cref="SyncRound"/> (the lock-step rounds and the replies of
/// the phase in flight) and <see cref="CheckpointAssembly"/> (checkpoint parts, marker rows, restore points, counters).
///
/// Sync (the official Algorithm 1, in lock step): a round is a collect by every group, then for j = 0 … L−1 every group does Update(j) and, when
/// j % obj_func_update_delay == 0 and a server exists, loads the α it was sent (the server's latest) and computes ∇α per
/// slot; once all groups replied, the server averages every agent's gradient in agent-index order and takes one Adam
/// step. So the policy step at j uses the α loaded at the previous gradient computation (stale by one server step).
/// After every `steps` rounds (a training iteration) all groups load the latest α. Rows are forwarded per phase in
/// agent-index order, so a run is a deterministic function of its inputs.
///
/// Async and independent: every group runs <see cref="GroupLoop"/> on its own (async: gradients go to the server,
/// which publishes each new α); the coordinator starts the loops, restarts failed groups, writes a checkpoint when
/// every group passed the next mark and waits for every group to finish.
///
/// Failures: a slot failure is handled inside its group (restored at once, gradient dropped); a group whose method
/// threw is restarted (<see cref="SupervisorStrategy"/>) and restored from the last checkpointed states, and in sync its
/// request counts as a reply without gradients. More than MaxRestartsPerAgent failures of one agent fail the run.
///
/// Groups on other nodes (<see cref="PopulationOptions.Placement"/>): each is built by a <see cref="GroupHostActor"/>
/// there and introduces itself with <see cref="GroupStarted"/>; until then what is sent to it waits here. The protocol
/// is the same, over Akka.Remote. A group whose node is lost (or that stopped there) is handled as a group failure and
/// built again on the next host still there (or in this process), restored from the last checkpointed states.
/// </summary>
public sealed class PopulationCoordinator : ReceiveActor
{
    enum Phase { Starting, ServerInit, Collect, Update, ServerStep, Checkpoint, Loop, Draining, Finishing, Done }

    /// <summary>Name of the metric row emitted just before each checkpoint is written (value: its index).</summary>
    public const string CheckpointMarker = CheckpointAssembly.Marker;

    readonly PopulationOptions _o;
    readonly Func<GroupSpec, IAgentGroup> _factory;
    readonly IActorRef _sink;
    readonly TaskCompletionSource<PopulationResult> _done;
    readonly GroupSpec[] _specs;
    readonly SyncRound _round;
    readonly CheckpointAssembly _checkpoints;
    IActorRef[] _groups = Array.Empty<IActorRef>();
    // groups on other nodes
    readonly int[] _hostOf;                      // per group: its host in Placement.Hosts, −1 in this process
    readonly bool[] _hostLost;                   // per host: its node left (or it stopped)
    readonly List<object>?[] _waiting;           // per group: messages for a group that has not introduced itself yet
    int _incarnations;
    readonly PartAssembler _parts = new();       // states from groups on other nodes, in parts
    IActorRef _server = ActorRefs.Nobody;
    Phase _phase = Phase.Starting;
    Action _afterCheckpoint = () => { };
    Exception? _lastChildError;
    bool _cancelled;
    // objective
    float[]? _alpha, _alpha0;
    long _version;
    // per group
    readonly bool[] _ready, _finished;
    int _readyCount;
    // per agent
    readonly long[] _envSteps, _loopRounds;
    readonly int[] _agentFailures;
    readonly string?[] _firstReason;
    // run statistics
    int _failures, _restarts;
    readonly List<string> _reasons = new();

    public static Props Props(PopulationOptions options, Func<GroupSpec, IAgentGroup> factory, IActorRef sink,
                              TaskCompletionSource<PopulationResult> done) =>
        Akka.Actor.Props.Create(() => new PopulationCoordinator(options, factory, sink, done));

    public PopulationCoordinator(PopulationOptions options, Func<GroupSpec, IAgentGroup> factory, IActorRef sink,
                                 TaskCompletionSource<PopulationResult> done)
    {
        _o = options; _factory = factory; _sink = sink; _done = done;
        _specs = options.Partition();
        _round = new SyncRound(options, _specs);
        _checkpoints = new CheckpointAssembly(options, _specs);
        _ready = new bool[_specs.Length]; _finished = new bool[_specs.Length];
        _envSteps = new long[options.AgentCount]; _loopRounds = new long[options.AgentCount];
        _agentFailures = new int[options.AgentCount];
        _firstReason = new string?[options.AgentCount];
        _hostOf = Enumerable.Repeat(-1, _specs.Length).ToArray();
        _hostLost = new bool[options.Placement?.Hosts.Count ?? 0];
        _waiting = new List<object>?[_specs.Length];

        Receive<GroupStarted>(OnGroupStarted);
        Receive<GroupHostFailed>(m => Fail(new InvalidOperationException($"group {m.Group} could not be built on {Sender.Path.Address}: {m.Reason}")));
        Receive<GroupReady>(OnGroupReady);
        Receive<ObjectivePublished>(OnPublished);
        Receive<Collected>(OnCollected);
        Receive<Updated>(OnUpdated);
        Receive<AgentFailed>(m => RecordFailure(m.Agent, m.Reason));   // the group adds where the slot restarts from
        Receive<GroupFailed>(OnGroupFailed);
        Receive<StatesSaved>(OnStatesSaved);
        Receive<ObjectiveServerState>(OnServerState);
        Receive<GroupFinished>(OnGroupFinished);
        Receive<GroupObjective>(m => { _alpha = m.Alpha; Flush(); });
        Receive<Flushed>(OnFlushed);
        Receive<CancelRun>(_ => OnCancel());
        Receive<Terminated>(OnTerminated);
    }

    /// <summary>Groups that fault are restarted (the coordinator counts failures per agent and ends the run past
    /// MaxRestartsPerAgent); anything else stops the child, which fails the run with that exception. Akka's own logging
    /// of these is off: a failure is a metric row.</summary>
    protected override SupervisorStrategy SupervisorStrategy() =>
        new OneForOneStrategy(-1, -1, ex =>
        {
            _lastChildError = ex;
            return ex is GroupFaultException ? Directive.Restart : Directive.Stop;
        }, loggingEnabled: false);

    protected override bool AroundReceive(Receive receive, object message)
    {
        try
        {
            if (message is not MessagePart part) return base.AroundReceive(receive, message);
            var whole = _parts.Add(part, Sender, Context.System);   // states from another node come in parts
            return whole is null || base.AroundReceive(receive, whole);
        }
        catch (Exception e) { Fail(e); return true; }
    }

    protected override void PreStart()
    {
        try { Start(); }
        catch (Exception e) { Fail(e); }
    }

    void Start()
    {
        if (_o.Resume && _o.Checkpoints?.LoadLatest() is { } latest) _checkpoints.Restore(latest.Index, latest.Parts, _round);
        if (_o.HasServer)
        {
            _server = Context.ActorOf(ObjectiveServer.Props(_o.ObjFuncLearningRate), "objective-server");
            Context.Watch(_server);
        }
        _groups = new IActorRef[_specs.Length];
        if (_o.Placement is { } placement)
        {
            foreach (var host in placement.Hosts) Context.Watch(host);
            for (int g = 0; g < _specs.Length; g++) _hostOf[g] = g % placement.Hosts.Count;
        }
        for (int g = 0; g < _specs.Length; g++) Place(g, _hostOf[g], restarted: false);
    }

    /// <summary>Builds group <paramref name="g"/> here (<paramref name="host"/> −1) or on that host of the placement.</summary>
    void Place(int g, int host, bool restarted)
    {
        _hostOf[g] = host;
        if (host < 0)
        {
            string name = _incarnations++ < _specs.Length ? $"group-{g}" : $"group-{g}-{_incarnations}";
            _groups[g] = Context.ActorOf(GroupActor.Props(_specs[g], _o, _factory, _sink, _server, null, restarted), name);
            Context.Watch(_groups[g]);
            foreach (var waiting in _waiting[g] ?? []) _groups[g].Tell(waiting);   // it keeps them until restored
            _waiting[g] = null;
            return;
        }
        _incarnations++;
        _groups[g] = ActorRefs.Nobody;   // until it introduces itself
        _waiting[g] ??= new List<object>();   // what waited for a group lost before it started waits for this one
        var server = _server.Equals(ActorRefs.Nobody) ? null : _server;
        int onHost = _hostOf.Count(h => h == host);
        _o.Placement!.Hosts[host].Tell(new HostGroup(_o.Placement.Blueprint, _o, _specs[g], Self, _sink, server, restarted, onHost));
    }

    void OnGroupStarted(GroupStarted m)
    {
        if (m.Group < 0 || m.Group >= _specs.Length) return;
        // a group built on another node introduces itself: from now on it is reached and watched directly
        bool introduces = _hostOf[m.Group] >= 0 && !Sender.Equals(_groups[m.Group]);
        if (introduces && !_groups[m.Group].Equals(ActorRefs.Nobody)) return;   // a stale incarnation
        LargeMessages.Tell(Sender, new RestoreGroup(_checkpoints.StatesOf(_specs[m.Group])), Self, Context.System);
        if (!introduces) return;
        _groups[m.Group] = Sender;
        Context.Watch(Sender);
        foreach (var waiting in _waiting[m.Group] ?? []) LargeMessages.Tell(Sender, waiting, Self, Context.System);
        _waiting[m.Group] = null;
        if (_phase == Phase.Loop && _o.HasServer) _server.Tell(ServeAsyncMessage());
    }

    /// <summary>A watched actor stopped. Here: a group that stopped (not a fault the coordinator restarts) fails the
    /// run. On another node: its groups are lost (the node left, or the group or its host stopped) and built again.</summary>
    void OnTerminated(Terminated t)
    {
        if (_phase is Phase.Finishing or Phase.Done) return;
        bool remote = t.ActorRef.Path.Address.HasGlobalScope;
        if (!remote || _o.Placement is null)
        {
            Fail(new InvalidOperationException($"{t.ActorRef.Path.Name} stopped: {_lastChildError?.Message ?? "no reason given"}", _lastChildError));
            return;
        }
        var hosts = _o.Placement.Hosts;
        for (int h = 0; h < hosts.Count; h++)
            if (hosts[h].Equals(t.ActorRef) || (t.AddressTerminated && hosts[h].Path.Address.Equals(t.ActorRef.Path.Address)))
                _hostLost[h] = true;
        string reason = t.AddressTerminated
            ? $"its node {t.ActorRef.Path.Address} left the cluster"
            : $"it stopped on {t.ActorRef.Path.Address}";
        for (int g = 0; g < _specs.Length && _phase != Phase.Done; g++)
            if (_hostOf[g] >= 0 && (_groups[g].Equals(t.ActorRef) || _hostLost[_hostOf[g]]))
                GroupLost(g, reason);
    }

    /// <summary>A group on another node is gone: its request in flight fails as a group failure would, and the group
    /// is built again on the next host still there (in this process when none is), restored from the last
    /// checkpointed states.</summary>
    void GroupLost(int g, string reason)
    {
        if (!_groups[g].Equals(ActorRefs.Nobody))
        {
            Context.Unwatch(_groups[g]);
            _parts.Forget(_groups[g]);
        }
        _groups[g] = ActorRefs.Nobody;   // what the schedule sends it from here on waits for its replacement
        _waiting[g] ??= new List<object>();
        long j = _phase switch { Phase.Collect => -1, Phase.Update => _round.J, Phase.Checkpoint => -2, _ => -3 };
        if (_phase == Phase.Loop) _finished[g] = false;   // its agents go back to the checkpoint and run on
        OnGroupFailed(new GroupFailed(g, _round.Round, j, reason, Array.Empty<Metric>()));
        if (_phase == Phase.Done) return;
        var hosts = _o.Placement!.Hosts;
        int next = Enumerable.Range(1, hosts.Count).Select(i => (_hostOf[g] + i) % hosts.Count).FirstOrDefault(h => !_hostLost[h], -1);
        Place(g, next, restarted: _ready[g]);
    }

    ServeAsync ServeAsyncMessage() => new(_o.AgentCount, _o.AsyncServerMaxWait, _groups.Append(Self).ToArray());

    // ── STARTUP AND RESTARTS ──
    void OnGroupReady(GroupReady m)
    {
        RecordEnvSteps(m.Group, m.EnvSteps);
        if (m.Restarted)
        {
            // Sync catches the restarted group up with the α carried by its next request (deterministic order).
            if (_o.Mode != ScheduleMode.Sync && _phase == Phase.Loop && !_finished[m.Group])
            {
                if (_o.HasServer && _alpha is not null) Sender.Tell(new LoadObjective(_alpha, _version));
                Sender.Tell(new StartLoop());
            }
            return;
        }
        if (_ready[m.Group] || _phase is Phase.Finishing or Phase.Done) return;
        _ready[m.Group] = true;
        if (m.Agent0Objective is not null) _alpha0 = m.Agent0Objective;
        if (++_readyCount < _specs.Length) return;
        if (!_o.HasServer) { AfterInit(); return; }
        _phase = Phase.ServerInit;
        _server.Tell(_checkpoints.ResumedServer is { } state ? new ImportObjectiveState(state) : new InitObjective(_alpha0!));
    }

    void AfterInit()
    {
        // official: agent 0's initial α is copied to every agent and the server; a resumed agent keeps its own
        if (_o.HasServer && !_checkpoints.Resumed) Broadcast(new LoadObjective(_alpha!, _version));
        if (_cancelled) { Finish(); return; }
        if (_o.Mode == ScheduleMode.Sync) { StartRound(); return; }
        _phase = Phase.Loop;
        if (_o.HasServer) _server.Tell(ServeAsyncMessage());
        Broadcast(new StartLoop());
    }

    void OnPublished(ObjectivePublished m)
    {
        _alpha = m.Alpha; _version = m.Version;
        switch (_phase)
        {
            case Phase.ServerInit: AfterInit(); break;
            case Phase.ServerStep: NextJ(); break;
            case Phase.Draining: EndLoop(); break;
        }
    }

    // ── SYNC: ROUNDS ──
    void StartRound()
    {
        if (_cancelled || _round.BudgetReached) { Finish(); return; }
        _phase = Phase.Collect;
        Broadcast(_round.StartCollect());
    }

    void OnCollected(Collected c)
    {
        if (_phase != Phase.Collect || c.Round != _round.Round || !_round.Expects(c.Group)) return;
        RecordEnvSteps(c.Group, c.EnvSteps);
        if (_round.Collected(c)) AfterCollect();
    }

    void AfterCollect()
    {
        Emit(_round.Rows());
        _round.EndCollect();
        _sink.Tell(new ProgressReport(_round.GlobalStep));
        if (_round.Length == 0) EndRound(); else SendUpdates();
    }

    void SendUpdates()
    {
        if (_cancelled) { Finish(); return; }
        _phase = Phase.Update;
        Broadcast(_round.StartUpdate(_o.HasServer ? _alpha : null, _version));
    }

    void OnUpdated(Updated u)
    {
        if (_phase != Phase.Update || u.Round != _round.Round || u.J != _round.J || !_round.Expects(u.Group)) return;
        if (_round.Updated(u)) AfterUpdate();
    }

    void AfterUpdate()
    {
        Emit(_round.Rows());
        if (!_round.GradientStep) { NextJ(); return; }
        _phase = Phase.ServerStep;
        _server.Tell(new ApplyGradients(_round.J, _round.Gradients()));
    }

    void NextJ()
    {
        if (_round.NextJ()) SendUpdates(); else EndRound();
    }

    void EndRound()
    {
        _round.EndRound();
        if (_round.IterationEnd && _o.HasServer) Broadcast(new LoadObjective(_alpha!, _version));
        bool stop = _round.BudgetReached || _cancelled;
        bool periodic = _o.CheckpointEvery > 0 && _round.GlobalStep - _checkpoints.LastStep >= _o.CheckpointEvery;
        bool atEnd = stop && WantsFinalCheckpoint && _checkpoints.LastStep != _round.GlobalStep;
        if (!_cancelled && (periodic || atEnd)) Checkpoint(stop ? Finish : StartRound);
        else if (stop) Finish();
        else StartRound();
    }

    // ── FAILURES ──
    void OnGroupFailed(GroupFailed f)
    {
        var agents = _specs[f.Group].Agents;
        var rows = f.Rows.Concat(agents.SelectMany(a => new[]
        {
            new Metric(_envSteps[a], "agent_failure", 1, a),
            new Metric(_envSteps[a], "agent_restart", 1, a),
        })).ToArray();
        foreach (int a in agents) RecordFailure(a, $"{f.Reason}; group {f.Group} rebuilt, agent {_checkpoints.RestorePointOf(a)}");
        if (_phase == Phase.Done) return;
        bool thisRound = f.Round == _round.Round;
        if (_phase == Phase.Collect && thisRound && f.J == -1 && _round.Expects(f.Group))
        {
            if (_round.Failed(f.Group, rows)) AfterCollect();   // no steps
        }
        else if (_phase == Phase.Update && thisRound && f.J == _round.J && _round.Expects(f.Group))
        {
            if (_round.Failed(f.Group, rows)) AfterUpdate();    // no gradients: excluded from this step
        }
        else if (_phase == Phase.Checkpoint && f.J == -2 && _checkpoints.Expects(f.Group))
        {
            Emit(rows);
            if (_checkpoints.SaveFailed(f.Group)) AfterSaves();
        }
        else Emit(rows);
    }

    void RecordFailure(int agent, string reason)
    {
        _failures++;
        _restarts++;
        string line = $"agent {agent}: {reason}";
        _reasons.Add(line);
        _firstReason[agent] ??= reason;
        try { _o.OnAgentFailure?.Invoke(line); } catch { /* a console that fails must not change the run */ }
        if (++_agentFailures[agent] > _o.MaxRestartsPerAgent)
            Fail(new PopulationFailedException(
                $"agent {agent} failed {_agentFailures[agent]} times, more than max_restarts_per_agent ({_o.MaxRestartsPerAgent}); " +
                $"first cause: {_firstReason[agent]}" + (_agentFailures[agent] > 1 ? $"; last: {reason}" : ""),
                _reasons.ToArray()));
    }

    // ── CHECKPOINTS ──
    bool WantsFinalCheckpoint => !_cancelled && _o.CheckpointAtEnd && _o.Checkpoints is not null;

    void Checkpoint(Action then)
    {
        _phase = Phase.Checkpoint;
        _afterCheckpoint = then;
        _checkpoints.BeginSave();
        Broadcast(new SaveStatesRequest(_o.CheckpointIncludesReplay));
    }

    void OnStatesSaved(StatesSaved s)
    {
        RecordEnvSteps(s.Group, s.EnvSteps);
        if (s.Mark >= 0) { OnGroupMark(s); return; }
        if (_phase == Phase.Checkpoint && _checkpoints.Expects(s.Group) && _checkpoints.Saved(s)) AfterSaves();
    }

    void AfterSaves()
    {
        var states = _checkpoints.Gathered();
        if (states is null) { _afterCheckpoint(); return; }   // a group failed while saving: skip this one
        if (_o.HasServer) _server.Tell(new ExportObjectiveState());
        else Write(states, null, _round.GlobalStep);
    }

    void OnGroupMark(StatesSaved s)
    {
        if (!_checkpoints.GroupMark(s, canWrite: _phase == Phase.Loop)) return;
        if (_o.HasServer) { _server.Tell(new ExportObjectiveState()); return; }
        var (states, mark) = _checkpoints.TakeAsyncSnapshot();
        Write(states, null, mark);
    }

    void OnServerState(ObjectiveServerState m)
    {
        if (_checkpoints.AsyncExporting)
        {
            var (states, mark) = _checkpoints.TakeAsyncSnapshot();
            Write(states, m.State, mark);
        }
        else if (_phase == Phase.Checkpoint) Write(_checkpoints.Gathered()!, m.State, _round.GlobalStep);
    }

    void Write(byte[][] agents, byte[]? server, long envStep)
    {
        Emit(_checkpoints.Enqueue(agents, server, envStep, _round));
        Flush();
    }

    void StorePendingCheckpoint()
    {
        var states = _checkpoints.StorePending();
        if (_o.Mode == ScheduleMode.Sync)
            foreach (var spec in _specs) Send(spec.Group, new RestorePoints(spec.Agents.Select(a => states[a]).ToArray()));
        if (_phase == Phase.Checkpoint) _afterCheckpoint();
    }

    // ── ASYNC AND INDEPENDENT ──
    void OnGroupFinished(GroupFinished m)
    {
        RecordEnvSteps(m.Group, m.EnvSteps);
        var agents = _specs[m.Group].Agents;
        for (int k = 0; k < agents.Length; k++) _loopRounds[agents[k]] = m.Rounds[k];
        _finished[m.Group] = true;
        if (_phase != Phase.Loop || _finished.Any(f => !f)) return;
        if (_o.HasServer) { _phase = Phase.Draining; _server.Tell(new DrainObjective()); }
        else EndLoop();
    }

    void EndLoop()
    {
        _round.Set(_loopRounds.Sum(), _round.Target, _envSteps.Min());
        if (WantsFinalCheckpoint) Checkpoint(Finish);
        else Finish();
    }

    void OnCancel()
    {
        _cancelled = true;
        if (_phase == Phase.Loop) Broadcast(new StopLoop());
        else if (_phase is Phase.Starting or Phase.ServerInit) Finish();
    }

    // ── END ──
    void Finish()
    {
        if (_phase is Phase.Finishing or Phase.Done) return;
        _phase = Phase.Finishing;
        if (!_o.HasServer) Send(_specs.First(g => g.Agents.Contains(0)).Group, new ObjectiveRequest());   // α lives in the agents
        else Flush();
    }

    void Flush() => _sink.Tell(new FlushMetrics());

    void OnFlushed(Flushed f)
    {
        if (f.Error is not null && _phase != Phase.Finishing)
        {
            Fail(new InvalidOperationException($"the metric callback failed: {f.Error.Message}", f.Error));
            return;
        }
        if (_checkpoints.HasPending) { StorePendingCheckpoint(); return; }
        if (_phase != Phase.Finishing) return;
        _phase = Phase.Done;
        if (f.Error is not null) _done.TrySetException(new InvalidOperationException($"the metric callback failed: {f.Error.Message}", f.Error));
        else if (_cancelled) _done.TrySetCanceled();
        else _done.TrySetResult(new PopulationResult(_alpha ?? Array.Empty<float>(), _version, _round.Round, _round.GlobalStep,
                                                      (long[])_envSteps.Clone(), _failures, _restarts, _checkpoints.Written,
                                                      _reasons.ToArray()));
    }

    void Fail(Exception e)
    {
        if (_phase == Phase.Done) return;
        _phase = Phase.Done;
        _done.TrySetException(e);
        Context.Stop(Self);
    }

    // ── HELPERS ──
    void Broadcast(object message) { for (int g = 0; g < _groups.Length; g++) Send(g, message); }

    /// <summary>Sends to group g, or keeps the message for it until a group built on another node introduced itself.</summary>
    void Send(int g, object message)
    {
        if (_waiting[g] is { } waiting) waiting.Add(message);
        else LargeMessages.Tell(_groups[g], message, Self, Context.System);
    }

    /// <summary>Groups on other nodes are not children: they are stopped with the coordinator (their host also stops
    /// them when it sees the coordinator gone).</summary>
    protected override void PostStop()
    {
        for (int g = 0; g < _groups.Length; g++)
            if (_hostOf[g] >= 0 && !_groups[g].Equals(ActorRefs.Nobody)) _groups[g].Tell(PoisonPill.Instance);
    }

    void RecordEnvSteps(int group, long[] envSteps)
    {
        var agents = _specs[group].Agents;
        for (int k = 0; k < agents.Length; k++) _envSteps[agents[k]] = envSteps[k];
    }

    void Emit(params Metric[] rows) { if (rows.Length > 0) _sink.Tell(new MetricRows(rows)); }
}
