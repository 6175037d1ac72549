using MetaGenRL.Core.Agents;
using MetaGenRL.Core.Checkpoints;
using MetaGenRL.Core.Config;
using MetaGenRL.Core.Envs;
using MetaGenRL.Core.Objective;
using MetaGenRL.Core.Randomness;
using MetaGenRL.Core.Torch;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaGenRL.Core.Engine;

/// <summary>
/// The engine's agent group: K agents of one algorithm on K instances of one env, computed as one batch
/// (<see cref="Td3Group"/>: stacked networks and optimisers), with a stacked α (one copy per agent) for the learned
/// objective. Every command and experiment trial runs its agents through this class, driven by a group actor.
/// Collection steps the K envs in lock step and resets them lazily: an episode that ends is not followed by a Reset
/// until the slot steps again, so between rounds a slot's env sits at an episode boundary and holds only its RNG
/// (this makes checkpoints exact). Rows of a phase are reported in slot order. Single-threaded.
/// </summary>
public sealed class AgentGroup : IAgentGroup
{
    // ── STATE ──
    public IReadOnlyList<int> Agents { get; }
    public int Size => Td3.K;
    public string EnvId { get; }
    public long[] EnvSteps => (long[])Td3.EnvSteps.Clone();
    public Algorithm Algorithm { get; }
    public RunConfig Config { get; }
    /// <summary>The stacked networks, optimisers, replays and generators.</summary>
    public Td3Group Td3 { get; }
    /// <summary>L_α's layout (null without a learned objective).</summary>
    public ObjectiveSpec? Spec { get; }
    /// <summary>Stacked α [K, …] (empty without a learned objective).</summary>
    public IReadOnlyList<Tensor> Alpha => _alpha;
    /// <summary>Emit critic_loss, q1_mean, policy_loss (and policy_obj_loss) every this many updates of a slot.</summary>
    public int LossLogEvery { get; set; } = 100;
    /// <summary>Report the objective diagnostics on every this many meta-gradients of a slot (they cost one more
    /// policy and critic forward on the held-out slice).</summary>
    public int DiagnosticsEvery { get; set; } = 10;

    readonly IEnv[] _envs;
    readonly ActionScaling _actions;
    readonly bool _ownsEnvs;
    readonly List<Tensor> _alpha = new();
    readonly InnerStepOptions _inner;
    readonly float[]?[] _obs;
    readonly double[] _epReturn, _epExtremity;
    readonly int[] _epLen;
    readonly long[] _updates, _metaGradients;
    readonly bool[] _policyLossWanted;
    readonly long[] _seeds;
    readonly ulong[]?[] _initialEnvRng;
    readonly int[] _life;
    readonly EnvParams _envParams;
    readonly bool[] _envParamsReported;

    /// <summary>K agents on registry env <paramref name="envId"/>; agent k's seed is <paramref name="seeds"/>[k] (its env
    /// is seeded from it too).</summary>
    public AgentGroup(RunConfig cfg, string envId, IReadOnlyList<int> agents, IReadOnlyList<long> seeds, string device,
                      Algorithm algorithm, ScalarType dtype = ScalarType.Float32)
        : this(cfg, MakeEnvs(envId, seeds), agents, seeds, device, algorithm, dtype, ownsEnvs: true) { }

