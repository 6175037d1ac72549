using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace MetaGenRL.Core.Torch;

/// <summary>What the output layer of an <see cref="Mlp"/> does.</summary>
public enum MlpOutput
{
    /// <summary>Linear output (critics).</summary>
    Linear,
    /// <summary>tanh(·) × <see cref="MlpSpec.OutputScale"/> (deterministic policies).</summary>
    TanhScaled,
}

/// <summary>
/// Shape of the official TF <c>mlp(depth, units)</c>: depth−1 hidden layers (Dense → activation → optional
/// LayerNorm ε 1e-12 with learned affine) plus one output layer.
/// </summary>
/// <param name="InputSize">input features</param>
/// <param name="Units">units per hidden layer</param>
/// <param name="Depth">hidden layers + 1 (the official <c>*_depth</c>; 3 ⇒ 2 hidden)</param>
/// <param name="OutputSize">output features</param>
/// <param name="LayerNorm">LayerNorm after each hidden activation</param>
/// <param name="Activation">hidden activation: relu or tanh</param>
/// <param name="Output">output activation</param>
/// <param name="OutputScale">multiplier after tanh (act_limit); ignored for linear outputs</param>
public sealed record MlpSpec(int InputSize, int Units, int Depth, int OutputSize, bool LayerNorm = true,
                             string Activation = "relu", MlpOutput Output = MlpOutput.Linear, double OutputScale = 1.0)
{
    /// <summary>The LayerNorm ε of TF-contrib's layer_norm.</summary>
    public const double LayerNormEps = 1e-12;

    /// <summary>Hidden layers (depth − 1).</summary>
    public int Hidden => Depth - 1;

    /// <summary>Tensors per hidden layer in the parameter list: W, b (+ LN gain, LN bias).</summary>
    public int PerHidden => LayerNorm ? 4 : 2;

    /// <summary>Length of the parameter list: for each hidden layer W [units, in], b [units] (and LN gain
    /// [units], LN bias [units]), then the output W [out, units], b [out].</summary>
    public int ParameterCount => Hidden * PerHidden + 2;

    /// <summary>Shapes of the parameter list, in order.</summary>
    public IReadOnlyList<long[]> ParameterShapes()
    {
        var shapes = new List<long[]>();
        long fanIn = InputSize;
        for (int l = 0; l < Hidden; l++)
        {
            shapes.Add([Units, fanIn]);
            shapes.Add([Units]);
            if (LayerNorm) { shapes.Add([Units]); shapes.Add([Units]); }
            fanIn = Units;
        }
        shapes.Add([OutputSize, fanIn]);
        shapes.Add([OutputSize]);
        return shapes;
    }

    /// <summary>Number of scalars in all parameters.</summary>
    public long Scalars => ParameterShapes().Sum(s => s.Aggregate(1L, (a, b) => a * b));
}

/// <summary>
/// Functional MLP over a stack of K networks (pattern B): the weights are an explicit list of stacked tensors
/// (W [K, out, in], b [K, out], …), so φ' = φ − η∇φL can be fed to <see cref="Forward"/> unchanged, and K agents'
/// networks run as one batched matmul. Initialisation follows TF: Glorot-uniform weights, zero biases, LN gain 1,
/// bias 0; each slot draws from its own generator, so slot k holds what agent k would hold alone.
/// </summary>
public static class Mlp
{
    /// <summary>One network's parameters (unstacked, CPU, float64), drawn from <paramref name="gen"/> in layout order.</summary>
    public static List<Tensor> Draw(MlpSpec spec, Generator gen)
    {
        var ps = new List<Tensor>();
        using var _ = no_grad();
        int i = 0;
        foreach (var shape in spec.ParameterShapes())
        {
            if (shape.Length == 2)
            {
                double limit = Math.Sqrt(6.0 / (shape[0] + shape[1]));   // Glorot uniform: fan_in + fan_out
                using var u = torch.rand(shape, ScalarType.Float64, torch.CPU, generator: gen);
                ps.Add(u.mul(2 * limit).sub_(limit));
            }
            else
            {
                bool lnGain = spec.LayerNorm && i < spec.Hidden * spec.PerHidden && i % spec.PerHidden == 2;
                ps.Add(lnGain ? torch.ones(shape, ScalarType.Float64) : torch.zeros(shape, ScalarType.Float64));
            }
            i++;
        }
        return ps;
    }

