using MetaGenRL.Core.Config;
using MetaGenRL.Core.Torch;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace MetaGenRL.Core.Objective;

/// <summary>Which inputs and core the learned objective L_α uses (config key <c>obj_func_variant</c>).
/// Each variant is a small diff of <see cref="Full"/>: an input dropped or added, or the core swapped.</summary>
public enum ObjectiveVariant
{
    /// <summary>The official L_α (<c>Objective._create_objective</c>, type learned-reinforce).</summary>
    Full,
    /// <summary>Without V̂_t and V̂_{t+1}(1−d): L_α sees rewards and time only.</summary>
    NoValue,
    /// <summary>Without t/T.</summary>
    NoTime,
    /// <summary>Without r̂.</summary>
    NoReward,
    /// <summary>Adds Q1(s, π(s)) with gradient (normalised with the value statistics) as a fifth input.</summary>
    QInput,
    /// <summary>The LSTM runs forward in time (each step sees only the past).</summary>
    ForwardLstm,
    /// <summary>No recurrence: one Dense → mixed activation (→ LN) layer per step in place of the LSTM.</summary>
    NoLstm,
}

/// <summary>
/// Sizes and switches of L_α, read from a <see cref="RunConfig"/>. Parameter list layout (α), in order:
/// action net g_act (per hidden layer W [U, in], b [U], LN gain, LN bias when LN), reward/value net g_rv
/// (hidden W, b (, LN) then output W [out, U], b [out]), core (LSTM: W [4H, Z+H] over [z, h] with gates
/// i, j, f, o, b [4H]; or no-lstm: W [H, Z], b [H] (, LN)), head (hidden W, b (, LN), then W [1, U], b [1]).
/// </summary>
public sealed record ObjectiveSpec(
    int ActUnits, int ActHidden, bool ActLayerNorm,
    int RvUnits, int RvHidden, int RvOut, bool RvLayerNorm,
    int LstmUnits, int HeadUnits, int HeadHidden, bool HeadLayerNorm,
    IReadOnlyList<string> Activations, double ErrorScale, string ErrorFunc, ObjectiveVariant Variant)
{
    /// <summary>The L_α of <paramref name="cfg"/> (obj_func_* keys).</summary>
    public static ObjectiveSpec FromConfig(RunConfig cfg) => new(
        cfg.ObjFuncInputTransformUnits, cfg.ObjFuncInputTransformDepth, cfg.ObjFuncLayernorm,
        cfg.ObjFuncInputTransformUnits, cfg.ObjFuncInputTransformDepth - 1, cfg.ObjFuncInputTransformOutUnits,
        cfg.ObjFuncInputTransformLayernorm,
        cfg.ObjFuncLstmUnits, cfg.ObjFuncUnits, cfg.ObjFuncDepth - 1, cfg.ObjFuncLayernorm,
        cfg.ObjFuncActivation, cfg.ObjFuncErrorScale, cfg.ObjFuncErrorFunc, ParseVariant(cfg.ObjFuncVariant));

    /// <summary>Maps the config spelling (<c>full</c>, <c>no-value</c>, …) to the enum.</summary>
    public static ObjectiveVariant ParseVariant(string s) => s switch
    {
        "full" => ObjectiveVariant.Full,
        "no-value" => ObjectiveVariant.NoValue,
        "no-time" => ObjectiveVariant.NoTime,
        "no-reward" => ObjectiveVariant.NoReward,
        "q-input" => ObjectiveVariant.QInput,
        "forward-lstm" => ObjectiveVariant.ForwardLstm,
        "no-lstm" => ObjectiveVariant.NoLstm,
        _ => throw new ArgumentException($"unknown objective variant '{s}'"),
    };

    /// <summary>The config spellings of every variant.</summary>
    public static IReadOnlyList<string> VariantNames { get; } =
        ["full", "no-value", "no-time", "no-reward", "q-input", "forward-lstm", "no-lstm"];

    public bool UseReward => Variant != ObjectiveVariant.NoReward;
    public bool UseTime => Variant != ObjectiveVariant.NoTime;
    public bool UseValue => Variant != ObjectiveVariant.NoValue;
    public bool UseQ => Variant == ObjectiveVariant.QInput;
    public bool UseLstm => Variant != ObjectiveVariant.NoLstm;
    public bool BackwardInTime => Variant != ObjectiveVariant.ForwardLstm;

    /// <summary>Features per step fed to g_rv: r̂, t/T, V̂_{t+1}(1−d), V̂_t (and Q̂), minus the dropped ones.</summary>
    public int RvInputs => (UseReward ? 1 : 0) + (UseTime ? 1 : 0) + (UseValue ? 2 : 0) + (UseQ ? 1 : 0);
    /// <summary>Core input Z = action features + reward/value features.</summary>
    public int CoreInputs => ActUnits + RvOut;

    /// <summary>Shapes of α, in the order <see cref="ObjectiveNetwork.Forward"/> reads them.</summary>
    public IReadOnlyList<long[]> ParameterShapes()
    {
        var s = new List<long[]>();
        void Dense(long @out, long @in, bool ln)
        {
            s.Add([@out, @in]); s.Add([@out]);
            if (ln) { s.Add([@out]); s.Add([@out]); }
        }
        long fan = 2;
        for (int l = 0; l < ActHidden; l++) { Dense(ActUnits, fan, ActLayerNorm); fan = ActUnits; }
        fan = RvInputs;
        for (int l = 0; l < RvHidden; l++) { Dense(RvUnits, fan, RvLayerNorm); fan = RvUnits; }
        Dense(RvOut, fan, false);
        if (UseLstm) Dense(4L * LstmUnits, CoreInputs + LstmUnits, false);
        else Dense(LstmUnits, CoreInputs, HeadLayerNorm);
        fan = LstmUnits;
        for (int l = 0; l < HeadHidden; l++) { Dense(HeadUnits, fan, HeadLayerNorm); fan = HeadUnits; }
        Dense(1, fan, false);
        return s;
    }

    /// <summary>Scalars in α (15,497 for the official defaults).</summary>
    public long Scalars => ParameterShapes().Sum(x => x.Aggregate(1L, (a, b) => a * b));
}

