namespace MetaGenRL.Core.Envs;

/// <summary>
/// MountainCarContinuous-v0: an under-powered car in a valley (height ∝ sin 3x) must rock back and forth to
/// reach the flag at x = 0.45. Reaching it with non-negative velocity terminates with +100; every step costs
/// 0.1·a² on the <i>raw</i> action, while the force itself uses the clipped one. Truncated at 999 steps.
/// As an env family (<see cref="IParameterisedEnv"/>) the engine's power varies.
/// </summary>
public sealed class MountainCarContinuousEnv : ParameterisedEnvBase
{
    /// <summary>power: training range ±1/6 of nominal, held-out bands out to ±1/3.</summary>
    public static IReadOnlyList<EnvParameter> FamilyParameters { get; } =
        [new("power", Power, 0.00125, 0.00175, 0.001, 0.002)];

    public const double MinPosition = -1.2, MaxPosition = 0.6, MaxSpeed = 0.07, GoalPosition = 0.45,
        GoalVelocity = 0.0, Power = 0.0015;

    static readonly float[] Low = [-1f], High = [1f];

    double _position, _velocity;

    public MountainCarContinuousEnv(int seed) : base("MountainCarContinuous-v0", seed, maxEpisodeSteps: 999, FamilyParameters) { }

    public override int ObservationSize => 2;
    public override int ActionSize => 1;
    public override float[] ActionLow => (float[])Low.Clone();
    public override float[] ActionHigh => (float[])High.Clone();

    public double Position => _position;
    public double Velocity => _velocity;

    /// <summary>Overwrites the state (tests, diagnostics); call after <see cref="EnvBase.Reset"/>. Returns the observation.</summary>
    public float[] SetState(double position, double velocity)
    {
        _position = position;
        _velocity = velocity;
        return Observe();
    }

    protected override float[] ResetCore()
    {
        _position = Uniform(-0.6, -0.4);
        _velocity = 0.0;
        return Observe();
    }

    protected override (float[] Observation, double Reward, bool Terminated) StepCore(float[] action)
    {
        double raw = action[0];
        double force = Math.Clamp(raw, -1.0, 1.0);

        _velocity += force * Param(0) - 0.0025 * Math.Cos(3.0 * _position);
        _velocity = Math.Clamp(_velocity, -MaxSpeed, MaxSpeed);
        _position = Math.Clamp(_position + _velocity, MinPosition, MaxPosition);
        // The left wall is inelastic: the car stops dead instead of bouncing.
        if (_position == MinPosition && _velocity < 0) _velocity = 0.0;

        bool terminated = _position >= GoalPosition && _velocity >= GoalVelocity;
        double reward = (terminated ? 100.0 : 0.0) - 0.1 * raw * raw;
        return (Observe(), reward, terminated);
    }

    float[] Observe() => [(float)_position, (float)_velocity];
}