    /// <summary>K agents on already-made envs (disposed with the group only when <paramref name="ownsEnvs"/>).</summary>
    public AgentGroup(RunConfig cfg, IReadOnlyList<IEnv> envs, IReadOnlyList<int> agents, IReadOnlyList<long> seeds,
                      string device, Algorithm algorithm, ScalarType dtype = ScalarType.Float32, bool ownsEnvs = false)
    {
        if (envs.Count < 1 || envs.Count != agents.Count || envs.Count != seeds.Count)
            throw new ArgumentException($"a group needs as many envs ({envs.Count}), agent indices ({agents.Count}) and seeds ({seeds.Count}), at least one");
        var first = envs[0];
        foreach (var e in envs)
            if (e.Id != first.Id || e.ObservationSize != first.ObservationSize || e.ActionSize != first.ActionSize)
                throw new ArgumentException($"a group runs one env id: got {first.Id} and {e.Id}");
        if (Algorithms.IsOnPolicy(algorithm))
            throw new ArgumentException($"{Algorithms.Name(algorithm)} is an on-policy algorithm: its agents are an OnPolicyGroup, not an AgentGroup");
        Config = EffectiveConfig(cfg.Validate(), algorithm);
        Agents = agents.ToArray();
        Algorithm = algorithm;
        EnvId = first.Id;
        _envs = envs.ToArray(); _ownsEnvs = ownsEnvs;
        _seeds = seeds.ToArray();
        int K = envs.Count;
        _initialEnvRng = _envs.Select(e => e is EnvBase { AtEpisodeBoundary: true } b ? b.GetRngState() : null).ToArray();
        var dev = Devices.Resolve(device);
        AllocatorTuning.Apply();   // process-wide, once: large tensors from a reused heap instead of fresh mmaps
        _actions = new ActionScaling(first.ActionLow, first.ActionHigh, Config.NormalizeActions);
        Td3 = new Td3Group(Config, first.ObservationSize, _actions.AgentLow, _actions.AgentHigh, _seeds, dev, dtype,
                           replayCapacity: ReplayCapacity(Config, first.MaxEpisodeSteps));
        _inner = InnerStepOptions.FromConfig(Config);
        if (Algorithms.UsesObjectiveNetwork(algorithm))
        {
            Spec = ObjectiveSpec.FromConfig(Config);
            var gens = _seeds.Select(s => new Generator(Seeds.Derive(s, Seeds.ObjectiveInitStream), torch.CPU)).ToList();
            try { _alpha = ObjectiveNetwork.Init(Spec, gens, dev, dtype); }
            finally { foreach (var g in gens) g.Dispose(); }
            if (algorithm != Algorithm.MetaTrain) foreach (var a in _alpha) a.requires_grad_(false);   // frozen: no graph into α
            long anneal = algorithm == Algorithm.MetaTrain ? Config.ObjFuncAnnealSteps : 0;
            Td3.Objective = new LearnedObjective(Spec, _alpha, anneal, Config.ObjFuncLstmMasking == "official");
        }
        else if (algorithm == Algorithm.Reinforce)
            Td3.Objective = new ReinforceObjective(Config.DiscountFactor, Config.GaeFactor, Config.PaperQuirks);
        else
            Td3.Objective = new DiagnosedCriticValueObjective();
        if (algorithm == Algorithm.Ddpg) Td3.SingleCriticTarget = true;

        _obs = new float[]?[K];
        _epReturn = new double[K];
        _epExtremity = new double[K];
        _epLen = new int[K];
        _updates = new long[K];
        _metaGradients = new long[K];
        _policyLossWanted = new bool[K];
        _life = new int[K];
        _envParams = EnvFamily.ParseMode(Config.EnvParams);
        _envParamsReported = new bool[K];
        for (int k = 0; k < K; k++) ApplyEnvParams(k);
    }

    // ── ENV FAMILIES ──

    /// <summary>Sets slot k's env to the physical parameters of its current life (env_params; nominal leaves the env
    /// as made). Called at an episode boundary: at a life's start, after a restore and after a reset.</summary>
    void ApplyEnvParams(int slot)
    {
        if (_envParams == EnvParams.Nominal || _envs[slot] is not IParameterisedEnv env) return;
        env.SetParameters(EnvFamily.Draw(env.Parameters, _envParams, _seeds[slot], _life[slot]));
    }

    /// <summary>Reports each slot's env parameters once per life, as env_param_&lt;name&gt; rows at the life's first step.</summary>
    void ReportEnvParams(long[] limits, List<Metric>[] rows)
    {
        if (_envParams == EnvParams.Nominal) return;
        for (int k = 0; k < Size; k++)
        {
            if (_envParamsReported[k] || limits[k] <= 0 || _envs[k] is not IParameterisedEnv env) continue;
            var values = env.ParameterValues;
            for (int i = 0; i < values.Count; i++)
                rows[k].Add(new Metric(Td3.EnvSteps[k], "env_param_" + env.Parameters[i].Name, values[i], Agents[k]));
            _envParamsReported[k] = true;
        }
    }

    // ── LIFETIMES ──

    /// <summary>Whether agents are reset at the end of a lifetime (agent_lifetime &gt; 0, meta-training only).</summary>
    bool HasLifetimes => Algorithm == Algorithm.MetaTrain && Config.AgentLifetime > 0;

    /// <summary>Each slot's env.</summary>
    public IReadOnlyList<IEnv> Envs => _envs;

    /// <summary>The index of slot k's current life (0 for the first).</summary>
    public int Life(int slot) => _life[slot];

