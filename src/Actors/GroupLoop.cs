using MetaGenRL.Core.Engine;

namespace MetaGenRL.Actors;

/// <summary>
/// The schedule one group follows on its own (async and independent modes): per group round every slot k that has
/// budget left collects whole episodes until at least target_k new steps (target_k starts at 1, then is slot k's own
/// shortest episode of its previous collect), at most limit_k = timesteps_total − envSteps_k; then the group runs
/// j = 0 … max_k(L_k)−1 with slot k active while j &lt; L_k (L_k: the steps slot k collected, or the update
/// iterations its collect asked for, see <see cref="SlotCollect.Updates"/>). So slot k sees exactly
/// the collects and updates it would see alone: an agent's numbers do not depend on the other agents of its group.
/// A slot with no budget left is done; the group is done when all its slots are. Plain state, no actor.
/// </summary>
public sealed class GroupLoop
{
    readonly PopulationOptions _o;
    readonly long[] _target, _length, _rounds;
    long _maxLength;

    public GroupLoop(int size, PopulationOptions options)
    {
        _o = options;
        _target = Enumerable.Repeat(1L, size).ToArray();
        _length = new long[size];
        _rounds = new long[size];
    }

    /// <summary>True when the next unit of work is a collect (a group round boundary).</summary>
    public bool CollectNext { get; private set; } = true;
    /// <summary>The update iteration the next update unit runs.</summary>
    public long J { get; private set; }
    /// <summary>Per slot, the collects it took part in.</summary>
    public long[] Rounds => (long[])_rounds.Clone();

    /// <summary>Targets and limits of the next collect, or null when every slot has reached the budget.</summary>
    public (long[] Targets, long[] Limits)? NextCollect(long[] envSteps)
    {
        var limits = envSteps.Select(s => s >= _o.TimestepsTotal ? 0 : _o.StepsLeft(s)).ToArray();
        if (limits.All(l => l == 0)) return null;
        return ((long[])_target.Clone(), limits);
    }

    /// <summary>Takes in a collect's results; failed slots (<paramref name="failed"/>) sit out this round's updates.</summary>
    public void Collected(SlotCollect[] results, long[] limits, bool[] failed)
    {
        for (int k = 0; k < results.Length; k++)
        {
            if (limits[k] > 0) _rounds[k]++;
            _length[k] = failed[k] ? 0 : results[k].Updates ?? results[k].Steps;
            if (!failed[k] && results[k].ShortestEpisode is int shortest) _target[k] = shortest;
        }
        _maxLength = _length.Max();
        J = 0;
        CollectNext = _maxLength == 0;
    }

    /// <summary>Slots that take part in update iteration <see cref="J"/>.</summary>
    public bool[] Active() => _length.Select(l => J < l).ToArray();

    /// <summary>A slot that failed (and was restored) sits out the rest of this round.</summary>
    public void SlotFailed(int slot) => _length[slot] = 0;

    /// <summary>After an update unit: the next j, or a collect when the round is over.</summary>
    public void Advance()
    {
        if (++J >= _maxLength) CollectNext = true;
    }
}
