using MetaGenRL.Core.Engine;
using MetaGenRL.Core.Training;

namespace MetaGenRL.Core.Meta;

/// <summary>A one-agent <see cref="AgentGroup"/> seen as a population member (the per-agent actor protocol).</summary>
public sealed class SingleAgentMember(AgentGroup group) : IPopulationMember
{
    static readonly bool[] On = [true];
    public AgentGroup Group { get; } = group.Size == 1 ? group : throw new ArgumentException("a member wraps a group of one agent");
    public int Index => Group.Agents[0];
    public string EnvId => Group.EnvId;
    public long EnvSteps => Group.EnvSteps[0];

    public CollectResult Collect(long targetSteps, Action<Metric> onMetric)
    {
        var r = Group.Collect([targetSteps], [long.MaxValue], onMetric)[0];
        if (r.Failure is not null) throw new InvalidOperationException(r.Failure);
        return new CollectResult(r.Steps, r.ShortestEpisode);
    }

    public void Update(long j, Action<Metric> onMetric) => Group.Update(j, On, onMetric);

    public float[]? ObjectiveGradient(Action<Metric> onMetric) =>
        Group.ComputesObjectiveGradients ? Group.ObjectiveGradients(On, onMetric)[0] is { Failure: null } g ? g.Gradient : null : null;

    public int ObjectiveSize => Group.ObjectiveSize;
    public void LoadObjective(float[] alpha) => Group.LoadObjective(alpha);
    public float[] ObjectiveParameters() => Group.ObjectiveParameters(0);
    public byte[] SaveState(bool includeReplay) => Group.SaveState(0, includeReplay);
    public void LoadState(byte[] state) => Group.LoadState(0, state);
    public void Dispose() => Group.Dispose();
}
