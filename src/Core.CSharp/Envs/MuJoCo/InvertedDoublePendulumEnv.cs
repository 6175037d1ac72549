namespace MetaGenRL.Core.Envs;

/// <summary>
/// InvertedDoublePendulum-v2: keep two stacked poles upright on a cart. With (x, z) the tip site's position after
/// the step, reward = 10 − 0.01·x² − (z − 2)² − 1e-3·ω1² − 5e-3·ω2²; upright at rest it is 10 − 0.64 = 9.36.
/// Terminates when z ≤ 1. Obs [11] = qpos[0], sin(qpos[1:3]), cos(qpos[1:3]), clip(qvel, ±10),
/// clip(qfrc_constraint, ±10).
/// </summary>
public sealed unsafe class InvertedDoublePendulumEnv : MuJoCoEnv
{
    readonly int _tip;

    public InvertedDoublePendulumEnv(int seed)
        : base("InvertedDoublePendulum-v2", seed, "inverted_double_pendulum.xml", frameSkip: 5) =>
        _tip = Model.SiteId("tip");

    public override int ObservationSize => 11;

    protected override void ResetModel() =>
        SetState(Qpos0PlusUniform(0.1), NormalVector(Nv, 0.1));

    protected override (float[] Observation, double Reward, bool Terminated) StepCore(float[] action)
    {
        DoSimulation(action);
        var sim = Sim;
        // site_xpos is what the last mj_step's forward pass left (one substep behind qpos), as in gym.
        double x = sim.SiteXpos[3 * _tip], z = sim.SiteXpos[3 * _tip + 2];
        double v1 = sim.Qvel[1], v2 = sim.Qvel[2];
        double reward = 10.0 - (0.01 * x * x + (z - 2) * (z - 2)) - (1e-3 * v1 * v1 + 5e-3 * v2 * v2);
        return (Observe(), reward, z <= 1.0);
    }

    protected override float[] Observe()
    {
        double* qpos = Sim.Qpos, qvel = Sim.Qvel, qfrc = Sim.QfrcConstraint;
        var obs = new float[11];
        obs[0] = (float)qpos[0];
        obs[1] = (float)Math.Sin(qpos[1]);
        obs[2] = (float)Math.Sin(qpos[2]);
        obs[3] = (float)Math.Cos(qpos[1]);
        obs[4] = (float)Math.Cos(qpos[2]);
        for (int i = 0; i < 3; i++) obs[5 + i] = (float)Math.Clamp(qvel[i], -10.0, 10.0);
        for (int i = 0; i < 3; i++) obs[8 + i] = (float)Math.Clamp(qfrc[i], -10.0, 10.0);
        return obs;
    }
}
