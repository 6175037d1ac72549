using MetaGenRL.Core.Checkpoints;
using MetaGenRL.Core.Envs;
using MetaGenRL.Core.Objective;
using MetaGenRL.Core.Randomness;
using MetaGenRL.Core.Torch;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaGenRL.Core.Agents;

/// <summary>
/// EPG (Houthooft et al. 2018, "Evolved Policy Gradients") settings. An evolved loss network L_φ reads the agent's
/// last <see cref="BufferSteps"/> transitions through temporal convolutions; inner loops train fresh Gaussian MLP
/// policies by gradient descent on L_φ alone; evolution strategies with antithetic pairs and centered-rank fitness
/// shaping (Salimans et al. 2017) move φ towards losses whose agents end with higher returns. The paper's scale is
/// 256 inner loops of up to 1M steps per epoch on 1,000 CPUs; the defaults here are sized for a workstation.
/// </summary>
/// <param name="BufferSteps">transitions the loss reads at once (the paper's experience buffer N)</param>
/// <param name="UpdateEvery">env steps between policy updates (the paper's M); each update reads the last BufferSteps</param>
/// <param name="LossChannels">channels of the loss network's temporal convolutions</param>
/// <param name="PolicyUnits">units of each of the policy's two tanh layers (the paper: 64)</param>
/// <param name="PolicyLearningRate">the inner loop's Adam step size</param>
/// <param name="MaxGradNorm">global-norm clip of each inner policy gradient (an evolved loss may be steep)</param>
/// <param name="InnerSteps">env steps of one inner loop (a fresh agent's lifetime)</param>
/// <param name="Pairs">antithetic pairs per ES epoch (2 × Pairs inner loops)</param>
/// <param name="Sigma">ES perturbation scale σ</param>
/// <param name="EsLearningRate">Adam step size on φ (ascent on the shaped fitness)</param>
/// <param name="FitnessEpisodes">an inner loop's fitness is the mean return of its last this-many finished episodes</param>
public sealed record EpgSettings(int BufferSteps = 64, int UpdateEvery = 32, int LossChannels = 16, int PolicyUnits = 64,
                                 double PolicyLearningRate = 1e-3, double MaxGradNorm = 1.0, long InnerSteps = 4000,
                                 int Pairs = 4, double Sigma = 0.05, double EsLearningRate = 0.01, int FitnessEpisodes = 3)
{
    /// <summary>The defaults with the run config's epg_* keys applied (None keeps a default).</summary>
    public static EpgSettings From(Config.RunConfig cfg)
    {
        var d = new EpgSettings();
        return d with
        {
            InnerSteps = cfg.EpgInnerSteps ?? d.InnerSteps,
            Pairs = cfg.EpgPairs ?? d.Pairs,
            Sigma = cfg.EpgSigma ?? d.Sigma,
            EsLearningRate = cfg.EpgEsLearningRate ?? d.EsLearningRate,
        };
    }

    /// <summary>Env steps of one ES epoch.</summary>
    public long StepsPerEpoch => 2L * Pairs * InnerSteps;

    /// <summary>Throws naming the first setting out of range.</summary>
    public void Validate()
    {
        void Need(bool ok, string what) { if (!ok) throw new ArgumentException($"EPG: {what}"); }
        Need(BufferSteps >= 2, $"buffer of {BufferSteps} steps; need ≥ 2");
        Need(UpdateEvery >= 1, $"update every {UpdateEvery} steps; need ≥ 1");
        Need(LossChannels >= 1 && PolicyUnits >= 1, "network sizes must be ≥ 1");
        Need(InnerSteps >= BufferSteps, $"inner loops of {InnerSteps} steps are shorter than the loss's buffer of {BufferSteps}");
        Need(Pairs >= 1, $"{Pairs} antithetic pairs; need ≥ 1");
        Need(Sigma > 0 && double.IsFinite(Sigma), $"σ = {Sigma}; need > 0");
        Need(EsLearningRate > 0 && PolicyLearningRate > 0, "learning rates must be > 0");
        Need(FitnessEpisodes >= 1, $"fitness over {FitnessEpisodes} episodes; need ≥ 1");
    }
}

