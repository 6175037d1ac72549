using Akka.Actor;
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

        Receive<GroupStarted>(m => Sender.Tell(new RestoreGroup(_checkpoints.StatesOf(_specs[m.Group]))));
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
        Receive<Terminated>(t => { if (_phase is not (Phase.Finishing or Phase.Done)) Fail(new InvalidOperationException($"{t.ActorRef.Path.Name} stopped: {_lastChildError?.Message ?? "no reason given"}", _lastChildError)); });
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
        try { return base.AroundReceive(receive, message); }
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
        _groups = _specs.Select(spec =>
        {
            var g = Context.ActorOf(GroupActor.Props(spec, _o, _factory, _sink, _server), $"group-{spec.Group}");
            Context.Watch(g);
            return g;
        }).ToArray();
    }

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
        if (_o.HasServer) _server.Tell(new ServeAsync(_o.AgentCount, _o.AsyncServerMaxWait, _groups.Append(Self).ToArray()));
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
            foreach (var spec in _specs) _groups[spec.Group].Tell(new RestorePoints(spec.Agents.Select(a => states[a]).ToArray()));
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
        if (!_o.HasServer) _groups[_specs.First(g => g.Agents.Contains(0)).Group].Tell(new ObjectiveRequest());   // α lives in the agents
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
    void Broadcast(object message) { foreach (var g in _groups) g.Tell(message); }

    void RecordEnvSteps(int group, long[] envSteps)
    {
        var agents = _specs[group].Agents;
        for (int k = 0; k < agents.Length; k++) _envSteps[agents[k]] = envSteps[k];
    }

    void Emit(params Metric[] rows) { if (rows.Length > 0) _sink.Tell(new MetricRows(rows)); }
}
