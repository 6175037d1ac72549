using MetaGenRL.Core.Objective;
using MetaGenRL.Core.Engine;

namespace MetaGenRL.Actors;

// The population protocol. Payloads are arrays (float[] α and gradients, byte[] states, Metric[] rows),
// never tensors; an array is not mutated after it is sent. Per-slot arrays follow the group's slot order
// (slot k is agent GroupSpec.Agents[k]).

// ── GROUP LIFECYCLE (group ⇄ coordinator) ──

/// <summary>A group incarnation started and asks its parent for the states to start from.</summary>
/// <param name="Restarted">true after a supervised restart (the group threw), false on first start.</param>
public sealed record GroupStarted(int Group, bool Restarted);

/// <summary>Parent → group: build the group and restore each slot from <paramref name="States"/> (null entry: as built).</summary>
public sealed record RestoreGroup(byte[]?[] States);

/// <summary>Group → parent: the group exists; agent 0's α when the group holds agent 0 (else null), and every slot's
/// env-step count.</summary>
public sealed record GroupReady(int Group, bool Restarted, float[]? Agent0Objective, long[] EnvSteps);

/// <summary>Parent → group: the slots' states of the checkpoint just stored; a failed slot is restored from here.</summary>
public sealed record RestorePoints(byte[]?[] States);

/// <summary>Replace every slot's α now (initial copy of agent 0's α, end of a training iteration).</summary>
public sealed record LoadObjective(float[] Alpha, long Version);

/// <summary>Group → parent: one slot failed and was restored at once (the group itself is fine).</summary>
public sealed record AgentFailed(int Agent, string Reason);

/// <summary>Group → parent: a group method threw; the group restarts after sending this. <paramref name="J"/> is −1 for a
/// collect, −2 for a save, −3 outside a request. <paramref name="Rows"/> end with every slot's failure and restart rows.</summary>
public sealed record GroupFailed(int Group, long Round, long J, string Reason, Metric[] Rows);

// ── SYNC SCHEDULE (coordinator → group → coordinator) ──

/// <summary>Every slot collects whole episodes until at least <paramref name="Target"/> new steps, at most <paramref name="Limit"/>.</summary>
public sealed record CollectRequest(long Round, long Target, long Limit);

/// <summary>Reply to <see cref="CollectRequest"/>, per slot.</summary>
public sealed record Collected(int Group, long Round, long[] Steps, int?[] ShortestEpisode, long[] EnvSteps, Metric[] Rows);

/// <summary>Update iteration <paramref name="J"/> for every slot; when <paramref name="ObjectiveGradient"/>, then load
/// <paramref name="Alpha"/> (if its version is new to the group) and compute ∇α per slot.</summary>
public sealed record UpdateRequest(long Round, long J, bool ObjectiveGradient, float[]? Alpha, long AlphaVersion);

/// <summary>Reply to <see cref="UpdateRequest"/>; per slot ∇α, null when none was asked for, computed or usable.</summary>
public sealed record Updated(int Group, long Round, long J, float[]?[] Gradients, Metric[] Rows);

/// <summary>Save every slot's state.</summary>
public sealed record SaveStatesRequest(bool IncludeReplay);

/// <summary>Reply to <see cref="SaveStatesRequest"/> (<paramref name="Mark"/> −1), and (async) a group's own checkpoint
/// at <paramref name="Mark"/>.</summary>
public sealed record StatesSaved(int Group, long Mark, byte[][] States, long[] EnvSteps);

// ── ASYNC AND INDEPENDENT SCHEDULES ──

/// <summary>Coordinator → group: run the collect/update loop on your own until every slot reached the budget.</summary>
public sealed record StartLoop;

/// <summary>Group → itself: one unit of work (a collect, or one update iteration).</summary>
public sealed record LoopTick;

/// <summary>Coordinator → group: stop the loop after the current unit (cancellation).</summary>
public sealed record StopLoop;

/// <summary>Group → coordinator: every slot reached the budget (or the loop was stopped).</summary>
/// <param name="Rounds">per slot, the collects it took part in.</param>
public sealed record GroupFinished(int Group, long[] EnvSteps, long[] Rounds);

/// <summary>Group → server (async): one clipped ∇α of one agent, computed at α version <paramref name="AlphaVersion"/>.</summary>
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

/// <summary>One agent's env steps (async, independent); the sink reports the minimum over agents.</summary>
public sealed record AgentProgress(int Agent, long EnvSteps);

/// <summary>Everything sent before this was delivered; replies <see cref="Flushed"/>.</summary>
public sealed record FlushMetrics;

/// <summary>Reply to <see cref="FlushMetrics"/>; <paramref name="Error"/> is the first exception the callback threw.</summary>
public sealed record Flushed(Exception? Error);

// ── CALLER ──

/// <summary>Stop at the next phase boundary; the run ends as cancelled.</summary>
public sealed record CancelRun;

/// <summary>Coordinator → the group holding agent 0: report agent 0's α (where no server holds it).</summary>
public sealed record ObjectiveRequest;

/// <summary>Reply to <see cref="ObjectiveRequest"/>.</summary>
public sealed record GroupObjective(int Group, float[] Alpha);
