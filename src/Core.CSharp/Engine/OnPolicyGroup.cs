using MetaGenRL.Core.Agents;
using MetaGenRL.Core.Checkpoints;
using MetaGenRL.Core.Config;
using MetaGenRL.Core.Envs;
using MetaGenRL.Core.Randomness;
using MetaGenRL.Core.Torch;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaGenRL.Core.Engine;

/// <summary>
/// K agents of an on-policy baseline (PPO or on-policy REINFORCE, see <see cref="OnPolicySettings"/>) on K instances
/// of one env, computed as one batch: a Gaussian policy (an MLP for the mean, a state-independent log-std) and a value
/// MLP per slot, stacked [K, …] like the TD3 family's networks, each with TF-form Adam and a step count per slot.
/// A collect gathers whole episodes until at least the rollout length (so between collects every env sits at an
/// episode boundary and a checkpoint is exact); it then computes the old log-probabilities, values and GAE advantages
/// and asks for <see cref="OnPolicySettings.UpdatesFor"/> gradient steps, which <see cref="Update"/> takes one
/// minibatch at a time (a fresh permutation per epoch, drawn from the slot's own generator). Randomness per slot:
/// init from its seed's init stream, action noise from a CPU torch generator on its noise stream, minibatch order
/// from a <see cref="SeededRandom"/> on its explore stream, the env from its env stream: slot k computes what agent k
/// would compute alone (up to the rounding of a batched kernel). Single-threaded.
/// </summary>
public sealed class OnPolicyGroup : IAgentGroup
{
    public IReadOnlyList<int> Agents { get; }
    public int Size { get; }
    public string EnvId { get; }
    public long[] EnvSteps => (long[])_envSteps.Clone();
    public Algorithm Algorithm { get; }
    public OnPolicySettings Settings { get; }
    /// <summary>Emit the losses every this many gradient steps of a slot.</summary>
    public int LossLogEvery { get; set; } = 100;

    readonly RunConfig _cfg;
    readonly IEnv[] _envs;
    readonly Device _dev;
    readonly ScalarType _dtype;
    readonly int _obsSize, _actSize;
    readonly float[] _low, _high;
    readonly long[] _seeds;
    readonly ActionScaling _extremity;
    readonly MlpSpec _piSpec, _vSpec;
    readonly List<Tensor> _pi, _v;
    readonly Tensor _logStd;            // [K, act], a leaf
    readonly List<Tensor> _piParams;    // _pi then _logStd
    readonly TfAdam _piOpt, _vOpt;
    readonly Generator[] _noise;
    readonly SeededRandom[] _order;
    readonly ulong[]?[] _initialEnvRng;
    readonly long[] _envSteps, _updates;
    readonly RunningMoments[] _obsStats;
    // the episode in progress (only within a collect: every collect ends at an episode boundary)
    readonly float[]?[] _obs;
    readonly double[] _epReturn, _epExtremity;
    readonly int[] _epLen;
    // the last rollout, ready for its gradient steps
    readonly Rollout?[] _rollout;

    sealed record Rollout(Tensor Obs, Tensor Act, Tensor OldLogProb, Tensor Advantages, Tensor Returns, int Count) : IDisposable
    {
        public int[] Order = [];
        public void Dispose() { Obs.Dispose(); Act.Dispose(); OldLogProb.Dispose(); Advantages.Dispose(); Returns.Dispose(); }
    }