/// <summary>What L_α sees for K slots of B windows of T steps (A action dimensions).</summary>
/// <param name="Act">[K, B, T, A] replay (behaviour) actions</param>
/// <param name="PolicyAct">[K, B, T, A] π_φ(s_t), differentiable in φ</param>
/// <param name="Rew">[K, B, T]</param>
/// <param name="Done">[K, B, T] 1 = no bootstrap</param>
/// <param name="Mask">[K, B, T] 1 for valid steps; padding is at the end of a window</param>
/// <param name="Values">[K, B, T+1] V_0 … V_{T−1} and V_T (treated as stop-gradient)</param>
/// <param name="Q">[K, B, T] Q1(s, π(s)) with gradient (q-input variant only)</param>
public sealed record ObjectiveInputs(Tensor Act, Tensor PolicyAct, Tensor Rew, Tensor Done, Tensor Mask, Tensor Values, Tensor? Q = null);

/// <summary>
/// The learned objective L_α, written functionally over K slots: α is an explicit list of stacked tensors [K, …]
/// (slot k is agent k's copy), so L_α is differentiable twice (∂²/∂α∂φ for the meta-gradient) and K agents' windows
/// run in one call; the gradient with respect to the stacked α is each agent's own gradient. Per step: action
/// features mean_k g_act(a_k, π_k); reward/value/time features g_rv(r̂, t/T, V̂_{t+1}(1−d), V̂_t), z-normalised per
/// slot over its B·T entries; an LSTM over reversed time (hand-written TF LSTMCell); an output head; and the tanh
/// error bound. Returns per-step losses [K, B, T].
/// </summary>
public static class ObjectiveNetwork
{
    /// <summary>z-normalisation ε.</summary>
    public const double NormEps = 1e-8;
    /// <summary>TF LSTMCell forget-gate bias, added at run time.</summary>
    public const double ForgetBias = 1.0;

