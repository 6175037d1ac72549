namespace MetaGenRL.Core.Envs;

/// <summary>
/// Walker2d-v2: walk forward on two legs. Reward = Δrootx / dt + 1 − 1e-3·‖a‖², the +1 paid on every step
/// including the terminal one. Terminates unless 0.8 &lt; torso height &lt; 2 and −1 &lt; pitch &lt; 1 (strict;
/// NaN fails these comparisons, so no separate finiteness test is needed).
/// Obs [17] = qpos[1:9], clip(qvel, ±10).
/// </summary>
public sealed unsafe class Walker2dEnv(int seed) : MuJoCoEnv("Walker2d-v2", seed, "walker2d.xml", frameSkip: 4)
{
    public override int ObservationSize => 17;

    protected override void ResetModel() =>
        SetState(Qpos0PlusUniform(0.005), UniformVector(Nv, 0.005));

    protected override (float[] Observation, double Reward, bool Terminated) StepCore(float[] action)
    {
        double* qpos = Sim.Qpos;
        double xBefore = qpos[0];
        DoSimulation(action);
        double reward = (qpos[0] - xBefore) / Dt + 1.0 - 1e-3 * SquaredNorm(action);
        double height = qpos[1], angle = qpos[2];
        bool healthy = height > 0.8 && height < 2.0 && angle > -1.0 && angle < 1.0;
        return (Observe(), reward, !healthy);
    }

    protected override float[] Observe()
    {
        double* qpos = Sim.Qpos, qvel = Sim.Qvel;
        var obs = new float[17];
        for (int i = 0; i < 8; i++) obs[i] = (float)qpos[i + 1];
        for (int i = 0; i < 9; i++) obs[8 + i] = (float)Math.Clamp(qvel[i], -10.0, 10.0);
        return obs;
    }
}
