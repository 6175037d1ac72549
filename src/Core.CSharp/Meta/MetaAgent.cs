using MetaGenRL.Core.Agents;
using MetaGenRL.Core.Checkpoints;
using MetaGenRL.Core.Config;
using MetaGenRL.Core.Envs;
using MetaGenRL.Core.Objective;
using MetaGenRL.Core.Torch;
using MetaGenRL.Core.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaGenRL.Core.Meta;

/// <summary>What a member's policy is trained with.</summary>
public enum MemberMode
{
    /// <summary>Learned L_α, annealed from −Q1 over obj_func_anneal_steps; computes meta-gradients.</summary>
    MetaTrain,
    /// <summary>Frozen L_α (loaded with <see cref="MetaAgent.LoadObjective"/>), no annealing, no gradients.</summary>
    MetaTest,
    /// <summary>TD3 (the official <c>baseline()</c>): policy on −Q1.</summary>
    Td3,
    /// <summary>DDPG: one critic in the target, no smoothing noise, policy + targets every iteration.</summary>
    Ddpg,
    /// <summary>The fixed off-policy REINFORCE-with-GAE objective (official <c>reinforce_test</c>).</summary>
    Reinforce,
    /// <summary>A freshly initialised, never trained L_α, frozen, no annealing.</summary>
    RandomObjective,
}

/// <summary>What one collect produced.</summary>
/// <param name="Steps">env steps collected (whole episodes, unless a limit stopped it mid-episode)</param>
/// <param name="ShortestEpisode">the shortest episode finished in this collect, if any</param>
public readonly record struct CollectResult(long Steps, int? ShortestEpisode);

/// <summary>
/// One population member: a <see cref="Td3Agent"/>, its env and its own copy of α, driven step by step (by an
/// actor through <see cref="MemberGroupAdapter"/>). Collection resets the env lazily: an episode that ends is not
/// followed by a Reset until the next step is taken, so between rounds the env sits at an episode boundary and
/// holds only its RNG (this makes checkpoints exact). Single-threaded.
/// </summary>
public sealed class MetaAgent : IDisposable
{
    /// <summary>Seed stream of α's initial values (distinct from the streams in <see cref="Seeds"/>).</summary>
    public const int ObjectiveInitStream = 101;

    public int Index { get; }
    public string EnvId => _env.Id;
    public long EnvSteps => Agent.EnvSteps;
    public MemberMode Mode { get; }
    public RunConfig Config { get; }
    public Td3Agent Agent { get; }
    /// <summary>L_α's layout (null for TD3, DDPG and REINFORCE).</summary>
    public ObjectiveSpec? Spec { get; }
    /// <summary>This member's α (leaf tensors; empty without a learned objective).</summary>
    public IReadOnlyList<Tensor> Alpha => _alpha;
    /// <summary>An episode was started and has not ended (false between rounds).</summary>
    public bool EpisodeInProgress => _obs != null;
    /// <summary>Emit critic_loss, q1_mean, policy_loss (and policy_obj_loss) every this many updates.</summary>
    public int LossLogEvery { get; set; } = 100;
    /// <summary>Compute and report the objective diagnostics on every this many meta-gradients (they cost one more
    /// policy and critic forward on the held-out slice).</summary>
    public int DiagnosticsEvery { get; set; } = 10;

    readonly IEnv _env;
    readonly bool _ownsEnv;
    readonly List<Tensor> _alpha = new();
    readonly InnerStepOptions _inner;
    float[]? _obs;
    double _epReturn;
    int _epLen;
    long _updates, _metaGradients;
    bool _policyLossWanted;

    /// <summary>A member on the registry env <paramref name="envId"/>, seeded from <paramref name="seed"/>.</summary>
    public MetaAgent(RunConfig cfg, string envId, int index, long seed, string device, MemberMode mode)
        : this(cfg, EnvRegistry.Make(envId, Seeds.DeriveInt(seed, Seeds.EnvStream)), index, seed, device, mode, ownsEnv: true) { }

    /// <summary>A member on an already-made env (disposed with the member only when <paramref name="ownsEnv"/>).</summary>
    public MetaAgent(RunConfig cfg, IEnv env, int index, long seed, string device, MemberMode mode,
                     ScalarType dtype = ScalarType.Float32, bool ownsEnv = false)
    {
        ArgumentNullException.ThrowIfNull(env);
        Config = EffectiveConfig(cfg.Validate(), mode);
        Index = index; Mode = mode; _env = env; _ownsEnv = ownsEnv;
        var dev = Devices.Resolve(device);
        AllocatorTuning.Apply();   // process-wide, once: large tensors from a reused heap instead of fresh mmaps
        Agent = new Td3Agent(Config, env.ObservationSize, env.ActionLow, env.ActionHigh, seed, dev, dtype,
                             replayCapacity: ReplayCapacity(Config, env.MaxEpisodeSteps));
        _inner = InnerStepOptions.FromConfig(Config);
        if (mode is MemberMode.MetaTrain or MemberMode.MetaTest or MemberMode.RandomObjective)
        {
            Spec = ObjectiveSpec.FromConfig(Config);
            using var gen = new Generator(Seeds.Derive(seed, ObjectiveInitStream), torch.CPU);
            _alpha = ObjectiveNetwork.Init(Spec, gen, dev, dtype);
            if (mode != MemberMode.MetaTrain) foreach (var a in _alpha) a.requires_grad_(false);   // frozen: no graph into α
            long anneal = mode == MemberMode.MetaTrain ? Config.ObjFuncAnnealSteps : 0;
            Agent.Objective = new LearnedObjective(Spec, _alpha, anneal, Config.PaperQuirks);
        }
        else if (mode == MemberMode.Reinforce)
            Agent.Objective = new ReinforceObjective(Config.DiscountFactor, Config.GaeFactor, Config.PaperQuirks);
        else
            Agent.Objective = new DiagnosedCriticValueObjective();
        if (mode == MemberMode.Ddpg) Agent.SingleCriticTarget = true;
    }