    /// <summary>K agents of <paramref name="algorithm"/> (ppo or reinforce-onpolicy) on registry env <paramref name="envId"/>.</summary>
    public OnPolicyGroup(RunConfig cfg, string envId, IReadOnlyList<int> agents, IReadOnlyList<long> seeds, string device,
                         Algorithm algorithm, ScalarType dtype = ScalarType.Float32)
    {
        if (!Algorithms.IsOnPolicy(algorithm)) throw new ArgumentException($"{Algorithms.Name(algorithm)} is not an on-policy algorithm");
        if (agents.Count < 1 || agents.Count != seeds.Count) throw new ArgumentException($"a group needs as many agent indices ({agents.Count}) as seeds ({seeds.Count}), at least one");
        _cfg = cfg.Validate();
        Algorithm = algorithm;
        Settings = OnPolicySettings.From(algorithm == Algorithm.Ppo ? OnPolicySettings.Ppo : OnPolicySettings.Reinforce, _cfg);
        Agents = agents.ToArray();
        Size = agents.Count;
        _seeds = seeds.ToArray();
        _envs = AgentGroup.MakeEnvs(envId, _seeds);
        EnvId = envId;
        var first = _envs[0];
        _obsSize = first.ObservationSize; _actSize = first.ActionSize;
        _low = first.ActionLow; _high = first.ActionHigh;
        _extremity = new ActionScaling(_low, _high, normalize: false);   // for episode_action_extremity only
        _initialEnvRng = _envs.Select(e => e is EnvBase { AtEpisodeBoundary: true } b ? b.GetRngState() : null).ToArray();
        _dev = Devices.Resolve(device);
        _dtype = dtype;
        AllocatorTuning.Apply();

        _piSpec = new MlpSpec(_obsSize, Settings.Units, Settings.Depth, _actSize, LayerNorm: false, Activation: "tanh", Output: MlpOutput.Linear);
        _vSpec = new MlpSpec(_obsSize, Settings.Units, Settings.Depth, 1, LayerNorm: false, Activation: "tanh", Output: MlpOutput.Linear);
        var (pis, vs) = (new List<List<Tensor>>(), new List<List<Tensor>>());
        foreach (var seed in _seeds)
        {
            using var gen = new Generator(Seeds.Derive(seed, Seeds.InitStream), torch.CPU);
            pis.Add(Mlp.Draw(_piSpec, gen));
            vs.Add(Mlp.Draw(_vSpec, gen));
        }
        _pi = Mlp.Stack(pis, _dev, dtype);
        _v = Mlp.Stack(vs, _dev, dtype);
        _logStd = torch.zeros(Size, _actSize, dtype: dtype, device: _dev).requires_grad_(true);
        _logStd.DetachFromDisposeScope();
        _piParams = [.. _pi, _logStd];
        _piOpt = new TfAdam(_piParams, Settings.PolicyLearningRate, eps: 1e-5);
        _vOpt = new TfAdam(_v, Settings.ValueLearningRate, eps: 1e-5);
        _noise = _seeds.Select(s => new Generator(Seeds.Derive(s, Seeds.NoiseStream), torch.CPU)).ToArray();
        _order = _seeds.Select(s => Seeds.Random(s, Seeds.ExploreStream)).ToArray();
        _envSteps = new long[Size];
        _updates = new long[Size];
        _obsStats = Enumerable.Range(0, Size).Select(_ => new RunningMoments(_obsSize)).ToArray();
        _obs = new float[]?[Size];
        _epReturn = new double[Size]; _epExtremity = new double[Size]; _epLen = new int[Size];
        _rollout = new Rollout?[Size];
    }

    // ── COLLECT ──

