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
/// Functional MLP (pattern B): the weights are an explicit list, so φ' = φ − η∇φL can be fed to
/// <see cref="Forward"/> unchanged. Initialisation follows TF: Glorot-uniform weights, zero biases, LN gain 1, bias 0.
/// </summary>
public static class Mlp
{
    /// <summary>Fresh leaf parameters (requires_grad) for <paramref name="spec"/>, drawn on the CPU from
    /// <paramref name="gen"/> (so the values do not depend on the device) and then moved to <paramref name="device"/>.</summary>
    public static List<Tensor> Init(MlpSpec spec, Generator gen, Device device, ScalarType dtype = ScalarType.Float32)
    {
        var ps = new List<Tensor>();
        foreach (var shape in spec.ParameterShapes())
        {
            Tensor p;
            using (no_grad())
            {
                if (shape.Length == 2)
                {
                    double limit = Math.Sqrt(6.0 / (shape[0] + shape[1]));   // Glorot uniform: fan_in + fan_out
                    using var u = torch.rand(shape, ScalarType.Float64, torch.CPU, generator: gen);
                    using var w = u.mul(2 * limit).sub_(limit);
                    p = w.to(dtype, device);
                }
                else p = torch.zeros(shape, dtype, device);
            }
            ps.Add(p);
        }
        if (spec.LayerNorm)
            for (int l = 0; l < spec.Hidden; l++)
                using (no_grad()) ps[l * spec.PerHidden + 2].fill_(1.0);   // LN gain
        foreach (var p in ps) { p.requires_grad_(true); p.DetachFromDisposeScope(); }
        return ps;
    }

    /// <summary>Evaluates the MLP. <paramref name="x"/>: [N, in] (any leading dims are allowed) → [N, out].</summary>
    public static Tensor Forward(MlpSpec spec, IReadOnlyList<Tensor> p, Tensor x)
    {
        if (p.Count != spec.ParameterCount)
            throw new ArgumentException($"MLP expects {spec.ParameterCount} parameter tensors, got {p.Count}");
        if (x.shape[^1] != spec.InputSize)
            throw new ArgumentException($"MLP input has {x.shape[^1]} features, expected {spec.InputSize}");
        var h = x;
        int i = 0;
        long[] lnShape = [spec.Units];
        for (int l = 0; l < spec.Hidden; l++)
        {
            h = F.linear(h, p[i], p[i + 1]);
            h = spec.Activation == "tanh" ? h.tanh() : h.relu();
            if (spec.LayerNorm) h = F.layer_norm(h, lnShape, p[i + 2], p[i + 3], MlpSpec.LayerNormEps);
            i += spec.PerHidden;
        }
        h = F.linear(h, p[i], p[i + 1]);
        return spec.Output == MlpOutput.TanhScaled ? h.tanh().mul(spec.OutputScale) : h;
    }

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

/// <summary>In-place parameter arithmetic shared by the agents: Polyak averaging and global-norm clipping.</summary>
public static class ParamOps
{
    /// <summary>target ← (1 − τ)·target + τ·source, element-wise over every tensor (LN parameters included).</summary>
    public static void Polyak(IReadOnlyList<Tensor> target, IReadOnlyList<Tensor> source, double tau)
    {
        if (target.Count != source.Count) throw new ArgumentException($"Polyak: {target.Count} target vs {source.Count} source tensors");
        using var _ = no_grad();
        for (int i = 0; i < target.Count; i++)
            target[i].mul_(1.0 - tau).add_(source[i], alpha: tau);
    }

    /// <summary>The global L2 norm sqrt(Σ‖g‖²) as a 0-d tensor (no host sync).</summary>
    public static Tensor GlobalNorm(IReadOnlyList<Tensor> grads)
    {
        Tensor? sq = null;
        foreach (var g in grads)
        {
            var s = g.square().sum();
            sq = sq is null ? s : sq.add(s);
        }
        return (sq ?? torch.zeros(1)).sqrt();
    }

