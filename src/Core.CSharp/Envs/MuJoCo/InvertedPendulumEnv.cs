namespace MetaGenRL.Core.Envs;

/// <summary>
/// InvertedPendulum-v2: keep a pole upright on a cart. Reward +1 per step (terminal step included).
/// Terminates when the observation is non-finite or |pole angle| &gt; 0.2 rad. Obs [4] = qpos, qvel.
/// </summary>
public sealed unsafe class InvertedPendulumEnv(int seed)
    : MuJoCoEnv("InvertedPendulum-v2", seed, "inverted_pendulum.xml", frameSkip: 2)
{
    public override int ObservationSize => 4;

    protected override void ResetModel() =>
        SetState(Qpos0PlusUniform(0.01), UniformVector(Nv, 0.01));

    protected override (float[] Observation, double Reward, bool Terminated) StepCore(float[] action)
    {
        DoSimulation(action);
        double* qpos = Sim.Qpos, qvel = Sim.Qvel;
        bool healthy = AllFinite(qpos, Nq) && AllFinite(qvel, Nv) && Math.Abs(qpos[1]) <= 0.2;
        var obs = Observe();
        return (obs, 1.0, !healthy);
    }

    protected override float[] Observe()
    {
        double* qpos = Sim.Qpos, qvel = Sim.Qvel;
        return [(float)qpos[0], (float)qpos[1], (float)qvel[0], (float)qvel[1]];
    }
}
