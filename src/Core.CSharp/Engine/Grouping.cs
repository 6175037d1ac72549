namespace MetaGenRL.Core.Engine;

/// <summary>How a population's agents are split into batched groups: agents on different envs are in different
/// groups (a group shares observation and action sizes); the agents of one env form groups of
/// <c>group_size</c> in index order (0: all of them in one group).</summary>
public static class Grouping
{
    /// <summary>The env of agent i when a run lists <paramref name="envs"/>: round-robin, i mod n.</summary>
    public static string EnvOf(IReadOnlyList<string> envs, int agent) => envs[agent % envs.Count];

    /// <summary>Groups of agent indices, ordered by their first agent; <paramref name="agentEnvs"/>[i] is agent i's env.</summary>
    public static int[][] Partition(IReadOnlyList<string> agentEnvs, int groupSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(groupSize);
        if (agentEnvs.Count == 0) throw new ArgumentException("a population needs at least one agent");
        var groups = new List<int[]>();
        foreach (var env in agentEnvs.Distinct())
        {
            var agents = Enumerable.Range(0, agentEnvs.Count).Where(i => agentEnvs[i] == env).ToArray();
            int size = groupSize == 0 ? agents.Length : groupSize;
            groups.AddRange(agents.Chunk(size));
        }
        return groups.OrderBy(g => g[0]).ToArray();
    }
}
