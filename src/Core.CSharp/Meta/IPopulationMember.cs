using MetaGenRL.Core.Training;

namespace MetaGenRL.Core.Meta;

/// <summary>What one round's collection produced.</summary>
/// <param name="Steps">env steps collected this round (whole episodes)</param>
/// <param name="ShortestEpisode">the shortest episode finished this round, if any</param>
public readonly record struct CollectResult(long Steps, int? ShortestEpisode);

/// <summary>
/// One population member's computation (env, replay, policy, critics, its copy of the objective α and its
/// generators), driven by an actor. Pure computation, no scheduling: the caller decides when each step
/// happens (the official Algorithm 1 schedule). Every method must be called from one thread.
/// Values cross this boundary as arrays, never tensors.
/// </summary>
public interface IPopulationMember : IDisposable
{
    /// <summary>Position in the population (0-based); stamped on its metric rows.</summary>
    int Index { get; }
    /// <summary>The gym id of this member's env.</summary>
    string EnvId { get; }
    /// <summary>Env steps taken so far.</summary>
    long EnvSteps { get; }

    /// <summary>Collects whole episodes until at least <paramref name="targetSteps"/> new steps were taken;
    /// reports <c>episode_return</c>/<c>episode_length</c>.</summary>
    CollectResult Collect(long targetSteps, Action<Metric> onMetric);

    /// <summary>Update iteration <paramref name="j"/>: a critic step always; a policy step through the objective
    /// and a target update when j % policy_update_delay == 0. Reports losses now and then.</summary>
    void Update(long j, Action<Metric> onMetric);

    /// <summary>The per-member clipped meta-gradient ∇α (flattened, length <see cref="ObjectiveSize"/>), or
    /// null when this member computes none (frozen objective, fixed algorithm). Reports the objective
    /// diagnostics (objective_loss, policy_value_gain, objective_critic_correlation).</summary>
    float[]? ObjectiveGradient(Action<Metric> onMetric);

    /// <summary>Number of objective parameters (0 without a learned objective).</summary>
    int ObjectiveSize { get; }
    /// <summary>Replaces this member's copy of α (length <see cref="ObjectiveSize"/>).</summary>
    void LoadObjective(float[] alpha);
    /// <summary>This member's copy of α, flattened.</summary>
    float[] ObjectiveParameters();

    /// <summary>Everything needed to continue bit-for-bit: networks, targets, optimiser moments, generators,
    /// counters, env RNG, α; the replay buffer when <paramref name="includeReplay"/>.</summary>
    byte[] SaveState(bool includeReplay);
    /// <summary>Restores what <see cref="SaveState"/> wrote.</summary>
    void LoadState(byte[] state);
}