    /// <summary>TF <c>clip_by_global_norm</c>: scales every gradient by clip / max(global_norm, clip), in place.
    /// Returns the norm before clipping (0-d tensor).</summary>
    public static Tensor ClipByGlobalNorm(IReadOnlyList<Tensor> grads, double clip)
    {
        var norm = GlobalNorm(grads);
        using var scale = norm.clamp_min(clip).reciprocal().mul_(clip);
        using (no_grad())
            foreach (var g in grads) g.mul_(scale);
        return norm;
    }
}

/// <summary>
/// Adam exactly as TF 1.x's <c>AdamOptimizer</c> computes it: lr_t = lr·sqrt(1−β2^t)/(1−β1^t),
/// m ← β1 m + (1−β1) g, v ← β2 v + (1−β2) g², θ ← θ − lr_t·m/(sqrt(v) + ε̂). The ε sits outside the
/// bias correction ("ε-hat"), unlike PyTorch's Adam. Gradients are passed in explicitly, so it works with
/// <c>autograd.grad</c> and never touches <c>.grad</c>.
/// </summary>
public sealed class TfAdam : IDisposable
{
    readonly IReadOnlyList<Tensor> _params;
    readonly List<Tensor> _m = new(), _v = new();
    readonly double _b1, _b2, _eps;
    long _t;

    public TfAdam(IReadOnlyList<Tensor> parameters, double lr, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8)
    {
        _params = parameters;
        LearningRate = lr; _b1 = beta1; _b2 = beta2; _eps = eps;
        foreach (var p in parameters)
        {
            var m = torch.zeros_like(p, requires_grad: false); m.DetachFromDisposeScope(); _m.Add(m);
            var v = torch.zeros_like(p, requires_grad: false); v.DetachFromDisposeScope(); _v.Add(v);
        }
    }

    /// <summary>Base learning rate (may be changed between steps, e.g. for warm-up).</summary>
    public double LearningRate { get; set; }
    /// <summary>Steps taken.</summary>
    public long Steps => _t;
    /// <summary>The parameters this optimiser updates, in order.</summary>
    public IReadOnlyList<Tensor> Parameters => _params;
    /// <summary>First moments m, one per parameter (live tensors: checkpointing copies into them).</summary>
    public IReadOnlyList<Tensor> FirstMoments => _m;
    /// <summary>Second moments v, one per parameter (live tensors: checkpointing copies into them).</summary>
    public IReadOnlyList<Tensor> SecondMoments => _v;
    /// <summary>(β1, β2, ε̂), fixed at construction.</summary>
    public (double Beta1, double Beta2, double Epsilon) Hyperparameters => (_b1, _b2, _eps);

    /// <summary>Sets the step count t (bias correction) when resuming from a checkpoint.</summary>
    public void RestoreSteps(long steps)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(steps);
        _t = steps;
    }

    /// <summary>One Adam step with <paramref name="grads"/> (same order and shapes as the parameters).</summary>
    public void Step(IReadOnlyList<Tensor> grads)
    {
        if (grads.Count != _params.Count) throw new ArgumentException($"Adam: {grads.Count} gradients for {_params.Count} parameters");
        _t++;
        double lrT = LearningRate * Math.Sqrt(1 - Math.Pow(_b2, _t)) / (1 - Math.Pow(_b1, _t));
        using var _ = no_grad();
        for (int i = 0; i < _params.Count; i++)
        {
            var g = grads[i];
            _m[i].mul_(_b1).add_(g, alpha: 1 - _b1);
            _v[i].mul_(_b2).addcmul_(g, g, value: 1 - _b2);
            using var denom = _v[i].sqrt().add_(_eps);
            _params[i].addcdiv_(_m[i], denom, value: -lrT);
        }
    }

    public void Dispose()
    {
        foreach (var t in _m) t.Dispose();
        foreach (var t in _v) t.Dispose();
    }
}