    /// <summary>Per slot with a limit: whole episodes until at least the rollout length (the <paramref name="targets"/>
    /// of the TD3 family's schedule do not apply), at most the limit (the budget may cut the last episode, which then
    /// counts as truncated); then the rollout's advantages. Reports episode_return, episode_length and
    /// episode_action_extremity per finished episode.</summary>
    public SlotCollect[] Collect(long[] targets, long[] limits, Action<Metric> onMetric)
    {
        int K = Size;
        if (limits.Length != K) throw new ArgumentException($"collect: {limits.Length} limits for a group of {K}");
        int episodeLimit = _cfg.MaxEpisodeLength ?? int.MaxValue;
        var buf = Enumerable.Range(0, K).Select(_ => new RolloutBuffer()).ToArray();
        var failure = new string?[K];
        var shortest = new int?[K];
        var rows = Enumerable.Range(0, K).Select(_ => new List<Metric>()).ToArray();
        for (int k = 0; k < K; k++) { _rollout[k]?.Dispose(); _rollout[k] = null; }
        bool Wants(int k) => failure[k] is null && buf[k].Count < limits[k] && (buf[k].Count < Settings.RolloutSteps || _obs[k] != null);
        var stepping = new bool[K];
        var input = new float[K * _obsSize];
        while (true)
        {
            bool any = false;
            Array.Clear(input);
            for (int k = 0; k < K; k++)
            {
                stepping[k] = false;
                if (!Wants(k)) continue;
                if (_obs[k] == null)
                {
                    try { _obs[k] = Observe(k, _envs[k].Reset()); }
                    catch (Exception e) { failure[k] = $"{EnvId} reset: {e.Message}"; continue; }
                    _epReturn[k] = 0; _epLen[k] = 0; _epExtremity[k] = 0;
                }
                _obs[k]!.CopyTo(input, k * _obsSize);
                stepping[k] = any = true;
            }
            if (!any) break;
            var actions = Sample(input, stepping);
            for (int k = 0; k < K; k++)
            {
                if (!stepping[k]) continue;
                var raw = actions[k];
                var env = new float[_actSize];
                for (int i = 0; i < _actSize; i++) env[i] = Math.Clamp(raw[i], _low[i], _high[i]);
                StepResult step;
                try { step = _envs[k].Step(env); }
                catch (Exception e) { failure[k] = $"{EnvId} step: {e.Message}"; continue; }
                _epLen[k]++;
                _envSteps[k]++;
                _epReturn[k] += step.Reward;
                _epExtremity[k] += _extremity.Extremity(env);
                bool cut = !step.Done && (_epLen[k] >= episodeLimit || buf[k].Count + 1 >= limits[k]);
                var next = Observe(k, step.Observation);
                byte end = step.Terminated ? (byte)1 : step.Truncated || cut ? (byte)2 : (byte)0;
                buf[k].Add(_obs[k]!, raw, step.Reward, end, end == 2 ? next : null);
                _obs[k] = next;
                if (step.Done || cut)
                {
                    if (cut && _envs[k] is EnvBase b) b.AbandonEpisode();
                    if (step.Done || _epLen[k] >= episodeLimit)
                    {
                        rows[k].Add(new Metric(_envSteps[k], "episode_return", _epReturn[k], Agents[k]));
                        rows[k].Add(new Metric(_envSteps[k], "episode_length", _epLen[k], Agents[k]));
                        rows[k].Add(new Metric(_envSteps[k], "episode_action_extremity", _epExtremity[k] / _epLen[k], Agents[k]));
                        shortest[k] = Math.Min(shortest[k] ?? int.MaxValue, _epLen[k]);
                    }
                    _obs[k] = null;
                }
            }
        }
        foreach (var r in rows) foreach (var m in r) onMetric(m);
        var prepared = Prepare(buf, failure);
        return Enumerable.Range(0, K).Select(k =>
            new SlotCollect(buf[k].Count, shortest[k], failure[k], failure[k] is null ? Settings.UpdatesFor(prepared[k]) : 0)).ToArray();
    }

    /// <summary>Updates slot k's observation statistics with a raw observation (when normalising) and returns what
    /// the networks see.</summary>
    float[] Observe(int k, float[] raw)
    {
        if (!Settings.NormalizeObservations) return raw;
        _obsStats[k].Add(raw);
        return _obsStats[k].Normalize(raw);
    }

    /// <summary>a = μ(s) + σ·ε for the stepping slots (ε from each slot's own generator).</summary>
    float[][] Sample(float[] input, bool[] stepping)
    {
        using var _ = no_grad();
        using var scope = torch.NewDisposeScope();
        var x = torch.tensor(input, [Size, 1, _obsSize], dtype: ScalarType.Float32).to(_dtype).to(_dev);
        var mean = Mlp.Forward(_piSpec, _pi, x).reshape(Size, _actSize).to(ScalarType.Float32).cpu();
        var std = _logStd.exp().to(ScalarType.Float32).cpu();
        var result = new float[Size][];
        for (int k = 0; k < Size; k++)
        {
            if (!stepping[k]) { result[k] = []; continue; }
            var eps = torch.randn([_actSize], dtype: ScalarType.Float32, generator: _noise[k]);
            result[k] = (mean[k] + std[k] * eps).data<float>().ToArray();
        }
        return result;
    }

