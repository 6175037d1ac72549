using MetaGenRL.Core.Agents;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaGenRL.Core.Objective;

/// <summary>A policy objective that also reports the DDPG loss −mean Q1(s, π(s)) of the batch it last saw
/// (the official <c>policy_loss</c> diagnostic), as a detached 0-d tensor owned by the objective: it outlives the
/// policy step's dispose scope and stays valid until the next <see cref="IPolicyObjective.Loss"/> call.</summary>
public interface IDiagnosedObjective : IPolicyObjective
{
    /// <summary>−masked mean of Q1(s, π(s)) over the last <see cref="IPolicyObjective.Loss"/> batch; null before.</summary>
    Tensor? LastValueLoss { get; }
}

static class Diagnostic
{
    /// <summary>Replaces <paramref name="slot"/> with a detached copy of <paramref name="value"/> kept out of every dispose scope.</summary>
    public static void Keep(ref Tensor? slot, Tensor value)
    {
        slot?.Dispose();
        slot = value.detach().clone();
        slot.DetachFromDisposeScope();
    }
}

/// <summary>Builds the inputs every objective sees from a trajectory batch: V_t = Q1(s_t, π_φ(s_t)) from the main
/// Q1 and V_T = Q1(s'_{T−1}, π_φ(s'_{T−1})) (the next state after the last window step, even when it is padding).</summary>
public static class ObjectiveBatch
{
    /// <param name="agent">networks (main Q1 is used)</param>
    /// <param name="phi">policy parameters whose values V are (V_t from <paramref name="valueAct"/> when given, else from
    /// <paramref name="policyAct"/>; V_T from π_phi)</param>
    /// <param name="bt">windows [B, T, …]</param>
    /// <param name="policyAct">[B·T, act] π_φ(s), differentiable in φ</param>
    /// <param name="qWithGrad">also return Q1(s, π(s)) with its gradient (annealing, q-input)</param>
    /// <param name="valueAct">[B·T, act] π_phi(s) when <paramref name="policyAct"/> comes from another (updated) policy</param>
    /// <returns>the L_α inputs (Values [B, T+1] detached) and Q1(s, π(s)) [B·T] (with gradient when asked, else detached)</returns>
    public static (ObjectiveInputs Inputs, Tensor Q) Build(Td3Agent agent, IReadOnlyList<Tensor> phi, TrajectoryTensors bt,
                                                           Tensor policyAct, bool qWithGrad, bool qInput = false,
                                                           Tensor? valueAct = null)
    {
        long B = bt.B, T = bt.T, A = agent.ActSize;
        if (policyAct.shape.Length != 2 || policyAct.shape[0] != B * T || policyAct.shape[1] != A)
            throw new ArgumentException($"objective batch: policy actions [{string.Join(", ", policyAct.shape)}], expected [{B * T}, {A}]");
        var s = bt.Obs.reshape(B * T, agent.ObsSize);
        Tensor q, v, vT;
        if (qWithGrad) { q = agent.Q(agent.Q1, s, policyAct); v = q.detach(); }
        else using (no_grad()) { q = v = agent.Q(agent.Q1, s, policyAct.detach()); }
        if (valueAct is not null) using (no_grad()) v = agent.Q(agent.Q1, s, valueAct.detach());
        using (no_grad())
        {
            var sLast = bt.NextObs.select(1, T - 1);                                  // [B, obs]
            vT = agent.Q(agent.Q1, sLast, agent.Pi(phi, sLast));                       // [B]
        }
        var values = torch.cat([v.reshape(B, T), vT.unsqueeze(1)], 1);                // [B, T+1]
        var inputs = new ObjectiveInputs(bt.Act, policyAct.reshape(B, T, A), bt.Rew, bt.Done, bt.Mask, values,
                                         qInput ? q.reshape(B, T) : null);
        return (inputs, q);
    }
}

