using MetaGenRL.Core.Objective;
using Akka.Actor;

namespace MetaGenRL.Actors;

/// <summary>
/// Holds the population's α and its Adam state (<see cref="ObjectiveAdam"/>), averages the agents' gradients and
/// publishes each new α with a version number (= Adam steps so far).
/// Sync: one <see cref="ApplyGradients"/> per schedule step, gradients in agent-index order.
/// Async (<see cref="ServeAsync"/>): gradients are buffered as they arrive; a step is taken when
/// GradientsPerStep have arrived or MaxWait after the first buffered one, whichever comes first.
/// </summary>
public sealed class ObjectiveServer : ReceiveActor, IWithTimers
{
    readonly double _learningRate;
    ObjectiveAdam? _adam;
    readonly List<float[]> _buffer = new();
    int _perStep;
    TimeSpan _maxWait;
    IActorRef[] _subscribers = Array.Empty<IActorRef>();
    const string FlushTimer = "flush";

    public ITimerScheduler Timers { get; set; } = null!;

    public static Props Props(double learningRate) => Akka.Actor.Props.Create(() => new ObjectiveServer(learningRate));

    public ObjectiveServer(double learningRate)
    {
        _learningRate = learningRate;
        Receive<InitObjective>(m => { _adam = new ObjectiveAdam(m.Alpha, _learningRate); Sender.Tell(Published(0)); });
        Receive<ImportObjectiveState>(m => { _adam = ObjectiveAdam.Import(m.State); Sender.Tell(Published(0)); });
        Receive<ExportObjectiveState>(_ => Sender.Tell(new ObjectiveServerState(Adam.Export())));
        Receive<ApplyGradients>(m => Sender.Tell(Published(Adam.Step(m.Gradients))));
        Receive<ServeAsync>(m => { _perStep = m.GradientsPerStep; _maxWait = m.MaxWait; _subscribers = m.Subscribers; });
        Receive<SubmitGradient>(OnGradient);
        Receive<FlushTick>(_ => StepBuffered());
        Receive<DrainObjective>(_ =>
        {
            int used = StepBuffered();
            Sender.Tell(Published(used));
        });
    }

    ObjectiveAdam Adam => _adam ?? throw new InvalidOperationException("the objective server has no α yet");

    ObjectivePublished Published(int used) => new(Adam.Steps, Adam.Alpha, used);

    void OnGradient(SubmitGradient m)
    {
        _buffer.Add(m.Gradient);
        if (_buffer.Count >= _perStep) StepBuffered();
        else if (_buffer.Count == 1) Timers.StartSingleTimer(FlushTimer, FlushTick.Instance, _maxWait);
    }

    /// <summary>Averages and applies the buffered gradients (arrival order), publishes α; returns how many were used.</summary>
    int StepBuffered()
    {
        Timers.Cancel(FlushTimer);
        if (_buffer.Count == 0) return 0;
        int used = Adam.Step(_buffer.ToArray());
        _buffer.Clear();
        var published = Published(used);
        foreach (var s in _subscribers) s.Tell(published);
        return used;
    }

    sealed class FlushTick { public static readonly FlushTick Instance = new(); }
}
