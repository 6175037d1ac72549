namespace MetaGenRL.Core.Envs;

/// <summary>The result of one environment step, with gym's terminated/truncated split.</summary>
/// <param name="Observation">[obs] the observation after the step.</param>
/// <param name="Reward">the step's reward.</param>
/// <param name="Terminated">a true terminal state (fall, crash, landing).</param>
/// <param name="Truncated">the episode hit its time limit without terminating.</param>
public sealed record StepResult(float[] Observation, double Reward, bool Terminated, bool Truncated)
{
    /// <summary>The episode is over, for either reason.</summary>
    public bool Done => Terminated || Truncated;
}

/// <summary>A seeded, deterministic single environment with a continuous action box.</summary>
public interface IEnv : IDisposable
{
    /// <summary>The gym id, e.g. <c>HalfCheetah-v2</c>.</summary>
    string Id { get; }
    int ObservationSize { get; }
    int ActionSize { get; }
    /// <summary>[act] lower action bounds.</summary>
    float[] ActionLow { get; }
    /// <summary>[act] upper action bounds.</summary>
    float[] ActionHigh { get; }
    /// <summary>Steps after which an episode is truncated.</summary>
    int MaxEpisodeSteps { get; }
    /// <summary>Starts a new episode and returns its first observation [obs].</summary>
    float[] Reset();
    /// <summary>Applies <paramref name="action"/> [act]. Throws <see cref="ArgumentException"/> naming the
    /// env for a wrong-length or non-finite action.</summary>
    StepResult Step(float[] action);
}
