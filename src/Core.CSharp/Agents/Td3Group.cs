using MetaGenRL.Core.Config;
using MetaGenRL.Core.Envs;
using MetaGenRL.Core.Randomness;
using MetaGenRL.Core.Torch;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaGenRL.Core.Agents;

/// <summary>What a policy objective sees when the policies of a group are updated (all tensors on the group's device).</summary>
/// <param name="Group">the group (networks, config)</param>
/// <param name="Batch">the policy step's own trajectory batch, shapes [K, B, T, …]</param>
/// <param name="Obs">[K, B·T, obs] the batch observations, flattened per slot</param>
/// <param name="PolicyAction">[K, B·T, act] π_φ(s), differentiable in the policy parameters</param>
/// <param name="EnvSteps">[K] each slot's env steps the anneal counts (in its current life, or over all its lives when
/// agent_lifetime_restart_anneal is false)</param>
public sealed record PolicyLossContext(Td3Group Group, TrajectoryTensors Batch, Tensor Obs, Tensor PolicyAction, long[] EnvSteps);

/// <summary>The loss the policy step minimises. TD3 uses <see cref="CriticValueObjective"/>; the learned
/// objective L_α (with its anneal toward −Q1) plugs in here.</summary>
public interface IPolicyObjective
{
    /// <summary>Per-slot losses [K], each differentiable in its own slot's policy parameters through
    /// <see cref="PolicyLossContext.PolicyAction"/>.</summary>
    Tensor Loss(PolicyLossContext ctx);
}

/// <summary>The DDPG/TD3 actor loss: −masked mean over B·T (padding included in the divisor) of Q1(s, π(s)), per slot.</summary>
public sealed class CriticValueObjective : IPolicyObjective
{
    public static CriticValueObjective Instance { get; } = new();
    public Tensor Loss(PolicyLossContext ctx) =>
        Td3Group.MaskedMean(ctx.Group.Q(ctx.Group.Q1, ctx.Obs, ctx.PolicyAction), ctx.Batch.Mask.flatten(1)).neg();
}

/// <summary>Per-slot losses of one update iteration; null where not computed or not read.</summary>
public readonly record struct Td3UpdateResult(double[]? CriticLoss, double[]? PolicyLoss, double[]? Q1Mean, bool PolicyUpdated);

