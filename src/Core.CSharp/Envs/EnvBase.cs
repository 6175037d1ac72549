using MetaGenRL.Core.Randomness;

namespace MetaGenRL.Core.Envs;

/// <summary>
/// Shared plumbing for every environment: action validation, the time limit (truncation), the episode
/// state machine and the seeded generator. Subclasses implement only the dynamics.
/// </summary>
/// <remarks>
/// Checkpoint contract: an env is checkpointed only between episodes (<see cref="AtEpisodeBoundary"/>: before the
/// first <see cref="Reset"/> or after a step that ended the episode). There the dynamics hold nothing that the
/// next episode reads (<see cref="ResetCore"/> rebuilds them from <see cref="Rng"/> alone), so the env's whole
/// state is its generator: <see cref="GetRngState"/> on one env and <see cref="SetRngState"/> on a fresh env of
/// the same id give identical next episodes. The population member therefore resets lazily, at the first step of
/// the next collection, never eagerly after an episode ends. A subclass that carries state across episodes
/// breaks this contract.
/// </remarks>
public abstract class EnvBase : IEnv
{
    int _t;
    bool _needsReset = true;

    protected EnvBase(string id, int seed, int maxEpisodeSteps)
    {
        Id = id;
        MaxEpisodeSteps = maxEpisodeSteps;
        Rng = new SeededRandom(seed);
    }

    public string Id { get; }
    public abstract int ObservationSize { get; }
    public abstract int ActionSize { get; }
    public abstract float[] ActionLow { get; }
    public abstract float[] ActionHigh { get; }
    public int MaxEpisodeSteps { get; }
    /// <summary>Steps taken in the current episode.</summary>
    public int ElapsedSteps => _t;

    /// <summary>The environment's own generator, seeded by the constructor (reset noise, terrain, …).</summary>
    protected SeededRandom Rng { get; }

    /// <summary>True between episodes: before the first <see cref="Reset"/>, or after a step that terminated or
    /// truncated the episode. Only then is the env's state just its generator (see the class remarks).</summary>
    public bool AtEpisodeBoundary => _needsReset;

    /// <summary>The generator's state (<see cref="SeededRandom.GetState"/>); the env's whole state between episodes.</summary>
    /// <exception cref="InvalidOperationException">mid-episode, where the dynamics would be lost</exception>
    public ulong[] GetRngState()
    {
        if (!_needsReset)
            throw new InvalidOperationException($"{Id}: the env state can only be saved between episodes (step {_t} of a running episode)");
        return Rng.GetState();
    }

    /// <summary>Restores a state from <see cref="GetRngState"/>. Any running episode is abandoned: the next call
    /// must be <see cref="Reset"/>, which then starts the same episode the saved env would have started.</summary>
    public void SetRngState(ulong[] state)
    {
        Rng.SetState(state);
        _t = 0;
        _needsReset = true;
    }

    /// <summary>Ends a running episode without finishing it (a step budget stopped it mid-way): the env is at an
    /// episode boundary again, its state just its generator; the next call must be <see cref="Reset"/>.</summary>
    public void AbandonEpisode()
    {
        _t = 0;
        _needsReset = true;
    }

    public float[] Reset()
    {
        _t = 0;
        _needsReset = false;
        return ResetCore();
    }

    public StepResult Step(float[] action)
    {
        ArgumentNullException.ThrowIfNull(action);
        if (action.Length != ActionSize)
            throw new ArgumentException($"{Id}: action has length {action.Length}, expected {ActionSize}", nameof(action));
        for (int i = 0; i < action.Length; i++)
            if (!float.IsFinite(action[i]))
                throw new ArgumentException($"{Id}: action[{i}] is {action[i]}, actions must be finite", nameof(action));
        if (_needsReset)
            throw new InvalidOperationException($"{Id}: Step called before Reset or after the episode ended; call Reset first");
        var (obs, reward, terminated) = StepCore(action);
        _t++;
        bool truncated = !terminated && _t >= MaxEpisodeSteps;
        if (terminated || truncated) _needsReset = true;
        return new StepResult(obs, reward, terminated, truncated);
    }

    /// <summary>Resets the dynamics and returns the first observation.</summary>
    protected abstract float[] ResetCore();

    /// <summary>Advances the dynamics by one env step with a validated, finite action of the right length.</summary>
    protected abstract (float[] Observation, double Reward, bool Terminated) StepCore(float[] action);

    /// <summary>Uniform sample in [lo, hi).</summary>
    protected double Uniform(double lo, double hi) => lo + (hi - lo) * Rng.NextDouble();

    /// <summary>Standard normal sample (Box–Muller on the env's own generator).</summary>
    protected double Normal() => Rng.NextGaussian();

    public virtual void Dispose() => GC.SuppressFinalize(this);
}
