namespace MetaGenRL.Core.Envs;

/// <summary>
/// Pendulum-v1: swing a frictionless pendulum up and keep it upright with a bounded torque. θ = 0 is upright;
/// the dynamics are semi-implicit Euler (the new velocity moves the angle). The reward is the negative cost of
/// the state <i>before</i> the update, and the episode never terminates: it is only truncated at 200 steps.
/// As an env family (<see cref="IParameterisedEnv"/>) its gravity, mass, length and motor strength vary; the action
/// box stays ±2 and the motor applies a·torque/2, so a family member differs in physics only.
/// </summary>
public sealed class PendulumEnv : ParameterisedEnvBase
{
    /// <summary>The nominal (gym) values.</summary>
    public const double Gravity = 10.0, Mass = 1.0, Length = 1.0, Dt = 0.05, MaxSpeed = 8.0, MaxTorque = 2.0;

    /// <summary>gravity, mass, length, torque (the motor's largest torque): training ranges ±20 % of nominal, held-out
    /// bands out to ±40 %.</summary>
    public static IReadOnlyList<EnvParameter> FamilyParameters { get; } =
    [
        new("gravity", Gravity, 8.0, 12.0, 6.0, 14.0),
        new("mass", Mass, 0.8, 1.2, 0.6, 1.4),
        new("length", Length, 0.8, 1.2, 0.6, 1.4),
        new("torque", MaxTorque, 1.6, 2.4, 1.2, 2.8),
    ];

    static readonly float[] Low = [-(float)MaxTorque], High = [(float)MaxTorque];

    double _theta, _thetaDot;

    public PendulumEnv(int seed) : base("Pendulum-v1", seed, maxEpisodeSteps: 200, FamilyParameters) { }

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
        double g = Param(0), m = Param(1), l = Param(2), torque = Param(3);
        double u = Math.Clamp((double)action[0], -MaxTorque, MaxTorque) * (torque / MaxTorque);
        double th = AngleNormalize(_theta);
        double cost = th * th + 0.1 * _thetaDot * _thetaDot + 0.001 * u * u;

        double acc = 3.0 * g / (2.0 * l) * Math.Sin(_theta) + 3.0 / (m * l * l) * u;
        _thetaDot = Math.Clamp(_thetaDot + acc * Dt, -MaxSpeed, MaxSpeed);
        _theta += _thetaDot * Dt;
        return (Observe(), -cost, false);
    }

    float[] Observe() => [(float)Math.Cos(_theta), (float)Math.Sin(_theta), (float)_thetaDot];
}