/// <summary>
/// The policy loss through the learned objective (the official inner policy update): masked mean (÷ B·T) of
/// L̃ = p·L_α − (1−p)·Q1(s, π(s)), p = min(1, t_env / anneal_steps) (anneal_steps 0 ⇒ p = 1). Q1 in the anneal term
/// keeps its gradient; V inside L_α is stop-gradient, so with p = 1 the policy enters only through the action pairs.
/// α is read, never updated here.
/// </summary>
public sealed class LearnedObjective(ObjectiveSpec spec, IReadOnlyList<Tensor> alpha, long annealSteps, bool paperQuirks)
    : IDiagnosedObjective
{
    public ObjectiveSpec Spec { get; } = spec;
    public IReadOnlyList<Tensor> Alpha { get; } = alpha;
    /// <summary>obj_func_anneal_steps (0 at meta-test).</summary>
    public long AnnealSteps { get; } = annealSteps;
    public bool PaperQuirks { get; } = paperQuirks;
    public Tensor? LastValueLoss => _lastValueLoss;
    Tensor? _lastValueLoss;

    /// <summary>p = min(1, t_env / annealSteps); 1 when annealSteps is 0.</summary>
    public static double AnnealFraction(long envStep, long annealSteps) =>
        annealSteps <= 0 ? 1.0 : Math.Min(1.0, (double)envStep / annealSteps);

    /// <summary>L̃ = p·L − (1−p)·Q (element-wise; L is returned unchanged when p = 1).</summary>
    public static Tensor Anneal(Tensor loss, Tensor q, double p) => p >= 1.0 ? loss : loss.mul(p).sub(q.mul(1.0 - p));

    public Tensor Loss(PolicyLossContext ctx)
    {
        var agent = ctx.Agent;
        double p = AnnealFraction(ctx.EnvStep, AnnealSteps);
        var (x, q) = ObjectiveBatch.Build(agent, agent.Policy, ctx.Batch, ctx.PolicyAction, qWithGrad: p < 1.0 || Spec.UseQ, Spec.UseQ);
        var mask = ctx.Batch.Mask.reshape(-1);
        Diagnostic.Keep(ref _lastValueLoss, Td3Agent.MaskedMean(q.detach(), mask).neg());
        var l = ObjectiveNetwork.Forward(Spec, Alpha, x, PaperQuirks).reshape(-1);    // [B·T]
        return Td3Agent.MaskedMean(Anneal(l, q, p), mask);
    }
}

/// <summary>
/// The fixed off-policy REINFORCE-with-GAE objective (the official <c>reinforce</c> config):
/// L_t = mean_k (a_{t,k} − π(s_t)_k)² · Â_t · c with c = 1, Â = GAE(γ, λ = gae_factor) inside the window on
/// V = Q1(s, π(s)); no gradient through Â. Policy loss = masked mean over B·T.
/// </summary>
public sealed class ReinforceObjective(double gamma, double lambda, bool plusD) : IDiagnosedObjective
{
    public Tensor? LastValueLoss => _lastValueLoss;
    Tensor? _lastValueLoss;

    /// <summary>
    /// GAE inside each window: δ_t = r_t + γ(1−d_t)V_{t+1} (+ d_t with <paramref name="plusD"/>, the official quirk) − V_t,
    /// Â_t = Σ_{l ≥ t} (γλ)^{l−t} δ_l. Like the official discounted cumsum, the sum does not stop at terminals or padding.
    /// </summary>
    /// <param name="rew">[B, T]</param><param name="done">[B, T]</param><param name="values">[B, T+1]</param>
    /// <returns>[B, T], no gradient</returns>
    public static Tensor Gae(Tensor rew, Tensor done, Tensor values, double gamma, double lambda, bool plusD)
    {
        long B = rew.shape[0], T = rew.shape[1];
        if (done.shape.Length != 2 || !done.shape.SequenceEqual(rew.shape) || !values.shape.SequenceEqual(new[] { B, T + 1 }))
            throw new ArgumentException("GAE: expected rew, done [B, T] and values [B, T+1]");
        using var _ = no_grad();
        var v = values.detach();
        var delta = rew.add(done.neg().add(1.0).mul(v.narrow(1, 1, T)).mul(gamma)).sub(v.narrow(1, 0, T));
        if (plusD) delta = delta.add(done);
        // Â = δ · M with M[l, t] = (γλ)^{l−t} for l ≥ t: one matmul instead of a T-step loop
        var idx = torch.arange(T, ScalarType.Float64);
        var pow = idx.unsqueeze(1).sub(idx.unsqueeze(0));                              // [l, t] = l − t
        var disc = torch.where(pow.ge(0), torch.pow(gamma * lambda, pow.clamp_min(0)), 0.0).to(rew.dtype, rew.device);
        return delta.matmul(disc);
    }

    public Tensor Loss(PolicyLossContext ctx)
    {
        var agent = ctx.Agent;
        var (x, q) = ObjectiveBatch.Build(agent, agent.Policy, ctx.Batch, ctx.PolicyAction, qWithGrad: false);
        var mask = ctx.Batch.Mask.reshape(-1);
        Diagnostic.Keep(ref _lastValueLoss, Td3Agent.MaskedMean(q, mask).neg());
        var adv = Gae(x.Rew, x.Done, x.Values, gamma, lambda, plusD);                 // [B, T]
        var l = x.Act.sub(x.PolicyAct).square().mean([-1]).mul(adv);                 // [B, T]
        return Td3Agent.MaskedMean(l.reshape(-1), mask);
    }
}

/// <summary>The DDPG/TD3 actor loss that also reports <see cref="IDiagnosedObjective.LastValueLoss"/>.</summary>
public sealed class DiagnosedCriticValueObjective : IDiagnosedObjective
{
    public Tensor? LastValueLoss => _lastValueLoss;
    Tensor? _lastValueLoss;
    public Tensor Loss(PolicyLossContext ctx)
    {
        var loss = CriticValueObjective.Instance.Loss(ctx);
        Diagnostic.Keep(ref _lastValueLoss, loss);
        return loss;
    }
}
