using MetaGenRL.Core.Training;

namespace MetaGenRL.Actors;

// The population protocol. Payloads are arrays (float[] α and gradients, byte[] states, Metric[] rows),
// never tensors; an array is not mutated after it is sent.

// ── AGENT LIFECYCLE (agent ⇄ coordinator) ──

/// <summary>An agent incarnation started and asks its parent for the state to start from.</summary>
/// <param name="Restarted">true after a supervised restart (a failure), false on first start.</param>
public sealed record AgentStarted(int Agent, bool Restarted);

/// <summary>Parent → agent: build the member and restore it from <paramref name="State"/> (null: fresh from the factory).</summary>
public sealed record RestoreMember(byte[]? State);

/// <summary>Agent → parent: the member exists; its current α and env-step count.</summary>
public sealed record AgentReady(int Agent, bool Restarted, float[] Objective, long EnvSteps);

/// <summary>Replace the member's α now (initial copy of agent 0's α, end of a training iteration, after a restart).</summary>
public sealed record LoadObjective(float[] Alpha, long Version);

// ── SYNC SCHEDULE (coordinator → agent → coordinator) ──

/// <summary>Collect whole episodes until at least <paramref name="TargetSteps"/> new steps were taken.</summary>
public sealed record CollectRequest(long Round, long TargetSteps);

/// <summary>Reply to <see cref="CollectRequest"/>.</summary>
public sealed record Collected(int Agent, long Round, long Steps, int? ShortestEpisode, long EnvSteps, Metric[] Metrics);

/// <summary>Update iteration <paramref name="J"/>; when <paramref name="ObjectiveGradient"/>, then load
/// <paramref name="Alpha"/> (if its version is new to the agent) and compute ∇α.</summary>
public sealed record UpdateRequest(long Round, long J, bool ObjectiveGradient, float[]? Alpha, long AlphaVersion);

/// <summary>Reply to <see cref="UpdateRequest"/>; <paramref name="Gradient"/> null when none was asked for or the member has none.</summary>
public sealed record Updated(int Agent, long Round, long J, float[]? Gradient, Metric[] Metrics);

/// <summary>A request failed (exception, or NaN/Inf in a loss or the gradient). The agent restarts after sending it.
/// <paramref name="J"/> is −1 for a collect. Its gradient, if any, is excluded.</summary>
public sealed record AgentFailed(int Agent, long Round, long J, string Reason, Metric[] Metrics);

/// <summary>Save the member's state.</summary>
public sealed record SaveStateRequest(bool IncludeReplay);

/// <summary>Reply to <see cref="SaveStateRequest"/>, and (async mode) an agent's own checkpoint at <paramref name="Mark"/>.</summary>
public sealed record StateSaved(int Agent, long Mark, byte[] State, long EnvSteps);

// ── ASYNC MODE ──

/// <summary>Coordinator → agent: run the collect/update loop on your own until the step budget is reached.</summary>
public sealed record StartAsync;

/// <summary>Agent → itself: one unit of work (a collect, or one update iteration).</summary>
public sealed record AsyncTick;

/// <summary>Coordinator → agent: stop the async loop after the current unit (cancellation).</summary>
public sealed record StopAsync;

/// <summary>Agent → coordinator: the agent reached the budget (or was stopped).</summary>
public sealed record AgentFinished(int Agent, long EnvSteps, long Rounds);

/// <summary>Agent → server (async): one clipped ∇α, computed at α version <paramref name="AlphaVersion"/>.</summary>
public sealed record SubmitGradient(int Agent, float[] Gradient, long AlphaVersion);

// ── OBJECTIVE SERVER ──

/// <summary>Set α (agent 0's initial α); replies <see cref="ObjectivePublished"/> with version 0.</summary>
public sealed record InitObjective(float[] Alpha);

/// <summary>Sync: average these gradients (null entries are excluded) and apply one Adam step if any remain.</summary>
public sealed record ApplyGradients(long Step, float[]?[] Gradients);

/// <summary>The server's α after a step (or unchanged when no gradient was usable; then <paramref name="Used"/> is 0).</summary>
public sealed record ObjectivePublished(long Version, float[] Alpha, int Used);

/// <summary>Async: step after <paramref name="GradientsPerStep"/> gradients or <paramref name="MaxWait"/> after the first
/// buffered one; publish every new α to <paramref name="Subscribers"/>.</summary>
public sealed record ServeAsync(int GradientsPerStep, TimeSpan MaxWait, Akka.Actor.IActorRef[] Subscribers);

/// <summary>Async end: apply what is buffered (if anything) and reply the final <see cref="ObjectivePublished"/>.</summary>
public sealed record DrainObjective;

/// <summary>Export α, Adam moments and step count; replies <see cref="ObjectiveServerState"/>.</summary>
public sealed record ExportObjectiveState;

/// <summary>Import what <see cref="ExportObjectiveState"/> produced; replies <see cref="ObjectivePublished"/>.</summary>
public sealed record ImportObjectiveState(byte[] State);

/// <summary>The server's state as bytes (see <see cref="ObjectiveAdam.Export"/>).</summary>
public sealed record ObjectiveServerState(byte[] State);

// ── METRIC SINK ──

/// <summary>Rows for the caller, in the order they should be written.</summary>
public sealed record MetricRows(Metric[] Rows);

/// <summary>Population progress in env steps (sync: the global step).</summary>
public sealed record ProgressReport(long EnvSteps);

/// <summary>One agent's env steps (async); the sink reports the minimum over agents.</summary>
public sealed record AgentProgress(int Agent, long EnvSteps);

/// <summary>Everything sent before this was delivered; replies <see cref="Flushed"/>.</summary>
public sealed record FlushMetrics;

/// <summary>Reply to <see cref="FlushMetrics"/>; <paramref name="Error"/> is the first exception the callback threw.</summary>
public sealed record Flushed(Exception? Error);

// ── CALLER ──

/// <summary>Stop at the next phase boundary; the run ends as cancelled.</summary>
public sealed record CancelRun;

/// <summary>Coordinator → agent: report the member's α (agent_count 1, where no server holds it).</summary>
public sealed record ObjectiveRequest;

/// <summary>Reply to <see cref="ObjectiveRequest"/>.</summary>
public sealed record MemberObjective(int Agent, float[] Alpha);
