using Akka.Actor;
using MetaGenRL.Core.Meta;
using MetaGenRL.Core.Training;

namespace MetaGenRL.Actors;

/// <summary>
/// Parent and supervisor of the agents and the <see cref="ObjectiveServer"/>; runs the schedule.
///
/// Sync (the official Algorithm 1, in lock step): a round is a collect by every agent (whole episodes until ≥ target
/// steps; target starts at 1, then the max over agents of each agent's shortest episode of the previous round;
/// the global step advances by max_interaction_length L), then for j = 0 … L−1 every agent does Update(j) and, when
/// j % obj_func_update_delay == 0 and agent_count > 1, loads the α it was sent (the server's latest) and computes ∇α;
/// once all N replied, the server averages the gradients in agent-index order and takes one Adam step. So the
/// policy step at j uses the α loaded at the previous gradient computation (stale by one server step). After every
/// `steps` rounds (a training iteration) all agents load the latest α and the budget is checked. Metrics are
/// forwarded per phase in agent-index order, so a run is a deterministic function of its inputs.
///
/// Async: see <see cref="AgentActor"/> and <see cref="ObjectiveServer"/>; the coordinator only starts the loops,
/// restarts failed agents, gathers the agents' own checkpoints and waits for all agents to finish.
///
/// Failures: a failed request counts as a reply without a gradient (excluded from the mean); the agent is restarted
/// (<see cref="SupervisorStrategy"/>) and restored from the last checkpointed state of its member, or fresh.
/// </summary>
public sealed class PopulationCoordinator : ReceiveActor
{
    enum Phase { Starting, ServerInit, Collect, Update, ServerStep, Checkpoint, Async, Draining, Finishing, Done }

    readonly PopulationOptions _o;
    readonly Func<int, IPopulationMember> _factory;
    readonly IActorRef _sink;
    readonly TaskCompletionSource<PopulationResult> _done;
    readonly int _n;
    IActorRef[] _agents = Array.Empty<IActorRef>();
    IActorRef _server = ActorRefs.Nobody;
    Phase _phase = Phase.Starting;
    Exception? _lastChildError;

    // checkpointed counters
    long _round, _target = 1, _globalStep, _lastCheckpointStep, _nextCheckpointIndex, _nextAsyncMark;
    // objective
    float[]? _alpha;
    long _version;
    // per agent
    readonly byte[]?[] _agentState;
    readonly long[] _envSteps, _asyncRounds, _marks;
    readonly bool[] _ready, _finished;
    int _readyCount;
    float[]? _alpha0;
    byte[]? _serverState;
    bool _resumed;
    // the phase in flight
    int _pending;
    readonly bool[] _replied;
    readonly Metric[]?[] _rows;
    readonly float[]?[] _grads;
    readonly long[] _steps;
    readonly int?[] _shortest;
    readonly byte[]?[] _saving;
    long _length, _j, _nextTarget;
    bool _gradStep, _asyncExporting;
    byte[]?[]? _asyncSnapshot;
    Action _afterCheckpoint = () => { };
    readonly Queue<(int Index, long EnvStep, Dictionary<string, byte[]> Parts, byte[]?[] Agents)> _pendingWrites = new();
    // run statistics
    int _failures, _restarts, _checkpoints;
    bool _cancelled;

    public static Props Props(PopulationOptions options, Func<int, IPopulationMember> factory, IActorRef sink,
                              TaskCompletionSource<PopulationResult> done) =>
        Akka.Actor.Props.Create(() => new PopulationCoordinator(options, factory, sink, done));