    /// <summary>buffer_size, or less when the run cannot fill it: a member collects at most about
    /// timesteps_total plus, per training iteration's rounds, two episodes a round beyond its target (the
    /// budget is checked only between iterations).</summary>
    public static int ReplayCapacity(RunConfig cfg, int maxEpisodeSteps)
    {
        long episode = Math.Min(cfg.MaxEpisodeLength ?? maxEpisodeSteps, maxEpisodeSteps);
        long bound = cfg.TimestepsTotal + 2L * cfg.Steps * Math.Max(episode, 1);
        return (int)Math.Min(cfg.BufferSize, Math.Max(bound, 1));
    }

    /// <summary>The config a mode runs with: meta-test and the baselines freeze the objective (update delay −1) and
    /// do not anneal; DDPG has no smoothing noise and updates the policy every iteration.</summary>
    public static RunConfig EffectiveConfig(RunConfig cfg, MemberMode mode) => mode switch
    {
        MemberMode.MetaTrain => cfg,
        MemberMode.Ddpg => cfg with { ObjFuncEnabled = false, ObjFuncUpdateDelay = -1, ObjFuncAnnealSteps = 0, CriticNoise = 0, PolicyUpdateDelay = 1 },
        MemberMode.Td3 => cfg with { ObjFuncEnabled = false, ObjFuncUpdateDelay = -1, ObjFuncAnnealSteps = 0 },
        MemberMode.Reinforce => cfg with { ObjFuncType = "reinforce", ObjFuncUpdateDelay = -1, ObjFuncAnnealSteps = 0 },
        _ => cfg with { ObjFuncUpdateDelay = -1, ObjFuncAnnealSteps = 0 },
    };

    // ── COLLECT ──

    /// <summary>Collects whole episodes until at least <paramref name="targetSteps"/> new steps were taken, but never
    /// more than <paramref name="maxSteps"/> (the step budget: the collect may then stop mid-episode, see
    /// <see cref="AbandonEpisode"/>). Reports <c>episode_return</c> and <c>episode_length</c> per finished episode.</summary>
    public CollectResult Collect(long targetSteps, Action<Metric> onMetric, long maxSteps = long.MaxValue)
    {
        int limit = Config.MaxEpisodeLength ?? int.MaxValue;
        long collected = 0;
        int? shortest = null;
        while ((collected < targetSteps || _obs != null) && collected < maxSteps)
        {
            if (_obs == null) { _obs = _env.Reset(); _epReturn = 0; _epLen = 0; }   // lazy reset
            var act = Agent.Act(_obs);
            var step = _env.Step(act);
            _epLen++;
            if (!step.Done && _epLen >= limit) step = step with { Truncated = true };
            Agent.Observe(_obs, act, step);
            _epReturn += step.Reward;
            collected++;
            _obs = step.Observation;
            if (step.Done)
            {
                onMetric(new Metric(Agent.EnvSteps, "episode_return", _epReturn, Index));
                onMetric(new Metric(Agent.EnvSteps, "episode_length", _epLen, Index));
                shortest = Math.Min(shortest ?? int.MaxValue, _epLen);
                _obs = null;
            }
        }
        return new CollectResult(collected, shortest);
    }

    /// <summary>Drops the episode a step limit stopped mid-way (never finished, it is never sampled from the replay
    /// buffer); the env resets lazily at the next step, so the member is at an episode boundary again and can be saved.</summary>
    public void AbandonEpisode()
    {
        Agent.Replay.AbandonRunningEpisode();
        (_env as EnvBase)?.AbandonEpisode();
        _obs = null;
        _epReturn = 0;
        _epLen = 0;
    }

    // ── UPDATE ──