    /// <summary>Stacks K unstacked parameter lists (same layout) into leaf tensors [K, …] of <paramref name="dtype"/> on
    /// <paramref name="device"/>, with requires_grad; the inputs are disposed.</summary>
    public static List<Tensor> Stack(IReadOnlyList<List<Tensor>> perSlot, Device device, ScalarType dtype)
    {
        if (perSlot.Count < 1) throw new ArgumentException("a stack needs at least one slot");
        var ps = new List<Tensor>(perSlot[0].Count);
        using (no_grad())
            for (int i = 0; i < perSlot[0].Count; i++)
            {
                using var s = torch.stack(perSlot.Select(l => l[i]).ToArray());
                var p = s.to(dtype, device).contiguous().clone();
                p.requires_grad_(true);
                p.DetachFromDisposeScope();
                ps.Add(p);
            }
        foreach (var l in perSlot) foreach (var t in l) t.Dispose();
        return ps;
    }

    /// <summary>Fresh stacked leaf parameters: slot k drawn on the CPU from <paramref name="gens"/>[k] (so values do
    /// not depend on the device), then moved to <paramref name="device"/>.</summary>
    public static List<Tensor> Init(MlpSpec spec, IReadOnlyList<Generator> gens, Device device, ScalarType dtype = ScalarType.Float32) =>
        Stack(gens.Select(g => Draw(spec, g)).ToList(), device, dtype);

    /// <summary>Evaluates K networks. <paramref name="x"/>: [K, N, in] → [K, N, out].
    /// Each LayerNorm's per-slot affine (gain g, shift s) is folded into the dense layer after it,
    /// W·(g⊙n + s) + b = (W⊙g)·n + (b + W·s): the same function, computed on [K, out, in] parameters instead of
    /// [K, N, units] activations, which at N in the thousands makes a stacked forward and backward ≈ 1.8× faster.
    /// A stack of one runs as a plain network (see <see cref="Linear"/>).</summary>
    public static Tensor Forward(MlpSpec spec, IReadOnlyList<Tensor> p, Tensor x)
    {
        if (p.Count != spec.ParameterCount)
            throw new ArgumentException($"MLP expects {spec.ParameterCount} parameter tensors, got {p.Count}");
        if (x.shape.Length != 3 || x.shape[0] != p[0].shape[0] || x.shape[^1] != spec.InputSize)
            throw new ArgumentException($"MLP input has shape [{string.Join(", ", x.shape)}], expected [{p[0].shape[0]}, N, {spec.InputSize}]");
        long k = x.shape[0], perSlot = x.shape[1] * Math.Max(spec.Units, spec.InputSize);
        if (k > 1 && k * perSlot > MaxActivationElements)
        {
            // slot chunks, so that no activation exceeds the allocator's heap limit (see MaxActivationElements)
            long chunk = Math.Max(1, MaxActivationElements / perSlot);
            var outs = new List<Tensor>();
            for (long s = 0; s < k; s += chunk)
            {
                long n = Math.Min(chunk, k - s);
                outs.Add(Forward(spec, p.Select(t => t.narrow(0, s, n)).ToList(), x.narrow(0, s, n)));
            }
            return torch.cat(outs, 0);
        }
        var h = x;
        Tensor? gain = null, shift = null;
        for (int l = 0, i = 0; ; l++, i += spec.PerHidden)
        {
            var (w, b) = FoldAffine(p[i], p[i + 1], gain, shift);
            h = Linear(h, w, b);
            if (l == spec.Hidden) break;
            h = spec.Activation == "tanh" ? h.tanh() : h.relu();
            (gain, shift) = spec.LayerNorm ? (p[i + 2], p[i + 3]) : (null, null);
            if (spec.LayerNorm) h = Normalize(h, MlpSpec.LayerNormEps);
        }
        return spec.Output == MlpOutput.TanhScaled ? h.tanh().mul(spec.OutputScale) : h;
    }

    /// <summary>The most elements one stacked activation may hold (16 MB of float32): glibc serves larger blocks by
    /// mmap even with <see cref="AllocatorTuning"/> (its threshold stops at 32 MB), and each such block faults its
    /// pages in afresh, which made a paper-size update of 16 agents in one stack 2.4× slower per agent than alone.
    /// Larger stacks run in slot chunks of at most this size within the same graph.</summary>
    public const long MaxActivationElements = 4L << 20;

