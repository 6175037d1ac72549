using MetaGenRL.Core.Agents;
using MetaGenRL.Core.Config;
using MetaGenRL.Core.Torch;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaGenRL.Core.Objective;

/// <summary>How the inner (differentiable) policy update of the meta-gradient runs.</summary>
/// <param name="Steps">obj_func_second_order_steps (≥ 1); each step uses its own slice of B windows</param>
/// <param name="StepSize">obj_func_second_order_stepsize (scaled by obj_func_second_order_reference_windows /
/// buffer_sample_size when that key is set), applied to the gradient of the SUMMED objective</param>
/// <param name="Adam">obj_func_second_order_adam: differentiable Adam (fresh moments) instead of plain SGD</param>
/// <param name="Clip">clip_gradient: global-norm clip of the α-gradient</param>
/// <param name="OfficialMasking">L_α's short-window LSTM masking as the official code (obj_func_lstm_masking; see
/// <see cref="ObjectiveNetwork.Forward"/>)</param>
/// <param name="Diagnostics">also compute policy_value_gain (one more policy and critic forward on the held-out slice)
/// and the correlation; NaN otherwise</param>
public sealed record InnerStepOptions(int Steps, double StepSize, bool Adam, double Clip, bool OfficialMasking, bool Diagnostics = true)
{
    public static InnerStepOptions FromConfig(RunConfig c) =>
        new(c.ObjFuncSecondOrderSteps, StepSizeOf(c), c.ObjFuncSecondOrderAdam, c.ClipGradient, c.ObjFuncLstmMasking == "official");

    /// <summary>The inner step size: obj_func_second_order_stepsize, times reference windows / buffer_sample_size when
    /// obj_func_second_order_reference_windows is set.</summary>
    public static double StepSizeOf(RunConfig c) =>
        c.ObjFuncSecondOrderReferenceWindows > 0
            ? c.ObjFuncSecondOrderStepsize * c.ObjFuncSecondOrderReferenceWindows / c.BufferSampleSize
            : c.ObjFuncSecondOrderStepsize;
}

/// <summary>One slot's meta-gradient and the diagnostics.</summary>
/// <param name="Gradient">∇α(−J), clipped to global norm clip_gradient, flattened in α's layout</param>
/// <param name="ObjectiveLoss">−J</param>
/// <param name="PolicyValueGain">masked mean over valid steps of the held-out (last) slice of Q1(s, π_φ'(s)) − Q1(s, π_φ(s))</param>
/// <param name="CriticCorrelation">corr(−V, L_α) over the valid steps of the first slice</param>
/// <param name="GradientNorm">global norm before clipping</param>
public sealed record MetaGradient(float[] Gradient, double ObjectiveLoss, double PolicyValueGain, double CriticCorrelation, double GradientNorm);

/// <summary>
/// The second-order meta-gradient of MetaGenRL (official <c>Objective.future_policy_value</c>), for K agents at once.
/// On a batch of (S+1)·B windows per slot: S inner steps φ_{s+1} = φ_s − η·∇φ Σ_{slice s} m·L_α (each on its own
/// slice of B windows, graph kept), then J_k = masked mean over ALL of slot k's windows of Q1_k(s, π_{φ_S}(s)) with the
/// current main Q1, and the gradient of −Σ_k J_k with respect to the stacked α (path α → L_α → g → φ' → π → Q1). Slot
/// k's α, policy and critic only reach J_k, so slot k of that gradient is agent k's own ∇α(−J_k). Neither φ nor θ
/// changes here.
/// </summary>
public static class FuturePolicyValue
{
    // ── META-OBJECTIVE ──