    /// <summary>Old log-probabilities, values and GAE advantages of each slot's rollout, as tensors for the gradient
    /// steps; returns the samples per slot (0: nothing to learn from).</summary>
    int[] Prepare(RolloutBuffer[] buf, string?[] failure)
    {
        int K = Size;
        var counts = new int[K];
        int n = 0, nt = 0;
        for (int k = 0; k < K; k++)
            if (failure[k] is null && buf[k].Count > 0) { n = Math.Max(n, buf[k].Count); nt = Math.Max(nt, buf[k].TruncatedNext.Count); }
        if (n == 0) return counts;
        using var _ = no_grad();
        using var scope = torch.NewDisposeScope();
        var obs = new float[K * n * _obsSize];
        var act = new float[K * n * _actSize];
        var nextObs = new float[K * Math.Max(nt, 1) * _obsSize];
        for (int k = 0; k < K; k++)
        {
            if (failure[k] is not null) continue;
            for (int t = 0; t < buf[k].Count; t++)
            {
                buf[k].Obs[t].CopyTo(obs, (k * n + t) * _obsSize);
                buf[k].Act[t].CopyTo(act, (k * n + t) * _actSize);
            }
            for (int i = 0; i < buf[k].TruncatedNext.Count; i++) buf[k].TruncatedNext[i].CopyTo(nextObs, (k * Math.Max(nt, 1) + i) * _obsSize);
        }
        var obsT = torch.tensor(obs, [K, n, _obsSize]).to(_dtype).to(_dev);
        var actT = torch.tensor(act, [K, n, _actSize]).to(_dtype).to(_dev);
        var mean = Mlp.Forward(_piSpec, _pi, obsT);
        var logp = OnPolicyMath.GaussianLogProb(actT, mean, _logStd.unsqueeze(1));
        var values = Mlp.Forward(_vSpec, _v, obsT).squeeze(-1).to(ScalarType.Float64).cpu();
        var nextValues = Mlp.Forward(_vSpec, _v, torch.tensor(nextObs, [K, Math.Max(nt, 1), _obsSize]).to(_dtype).to(_dev))
                            .squeeze(-1).to(ScalarType.Float64).cpu();
        for (int k = 0; k < K; k++)
        {
            int c = buf[k].Count;
            if (failure[k] is not null || c == 0) continue;
            var b = buf[k];
            var v = values[k].data<double>().ToArray()[..c];
            var vn = nextValues[k].data<double>().ToArray();
            var next = new double[c];
            for (int t = 0, i = 0; t < c; t++) if (b.Ends[t] == 2) next[t] = vn[i++];
            var (adv, ret) = OnPolicyMath.Gae(b.Rewards.ToArray(), v, next, b.Ends.ToArray(), _cfg.DiscountFactor, Settings.GaeLambda);
            var r = new Rollout(obsT[k].slice(0, 0, c, 1).clone(), actT[k].slice(0, 0, c, 1).clone(), logp[k].slice(0, 0, c, 1).clone(),
                                torch.tensor(adv).to(_dtype).to(_dev), torch.tensor(ret).to(_dtype).to(_dev), c);
            foreach (var t in new[] { r.Obs, r.Act, r.OldLogProb, r.Advantages, r.Returns }) t.DetachFromDisposeScope();
            _rollout[k] = r;
            counts[k] = c;
        }
        return counts;
    }

    // ── UPDATE ──

