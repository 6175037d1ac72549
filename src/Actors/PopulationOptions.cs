namespace MetaGenRL.Actors;

/// <summary>How the agents are scheduled (see <see cref="PopulationCoordinator"/>).</summary>
public enum ScheduleMode
{
    /// <summary>The official schedule in lock step: deterministic for a seed.</summary>
    Sync,
    /// <summary>Agents loop on their own; the server steps on whatever gradients have arrived.</summary>
    Async,
}

/// <summary>Settings of one population run; defaults are the official code's <c>base()</c> config.</summary>
public sealed record PopulationOptions
{
    /// <summary>agent_count: population size.</summary>
    public int AgentCount { get; init; } = 8;
    /// <summary>timesteps_total: per-agent env-step budget. Sync: compared with the global step (sum of each round's
    /// max_interaction_length) at the end of each training iteration. Async: each agent stops at a round boundary
    /// once its own env steps reach it.</summary>
    public long TimestepsTotal { get; init; } = 700_000;
    /// <summary>Sync or async schedule.</summary>
    public ScheduleMode Mode { get; init; } = ScheduleMode.Sync;
    /// <summary>steps: collect/update rounds per training iteration; after each iteration every agent loads the latest α (sync).</summary>
    public int Steps { get; init; } = 10;
    /// <summary>policy_update_delay: the member applies it inside Update(j) from its own config; validated here so a
    /// population config states it, not used by the schedule.</summary>
    public int PolicyUpdateDelay { get; init; } = 2;
    /// <summary>obj_func_update_delay: an objective gradient at every j with j % delay == 0; −1 freezes α (no gradients).</summary>
    public int ObjFuncUpdateDelay { get; init; } = 2;
    /// <summary>obj_func_learning_rate: the server's Adam step size.</summary>
    public double ObjFuncLearningRate { get; init; } = 1e-3;
    /// <summary>Write a checkpoint at the first round boundary at least this many env steps after the previous one; 0: never periodically.</summary>
    public long CheckpointEvery { get; init; }
    /// <summary>checkpoint_at_end: also write one when the run finishes (needs <see cref="Checkpoints"/>).</summary>
    public bool CheckpointAtEnd { get; init; } = true;
    /// <summary>Member states in checkpoints include the replay buffer (needed for a bit-exact resume).</summary>
    public bool CheckpointIncludesReplay { get; init; } = true;
    /// <summary>Where checkpoints go and come from; null: no checkpoints (a failed agent then restarts fresh).</summary>
    public ICheckpointSink? Checkpoints { get; init; }
    /// <summary>Start from <see cref="Checkpoints"/>' latest checkpoint (members, server, counters) if there is one.</summary>
    public bool Resume { get; init; }
    /// <summary>torch intra-op threads set on each agent's own thread before its member is created; 0: leave as is.</summary>
    public int TorchThreadsPerAgent { get; init; }
    /// <summary>Supervised restarts allowed per agent before the run fails.</summary>
    public int MaxRestartsPerAgent { get; init; } = 10;
    /// <summary>Async: the server steps when this long has passed since the first gradient it holds, even with fewer than AgentCount.</summary>
    public TimeSpan AsyncServerMaxWait { get; init; } = TimeSpan.FromMilliseconds(200);