/// <summary>
/// K TD3 agents as the official MetaGenRL code runs them (<c>baseline()</c>), computed as one batch: their policies,
/// twin critics and targets are stacked tensors [K, …] (one batched matmul per layer), their TF-Adam states
/// elementwise over the stack with a step count per slot. Each slot keeps its own replay, generators and env-step
/// counter. Per agent: twin critics with target smoothing, a deterministic tanh policy, episode-uniform trajectory
/// windows of T steps (B·T transitions per step), a fresh minibatch for every critic and policy step, policy +
/// Polyak targets every <c>policy_update_delay</c>-th iteration, TF-Adam everywhere, global-norm clipping on the
/// policy only. With <c>paper_quirks</c> time-limit ends are stored as terminal and the TD target gets "+d".
/// Randomness per slot: init from a CPU torch.Generator, smoothing noise from a device torch.Generator, exploration
/// and replay sampling from one <see cref="SeededRandom"/>, all derived from that slot's seed (see <see cref="Seeds"/>),
/// so slot k computes what agent k would compute alone (up to the rounding of a batched kernel).
/// Updates take an <c>active</c> mask: an inactive slot is left exactly as it is (no draws, no optimiser step).
/// Single-threaded: call every method from the same thread (TorchSharp dispose scopes are per thread).
/// </summary>
public sealed class Td3Group : IDisposable
{
    // ── STATE ──
    public RunConfig Config { get; }
    public Device Device { get; }
    public ScalarType DType { get; }
    /// <summary>K, the number of slots.</summary>
    public int K { get; }
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
    /// <summary>Stacked policy parameters [K, …].</summary>
    public List<Tensor> Policy { get; }
    public List<Tensor> Q1 { get; }
    public List<Tensor> Q2 { get; }
    public List<Tensor> PolicyTarget { get; }
    public List<Tensor> Q1Target { get; }
    public List<Tensor> Q2Target { get; }
    /// <summary>Each slot's replay.</summary>
    public TrajectoryReplay[] Replay { get; }
    /// <summary>The policy step's loss; <see cref="CriticValueObjective"/> for TD3.</summary>
    public IPolicyObjective Objective { get; set; }
    /// <summary>Each slot's exploration noise, random actions and replay sampling.</summary>
    public SeededRandom[] Rng { get; }
    /// <summary>Each slot's target-policy smoothing noise.</summary>
    public Generator[] NoiseGen { get; }
    /// <summary>The seed each slot was created from.</summary>
    public long[] AgentSeeds { get; }
    /// <summary>DDPG: the TD target uses Q1_target alone instead of the twin minimum (Q2 is still trained, unused).</summary>
    public bool SingleCriticTarget { get; set; }
    /// <summary>Each slot's env steps seen by <see cref="Observe"/>, over all its lives (the budget and the rows count
    /// these).</summary>
    public long[] EnvSteps { get; }
    /// <summary>Each slot's env step count when its current life began (0 until an agent lifetime ends; see
    /// <see cref="StartLife"/>). Exploration and the policy-LR warm-up count the steps of the current life.</summary>
    public long[] LifeStart { get; }
    /// <summary>Env steps slot k has taken in its current life.</summary>
    public long LifeSteps(int k) => EnvSteps[k] - LifeStart[k];
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
    /// <param name="seeds">[K] each slot's agent seed</param>
    /// <param name="device">where every tensor lives (from <see cref="Devices.Resolve"/>)</param>
    /// <param name="dtype">Float32 normally; Float64 for exact tests</param>
    /// <param name="replayCapacity">each slot's replay capacity (buffer_size when null)</param>
    public Td3Group(RunConfig cfg, int obsSize, float[] actLow, float[] actHigh, IReadOnlyList<long> seeds, Device device,
                    ScalarType dtype = ScalarType.Float32, int? replayCapacity = null)
    {
        Config = cfg.Validate();
        if (actLow.Length != actHigh.Length || actLow.Length < 1)
            throw new ArgumentException($"action bounds have lengths {actLow.Length} and {actHigh.Length}");
        if (seeds.Count < 1) throw new ArgumentException("a group needs at least one agent seed");
        K = seeds.Count;
        Device = device; DType = dtype; ObsSize = obsSize; ActSize = actLow.Length;
        ActLow = (float[])actLow.Clone(); ActHigh = (float[])actHigh.Clone();
        ActLimit = actHigh[0];
        PolicySpec = new MlpSpec(obsSize, cfg.PolicyUnits, cfg.PolicyDepth, ActSize, cfg.PolicyLayernorm,
                                 cfg.PolicyActivation, MlpOutput.TanhScaled, ActLimit);
        CriticSpec = new MlpSpec(obsSize + ActSize, cfg.CriticUnits, cfg.CriticDepth, 1, cfg.CriticLayernorm, cfg.CriticActivation);
        AgentSeeds = seeds.ToArray();

        var (pol, q1, q2) = (new List<List<Tensor>>(), new List<List<Tensor>>(), new List<List<Tensor>>());
        foreach (var seed in AgentSeeds)
        {
            using var initGen = new Generator(Seeds.Derive(seed, Seeds.InitStream), torch.CPU);
            pol.Add(Mlp.Draw(PolicySpec, initGen));
            q1.Add(Mlp.Draw(CriticSpec, initGen));
            q2.Add(Mlp.Draw(CriticSpec, initGen));
        }
        Policy = Mlp.Stack(pol, device, dtype);
        Q1 = Mlp.Stack(q1, device, dtype);
        Q2 = Mlp.Stack(q2, device, dtype);
        PolicyTarget = Mlp.Clone(Policy);
        Q1Target = Mlp.Clone(Q1);
        Q2Target = Mlp.Clone(Q2);
        foreach (var t in PolicyTarget.Concat(Q1Target).Concat(Q2Target)) t.requires_grad_(false);
        NoiseGen = AgentSeeds.Select(s => new Generator(Seeds.Derive(s, Seeds.NoiseStream), device)).ToArray();
        Rng = AgentSeeds.Select(s => Seeds.Random(s, Seeds.ExploreStream)).ToArray();
        EnvSteps = new long[K];
        LifeStart = new long[K];

        _critics = Q1.Concat(Q2).ToList();
        _criticOpt = new TfAdam(_critics, cfg.CriticLearningRate);
        _policyOpt = new TfAdam(Policy, cfg.PolicyLearningRate);
        Replay = Enumerable.Range(0, K).Select(_ => new TrajectoryReplay(replayCapacity ?? cfg.BufferSize, obsSize, ActSize)).ToArray();
        Objective = CriticValueObjective.Instance;
    }