    /// <summary>The dense layer w [K, out, in], b [K, out] applied after a per-slot affine x ↦ g⊙x + s
    /// (g, s [K, in]; none when null): (w⊙g, b + w·s).</summary>
    static (Tensor W, Tensor B) FoldAffine(Tensor w, Tensor b, Tensor? gain, Tensor? shift) =>
        gain is null || shift is null ? (w, b) : (w.mul(gain.unsqueeze(1)), b.add(Bmm(w, shift.unsqueeze(-1)).squeeze(-1)));

    /// <summary>LayerNorm over the last dim without affine. Passes a constant weight of ones: libtorch's kernel with a
    /// weight is ≈ 1.7× faster than without one here, and multiplying by 1 is exact.</summary>
    static Tensor Normalize(Tensor x, double eps) => F.layer_norm(x, [x.shape[^1]], Ones(x.shape[^1], x), null, eps);

    static readonly System.Collections.Concurrent.ConcurrentDictionary<(long, ScalarType, string), Tensor> OnesCache = new();

    /// <summary>A shared constant [n] of ones with <paramref name="like"/>'s dtype and device (never disposed).</summary>
    static Tensor Ones(long n, Tensor like) => OnesCache.GetOrAdd((n, like.dtype, like.device.ToString()), _ =>
    {
        var t = torch.ones(n, like.dtype, like.device);
        t.DetachFromDisposeScope();
        return t;
    });

    /// <summary>Stacked dense layer: x [K, N, in], w [K, out, in], b [K, out] → [K, N, out] (one batched matmul).
    /// A stack of one takes libtorch's fused addmm (measured 2–3× faster than a batched matmul of one); otherwise
    /// matmul + add (TorchSharp 0.107's baddbmm passes its operands in another order than PyTorch's).
    /// Squeezed views, not x[0]: a view's backward is a reshape, select's a scatter into a tensor of zeros.</summary>
    public static Tensor Linear(Tensor x, Tensor w, Tensor b) =>
        x.shape[0] == 1 ? F.linear(x.squeeze(0), w.squeeze(0), b.squeeze(0)).unsqueeze(0)
                        : torch.matmul(x, w.transpose(1, 2)).add(b.unsqueeze(1));

    /// <summary>Stacked batched matmul a [K, N, M] · b [K, M, P] → [K, N, P]; a stack of one as a plain mm.</summary>
    public static Tensor Bmm(Tensor a, Tensor b) =>
        a.shape[0] == 1 ? a.squeeze(0).mm(b.squeeze(0)).unsqueeze(0) : torch.bmm(a, b);

    /// <summary>Stacked LayerNorm over the last dim with per-slot gain and shift: x [K, N, U], gain/shift [K, U].
    /// The affine part is an addcmul rather than layer_norm's own weight and bias even for a stack of one: libtorch
    /// reduces the gain and shift gradients over rows split by thread, so their rounding would depend on the thread
    /// count, and a run must give the same numbers on 1 or 2 threads.</summary>
    public static Tensor LayerNorm(Tensor x, Tensor gain, Tensor shift, double eps) =>
        torch.addcmul(shift.unsqueeze(1), Normalize(x, eps), gain.unsqueeze(1), 1.0);

    /// <summary>Detached copies (requires_grad) of <paramref name="src"/>, e.g. for target networks.</summary>
    public static List<Tensor> Clone(IReadOnlyList<Tensor> src)
    {
        var ps = new List<Tensor>(src.Count);
        using (no_grad())
            foreach (var s in src)
            {
                var c = s.detach().clone();
                c.DetachFromDisposeScope();
                ps.Add(c);
            }
        return ps;
    }
}

/// <summary>Per-slot scalars as a tensor shaped to broadcast against stacked tensors [K, …].</summary>
public static class SlotScalars
{
    /// <summary><paramref name="values"/> [K] as a tensor [K, 1, …, 1] of rank <paramref name="rank"/>.</summary>
    public static Tensor Of(double[] values, int rank, ScalarType dtype, Device device)
    {
        var shape = new long[rank];
        shape[0] = values.Length;
        for (int i = 1; i < rank; i++) shape[i] = 1;
        return torch.tensor(values, ScalarType.Float64).to(dtype, device).reshape(shape);
    }
}

