namespace MetaGenRL.Core.Envs;

// PLACEHOLDER: replaced by the real implementation.
public sealed class LunarLanderContinuousEnv : EnvBase
{
    public LunarLanderContinuousEnv(int seed) : base("LunarLanderContinuousEnv", seed, 1) => throw new NotImplementedException("LunarLanderContinuousEnv");
    public override int ObservationSize => 0;
    public override int ActionSize => 0;
    public override float[] ActionLow => [];
    public override float[] ActionHigh => [];
    protected override float[] ResetCore() => throw new NotImplementedException();
    protected override (float[] Observation, double Reward, bool Terminated) StepCore(float[] action) => throw new NotImplementedException();
}