    /// <summary>Gradient step <paramref name="j"/> of the last rollout for the active slots: minibatch j mod m of
    /// epoch j / m (m minibatches per epoch; a new permutation at each epoch's start). The value function steps every
    /// time; the policy every time (PPO) or at j = 0 only (REINFORCE). Returns per slot a non-finite loss, or null.</summary>
    public string?[] Update(long j, bool[] active, Action<Metric> onMetric)
    {
        int K = Size;
        if (active.Length != K) throw new ArgumentException($"{active.Length} activity flags for a group of {K}");
        var failures = new string?[K];
        var on = Enumerable.Range(0, K).Select(k => active[k] && _rollout[k] is not null).ToArray();
        if (!on.Any(a => a)) return failures;
        var idx = new int[K][];
        for (int k = 0; k < K; k++)
        {
            if (!on[k]) { idx[k] = []; continue; }
            var r = _rollout[k]!;
            int mb = Settings.MinibatchSize <= 0 ? r.Count : Math.Min(Settings.MinibatchSize, r.Count);
            long perEpoch = Settings.UpdatesFor(r.Count) / Settings.Epochs;
            int i = (int)(j % perEpoch);
            if (i == 0) r.Order = Settings.MinibatchSize <= 0 ? Enumerable.Range(0, r.Count).ToArray() : Permutation(_order[k], r.Count);
            idx[k] = r.Order[(i * mb)..((i + 1) * mb)];
        }
        int m = idx.Max(x => x.Length);
        bool policyStep = Settings.PolicyEveryStep || j == 0;
        using var scope = torch.NewDisposeScope();
        Tensor Gather(Func<Rollout, Tensor> part, long[] tail)
        {
            var slots = new Tensor[K];
            for (int k = 0; k < K; k++)
            {
                int len = on[k] ? idx[k].Length : 0;
                var pad = torch.zeros(new long[] { m - len }.Concat(tail).ToArray(), dtype: _dtype, device: _dev);
                slots[k] = len == 0 ? pad
                    : torch.cat([part(_rollout[k]!).index_select(0, torch.tensor(idx[k].Select(i => (long)i).ToArray(), device: _dev)), pad], 0);
            }
            return torch.stack(slots);
        }
        var maskData = new float[K * m];
        for (int k = 0; k < K; k++) if (on[k]) Array.Fill(maskData, 1f, k * m, idx[k].Length);
        var mask = torch.tensor(maskData, [K, m]).to(_dtype).to(_dev);
        var obs = Gather(r => r.Obs, [_obsSize]);
        var act = Gather(r => r.Act, [_actSize]);
        var oldLogp = Gather(r => r.OldLogProb, []);
        var adv = Gather(r => r.Advantages, []);
        var ret = Gather(r => r.Returns, []);
        var count = mask.sum(1).clamp_min(1);
        Tensor MaskedMean(Tensor x) => (x * mask).sum(1) / count;
        if (Settings.NormalizeAdvantages)
        {
            var mu = MaskedMean(adv).unsqueeze(1);
            var sd = (MaskedMean((adv - mu).square()) * count / (count - 1).clamp_min(1)).sqrt().unsqueeze(1);
            adv = (adv - mu) / (sd + 1e-8);
        }
        // value function
        var v = Mlp.Forward(_vSpec, _v, obs).squeeze(-1);
        var valueLoss = MaskedMean((v - ret).square());
        var vGrads = torch.autograd.grad([valueLoss.sum()], _v).ToList();
        if (Settings.MaxGradNorm > 0) ParamOps.ClipByGlobalNorm(vGrads, Settings.MaxGradNorm);
        _vOpt.Step(vGrads, on);
        // policy
        Tensor? policyLoss = null, entropy = null, kl = null, clipped = null;
        if (policyStep)
        {
            var mean = Mlp.Forward(_piSpec, _pi, obs);
            var logStd = _logStd.unsqueeze(1);
            var logp = OnPolicyMath.GaussianLogProb(act, mean, logStd);
            entropy = OnPolicyMath.GaussianEntropy(_logStd);
            policyLoss = OnPolicyMath.ClippedSurrogate(logp, oldLogp, adv, Settings.Clip, mask) - Settings.EntropyCoef * entropy;
            var piGrads = torch.autograd.grad([policyLoss.sum()], _piParams).ToList();
            if (Settings.MaxGradNorm > 0) ParamOps.ClipByGlobalNorm(piGrads, Settings.MaxGradNorm);
            _piOpt.Step(piGrads, on);
            using var _ = no_grad();
            var logRatio = logp - oldLogp;
            kl = MaskedMean(logRatio.exp() - 1 - logRatio);
            clipped = Settings.Clip > 0 ? MaskedMean((logRatio.exp() - 1).abs().gt(Settings.Clip).to(_dtype)) : torch.zeros(K, dtype: _dtype, device: _dev);
        }
        double[] Host(Tensor? t) => t is null ? new double[K] : t.detach().to(ScalarType.Float64).cpu().data<double>().ToArray();
        var (vl, pl, en, klv, cf) = (Host(valueLoss), Host(policyLoss), Host(entropy), Host(kl), Host(clipped));
        for (int k = 0; k < K; k++)
        {
            if (!on[k]) continue;
            if (!double.IsFinite(vl[k])) failures[k] = $"non-finite value_loss = {vl[k]} at update {j}";
            else if (policyStep && !double.IsFinite(pl[k])) failures[k] = $"non-finite policy_loss = {pl[k]} at update {j}";
            if (_updates[k]++ % LossLogEvery != 0 && failures[k] is null) continue;
            onMetric(new Metric(_envSteps[k], "value_loss", vl[k], Agents[k]));
            if (!policyStep) continue;
            onMetric(new Metric(_envSteps[k], "policy_loss", pl[k], Agents[k]));
            onMetric(new Metric(_envSteps[k], "policy_entropy", en[k], Agents[k]));
            onMetric(new Metric(_envSteps[k], "approx_kl", klv[k], Agents[k]));
            if (Settings.Clip > 0) onMetric(new Metric(_envSteps[k], "clip_fraction", cf[k], Agents[k]));
        }
        return failures;
    }