    // ── INITIALISATION ──

    /// <summary>One α (unstacked, CPU, float64): Glorot-uniform matrices, zero biases, LN gains 1, drawn from
    /// <paramref name="gen"/> in layout order.</summary>
    public static List<Tensor> Draw(ObjectiveSpec spec, Generator gen)
    {
        var shapes = spec.ParameterShapes();
        var ps = new List<Tensor>(shapes.Count);
        using var _ = no_grad();
        for (int i = 0; i < shapes.Count; i++)
        {
            var shape = shapes[i];
            if (shape.Length == 2)
            {
                double limit = Math.Sqrt(6.0 / (shape[0] + shape[1]));
                using var u = torch.rand(shape, ScalarType.Float64, torch.CPU, generator: gen);
                ps.Add(u.mul(2 * limit).sub_(limit));
            }
            // a 1-d tensor right after a bias is an LN gain (layout: W, b, gain, shift)
            else if (i >= 2 && shapes[i - 1].Length == 1 && shapes[i - 2].Length == 2) ps.Add(torch.ones(shape, ScalarType.Float64));
            else ps.Add(torch.zeros(shape, ScalarType.Float64));
        }
        return ps;
    }

    /// <summary>Fresh stacked α (leaf tensors [K, …], requires_grad): slot k drawn on the CPU from
    /// <paramref name="gens"/>[k] in float64 and cast, so values do not depend on device or dtype.</summary>
    public static List<Tensor> Init(ObjectiveSpec spec, IReadOnlyList<Generator> gens, Device device, ScalarType dtype = ScalarType.Float32) =>
        Mlp.Stack(gens.Select(g => Draw(spec, g)).ToList(), device, dtype);

    /// <summary>Slot <paramref name="slot"/> of a stacked α, flattened (float32, layout order).</summary>
    public static float[] Flatten(IReadOnlyList<Tensor> alpha, int slot)
    {
        using var _ = no_grad();
        using var flat = torch.cat(alpha.Select(a => a[slot].detach().reshape(-1)).ToArray()).to(ScalarType.Float32, torch.CPU);
        return flat.data<float>().ToArray();
    }

    /// <summary>Copies <paramref name="values"/> (one α in layout order) into slot <paramref name="slot"/> of a
    /// stacked α, or into every slot when <paramref name="slot"/> is null.</summary>
    public static void Load(IReadOnlyList<Tensor> alpha, float[] values, int? slot = null)
    {
        long n = alpha.Sum(a => a.numel() / a.shape[0]);
        if (values.Length != n) throw new ArgumentException($"objective: expected {n} parameters, got {values.Length}");
        using var _ = no_grad();
        using var src = torch.tensor(values);
        long o = 0;
        foreach (var a in alpha)
        {
            long per = a.numel() / a.shape[0];
            using var part = src.narrow(0, o, per).view(a.shape.Skip(1).ToArray()).to(a.dtype, a.device);
            if (slot is int k) a[k].copy_(part);
            else a.copy_(part.unsqueeze(0).expand(a.shape));
            o += per;
        }
    }

    // ── FORWARD ──

