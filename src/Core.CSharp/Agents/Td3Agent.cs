using MetaGenRL.Core.Config;
using MetaGenRL.Core.Envs;
using MetaGenRL.Core.Randomness;
using MetaGenRL.Core.Torch;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaGenRL.Core.Agents;

/// <summary>What a policy objective sees when the policy is updated (all tensors on the agent's device).</summary>
/// <param name="Agent">the agent (networks, config)</param>
/// <param name="Batch">the policy step's own trajectory batch, shapes [B, T, …]</param>
/// <param name="Obs">[B·T, obs] the batch observations, flattened</param>
/// <param name="PolicyAction">[B·T, act] π_φ(s), differentiable in the policy parameters</param>
/// <param name="EnvStep">the agent's env step count (for annealing)</param>
public sealed record PolicyLossContext(Td3Agent Agent, TrajectoryTensors Batch, Tensor Obs, Tensor PolicyAction, long EnvStep);

/// <summary>The loss the policy step minimises. TD3 uses <see cref="CriticValueObjective"/>; the learned
/// objective L_α (with its anneal toward −Q1) plugs in here.</summary>
public interface IPolicyObjective
{
    /// <summary>A 0-d loss, differentiable in the policy parameters through <see cref="PolicyLossContext.PolicyAction"/>.</summary>
    Tensor Loss(PolicyLossContext ctx);
}

/// <summary>The DDPG/TD3 actor loss: −masked mean over B·T (padding included in the divisor) of Q1(s, π(s)).</summary>
public sealed class CriticValueObjective : IPolicyObjective
{
    public static CriticValueObjective Instance { get; } = new();
    public Tensor Loss(PolicyLossContext ctx) =>
        Td3Agent.MaskedMean(ctx.Agent.Q(ctx.Agent.Q1, ctx.Obs, ctx.PolicyAction), ctx.Batch.Mask.reshape(-1)).neg();
}

/// <summary>Losses of one update iteration; null where not computed or not read.</summary>
public readonly record struct Td3UpdateResult(double? CriticLoss, double? PolicyLoss, double? Q1Mean, bool PolicyUpdated);

/// <summary>
/// TD3 as the official MetaGenRL code runs it (<c>baseline()</c>): twin critics with target smoothing, a
/// deterministic tanh policy, episode-uniform trajectory windows of T steps (B·T transitions per step), a fresh
/// minibatch for every critic and policy step, policy + Polyak targets every <c>policy_update_delay</c>-th
/// iteration, TF-Adam everywhere, global-norm clipping on the policy only. With <c>paper_quirks</c> time-limit
/// ends are stored as terminal and the TD target gets "+d".
/// Randomness: init from a CPU torch.Generator, smoothing noise from a device torch.Generator, exploration and
/// replay sampling from one <see cref="SeededRandom"/> — all derived from <c>seed</c> (see <see cref="Seeds"/>).
/// Single-threaded: call every method from the same thread (TorchSharp dispose scopes are per thread).
/// </summary>
public sealed class Td3Agent : IDisposable
{
    // ── STATE ──
    public RunConfig Config { get; }
    public Device Device { get; }
    public ScalarType DType { get; }
    public int ObsSize { get; }
    public int ActSize { get; }
    /// <summary>[act] action bounds from the env.</summary>
    public float[] ActLow { get; }
    /// <summary>[act] action bounds from the env.</summary>
    public float[] ActHigh { get; }
    /// <summary>act_limit = ActHigh[0], as the official code reads it (symmetric, equal bounds assumed).</summary>
    public double ActLimit { get; }
    public MlpSpec PolicySpec { get; }
    public MlpSpec CriticSpec { get; }
    public List<Tensor> Policy { get; }
    public List<Tensor> Q1 { get; }
    public List<Tensor> Q2 { get; }
    public List<Tensor> PolicyTarget { get; }
    public List<Tensor> Q1Target { get; }
    public List<Tensor> Q2Target { get; }
    public TrajectoryReplay Replay { get; }
    /// <summary>The policy step's loss; <see cref="CriticValueObjective"/> for TD3.</summary>
    public IPolicyObjective Objective { get; set; }
    /// <summary>Exploration noise, random actions and replay sampling.</summary>
    public SeededRandom Rng { get; }
    /// <summary>Target-policy smoothing noise.</summary>
    public Generator NoiseGen { get; }
    /// <summary>DDPG: the TD target uses Q1_target alone instead of the twin minimum (Q2 is still trained, unused).</summary>
    public bool SingleCriticTarget { get; set; }
    /// <summary>Env steps seen by <see cref="Observe"/>; drives exploration and policy-LR warm-up.</summary>
    public long EnvSteps { get; internal set; }
    public long CriticUpdates => _criticOpt.Steps;
    public long PolicyUpdates => _policyOpt.Steps;
    /// <summary>Adam over Q1 then Q2 (checkpointing reads and restores its moments).</summary>
    public TfAdam CriticOptimizer => _criticOpt;
    /// <summary>Adam over the policy (checkpointing reads and restores its moments).</summary>
    public TfAdam PolicyOptimizer => _policyOpt;

