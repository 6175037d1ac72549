using Akka.Actor;

namespace MetaGenRL.Actors;

/// <summary>How the agents are scheduled (see <see cref="PopulationCoordinator"/> and <see cref="GroupLoop"/>).</summary>
public enum ScheduleMode
{
    /// <summary>Meta-training, the official schedule in lock step: deterministic for a seed.</summary>
    Sync,
    /// <summary>Meta-training; each group loops on its own, the server steps on whatever gradients have arrived.</summary>
    Async,
    /// <summary>Training, meta-testing and baselines: each agent loops on its own schedule, no objective is trained
    /// (no server, no gradients); an agent's numbers do not depend on the other agents of its group.</summary>
    Independent,
}

/// <summary>One agent group: its index and the population indices of its slots (slot k is agent <c>Agents[k]</c>).</summary>
public sealed record GroupSpec(int Group, int[] Agents);

/// <summary>Where a population's groups run when not in the coordinator's process: group g on
/// <c>Hosts[g mod Hosts.Count]</c>, each a <see cref="Cluster.GroupHostActor"/> on a cluster node, which builds the group
/// from <paramref name="Blueprint"/> (the pipeline's description of the run: config, algorithm, seeds). A group whose
/// node is lost moves to the next host still there (in host order), and to the coordinator's process when none is
/// left, restored from the last checkpoint like a group that failed.</summary>
public sealed record GroupPlacement(IReadOnlyList<IActorRef> Hosts, string Blueprint)
{
    /// <summary>Throws <see cref="ArgumentException"/> when there is no host or no blueprint.</summary>
    public void Validate()
    {
        if (Hosts is not { Count: > 0 }) throw new ArgumentException("group placement: no group hosts");
        if (string.IsNullOrEmpty(Blueprint)) throw new ArgumentException("group placement: no blueprint");
    }
}

/// <summary>Settings of one population run; defaults are the official code's <c>base()</c> config.</summary>
public sealed record PopulationOptions
{
    /// <summary>agent_count: population size.</summary>
    public int AgentCount { get; init; } = 8;
    /// <summary>Agents per group, consecutive indices (the last group may be smaller); 0: all agents in one group.
    /// Ignored when <see cref="Groups"/> is given.</summary>
    public int GroupSize { get; init; }
    /// <summary>An explicit partition of 0 … AgentCount−1 into groups (agents on different envs must be in different
    /// groups); null: by <see cref="GroupSize"/>.</summary>
    public int[][]? Groups { get; init; }
    /// <summary>timesteps_total: per-agent env-step budget. By default a run stops exactly there: collects are limited
    /// to the steps left (sync: to timesteps_total − global step; otherwise per agent), and sync checks the budget
    /// after every round. See <see cref="BudgetCheckPerIteration"/> for the official check.</summary>
    public long TimestepsTotal { get; init; } = 700_000;
    /// <summary>The official code's budget check: collects are not limited, and sync compares the global step with
    /// the budget only at the end of a training iteration (every <see cref="Steps"/> rounds), so a run may overshoot
    /// by up to an iteration. Async and independent agents then stop at the first round boundary at or past it.</summary>
    public bool BudgetCheckPerIteration { get; init; }
    /// <summary>Sync, async or independent schedule.</summary>
    public ScheduleMode Mode { get; init; } = ScheduleMode.Sync;
    /// <summary>steps: collect/update rounds per training iteration; after each iteration every group loads the latest α (sync).</summary>
    public int Steps { get; init; } = 10;
    /// <summary>policy_update_delay: the group applies it inside Update(j) from its own config; validated here so a
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
    /// <summary>Agent states in checkpoints include the replay buffer (needed for a bit-exact resume).</summary>
    public bool CheckpointIncludesReplay { get; init; } = true;
    /// <summary>Where checkpoints go and come from; null: no checkpoints (a failed agent then restarts fresh).</summary>
    public ICheckpointSink? Checkpoints { get; init; }
    /// <summary>Start from <see cref="Checkpoints"/>' latest checkpoint (agents, server, counters) if there is one.</summary>
    public bool Resume { get; init; }
    /// <summary>torch intra-op threads set on each group's own thread before its group is created; 0: leave as is
    /// (groups on other nodes: that node's cores divided by the groups it hosts).</summary>
    public int TorchThreadsPerGroup { get; init; }
    /// <summary>Failures allowed per agent (each is followed by a restore or a group restart) before the run fails.</summary>
    public int MaxRestartsPerAgent { get; init; } = 10;
    /// <summary>Called (on the coordinator's thread) with "agent i: cause; where it restarts from" at each agent
    /// failure, as it happens, for a console or a log; null: none.</summary>
    public Action<string>? OnAgentFailure { get; init; }
    /// <summary>Groups on other nodes (a population spanning a cluster); null: every group in this process.</summary>
    public GroupPlacement? Placement { get; init; }
    /// <summary>Async: the server steps when this long has passed since the first gradient it holds, even with fewer than AgentCount.</summary>
    public TimeSpan AsyncServerMaxWait { get; init; } = TimeSpan.FromMilliseconds(200);

    /// <summary>These settings with the groups placed on other nodes.</summary>
    public PopulationOptions PlacedOn(GroupPlacement placement) => this with { Placement = placement };