    /// <summary>L_α per step. <paramref name="officialMasking"/> (obj_func_lstm_masking official): true reverses whole windows before the LSTM and
    /// applies the valid length afterwards, as TF's dynamic_rnn did in the official code (valid early steps of
    /// a short window get zero LSTM outputs); false reverses each window within its valid length.</summary>
    /// <returns>[K, B, T] per-step losses (padding steps included; mask them).</returns>
    public static Tensor Forward(ObjectiveSpec spec, IReadOnlyList<Tensor> alpha, ObjectiveInputs x, bool officialMasking)
    {
        var (K, B, T, A) = CheckInputs(spec, alpha, x);
        int i = 0;

        // ── ACTION FEATURES ── shared g_act over (replay, policy) pairs, averaged over action dims
        var h = torch.stack([x.Act, x.PolicyAct], -1);                         // [K, B, T, A, 2]
        for (int l = 0; l < spec.ActHidden; l++) h = Dense(h, alpha, ref i, spec.Activations, spec.ActLayerNorm);
        var actFeat = h.mean([-2]);                                             // [K, B, T, U]

        // ── REWARD / VALUE / TIME FEATURES ── z-normalised per slot, terminal mask after normalisation
        var feats = new List<Tensor>(5);
        if (spec.UseReward) feats.Add(ZNormalize(x.Rew.detach()).unsqueeze(-1));
        if (spec.UseTime)
            feats.Add(torch.arange(T, x.Rew.dtype, x.Rew.device).div_(T).reshape(1, 1, T, 1).expand(K, B, T, 1));
        Tensor? vMean = null, vStd = null;
        if (spec.UseValue || spec.UseQ)
        {
            var v = x.Values.detach();
            (vMean, vStd) = Moments(v);
            var vn = v.sub(vMean).div(vStd);                                  // [K, B, T+1]
            if (spec.UseValue)
            {
                feats.Add(vn.narrow(2, 1, T).mul(x.Done.neg().add(1.0)).unsqueeze(-1));   // V̂_{t+1}(1−d)
                feats.Add(vn.narrow(2, 0, T).unsqueeze(-1));                                // V̂_t
            }
        }
        if (spec.UseQ) feats.Add(x.Q!.sub(vMean!).div(vStd!).unsqueeze(-1));
        var u = feats.Count == 1 ? feats[0] : torch.cat(feats, -1);            // [K, B, T, RvInputs]
        for (int l = 0; l < spec.RvHidden; l++) u = Dense(u, alpha, ref i, spec.Activations, spec.RvLayerNorm);
        u = Linear(u, alpha[i], alpha[i + 1]); i += 2;                          // [K, B, T, RvOut]

        // ── CORE ── LSTM over (reversed) time, or a per-step dense layer
        var z = torch.cat([actFeat, u], -1);                                    // [K, B, T, Z]
        Tensor core;
        if (spec.UseLstm)
        {
            core = Lstm(z, alpha[i], alpha[i + 1], x.Mask, spec.BackwardInTime, officialMasking);
            i += 2;
        }
        else core = Dense(z, alpha, ref i, spec.Activations, spec.HeadLayerNorm);

        // ── HEAD + ERROR BOUND ──
        var o = core;
        for (int l = 0; l < spec.HeadHidden; l++) o = Dense(o, alpha, ref i, spec.Activations, spec.HeadLayerNorm);
        var f = Linear(o, alpha[i], alpha[i + 1]).squeeze(-1);                  // [K, B, T]
        return spec.ErrorFunc == "tanh" ? f.mul(spec.ErrorScale).tanh().div(spec.ErrorScale) : f;
    }