    static int[] Permutation(SeededRandom rng, int n)
    {
        var p = Enumerable.Range(0, n).ToArray();
        for (int i = n - 1; i > 0; i--)
        {
            int r = rng.Next(i + 1);
            (p[i], p[r]) = (p[r], p[i]);
        }
        return p;
    }

    // ── NO LEARNED OBJECTIVE ──

    public bool ComputesObjectiveGradients => false;
    public SlotGradient[] ObjectiveGradients(bool[] active, Action<Metric> onMetric) => new SlotGradient[Size];
    public int ObjectiveSize => 0;
    public void LoadObjective(float[] alpha)
    {
        if (alpha.Length != 0) throw new InvalidOperationException($"agents {string.Join(", ", Agents)} ({Algorithms.Name(Algorithm)}) have no learned objective to load {alpha.Length} values into");
    }
    public float[] ObjectiveParameters(int slot) => [];

    // ── STATE ──

    const string StateMagic = "ONPL";
    const int StateVersion = 1;

    /// <summary>Slot k's networks, Adam states, generators, env generator, counters and observation statistics.
    /// Taken between collects, where the rollout has been used up, so none is stored (<paramref name="includeReplay"/>
    /// has nothing to add).</summary>
    public byte[] SaveState(int slot, bool includeReplay)
    {
        var env = _envs[slot] as EnvBase ?? throw new NotSupportedException($"agent {Agents[slot]}: env {EnvId} does not expose its generator state");
        if (_obs[slot] != null) { env.AbandonEpisode(); _obs[slot] = null; }
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            StateIO.WriteAgentHeader(w, StateMagic, StateVersion, EnvId, Algorithms.Name(Algorithm));
            using (var scope = torch.NewDisposeScope())
            {
                StateIO.WriteTensors(w, "policy", _piParams.Select(p => p[slot]).ToList());
                StateIO.WriteTensors(w, "value", _v.Select(p => p[slot]).ToList());
            }
            StateIO.WriteAdam(w, "policy_adam", _piOpt, slot);
            StateIO.WriteAdam(w, "value_adam", _vOpt, slot);
            StateIO.WriteGenerator(w, _noise[slot]);
            StateIO.WriteRandom(w, _order[slot]);
            StateIO.WriteUInt64s(w, env.GetRngState());
            w.Write(_envSteps[slot]);
            w.Write(_updates[slot]);
            _obsStats[slot].Write(w);
        }
        return ms.ToArray();
    }

    public void LoadState(int slot, byte[] state)
    {
        using var r = new BinaryReader(new MemoryStream(state));
        StateIO.ReadAgentHeader(r, StateMagic, [StateVersion], Agents[slot], EnvId, Algorithms.Name(Algorithm));
        using (var scope = torch.NewDisposeScope())
        {
            StateIO.ReadTensorsInto(r, "policy", _piParams.Select(p => p[slot]).ToList());
            StateIO.ReadTensorsInto(r, "value", _v.Select(p => p[slot]).ToList());
        }
        StateIO.Apply(_piOpt, slot, StateIO.ReadAdam(r, "policy_adam", _piOpt, slot));
        StateIO.Apply(_vOpt, slot, StateIO.ReadAdam(r, "value_adam", _vOpt, slot));
        StateIO.Apply(_noise[slot], StateIO.ReadGenerator(r, _noise[slot], "action noise"));
        _order[slot].SetState(StateIO.ReadRandom(r, "minibatch order"));
        ((EnvBase)_envs[slot]).SetRngState(StateIO.ReadUInt64s(r, "env generator"));
        _envSteps[slot] = r.ReadInt64();
        _updates[slot] = r.ReadInt64();
        _obsStats[slot].Read(r);
        if (r.BaseStream.Position != r.BaseStream.Length)
            throw new InvalidDataException($"agent {Agents[slot]}: {r.BaseStream.Length - r.BaseStream.Position} unexpected trailing bytes in its state");
        _obs[slot] = null;
        _rollout[slot]?.Dispose();
        _rollout[slot] = null;
    }

    /// <summary>Slot k back to its initial state: networks redrawn from its seed, Adam moments and counts zero,
    /// generators, env generator, counters and observation statistics as at the start.</summary>
    public void ResetAgent(int slot)
    {
        using (var gen = new Generator(Seeds.Derive(_seeds[slot], Seeds.InitStream), torch.CPU))
        using (no_grad())
        using (var scope = torch.NewDisposeScope())
        {
            var pi = Mlp.Draw(_piSpec, gen);
            var v = Mlp.Draw(_vSpec, gen);
            for (int i = 0; i < _pi.Count; i++) _pi[i][slot].copy_(pi[i]);
            for (int i = 0; i < _v.Count; i++) _v[i][slot].copy_(v[i]);
            _logStd[slot].zero_();
            foreach (var opt in new[] { _piOpt, _vOpt })
            {
                foreach (var t in opt.FirstMoments) t[slot].zero_();
                foreach (var t in opt.SecondMoments) t[slot].zero_();
                opt.RestoreSteps(slot, 0);
            }
        }
        _noise[slot].manual_seed(unchecked((long)Seeds.Derive(_seeds[slot], Seeds.NoiseStream)));
        _order[slot].SetState(Seeds.Random(_seeds[slot], Seeds.ExploreStream).GetState());
        ((EnvBase)_envs[slot]).SetRngState(_initialEnvRng[slot] ?? throw new NotSupportedException($"agent {Agents[slot]}: env {EnvId} was not at its start when the group was made"));
        _envSteps[slot] = 0; _updates[slot] = 0;
        _obsStats[slot] = new RunningMoments(_obsSize);
        _obs[slot] = null;
        _rollout[slot]?.Dispose();
        _rollout[slot] = null;
    }

    public void Dispose()
    {
        foreach (var r in _rollout) r?.Dispose();
        _piOpt.Dispose(); _vOpt.Dispose();
        foreach (var p in _pi) p.Dispose();
        foreach (var p in _v) p.Dispose();
        _logStd.Dispose();
        foreach (var g in _noise) g.Dispose();
        foreach (var e in _envs) e.Dispose();
    }

    /// <summary>One slot's rollout as collected: observations as the networks saw them, raw (unclipped) actions,
    /// rewards, episode ends (0 on, 1 terminated, 2 truncated) and the next observation of each truncated step.</summary>
    sealed class RolloutBuffer
    {
        public readonly List<float[]> Obs = new(), Act = new(), TruncatedNext = new();
        public readonly List<double> Rewards = new();
        public readonly List<byte> Ends = new();
        public int Count => Obs.Count;
        public void Add(float[] obs, float[] act, double reward, byte end, float[]? next)
        {
            Obs.Add(obs); Act.Add(act); Rewards.Add(reward); Ends.Add(end);
            if (next is not null) TruncatedNext.Add(next);
        }
    }
}