    readonly TfAdam _criticOpt, _policyOpt;
    readonly List<Tensor> _critics;

    /// <param name="cfg">run configuration (validated here)</param>
    /// <param name="obsSize">observation size</param>
    /// <param name="actLow">[act] lower action bounds</param>
    /// <param name="actHigh">[act] upper action bounds</param>
    /// <param name="seed">the agent's run seed</param>
    /// <param name="device">where every tensor lives (from <see cref="Devices.Resolve"/>)</param>
    /// <param name="dtype">Float32 normally; Float64 for exact tests</param>
    public Td3Agent(RunConfig cfg, int obsSize, float[] actLow, float[] actHigh, long seed, Device device,
                    ScalarType dtype = ScalarType.Float32, int? replayCapacity = null)
    {
        Config = cfg.Validate();
        if (actLow.Length != actHigh.Length || actLow.Length < 1)
            throw new ArgumentException($"action bounds have lengths {actLow.Length} and {actHigh.Length}");
        Device = device; DType = dtype; ObsSize = obsSize; ActSize = actLow.Length;
        ActLow = (float[])actLow.Clone(); ActHigh = (float[])actHigh.Clone();
        ActLimit = actHigh[0];
        PolicySpec = new MlpSpec(obsSize, cfg.PolicyUnits, cfg.PolicyDepth, ActSize, cfg.PolicyLayernorm,
                                 cfg.PolicyActivation, MlpOutput.TanhScaled, ActLimit);
        CriticSpec = new MlpSpec(obsSize + ActSize, cfg.CriticUnits, cfg.CriticDepth, 1, cfg.CriticLayernorm, cfg.CriticActivation);

        using var initGen = new Generator(Seeds.Derive(seed, Seeds.InitStream), torch.CPU);
        Policy = Mlp.Init(PolicySpec, initGen, device, dtype);
        Q1 = Mlp.Init(CriticSpec, initGen, device, dtype);
        Q2 = Mlp.Init(CriticSpec, initGen, device, dtype);
        PolicyTarget = Mlp.Clone(Policy);
        Q1Target = Mlp.Clone(Q1);
        Q2Target = Mlp.Clone(Q2);
        foreach (var t in PolicyTarget.Concat(Q1Target).Concat(Q2Target)) t.requires_grad_(false);
        NoiseGen = new Generator(Seeds.Derive(seed, Seeds.NoiseStream), device);
        Rng = Seeds.Random(seed, Seeds.ExploreStream);

        _critics = Q1.Concat(Q2).ToList();
        _criticOpt = new TfAdam(_critics, cfg.CriticLearningRate);
        _policyOpt = new TfAdam(Policy, cfg.PolicyLearningRate);
        Replay = new TrajectoryReplay(replayCapacity ?? cfg.BufferSize, obsSize, ActSize);
        Objective = CriticValueObjective.Instance;
    }

    // ── NETWORKS ──

    /// <summary>π(s) with parameters <paramref name="phi"/>. <paramref name="obs"/>: [N, obs] → [N, act].</summary>
    public Tensor Pi(IReadOnlyList<Tensor> phi, Tensor obs) => Mlp.Forward(PolicySpec, phi, obs);

    /// <summary>Q(s, a) with critic parameters <paramref name="theta"/>. [N, obs], [N, act] → [N].</summary>
    public Tensor Q(IReadOnlyList<Tensor> theta, Tensor obs, Tensor act) =>
        Mlp.Forward(CriticSpec, theta, torch.cat([obs, act], -1)).squeeze(-1);

    // ── EXPLORATION ──

