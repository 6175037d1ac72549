namespace MetaGenRL.Core.Envs;

/// <summary>
/// HalfCheetah-v2: run forward. Reward = forward velocity of the root (Δrootx / dt) − 0.1·‖a‖²; never terminates.
/// Obs [17] = qpos[1:9] (root z, pitch, 6 joints), qvel[0:9].
/// </summary>
public sealed unsafe class HalfCheetahEnv(int seed) : MuJoCoEnv("HalfCheetah-v2", seed, "half_cheetah.xml", frameSkip: 5)
{
    public override int ObservationSize => 17;

    protected override void ResetModel() =>
        SetState(Qpos0PlusUniform(0.1), NormalVector(Nv, 0.1));

    protected override (float[] Observation, double Reward, bool Terminated) StepCore(float[] action)
    {
        double* qpos = Sim.Qpos;
        double xBefore = qpos[0];
        DoSimulation(action);
        double reward = (qpos[0] - xBefore) / Dt - 0.1 * SquaredNorm(action);
        return (Observe(), reward, false);
    }

    protected override float[] Observe()
    {
        double* qpos = Sim.Qpos, qvel = Sim.Qvel;
        var obs = new float[17];
        for (int i = 0; i < 8; i++) obs[i] = (float)qpos[i + 1];
        for (int i = 0; i < 9; i++) obs[8 + i] = (float)qvel[i];
        return obs;
    }
}