    /// <summary>Puts slot k back to the state a fresh group would give it (networks, targets, optimiser moments and
    /// step counts, generators, counters, empty replay).</summary>
    public void ResetSlot(int k)
    {
        Renew(k, AgentSeeds[k]);
        EnvSteps[k] = 0;
        LifeStart[k] = 0;
    }

    /// <summary>Starts a new life in slot k (agent lifetimes): fresh networks, targets, optimiser state, generators and
    /// an empty replay, all from <paramref name="lifeSeed"/>; the env step count carries on and the new life begins at it.</summary>
    public void StartLife(int k, long lifeSeed)
    {
        Renew(k, lifeSeed);
        LifeStart[k] = EnvSteps[k];
    }

    /// <summary>Slot k's networks, targets, optimiser moments and step counts, generators and replay as a fresh agent
    /// with <paramref name="seed"/> has them.</summary>
    void Renew(int k, long seed)
    {
        using var initGen = new Generator(Seeds.Derive(seed, Seeds.InitStream), torch.CPU);
        using var _ = no_grad();
        foreach (var (ps, targets, spec) in new[] { (Policy, PolicyTarget, PolicySpec), (Q1, Q1Target, CriticSpec), (Q2, Q2Target, CriticSpec) })
        {
            var fresh = Mlp.Draw(spec, initGen);
            for (int i = 0; i < ps.Count; i++)
            {
                using var f = fresh[i].to(DType, Device);
                ps[i][k].copy_(f);
                targets[i][k].copy_(f);
                fresh[i].Dispose();
            }
        }
        foreach (var opt in new[] { _criticOpt, _policyOpt })
        {
            foreach (var m in opt.FirstMoments.Concat(opt.SecondMoments)) m[k].zero_();
            opt.RestoreSteps(k, 0);
        }
        NoiseGen[k].Dispose();
        NoiseGen[k] = new Generator(Seeds.Derive(seed, Seeds.NoiseStream), Device);
        Rng[k] = Seeds.Random(seed, Seeds.ExploreStream);
        Replay[k].Clear();
    }

    // ── NETWORKS ──

    /// <summary>π(s) with stacked parameters <paramref name="phi"/>. <paramref name="obs"/>: [K, N, obs] → [K, N, act].</summary>
    public Tensor Pi(IReadOnlyList<Tensor> phi, Tensor obs) => Mlp.Forward(PolicySpec, phi, obs);

    /// <summary>Q(s, a) with stacked critic parameters <paramref name="theta"/>. [K, N, obs], [K, N, act] → [K, N].</summary>
    public Tensor Q(IReadOnlyList<Tensor> theta, Tensor obs, Tensor act) =>
        Mlp.Forward(CriticSpec, theta, torch.cat([obs, act], -1)).squeeze(-1);

    // ── EXPLORATION ──