    /// <summary>The behaviour action for <paramref name="obs"/> [obs] → [act]: uniform in the action box for the
    /// first <c>policy_random_exploration_steps</c> env steps, then π(s) + N(0, policy_exploration²) clipped to the box.</summary>
    public float[] Act(float[] obs)
    {
        var a = new float[ActSize];
        if (EnvSteps < Config.PolicyRandomExplorationSteps)
        {
            for (int k = 0; k < ActSize; k++) a[k] = (float)(ActLow[k] + (ActHigh[k] - ActLow[k]) * Rng.NextDouble());
            return a;
        }
        var mean = ActDeterministic(obs);
        for (int k = 0; k < ActSize; k++)
            a[k] = Math.Clamp((float)(mean[k] + Config.PolicyExploration * Rng.NextGaussian()), ActLow[k], ActHigh[k]);
        return a;
    }

    /// <summary>π(s) without noise: [obs] → [act].</summary>
    public float[] ActDeterministic(float[] obs)
    {
        if (obs.Length != ObsSize) throw new ArgumentException($"observation has length {obs.Length}, expected {ObsSize}");
        using var scope = torch.NewDisposeScope();
        using var _ = no_grad();
        var x = torch.tensor(obs, [1, ObsSize]).to(DType, Device);
        return Pi(Policy, x).to(ScalarType.Float32, torch.CPU).data<float>().ToArray();
    }

    /// <summary>Stores one env transition. The learner's done is terminated, or also truncated with paper_quirks.</summary>
    public void Observe(float[] obs, float[] act, StepResult step)
    {
        bool done = step.Terminated || (Config.PaperQuirks && step.Truncated);
        Replay.Add(obs, act, step.Reward, step.Observation, step.Terminated, step.Truncated, done);
        EnvSteps++;
    }

    /// <summary>Counts one env step without storing it (e.g. a transition the trainer discards).</summary>
    public void CountEnvStep() => EnvSteps++;

    // ── TD3 MATH (pure; parameters explicit) ──

    /// <summary>ã = clip(π_targ(s') + clip(ε, ±noiseClip), ±actLimit). All [N, act].</summary>
    public static Tensor TargetAction(Tensor piTarget, Tensor noise, double noiseClip, double actLimit) =>
        piTarget.add(noise.clamp(-noiseClip, noiseClip)).clamp(-actLimit, actLimit);

    /// <summary>y = r + γ(1−d)·min(q1t, q2t) (+ d when <paramref name="plusD"/>, the official code's quirk). All [N].</summary>
    public static Tensor TdTarget(Tensor r, Tensor d, Tensor q1t, Tensor q2t, double gamma, bool plusD)
    {
        SameVector("TD target", r, d, q1t, q2t);
        var y = r.add(d.neg().add(1.0).mul(gamma).mul(torch.minimum(q1t, q2t)));
        return plusD ? y.add(d) : y;
    }

    /// <summary>Σ mask·x / numel(x): the official masked mean, dividing by B·T including padding. [N], [N] → 0-d.</summary>
    public static Tensor MaskedMean(Tensor x, Tensor mask) => x.mul(mask).sum().div(x.numel());

    /// <summary>Critic loss: masked mean of (q1−y)² plus masked mean of (q2−y)². [N] each → 0-d.</summary>
    public static Tensor CriticLoss(Tensor q1, Tensor q2, Tensor y, Tensor mask)
    {
        SameVector("critic loss", q1, q2, y, mask);
        return MaskedMean(q1.sub(y).square(), mask).add(MaskedMean(q2.sub(y).square(), mask));
    }

    /// <summary>Asserts that every tensor is a vector [N] of the same N.</summary>
    static void SameVector(string what, params Tensor[] xs)
    {
        long n = xs[0].shape.Length == 1 ? xs[0].shape[0] : -1;
        foreach (var x in xs)
            if (x.shape.Length != 1 || x.shape[0] != n)
                throw new ArgumentException($"{what}: expected vectors [N] of one length, got shapes " +
                    string.Join(", ", xs.Select(t => "[" + string.Join(", ", t.shape) + "]")));
    }

    // ── CRITIC UPDATE ──

