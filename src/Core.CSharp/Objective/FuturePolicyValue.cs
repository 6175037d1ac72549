using MetaGenRL.Core.Agents;
using MetaGenRL.Core.Config;
using MetaGenRL.Core.Torch;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaGenRL.Core.Objective;

/// <summary>How the inner (differentiable) policy update of the meta-gradient runs.</summary>
/// <param name="Steps">obj_func_second_order_steps (≥ 1); each step uses its own slice of B windows</param>
/// <param name="StepSize">obj_func_second_order_stepsize, applied to the gradient of the SUMMED objective</param>
/// <param name="Adam">obj_func_second_order_adam: differentiable Adam (fresh moments) instead of plain SGD</param>
/// <param name="Clip">clip_gradient: global-norm clip of the α-gradient</param>
/// <param name="PaperQuirks">L_α's short-window LSTM masking (see <see cref="ObjectiveNetwork.Forward"/>)</param>
/// <param name="Diagnostics">also compute policy_value_gain (one more policy and critic forward on the held-out slice)
/// and the correlation; NaN otherwise</param>
public sealed record InnerStepOptions(int Steps, double StepSize, bool Adam, double Clip, bool PaperQuirks, bool Diagnostics = true)
{
    public static InnerStepOptions FromConfig(RunConfig c) =>
        new(c.ObjFuncSecondOrderSteps, c.ObjFuncSecondOrderStepsize, c.ObjFuncSecondOrderAdam, c.ClipGradient, c.PaperQuirks);
}

/// <summary>One agent's meta-gradient and the diagnostics of §2.9.</summary>
/// <param name="Gradient">∇α(−J), clipped to global norm clip_gradient, flattened in α's layout</param>
/// <param name="ObjectiveLoss">−J</param>
/// <param name="PolicyValueGain">masked mean over valid steps of the held-out (last) slice of Q1(s, π_φ'(s)) − Q1(s, π_φ(s))</param>
/// <param name="CriticCorrelation">corr(−V, L_α) over the valid steps of the first slice</param>
/// <param name="GradientNorm">global norm before clipping</param>
public sealed record MetaGradient(float[] Gradient, double ObjectiveLoss, double PolicyValueGain, double CriticCorrelation, double GradientNorm);

/// <summary>
/// The second-order meta-gradient of MetaGenRL (official <c>Objective.future_policy_value</c>).
/// On a batch of (K+1)·B windows: K inner steps φ_{k+1} = φ_k − η·∇φ Σ_{slice k} m·L_α (each on its own slice of B
/// windows, graph kept), then J = masked mean over ALL windows of Q1(s, π_{φ_K}(s)) with the current main Q1, and
/// the gradient of −J with respect to α only (path α → L_α → g → φ' → π → Q1). Neither φ nor θ changes here.
/// </summary>
public static class FuturePolicyValue
{
    // ── META-OBJECTIVE ──

    /// <summary>−J as a 0-d tensor, differentiable in α, plus the detached diagnostics tensors.</summary>
    /// <param name="batch">[(K+1)·B, T, …]</param>
    public static (Tensor Loss, Tensor Gain, Tensor Corr) MetaLoss(Td3Agent agent, ObjectiveSpec spec, IReadOnlyList<Tensor> alpha,
                                                                    TrajectoryTensors batch, InnerStepOptions o)
    {
        int K = o.Steps;
        if (K < 1) throw new ArgumentException($"meta-gradient: inner steps must be ≥ 1, got {K}");
        if (batch.B % (K + 1) != 0) throw new ArgumentException($"meta-gradient: {batch.B} windows do not split into {K + 1} slices");
        long B = batch.B / (K + 1), T = batch.T, obs = agent.ObsSize;

        List<Tensor> phi = agent.Policy;
        List<Tensor>? m = null, v = null;
        Tensor? corr = null;
        for (int k = 0; k < K; k++)
        {
            // ── INNER STEP k ── on the k-th slice, on the SUM of m·L_α (not the mean)
            var slice = Slice(batch, k * B, B);
            var s = slice.Obs.reshape(B * T, obs);
            var aPi = agent.Pi(phi, s);
            // V (stop-gradient) always comes from the pre-update policy φ_0, so it is data, independent of α,
            // and ∇α(−J) is the exact total derivative (later inner steps see V of φ_0, not of φ_k)
            Tensor? valueAct = null;
            if (k > 0) using (no_grad()) valueAct = agent.Pi(agent.Policy, s);
            var (x, q) = ObjectiveBatch.Build(agent, agent.Policy, slice, aPi, qWithGrad: spec.UseQ, spec.UseQ, valueAct);
            var l = ObjectiveNetwork.Forward(spec, alpha, x, o.PaperQuirks);                      // [B, T]
            var inner = l.mul(slice.Mask).sum();
            if (k == 0 && o.Diagnostics) corr = Correlation(q.detach().neg(), l.detach().reshape(-1), slice.Mask.reshape(-1));
            if (!inner.requires_grad)   // checked here: a c10::Error inside autograd.grad would abort the process
                throw new InvalidOperationException("meta-gradient: the inner objective has no graph (called under no_grad?)");
            var g = torch.autograd.grad([inner], phi, retain_graph: true, create_graph: true).ToList();
            phi = o.Adam ? AdamStep(phi, g, ref m, ref v, k + 1, o.StepSize) : phi.Zip(g, (p, gp) => p.sub(gp.mul(o.StepSize))).ToList();
        }

        // ── OUTER VALUE ── J over all (K+1)·B windows with the main Q1
        var sAll = batch.Obs.reshape(batch.B * T, obs);
        var qNew = agent.Q(agent.Q1, sAll, agent.Pi(phi, sAll));                                    // [(K+1)·B·T]
        var mask = batch.Mask.reshape(-1);
        var loss = Td3Agent.MaskedMean(qNew, mask).neg();

        Tensor gain;
        if (!o.Diagnostics) return (loss, torch.full([], double.NaN, loss.dtype, loss.device), torch.full([], double.NaN, loss.dtype, loss.device));
        using (no_grad())
        {
            long off = K * B * T, n = B * T;
            var sHeld = sAll.narrow(0, off, n);
            var mHeld = mask.narrow(0, off, n);
            var diff = qNew.detach().narrow(0, off, n).sub(agent.Q(agent.Q1, sHeld, agent.Pi(agent.Policy, sHeld)));
            gain = diff.mul(mHeld).sum().div(mHeld.sum().clamp_min(1));
        }
        return (loss, gain, corr!);
    }