/// <summary>
/// The evolved loss L_φ. Per transition t of the buffer it reads five channels: the reward standardised over the
/// buffer (so one loss reads envs of any reward scale), the episode-end flag, the time within the episode (steps /
/// 1000), log π(a_t|s_t) and the policy's mean log σ. The last two carry the policy's parameters; the first three are
/// data. Two temporal convolutions (kernel 7 then 5, 'same' padding, tanh) and a 1×1 convolution give a loss per step;
/// L_φ is their mean. Inputs are env-size-free, so one loss trains agents on any env of a meta-train set.
/// φ is one flat float vector (what ES perturbs): W1 [C,5,7], b1 [C], W2 [C,C,5], b2 [C], W3 [1,C,1], b3 [1].
/// </summary>
public static class EpgLoss
{
    public const int Inputs = 5;
    const int K1 = 7, K2 = 5;

    /// <summary>Entries of φ for <paramref name="channels"/> channels.</summary>
    public static int Size(int channels) => channels * Inputs * K1 + channels + channels * channels * K2 + channels + channels + 1;

    /// <summary>A fresh φ: Glorot-uniform weights (fan over channels × kernel), zero biases.</summary>
    public static float[] Init(int channels, long seed)
    {
        var rng = Seeds.Random(seed, Seeds.ObjectiveInitStream);
        var phi = new float[Size(channels)];
        int o = 0;
        void Glorot(int outs, int ins, int k)
        {
            double lim = Math.Sqrt(6.0 / ((ins + outs) * k));
            for (int i = 0; i < outs * ins * k; i++) phi[o++] = (float)((rng.NextDouble() * 2 - 1) * lim);
        }
        Glorot(channels, Inputs, K1); o += channels;
        Glorot(channels, channels, K2); o += channels;
        Glorot(1, channels, 1); o += 1;
        return phi;
    }

    /// <summary>φ's tensors (float32, no gradient), in the order above.</summary>
    public static Tensor[] Tensors(float[] phi, int channels)
    {
        if (phi.Length != Size(channels)) throw new ArgumentException($"EPG loss: φ has {phi.Length} entries; {channels} channels need {Size(channels)}");
        long[][] shapes = [[channels, Inputs, K1], [channels], [channels, channels, K2], [channels], [1, channels, 1], [1]];
        var result = new Tensor[shapes.Length];
        int o = 0;
        for (int i = 0; i < shapes.Length; i++)
        {
            int n = (int)shapes[i].Aggregate(1L, (a, b) => a * b);
            result[i] = torch.tensor(phi.AsSpan(o, n).ToArray(), shapes[i]);
            o += n;
        }
        return result;
    }

    /// <summary>The data channels of a buffer: standardised rewards, episode ends, time / 1000, as [3, N].</summary>
    public static float[] DataChannels(double[] rewards, bool[] ends, int[] times)
    {
        int n = rewards.Length;
        double mean = 0, sq = 0;
        foreach (var r in rewards) mean += r;
        mean /= n;
        foreach (var r in rewards) sq += (r - mean) * (r - mean);
        double sd = Math.Sqrt(sq / n);
        var x = new float[3 * n];
        for (int t = 0; t < n; t++)
        {
            x[t] = (float)((rewards[t] - mean) / (sd + 1e-8));
            x[n + t] = ends[t] ? 1f : 0f;
            x[2 * n + t] = times[t] / 1000f;
        }
        return x;
    }

    /// <summary>L_φ over a buffer: <paramref name="data"/> [3, N] (<see cref="DataChannels"/>), log π [N] and the
    /// mean log σ (a scalar), the last two differentiable. Returns the scalar loss.</summary>
    public static Tensor Loss(Tensor[] phi, Tensor data, Tensor logProb, Tensor meanLogStd)
    {
        long n = logProb.shape[0];
        var x = torch.cat([data, logProb.unsqueeze(0), meanLogStd.reshape(1, 1).expand(1, n)], 0).unsqueeze(0);
        var h = torch.nn.functional.conv1d(x, phi[0], phi[1], padding: K1 / 2).tanh();
        h = torch.nn.functional.conv1d(h, phi[2], phi[3], padding: K2 / 2).tanh();
        return torch.nn.functional.conv1d(h, phi[4], phi[5]).mean();
    }
}

