using System.Runtime.CompilerServices;

namespace MetaGenRL.Core.Envs;

/// <summary>
/// Base of the gym v2 MuJoCo envs: one shared compiled model per env type, one <see cref="MuJoCoData"/> per
/// instance, frame skipping, and gym's reset protocol (mj_resetData, then the env's noisy state via
/// <see cref="SetState"/>, which runs mj_forward). Subclasses write the observation, reward and termination.
/// </summary>
public abstract unsafe class MuJoCoEnv : EnvBase
{
    MuJoCoData? _data;
    readonly float[] _actionLow, _actionHigh;

    protected MuJoCoEnv(string id, int seed, string modelFile, int frameSkip, int maxEpisodeSteps = 1000)
        : base(id, seed, maxEpisodeSteps)
    {
        Model = MuJoCoModel.Shared(modelFile);
        _data = new MuJoCoData(Model, id);
        FrameSkip = frameSkip;
        Dt = Model.Timestep * frameSkip;
        _actionLow = new float[Model.Nu];
        _actionHigh = new float[Model.Nu];
        for (int i = 0; i < Model.Nu; i++)
        {
            bool limited = Model.CtrlLimitedPtr[i] != 0;
            _actionLow[i] = limited ? (float)Model.CtrlRangePtr[2 * i] : float.NegativeInfinity;
            _actionHigh[i] = limited ? (float)Model.CtrlRangePtr[2 * i + 1] : float.PositiveInfinity;
        }
    }

    /// <summary>The compiled model shared by every env of this type.</summary>
    public MuJoCoModel Model { get; }
    /// <summary>This env's simulation state.</summary>
    protected MuJoCoData Sim
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => _data ?? throw new ObjectDisposedException(Id);
    }

    /// <summary>Physics steps (mj_step) per env step.</summary>
    public int FrameSkip { get; }
    /// <summary>Simulated seconds per env step: timestep × frame skip.</summary>
    public double Dt { get; }

    /// <summary>mj_step calls this env has made.</summary>
    public long PhysicsSteps => Sim.PhysicsSteps;
    /// <summary>Seconds this env has spent inside mj_step (the rest of its time is the wrapper's).</summary>
    public double PhysicsSeconds => Sim.PhysicsTicks / (double)System.Diagnostics.Stopwatch.Frequency;

    public int Nq => Model.Nq;
    public int Nv => Model.Nv;
    public int Nu => Model.Nu;
    public int NBody => Model.NBody;
    public double[] Qpos0 => Model.Qpos0;
    public double BodyMass(string body) => Model.BodyMass(body);
    /// <summary>[nbody] compiled masses in body-id order, world first.</summary>
    public double[] BodyMasses => Model.BodyMasses;

    /// <summary>[nq] a copy of the current joint positions.</summary>
    public double[] Qpos => Sim.GetQpos();
    /// <summary>[nv] a copy of the current joint velocities.</summary>
    public double[] Qvel => Sim.GetQvel();

    /// <summary>[3] a body frame's world origin as the last step or forward pass left it (gym's <c>get_body_com</c>).</summary>
    public double[] BodyPosition(string body) => new ReadOnlySpan<double>(Sim.Xpos + 3 * Model.BodyId(body), 3).ToArray();
    /// <summary>[3] a site's world position as the last step or forward pass left it.</summary>
    public double[] SitePosition(string site) => new ReadOnlySpan<double>(Sim.SiteXpos + 3 * Model.SiteId(site), 3).ToArray();

    /// <summary>Sets the joint state and runs mj_forward, like gym's <c>set_state</c>; the episode clock is unchanged.</summary>
    public void SetState(double[] qpos, double[] qvel) => Sim.SetState(qpos, qvel);

    public override int ActionSize => Model.Nu;
    /// <summary>The actuators' ctrlrange lower ends.</summary>
    public override float[] ActionLow => (float[])_actionLow.Clone();
    /// <summary>The actuators' ctrlrange upper ends.</summary>
    public override float[] ActionHigh => (float[])_actionHigh.Clone();

    protected sealed override float[] ResetCore()
    {
        Sim.Reset();
        ResetModel();
        return Observe();
    }

    /// <summary>Draws the initial state from <see cref="EnvBase.Rng"/> and applies it with <see cref="SetState"/>.</summary>
    protected abstract void ResetModel();

    /// <summary>The observation of the current state, built in float64 and returned as float32 [obs].</summary>
    protected abstract float[] Observe();

    /// <summary>Writes the raw action to ctrl (MuJoCo clamps it) and advances <see cref="FrameSkip"/> physics steps.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected void DoSimulation(float[] action)
    {
        var sim = Sim;
        sim.SetControl(action);
        sim.Step(FrameSkip);
    }

    /// <summary>‖a‖² of the raw (unclipped) action, as gym's control costs use it.</summary>
    protected static double SquaredNorm(float[] action)
    {
        double s = 0;
        foreach (float a in action) s += (double)a * a;
        return s;
    }

    /// <summary>qpos0 plus U(−<paramref name="scale"/>, <paramref name="scale"/>) on every entry.</summary>
    protected double[] Qpos0PlusUniform(double scale)
    {
        var q = Model.Qpos0;
        for (int i = 0; i < q.Length; i++) q[i] += Uniform(-scale, scale);
        return q;
    }

    /// <summary><paramref name="n"/> draws of U(−<paramref name="scale"/>, <paramref name="scale"/>).</summary>
    protected double[] UniformVector(int n, double scale)
    {
        var v = new double[n];
        for (int i = 0; i < n; i++) v[i] = Uniform(-scale, scale);
        return v;
    }

    /// <summary><paramref name="n"/> draws of <paramref name="scale"/>·N(0, 1).</summary>
    protected double[] NormalVector(int n, double scale)
    {
        var v = new double[n];
        for (int i = 0; i < n; i++) v[i] = scale * Normal();
        return v;
    }

    protected static bool AllFinite(double* x, int n)
    {
        for (int i = 0; i < n; i++)
            if (!double.IsFinite(x[i])) return false;
        return true;
    }

    public override void Dispose()
    {
        _data?.Dispose();
        _data = null;
        base.Dispose();
    }
}
