namespace MetaGenRL.Core.Envs;

/// <summary>
/// Hopper-v2: hop forward without falling. Reward = Δrootx / dt + 1 − 1e-3·‖a‖², where the +1 is paid on every
/// step including the terminal one (as in gym v2; Gymnasium v5 changed that). Terminates when unhealthy:
/// non-finite state, |qpos[2:], qvel| ≥ 100, torso height ≤ 0.7 or |pitch| ≥ 0.2.
/// Obs [11] = qpos[1:6], clip(qvel, ±10).
/// </summary>
public sealed unsafe class HopperEnv(int seed) : MuJoCoEnv("Hopper-v2", seed, "hopper.xml", frameSkip: 4)
{
    public override int ObservationSize => 11;

    protected override void ResetModel() =>
        SetState(Qpos0PlusUniform(0.005), UniformVector(Nv, 0.005));

    protected override (float[] Observation, double Reward, bool Terminated) StepCore(float[] action)
    {
        double* qpos = Sim.Qpos, qvel = Sim.Qvel;
        double xBefore = qpos[0];
        DoSimulation(action);
        double reward = (qpos[0] - xBefore) / Dt + 1.0 - 1e-3 * SquaredNorm(action);
        return (Observe(), reward, !IsHealthy(qpos, qvel));
    }

    bool IsHealthy(double* qpos, double* qvel)
    {
        if (!AllFinite(qpos, Nq) || !AllFinite(qvel, Nv)) return false;
        // gym checks |x| < 100 over state_vector()[2:], i.e. qpos[2:] followed by all of qvel.
        for (int i = 2; i < Nq; i++) if (Math.Abs(qpos[i]) >= 100) return false;
        for (int i = 0; i < Nv; i++) if (Math.Abs(qvel[i]) >= 100) return false;
        double height = qpos[1], angle = qpos[2];
        return height > 0.7 && Math.Abs(angle) < 0.2;
    }

    protected override float[] Observe()
    {
        double* qpos = Sim.Qpos, qvel = Sim.Qvel;
        var obs = new float[11];
        for (int i = 0; i < 5; i++) obs[i] = (float)qpos[i + 1];
        for (int i = 0; i < 6; i++) obs[5 + i] = (float)Math.Clamp(qvel[i], -10.0, 10.0);
        return obs;
    }
}