/// <summary>
/// Evolution strategies with antithetic sampling and fitness shaping (Salimans et al. 2017): for base noise ε_k and
/// the fitness F⁺_k, F⁻_k of φ + σε_k and φ − σε_k, the ascent direction is
/// g = 1/(2Kσ) Σ_k (u(F⁺_k) − u(F⁻_k)) ε_k, where u maps the 2K fitness values to centered ranks in [−½, ½].
/// Ranks make the step invariant to the fitness scale; a pair shares its env and agent seed, so the pair difference
/// cancels what the env and seed contribute, and envs of different reward scales mix in one epoch.
/// </summary>
public static class EvolutionStrategies
{
    /// <summary>Centered ranks: the i-th smallest of n values ↦ i/(n−1) − ½ (ties share their mean rank; n = 1 ↦ 0).</summary>
    public static double[] CenteredRanks(IReadOnlyList<double> fitness)
    {
        int n = fitness.Count;
        var u = new double[n];
        if (n <= 1) return u;
        var order = Enumerable.Range(0, n).OrderBy(i => fitness[i]).ThenBy(i => i).ToArray();
        for (int i = 0; i < n;)
        {
            int j = i;
            while (j + 1 < n && fitness[order[j + 1]] == fitness[order[i]]) j++;
            double rank = (i + j) / 2.0;
            for (int k = i; k <= j; k++) u[order[k]] = rank / (n - 1) - 0.5;
            i = j + 1;
        }
        return u;
    }

    /// <summary>The ascent direction g above from the base noise ε_k and the raw fitness of each pair's members.</summary>
    public static float[] Gradient(IReadOnlyList<float[]> noise, IReadOnlyList<double> plus, IReadOnlyList<double> minus, double sigma)
    {
        int k = noise.Count;
        if (plus.Count != k || minus.Count != k) throw new ArgumentException($"ES: {k} noise vectors, {plus.Count} + and {minus.Count} − fitness values");
        var u = CenteredRanks(plus.Concat(minus).ToArray());
        int d = noise[0].Length;
        var g = new double[d];
        for (int j = 0; j < k; j++)
        {
            double w = u[j] - u[k + j];
            var e = noise[j];
            for (int i = 0; i < d; i++) g[i] += w * e[i];
        }
        double scale = 1.0 / (2 * k * sigma);
        return g.Select(x => (float)(x * scale)).ToArray();
    }

    /// <summary>A standard normal vector of length <paramref name="dim"/> from <paramref name="rng"/>.</summary>
    public static float[] Noise(SeededRandom rng, int dim)
    {
        var e = new float[dim];
        for (int i = 0; i < dim; i++) e[i] = (float)rng.NextGaussian();
        return e;
    }

    /// <summary>φ + s·σ·ε.</summary>
    public static float[] Perturb(float[] phi, float[] noise, double sigma, int sign)
    {
        var p = new float[phi.Length];
        for (int i = 0; i < p.Length; i++) p[i] = (float)(phi[i] + sign * sigma * noise[i]);
        return p;
    }
}

/// <summary>One finished (or, at the end of a lifetime, cut) episode of an inner loop: its last step (1-based, within
/// the loop), return and length.</summary>
public readonly record struct EpgEpisode(long Step, double Return, int Length, bool Finished);

/// <summary>What an inner loop reports: its episodes, its fitness, updates taken and the last loss value.</summary>
public sealed record EpgLifetime(IReadOnlyList<EpgEpisode> Episodes, double Fitness, long Steps, int Updates, double LastLoss);

/// <summary>
/// One EPG inner loop: a fresh Gaussian MLP policy (two tanh layers, linear mean, state-independent log σ clamped to
/// [−5, 2]) acts on an env; every <see cref="EpgSettings.UpdateEvery"/> steps, once the buffer holds
/// <see cref="EpgSettings.BufferSteps"/> transitions, it takes one Adam step on L_φ over the last BufferSteps of them.
/// No critic and no reward-derived target: L_φ is the only learning signal. Randomness: init, action noise from the
/// agent seed's streams. Parameters carry a leading slot dim of one (TF-form Adam and the stacked helpers).
/// </summary>
public sealed class EpgAgent : IDisposable
{
    readonly EpgSettings _s;
    readonly List<Tensor> _p;
    readonly TfAdam _adam;
    readonly Generator _noise;
    public int ObservationSize { get; }
    public int ActionSize { get; }
    public int Updates { get; private set; }