    /// <summary>Throws <see cref="ArgumentException"/> naming the first invalid setting.</summary>
    public void Validate()
    {
        if (AgentCount < 1) throw new ArgumentException($"agent_count must be ≥ 1, got {AgentCount}");
        if (TimestepsTotal < 1) throw new ArgumentException($"timesteps_total must be ≥ 1, got {TimestepsTotal}");
        if (Steps < 1) throw new ArgumentException($"steps must be ≥ 1, got {Steps}");
        if (PolicyUpdateDelay < 1) throw new ArgumentException($"policy_update_delay must be ≥ 1, got {PolicyUpdateDelay}");
        if (ObjFuncUpdateDelay < 1 && ObjFuncUpdateDelay != -1)
            throw new ArgumentException($"obj_func_update_delay must be ≥ 1 or −1 (frozen), got {ObjFuncUpdateDelay}");
        if (!(ObjFuncLearningRate > 0)) throw new ArgumentException($"obj_func_learning_rate must be > 0, got {ObjFuncLearningRate}");
        if (CheckpointEvery < 0) throw new ArgumentException($"checkpoint_every must be ≥ 0, got {CheckpointEvery}");
        if (TorchThreadsPerAgent < 0) throw new ArgumentException($"torch threads per agent must be ≥ 0, got {TorchThreadsPerAgent}");
        if (MaxRestartsPerAgent < 0) throw new ArgumentException($"max restarts per agent must be ≥ 0, got {MaxRestartsPerAgent}");
        if (Resume && Checkpoints is null) throw new ArgumentException("resume needs a checkpoint sink");
    }

    /// <summary>True when iteration j computes objective gradients (agent_count > 1 and j % obj_func_update_delay == 0).</summary>
    public bool ObjectiveGradientAt(long j) => AgentCount > 1 && ObjFuncUpdateDelay > 0 && j % ObjFuncUpdateDelay == 0;
}

/// <summary>Where population checkpoints are written and found. Parts: <c>agent/{i}</c> (member state),
/// <c>server</c> (α and Adam state, when agent_count > 1), <c>coordinator</c> (round, target, global step, …).</summary>
public interface ICheckpointSink
{
    /// <summary>Stores checkpoint number <paramref name="index"/> (0, 1, …) taken at <paramref name="envStep"/>.</summary>
    void Write(int index, long envStep, IReadOnlyDictionary<string, byte[]> parts);
    /// <summary>The latest checkpoint, or null when there is none.</summary>
    (int Index, IReadOnlyDictionary<string, byte[]> Parts)? LoadLatest();
}

/// <summary>A checkpoint sink in memory (tests, and keeping the last state for restarts without disk).</summary>
public sealed class InMemoryCheckpointSink : ICheckpointSink
{
    readonly object _gate = new();
    readonly List<(int Index, long EnvStep, IReadOnlyDictionary<string, byte[]> Parts)> _all = new();

    /// <summary>Every checkpoint written, oldest first.</summary>
    public IReadOnlyList<(int Index, long EnvStep, IReadOnlyDictionary<string, byte[]> Parts)> All
    { get { lock (_gate) return _all.ToArray(); } }

    public void Write(int index, long envStep, IReadOnlyDictionary<string, byte[]> parts)
    {
        lock (_gate) _all.Add((index, envStep, new Dictionary<string, byte[]>(parts)));
    }

    public (int Index, IReadOnlyDictionary<string, byte[]> Parts)? LoadLatest()
    {
        lock (_gate) return _all.Count == 0 ? null : (_all[^1].Index, _all[^1].Parts);
    }
}

/// <summary>What a population run ended with.</summary>
/// <param name="Objective">the server's final α (agent 0's α when agent_count is 1).</param>
/// <param name="ObjectiveVersion">Adam steps the server has taken in total (including before a resume).</param>
/// <param name="Rounds">sync: rounds completed (including before a resume); async: the sum of every agent's rounds.</param>
/// <param name="GlobalStep">sync: the global step; async: the smallest agent env-step count.</param>
/// <param name="AgentEnvSteps">each agent's env steps at the end.</param>
/// <param name="Failures">agent failures in this run.</param>
/// <param name="Restarts">supervised agent restarts in this run.</param>
/// <param name="CheckpointsWritten">checkpoints written in this run.</param>
public sealed record PopulationResult(
    float[] Objective, long ObjectiveVersion, long Rounds, long GlobalStep, long[] AgentEnvSteps,
    int Failures, int Restarts, int CheckpointsWritten);
