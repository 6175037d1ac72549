namespace MetaGenRL.Core.Envs;

/// <summary>
/// Pendulum-v1: swing a frictionless pendulum up and keep it upright with a bounded torque. θ = 0 is upright;
/// the dynamics are semi-implicit Euler (the new velocity moves the angle). The reward is the negative cost of
/// the state <i>before</i> the update, and the episode never terminates: it is only truncated at 200 steps.
/// </summary>
public sealed class PendulumEnv : EnvBase
{
    public const double Gravity = 10.0, Mass = 1.0, Length = 1.0, Dt = 0.05, MaxSpeed = 8.0, MaxTorque = 2.0;

    static readonly float[] Low = [-(float)MaxTorque], High = [(float)MaxTorque];

    double _theta, _thetaDot;

    public PendulumEnv(int seed) : base("Pendulum-v1", seed, maxEpisodeSteps: 200) { }

    public override int ObservationSize => 3;
    public override int ActionSize => 1;
    public override float[] ActionLow => (float[])Low.Clone();
    public override float[] ActionHigh => (float[])High.Clone();

    /// <summary>Current angle (rad, unnormalised; 0 = upright).</summary>
    public double Theta => _theta;
    /// <summary>Current angular velocity (rad/s).</summary>
    public double ThetaDot => _thetaDot;

    /// <summary>Overwrites the state (tests, diagnostics); call after <see cref="EnvBase.Reset"/>. Returns the observation.</summary>
    public float[] SetState(double theta, double thetaDot)
    {
        _theta = theta;
        _thetaDot = thetaDot;
        return Observe();
    }

    /// <summary>Maps an angle to [−π, π), with a floored (always non-negative) modulo like the reference.</summary>
    public static double AngleNormalize(double x)
    {
        double twoPi = 2.0 * Math.PI;
        double m = (x + Math.PI) % twoPi;
        if (m < 0) m += twoPi;
        return m - Math.PI;
    }

    protected override float[] ResetCore()
    {
        _theta = Uniform(-Math.PI, Math.PI);
        _thetaDot = Uniform(-1.0, 1.0);
        return Observe();
    }

    protected override (float[] Observation, double Reward, bool Terminated) StepCore(float[] action)
    {
        double u = Math.Clamp((double)action[0], -MaxTorque, MaxTorque);
        double th = AngleNormalize(_theta);
        double cost = th * th + 0.1 * _thetaDot * _thetaDot + 0.001 * u * u;

        double acc = 3.0 * Gravity / (2.0 * Length) * Math.Sin(_theta) + 3.0 / (Mass * Length * Length) * u;
        _thetaDot = Math.Clamp(_thetaDot + acc * Dt, -MaxSpeed, MaxSpeed);
        _theta += _thetaDot * Dt;
        return (Observe(), -cost, false);
    }

    float[] Observe() => [(float)Math.Cos(_theta), (float)Math.Sin(_theta), (float)_thetaDot];
}