    /// <summary>One critic step on a fresh batch. Returns (loss, masked mean Q1 over valid steps) when
    /// <paramref name="read"/>, else nulls (no host sync).</summary>
    public (double? Loss, double? Q1Mean) CriticStep(bool read = false)
    {
        using var scope = torch.NewDisposeScope();
        var bt = SampleTensors();
        long n = bt.B * bt.T;
        var s = bt.Obs.reshape(n, ObsSize);
        var a = bt.Act.reshape(n, ActSize);
        var s2 = bt.NextObs.reshape(n, ObsSize);
        var r = bt.Rew.reshape(n);
        var d = bt.Done.reshape(n);
        var m = bt.Mask.reshape(n);

        Tensor y;
        using (no_grad())
        {
            var noise = torch.randn([n, ActSize], DType, Device, generator: NoiseGen).mul_(Config.CriticNoise);
            var aTarget = TargetAction(Pi(PolicyTarget, s2), noise, Config.CriticNoiseClip, ActLimit);
            var q1t = Q(Q1Target, s2, aTarget);
            var q2t = SingleCriticTarget ? q1t : Q(Q2Target, s2, aTarget);
            y = TdTarget(r, d, q1t, q2t, Config.DiscountFactor, Config.PaperQuirks);
        }
        var q1 = Q(Q1, s, a);
        var q2 = Q(Q2, s, a);
        var loss = CriticLoss(q1, q2, y, m);
        var grads = torch.autograd.grad([loss], _critics);
        _criticOpt.Step(grads.ToList());                  // no gradient clipping on the critic
        if (!read) return (null, null);
        double q1Mean;
        using (no_grad()) q1Mean = q1.detach().mul(m).sum().div(m.sum().clamp_min(1)).to(ScalarType.Float64).item<double>();
        return (loss.to(ScalarType.Float64).item<double>(), q1Mean);
    }

    // ── POLICY UPDATE ──

    /// <summary>One policy step on its own fresh batch: minimise <see cref="Objective"/> with TF-Adam after
    /// global-norm clipping to <c>clip_gradient</c>. Returns the loss when <paramref name="read"/>.</summary>
    public double? PolicyStep(bool read = false)
    {
        using var scope = torch.NewDisposeScope();
        var bt = SampleTensors();
        long n = bt.B * bt.T;
        var s = bt.Obs.reshape(n, ObsSize);
        var loss = Objective.Loss(new PolicyLossContext(this, bt, s, Pi(Policy, s), EnvSteps));
        var grads = torch.autograd.grad([loss], Policy).ToList();
        ParamOps.ClipByGlobalNorm(grads, Config.ClipGradient);
        _policyOpt.LearningRate = PolicyLearningRate(EnvSteps);
        _policyOpt.Step(grads);
        return read ? loss.to(ScalarType.Float64).item<double>() : null;
    }

    /// <summary>The official (disabled by default) exponential warm-up: lr·(base^min(1, t/start) − 1)/(base − 1)
    /// when policy_update_start &gt; 0, else lr.</summary>
    public double PolicyLearningRate(long envStep)
    {
        var c = Config;
        if (c.PolicyUpdateStart <= 0) return c.PolicyLearningRate;
        double p = Math.Min(1.0, (double)envStep / c.PolicyUpdateStart);
        return c.PolicyLearningRate * (Math.Pow(c.PolicyLrAnnealingBase, p) - 1) / (c.PolicyLrAnnealingBase - 1);
    }

    // ── TARGET UPDATE ──

    /// <summary>Polyak-averages all three target networks toward their main networks (τ = target_network_update_speed).</summary>
    public void UpdateTargets()
    {
        double tau = Config.TargetNetworkUpdateSpeed;
        ParamOps.Polyak(PolicyTarget, Policy, tau);
        ParamOps.Polyak(Q1Target, Q1, tau);
        ParamOps.Polyak(Q2Target, Q2, tau);
    }

    // ── SCHEDULE ──

    /// <summary>Update iteration <paramref name="j"/> of a round: a critic step always; a policy step and a
    /// target update when j is a multiple of policy_update_delay (the official <c>j % delay == 0</c>).
    /// Needs at least one finished episode in the replay.</summary>
    public Td3UpdateResult Update(long j, bool read = false)
    {
        var (cl, q1) = CriticStep(read);
        if (j % Config.PolicyUpdateDelay != 0) return new Td3UpdateResult(cl, null, q1, false);
        double? pl = PolicyStep(read);
        UpdateTargets();
        return new Td3UpdateResult(cl, pl, q1, true);
    }

    TrajectoryTensors SampleTensors() =>
        Replay.Sample(Config.BufferSampleSize, Config.RecurrentTimeSteps, Rng).ToTensors(Device, DType);

    public void Dispose()
    {
        _criticOpt.Dispose();
        _policyOpt.Dispose();
        foreach (var t in Policy.Concat(Q1).Concat(Q2).Concat(PolicyTarget).Concat(Q1Target).Concat(Q2Target)) t.Dispose();
        NoiseGen.Dispose();
    }
}
