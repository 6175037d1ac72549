using System.Runtime.CompilerServices;

namespace MetaGenRL.Core.Envs;

/// <summary>
/// One simulation state (mjData) of a <see cref="MuJoCoModel"/>. The array pointers are read once: MuJoCo 2.2.2
/// carves every mjData array out of a single buffer at make time, so they stay valid until the data is freed.
/// Errors and numerical blow-ups throw <see cref="MuJoCoException"/> naming <see cref="Owner"/>.
/// Not thread-safe: one data belongs to one env, used by one thread at a time.
/// </summary>
public sealed unsafe class MuJoCoData : IDisposable
{
    IntPtr _d;
    bool _faulted;

    // Raw views, read and written by the envs in the hot path without copies.
    internal readonly double* Qpos, Qvel, Ctrl, Xpos, SiteXpos, QfrcConstraint, CfrcExt, TimePtr;

    /// <param name="model">the (usually shared) model; it must outlive this data.</param>
    /// <param name="owner">named in every exception, e.g. the env id.</param>
    public MuJoCoData(MuJoCoModel model, string owner)
    {
        Model = model;
        Owner = owner;
        if (MjNative.MakeData(model.Handle, out _d) != 0 || _d == IntPtr.Zero)
            throw new MuJoCoException($"{owner}: MuJoCo could not allocate its data: {MjNative.LastErrorText()}");
        Qpos = MjNative.Qpos(_d);
        Qvel = MjNative.Qvel(_d);
        Ctrl = MjNative.Ctrl(_d);
        Xpos = MjNative.Xpos(_d);
        SiteXpos = MjNative.SiteXpos(_d);
        QfrcConstraint = MjNative.QfrcConstraint(_d);
        CfrcExt = MjNative.CfrcExt(_d);
        TimePtr = MjNative.Time(_d);
    }

    public MuJoCoModel Model { get; }
    public string Owner { get; }
    internal IntPtr Handle => _d != IntPtr.Zero ? _d : throw new ObjectDisposedException(Owner);

    /// <summary>Simulated time in seconds since the last reset.</summary>
    public double Time => *TimePtr;
    /// <summary>[nq] a copy of the joint positions.</summary>
    public double[] GetQpos() => new ReadOnlySpan<double>(Qpos, Model.Nq).ToArray();
    /// <summary>[nv] a copy of the joint velocities.</summary>
    public double[] GetQvel() => new ReadOnlySpan<double>(Qvel, Model.Nv).ToArray();
    /// <summary>[nbody, 3] a copy of the body frame origins, as left by the last step or forward pass.</summary>
    public double[] GetXpos() => new ReadOnlySpan<double>(Xpos, 3 * Model.NBody).ToArray();
    /// <summary>[nbody, 6] a copy of the external contact wrenches (torque xyz, force xyz).</summary>
    public double[] GetCfrcExt() => new ReadOnlySpan<double>(CfrcExt, 6 * Model.NBody).ToArray();

    /// <summary>mj_resetData: qpos = qpos0, qvel = 0, ctrl = 0, time = 0. Clears a previous fault.</summary>
    public void Reset()
    {
        Check(MjNative.Reset(Model.Handle, Handle), "mj_resetData");
        _faulted = false;
    }

    /// <summary>Writes qpos and qvel and recomputes everything derived from them (mj_forward), without advancing time.</summary>
    public void SetState(ReadOnlySpan<double> qpos, ReadOnlySpan<double> qvel)
    {
        if (qpos.Length != Model.Nq || qvel.Length != Model.Nv)
            throw new ArgumentException($"{Owner}: state needs qpos[{Model.Nq}] and qvel[{Model.Nv}], got [{qpos.Length}] and [{qvel.Length}]");
        _ = Handle; // throws if disposed, before anything is written through the raw pointers
        qpos.CopyTo(new Span<double>(Qpos, Model.Nq));
        qvel.CopyTo(new Span<double>(Qvel, Model.Nv));
        Check(MjNative.Forward(Model.Handle, _d), "mj_forward");
        _faulted = false;
    }

    /// <summary>Copies <paramref name="action"/> into ctrl, unclipped: MuJoCo clamps it to ctrlrange where the model says ctrllimited.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void SetControl(ReadOnlySpan<float> action)
    {
        double* ctrl = Ctrl;
        for (int i = 0; i < action.Length; i++) ctrl[i] = action[i];
    }

    /// <summary>Advances <paramref name="n"/> physics steps (mj_step). MuJoCo silently resets a state that went
    /// NaN/Inf/huge; like mujoco-py, which gym v2 used, this throws instead, and the data must be reset.</summary>
    public void Step(int n)
    {
        if (_faulted)
            throw new InvalidOperationException($"{Owner}: the simulation failed earlier; reset it before stepping again");
        long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
        int rc = MjNative.StepN(Model.Handle, Handle, n);
        PhysicsTicks += System.Diagnostics.Stopwatch.GetTimestamp() - t0;
        PhysicsSteps += n;
        if (rc != 0) Fail(rc);
    }

    /// <summary>mj_step calls made through <see cref="Step"/> so far.</summary>
    public long PhysicsSteps { get; private set; }
    /// <summary>Stopwatch ticks spent inside those calls: with <see cref="PhysicsSteps"/> it gives the raw physics
    /// rate on exactly the trajectory the env produced (about 50 ns of timer cost per env step).</summary>
    public long PhysicsTicks { get; private set; }

    [MethodImpl(MethodImplOptions.NoInlining)]
    void Fail(int rc)
    {
        _faulted = true;
        if (rc < 0) throw new MuJoCoException($"{Owner}: MuJoCo error in mj_step: {MjNative.LastErrorText()}");
        string detail = MjNative.LastWarningText();
        throw new MuJoCoException($"{Owner}: the simulation became numerically unstable (NaN, Inf or huge values)"
                                  + (detail.Length > 0 ? $"; MuJoCo: {detail}" : "") + " Reset the environment to continue.");
    }

    void Check(int rc, string what)
    {
        if (rc == 0) return;
        _faulted = true;
        throw new MuJoCoException($"{Owner}: MuJoCo error in {what}: {MjNative.LastErrorText()}");
    }

    /// <summary>Raw mj_step calls per second on this thread, bypassing the shim (MuJoCo's own speed).</summary>
    internal double MeasureRawStepRate(double seconds)
    {
        IntPtr m = Model.Handle, d = Handle;
        var sw = System.Diagnostics.Stopwatch.StartNew();
        long steps = 0;
        while (sw.Elapsed.TotalSeconds < seconds)
        {
            for (int i = 0; i < 1000; i++) MjNative.RawStep(m, d);
            steps += 1000;
        }
        return steps / sw.Elapsed.TotalSeconds;
    }

    public void Dispose()
    {
        Free();
        GC.SuppressFinalize(this);
    }

    ~MuJoCoData() => Free();

    void Free()
    {
        if (_d == IntPtr.Zero) return;
        MjNative.DeleteData(_d);
        _d = IntPtr.Zero;
    }
}