    /// <summary>−J per slot [K], differentiable in α, plus the detached diagnostics [K] each.</summary>
    /// <param name="batch">[K, (S+1)·B, T, …]</param>
    public static (Tensor Loss, Tensor Gain, Tensor Corr) MetaLoss(Td3Group group, ObjectiveSpec spec, IReadOnlyList<Tensor> alpha,
                                                                    TrajectoryTensors batch, InnerStepOptions o)
    {
        int S = o.Steps;
        if (S < 1) throw new ArgumentException($"meta-gradient: inner steps must be ≥ 1, got {S}");
        if (batch.B % (S + 1) != 0) throw new ArgumentException($"meta-gradient: {batch.B} windows do not split into {S + 1} slices");
        long K = batch.K, B = batch.B / (S + 1), T = batch.T, obs = group.ObsSize;

        List<Tensor> phi = group.Policy;
        List<Tensor>? m = null, v = null;
        Tensor? corr = null;
        for (int k = 0; k < S; k++)
        {
            // ── INNER STEP k ── on the k-th slice, on the SUM of m·L_α (not the mean)
            var slice = batch.Windows(k * B, B);
            var s = slice.Obs.reshape(K, B * T, obs);
            var aPi = group.Pi(phi, s);
            // V (stop-gradient) always comes from the pre-update policy φ_0, so it is data, independent of α,
            // and ∇α(−J) is the exact total derivative (later inner steps see V of φ_0, not of φ_k)
            Tensor? valueAct = null;
            if (k > 0) using (no_grad()) valueAct = group.Pi(group.Policy, s);
            var (x, q) = ObjectiveBatch.Build(group, group.Policy, slice, aPi, qWithGrad: spec.UseQ, spec.UseQ, valueAct);
            var l = ObjectiveNetwork.Forward(spec, alpha, x, o.OfficialMasking);                      // [K, B, T]
            var inner = l.mul(slice.Mask).sum();                                                     // Σ over slots: each φ_k sees its own sum
            if (k == 0 && o.Diagnostics) corr = Correlation(q.detach().neg(), l.detach().flatten(1), slice.Mask.flatten(1));
            if (!inner.requires_grad)   // checked here: a c10::Error inside autograd.grad would abort the process
                throw new InvalidOperationException("meta-gradient: the inner objective has no graph (called under no_grad?)");
            var g = torch.autograd.grad([inner], phi, retain_graph: true, create_graph: true).ToList();
            phi = o.Adam ? AdamStep(phi, g, ref m, ref v, k + 1, o.StepSize) : phi.Zip(g, (p, gp) => p.sub(gp.mul(o.StepSize))).ToList();
        }

        // ── OUTER VALUE ── J over all (S+1)·B windows of each slot with its main Q1
        var sAll = batch.Obs.reshape(K, batch.B * T, obs);
        var qNew = group.Q(group.Q1, sAll, group.Pi(phi, sAll));                                    // [K, (S+1)·B·T]
        var mask = batch.Mask.flatten(1);
        var loss = Td3Group.MaskedMean(qNew, mask).neg();                                            // [K]

        if (!o.Diagnostics)
        {
            var nan = torch.full([K], double.NaN, loss.dtype, loss.device);
            return (loss, nan, nan);
        }
        Tensor gain;
        using (no_grad())
        {
            long off = S * B * T, n = B * T;
            var sHeld = sAll.narrow(1, off, n);
            var mHeld = mask.narrow(1, off, n);
            var diff = qNew.detach().narrow(1, off, n).sub(group.Q(group.Q1, sHeld, group.Pi(group.Policy, sHeld)));
            gain = diff.mul(mHeld).sum(1).div(mHeld.sum(1).clamp_min(1));
        }
        return (loss, gain, corr!);
    }

    // ── META-GRADIENT ──

    /// <summary>Per slot, ∇α(−J_k) clipped to global norm <see cref="InnerStepOptions.Clip"/>, with the diagnostics
    /// (one host read for all slots).</summary>
    public static MetaGradient[] Compute(Td3Group group, ObjectiveSpec spec, IReadOnlyList<Tensor> alpha,
                                         TrajectoryTensors batch, InnerStepOptions o)
    {
        using var scope = torch.NewDisposeScope();
        var (loss, gain, corr) = MetaLoss(group, spec, alpha, batch, o);
        var grads = Gradient(loss.sum(), alpha);
        long K = batch.K;
        // clip each slot on its flat vector: one norm and one scale per slot
        var flat = torch.cat(grads.Select(g => g.reshape(K, -1)).ToArray(), 1);                    // [K, |α|]
        var norm = flat.norm(1, true, 2);                                                           // [K, 1]
        flat = flat.mul(norm.clamp_min(o.Clip).reciprocal().mul(o.Clip));
        var stats = torch.stack([loss.detach(), gain, corr, norm.squeeze(1)]).to(ScalarType.Float64, torch.CPU).data<double>().ToArray();
        var all = flat.to(ScalarType.Float32, torch.CPU).data<float>().ToArray();
        long n = flat.shape[1];
        var res = new MetaGradient[K];
        for (int k = 0; k < K; k++)
            res[k] = new MetaGradient(all.AsSpan((int)(k * n), (int)n).ToArray(), stats[k], stats[K + k], stats[2 * K + k], stats[3 * K + k]);
        return res;
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

    /// <summary>Per slot, the Pearson correlation of x and y over the entries where mask is 1 ([K, N] each → [K];
    /// 0 where either is constant).</summary>
    public static Tensor Correlation(Tensor x, Tensor y, Tensor mask)
    {
        using var _ = no_grad();
        var n = mask.sum(1, true).clamp_min(1);
        var mx = x.mul(mask).sum(1, true).div(n);
        var my = y.mul(mask).sum(1, true).div(n);
        var dx = x.sub(mx).mul(mask);
        var dy = y.sub(my).mul(mask);
        var cov = dx.mul(dy).sum(1);
        var den = dx.square().sum(1).mul(dy.square().sum(1)).sqrt();
        return torch.where(den.gt(0), cov.div(den.clamp_min(1e-300)), torch.zeros_like(cov));
    }
}