    public PopulationCoordinator(PopulationOptions options, Func<int, IPopulationMember> factory, IActorRef sink,
                                 TaskCompletionSource<PopulationResult> done)
    {
        _o = options; _factory = factory; _sink = sink; _done = done; _n = options.AgentCount;
        _agentState = new byte[]?[_n]; _envSteps = new long[_n]; _asyncRounds = new long[_n];
        _marks = Enumerable.Repeat(-1L, _n).ToArray();
        _ready = new bool[_n]; _finished = new bool[_n]; _replied = new bool[_n]; _rows = new Metric[]?[_n];
        _grads = new float[]?[_n]; _steps = new long[_n]; _shortest = new int?[_n]; _saving = new byte[]?[_n];

        Receive<AgentStarted>(OnAgentStarted);
        Receive<AgentReady>(OnAgentReady);
        Receive<ObjectivePublished>(OnPublished);
        Receive<Collected>(OnCollected);
        Receive<Updated>(OnUpdated);
        Receive<AgentFailed>(OnFailed);
        Receive<StateSaved>(OnStateSaved);
        Receive<ObjectiveServerState>(OnServerState);
        Receive<AgentFinished>(OnAgentFinished);
        Receive<MemberObjective>(m => { _alpha = m.Alpha; Flush(); });
        Receive<Flushed>(OnFlushed);
        Receive<CancelRun>(_ => OnCancel());
        Receive<Terminated>(t => { if (_phase is not (Phase.Finishing or Phase.Done)) Fail(new InvalidOperationException($"{t.ActorRef.Path.Name} stopped: {_lastChildError?.Message ?? "no reason given"}", _lastChildError)); });
    }