    /// <summary>The length in env steps of life <paramref name="life"/> of slot k: agent_lifetime, or drawn
    /// log-uniformly from [agent_lifetime_min, agent_lifetime] with the life's own generator; a first life is
    /// shortened to L·(N − i)/N for population member i of N, which staggers the population. Unbounded without
    /// lifetimes.</summary>
    public long LifeLength(int slot, int life)
    {
        if (!HasLifetimes) return long.MaxValue;
        double L = Config.AgentLifetime;
        if (Config.AgentLifetimeMin > 0)
        {
            double u = Seeds.Random(Seeds.LifeSeed(_seeds[slot], life), Seeds.LifetimeStream).NextDouble();
            double lo = Math.Log(Config.AgentLifetimeMin);
            L = Math.Exp(lo + u * (Math.Log(Config.AgentLifetime) - lo));
        }
        if (life == 0)
        {
            int n = Math.Max(Config.AgentCount, 1), i = Agents[slot] % n;
            L = L * (n - i) / n;
        }
        return Math.Max(1, (long)Math.Round(L));
    }

    /// <summary>Starts a new life in every slot about to collect whose life is over (at an episode boundary): a fresh
    /// agent from the life's own seed, its env and α carrying on; reports <c>agent_reset</c> with the new life's index.</summary>
    void EndLives(long[] limits, List<Metric>[] rows)
    {
        if (!HasLifetimes) return;
        for (int k = 0; k < Size; k++)
        {
            if (limits[k] <= 0 || _obs[k] != null || Td3.LifeSteps(k) < LifeLength(k, _life[k])) continue;
            _life[k]++;
            Td3.StartLife(k, Seeds.LifeSeed(_seeds[k], _life[k]));
            ApplyEnvParams(k);
            _envParamsReported[k] = false;
            rows[k].Add(new Metric(Td3.EnvSteps[k], "agent_reset", _life[k], Agents[k]));
        }
    }

    /// <summary>One registry env per agent seed, each seeded from its agent's env stream (all disposed if one fails).</summary>
    internal static IEnv[] MakeEnvs(string envId, IReadOnlyList<long> seeds)
    {
        EnvRegistry.Validate(envId);
        var envs = new IEnv[seeds.Count];
        try
        {
            for (int k = 0; k < envs.Length; k++) envs[k] = EnvRegistry.Make(envId, Seeds.DeriveInt(seeds[k], Seeds.EnvStream));
            return envs;
        }
        catch
        {
            foreach (var e in envs) e?.Dispose();
            throw;
        }
    }

    /// <summary>buffer_size, or less when the run cannot fill it: an agent collects at most timesteps_total steps
    /// plus, when the budget is checked only between training iterations, two episodes a round beyond its target.</summary>
    public static int ReplayCapacity(RunConfig cfg, int maxEpisodeSteps)
    {
        long episode = Math.Min(cfg.MaxEpisodeLength ?? maxEpisodeSteps, maxEpisodeSteps);
        long bound = cfg.TimestepsTotal + 2L * cfg.Steps * Math.Max(episode, 1);
        return (int)Math.Min(cfg.BufferSize, Math.Max(bound, 1));
    }

    /// <summary>The config an algorithm runs with: meta-test and the baselines freeze the objective (update delay −1)
    /// and do not anneal; DDPG has no smoothing noise and updates the policy every iteration.</summary>
    public static RunConfig EffectiveConfig(RunConfig cfg, Algorithm algorithm)
    {
        // obj_func_enabled and obj_func_type name the algorithm in the official configs; here the algorithm does, so
        // a value that contradicts it would be silently ignored: it is refused instead
        if (Algorithms.UsesObjectiveNetwork(algorithm) && !cfg.ObjFuncEnabled)
            throw new ArgumentException($"config key 'obj_func_enabled' = false contradicts algorithm {Algorithms.Name(algorithm)}, which trains the policy on L_α (for the DDPG/TD3 baseline use the algorithm td3)");
        if (Algorithms.UsesObjectiveNetwork(algorithm) && cfg.ObjFuncType != "learned-reinforce")
            throw new ArgumentException($"config key 'obj_func_type' = {cfg.ObjFuncType} contradicts algorithm {Algorithms.Name(algorithm)} (for the fixed REINFORCE objective use the algorithm reinforce-offpolicy)");
        return Effective(cfg, algorithm);
    }