/// <summary>A running mean and variance per feature (Chan et al.'s parallel form of Welford's update), for
/// observation normalisation: (x − mean) / sqrt(var + 1e-8), clipped to ±10 (as Stable-Baselines3's VecNormalize).</summary>
public sealed class RunningMoments(int size)
{
    double _count;
    readonly double[] _mean = new double[size], _m2 = new double[size];

    public void Add(float[] x)
    {
        _count++;
        for (int i = 0; i < _mean.Length; i++)
        {
            double d = x[i] - _mean[i];
            _mean[i] += d / _count;
            _m2[i] += d * (x[i] - _mean[i]);
        }
    }

    public float[] Normalize(float[] x)
    {
        var y = new float[x.Length];
        for (int i = 0; i < x.Length; i++)
        {
            double var = _count > 1 ? _m2[i] / _count : 1.0;
            y[i] = (float)Math.Clamp((x[i] - _mean[i]) / Math.Sqrt(var + 1e-8), -10, 10);
        }
        return y;
    }

    public void Write(BinaryWriter w)
    {
        w.Write(_count);
        foreach (var v in _mean) w.Write(v);
        foreach (var v in _m2) w.Write(v);
    }

    public void Read(BinaryReader r)
    {
        _count = r.ReadDouble();
        for (int i = 0; i < _mean.Length; i++) _mean[i] = r.ReadDouble();
        for (int i = 0; i < _m2.Length; i++) _m2[i] = r.ReadDouble();
    }
}
