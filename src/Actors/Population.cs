using Akka.Actor;
using Akka.Configuration;
using MetaGenRL.Core.Engine;

namespace MetaGenRL.Actors;

/// <summary>
/// Runs a MetaGenRL population (agent groups + ObjectiveServer + coordinator + metric sink), in its own ActorSystem or in
/// a shared one (an experiment running several trials at once).
/// </summary>
public static class Population
{
    /// <summary>The dispatcher every group actor runs on: one dedicated OS thread per group.</summary>
    public const string GroupDispatcher = "metagenrl-group-dispatcher";

    /// <summary>The ActorSystem settings a population needs (quiet logging, the pinned group dispatcher).</summary>
    public static readonly Config SystemConfig = ConfigurationFactory.ParseString($$"""
        akka {
          loglevel = WARNING
          stdout-loglevel = WARNING
          log-dead-letters = off
          log-dead-letters-during-shutdown = off
          log-config-on-start = off
        }
        {{GroupDispatcher}} {
          type = PinnedDispatcher
        }
        """);

    /// <summary>Runs to the step budget and returns how it ended; blocks the calling thread.</summary>
    /// <param name="options">population settings (validated here).</param>
    /// <param name="makeGroup">creates a group for its spec (slot k is agent spec.Agents[k]); called on the group's own
    /// thread, again after the group failed.</param>
    /// <param name="onMetric">every metric row, called from one thread at a time (the sink).</param>
    /// <param name="progress">env steps (sync: the global step; otherwise the slowest agent's steps); by default never
    /// above the budget.</param>
    /// <param name="ct">cancellation: the run stops at the next phase boundary and throws
    /// <see cref="OperationCanceledException"/> (no final checkpoint).</param>
    public static PopulationResult Run(PopulationOptions options, Func<GroupSpec, IAgentGroup> makeGroup,
                                       Action<Metric> onMetric, IProgress<long>? progress = null,
                                       CancellationToken ct = default) =>
        RunAsync(options, makeGroup, onMetric, progress, ct).GetAwaiter().GetResult();

    /// <summary>The Task form of <see cref="Run"/>.</summary>
    public static async Task<PopulationResult> RunAsync(PopulationOptions options, Func<GroupSpec, IAgentGroup> makeGroup,
                                                        Action<Metric> onMetric, IProgress<long>? progress = null,
                                                        CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        ct.ThrowIfCancellationRequested();
        var system = ActorSystem.Create($"population-{Guid.NewGuid():N}"[..19], SystemConfig);
        try { return await RunAsync(system, options, makeGroup, onMetric, progress, ct).ConfigureAwait(false); }
        finally { await system.Terminate().ConfigureAwait(false); }
    }

    /// <summary>Runs the population inside an existing ActorSystem (created with <see cref="SystemConfig"/>), beside
    /// other populations; its actors are stopped before the task completes.</summary>
    public static async Task<PopulationResult> RunAsync(ActorSystem system, PopulationOptions options,
                                                        Func<GroupSpec, IAgentGroup> makeGroup, Action<Metric> onMetric,
                                                        IProgress<long>? progress = null, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(system);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(makeGroup);
        ArgumentNullException.ThrowIfNull(onMetric);
        options.Validate();
        ct.ThrowIfCancellationRequested();
        var id = Guid.NewGuid().ToString("N")[..8];
        var done = new TaskCompletionSource<PopulationResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        var sink = system.ActorOf(MetricSink.Props(onMetric, progress, options.AgentCount), $"metrics-{id}");
        var coordinator = system.ActorOf(PopulationCoordinator.Props(options, makeGroup, sink, done), $"population-{id}");
        try
        {
            using var registration = ct.Register(() => coordinator.Tell(new CancelRun()));
            try { return await done.Task.ConfigureAwait(false); }
            catch (TaskCanceledException) { throw new OperationCanceledException("the population run was cancelled", ct); }
        }
        finally
        {
            // Stopping the coordinator stops its groups (each disposed on its own thread).
            await StopQuietly(coordinator).ConfigureAwait(false);
            await StopQuietly(sink).ConfigureAwait(false);
        }
    }

    private static async Task StopQuietly(IActorRef actor)
    {
        try { await actor.GracefulStop(TimeSpan.FromSeconds(30)).ConfigureAwait(false); }
        catch (TaskCanceledException) { }
        catch (AskTimeoutException) { }
    }
}