    public EpgAgent(EpgSettings settings, int observationSize, int actionSize, long seed)
    {
        _s = settings; ObservationSize = observationSize; ActionSize = actionSize;
        int H = settings.PolicyUnits;
        using var gen = new Generator(Seeds.Derive(seed, Seeds.InitStream), torch.CPU);
        Tensor Glorot(long outs, long ins)
        {
            double lim = Math.Sqrt(6.0 / (ins + outs));
            return torch.rand([1, outs, ins], dtype: ScalarType.Float64, generator: gen).mul_(2 * lim).sub_(lim);
        }
        var init = new List<Tensor>
        {
            Glorot(H, observationSize), torch.zeros(1, H, dtype: ScalarType.Float64),
            Glorot(H, H), torch.zeros(1, H, dtype: ScalarType.Float64),
            Glorot(actionSize, H).mul_(0.01), torch.zeros(1, actionSize, dtype: ScalarType.Float64),
            torch.zeros(1, actionSize, dtype: ScalarType.Float64),
        };
        _p = init.Select(t => { var x = t.to(ScalarType.Float32).requires_grad_(true); x.DetachFromDisposeScope(); t.Dispose(); return x; }).ToList();
        _adam = new TfAdam(_p, settings.PolicyLearningRate, eps: 1e-5);
        _noise = new Generator(Seeds.Derive(seed, Seeds.NoiseStream), torch.CPU);
    }

    /// <summary>The policy mean at observations [B, O] → [B, A].</summary>
    Tensor Mean(Tensor obs)
    {
        var h = (obs.matmul(_p[0][0].t()) + _p[1][0]).tanh();
        h = (h.matmul(_p[2][0].t()) + _p[3][0]).tanh();
        return h.matmul(_p[4][0].t()) + _p[5][0];
    }

    Tensor LogStd => _p[6][0].clamp(-5, 2);

    /// <summary>A sampled (unclipped) action at <paramref name="obs"/>.</summary>
    public float[] Act(float[] obs)
    {
        using var _ = no_grad();
        using var scope = torch.NewDisposeScope();
        var mean = Mean(torch.tensor(obs).unsqueeze(0))[0];
        var a = mean + LogStd.exp() * torch.randn([ActionSize], generator: _noise);
        return a.data<float>().ToArray();
    }

    /// <summary>One Adam step on L_φ over the buffer (observations [N, O], actions [N, A], data channels [3, N]).
    /// Returns the loss; throws naming the update when it is not finite.</summary>
    public double Update(Tensor[] phi, float[] observations, float[] actions, float[] data, int n)
    {
        using var scope = torch.NewDisposeScope();
        var obs = torch.tensor(observations, [n, ObservationSize]);
        var act = torch.tensor(actions, [n, ActionSize]);
        var logStd = LogStd;
        var logProb = OnPolicyMath.GaussianLogProb(act, Mean(obs), logStd);
        var loss = EpgLoss.Loss(phi, torch.tensor(data, [3, n]), logProb, logStd.mean());
        double value = loss.item<float>();
        if (!double.IsFinite(value)) throw new InvalidOperationException($"EPG: non-finite loss L_φ = {value} at inner update {Updates}");
        var grads = torch.autograd.grad([loss], _p, allow_unused: true).Select((g, i) => g.IsInvalid ? torch.zeros_like(_p[i]) : g).ToList();
        ParamOps.ClipByGlobalNorm(grads, _s.MaxGradNorm);
        _adam.Step(grads);
        Updates++;
        return value;
    }

    public void Dispose()
    {
        _adam.Dispose();
        foreach (var p in _p) p.Dispose();
        _noise.Dispose();
    }
}

