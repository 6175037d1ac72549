namespace MetaGenRL.Core.Envs;

// PLACEHOLDER: replaced by the real implementation.
public static class MuJoCoEnvs
{
    public static IEnv Make(string id, int seed) => throw new NotImplementedException(id);
    /// <summary>Raw mj_step calls per second for the env's model on this thread, measured for about <paramref name="seconds"/>.</summary>
    public static double MeasureRawStepRate(string id, double seconds) => throw new NotImplementedException(id);
}