    /// <summary>Behaviour actions for the slots whose <paramref name="obs"/>[k] is not null ([obs] → [act]; null stays
    /// null): uniform in the action box for the first <c>policy_random_exploration_steps</c> env steps of the slot,
    /// then π(s) + N(0, policy_exploration²) clipped to the box. One batched policy forward for all slots.</summary>
    public float[]?[] Act(float[]?[] obs)
    {
        var acts = new float[]?[K];
        var mean = NeedsPolicy(obs) ? ActDeterministic(obs) : null;
        for (int k = 0; k < K; k++)
        {
            if (obs[k] is null) continue;
            var a = new float[ActSize];
            var rng = Rng[k];
            if (LifeSteps(k) < Config.PolicyRandomExplorationSteps)
                for (int i = 0; i < ActSize; i++) a[i] = (float)(ActLow[i] + (ActHigh[i] - ActLow[i]) * rng.NextDouble());
            else
                for (int i = 0; i < ActSize; i++)
                    a[i] = Math.Clamp((float)(mean![k]![i] + Config.PolicyExploration * rng.NextGaussian()), ActLow[i], ActHigh[i]);
            acts[k] = a;
        }
        return acts;
    }

    bool NeedsPolicy(float[]?[] obs)
    {
        for (int k = 0; k < K; k++)
            if (obs[k] is not null && LifeSteps(k) >= Config.PolicyRandomExplorationSteps) return true;
        return false;
    }

    /// <summary>π(s) without noise for the slots whose <paramref name="obs"/>[k] is not null: [obs] → [act].</summary>
    public float[]?[] ActDeterministic(float[]?[] obs)
    {
        if (obs.Length != K) throw new ArgumentException($"{obs.Length} observations for a group of {K}");
        var x = new float[K * ObsSize];
        for (int k = 0; k < K; k++)
        {
            if (obs[k] is not { } o) continue;
            if (o.Length != ObsSize) throw new ArgumentException($"slot {k}: observation has length {o.Length}, expected {ObsSize}");
            o.CopyTo(x, k * ObsSize);
        }
        float[] flat;
        using (torch.NewDisposeScope())
        using (no_grad())
        {
            var xs = torch.tensor(x, [K, 1, ObsSize]).to(DType, Device);
            flat = Pi(Policy, xs).to(ScalarType.Float32, torch.CPU).data<float>().ToArray();
        }
        var res = new float[]?[K];
        for (int k = 0; k < K; k++)
            if (obs[k] is not null) res[k] = flat.AsSpan(k * ActSize, ActSize).ToArray();
        return res;
    }

    /// <summary>Stores one env transition of slot k. The learner's done is terminated, or also truncated with paper_quirks.</summary>
    public void Observe(int k, float[] obs, float[] act, StepResult step)
    {
        bool done = step.Terminated || (Config.PaperQuirks && step.Truncated);
        Replay[k].Add(obs, act, step.Reward, step.Observation, step.Terminated, step.Truncated, done);
        EnvSteps[k]++;
    }

    // ── TD3 MATH (pure; parameters explicit; element-wise over any leading dims) ──

    /// <summary>ã = clip(π_targ(s') + clip(ε, ±noiseClip), ±actLimit).</summary>
    public static Tensor TargetAction(Tensor piTarget, Tensor noise, double noiseClip, double actLimit) =>
        piTarget.add(noise.clamp(-noiseClip, noiseClip)).clamp(-actLimit, actLimit);

    /// <summary>y = r + γ(1−d)·min(q1t, q2t) (+ d when <paramref name="plusD"/>, the official code's quirk). All [K, N].</summary>
    public static Tensor TdTarget(Tensor r, Tensor d, Tensor q1t, Tensor q2t, double gamma, bool plusD)
    {
        SameShape("TD target", r, d, q1t, q2t);
        var y = r.add(d.neg().add(1.0).mul(gamma).mul(torch.minimum(q1t, q2t)));
        return plusD ? y.add(d) : y;
    }

