using MetaGenRL.Core.Engine;
using MetaGenRL.Core.Training;

namespace MetaGenRL.Core.Meta;

/// <summary>
/// TEMPORARY: K <see cref="MetaAgent"/>s presented as an <see cref="IAgentGroup"/> by looping over them one after the
/// other, so the population actors can drive today's members until the batched group replaces this class. Nothing is
/// batched. Per slot it maps the group contract onto a member: an exception from a member, or a non-finite reported loss,
/// is that slot's failure (the other slots go on); a collect stopped by its limit mid-episode abandons that episode when
/// the slot is saved. The adapter owns its members.
/// </summary>
public sealed class MemberGroupAdapter : IAgentGroup
{
    readonly MetaAgent[] _members;
    readonly Func<int, MetaAgent> _makeMember;

    /// <param name="members">slot k's member (its Index is the agent's population index).</param>
    /// <param name="makeMember">makes a fresh member for an agent index (<see cref="ResetAgent"/>).</param>
    public MemberGroupAdapter(IReadOnlyList<MetaAgent> members, Func<int, MetaAgent> makeMember)
    {
        if (members.Count == 0) throw new ArgumentException("a group needs at least one member", nameof(members));
        if (members.Any(m => m.EnvId != members[0].EnvId))
            throw new ArgumentException($"a group runs one env id, got {string.Join(", ", members.Select(m => m.EnvId).Distinct())}");
        _members = members.ToArray();
        _makeMember = makeMember;
        Agents = _members.Select(m => m.Index).ToArray();
    }

    public IReadOnlyList<int> Agents { get; }
    public int Size => _members.Length;
    public string EnvId => _members[0].EnvId;
    public long[] EnvSteps => _members.Select(m => m.EnvSteps).ToArray();
    public bool ComputesObjectiveGradients => _members.Any(m => m.Mode == MemberMode.MetaTrain);
    public int ObjectiveSize => _members[0].ObjectiveSize;

    public SlotCollect[] Collect(long[] targets, long[] limits, Action<Metric> onMetric) =>
        PerSlot(k => limits[k] > 0, (m, k, report) =>
        {
            var r = m.Collect(targets[k], report, limits[k]);
            return new SlotCollect(r.Steps, r.ShortestEpisode);
        }, (_, reason) => new SlotCollect(0, null, reason), new SlotCollect(0, null), onMetric);

    public string?[] Update(long j, bool[] active, Action<Metric> onMetric) =>
        PerSlot(k => active[k], (m, _, report) => { m.Update(j, report); return (string?)null; },
                (_, reason) => reason, null, onMetric);

    public SlotGradient[] ObjectiveGradients(bool[] active, Action<Metric> onMetric) =>
        PerSlot(k => active[k], (m, _, report) => new SlotGradient(m.ObjectiveGradient(report)),
                (_, reason) => new SlotGradient(null, reason), new SlotGradient(null), onMetric);

    public void LoadObjective(float[] alpha)
    {
        foreach (var m in _members) m.LoadObjective(alpha);
    }

    public float[] ObjectiveParameters(int slot) => _members[slot].ObjectiveParameters();

    public byte[] SaveState(int slot, bool includeReplay)
    {
        var m = _members[slot];
        if (m.EpisodeInProgress) m.AbandonEpisode();   // only after a collect its limit stopped mid-episode
        return m.SaveState(includeReplay);
    }

    public void LoadState(int slot, byte[] state) => _members[slot].LoadState(state);

    public void ResetAgent(int slot)
    {
        var fresh = _makeMember(_members[slot].Index);
        _members[slot].Dispose();
        _members[slot] = fresh;
    }

    public void Dispose()
    {
        foreach (var m in _members) m.Dispose();
    }

    /// <summary>Runs <paramref name="body"/> for each selected slot in slot order; its exception or a non-finite loss it
    /// reports becomes that slot's failure.</summary>
    T[] PerSlot<T>(Func<int, bool> selected, Func<MetaAgent, int, Action<Metric>, T> body, Func<int, string, T> failed,
                   T skipped, Action<Metric> onMetric)
    {
        var results = new T[_members.Length];
        for (int k = 0; k < _members.Length; k++)
        {
            if (!selected(k)) { results[k] = skipped; continue; }
            string? nonFinite = null;
            void Report(Metric m)
            {
                onMetric(m);
                if (nonFinite is null && m.Name.Contains("loss", StringComparison.Ordinal) && !double.IsFinite(m.Value))
                    nonFinite = $"non-finite loss reported: {m.Name} = {m.Value}";
            }
            try
            {
                results[k] = body(_members[k], k, Report);
                if (nonFinite is not null) results[k] = failed(k, nonFinite);
            }
            catch (Exception e) { results[k] = failed(k, $"{e.GetType().Name}: {e.Message}"); }
        }
        return results;
    }
}