    /// <summary>Agents that fault are restarted (at most MaxRestartsPerAgent times in the run); anything else stops the
    /// child, which fails the run with that exception. Akka's own logging of these is off: a failure is a metric row.</summary>
    protected override SupervisorStrategy SupervisorStrategy() =>
        new OneForOneStrategy(_o.MaxRestartsPerAgent, -1, ex =>
        {
            _lastChildError = ex;
            return ex is AgentFaultException ? Directive.Restart : Directive.Stop;
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
        if (_o.Resume && _o.Checkpoints?.LoadLatest() is { } latest) Restore(latest.Index, latest.Parts);
        if (_n > 1)
        {
            _server = Context.ActorOf(ObjectiveServer.Props(_o.ObjFuncLearningRate), "objective-server");
            Context.Watch(_server);
        }
        _agents = Enumerable.Range(0, _n).Select(i =>
        {
            var settings = new AgentSettings(i, _n, _o.TimestepsTotal, _o.ObjFuncUpdateDelay, _o.TorchThreadsPerAgent,
                                             _o.Mode == ScheduleMode.Async ? _o.CheckpointEvery : 0, _o.CheckpointIncludesReplay);
            var a = Context.ActorOf(AgentActor.Props(settings, _factory, _sink, _server), $"agent-{i}");
            Context.Watch(a);
            return a;
        }).ToArray();
    }

    // ── STARTUP AND RESTARTS ──
    void OnAgentStarted(AgentStarted m)
    {
        if (m.Restarted)
        {
            _restarts++;
            Emit(new Metric(_envSteps[m.Agent], "agent_restart", 1, m.Agent));
        }
        Sender.Tell(new RestoreMember(_agentState[m.Agent]));
    }

    void OnAgentReady(AgentReady m)
    {
        _envSteps[m.Agent] = m.EnvSteps;
        if (m.Restarted)
        {
            // Sync catches the restarted agent up with the α carried by its next request (deterministic order).
            if (_o.Mode == ScheduleMode.Async && _phase == Phase.Async && !_finished[m.Agent])
            {
                if (_n > 1 && _alpha is not null) Sender.Tell(new LoadObjective(_alpha, _version));
                Sender.Tell(new StartAsync());
            }
            return;
        }
        if (_ready[m.Agent]) return;
        _ready[m.Agent] = true;
        if (m.Agent == 0) _alpha0 = m.Objective;
        if (++_readyCount < _n) return;
        if (_n == 1) { _alpha = _alpha0; AfterInit(); return; }
        _phase = Phase.ServerInit;
        _server.Tell(_serverState is not null ? new ImportObjectiveState(_serverState) : new InitObjective(_alpha0!));
    }

    void AfterInit()
    {
        // official: agent 0's initial α is copied to every agent and the server; a resumed member keeps its own
        if (_n > 1 && !_resumed) Broadcast(new LoadObjective(_alpha!, _version));
        if (_o.Mode == ScheduleMode.Sync) { StartRound(); return; }
        _phase = Phase.Async;
        if (_n > 1) _server.Tell(new ServeAsync(_n, _o.AsyncServerMaxWait, _agents.Append(Self).ToArray()));
        Broadcast(new StartAsync());
    }

    void OnPublished(ObjectivePublished m)
    {
        _alpha = m.Alpha; _version = m.Version;
        switch (_phase)
        {
            case Phase.ServerInit: AfterInit(); break;
            case Phase.ServerStep: NextJ(); break;
            case Phase.Draining: EndAsync(); break;
        }
    }

    // ── SYNC: ROUNDS ──
    void StartRound()
    {
        if (_cancelled || StopAt(_round)) { Finish(); return; }
        _phase = Phase.Collect;
        BeginReplies();
        Broadcast(new CollectRequest(_round, _target));
    }

    bool StopAt(long round) => round > 0 && round % _o.Steps == 0 && _globalStep >= _o.TimestepsTotal;

    void OnCollected(Collected c)
    {
        if (_phase != Phase.Collect || c.Round != _round || _replied[c.Agent]) return;
        _steps[c.Agent] = c.Steps; _shortest[c.Agent] = c.ShortestEpisode; _envSteps[c.Agent] = c.EnvSteps;
        Reply(c.Agent, c.Metrics);
    }

    void AfterCollect()
    {
        _length = _steps.Max();
        var shortest = _shortest.Where(s => s.HasValue).Select(s => (long)s!.Value).ToArray();
        _nextTarget = shortest.Length > 0 ? shortest.Max() : _target;
        _globalStep += _length;
        _sink.Tell(new ProgressReport(_globalStep));
        _j = 0;
        if (_length == 0) EndRound(); else SendUpdates();
    }

    void SendUpdates()
    {
        if (_cancelled) { Finish(); return; }
        _phase = Phase.Update;
        BeginReplies();
        _gradStep = _o.ObjectiveGradientAt(_j);
        Broadcast(new UpdateRequest(_round, _j, _gradStep, _n > 1 ? _alpha : null, _version));
    }

    void OnUpdated(Updated u)
    {
        if (_phase != Phase.Update || u.Round != _round || u.J != _j || _replied[u.Agent]) return;
        _grads[u.Agent] = u.Gradient;
        Reply(u.Agent, u.Metrics);
    }

    void AfterUpdate()
    {
        if (!_gradStep) { NextJ(); return; }
        _phase = Phase.ServerStep;
        _server.Tell(new ApplyGradients(_j, (float[]?[])_grads.Clone()));
    }

    void NextJ()
    {
        if (++_j < _length) SendUpdates(); else EndRound();
    }

    void EndRound()
    {
        _round++;
        _target = _nextTarget;
        bool iterationEnd = _round % _o.Steps == 0;
        if (iterationEnd && _n > 1) Broadcast(new LoadObjective(_alpha!, _version));
        bool stop = StopAt(_round) || _cancelled;
        bool periodic = _o.CheckpointEvery > 0 && _globalStep - _lastCheckpointStep >= _o.CheckpointEvery;
        bool atEnd = stop && !_cancelled && _o.CheckpointAtEnd && _o.Checkpoints is not null && _lastCheckpointStep != _globalStep;
        if (!_cancelled && (periodic || atEnd)) Checkpoint(stop ? Finish : StartRound);
        else if (stop) Finish();
        else StartRound();
    }

    // ── REPLIES AND FAILURES ──
    void BeginReplies()
    {
        _pending = _n;
        Array.Clear(_replied); Array.Clear(_rows); Array.Clear(_grads); Array.Clear(_steps); Array.Clear(_shortest);
    }

    void Reply(int agent, Metric[] rows)
    {
        _replied[agent] = true;
        _rows[agent] = rows;
        if (--_pending > 0) return;
        Emit(_rows.SelectMany(r => r ?? Array.Empty<Metric>()).ToArray());   // agent-index order
        switch (_phase)
        {
            case Phase.Collect: AfterCollect(); break;
            case Phase.Update: AfterUpdate(); break;
            case Phase.Checkpoint: AfterSaves(); break;
        }
    }

    void OnFailed(AgentFailed f)
    {
        _failures++;
        var rows = f.Metrics.Append(new Metric(_envSteps[f.Agent], "agent_failure", 1, f.Agent)).ToArray();
        bool answersPhase = !_replied[f.Agent] && f.Round == _round && _phase switch
        {
            Phase.Collect => f.J == -1,
            Phase.Update => f.J == _j,
            Phase.Checkpoint => f.J == -2,
            _ => false,
        };
        if (answersPhase) Reply(f.Agent, rows);   // no gradient, no state: excluded from this step
        else Emit(rows);
    }

    // ── CHECKPOINTS ──
    void Checkpoint(Action then)
    {
        _phase = Phase.Checkpoint;
        _afterCheckpoint = then;
        BeginReplies();
        Array.Clear(_saving);
        Broadcast(new SaveStateRequest(_o.CheckpointIncludesReplay));
    }

    void OnStateSaved(StateSaved s)
    {
        if (s.Mark >= 0) { OnAgentCheckpoint(s); return; }
        if (_phase != Phase.Checkpoint || _replied[s.Agent]) return;
        _saving[s.Agent] = s.State;
        _envSteps[s.Agent] = s.EnvSteps;
        Reply(s.Agent, Array.Empty<Metric>());
    }

    void AfterSaves()
    {
        if (_saving.Any(s => s is null)) { _afterCheckpoint(); return; }   // an agent failed while saving: skip this one
        if (_n > 1) _server.Tell(new ExportObjectiveState());
        else WriteCheckpoint((byte[][])_saving.Clone(), null, _globalStep);
    }

    void OnServerState(ObjectiveServerState m)
    {
        if (_asyncExporting)
        {
            _asyncExporting = false;
            long mark = _marks.Min();
            WriteCheckpoint(_asyncSnapshot!, m.State, mark);
            _nextAsyncMark = mark + _o.CheckpointEvery;
            return;
        }
        if (_phase == Phase.Checkpoint) WriteCheckpoint((byte[][])_saving.Clone(), m.State, _globalStep);
    }

    void WriteCheckpoint(byte[]?[] agents, byte[]? server, long envStep)
    {
        var parts = new Dictionary<string, byte[]>();
        for (int i = 0; i < _n; i++) parts[$"agent/{i}"] = agents[i]!;
        if (server is not null) parts["server"] = server;
        _lastCheckpointStep = envStep;
        long index = _nextCheckpointIndex++;
        parts["coordinator"] = Counters();
        // The marker row goes into the metric stream first: rows before it are the ones this checkpoint covers,
        // so a resumed run can keep exactly those. The checkpoint is stored only once the sink has delivered
        // everything up to the marker (FlushMetrics → Flushed), so a stored checkpoint always has its rows.
        Emit(new Metric(envStep, CheckpointMarker, index));
        _pendingWrites.Enqueue(((int)index, envStep, parts, agents));
        Flush();
    }

    /// <summary>Stores the oldest checkpoint waiting for its rows to be delivered (the sink answers in order).</summary>
    void StorePendingCheckpoint()
    {
        var (index, envStep, parts, agents) = _pendingWrites.Dequeue();
        _o.Checkpoints?.Write(index, envStep, parts);
        Array.Copy(agents, _agentState, _n);
        _checkpoints++;
        if (_phase == Phase.Checkpoint) _afterCheckpoint();
    }

    // ── ASYNC ──
    void OnAgentCheckpoint(StateSaved s)
    {
        _agentState[s.Agent] = s.State;      // a restart restores from here
        _marks[s.Agent] = Math.Max(_marks[s.Agent], s.Mark);
        if (_phase != Phase.Async || _asyncExporting || _marks.Any(m => m < Math.Max(_nextAsyncMark, 1))) return;
        _asyncSnapshot = (byte[]?[])_agentState.Clone();
        if (_n > 1) { _asyncExporting = true; _server.Tell(new ExportObjectiveState()); return; }
        long mark = _marks.Min();
        WriteCheckpoint(_asyncSnapshot, null, mark);
        _nextAsyncMark = mark + _o.CheckpointEvery;
    }

    void OnAgentFinished(AgentFinished m)
    {
        _envSteps[m.Agent] = m.EnvSteps;
        _asyncRounds[m.Agent] = m.Rounds;
        _finished[m.Agent] = true;
        if (_phase != Phase.Async || _finished.Any(f => !f)) return;
        if (_n > 1) { _phase = Phase.Draining; _server.Tell(new DrainObjective()); }
        else EndAsync();
    }

    void EndAsync()
    {
        _globalStep = _envSteps.Min();
        _round = _asyncRounds.Sum();
        if (!_cancelled && _o.CheckpointAtEnd && _o.Checkpoints is not null) Checkpoint(Finish);
        else Finish();
    }

    void OnCancel()
    {
        _cancelled = true;
        if (_phase == Phase.Async) Broadcast(new StopAsync());
        else if (_phase is Phase.Starting or Phase.ServerInit) Finish();
    }

    // ── END ──
    void Finish()
    {
        if (_phase is Phase.Finishing or Phase.Done) return;
        _phase = Phase.Finishing;
        if (_n == 1) _agents[0].Tell(new ObjectiveRequest());   // its α lives in the member
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
        if (_pendingWrites.Count > 0) { StorePendingCheckpoint(); return; }
        if (_phase != Phase.Finishing) return;
        _phase = Phase.Done;
        if (f.Error is not null) _done.TrySetException(new InvalidOperationException($"the metric callback failed: {f.Error.Message}", f.Error));
        else if (_cancelled) _done.TrySetCanceled();
        else _done.TrySetResult(new PopulationResult(_alpha ?? Array.Empty<float>(), _version, _round, _globalStep,
                                                      (long[])_envSteps.Clone(), _failures, _restarts, _checkpoints));
    }

    void Fail(Exception e)
    {
        if (_phase == Phase.Done) return;
        _phase = Phase.Done;
        _done.TrySetException(e);
        Context.Stop(Self);
    }

    // ── HELPERS ──
    void Broadcast(object message) { foreach (var a in _agents) a.Tell(message); }

    /// <summary>Name of the metric row emitted just before each checkpoint is written (value: its index).</summary>
    public const string CheckpointMarker = "checkpoint";

    void Emit(params Metric[] rows) { if (rows.Length > 0) _sink.Tell(new MetricRows(rows)); }

    const int CounterFormat = 1;

    byte[] Counters()
    {
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms))
        {
            w.Write(CounterFormat); w.Write(_n); w.Write((int)_o.Mode);
            w.Write(_round); w.Write(_target); w.Write(_globalStep); w.Write(_lastCheckpointStep);
            w.Write(_nextCheckpointIndex); w.Write(_nextAsyncMark);
        }
        return ms.ToArray();
    }

    void Restore(int index, IReadOnlyDictionary<string, byte[]> parts)
    {
        if (!parts.TryGetValue("coordinator", out var counters)) throw new InvalidDataException($"checkpoint {index} has no coordinator part");
        using (var r = new BinaryReader(new MemoryStream(counters)))
        {
            int format = r.ReadInt32();
            if (format != CounterFormat) throw new InvalidDataException($"checkpoint {index}: coordinator format {format}, expected {CounterFormat}");
            int n = r.ReadInt32();
            if (n != _n) throw new InvalidDataException($"checkpoint {index} holds {n} agents, this population has {_n}");
            r.ReadInt32();   // the mode it was written in; either mode can continue from it
            _round = r.ReadInt64(); _target = r.ReadInt64(); _globalStep = r.ReadInt64(); _lastCheckpointStep = r.ReadInt64();
            _nextCheckpointIndex = r.ReadInt64(); _nextAsyncMark = r.ReadInt64();
        }
        _nextCheckpointIndex = Math.Max(_nextCheckpointIndex, index + 1L);
        for (int i = 0; i < _n; i++)
            _agentState[i] = parts.TryGetValue($"agent/{i}", out var s) ? s : throw new InvalidDataException($"checkpoint {index} has no agent/{i}");
        if (_n > 1) _serverState = parts.TryGetValue("server", out var sv) ? sv : throw new InvalidDataException($"checkpoint {index} has no server part");
        _resumed = true;
    }
}
