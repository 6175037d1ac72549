namespace MetaGenRL.Core.Envs;

/// <summary>
/// Ant-v2: walk forward on four legs. Reward = Δx_torso / dt − 0.5·‖a‖² − 0.5e-3·Σ clip(cfrc_ext, ±1)² + 1
/// (the +1 on every step, terminal included). Terminates unless the state is finite and 0.2 ≤ torso z ≤ 1.
/// Obs [111] = qpos[2:15], qvel[0:14], clip(cfrc_ext, ±1) flattened [14 bodies × 6].
/// </summary>
/// <remarks>
/// cfrc_ext is only filled by mj_rnePostConstraint, which mj_step does not call. gym's Ant-v2 ran on mujoco-py 2.x,
/// which never called it either, so the 84 contact entries of the observation and the contact cost were always
/// zero in the paper's setting. We keep that v2 behaviour on purpose (still reading the real array, which MuJoCo
/// leaves at zero); calling mj_rnePostConstraint here would give the MuJoCo 1.5 / gym v4 variant instead.
/// </remarks>
public sealed unsafe class AntEnv : MuJoCoEnv
{
    readonly int _torso;

    public AntEnv(int seed) : base("Ant-v2", seed, "ant.xml", frameSkip: 5) => _torso = Model.BodyId("torso");

    public override int ObservationSize => 111;

    protected override void ResetModel() =>
        // The quaternion is perturbed without re-normalising, as gym does; MuJoCo normalises it when it integrates.
        SetState(Qpos0PlusUniform(0.1), NormalVector(Nv, 0.1));

    protected override (float[] Observation, double Reward, bool Terminated) StepCore(float[] action)
    {
        var sim = Sim;
        // gym's get_body_com("torso") is the body frame origin (xpos) as left by the last mj_step's forward pass.
        double xBefore = sim.Xpos[3 * _torso];
        DoSimulation(action);
        double xAfter = sim.Xpos[3 * _torso];

        double contactCost = 0;
        double* cfrc = sim.CfrcExt;
        for (int i = 0; i < 6 * NBody; i++)
        {
            double c = Math.Clamp(cfrc[i], -1.0, 1.0);
            contactCost += c * c;
        }
        double reward = (xAfter - xBefore) / Dt - 0.5 * SquaredNorm(action) - 0.5e-3 * contactCost + 1.0;

        double* qpos = sim.Qpos;
        bool healthy = AllFinite(qpos, Nq) && AllFinite(sim.Qvel, Nv) && qpos[2] >= 0.2 && qpos[2] <= 1.0;
        return (Observe(), reward, !healthy);
    }

    protected override float[] Observe()
    {
        var sim = Sim;
        double* qpos = sim.Qpos, qvel = sim.Qvel, cfrc = sim.CfrcExt;
        var obs = new float[111];
        int k = 0;
        for (int i = 2; i < Nq; i++) obs[k++] = (float)qpos[i];
        for (int i = 0; i < Nv; i++) obs[k++] = (float)qvel[i];
        for (int i = 0; i < 6 * NBody; i++) obs[k++] = (float)Math.Clamp(cfrc[i], -1.0, 1.0);
        return obs;
    }
}