/// <summary>Runs inner loops: a fresh <see cref="EpgAgent"/> trained on L_φ for a lifetime.</summary>
public static class EpgInnerLoop
{
    /// <summary>
    /// Trains a fresh agent (seeded by <paramref name="agentSeed"/>) on <paramref name="env"/> for
    /// <paramref name="steps"/> env steps with the loss <paramref name="phi"/>; <paramref name="onEpisode"/> sees each
    /// episode as it ends. Fitness: the mean return of the last <see cref="EpgSettings.FitnessEpisodes"/> finished
    /// episodes, or, when none finished, the return of the cut one.
    /// </summary>
    public static EpgLifetime Run(EpgSettings s, float[] phi, IEnv env, long steps, long agentSeed,
                                  Action<EpgEpisode>? onEpisode = null, CancellationToken ct = default)
    {
        using var agent = new EpgAgent(s, env.ObservationSize, env.ActionSize, agentSeed);
        using var scope = torch.NewDisposeScope();
        var phiT = EpgLoss.Tensors(phi, s.LossChannels);
        int n = s.BufferSteps, O = env.ObservationSize, A = env.ActionSize;
        // ring buffers of the last n transitions
        var obsBuf = new float[n * O]; var actBuf = new float[n * A];
        var rewBuf = new double[n]; var endBuf = new bool[n]; var timeBuf = new int[n];
        var episodes = new List<EpgEpisode>();
        double lastLoss = double.NaN, ret = 0;
        int len = 0;
        var obs = env.Reset();
        for (long t = 0; t < steps; t++)
        {
            if ((t & 255) == 0) ct.ThrowIfCancellationRequested();
            var a = agent.Act(obs);
            var envAct = new float[A];
            for (int i = 0; i < A; i++) envAct[i] = Math.Clamp(a[i], env.ActionLow[i], env.ActionHigh[i]);
            var step = env.Step(envAct);
            int slot = (int)(t % n);
            obs.CopyTo(obsBuf, slot * O);
            a.CopyTo(actBuf, slot * A);
            rewBuf[slot] = step.Reward; timeBuf[slot] = len;
            ret += step.Reward;
            len++;
            bool last = t + 1 == steps;
            endBuf[slot] = step.Done || last;
            obs = step.Observation;
            if (step.Done || last)
            {
                var ep = new EpgEpisode(t + 1, ret, len, step.Done);
                episodes.Add(ep);
                onEpisode?.Invoke(ep);
                ret = 0; len = 0;
                if (step.Done) obs = env.Reset();
                else if (env is EnvBase b) b.AbandonEpisode();
            }
            if (t + 1 >= n && (t + 1) % s.UpdateEvery == 0)
            {
                // the buffer in time order: oldest at slot (t+1) % n
                int start = (int)((t + 1) % n);
                var o = new float[n * O]; var ac = new float[n * A];
                var r = new double[n]; var e = new bool[n]; var tm = new int[n];
                for (int j = 0; j < n; j++)
                {
                    int src = (start + j) % n;
                    Array.Copy(obsBuf, src * O, o, j * O, O);
                    Array.Copy(actBuf, src * A, ac, j * A, A);
                    r[j] = rewBuf[src]; e[j] = endBuf[src]; tm[j] = timeBuf[src];
                }
                lastLoss = agent.Update(phiT, o, ac, EpgLoss.DataChannels(r, e, tm), n);
            }
        }
        return new EpgLifetime(episodes, Fitness(episodes, s.FitnessEpisodes), steps, agent.Updates, lastLoss);
    }

    /// <summary>The mean return of the last <paramref name="count"/> finished episodes; the last episode's return when
    /// none finished; 0 for no episode at all.</summary>
    public static double Fitness(IReadOnlyList<EpgEpisode> episodes, int count)
    {
        var finished = episodes.Where(e => e.Finished).ToList();
        if (finished.Count == 0) return episodes.Count == 0 ? 0 : episodes[^1].Return;
        return finished.Skip(Math.Max(0, finished.Count - count)).Average(e => e.Return);
    }
}

/// <summary>One inner loop of an ES epoch: the member's index, its φ, the env (index in the meta-train set) and the
/// fresh agent's seed.</summary>
public sealed record EpgJob(int Member, float[] Phi, int EnvIndex, long AgentSeed, long Steps);

/// <summary>
/// EPG's outer loop state: φ and its Adam (<see cref="ObjectiveAdam"/>, ascent by descending −g), the ES noise and
/// env-choice generator, and the epoch count. <see cref="Propose"/> gives an epoch's 2K jobs (pair k: members k and
/// K + k, φ ± σε_k, one env and one agent seed); <see cref="Apply"/> takes their fitness in member order.
/// </summary>
public sealed class EpgTrainer
{
    public EpgSettings Settings { get; }
    public long Epochs { get; private set; }
    public int EnvCount { get; }
    ObjectiveAdam _adam;
    readonly SeededRandom _rng;
    readonly long _seed;
    List<float[]> _noise = [];

