using TorchSharp;
using static TorchSharp.torch;

namespace MetaGenRL.Core.Agents;

/// <summary>
/// The formulas of the on-policy baselines (PPO, on-policy REINFORCE), as pure functions that tests check against
/// hand-computed values.
/// </summary>
public static class OnPolicyMath
{
    /// <summary>
    /// Generalised advantage estimation (Schulman et al. 2016) over one slot's rollout of whole episodes, in time
    /// order: δ_t = r_t + γ·V'_t − V(s_t), where V'_t is 0 after a terminal step, the value of the true next state
    /// after a truncated one (time limit or budget) and V(s_{t+1}) otherwise; Â_t = δ_t + γλ·Â_{t+1}, restarted at
    /// every episode end. Returns (advantages, returns = Â + V), both in float64.
    /// </summary>
    /// <param name="rewards">r_t</param>
    /// <param name="values">V(s_t)</param>
    /// <param name="nextValues">V of the step's next state; read only where <paramref name="ends"/> says truncated
    /// (otherwise V(s_{t+1}) = values[t+1] is used)</param>
    /// <param name="ends">0: the episode goes on; 1: terminated; 2: truncated</param>
    public static (double[] Advantages, double[] Returns) Gae(double[] rewards, double[] values, double[] nextValues,
                                                               byte[] ends, double gamma, double lambda)
    {
        int n = rewards.Length;
        if (values.Length != n || nextValues.Length != n || ends.Length != n)
            throw new ArgumentException($"GAE: {n} rewards, {values.Length} values, {nextValues.Length} next values, {ends.Length} ends");
        if (n > 0 && ends[n - 1] == 0) throw new ArgumentException("GAE: the rollout must end at an episode end (terminated or truncated)");
        var adv = new double[n];
        var ret = new double[n];
        double next = 0;
        for (int t = n - 1; t >= 0; t--)
        {
            double bootstrap = ends[t] switch { 1 => 0, 2 => nextValues[t], _ => values[t + 1] };
            double delta = rewards[t] + gamma * bootstrap - values[t];
            next = delta + (ends[t] == 0 ? gamma * lambda * next : 0);
            adv[t] = next;
            ret[t] = next + values[t];
        }
        return (adv, ret);
    }

    /// <summary>log N(a; μ, diag(σ²)) summed over the last dim: −½((a−μ)/σ)² − log σ − ½ log 2π per dim.</summary>
    public static Tensor GaussianLogProb(Tensor action, Tensor mean, Tensor logStd) =>
        GaussianLogProbPerDim(action, mean, logStd).sum(-1);

    /// <summary>The per-dim terms of <see cref="GaussianLogProb"/> (for a sum over some dims only).</summary>
    public static Tensor GaussianLogProbPerDim(Tensor action, Tensor mean, Tensor logStd)
    {
        var z = (action - mean) / logStd.exp();
        return z.square().mul(-0.5) - logStd - 0.5 * Math.Log(2 * Math.PI);
    }

    /// <summary>Entropy of N(μ, diag(σ²)) summed over the last dim: Σ (log σ + ½ log 2πe).</summary>
    public static Tensor GaussianEntropy(Tensor logStd) => (logStd + 0.5 * Math.Log(2 * Math.PI * Math.E)).sum(-1);

    /// <summary>
    /// PPO's clipped surrogate loss (Schulman et al. 2017), per slot: −mean_i min(ρ_i·Â_i, clip(ρ_i, 1−ε, 1+ε)·Â_i)
    /// with ρ = exp(log π − log π_old), over the last dim. ε ≤ 0 means no clipping: −mean(ρ·Â), whose gradient at
    /// π = π_old is REINFORCE's −mean(∇log π·Â).
    /// </summary>
    /// <param name="mask">1 for the samples to average, 0 for padding (all when null)</param>
    public static Tensor ClippedSurrogate(Tensor logProb, Tensor oldLogProb, Tensor advantages, double clip, Tensor? mask = null)
    {
        var ratio = (logProb - oldLogProb).exp();
        var surrogate = ratio * advantages;
        if (clip > 0) surrogate = torch.minimum(surrogate, ratio.clamp(1 - clip, 1 + clip) * advantages);
        if (mask is null) return surrogate.mean([-1L]).neg();
        return ((surrogate * mask).sum(-1) / mask.sum(-1).clamp_min(1)).neg();
    }
}