/// <summary>In-place parameter arithmetic over stacked tensors [K, …]: Polyak averaging and per-slot global-norm clipping.</summary>
public static class ParamOps
{
    /// <summary>target ← (1 − τ_k)·target + τ_k·source in slot k, element-wise over every tensor (LN parameters
    /// included); <paramref name="tau"/> [K] (0 leaves a slot exactly as it is).</summary>
    public static void Polyak(IReadOnlyList<Tensor> target, IReadOnlyList<Tensor> source, double[] tau)
    {
        if (target.Count != source.Count) throw new ArgumentException($"Polyak: {target.Count} target vs {source.Count} source tensors");
        using var _ = no_grad();
        using var scope = torch.NewDisposeScope();
        if (tau.All(t => t == tau[0]))   // every slot alike (the usual case): scalar ops, no per-slot tensors
        {
            for (int i = 0; i < target.Count; i++) target[i].mul_(1.0 - tau[0]).add_(source[i], alpha: tau[0]);
            return;
        }
        var coef = new Dictionary<int, (Tensor Keep, Tensor Take)>();
        for (int i = 0; i < target.Count; i++)
        {
            int rank = (int)target[i].dim();
            if (!coef.TryGetValue(rank, out var c))
            {
                var t = SlotScalars.Of(tau, rank, target[i].dtype, target[i].device);
                coef[rank] = c = (t.neg().add_(1.0), t);
            }
            target[i].mul_(c.Keep).add_(source[i].mul(c.Take));
        }
    }

    /// <summary>Per slot k, the global L2 norm sqrt(Σ‖g_k‖²) over every tensor: [K] (no host sync).</summary>
    public static Tensor GlobalNorm(IReadOnlyList<Tensor> grads)
    {
        Tensor? sq = null;
        foreach (var g in grads)
        {
            var s = g.square().reshape(g.shape[0], -1).sum(1);
            sq = sq is null ? s : sq.add(s);
        }
        return sq!.sqrt();
    }

    /// <summary>TF <c>clip_by_global_norm</c> per slot: scales slot k of every gradient by clip / max(norm_k, clip), in
    /// place. Returns the norms before clipping [K].</summary>
    public static Tensor ClipByGlobalNorm(IReadOnlyList<Tensor> grads, double clip)
    {
        var norm = GlobalNorm(grads);
        using var scale = norm.clamp_min(clip).reciprocal().mul_(clip);
        using (no_grad())
            foreach (var g in grads)
            {
                var shape = new long[g.dim()];
                shape[0] = g.shape[0];
                for (int i = 1; i < shape.Length; i++) shape[i] = 1;
                g.mul_(scale.reshape(shape));
            }
        return norm;
    }
}

/// <summary>
/// Adam exactly as TF 1.x's <c>AdamOptimizer</c> computes it, elementwise over stacked parameters [K, …] with a
/// step count per slot: lr_t = lr·sqrt(1−β2^t)/(1−β1^t), m ← β1 m + (1−β1) g, v ← β2 v + (1−β2) g²,
/// θ ← θ − lr_t·m/(sqrt(v) + ε̂). The ε sits outside the bias correction ("ε-hat"), unlike PyTorch's Adam.
/// Gradients are passed in explicitly, so it works with <c>autograd.grad</c> and never touches <c>.grad</c>.
/// A slot left out of a step keeps its parameters, moments and step count exactly.
/// </summary>
public sealed class TfAdam : IDisposable
{
    readonly IReadOnlyList<Tensor> _params;
    readonly List<Tensor> _m = new(), _v = new();
    readonly double _b1, _b2, _eps;
    readonly long[] _t;

    public TfAdam(IReadOnlyList<Tensor> parameters, double lr, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8)
    {
        if (parameters.Count == 0) throw new ArgumentException("Adam needs at least one parameter tensor");
        _params = parameters;
        LearningRate = lr; _b1 = beta1; _b2 = beta2; _eps = eps;
        foreach (var p in parameters)
        {
            var m = torch.zeros_like(p, requires_grad: false); m.DetachFromDisposeScope(); _m.Add(m);
            var v = torch.zeros_like(p, requires_grad: false); v.DetachFromDisposeScope(); _v.Add(v);
        }
        _t = new long[parameters[0].shape[0]];
    }