    public EpgTrainer(EpgSettings settings, int envCount, long seed)
    {
        settings.Validate();
        Settings = settings; EnvCount = envCount; _seed = seed;
        _adam = new ObjectiveAdam(EpgLoss.Init(settings.LossChannels, seed), settings.EsLearningRate);
        _rng = Seeds.Random(seed, Seeds.ExploreStream);
    }

    /// <summary>A copy of φ.</summary>
    public float[] Phi => _adam.Alpha;

    /// <summary>The next epoch's jobs, members 0..2K−1.</summary>
    public IReadOnlyList<EpgJob> Propose()
    {
        var phi = _adam.Alpha;
        int k = Settings.Pairs;
        _noise = Enumerable.Range(0, k).Select(_ => EvolutionStrategies.Noise(_rng, phi.Length)).ToList();
        var jobs = new EpgJob[2 * k];
        for (int j = 0; j < k; j++)
        {
            int env = _rng.Next(EnvCount);
            long agentSeed = Seeds.AgentSeed(Seeds.AgentSeed(_seed, (int)Epochs), j);
            jobs[j] = new EpgJob(j, EvolutionStrategies.Perturb(phi, _noise[j], Settings.Sigma, +1), env, agentSeed, Settings.InnerSteps);
            jobs[k + j] = new EpgJob(k + j, EvolutionStrategies.Perturb(phi, _noise[j], Settings.Sigma, -1), env, agentSeed, Settings.InnerSteps);
        }
        return jobs;
    }

    /// <summary>One Adam step on φ from the epoch's fitness (member order); returns ‖g‖.</summary>
    public double Apply(IReadOnlyList<double> fitness)
    {
        int k = Settings.Pairs;
        if (fitness.Count != 2 * k || _noise.Count != k) throw new InvalidOperationException($"EPG: {fitness.Count} fitness values for an epoch of {2 * k} (Propose first)");
        var g = EvolutionStrategies.Gradient(_noise, fitness.Take(k).ToArray(), fitness.Skip(k).ToArray(), Settings.Sigma);
        _adam.Apply(g.Select(x => -x).ToArray());
        _noise = [];
        Epochs++;
        return Math.Sqrt(g.Sum(x => (double)x * x));
    }

    // ── STATE ──

    const string Tag = "EPGT";
    const int Version = 1;

    /// <summary>φ with its Adam state, the generator and the epoch count (between epochs).</summary>
    public byte[] Save()
    {
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            StateIO.WriteHeader(w, Tag, Version);
            w.Write(Settings.LossChannels);
            w.Write(Epochs);
            StateIO.WriteBytes(w, _adam.Export());
            StateIO.WriteRandom(w, _rng);
        }
        return ms.ToArray();
    }

    /// <summary>A trainer from <see cref="Save"/>'s bytes, continuing with <paramref name="settings"/> (its loss size must match).</summary>
    public static EpgTrainer Load(byte[] state, EpgSettings settings, int envCount, long seed)
    {
        using var r = new BinaryReader(new MemoryStream(state));
        StateIO.ExpectHeader(r, Tag, Version, "EPG trainer state");
        int channels = r.ReadInt32();
        if (channels != settings.LossChannels) throw new InvalidDataException($"EPG trainer state has {channels} loss channels, the settings {settings.LossChannels}");
        var t = new EpgTrainer(settings, envCount, seed) { Epochs = r.ReadInt64() };
        t._adam = ObjectiveAdam.Import(StateIO.ReadBytes(r, "EPG φ and Adam"));
        t._rng.SetState(StateIO.ReadRandom(r, "ES generator"));
        return t;
    }

    /// <summary>φ of a checkpoint's trainer state, without a trainer.</summary>
    public static float[] ReadLoss(byte[] state)
    {
        using var r = new BinaryReader(new MemoryStream(state));
        StateIO.ExpectHeader(r, Tag, Version, "EPG trainer state");
        r.ReadInt32();
        r.ReadInt64();
        return ObjectiveAdam.Import(StateIO.ReadBytes(r, "EPG φ and Adam")).Alpha;
    }
}
