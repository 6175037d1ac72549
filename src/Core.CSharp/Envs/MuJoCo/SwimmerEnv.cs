namespace MetaGenRL.Core.Envs;

/// <summary>
/// Swimmer-v2: swim forward through a viscous medium. Reward = Δslider1 / dt − 1e-4·‖a‖²; never terminates.
/// Obs [8] = qpos[2:5] (heading, two joint angles), qvel[0:5].
/// </summary>
public sealed unsafe class SwimmerEnv(int seed) : MuJoCoEnv("Swimmer-v2", seed, "swimmer.xml", frameSkip: 4)
{
    public override int ObservationSize => 8;

    protected override void ResetModel() =>
        SetState(Qpos0PlusUniform(0.1), UniformVector(Nv, 0.1));

    protected override (float[] Observation, double Reward, bool Terminated) StepCore(float[] action)
    {
        double* qpos = Sim.Qpos;
        double xBefore = qpos[0];
        DoSimulation(action);
        double reward = (qpos[0] - xBefore) / Dt - 1e-4 * SquaredNorm(action);
        return (Observe(), reward, false);
    }

    protected override float[] Observe()
    {
        double* qpos = Sim.Qpos, qvel = Sim.Qvel;
        var obs = new float[8];
        for (int i = 0; i < 3; i++) obs[i] = (float)qpos[i + 2];
        for (int i = 0; i < 5; i++) obs[3 + i] = (float)qvel[i];
        return obs;
    }
}