    /// <summary>Base learning rate (per-slot rates can be passed to <see cref="Step"/>, e.g. for warm-up).</summary>
    public double LearningRate { get; set; }
    /// <summary>K, the number of slots.</summary>
    public int Slots => _t.Length;
    /// <summary>Steps slot k has taken.</summary>
    public long Steps(int slot) => _t[slot];
    /// <summary>The parameters this optimiser updates, in order.</summary>
    public IReadOnlyList<Tensor> Parameters => _params;
    /// <summary>First moments m, one per parameter (live tensors: checkpointing copies into them).</summary>
    public IReadOnlyList<Tensor> FirstMoments => _m;
    /// <summary>Second moments v, one per parameter (live tensors: checkpointing copies into them).</summary>
    public IReadOnlyList<Tensor> SecondMoments => _v;
    /// <summary>(β1, β2, ε̂), fixed at construction.</summary>
    public (double Beta1, double Beta2, double Epsilon) Hyperparameters => (_b1, _b2, _eps);

    /// <summary>Sets slot k's step count t (bias correction) when resuming from a checkpoint.</summary>
    public void RestoreSteps(int slot, long steps)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(steps);
        _t[slot] = steps;
    }

    /// <summary>One Adam step with <paramref name="grads"/> (same order and shapes as the parameters) for the slots
    /// with <paramref name="active"/>[k] (all when null), at rate <paramref name="lr"/>[k] (LearningRate when null).</summary>
    public void Step(IReadOnlyList<Tensor> grads, bool[]? active = null, double[]? lr = null)
    {
        if (grads.Count != _params.Count) throw new ArgumentException($"Adam: {grads.Count} gradients for {_params.Count} parameters");
        int K = _t.Length;
        var lrT = new double[K];
        var b1 = new double[K]; var c1 = new double[K]; var b2 = new double[K]; var c2 = new double[K];
        for (int k = 0; k < K; k++)
        {
            bool on = active is null || active[k];
            if (on) _t[k]++;
            double rate = lr?[k] ?? LearningRate;
            lrT[k] = on ? rate * Math.Sqrt(1 - Math.Pow(_b2, _t[k])) / (1 - Math.Pow(_b1, _t[k])) : 0;
            b1[k] = on ? _b1 : 1; c1[k] = on ? 1 - _b1 : 0;
            b2[k] = on ? _b2 : 1; c2[k] = on ? 1 - _b2 : 0;
        }
        using var _ = no_grad();
        using var scope = torch.NewDisposeScope();
        if (lrT.All(x => x == lrT[0]) && lrT[0] > 0)   // every slot steps alike (the usual case): scalar ops
        {
            for (int i = 0; i < _params.Count; i++)
            {
                var g = grads[i];
                _m[i].mul_(_b1).add_(g, alpha: 1 - _b1);
                _v[i].mul_(_b2).addcmul_(g, g, value: 1 - _b2);
                _params[i].addcdiv_(_m[i], _v[i].sqrt().add_(_eps), value: -lrT[0]);
            }
            return;
        }
        var coef = new Dictionary<int, Tensor[]>();
        for (int i = 0; i < _params.Count; i++)
        {
            int rank = (int)_params[i].dim();
            if (!coef.TryGetValue(rank, out var c))
            {
                var (dt, dev) = (_params[i].dtype, _params[i].device);
                coef[rank] = c = [SlotScalars.Of(b1, rank, dt, dev), SlotScalars.Of(c1, rank, dt, dev),
                                  SlotScalars.Of(b2, rank, dt, dev), SlotScalars.Of(c2, rank, dt, dev),
                                  SlotScalars.Of(lrT, rank, dt, dev).neg()];
            }
            var g = grads[i];
            _m[i].mul_(c[0]).add_(g.mul(c[1]));
            _v[i].mul_(c[2]).add_(g.square().mul_(c[3]));
            _params[i].add_(_m[i].div(_v[i].sqrt().add_(_eps)).mul_(c[4]));
        }
    }

    public void Dispose()
    {
        foreach (var t in _m) t.Dispose();
        foreach (var t in _v) t.Dispose();
    }
}