    /// <summary>Per slot, Σ mask·x / N: the official masked mean, dividing by B·T including padding. [K, N], [K, N] → [K].</summary>
    public static Tensor MaskedMean(Tensor x, Tensor mask) => x.mul(mask).sum(1).div(x.shape[1]);

    /// <summary>Per slot, the critic loss: masked mean of (q1−y)² plus masked mean of (q2−y)². [K, N] each → [K].</summary>
    public static Tensor CriticLoss(Tensor q1, Tensor q2, Tensor y, Tensor mask)
    {
        SameShape("critic loss", q1, q2, y, mask);
        return MaskedMean(q1.sub(y).square(), mask).add(MaskedMean(q2.sub(y).square(), mask));
    }

    /// <summary>Asserts that every tensor is a matrix [K, N] of the same shape.</summary>
    static void SameShape(string what, params Tensor[] xs)
    {
        var s = xs[0].shape;
        foreach (var x in xs)
            if (x.shape.Length != 2 || !x.shape.SequenceEqual(s))
                throw new ArgumentException($"{what}: expected matrices [K, N] of one shape, got shapes " +
                    string.Join(", ", xs.Select(t => "[" + string.Join(", ", t.shape) + "]")));
    }

    // ── CRITIC UPDATE ──

    /// <summary>One critic step of the active slots on fresh batches. Returns per slot (loss, masked mean Q1 over valid
    /// steps) when <paramref name="read"/>, else nulls (no host sync). Inactive slots read 0.</summary>
    public (double[]? Loss, double[]? Q1Mean) CriticStep(bool[] active, bool read = false)
    {
        using var scope = torch.NewDisposeScope();
        var bt = SampleTensors(active, Config.BufferSampleSize);
        long n = bt.B * bt.T;
        var s = bt.Obs.reshape(K, n, ObsSize);
        var a = bt.Act.reshape(K, n, ActSize);
        var s2 = bt.NextObs.reshape(K, n, ObsSize);
        var r = bt.Rew.reshape(K, n);
        var d = bt.Done.reshape(K, n);
        var m = bt.Mask.reshape(K, n);

        Tensor y;
        using (no_grad())
        {
            var noise = SmoothingNoise(active, n).mul_(Config.CriticNoise);
            var aTarget = TargetAction(Pi(PolicyTarget, s2), noise, Config.CriticNoiseClip, ActLimit);
            var q1t = Q(Q1Target, s2, aTarget);
            var q2t = SingleCriticTarget ? q1t : Q(Q2Target, s2, aTarget);
            y = TdTarget(r, d, q1t, q2t, Config.DiscountFactor, Config.PaperQuirks);
        }
        var q1 = Q(Q1, s, a);
        var q2 = Q(Q2, s, a);
        var loss = CriticLoss(q1, q2, y, m);                 // [K]
        var grads = torch.autograd.grad([loss.sum()], _critics);
        _criticOpt.Step(grads.ToList(), active);            // no gradient clipping on the critic
        if (!read) return (null, null);
        Tensor q1Mean;
        using (no_grad()) q1Mean = q1.detach().mul(m).sum(1).div(m.sum(1).clamp_min(1));
        var both = torch.stack([loss.detach(), q1Mean]).to(ScalarType.Float64, torch.CPU).data<double>().ToArray();
        return (both[..K], both[K..]);
    }

    /// <summary>[K, n, act] standard normal draws from each active slot's own generator; zeros for inactive slots.</summary>
    Tensor SmoothingNoise(bool[] active, long n)
    {
        var parts = new Tensor[K];
        for (int k = 0; k < K; k++)
            parts[k] = active[k] ? torch.randn([n, ActSize], DType, Device, generator: NoiseGen[k])
                                 : torch.zeros([n, ActSize], DType, Device);
        return torch.stack(parts);
    }

    // ── POLICY UPDATE ──

