using MetaGenRL.Core.Agents;
using MetaGenRL.Core.Torch;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaGenRL.Core.Objective;

/// <summary>A policy objective that also reports the DDPG loss −mean Q1(s, π(s)) per slot [K] of the batch it last saw
/// (the official <c>policy_loss</c> diagnostic), as a detached 0-d tensor owned by the objective: it outlives the
/// policy step's dispose scope and stays valid until the next <see cref="IPolicyObjective.Loss"/> call.</summary>
public interface IDiagnosedObjective : IPolicyObjective
{
    /// <summary>[K] −masked mean of Q1(s, π(s)) over the last <see cref="IPolicyObjective.Loss"/> batch; null before.</summary>
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

/// <summary>Builds the inputs every objective sees from a group's trajectory batch: V_t = Q1(s_t, π_φ(s_t)) from the
/// main Q1 and V_T = Q1(s'_{T−1}, π_φ(s'_{T−1})) (the next state after the last window step, even when it is padding).</summary>
public static class ObjectiveBatch
{
    /// <param name="group">networks (main Q1 is used)</param>
    /// <param name="phi">stacked policy parameters whose values V are (V_t from <paramref name="valueAct"/> when given,
    /// else from <paramref name="policyAct"/>; V_T from π_phi)</param>
    /// <param name="bt">windows [K, B, T, …]</param>
    /// <param name="policyAct">[K, B·T, act] π_φ(s), differentiable in φ</param>
    /// <param name="qWithGrad">also return Q1(s, π(s)) with its gradient (annealing, q-input)</param>
    /// <param name="valueAct">[K, B·T, act] π_phi(s) when <paramref name="policyAct"/> comes from another (updated) policy</param>
    /// <returns>the L_α inputs (Values [K, B, T+1] detached) and Q1(s, π(s)) [K, B·T] (with gradient when asked, else detached)</returns>
    public static (ObjectiveInputs Inputs, Tensor Q) Build(Td3Group group, IReadOnlyList<Tensor> phi, TrajectoryTensors bt,
                                                           Tensor policyAct, bool qWithGrad, bool qInput = false,
                                                           Tensor? valueAct = null)
    {
        long K = bt.K, B = bt.B, T = bt.T, A = group.ActSize;
        if (policyAct.shape.Length != 3 || policyAct.shape[0] != K || policyAct.shape[1] != B * T || policyAct.shape[2] != A)
            throw new ArgumentException($"objective batch: policy actions [{string.Join(", ", policyAct.shape)}], expected [{K}, {B * T}, {A}]");
        var s = bt.Obs.reshape(K, B * T, group.ObsSize);
        Tensor q, v, vT;
        if (qWithGrad) { q = group.Q(group.Q1, s, policyAct); v = q.detach(); }
        else using (no_grad()) { q = v = group.Q(group.Q1, s, policyAct.detach()); }
        if (valueAct is not null) using (no_grad()) v = group.Q(group.Q1, s, valueAct.detach());
        using (no_grad())
        {
            var sLast = bt.NextObs.select(2, T - 1);                                  // [K, B, obs]
            vT = group.Q(group.Q1, sLast, group.Pi(phi, sLast));                       // [K, B]
        }
        var values = torch.cat([v.reshape(K, B, T), vT.unsqueeze(2)], 2);             // [K, B, T+1]
        var inputs = new ObjectiveInputs(bt.Act, policyAct.reshape(K, B, T, A), bt.Rew, bt.Done, bt.Mask, values,
                                         qInput ? q.reshape(K, B, T) : null);
        return (inputs, q);
    }
}

/// <summary>
/// The policy loss through the learned objective, per slot: masked mean (÷ B·T) of L̃ = p·L_α − (1−p)·Q1(s, π(s)),
/// p = min(1, t_env / anneal_steps) from the slot's own env steps (anneal_steps 0 ⇒ p = 1). Q1 in the anneal term
/// keeps its gradient; V inside L_α is stop-gradient, so with p = 1 the policy enters only through the action pairs.
/// α (stacked [K, …], one copy per slot) is read, never updated here.
/// </summary>
public sealed class LearnedObjective(ObjectiveSpec spec, IReadOnlyList<Tensor> alpha, long annealSteps, bool officialMasking)
    : IDiagnosedObjective
{
    public ObjectiveSpec Spec { get; } = spec;
    public IReadOnlyList<Tensor> Alpha { get; } = alpha;
    /// <summary>obj_func_anneal_steps (0 at meta-test).</summary>
    public long AnnealSteps { get; } = annealSteps;
    public bool OfficialMasking { get; } = officialMasking;
    public Tensor? LastValueLoss => _lastValueLoss;
    Tensor? _lastValueLoss;

    /// <summary>When set, each <see cref="Loss"/> call also measures <see cref="LastAlignment"/> (one more backward
    /// through L_α and a critic forward and backward).</summary>
    public bool MeasureAlignment { get; set; }
    /// <summary>[K] the last measured alignment (see <see cref="Alignment"/>); null before the first measurement.
    /// Detached, owned by the objective like <see cref="LastValueLoss"/>.</summary>
    public Tensor? LastAlignment => _lastAlignment;
    Tensor? _lastAlignment;

    /// <summary>Whether L_α pushes each policy action the way the critic says it improves: per slot [K], the masked
    /// mean over steps of cos(−∂L_α/∂π(s), ∂Q1(s, a)/∂a at a = π(s)) over action dims. 1: every step moves up the
    /// critic's slope (the DDPG direction); 0: unrelated; −1: against it. Steps where L_α has no gradient count 0.</summary>
    /// <param name="l">[K, N] per-step L_α, differentiable in <paramref name="policyAct"/></param>
    /// <param name="policyAct">[K, N, act] π(s)</param>
    /// <param name="obs">[K, N, obs]</param>
    /// <param name="mask">[K, N]</param>
    public static Tensor Alignment(Td3Group group, Tensor l, Tensor policyAct, Tensor obs, Tensor mask)
    {
        // checked here: a c10::Error inside autograd.grad would abort the process
        if (!l.requires_grad) throw new InvalidOperationException("alignment: L_α has no graph to the policy actions");
        var gl = torch.autograd.grad([l.mul(mask).sum()], [policyAct], retain_graph: true)[0];   // [K, N, act]
        var a = policyAct.detach().requires_grad_(true);
        var gq = torch.autograd.grad([group.Q(group.Q1, obs, a).sum()], [a])[0];
        var cos = torch.nn.functional.cosine_similarity(gl.neg(), gq, dim: -1, eps: 1e-12);     // [K, N]
        return cos.detach().mul(mask).sum(1).div(mask.sum(1).clamp_min(1.0));   // over valid steps
    }

    /// <summary>p = min(1, t_env / annealSteps); 1 when annealSteps is 0.</summary>
    public static double AnnealFraction(long envStep, long annealSteps) =>
        annealSteps <= 0 ? 1.0 : Math.Min(1.0, (double)envStep / annealSteps);

    /// <summary>L̃ = p·L − (1−p)·Q element-wise with a per-slot p [K] (L is returned unchanged when every p is 1).
    /// L, Q: [K, N].</summary>
    public static Tensor Anneal(Tensor loss, Tensor q, double[] p)
    {
        if (p.All(x => x >= 1.0)) return loss;
        var pk = SlotScalars.Of(p, 2, loss.dtype, loss.device);
        return loss.mul(pk).sub(q.mul(pk.neg().add(1.0)));
    }

    public Tensor Loss(PolicyLossContext ctx)
    {
        var group = ctx.Group;
        var p = ctx.EnvSteps.Select(s => AnnealFraction(s, AnnealSteps)).ToArray();
        var (x, q) = ObjectiveBatch.Build(group, group.Policy, ctx.Batch, ctx.PolicyAction, qWithGrad: p.Any(v => v < 1.0) || Spec.UseQ, Spec.UseQ);
        var mask = ctx.Batch.Mask.flatten(1);
        Diagnostic.Keep(ref _lastValueLoss, Td3Group.MaskedMean(q.detach(), mask).neg());
        var l = ObjectiveNetwork.Forward(Spec, Alpha, x, OfficialMasking).flatten(1);    // [K, B·T]
        if (MeasureAlignment && ctx.PolicyAction.requires_grad)
            Diagnostic.Keep(ref _lastAlignment, Alignment(group, l, ctx.PolicyAction, ctx.Obs, mask));
        return Td3Group.MaskedMean(Anneal(l, q, p), mask);
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
    /// <param name="rew">[…, T]</param><param name="done">[…, T]</param><param name="values">[…, T+1]</param>
    /// <returns>[…, T], no gradient</returns>
    public static Tensor Gae(Tensor rew, Tensor done, Tensor values, double gamma, double lambda, bool plusD)
    {
        long T = rew.shape[^1];
        if (!done.shape.SequenceEqual(rew.shape) || !values.shape.SequenceEqual(rew.shape[..^1].Append(T + 1)))
            throw new ArgumentException("GAE: expected rew, done [..., T] and values [..., T+1]");
        using var _ = no_grad();
        var v = values.detach();
        var delta = rew.add(done.neg().add(1.0).mul(v.narrow(-1, 1, T)).mul(gamma)).sub(v.narrow(-1, 0, T));
        if (plusD) delta = delta.add(done);
        // Â = δ · M with M[l, t] = (γλ)^{l−t} for l ≥ t: one matmul instead of a T-step loop
        var idx = torch.arange(T, ScalarType.Float64);
        var pow = idx.unsqueeze(1).sub(idx.unsqueeze(0));                              // [l, t] = l − t
        var disc = torch.where(pow.ge(0), torch.pow(gamma * lambda, pow.clamp_min(0)), 0.0).to(rew.dtype, rew.device);
        return delta.matmul(disc);
    }

    public Tensor Loss(PolicyLossContext ctx)
    {
        var group = ctx.Group;
        var (x, q) = ObjectiveBatch.Build(group, group.Policy, ctx.Batch, ctx.PolicyAction, qWithGrad: false);
        var mask = ctx.Batch.Mask.flatten(1);
        Diagnostic.Keep(ref _lastValueLoss, Td3Group.MaskedMean(q, mask).neg());
        var adv = Gae(x.Rew, x.Done, x.Values, gamma, lambda, plusD);                 // [K, B, T]
        var l = x.Act.sub(x.PolicyAct).square().mean([-1]).mul(adv);                 // [K, B, T]
        return Td3Group.MaskedMean(l.flatten(1), mask);
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
