using Akka.Actor;
using MetaGenRL.Core.Engine;

namespace MetaGenRL.Actors;

/// <summary>
/// The single writer: every metric row and progress report of a population reaches the caller through this actor,
/// one at a time, in the order it received them. A callback that throws is remembered and reported at the flush
/// (the run then fails); later rows are dropped.
/// </summary>
public sealed class MetricSink : ReceiveActor
{
    readonly Action<Metric> _onMetric;
    readonly IProgress<long>? _progress;
    readonly long[] _agentSteps;
    Exception? _error;

    public static Props Props(Action<Metric> onMetric, IProgress<long>? progress, int agentCount) =>
        Akka.Actor.Props.Create(() => new MetricSink(onMetric, progress, agentCount));

    public MetricSink(Action<Metric> onMetric, IProgress<long>? progress, int agentCount)
    {
        _onMetric = onMetric; _progress = progress;
        _agentSteps = Enumerable.Repeat(-1L, agentCount).ToArray();
        Receive<MetricRows>(OnRows);
        Receive<ProgressReport>(p => Report(p.EnvSteps));
        Receive<AgentProgress>(p =>
        {
            _agentSteps[p.Agent] = Math.Max(_agentSteps[p.Agent], p.EnvSteps);
            long min = _agentSteps.Min();
            if (min >= 0) Report(min);
        });
        Receive<FlushMetrics>(_ => Sender.Tell(new Flushed(_error)));
    }

    void OnRows(MetricRows m)
    {
        if (_error is not null) return;
        try { foreach (var row in m.Rows) _onMetric(row); }
        catch (Exception e) { _error = e; }
    }

    void Report(long steps)
    {
        if (_progress is null || _error is not null) return;
        try { _progress.Report(steps); }
        catch (Exception e) { _error = e; }
    }
}
