using System.Diagnostics;
using MetaGenRL.Core.Agents;
using MetaGenRL.Core.Config;
using MetaGenRL.Core.Envs;
using MetaGenRL.Core.Objective;
using MetaGenRL.Core.Torch;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaGenRL.Core.Training;

/// <summary>What one single-agent training run does.</summary>
/// <param name="EnvId">gym id for <see cref="EnvRegistry.Make"/></param>
/// <param name="Steps">env steps to collect</param>
/// <param name="Seed">the run seed; the agent's generators and the env seed derive from it (<see cref="Seeds"/>)</param>
/// <param name="Device">cpu, cuda or cuda:N</param>
/// <param name="LossLogEvery">emit critic_loss, q1_mean and policy_loss every this many update iterations</param>
public sealed record TrainOptions(string EnvId, long Steps, int Seed, string Device = "cpu", int LossLogEvery = 100);

/// <summary>How a run ended.</summary>
/// <param name="EnvSteps">env steps collected</param>
/// <param name="Episodes">episodes finished</param>
/// <param name="WallSeconds">wall time of the run</param>
/// <param name="LastEpisodeReturn">return of the last finished episode, if any</param>
public sealed record TrainSummary(long EnvSteps, int Episodes, double WallSeconds, double? LastEpisodeReturn);

/// <summary>
/// One TD3 agent on one env, on the official collect/update schedule (<c>LLFSExperiment._train</c>): each round
/// collects whole episodes until at least <c>target</c> new steps were taken (target starts at 1, then becomes
/// the shortest episode of the previous round), then runs one update iteration j = 0 … n−1 per collected step
/// (critic every j, policy + targets when j % policy_update_delay == 0). Collection stops exactly at
/// <see cref="TrainOptions.Steps"/>, possibly mid-episode (that partial episode is never sampled), and the
/// round's updates still run. Cancellation stops at the next env step or update and returns.
/// Metrics: <c>episode_return</c>, <c>episode_length</c> per episode; <c>critic_loss</c>, <c>q1_mean</c>,
/// <c>policy_loss</c> every LossLogEvery updates; <c>sps</c> (env steps per wall second, updates included)
/// about every 1000 env steps.
/// </summary>
public static class Td3Trainer
{
    /// <summary>Makes the env from <see cref="TrainOptions.EnvId"/> (seeded from the run seed) and trains.</summary>
    public static TrainSummary Train(RunConfig cfg, TrainOptions opts, Action<Metric> onMetric,
                                     IProgress<long>? progress = null, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(opts);
        EnvRegistry.Validate(opts.EnvId);
        Devices.Resolve(opts.Device);   // fail on a bad device before making the env
        using var env = EnvRegistry.Make(opts.EnvId, Seeds.DeriveInt(opts.Seed, Seeds.EnvStream));
        return Train(cfg, env, opts, onMetric, progress, ct);
    }

    /// <summary>Trains on an already-made env (not disposed here). <see cref="TrainOptions.EnvId"/> is ignored.</summary>
    public static TrainSummary Train(RunConfig cfg, IEnv env, TrainOptions opts, Action<Metric> onMetric,
                                     IProgress<long>? progress = null, CancellationToken ct = default) =>
        Run(cfg, env, opts, onMetric, progress, ct, configure: null);

