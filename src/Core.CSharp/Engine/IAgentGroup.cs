using MetaGenRL.Core.Engine;

namespace MetaGenRL.Core.Engine;

/// <summary>What one agent (slot) of a group did in a collect.</summary>
/// <param name="Steps">env steps collected (whole episodes, unless the slot's limit stopped it mid-episode)</param>
/// <param name="ShortestEpisode">the shortest episode finished in this collect, if any</param>
/// <param name="Failure">why the slot failed (its env threw); null when it did not. A failed slot must be restored
/// (<see cref="IAgentGroup.LoadState"/> or <see cref="IAgentGroup.ResetAgent"/>) before it is used again.</param>
/// <param name="Updates">update iterations the collect calls for; null: one per step collected (the TD3 family).
/// An on-policy learner asks for its epochs × minibatches (async and independent schedules only).</param>
public readonly record struct SlotCollect(long Steps, int? ShortestEpisode, string? Failure = null, long? Updates = null);

/// <summary>What one agent (slot) of a group produced in an objective-gradient step.</summary>
/// <param name="Gradient">∇α clipped to the global norm clip_gradient, flattened in α's layout; null when the slot was
/// inactive, computes none, or failed</param>
/// <param name="Failure">why the slot failed (a non-finite gradient or diagnostic); null when it did not</param>
public readonly record struct SlotGradient(float[]? Gradient, string? Failure = null);

/// <summary>
/// K agents that share observation and action sizes, computed as one batch: their policies, twin critics and targets
/// are stacked tensors [K, …], each agent (slot k) keeps its own env, replay, generators, counters and seed. Pure
/// computation, no scheduling: an actor decides when each step happens. Every method must be called from the
/// thread that created the group (TorchSharp dispose scopes and no_grad are per thread). Values cross this boundary
/// as arrays, never tensors.
/// <para>Failures: an exception thrown by a method means the whole group is unusable (the caller rebuilds it and
/// restores every slot); a failure reported for one slot (env exception, non-finite loss or gradient) leaves the
/// other slots and α untouched, and the caller restores that slot from its last checkpointed state.</para>
/// </summary>
public interface IAgentGroup : IDisposable
{
    /// <summary>The population index of each slot (slot k is agent <c>Agents[k]</c>); stamped on metric rows.</summary>
    IReadOnlyList<int> Agents { get; }
    /// <summary>K, the number of slots.</summary>
    int Size { get; }
    /// <summary>The gym id of the group's env (all slots run the same env id, each with its own instance and seed).</summary>
    string EnvId { get; }
    /// <summary>Env steps each slot has taken (a copy).</summary>
    long[] EnvSteps { get; }

    /// <summary>Per slot k: collects whole episodes until at least <paramref name="targets"/>[k] new steps were
    /// taken, but never more than <paramref name="limits"/>[k] steps (the step budget: the collect may then stop
    /// mid-episode; that partial episode is never sampled). A limit of 0 skips the slot. Reports
    /// <c>episode_return</c>, <c>episode_length</c> and <c>episode_action_extremity</c> (mean |a| in the agent's box, 1 = saturated) per finished episode.</summary>
    SlotCollect[] Collect(long[] targets, long[] limits, Action<Metric> onMetric);

    /// <summary>Update iteration <paramref name="j"/> for the slots with <paramref name="active"/>[k] (the others are
    /// left exactly as they are: no sampling, no optimiser step): a critic step always; a policy step through the
    /// objective and a Polyak target update when j % policy_update_delay == 0. Reports losses now and then.
    /// Returns per slot the failure (a non-finite reported loss) or null.</summary>
    string?[] Update(long j, bool[] active, Action<Metric> onMetric);

    /// <summary>True when this group computes meta-gradients (meta-training a learned objective).</summary>
    bool ComputesObjectiveGradients { get; }

    /// <summary>Per active slot, its own clipped ∇α; reports the objective diagnostics (objective_loss,
    /// policy_value_gain, objective_critic_correlation) now and then.</summary>
    SlotGradient[] ObjectiveGradients(bool[] active, Action<Metric> onMetric);

    /// <summary>Number of objective parameters (0 without a learned objective).</summary>
    int ObjectiveSize { get; }
    /// <summary>Replaces every slot's copy of α (length <see cref="ObjectiveSize"/>).</summary>
    void LoadObjective(float[] alpha);
    /// <summary>Slot k's copy of α, flattened (empty without a learned objective).</summary>
    float[] ObjectiveParameters(int slot);

    /// <summary>Everything slot k needs to continue bit-for-bit: networks, targets, optimiser moments and step
    /// counts, generators, counters, env RNG, its α; the replay buffer when <paramref name="includeReplay"/>.
    /// A slot stopped mid-episode by its limit abandons that episode first.</summary>
    byte[] SaveState(int slot, bool includeReplay);
    /// <summary>Restores what <see cref="SaveState"/> wrote into slot k (the other slots are untouched).</summary>
    void LoadState(int slot, byte[] state);
    /// <summary>Puts slot k back to its initial state (fresh networks, optimisers, generators, env generator, empty
    /// replay), for an agent that fails before any checkpoint. Its copy of α is kept.</summary>
    void ResetAgent(int slot);
}