    /// <summary>One policy step of the active slots on their own fresh batches: minimise <see cref="Objective"/> with
    /// TF-Adam after per-slot global-norm clipping to <c>clip_gradient</c>. Returns the losses [K] when <paramref name="read"/>.</summary>
    public double[]? PolicyStep(bool[] active, bool read = false)
    {
        using var scope = torch.NewDisposeScope();
        var bt = SampleTensors(active, Config.BufferSampleSize);
        long n = bt.B * bt.T;
        var s = bt.Obs.reshape(K, n, ObsSize);
        var annealSteps = Enumerable.Range(0, K).Select(k => Config.AgentLifetimeRestartAnneal ? LifeSteps(k) : EnvSteps[k]).ToArray();
        var loss = Objective.Loss(new PolicyLossContext(this, bt, s, Pi(Policy, s), annealSteps));
        if (loss.shape.Length != 1 || loss.shape[0] != K)
            throw new InvalidOperationException($"policy objective returned shape [{string.Join(", ", loss.shape)}], expected [{K}]");
        var grads = torch.autograd.grad([loss.sum()], Policy).ToList();
        ParamOps.ClipByGlobalNorm(grads, Config.ClipGradient);
        _policyOpt.Step(grads, active, Enumerable.Range(0, K).Select(k => PolicyLearningRate(LifeSteps(k))).ToArray());
        return read ? loss.detach().to(ScalarType.Float64, torch.CPU).data<double>().ToArray() : null;
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

    /// <summary>Polyak-averages the active slots' three target networks toward their main networks
    /// (τ = target_network_update_speed).</summary>
    public void UpdateTargets(bool[] active)
    {
        var tau = active.Select(a => a ? Config.TargetNetworkUpdateSpeed : 0.0).ToArray();
        ParamOps.Polyak(PolicyTarget, Policy, tau);
        ParamOps.Polyak(Q1Target, Q1, tau);
        ParamOps.Polyak(Q2Target, Q2, tau);
    }

    // ── SCHEDULE ──

    /// <summary>Update iteration <paramref name="j"/> of a round for the active slots: a critic step always; a policy
    /// step and a target update when j is a multiple of policy_update_delay (the official <c>j % delay == 0</c>).
    /// Every active slot needs at least one finished episode in its replay.</summary>
    public Td3UpdateResult Update(long j, bool[] active, bool read = false)
    {
        if (active.Length != K) throw new ArgumentException($"{active.Length} activity flags for a group of {K}");
        var (cl, q1) = CriticStep(active, read);
        if (j % Config.PolicyUpdateDelay != 0) return new Td3UpdateResult(cl, null, q1, false);
        var pl = PolicyStep(active, read);
        UpdateTargets(active);
        return new Td3UpdateResult(cl, pl, q1, true);
    }

    /// <summary>Update iteration j for every slot.</summary>
    public Td3UpdateResult Update(long j, bool read = false) => Update(j, Enumerable.Repeat(true, K).ToArray(), read);

    /// <summary>Each active slot's own sample of <paramref name="windows"/> windows (from its replay and generator),
    /// stacked as [K, windows, T, …]; inactive slots get all-zero windows with mask 0 and draw nothing.</summary>
    public TrajectoryTensors SampleTensors(bool[] active, int windows)
    {
        var batches = new TrajectoryBatch?[K];
        for (int k = 0; k < K; k++)
            if (active[k]) batches[k] = Replay[k].Sample(windows, Config.RecurrentTimeSteps, Rng[k]);
        return TrajectoryBatch.Stack(batches, windows, Config.RecurrentTimeSteps, ObsSize, ActSize, Device, DType);
    }

    public void Dispose()
    {
        _criticOpt.Dispose();
        _policyOpt.Dispose();
        foreach (var t in Policy.Concat(Q1).Concat(Q2).Concat(PolicyTarget).Concat(Q1Target).Concat(Q2Target)) t.Dispose();
        foreach (var g in NoiseGen) g.Dispose();
    }
}
