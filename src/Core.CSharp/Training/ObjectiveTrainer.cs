using MetaGenRL.Core.Agents;
using MetaGenRL.Core.Config;
using MetaGenRL.Core.Envs;
using MetaGenRL.Core.Meta;
using MetaGenRL.Core.Objective;
using MetaGenRL.Core.Torch;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaGenRL.Core.Training;

/// <summary>
/// Single-agent baselines and meta-test on the official TD3 collect/update schedule (<see cref="Td3Trainer"/>):
/// the same critic, replay, exploration and logging; only the policy objective differs.
/// <list type="bullet">
/// <item><c>td3</c>: the official <c>baseline()</c>, policy on −Q1.</item>
/// <item><c>ddpg</c>: policy on −Q1 with ONE target critic (Q1_target, no twin minimum), no target smoothing noise,
///   policy and Polyak targets every iteration (policy_update_delay 1). Q2 is still trained but unused.</item>
/// <item><c>reinforce-offpolicy</c>: the official <c>reinforce_test</c> (fixed REINFORCE-with-GAE objective).</item>
/// <item><c>random-objective</c>: a freshly initialised L_α (seeded from the run seed), frozen, no annealing.</item>
/// <item><c>meta-test</c>: the official <c>test()</c>: a frozen L_α loaded from <c>alpha</c>, no annealing.</item>
/// </list>
/// Metrics: those of <see cref="Td3Trainer"/>; with an objective, <c>policy_obj_loss</c> (the objective's loss) and
/// <c>policy_loss</c> (−mean Q1(s, π(s)), the official diagnostic).
/// </summary>
public static class ObjectiveTrainer
{
    /// <summary>The algorithm names <see cref="Train"/> accepts.</summary>
    public static IReadOnlyList<string> Algorithms { get; } = ["td3", "ddpg", "reinforce-offpolicy", "random-objective", "meta-test"];

    /// <summary>The member mode behind an algorithm name.</summary>
    public static MemberMode Mode(string algo) => algo switch
    {
        "td3" => MemberMode.Td3,
        "ddpg" => MemberMode.Ddpg,
        "reinforce-offpolicy" => MemberMode.Reinforce,
        "random-objective" => MemberMode.RandomObjective,
        "meta-test" => MemberMode.MetaTest,
        _ => throw new ArgumentException($"unknown algorithm '{algo}'; expected one of {string.Join(", ", Algorithms)}"),
    };

    /// <summary>Trains one agent with <paramref name="algo"/> on <see cref="TrainOptions.EnvId"/>.</summary>
    /// <param name="alpha">the frozen objective for <c>meta-test</c> (flattened, <see cref="ObjectiveSpec"/> layout); ignored otherwise</param>
    public static TrainSummary Train(RunConfig cfg, string algo, float[]? alpha, TrainOptions opts, Action<Metric> onMetric,
                                     IProgress<long>? progress = null, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(opts);
        Mode(algo);
        EnvRegistry.Validate(opts.EnvId);
        Devices.Resolve(opts.Device);
        using var env = EnvRegistry.Make(opts.EnvId, Seeds.DeriveInt(opts.Seed, Seeds.EnvStream));
        return Train(cfg, algo, alpha, env, opts, onMetric, progress, ct);
    }

    /// <summary>Trains on an already-made env (not disposed here).</summary>
    public static TrainSummary Train(RunConfig cfg, string algo, float[]? alpha, IEnv env, TrainOptions opts, Action<Metric> onMetric,
                                     IProgress<long>? progress = null, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(cfg);
        var mode = Mode(algo);
        if (mode == MemberMode.MetaTest && alpha is null) throw new ArgumentException("meta-test needs the objective parameters alpha");
        var eff = MetaAgent.EffectiveConfig(cfg.Validate(), mode);
        var device = Devices.Resolve(opts.Device);
        List<Tensor>? a = null;
        try
        {
            return Td3Trainer.Run(eff, env, opts, onMetric, progress, ct, agent =>
            {
                switch (mode)
                {
                    case MemberMode.Td3: agent.Objective = new DiagnosedCriticValueObjective(); break;
                    case MemberMode.Ddpg: agent.Objective = new DiagnosedCriticValueObjective(); agent.SingleCriticTarget = true; break;
                    case MemberMode.Reinforce: agent.Objective = new ReinforceObjective(eff.DiscountFactor, eff.GaeFactor, eff.PaperQuirks); break;
                    default:
                        var spec = ObjectiveSpec.FromConfig(eff);
                        using (var gen = new Generator(Seeds.Derive(opts.Seed, MetaAgent.ObjectiveInitStream), torch.CPU))
                            a = ObjectiveNetwork.Init(spec, gen, device, agent.DType);
                        if (mode == MemberMode.MetaTest) ObjectiveNetwork.Load(a, alpha!);
                        foreach (var p in a) p.requires_grad_(false);   // frozen: no graph into α
                        agent.Objective = new LearnedObjective(spec, a, annealSteps: 0, eff.PaperQuirks);
                        break;
                }
            });
        }
        finally
        {
            if (a != null) foreach (var p in a) p.Dispose();
        }
    }
}