    // ── META-GRADIENT ──

    /// <summary>∇α(−J) clipped to global norm <see cref="InnerStepOptions.Clip"/>, with the diagnostics (one host read).</summary>
    public static MetaGradient Compute(Td3Agent agent, ObjectiveSpec spec, IReadOnlyList<Tensor> alpha,
                                       TrajectoryTensors batch, InnerStepOptions o)
    {
        using var scope = torch.NewDisposeScope();
        var (loss, gain, corr) = MetaLoss(agent, spec, alpha, batch, o);
        var grads = Gradient(loss, alpha);
        // clip on the flat vector: one norm and one scale instead of a few ops per tensor
        var flat = torch.cat(grads.Select(g => g.reshape(-1)).ToArray());
        var norm = flat.norm();
        flat = flat.mul(norm.clamp_min(o.Clip).reciprocal().mul(o.Clip));
        var stats = torch.stack([loss.detach(), gain, corr, norm]).to(ScalarType.Float64, torch.CPU).data<double>().ToArray();
        var gradient = flat.to(ScalarType.Float32, torch.CPU).data<float>().ToArray();
        return new MetaGradient(gradient, stats[0], stats[1], stats[2], stats[3]);
    }

    /// <summary>∂loss/∂α with unused parameters (e.g. the head's output bias, whose φ-gradient is 0) as zeros.</summary>
    public static List<Tensor> Gradient(Tensor loss, IReadOnlyList<Tensor> alpha)
    {
        if (loss.numel() != 1) throw new ArgumentException($"meta-gradient: loss must be a scalar, got [{string.Join(", ", loss.shape)}]");
        if (!loss.requires_grad) throw new ArgumentException("meta-gradient: loss does not depend on α (frozen parameters?)");
        foreach (var a in alpha)
            if (!a.requires_grad || !a.is_leaf) throw new ArgumentException("meta-gradient: α must be leaf tensors with requires_grad");
        var g = torch.autograd.grad([loss], alpha.ToList(), allow_unused: true);
        var list = new List<Tensor>(alpha.Count);
        for (int i = 0; i < alpha.Count; i++)
            list.Add(g[i] is null || g[i].IsInvalid ? torch.zeros_like(alpha[i]) : g[i]);
        return list;
    }

    // ── INNER OPTIMISERS ──

    /// <summary>Differentiable Adam (TF form, fresh moments at the first inner step):
    /// φ' = φ − η·sqrt(1−β2^t)/(1−β1^t)·m/(sqrt(v + 1e-16) + 1e-8). The 1e-16 keeps d sqrt(v)/dv finite where a
    /// policy gradient entry is exactly 0 (dead ReLU units); it changes no value measurably.</summary>
    static List<Tensor> AdamStep(List<Tensor> phi, List<Tensor> g, ref List<Tensor>? m, ref List<Tensor>? v,
                                 int t, double lr)
    {
        const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
        double lrT = lr * Math.Sqrt(1 - Math.Pow(b2, t)) / (1 - Math.Pow(b1, t));
        m = m is null ? g.Select(x => x.mul(1 - b1)).ToList() : m.Zip(g, (a, x) => a.mul(b1).add(x.mul(1 - b1))).ToList();
        v = v is null ? g.Select(x => x.square().mul(1 - b2)).ToList() : v.Zip(g, (a, x) => a.mul(b2).add(x.square().mul(1 - b2))).ToList();
        var next = new List<Tensor>(phi.Count);
        for (int i = 0; i < phi.Count; i++)
            next.Add(phi[i].sub(m[i].div(v[i].add(1e-16).sqrt().add(eps)).mul(lrT)));
        return next;
    }

    // ── HELPERS ──

    /// <summary>Windows [start, start+count) of a batch (views).</summary>
    public static TrajectoryTensors Slice(TrajectoryTensors b, long start, long count) => new(
        b.Obs.narrow(0, start, count), b.Act.narrow(0, start, count), b.Rew.narrow(0, start, count),
        b.NextObs.narrow(0, start, count), b.Done.narrow(0, start, count), b.Terminated.narrow(0, start, count),
        b.Truncated.narrow(0, start, count), b.Mask.narrow(0, start, count));

    /// <summary>Pearson correlation of x and y over the entries where mask is 1 (0-d; 0 when either is constant).</summary>
    public static Tensor Correlation(Tensor x, Tensor y, Tensor mask)
    {
        using var _ = no_grad();
        var n = mask.sum().clamp_min(1);
        var mx = x.mul(mask).sum().div(n);
        var my = y.mul(mask).sum().div(n);
        var dx = x.sub(mx).mul(mask);
        var dy = y.sub(my).mul(mask);
        var cov = dx.mul(dy).sum();
        var den = dx.square().sum().mul(dy.square().sum()).sqrt();
        return torch.where(den.gt(0), cov.div(den.clamp_min(1e-300)), torch.zeros_like(cov));
    }
}