    static RunConfig Effective(RunConfig cfg, Algorithm algorithm) => algorithm switch
    {
        Algorithm.MetaTrain => cfg,
        Algorithm.Ddpg => cfg with { ObjFuncEnabled = false, ObjFuncUpdateDelay = -1, ObjFuncAnnealSteps = 0, CriticNoise = 0, PolicyUpdateDelay = 1 },
        Algorithm.Td3 => cfg with { ObjFuncEnabled = false, ObjFuncUpdateDelay = -1, ObjFuncAnnealSteps = 0 },
        Algorithm.Reinforce => cfg with { ObjFuncType = "reinforce", ObjFuncUpdateDelay = -1, ObjFuncAnnealSteps = 0 },
        _ => cfg with { ObjFuncUpdateDelay = -1, ObjFuncAnnealSteps = 0 },
    };

    // ── COLLECT ──

    public SlotCollect[] Collect(long[] targets, long[] limits, Action<Metric> onMetric)
    {
        int K = Size;
        if (targets.Length != K || limits.Length != K) throw new ArgumentException($"collect: {targets.Length} targets and {limits.Length} limits for a group of {K}");
        int episodeLimit = Config.MaxEpisodeLength ?? int.MaxValue;
        var collected = new long[K];
        var shortest = new int?[K];
        var failure = new string?[K];
        var rows = new List<Metric>[K];
        for (int k = 0; k < K; k++) rows[k] = new List<Metric>();
        EndLives(limits, rows);
        ReportEnvParams(limits, rows);
        bool Wants(int k) => failure[k] is null && collected[k] < limits[k] && (collected[k] < targets[k] || _obs[k] != null);
        var stepping = new float[]?[K];
        while (true)
        {
            bool any = false;
            for (int k = 0; k < K; k++)
            {
                stepping[k] = null;
                if (!Wants(k)) continue;
                if (_obs[k] == null)   // lazy reset
                {
                    try { _obs[k] = _envs[k].Reset(); }
                    catch (Exception e) { failure[k] = $"{EnvId} reset: {e.Message}"; continue; }
                    _epReturn[k] = 0; _epLen[k] = 0; _epExtremity[k] = 0;
                }
                stepping[k] = _obs[k];
                any = true;
            }
            if (!any) break;
            var acts = Td3.Act(stepping);
            for (int k = 0; k < K; k++)
            {
                if (stepping[k] is not { } obs) continue;
                var act = acts[k]!;
                StepResult step;
                try { step = _envs[k].Step(_actions.ToEnv(act)); }
                catch (Exception e) { failure[k] = $"{EnvId} step: {e.Message}"; continue; }
                _epLen[k]++;
                if (!step.Done && _epLen[k] >= episodeLimit) step = step with { Truncated = true };   // max_episode_length
                Td3.Observe(k, obs, act, step);
                _epReturn[k] += step.Reward;
                _epExtremity[k] += _actions.Extremity(act);
                collected[k]++;
                _obs[k] = step.Observation;
                if (step.Done)
                {
                    rows[k].Add(new Metric(Td3.EnvSteps[k], "episode_return", _epReturn[k], Agents[k]));
                    rows[k].Add(new Metric(Td3.EnvSteps[k], "episode_length", _epLen[k], Agents[k]));
                    rows[k].Add(new Metric(Td3.EnvSteps[k], "episode_action_extremity", _epExtremity[k] / _epLen[k], Agents[k]));
                    shortest[k] = Math.Min(shortest[k] ?? int.MaxValue, _epLen[k]);
                    _obs[k] = null;
                }
            }
        }
        foreach (var r in rows) foreach (var m in r) onMetric(m);
        return Enumerable.Range(0, K).Select(k => new SlotCollect(collected[k], shortest[k], failure[k])).ToArray();
    }

    // ── UPDATE ──

