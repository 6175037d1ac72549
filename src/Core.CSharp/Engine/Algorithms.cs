namespace MetaGenRL.Core.Engine;

/// <summary>What trains an agent's policy.</summary>
public enum Algorithm
{
    /// <summary>Learned L_α, annealed from −Q1 over obj_func_anneal_steps; computes meta-gradients.</summary>
    MetaTrain,
    /// <summary>Frozen L_α (loaded with <see cref="IAgentGroup.LoadObjective"/>), no annealing, no gradients.</summary>
    MetaTest,
    /// <summary>TD3 (the official <c>baseline()</c>): policy on −Q1.</summary>
    Td3,
    /// <summary>DDPG: one critic in the target, no smoothing noise, policy + targets every iteration.</summary>
    Ddpg,
    /// <summary>The fixed off-policy REINFORCE-with-GAE objective (official <c>reinforce_test</c>).</summary>
    Reinforce,
    /// <summary>A freshly initialised, never trained L_α per agent (seeded from the agent's seed), frozen, no annealing.</summary>
    RandomObjective,
    /// <summary>PPO with a Gaussian policy (<see cref="Agents.OnPolicySettings.Ppo"/>), on-policy.</summary>
    Ppo,
    /// <summary>On-policy REINFORCE with a GAE advantage (<see cref="Agents.OnPolicySettings.Reinforce"/>).</summary>
    ReinforceOnPolicy,
}

/// <summary>The one list of algorithm names the CLI, the experiment DSL and the results use.</summary>
public static class Algorithms
{
    static readonly (string Name, Algorithm Algo)[] All =
    [
        ("td3", Algorithm.Td3), ("ddpg", Algorithm.Ddpg), ("reinforce-offpolicy", Algorithm.Reinforce),
        ("random-objective", Algorithm.RandomObjective), ("ppo", Algorithm.Ppo), ("reinforce-onpolicy", Algorithm.ReinforceOnPolicy),
        ("meta-test", Algorithm.MetaTest), ("meta-train", Algorithm.MetaTrain),
    ];

    /// <summary>The fixed algorithms (<c>train --algo</c>, experiment baselines).</summary>
    public static IReadOnlyList<string> Baselines { get; } = ["td3", "ddpg", "reinforce-offpolicy", "random-objective", "ppo", "reinforce-onpolicy"];

    /// <summary>Every name, baselines first.</summary>
    public static IReadOnlyList<string> Names { get; } = All.Select(a => a.Name).ToArray();

    /// <summary>The algorithm of a name; an unknown name is an error listing the valid ones.</summary>
    public static Algorithm Parse(string name)
    {
        foreach (var (n, a) in All) if (n == name) return a;
        throw new ArgumentException($"unknown algorithm '{name}'; expected one of {string.Join(", ", Names)}");
    }

    /// <summary>The name of an algorithm.</summary>
    public static string Name(Algorithm algo) => All.First(a => a.Algo == algo).Name;

    /// <summary>True for the algorithms whose policy is trained through an L_α (learned, frozen or random).</summary>
    public static bool UsesObjectiveNetwork(Algorithm a) => a is Algorithm.MetaTrain or Algorithm.MetaTest or Algorithm.RandomObjective;

    /// <summary>True for the on-policy baselines (their agents are <see cref="OnPolicyGroup"/>s).</summary>
    public static bool IsOnPolicy(Algorithm a) => a is Algorithm.Ppo or Algorithm.ReinforceOnPolicy;
}
