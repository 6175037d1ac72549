using MetaGenRL.Core.Engine;

namespace MetaGenRL.Actors;

/// <summary>
/// The state of the sync schedule, in lock step over all groups: a round is a collect by every slot (whole episodes
/// until ≥ <see cref="Target"/> steps, at most the steps left in the budget; the target starts at 1, then is the max
/// over all agents of each agent's shortest episode of the previous round); the global step advances by
/// <see cref="Length"/> L = the max over all agents of the steps collected; then update iterations j = 0 … L−1.
/// Also gathers the replies of the phase in flight (one per group) and hands their rows over in agent-index order,
/// so a run is a deterministic function of its inputs. Plain state, no actor.
/// </summary>
public sealed class SyncRound
{
    readonly PopulationOptions _o;
    readonly GroupSpec[] _groups;
    readonly bool[] _replied;             // per group
    readonly Metric[]?[] _rows;           // per group
    readonly long[] _steps;               // per agent
    readonly int?[] _shortest;            // per agent
    readonly float[]?[] _gradients;       // per agent
    int _pending;
    long _nextTarget;

    public SyncRound(PopulationOptions options, GroupSpec[] groups)
    {
        _o = options; _groups = groups;
        _replied = new bool[groups.Length]; _rows = new Metric[]?[groups.Length];
        int n = options.AgentCount;
        _steps = new long[n]; _shortest = new int?[n]; _gradients = new float[]?[n];
    }

    /// <summary>Rounds completed (checkpointed).</summary>
    public long Round { get; private set; }
    /// <summary>The collect target of the current round (checkpointed).</summary>
    public long Target { get; private set; } = 1;
    /// <summary>Σ of each round's L (checkpointed).</summary>
    public long GlobalStep { get; private set; }
    /// <summary>L of the current round.</summary>
    public long Length { get; private set; }
    /// <summary>The update iteration in flight.</summary>
    public long J { get; private set; }
    /// <summary>The update in flight computes objective gradients.</summary>
    public bool GradientStep { get; private set; }

    /// <summary>Sets the checkpointed counters (resume) or the loop modes' totals at their end.</summary>
    public void Set(long round, long target, long globalStep) { Round = round; Target = target; GlobalStep = globalStep; }

    /// <summary>The run ends before the next round: by default once the global step reached the budget (checked after
    /// every round); with <see cref="PopulationOptions.BudgetCheckPerIteration"/> only at training-iteration ends.</summary>
    public bool BudgetReached => GlobalStep >= _o.TimestepsTotal
                                 && (!_o.BudgetCheckPerIteration || (Round > 0 && IterationEnd));

    /// <summary>The current round completes a training iteration (every <see cref="PopulationOptions.Steps"/> rounds).</summary>
    public bool IterationEnd => Round % _o.Steps == 0;

    // ── PHASES ──
    public CollectRequest StartCollect()
    {
        BeginReplies();
        return new CollectRequest(Round, Target, _o.StepsLeft(GlobalStep));
    }

    /// <summary>After every group's collect: L, the next target and the global step.</summary>
    public void EndCollect()
    {
        Length = _steps.Max();
        var shortest = _shortest.Where(s => s.HasValue).Select(s => (long)s!.Value).ToArray();
        _nextTarget = shortest.Length > 0 ? shortest.Max() : Target;
        GlobalStep += Length;
        J = 0;
    }

    public UpdateRequest StartUpdate(float[]? alpha, long version)
    {
        BeginReplies();
        GradientStep = _o.ObjectiveGradientAt(J);
        return new UpdateRequest(Round, J, GradientStep, alpha, version);
    }

    /// <summary>The gathered gradients, in agent-index order (null: none, or excluded).</summary>
    public float[]?[] Gradients() => (float[]?[])_gradients.Clone();

    /// <summary>Moves to the next update iteration; false when the round's updates are done.</summary>
    public bool NextJ() => ++J < Length;

    public void EndRound()
    {
        Round++;
        Target = _nextTarget;
    }

    // ── REPLIES ──
    public bool Expects(int group) => !_replied[group];

    /// <summary>Takes a group's collect; true when it was the last reply of the phase.</summary>
    public bool Collected(Collected c)
    {
        var agents = _groups[c.Group].Agents;
        for (int k = 0; k < agents.Length; k++) { _steps[agents[k]] = c.Steps[k]; _shortest[agents[k]] = c.ShortestEpisode[k]; }
        return Reply(c.Group, c.Rows);
    }

    /// <summary>Takes a group's update; true when it was the last reply of the phase.</summary>
    public bool Updated(Updated u)
    {
        var agents = _groups[u.Group].Agents;
        for (int k = 0; k < agents.Length; k++) _gradients[agents[k]] = u.Gradients[k];
        return Reply(u.Group, u.Rows);
    }

    /// <summary>A group failed on the request: a reply with no steps and no gradients.</summary>
    public bool Failed(int group, Metric[] rows) => Reply(group, rows);

    /// <summary>The phase's rows in agent-index order (each agent's rows in the order its group reported them).</summary>
    public Metric[] Rows() => _rows.SelectMany(r => r ?? Array.Empty<Metric>()).OrderBy(m => m.Agent).ToArray();

    void BeginReplies()
    {
        _pending = _groups.Length;
        Array.Clear(_replied); Array.Clear(_rows); Array.Clear(_steps); Array.Clear(_shortest); Array.Clear(_gradients);
    }

    bool Reply(int group, Metric[] rows)
    {
        _replied[group] = true;
        _rows[group] = rows;
        return --_pending == 0;
    }
}