    /// <summary>
    /// Hand-written TF LSTMCell (gates i, j, f, o; c' = σ(f + 1)·c + σ(i)·tanh(j); h' = σ(o)·tanh(c'); zero initial
    /// state) run over <paramref name="z"/> [K, B, T, Z] with per-slot weights <paramref name="w"/> [K, 4H, Z+H] (over
    /// [z, h]) and <paramref name="b"/> [K, 4H]. Steps outside a window's valid length leave the state unchanged and
    /// output 0 (TF dynamic_rnn's sequence_length). Backward: t = T−1 … 0. With <paramref name="officialMasking"/> (obj_func_lstm_masking official) the valid
    /// length is counted along the reversed whole window (the official behaviour), else along each window's own
    /// reversal (padding skipped). Returns [K, B, T, H] in time order.
    /// </summary>
    public static Tensor Lstm(Tensor z, Tensor w, Tensor b, Tensor mask, bool backward, bool officialMasking)
    {
        if (z.shape.Length != 4) throw new ArgumentException($"LSTM: input must be [K, B, T, Z], got [{string.Join(", ", z.shape)}]");
        long K = z.shape[0], B = z.shape[1], T = z.shape[2], Z = z.shape[3], H = b.shape[^1] / 4;
        if (w.shape.Length != 3 || w.shape[0] != K || w.shape[1] != 4 * H || w.shape[2] != Z + H)
            throw new ArgumentException($"LSTM: kernel [{string.Join(", ", w.shape)}] does not fit {K} slots, input {Z} and {H} units");
        if (mask.shape.Length != 3 || mask.shape[0] != K || mask.shape[1] != B || mask.shape[2] != T)
            throw new ArgumentException($"LSTM: mask [{string.Join(", ", mask.shape)}] does not match [{K}, {B}, {T}]");
        // the forget bias is folded into the precomputed input projection: one add for all T steps
        using var fb = torch.zeros(4 * H, z.dtype, z.device);
        fb.narrow(0, 2 * H, H).fill_(ForgetBias);
        var xw = Mlp.Linear(z.reshape(K, B * T, Z), w.narrow(2, 0, Z), b.add(fb))
                    .reshape(K, B, T, 4 * H).permute(2, 0, 1, 3).contiguous().unbind(0);      // T × [K, B, 4H]
        var whT = w.narrow(2, Z, H).transpose(1, 2);                                            // [K, H, 4H]
        bool allValid = AllValid(mask);
        var m = allValid ? null : mask.permute(2, 0, 1).unsqueeze(-1).gt(0);                    // [T, K, B, 1] bool

        var outs = new Tensor[T];
        Tensor? h = null, c = null;
        for (long s = 0; s < T; s++)
        {
            long t = backward ? T - 1 - s : s;
            var gates = h is null ? xw[t] : xw[t].add(Mlp.Bmm(h, whT));
            // one sigmoid over all four gates (σ(j) is computed and unused): fewer nodes for the double backward
            var sg = gates.sigmoid().chunk(4, -1);
            var tj = gates.narrow(-1, H, H).tanh();
            var cNew = c is null ? sg[0].mul(tj) : torch.addcmul(sg[2].mul(c), sg[0], tj, 1.0);
            var hNew = sg[3].mul(cNew.tanh());
            if (m is null) { h = hNew; c = cNew; outs[t] = hNew; continue; }
            var valid = m[officialMasking && backward ? s : t];                                 // [K, B, 1]
            outs[t] = torch.where(valid, hNew, 0.0);
            h = h is null ? outs[t] : torch.where(valid, hNew, h);
            c = c is null ? torch.where(valid, cNew, 0.0) : torch.where(valid, cNew, c);
        }
        return torch.stack(outs, 2);
    }

    /// <summary>Per slot: (x − mean)/sqrt(var + 1e-8) over the slot's entries (population variance, padding
    /// included). x [K, …].</summary>
    public static Tensor ZNormalize(Tensor x)
    {
        var (mean, std) = Moments(x);
        return x.sub(mean).div(std);
    }

    /// <summary>Per-slot mean and sqrt(var + ε) of x [K, …], shaped [K, 1, …] to broadcast.</summary>
    static (Tensor Mean, Tensor Std) Moments(Tensor x)
    {
        var dims = Enumerable.Range(1, (int)x.dim() - 1).Select(d => (long)d).ToArray();
        var mean = x.mean(dims, keepdim: true);
        var std = x.sub(mean).square().mean(dims, keepdim: true).add(NormEps).sqrt();
        return (mean, std);
    }

    /// <summary>The mixed activation: the units are split into equal parts, one per activation (the last part
    /// takes any remainder), e.g. relu on the first half and x² on the second. (narrow + cat measured faster in the
    /// double backward than one where() over both activations.)</summary>
    public static Tensor Activate(Tensor x, IReadOnlyList<string> acts)
    {
        if (acts.Count == 1) return Apply(x, acts[0]);
        long n = x.shape[^1], part = n / acts.Count;
        var parts = new Tensor[acts.Count];
        for (int k = 0; k < acts.Count; k++)
        {
            long len = k == acts.Count - 1 ? n - part * k : part;
            parts[k] = Apply(x.narrow(-1, part * k, len), acts[k]);
        }
        return torch.cat(parts, -1);
    }

