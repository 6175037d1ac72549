
namespace MetaGenRL.Core.Envs;

/// <summary>
/// A tiny deterministic 1-D point mass for tests and smoke runs (not in <see cref="EnvRegistry"/>).
/// State (x, v); action a ∈ [−1, 1] is a force: v ← 0.9·v + 0.1·a, x ← x + 0.1·v. Reward −(x² + 0.01·a²).
/// Starts at x ~ U(−1, 1), v = 0. Terminates when |x| &gt; 3 (so both terminated and truncated ends occur);
/// truncates after <c>maxEpisodeSteps</c>. Observation [x, v].
/// </summary>
public sealed class PointMassEnv : EnvBase
{
    double _x, _v;

    public PointMassEnv(int seed, int maxEpisodeSteps = 50) : base("PointMass-v0", seed, maxEpisodeSteps) { }

    public override int ObservationSize => 2;
    public override int ActionSize => 1;
    public override float[] ActionLow => [-1f];
    public override float[] ActionHigh => [1f];

    protected override float[] ResetCore()
    {
        _x = Uniform(-1, 1);
        _v = 0;
        return [(float)_x, (float)_v];
    }

    protected override (float[] Observation, double Reward, bool Terminated) StepCore(float[] action)
    {
        double a = Math.Clamp(action[0], -1f, 1f);
        _v = 0.9 * _v + 0.1 * a;
        _x += 0.1 * _v;
        double reward = -(_x * _x + 0.01 * a * a);
        return ([(float)_x, (float)_v], reward, Math.Abs(_x) > 3);
    }
}
