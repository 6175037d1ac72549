namespace MetaGenRL.Core.Objective;

/// <summary>
/// The ObjectiveServer's arithmetic in plain C#: the mean of the per-agent (already clipped) gradients, then one
/// TensorFlow-style Adam step on α (as the official objective server: per-agent clipping, TF's Adam defaults):
/// m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;  lr_t = lr·√(1−β2^t)/(1−β1^t);  α ← α − lr_t·m/(√v + ε).
/// α, m and v are float32 like the TF variables; the step size and the mean are computed in double.
/// </summary>
public sealed class ObjectiveAdam
{
    public const float DefaultBeta1 = 0.9f, DefaultBeta2 = 0.999f, DefaultEpsilon = 1e-8f;

    readonly float[] _alpha, _m, _v;
    public double LearningRate { get; }
    public double Beta1 { get; }
    public double Beta2 { get; }
    public double Epsilon { get; }
    /// <summary>Adam steps applied (TF's t); also the published version of α.</summary>
    public long Steps { get; private set; }
    public int Size => _alpha.Length;

    public ObjectiveAdam(float[] alpha, double learningRate = 1e-3, double beta1 = DefaultBeta1, double beta2 = DefaultBeta2,
                         double epsilon = DefaultEpsilon)
    {
        _alpha = (float[])alpha.Clone();
        _m = new float[alpha.Length];
        _v = new float[alpha.Length];
        LearningRate = learningRate; Beta1 = beta1; Beta2 = beta2; Epsilon = epsilon;
    }

    /// <summary>A copy of α.</summary>
    public float[] Alpha => (float[])_alpha.Clone();

    /// <summary>Plain mean, in the order given, of the gradients that are not null; null when none is.</summary>
    public static float[]? Mean(IReadOnlyList<float[]?> gradients, int size)
    {
        var sum = new double[size];
        int used = 0;
        foreach (var g in gradients)
        {
            if (g is null) continue;
            if (g.Length != size) throw new ArgumentException($"gradient has {g.Length} entries, α has {size}");
            for (int i = 0; i < size; i++) sum[i] += g[i];
            used++;
        }
        if (used == 0) return null;
        var mean = new float[size];
        for (int i = 0; i < size; i++) mean[i] = (float)(sum[i] / used);
        return mean;
    }

    /// <summary>Averages the non-null gradients and applies one Adam step; returns how many were used (0: no step).</summary>
    public int Step(IReadOnlyList<float[]?> gradients)
    {
        var g = Mean(gradients, Size);
        if (g is null) return 0;
        Apply(g);
        return gradients.Count(x => x is not null);
    }

    /// <summary>One Adam step with gradient <paramref name="g"/>.</summary>
    public void Apply(float[] g)
    {
        if (g.Length != Size) throw new ArgumentException($"gradient has {g.Length} entries, α has {Size}");
        Steps++;
        double lrT = LearningRate * Math.Sqrt(1 - Math.Pow(Beta2, Steps)) / (1 - Math.Pow(Beta1, Steps));
        float b1 = (float)Beta1, b2 = (float)Beta2;
        for (int i = 0; i < Size; i++)
        {
            _m[i] = b1 * _m[i] + (1 - b1) * g[i];
            _v[i] = b2 * _v[i] + (1 - b2) * g[i] * g[i];
            _alpha[i] = (float)(_alpha[i] - lrT * _m[i] / (Math.Sqrt(_v[i]) + Epsilon));
        }
    }

    // ── STATE ──
    const int Format = 1;

    /// <summary>α, m, v, t and the hyperparameters as bytes (little-endian).</summary>
    public byte[] Export()
    {
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms))
        {
            w.Write(Format); w.Write(Size); w.Write(Steps);
            w.Write(LearningRate); w.Write(Beta1); w.Write(Beta2); w.Write(Epsilon);
            foreach (var a in new[] { _alpha, _m, _v }) foreach (var x in a) w.Write(x);
        }
        return ms.ToArray();
    }

    /// <summary>Restores what <see cref="Export"/> wrote.</summary>
    public static ObjectiveAdam Import(byte[] state)
    {
        using var r = new BinaryReader(new MemoryStream(state));
        int format = r.ReadInt32();
        if (format != Format) throw new InvalidDataException($"objective server state format {format}, expected {Format}");
        int n = r.ReadInt32();
        long t = r.ReadInt64();
        double lr = r.ReadDouble(), b1 = r.ReadDouble(), b2 = r.ReadDouble(), eps = r.ReadDouble();
        var alpha = new float[n];
        for (int i = 0; i < n; i++) alpha[i] = r.ReadSingle();
        var s = new ObjectiveAdam(alpha, lr, b1, b2, eps) { Steps = t };
        for (int i = 0; i < n; i++) s._m[i] = r.ReadSingle();
        for (int i = 0; i < n; i++) s._v[i] = r.ReadSingle();
        return s;
    }
}