    public string?[] Update(long j, bool[] active, Action<Metric> onMetric)
    {
        int K = Size;
        var failures = new string?[K];
        active = Sampleable(active);
        if (!active.Any(a => a)) return failures;
        bool isPolicy = j % Config.PolicyUpdateDelay == 0;
        var logNow = new bool[K];
        bool read = false;
        for (int k = 0; k < K; k++)
        {
            if (!active[k]) continue;
            logNow[k] = _updates[k] % LossLogEvery == 0;
            _policyLossWanted[k] |= logNow[k];
            read |= logNow[k] || (_policyLossWanted[k] && isPolicy);
        }
        using var scope = torch.NewDisposeScope();
        var learned = Td3.Objective as LearnedObjective;
        if (learned is not null) learned.MeasureAlignment = read && isPolicy;
        var res = Td3.Update(j, active, read);
        double[]? valueLoss = null, alignment = null;
        if (res.PolicyLoss is not null && Td3.Objective is IDiagnosedObjective { LastValueLoss: { } v } && Td3.Objective is not DiagnosedCriticValueObjective)
            valueLoss = v.to(ScalarType.Float64, torch.CPU).data<double>().ToArray();
        if (res.PolicyLoss is not null && learned is { MeasureAlignment: true, LastAlignment: { } al })
            alignment = al.to(ScalarType.Float64, torch.CPU).data<double>().ToArray();
        for (int k = 0; k < K; k++)
        {
            if (!active[k]) continue;
            _updates[k]++;
            var rows = new List<Metric>();
            if (logNow[k])
            {
                rows.Add(new Metric(Td3.EnvSteps[k], "critic_loss", res.CriticLoss![k], Agents[k]));
                rows.Add(new Metric(Td3.EnvSteps[k], "q1_mean", res.Q1Mean![k], Agents[k]));
            }
            if (res.PolicyLoss is { } pl && _policyLossWanted[k])
            {
                if (Td3.Objective is DiagnosedCriticValueObjective) rows.Add(new Metric(Td3.EnvSteps[k], "policy_loss", pl[k], Agents[k]));
                else
                {
                    rows.Add(new Metric(Td3.EnvSteps[k], "policy_obj_loss", pl[k], Agents[k]));
                    if (valueLoss is not null) rows.Add(new Metric(Td3.EnvSteps[k], "policy_loss", valueLoss[k], Agents[k]));
                    if (alignment is not null) rows.Add(new Metric(Td3.EnvSteps[k], "policy_objective_alignment", alignment[k], Agents[k]));
                }
                _policyLossWanted[k] = false;
            }
            foreach (var m in rows)
            {
                onMetric(m);
                if (failures[k] is null && m.Name.Contains("loss", StringComparison.Ordinal) && !double.IsFinite(m.Value))
                    failures[k] = $"non-finite {m.Name} = {m.Value} at update {j}";
            }
        }
        return failures;
    }

    /// <summary>The active slots that have a finished episode to sample (a slot whose budget stopped its first
    /// episode has none yet and sits the iteration out, as an agent alone would).</summary>
    bool[] Sampleable(bool[] active)
    {
        if (active.Length != Size) throw new ArgumentException($"{active.Length} activity flags for a group of {Size}");
        return active.Select((a, k) => a && Td3.Replay[k].EpisodeCount > 0).ToArray();
    }

    // ── META-GRADIENT ──

    public bool ComputesObjectiveGradients => Algorithm == Algorithm.MetaTrain;

    public SlotGradient[] ObjectiveGradients(bool[] active, Action<Metric> onMetric)
    {
        int K = Size;
        var res = new SlotGradient[K];
        active = Sampleable(active);
        if (!ComputesObjectiveGradients || !active.Any(a => a)) return res;
        using var scope = torch.NewDisposeScope();
        var batch = Td3.SampleTensors(active, (_inner.Steps + 1) * Config.BufferSampleSize);
        var diagnose = new bool[K];
        for (int k = 0; k < K; k++) if (active[k]) diagnose[k] = _metaGradients[k]++ % DiagnosticsEvery == 0;
        var grads = FuturePolicyValue.Compute(Td3, Spec!, _alpha, batch, _inner with { Diagnostics = diagnose.Any(d => d) });
        for (int k = 0; k < K; k++)
        {
            if (!active[k]) continue;
            var r = grads[k];
            long step = Td3.EnvSteps[k];
            if (diagnose[k])
            {
                onMetric(new Metric(step, "objective_loss", r.ObjectiveLoss, Agents[k]));
                onMetric(new Metric(step, "policy_value_gain", r.PolicyValueGain, Agents[k]));
                onMetric(new Metric(step, "objective_critic_correlation", r.CriticCorrelation, Agents[k]));
            }
            int bad = Array.FindIndex(r.Gradient, g => !float.IsFinite(g));
            if (bad >= 0) res[k] = new SlotGradient(null, $"non-finite objective gradient (entry {bad} = {r.Gradient[bad]})");
            else if (!double.IsFinite(r.ObjectiveLoss)) res[k] = new SlotGradient(null, $"non-finite objective_loss = {r.ObjectiveLoss}");
            else res[k] = new SlotGradient(r.Gradient);
        }
        return res;
    }