    /// <summary>The schedule shared by every single-agent algorithm: <paramref name="configure"/> sets the agent's
    /// policy objective (and DDPG's single-critic target) before the first step. With an objective other than the
    /// TD3 actor loss, the policy step's loss is reported as <c>policy_obj_loss</c> and −mean Q1(s, π(s)) as <c>policy_loss</c>.</summary>
    internal static TrainSummary Run(RunConfig cfg, IEnv env, TrainOptions opts, Action<Metric> onMetric,
                                     IProgress<long>? progress, CancellationToken ct, Action<Td3Agent>? configure)
    {
        ArgumentNullException.ThrowIfNull(cfg);
        ArgumentNullException.ThrowIfNull(env);
        ArgumentNullException.ThrowIfNull(onMetric);
        if (opts.Steps < 0) throw new ArgumentException($"steps must be ≥ 0, got {opts.Steps}");
        if (opts.LossLogEvery < 1) throw new ArgumentException($"loss log interval must be ≥ 1, got {opts.LossLogEvery}");
        cfg.Validate();
        var device = Devices.Resolve(opts.Device);
        if (cfg.TorchThreads is int threads) torch.set_num_threads(threads);
        AllocatorTuning.Apply();

        var clock = Stopwatch.StartNew();
        int capacity = (int)Math.Min(cfg.BufferSize, Math.Max(opts.Steps, 1));   // never more than the run can fill
        using var agent = new Td3Agent(cfg, env.ObservationSize, env.ActionLow, env.ActionHigh, opts.Seed, device,
                                       replayCapacity: capacity);
        configure?.Invoke(agent);

        long envStep = 0, updates = 0, lastSpsStep = 0, lastProgress = 0;
        double lastSpsTime = 0;
        int episodes = 0;
        double? lastReturn = null;
        bool policyLossWanted = false;
        long target = 1;
        int episodeLimit = cfg.MaxEpisodeLength ?? int.MaxValue;

        float[] obs = env.Reset();
        double epReturn = 0;
        int epLen = 0;

        while (envStep < opts.Steps && !ct.IsCancellationRequested)
        {
            // ── COLLECT ── whole episodes until ≥ target new steps (or the step budget ends)
            long collected = 0;
            int shortest = int.MaxValue;
            while ((collected < target || epLen > 0) && envStep < opts.Steps && !ct.IsCancellationRequested)
            {
                var act = agent.Act(obs);
                var step = env.Step(act);
                epLen++;
                if (!step.Done && epLen >= episodeLimit) step = step with { Truncated = true };   // max_episode_length
                agent.Observe(obs, act, step);
                epReturn += step.Reward;
                envStep++; collected++;
                obs = step.Observation;
                if (step.Done)
                {
                    episodes++;
                    lastReturn = epReturn;
                    onMetric(new Metric(envStep, "episode_return", epReturn));
                    onMetric(new Metric(envStep, "episode_length", epLen));
                    shortest = Math.Min(shortest, epLen);
                    obs = env.Reset();
                    epReturn = 0;
                    epLen = 0;
                }
                if (envStep - lastSpsStep >= 1000)
                {
                    double now = clock.Elapsed.TotalSeconds;
                    onMetric(new Metric(envStep, "sps", (envStep - lastSpsStep) / Math.Max(now - lastSpsTime, 1e-9)));
                    lastSpsStep = envStep; lastSpsTime = now;
                }
                if (envStep - lastProgress >= 100) { progress?.Report(envStep); lastProgress = envStep; }
            }
            if (shortest != int.MaxValue) target = shortest;
            if (ct.IsCancellationRequested || agent.Replay.EpisodeCount == 0) continue;

            // ── UPDATE ── one iteration per collected step
            for (long j = 0; j < collected && !ct.IsCancellationRequested; j++)
            {
                bool logNow = updates % opts.LossLogEvery == 0;
                bool isPolicy = j % cfg.PolicyUpdateDelay == 0;
                policyLossWanted |= logNow;
                var res = agent.Update(j, read: logNow || (policyLossWanted && isPolicy));
                updates++;
                if (logNow)
                {
                    onMetric(new Metric(envStep, "critic_loss", res.CriticLoss!.Value));
                    onMetric(new Metric(envStep, "q1_mean", res.Q1Mean!.Value));
                }
                if (res.PolicyLoss is double pl && policyLossWanted)
                {
                    if (agent.Objective is CriticValueObjective or DiagnosedCriticValueObjective)
                        onMetric(new Metric(envStep, "policy_loss", pl));
                    else
                    {
                        onMetric(new Metric(envStep, "policy_obj_loss", pl));
                        if (agent.Objective is IDiagnosedObjective { LastValueLoss: { } v })
                            onMetric(new Metric(envStep, "policy_loss", v.to(ScalarType.Float64).item<double>()));
                    }
                    policyLossWanted = false;
                }
            }
        }
        progress?.Report(envStep);
        return new TrainSummary(envStep, episodes, clock.Elapsed.TotalSeconds, lastReturn);
    }
}
