namespace MetaGenRL.Core.Envs;

/// <summary>The gym v2 MuJoCo environments, by id.</summary>
public static class MuJoCoEnvs
{
    /// <summary>The ids this factory knows, with their model files.</summary>
    static readonly (string Id, string Model, Func<int, MuJoCoEnv> Make)[] Table =
    {
        ("HalfCheetah-v2", "half_cheetah.xml", seed => new HalfCheetahEnv(seed)),
        ("Hopper-v2", "hopper.xml", seed => new HopperEnv(seed)),
        ("Walker2d-v2", "walker2d.xml", seed => new Walker2dEnv(seed)),
        ("Ant-v2", "ant.xml", seed => new AntEnv(seed)),
        ("InvertedPendulum-v2", "inverted_pendulum.xml", seed => new InvertedPendulumEnv(seed)),
        ("InvertedDoublePendulum-v2", "inverted_double_pendulum.xml", seed => new InvertedDoublePendulumEnv(seed)),
        ("Reacher-v2", "reacher.xml", seed => new ReacherEnv(seed)),
        ("Swimmer-v2", "swimmer.xml", seed => new SwimmerEnv(seed)),
    };

    public static IReadOnlyList<string> Ids { get; } = Table.Select(e => e.Id).ToArray();

    /// <summary>Creates a seeded env; call <c>Reset</c> before stepping it.</summary>
    public static IEnv Make(string id, int seed)
    {
        Native.EnsureLoaded();
        return Find(id).Make(seed);
    }

    /// <summary>Raw mj_step calls per second for the env's model on this thread, measured for about
    /// <paramref name="seconds"/>: MuJoCo's own speed, the ceiling for frame_skip × env steps.</summary>
    public static double MeasureRawStepRate(string id, double seconds)
    {
        Native.EnsureLoaded();
        using var data = new MuJoCoData(MuJoCoModel.Shared(Find(id).Model), id);
        data.Reset();
        return data.MeasureRawStepRate(seconds);
    }

    static (string Id, string Model, Func<int, MuJoCoEnv> Make) Find(string id)
    {
        foreach (var e in Table)
            if (e.Id == id) return e;
        throw new ArgumentException($"unknown MuJoCo env id '{id}'; valid ids: {string.Join(", ", Ids)}", nameof(id));
    }
}