    public int ObjectiveSize => _alpha.Count == 0 ? 0 : (int)_alpha.Sum(a => a.numel() / a.shape[0]);

    public void LoadObjective(float[] alpha)
    {
        if (_alpha.Count == 0)
        {
            if (alpha.Length == 0) return;   // a population without a learned objective publishes an empty α
            throw new InvalidOperationException($"agents {string.Join(", ", Agents)} ({Algorithms.Name(Algorithm)}) have no learned objective to load {alpha.Length} values into");
        }
        ObjectiveNetwork.Load(_alpha, alpha);
    }

    public float[] ObjectiveParameters(int slot) => _alpha.Count == 0 ? [] : ObjectiveNetwork.Flatten(_alpha, slot);

    // ── STATE ──

    const string StateMagic = "MMBR";
    const int StateVersion = 3;

    public byte[] SaveState(int slot, bool includeReplay)
    {
        var env = _envs[slot] as EnvBase
            ?? throw new NotSupportedException($"agent {Agents[slot]}: env {EnvId} does not expose its generator state");
        if (_obs[slot] != null)
        {
            // stopped mid-episode by its step budget: that partial episode is never sampled, so drop it
            Td3.Replay[slot].AbandonRunningEpisode();
            env.AbandonEpisode();
            _obs[slot] = null;
        }
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            StateIO.WriteAgentHeader(w, StateMagic, StateVersion, EnvId, Algorithms.Name(Algorithm));
            AgentState.Save(Td3, slot, w, includeReplay);
            StateIO.WriteUInt64s(w, env.GetRngState());
            using (var scope = torch.NewDisposeScope()) StateIO.WriteTensors(w, "alpha", _alpha.Select(a => a[slot]).ToList());
            w.Write(_updates[slot]);
            w.Write(_policyLossWanted[slot]);
            w.Write(_metaGradients[slot]);
            w.Write(_life[slot]);
        }
        return ms.ToArray();
    }

    public void LoadState(int slot, byte[] state)
    {
        using var r = new BinaryReader(new MemoryStream(state));
        int version = StateIO.ReadAgentHeader(r, StateMagic, [2, StateVersion], Agents[slot], EnvId, Algorithms.Name(Algorithm));
        AgentState.Load(Td3, slot, r);
        ((EnvBase)_envs[slot]).SetRngState(StateIO.ReadUInt64s(r, "env generator"));
        using (var scope = torch.NewDisposeScope()) StateIO.ReadTensorsInto(r, "alpha", _alpha.Select(a => a[slot]).ToList());
        _updates[slot] = r.ReadInt64();
        _policyLossWanted[slot] = r.ReadBoolean();
        _metaGradients[slot] = r.ReadInt64();
        _life[slot] = version >= 3 ? r.ReadInt32() : 0;   // version 2 predates agent lifetimes: the first life
        if (_life[slot] < 0) throw new InvalidDataException($"agent {Agents[slot]}: life index {_life[slot]} is negative");
        ApplyEnvParams(slot);
        _envParamsReported[slot] = true;   // reported at the life's first step, before the checkpoint
        _obs[slot] = null;
        _epReturn[slot] = 0;
        _epLen[slot] = 0;
        if (r.BaseStream.Position != r.BaseStream.Length)
            throw new InvalidDataException($"agent {Agents[slot]}: {r.BaseStream.Length - r.BaseStream.Position} unexpected trailing bytes in its state");
    }

    public void ResetAgent(int slot)
    {
        Td3.ResetSlot(slot);
        var env = _envs[slot] as EnvBase
            ?? throw new NotSupportedException($"agent {Agents[slot]}: env {EnvId} cannot be reset to its initial state");
        env.SetRngState(_initialEnvRng[slot] ?? throw new NotSupportedException($"agent {Agents[slot]}: env {EnvId} was not at its start when the group was made"));
        // α stays: it is the objective the agent is trained with (the server's latest, a loaded frozen one, or the
        // agent's own random one), not part of what it learned
        _obs[slot] = null; _epReturn[slot] = 0; _epLen[slot] = 0;
        _updates[slot] = 0; _policyLossWanted[slot] = false; _metaGradients[slot] = 0;
        _life[slot] = 0;
        ApplyEnvParams(slot);
        _envParamsReported[slot] = false;
    }

    public void Dispose()
    {
        Td3.Dispose();
        foreach (var a in _alpha) a.Dispose();
        if (_ownsEnvs) foreach (var e in _envs) e.Dispose();
    }
}
