namespace MetaGenRL.Core.Envs;

/// <summary>Every environment this project provides, by gym id.</summary>
public static class EnvRegistry
{
    static readonly (string Id, Func<int, IEnv> Make)[] Table =
    {
        ("Pendulum-v1", seed => new PendulumEnv(seed)),
        ("MountainCarContinuous-v0", seed => new MountainCarContinuousEnv(seed)),
        ("HalfCheetah-v2", seed => MuJoCoEnvs.Make("HalfCheetah-v2", seed)),
        ("Hopper-v2", seed => MuJoCoEnvs.Make("Hopper-v2", seed)),
        ("Walker2d-v2", seed => MuJoCoEnvs.Make("Walker2d-v2", seed)),
        ("Ant-v2", seed => MuJoCoEnvs.Make("Ant-v2", seed)),
        ("InvertedPendulum-v2", seed => MuJoCoEnvs.Make("InvertedPendulum-v2", seed)),
        ("InvertedDoublePendulum-v2", seed => MuJoCoEnvs.Make("InvertedDoublePendulum-v2", seed)),
        ("Reacher-v2", seed => MuJoCoEnvs.Make("Reacher-v2", seed)),
        ("Swimmer-v2", seed => MuJoCoEnvs.Make("Swimmer-v2", seed)),
        ("LunarLanderContinuous-v2", seed => new LunarLanderContinuousEnv(seed)),
    };

    /// <summary>All valid ids, in a stable order.</summary>
    public static IReadOnlyList<string> Ids { get; } = Table.Select(e => e.Id).ToArray();

    /// <summary>Creates a seeded environment. Unknown ids get an <see cref="ArgumentException"/> that lists the valid ones.</summary>
    public static IEnv Make(string id, int seed)
    {
        foreach (var (eid, make) in Table)
            if (eid == id)
            {
                Native.EnsureLoaded();
                return make(seed);
            }
        throw new ArgumentException($"unknown env id '{id}'; valid ids: {string.Join(", ", Ids)}", nameof(id));
    }

    /// <summary>Throws the same error as <see cref="Make"/> for an unknown id, without creating anything.</summary>
    public static void Validate(string id)
    {
        if (!Ids.Contains(id))
            throw new ArgumentException($"unknown env id '{id}'; valid ids: {string.Join(", ", Ids)}", nameof(id));
    }
}
