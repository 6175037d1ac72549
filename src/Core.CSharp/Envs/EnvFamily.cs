using MetaGenRL.Core.Randomness;

namespace MetaGenRL.Core.Envs;

/// <summary>
/// One physical parameter of an env family. Training draws come from the inner range [TrainLow, TrainHigh], which
/// holds the nominal value; held-out draws come from the band around it, [OuterLow, TrainLow) ∪ (TrainHigh, OuterHigh],
/// so a held-out env never repeats a training parameter.
/// </summary>
public sealed record EnvParameter(string Name, double Nominal, double TrainLow, double TrainHigh, double OuterLow, double OuterHigh)
{
    /// <summary>One uniform draw from the training range or the held-out band, from <paramref name="u"/> ∈ [0, 1).</summary>
    public double Draw(EnvParams mode, double u) => mode switch
    {
        EnvParams.Nominal => Nominal,
        EnvParams.Train => TrainLow + u * (TrainHigh - TrainLow),
        EnvParams.HeldOut => HeldOut(u),
        _ => throw new ArgumentOutOfRangeException(nameof(mode), mode, null),
    };

    /// <summary>u spread over the two held-out intervals in proportion to their widths.</summary>
    double HeldOut(double u)
    {
        double below = TrainLow - OuterLow, above = OuterHigh - TrainHigh, x = u * (below + above);
        return x < below ? OuterLow + x : TrainHigh + (x - below);
    }
}

/// <summary>Which parameters an env family's agents run with (config key <c>env_params</c>).</summary>
public enum EnvParams
{
    /// <summary><c>nominal</c>: the env as gym defines it.</summary>
    Nominal,
    /// <summary><c>train</c>: drawn per agent life from the training ranges.</summary>
    Train,
    /// <summary><c>held-out</c>: drawn per agent life from the held-out bands, outside every training range.</summary>
    HeldOut,
}

/// <summary>An env whose physics can be varied (Pendulum's gravity, mass, length and torque; MountainCar's power).
/// Parameters change only between episodes, and they are not part of the env's saved state: the agent that owns the
/// env derives them from its life's seed (<see cref="EnvFamily.Draw"/>) and sets them again after a restore.</summary>
public interface IParameterisedEnv : IEnv
{
    /// <summary>The family's parameters, in a fixed order.</summary>
    IReadOnlyList<EnvParameter> Parameters { get; }
    /// <summary>The current values, in <see cref="Parameters"/> order.</summary>
    IReadOnlyList<double> ParameterValues { get; }
    /// <summary>Sets every parameter (in <see cref="Parameters"/> order).</summary>
    /// <exception cref="InvalidOperationException">during an episode</exception>
    /// <exception cref="ArgumentException">wrong count, or a value that is not finite and positive</exception>
    void SetParameters(IReadOnlyList<double> values);
}

/// <summary>Parsing, drawing and checking of env-family parameters.</summary>
public static class EnvFamily
{
    /// <summary>The config spellings, in <see cref="EnvParams"/> order.</summary>
    public static IReadOnlyList<string> ModeNames { get; } = ["nominal", "train", "held-out"];

    public static EnvParams ParseMode(string s) => s switch
    {
        "nominal" => EnvParams.Nominal,
        "train" => EnvParams.Train,
        "held-out" => EnvParams.HeldOut,
        _ => throw new ArgumentException($"env_params: unknown value '{s}', expected one of {string.Join(", ", ModeNames)}"),
    };

    /// <summary>The parameters of life <paramref name="life"/> of the agent with seed <paramref name="agentSeed"/>: one uniform
    /// per parameter from that life's own generator, so a life's env is the same in every run, resume and restart.</summary>
    public static double[] Draw(IReadOnlyList<EnvParameter> parameters, EnvParams mode, long agentSeed, int life)
    {
        var rng = Seeds.Random(Seeds.LifeSeed(agentSeed, life), Seeds.EnvParamsStream);
        return parameters.Select(p => p.Draw(mode, rng.NextDouble())).ToArray();
    }

    /// <summary>Checks a <see cref="IParameterisedEnv.SetParameters"/> call; names the env and the parameter.</summary>
    public static void CheckValues(IParameterisedEnv env, IReadOnlyList<double> values)
    {
        if (values.Count != env.Parameters.Count)
            throw new ArgumentException($"{env.Id}: {values.Count} parameter values, expected {env.Parameters.Count} ({string.Join(", ", env.Parameters.Select(p => p.Name))})");
        for (int i = 0; i < values.Count; i++)
            if (!double.IsFinite(values[i]) || values[i] <= 0)
                throw new ArgumentException($"{env.Id}: parameter {env.Parameters[i].Name} = {values[i]}, expected a finite positive number");
    }
}

/// <summary>An <see cref="EnvBase"/> with physical parameters: holds their values (nominal at construction) and
/// lets them change only between episodes.</summary>
public abstract class ParameterisedEnvBase : EnvBase, IParameterisedEnv
{
    readonly double[] _values;

    protected ParameterisedEnvBase(string id, int seed, int maxEpisodeSteps, IReadOnlyList<EnvParameter> parameters)
        : base(id, seed, maxEpisodeSteps)
    {
        Parameters = parameters;
        _values = parameters.Select(p => p.Nominal).ToArray();
    }

    public IReadOnlyList<EnvParameter> Parameters { get; }
    public IReadOnlyList<double> ParameterValues => _values.ToArray();

    public void SetParameters(IReadOnlyList<double> values)
    {
        if (!AtEpisodeBoundary)
            throw new InvalidOperationException($"{Id}: parameters can only change between episodes (step {ElapsedSteps} of a running episode)");
        EnvFamily.CheckValues(this, values);
        for (int i = 0; i < _values.Length; i++) _values[i] = values[i];
    }

    /// <summary>The current value of parameter <paramref name="index"/>.</summary>
    protected double Param(int index) => _values[index];
}