    static Tensor Apply(Tensor x, string act) => act switch
    {
        "relu" => x.relu(),
        "square" => x.square(),
        "tanh" => x.tanh(),
        "elu" => F.elu(x, 1.0, false),
        "sigmoid" => x.sigmoid(),
        _ => throw new ArgumentException($"unknown objective activation '{act}'"),
    };

    /// <summary>Stacked dense layer over any middle dims: x [K, …, in], w [K, out, in], b [K, out] → [K, …, out].</summary>
    static Tensor Linear(Tensor x, Tensor w, Tensor b)
    {
        var shape = x.shape;
        var y = Mlp.Linear(x.reshape(shape[0], -1, shape[^1]), w, b);
        var outShape = (long[])shape.Clone();
        outShape[^1] = w.shape[1];
        return y.reshape(outShape);
    }

    /// <summary>Dense → mixed activation (→ LayerNorm ε 1e-12 with per-slot gain and shift), reading W, b (, gain,
    /// shift) from α at <paramref name="i"/>.</summary>
    static Tensor Dense(Tensor x, IReadOnlyList<Tensor> alpha, ref int i, IReadOnlyList<string> acts, bool ln)
    {
        var h = Activate(Linear(x, alpha[i], alpha[i + 1]), acts);
        i += 2;
        if (ln)
        {
            var shape = h.shape;
            h = Mlp.LayerNorm(h.reshape(shape[0], -1, shape[^1]), alpha[i], alpha[i + 1], 1e-12).reshape(shape);
            i += 2;
        }
        return h;
    }

    static bool AllValid(Tensor mask)
    {
        using var _ = no_grad();
        using var last = mask.select(-1, mask.shape[^1] - 1).min();
        return last.to(ScalarType.Float64).item<double>() > 0;
    }

    /// <summary>Asserts the shapes of α and of every input (an error inside autograd.grad would abort the process).</summary>
    static (long K, long B, long T, long A) CheckInputs(ObjectiveSpec spec, IReadOnlyList<Tensor> alpha, ObjectiveInputs x)
    {
        if (x.Act.shape.Length != 4) throw new ArgumentException($"objective: actions must be [K, B, T, A], got [{string.Join(", ", x.Act.shape)}]");
        long K = x.Act.shape[0], B = x.Act.shape[1], T = x.Act.shape[2], A = x.Act.shape[3];
        var shapes = spec.ParameterShapes();
        if (alpha.Count != shapes.Count)
            throw new ArgumentException($"objective: expected {shapes.Count} parameter tensors, got {alpha.Count}");
        for (int k = 0; k < shapes.Count; k++)
            if (!alpha[k].shape.SequenceEqual(shapes[k].Prepend(K)))
                throw new ArgumentException($"objective: parameter {k} has shape [{string.Join(", ", alpha[k].shape)}], expected [{K}, {string.Join(", ", shapes[k])}]");
        void Need(Tensor? t, string name, params long[] shape)
        {
            if (t is null) throw new ArgumentException($"objective: {name} is required by variant {spec.Variant}");
            if (!t.shape.SequenceEqual(shape))
                throw new ArgumentException($"objective: {name} has shape [{string.Join(", ", t.shape)}], expected [{string.Join(", ", shape)}]");
        }
        Need(x.PolicyAct, "policy actions", K, B, T, A);
        Need(x.Rew, "rewards", K, B, T);
        Need(x.Done, "done", K, B, T);
        Need(x.Mask, "mask", K, B, T);
        Need(x.Values, "values", K, B, T + 1);
        if (spec.UseQ) Need(x.Q, "Q", K, B, T);
        return (K, B, T, A);
    }
}
