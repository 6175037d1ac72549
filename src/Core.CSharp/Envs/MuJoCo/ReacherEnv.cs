namespace MetaGenRL.Core.Envs;

/// <summary>
/// Reacher-v2: bring the fingertip of a two-link arm to a random target. Reward = −‖fingertip − target‖ − ‖a‖²,
/// computed BEFORE the physics step from the positions the previous step (or the reset) left, as gym v2 does.
/// Never terminates; episodes are 50 steps.
/// Obs [11] = cos(qpos[0:2]), sin(qpos[0:2]), qpos[2:4] (target xy), qvel[0:2], fingertip − target (xyz).
/// </summary>
public sealed unsafe class ReacherEnv : MuJoCoEnv
{
    readonly int _fingertip, _target;

    public ReacherEnv(int seed) : base("Reacher-v2", seed, "reacher.xml", frameSkip: 2, maxEpisodeSteps: 50)
    {
        _fingertip = Model.BodyId("fingertip");
        _target = Model.BodyId("target");
    }

    public override int ObservationSize => 11;

    protected override void ResetModel()
    {
        var qpos = Qpos0PlusUniform(0.1);
        // The goal is uniform on the disc of radius 0.2, by rejection from the square.
        double gx, gy;
        do
        {
            gx = Uniform(-0.2, 0.2);
            gy = Uniform(-0.2, 0.2);
        } while (Math.Sqrt(gx * gx + gy * gy) >= 0.2);
        qpos[2] = gx;
        qpos[3] = gy;
        var qvel = UniformVector(Nv, 0.005);
        qvel[2] = qvel[3] = 0; // the target stays put
        SetState(qpos, qvel);
    }

    protected override (float[] Observation, double Reward, bool Terminated) StepCore(float[] action)
    {
        double* xpos = Sim.Xpos;
        double dx = xpos[3 * _fingertip] - xpos[3 * _target];
        double dy = xpos[3 * _fingertip + 1] - xpos[3 * _target + 1];
        double dz = xpos[3 * _fingertip + 2] - xpos[3 * _target + 2];
        double reward = -Math.Sqrt(dx * dx + dy * dy + dz * dz) - SquaredNorm(action);
        DoSimulation(action);
        return (Observe(), reward, false);
    }

    protected override float[] Observe()
    {
        double* qpos = Sim.Qpos, qvel = Sim.Qvel, xpos = Sim.Xpos;
        var obs = new float[11];
        obs[0] = (float)Math.Cos(qpos[0]);
        obs[1] = (float)Math.Cos(qpos[1]);
        obs[2] = (float)Math.Sin(qpos[0]);
        obs[3] = (float)Math.Sin(qpos[1]);
        obs[4] = (float)qpos[2];
        obs[5] = (float)qpos[3];
        obs[6] = (float)qvel[0];
        obs[7] = (float)qvel[1];
        for (int i = 0; i < 3; i++) obs[8 + i] = (float)(xpos[3 * _fingertip + i] - xpos[3 * _target + i]);
        return obs;
    }
}
