using MetaGenRL.Core.Config;

namespace MetaGenRL.Core.Agents;

/// <summary>
/// The settings an on-policy baseline runs with: its defaults (below, each with its source), replaced by any
/// <c>onpolicy_*</c> config key that is set. γ is the shared <c>discount_factor</c> (0.99).
/// </summary>
/// <param name="RolloutSteps">env steps per rollout (whole episodes until at least this many)</param>
/// <param name="Epochs">PPO: passes over a rollout; REINFORCE: value-function steps (the policy takes one)</param>
/// <param name="MinibatchSize">samples per step; 0: the whole rollout</param>
/// <param name="Clip">PPO's ε; 0: unclipped (REINFORCE)</param>
/// <param name="GaeLambda">GAE's λ</param>
/// <param name="PolicyLearningRate">Adam step size of the policy</param>
/// <param name="ValueLearningRate">Adam step size of the value function</param>
/// <param name="EntropyCoef">entropy bonus weight</param>
/// <param name="MaxGradNorm">per-network global-norm clip; 0: none</param>
/// <param name="NormalizeAdvantages">advantages to mean 0, std 1 per step's sample</param>
/// <param name="NormalizeObservations">running mean/variance observation normalisation</param>
/// <param name="Units">hidden units of both networks</param>
/// <param name="Depth">hidden layers + 1 of both networks</param>
/// <param name="PolicyEveryStep">the policy steps with every gradient step (PPO), or only with the first of a rollout (REINFORCE)</param>
public sealed record OnPolicySettings(long RolloutSteps, int Epochs, int MinibatchSize, double Clip, double GaeLambda,
                                      double PolicyLearningRate, double ValueLearningRate, double EntropyCoef,
                                      double MaxGradNorm, bool NormalizeAdvantages, bool NormalizeObservations,
                                      int Units, int Depth, bool PolicyEveryStep)
{
    /// <summary>PPO for continuous control as commonly benchmarked. Schulman et al. 2017 (Table 3, MuJoCo): horizon
    /// 2048, 10 epochs, minibatch 64, Adam 3·10⁻⁴, λ 0.95, ε 0.2, no entropy bonus, 2 hidden tanh layers of 64, a
    /// state-independent log-std; advantage normalisation and the 0.5 gradient clip as in Stable-Baselines3 and
    /// CleanRL's ppo_continuous_action. Observation normalisation is off unless asked for.</summary>
    public static OnPolicySettings Ppo { get; } = new(2048, 10, 64, 0.2, 0.95, 3e-4, 3e-4, 0.0, 0.5, true, false, 64, 3, true);

    /// <summary>On-policy REINFORCE with a GAE advantage (vanilla policy gradient), as OpenAI Spinning Up's VPG:
    /// 4000 steps per epoch, one policy step (Adam 3·10⁻⁴) on the whole rollout, 80 value steps (Adam 10⁻³), λ 0.97,
    /// normalised advantages, 2 hidden tanh layers of 64 (Spinning Up uses 64-64), no clipping.</summary>
    public static OnPolicySettings Reinforce { get; } = new(4000, 80, 0, 0.0, 0.97, 3e-4, 1e-3, 0.0, 0.0, true, false, 64, 3, false);

    /// <summary>The defaults <paramref name="defaults"/> with every <c>onpolicy_*</c> key of <paramref name="cfg"/> that is set.</summary>
    public static OnPolicySettings From(OnPolicySettings defaults, RunConfig cfg) => defaults with
    {
        RolloutSteps = cfg.OnPolicyRolloutSteps ?? defaults.RolloutSteps,
        Epochs = cfg.OnPolicyEpochs ?? defaults.Epochs,
        MinibatchSize = cfg.OnPolicyMinibatchSize ?? defaults.MinibatchSize,
        Clip = cfg.OnPolicyClip ?? defaults.Clip,
        GaeLambda = cfg.OnPolicyGaeLambda ?? defaults.GaeLambda,
        PolicyLearningRate = cfg.OnPolicyPolicyLearningRate ?? defaults.PolicyLearningRate,
        ValueLearningRate = cfg.OnPolicyValueLearningRate ?? defaults.ValueLearningRate,
        EntropyCoef = cfg.OnPolicyEntropyCoef ?? defaults.EntropyCoef,
        MaxGradNorm = cfg.OnPolicyMaxGradNorm ?? defaults.MaxGradNorm,
        NormalizeAdvantages = cfg.OnPolicyNormalizeAdvantages ?? defaults.NormalizeAdvantages,
        NormalizeObservations = cfg.OnPolicyNormalizeObservations ?? defaults.NormalizeObservations,
        Units = cfg.OnPolicyUnits ?? defaults.Units,
        Depth = cfg.OnPolicyDepth ?? defaults.Depth,
    };

    /// <summary>Gradient steps a rollout of <paramref name="steps"/> samples calls for: epochs × ⌊steps / minibatch⌋
    /// (a last partial minibatch is dropped; at least one per epoch), or epochs with the whole rollout.</summary>
    public long UpdatesFor(long steps) =>
        steps <= 0 ? 0 : Epochs * (MinibatchSize <= 0 ? 1 : Math.Max(1, steps / MinibatchSize));
}