    public void Update(long j, Action<Metric> onMetric)
    {
        bool logNow = _updates % LossLogEvery == 0;
        bool isPolicy = j % Config.PolicyUpdateDelay == 0;
        _policyLossWanted |= logNow;
        bool readPolicy = _policyLossWanted && isPolicy;
        using var scope = torch.NewDisposeScope();
        var res = Agent.Update(j, read: logNow || readPolicy);
        _updates++;
        if (logNow)
        {
            onMetric(new Metric(Agent.EnvSteps, "critic_loss", res.CriticLoss!.Value, Index));
            onMetric(new Metric(Agent.EnvSteps, "q1_mean", res.Q1Mean!.Value, Index));
        }
        if (res.PolicyLoss is double pl && readPolicy)
        {
            var diag = (Agent.Objective as IDiagnosedObjective)?.LastValueLoss;
            if (Agent.Objective is DiagnosedCriticValueObjective) onMetric(new Metric(Agent.EnvSteps, "policy_loss", pl, Index));
            else
            {
                onMetric(new Metric(Agent.EnvSteps, "policy_obj_loss", pl, Index));
                if (diag is not null)
                    onMetric(new Metric(Agent.EnvSteps, "policy_loss", diag.to(ScalarType.Float64).item<double>(), Index));
            }
            _policyLossWanted = false;
        }
    }

    // ── META-GRADIENT ──

    public float[]? ObjectiveGradient(Action<Metric> onMetric)
    {
        if (Mode != MemberMode.MetaTrain) return null;
        using var scope = torch.NewDisposeScope();
        var batch = Agent.Replay.Sample((_inner.Steps + 1) * Config.BufferSampleSize, Config.RecurrentTimeSteps, Agent.Rng)
                         .ToTensors(Agent.Device, Agent.DType);
        bool diagnose = _metaGradients++ % DiagnosticsEvery == 0;
        var r = FuturePolicyValue.Compute(Agent, Spec!, _alpha, batch, _inner with { Diagnostics = diagnose });
        if (diagnose)
        {
            onMetric(new Metric(Agent.EnvSteps, "objective_loss", r.ObjectiveLoss, Index));
            onMetric(new Metric(Agent.EnvSteps, "policy_value_gain", r.PolicyValueGain, Index));
            onMetric(new Metric(Agent.EnvSteps, "objective_critic_correlation", r.CriticCorrelation, Index));
        }
        return r.Gradient;
    }

    public int ObjectiveSize => (int)_alpha.Sum(a => a.numel());

    public void LoadObjective(float[] alpha)
    {
        if (_alpha.Count == 0)
        {
            if (alpha.Length == 0) return;   // a population without a learned objective publishes an empty α
            throw new InvalidOperationException($"member {Index} ({Mode}) has no learned objective to load {alpha.Length} values into");
        }
        ObjectiveNetwork.Load(_alpha, alpha);
    }

    public float[] ObjectiveParameters() => _alpha.Count == 0 ? [] : ObjectiveNetwork.Flatten(_alpha);

    // ── STATE ──

    const string StateMagic = "MMBR";
    const int StateVersion = 1;

    /// <summary>Agent (networks, optimisers, generators, counters, replay if asked), the env's generator, α and this
    /// member's own counters. Only between episodes: collection resets lazily, so there the env's whole state is
    /// its generator and the saved state continues bit-for-bit.</summary>
    public byte[] SaveState(bool includeReplay)
    {
        if (_obs != null)
            throw new InvalidOperationException($"member {Index} ({EnvId}): state can be saved only between episodes");
        var env = _env as EnvBase
            ?? throw new NotSupportedException($"member {Index}: env {EnvId} does not expose its generator state");
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            StateIO.WriteTag(w, StateMagic);
            w.Write(StateVersion);
            w.Write(EnvId);
            w.Write((int)Mode);
            AgentState.Save(Agent, w, includeReplay);
            StateIO.WriteUInt64s(w, env.GetRngState());
            StateIO.WriteTensors(w, "alpha", _alpha);
            w.Write(_updates);
            w.Write(_policyLossWanted);
            w.Write(_metaGradients);
        }
        return ms.ToArray();
    }

    /// <summary>Restores what <see cref="SaveState"/> wrote; a mismatch (env, mode, shapes) is an error naming it.</summary>
    public void LoadState(byte[] state)
    {
        using var r = new BinaryReader(new MemoryStream(state));
        StateIO.ExpectTag(r, StateMagic, "member state");
        int version = r.ReadInt32();
        if (version != StateVersion) throw new InvalidDataException($"member state version {version}, expected {StateVersion}");
        string env = r.ReadString();
        if (env != EnvId) throw new InvalidDataException($"member {Index}: state is for env {env}, this member runs {EnvId}");
        var mode = (MemberMode)r.ReadInt32();
        if (mode != Mode) throw new InvalidDataException($"member {Index}: state is for mode {mode}, this member is {Mode}");
        AgentState.Load(Agent, r);
        ((EnvBase)_env).SetRngState(StateIO.ReadUInt64s(r, "env generator"));
        StateIO.ReadTensorsInto(r, "alpha", _alpha);
        _updates = r.ReadInt64();
        _policyLossWanted = r.ReadBoolean();
        _metaGradients = r.ReadInt64();
        _obs = null;
        _epReturn = 0;
        _epLen = 0;
        if (r.BaseStream.Position != r.BaseStream.Length)
            throw new InvalidDataException($"member {Index}: {r.BaseStream.Length - r.BaseStream.Position} unexpected trailing bytes in its state");
    }

    public void Dispose()
    {
        Agent.Dispose();
        foreach (var a in _alpha) a.Dispose();
        if (_ownsEnv) _env.Dispose();
    }
}