    /// <summary>These settings with <paramref name="threads"/> torch threads per group (0: leave as is; with a
    /// placement, each node divides its cores over the groups it hosts).</summary>
    public PopulationOptions WithTorchThreads(int threads) => this with { TorchThreadsPerGroup = threads };

    /// <summary>Throws <see cref="ArgumentException"/> naming the first invalid setting.</summary>
    public void Validate()
    {
        if (AgentCount < 1) throw new ArgumentException($"agent_count must be ≥ 1, got {AgentCount}");
        if (GroupSize < 0) throw new ArgumentException($"group size must be ≥ 0 (0: one group), got {GroupSize}");
        if (TimestepsTotal < 1) throw new ArgumentException($"timesteps_total must be ≥ 1, got {TimestepsTotal}");
        if (Steps < 1) throw new ArgumentException($"steps must be ≥ 1, got {Steps}");
        if (PolicyUpdateDelay < 1) throw new ArgumentException($"policy_update_delay must be ≥ 1, got {PolicyUpdateDelay}");
        if (ObjFuncUpdateDelay < 1 && ObjFuncUpdateDelay != -1)
            throw new ArgumentException($"obj_func_update_delay must be ≥ 1 or −1 (frozen), got {ObjFuncUpdateDelay}");
        if (!(ObjFuncLearningRate > 0)) throw new ArgumentException($"obj_func_learning_rate must be > 0, got {ObjFuncLearningRate}");
        if (CheckpointEvery < 0) throw new ArgumentException($"checkpoint_every must be ≥ 0, got {CheckpointEvery}");
        if (TorchThreadsPerGroup < 0) throw new ArgumentException($"torch threads per group must be ≥ 0, got {TorchThreadsPerGroup}");
        if (MaxRestartsPerAgent < 0) throw new ArgumentException($"max restarts per agent must be ≥ 0, got {MaxRestartsPerAgent}");
        if (Resume && Checkpoints is null) throw new ArgumentException("resume needs a checkpoint sink");
        Placement?.Validate();
        Partition();
    }

    /// <summary>The groups: <see cref="Groups"/> checked to cover 0 … AgentCount−1 exactly once, or consecutive
    /// chunks of <see cref="GroupSize"/>.</summary>
    public GroupSpec[] Partition()
    {
        if (Groups is null)
        {
            int size = GroupSize == 0 ? AgentCount : GroupSize;
            return Enumerable.Range(0, (AgentCount + size - 1) / size)
                .Select(g => new GroupSpec(g, Enumerable.Range(g * size, Math.Min(size, AgentCount - g * size)).ToArray()))
                .ToArray();
        }
        var seen = new bool[AgentCount];
        for (int g = 0; g < Groups.Length; g++)
        {
            if (Groups[g] is not { Length: > 0 }) throw new ArgumentException($"groups: group {g} is empty");
            foreach (int a in Groups[g])
            {
                if (a < 0 || a >= AgentCount) throw new ArgumentException($"groups: agent {a} in group {g} is not in 0 … {AgentCount - 1}");
                if (seen[a]) throw new ArgumentException($"groups: agent {a} is in more than one group");
                seen[a] = true;
            }
        }
        int missing = Array.IndexOf(seen, false);
        if (missing >= 0) throw new ArgumentException($"groups: agent {missing} is in no group");
        return Groups.Select((agents, g) => new GroupSpec(g, (int[])agents.Clone())).ToArray();
    }

    /// <summary>True when the population trains an objective (a server exists): sync or async with agent_count > 1.
    /// With obj_func_update_delay −1 it only keeps agent 0's initial α for everyone.</summary>
    public bool HasServer => Mode != ScheduleMode.Independent && AgentCount > 1;

    /// <summary>True when iteration j computes objective gradients (a server, and j % obj_func_update_delay == 0).</summary>
    public bool ObjectiveGradientAt(long j) => HasServer && ObjFuncUpdateDelay > 0 && j % ObjFuncUpdateDelay == 0;

    /// <summary>The most env steps an agent at <paramref name="envSteps"/> may still collect (sync: the global step).</summary>
    public long StepsLeft(long envSteps) => BudgetCheckPerIteration ? long.MaxValue : Math.Max(0, TimestepsTotal - envSteps);
}

/// <summary>Where population checkpoints are written and found. Parts: <c>agent/{i}</c> (agent i's state, population-wide i),
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
/// <param name="Objective">the server's final α (agent 0's α where there is no server).</param>
/// <param name="ObjectiveVersion">Adam steps the server has taken in total (including before a resume).</param>
/// <param name="Rounds">sync: rounds completed (including before a resume); otherwise the sum of every agent's rounds.</param>
/// <param name="GlobalStep">sync: the global step; otherwise the smallest agent env-step count.</param>
/// <param name="AgentEnvSteps">each agent's env steps at the end.</param>
/// <param name="Failures">agent failures in this run (a group that throws counts one per agent).</param>
/// <param name="Restarts">agent restarts in this run (a slot restored, or every agent of a restarted group).</param>
/// <param name="CheckpointsWritten">checkpoints written in this run.</param>
/// <param name="FailureReasons">"agent i: reason" for each failure, in the order they were reported (for the run's log).</param>
public sealed record PopulationResult(
    float[] Objective, long ObjectiveVersion, long Rounds, long GlobalStep, long[] AgentEnvSteps,
    int Failures, int Restarts, int CheckpointsWritten, string[] FailureReasons);
