namespace MetaGenRL.Core.Engine;

/// <summary>One metric observation, as it flows from a trainer to a writer (one tidy row).</summary>
/// <param name="EnvStep">the agent's environment step count when it was observed.</param>
/// <param name="Name">metric name, e.g. <c>episode_return</c>, <c>critic_loss</c>, <c>sps</c>.</param>
/// <param name="Value">the value.</param>
/// <param name="Agent">agent index within the population (0 for single-agent runs).</param>
public readonly record struct Metric(long EnvStep, string Name, double Value, int Agent = 0);
