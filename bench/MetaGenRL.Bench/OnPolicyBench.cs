using System.Diagnostics;
using System.Text.Json;
using MetaGenRL.Actors;
using MetaGenRL.Core.Agents;
using MetaGenRL.Core.Config;
using MetaGenRL.Core.Torch;
using MetaGenRL.Core.Engine;
using TorchSharp;

namespace MetaGenRL.Bench;

/// <summary>
/// onpolicy: the on-policy baselines at their default size (one agent, 2×64 tanh networks): env-steps/s of a
/// collect (acting, env steps, then the rollout's log-probabilities, values and GAE) and gradient steps/s of the
/// updates that follow it (PPO: 10 epochs of minibatches of 64; REINFORCE: one policy and 80 value steps on the whole
/// rollout), RL² (trials and PPO steps over whole trials) and EPG (an inner loop's acting and its steps on the evolved
/// loss; then whole ES epochs with one inner-loop actor per core). <c>--algos ppo,reinforce-onpolicy,rl2,epg
/// --envs Pendulum-v1,HalfCheetah-v2 --rounds N</c>. Figures are medians over the rounds after a first (warm-up) round.
/// </summary>
public static class OnPolicyBench
{
    public static IEnumerable<string> Run(string[] args)
    {
        var algos = (BenchArgs.Get(args, "--algos") ?? "ppo,reinforce-onpolicy,rl2,epg").Split(',');
        var envs = (BenchArgs.Get(args, "--envs") ?? "Pendulum-v1,HalfCheetah-v2").Split(',');
        int rounds = (int)BenchArgs.GetDouble(args, "--rounds", 4);
        foreach (var algo in algos)
            foreach (var env in envs)
                foreach (var line in algo switch
                         {
                             "rl2" => [MeasureRl2(env, rounds)],
                             "epg" => MeasureEpg(env, rounds),
                             _ => new[] { Measure(algo, env, rounds) },
                         })
                    yield return line;
    }

    /// <summary>EPG at its default size on one env, one torch thread as in a meta-train: env-steps/s of acting (a
    /// lifetime without updates), updates/s of the policy's steps on L_φ (a full buffer each), then env-steps/s of
    /// whole ES epochs (2K inner loops, one actor per core) against the same inner loops one after another.</summary>
    static IEnumerable<string> MeasureEpg(string env, int rounds)
    {
        var s = new EpgSettings();
        var phi = EpgLoss.Init(s.LossChannels, 0L);
        TorchThreads.Use(1);   // as in a meta-train: one thread per inner loop
        var acting = s with { UpdateEvery = int.MaxValue };
        var collect = new List<double>();
        var update = new List<double>();
        long steps = 0, updates = 0;
        for (int r = 0; r <= rounds; r++)
        {
            using var e = MetaGenRL.Core.Envs.EnvRegistry.Make(env, r);
            var sw = Stopwatch.StartNew();
            var life = EpgInnerLoop.Run(acting, phi, e, s.InnerSteps, r);
            double c = sw.Elapsed.TotalSeconds;
            using var agent = new EpgAgent(s, e.ObservationSize, e.ActionSize, r);
            var rng = new Random(r);
            int n = s.BufferSteps;
            var obs = Enumerable.Range(0, n * e.ObservationSize).Select(_ => (float)rng.NextDouble()).ToArray();
            var act = Enumerable.Range(0, n * e.ActionSize).Select(_ => (float)rng.NextDouble()).ToArray();
            var data = EpgLoss.DataChannels(Enumerable.Range(0, n).Select(_ => rng.NextDouble()).ToArray(), new bool[n], new int[n]);
            using var scope = torch.NewDisposeScope();
            var phiT = EpgLoss.Tensors(phi, s.LossChannels);
            long k = s.InnerSteps / s.UpdateEvery;
            sw.Restart();
            for (long j = 0; j < k; j++) agent.Update(phiT, obs, act, data, n);
            double u = sw.Elapsed.TotalSeconds;
            if (r == 0) continue;
            collect.Add(life.Steps / c);
            update.Add(k / u);
            steps += life.Steps; updates += k;
        }
        yield return Result("epg", env, rounds, steps, updates, collect, update);

        int workers = Environment.ProcessorCount;
        var trainer = new EpgTrainer(s, 1, 0L);
        var jobs = trainer.Propose();
        var ids = new[] { env };
        var sequential = Stopwatch.StartNew();
        foreach (var j in jobs)
        {
            using var e = MetaGenRL.Core.Envs.EnvRegistry.Make(env, EpgWorkerPool.EnvSeed(j.AgentSeed));
            EpgInnerLoop.Run(s, j.Phi, e, j.Steps, j.AgentSeed);
        }
        double alone = sequential.Elapsed.TotalSeconds;
        using var pool = new EpgWorkerPool(null, s, workers);
        var concurrent = Stopwatch.StartNew();
        pool.Run(jobs, ids);
        double together = concurrent.Elapsed.TotalSeconds;
        long epochSteps = jobs.Sum(j => j.Steps);
        yield return JsonSerializer.Serialize(new
        {
            workload = "epg-epoch",
            env,
            inner_loops = jobs.Count,
            epoch_env_steps = epochSteps,
            workers,
            env_steps_per_s_one_thread = Math.Round(epochSteps / alone, 0),
            env_steps_per_s_actors = Math.Round(epochSteps / together, 0),
            speedup = Math.Round(alone / together, 2),
        });
    }

    /// <summary>RL² at its default size on one env: env-steps/s of its trials (a GRU step per env step) and PPO
    /// steps/s of its updates (backpropagation through whole trials).</summary>
    static string MeasureRl2(string env, int rounds)
    {
        var settings = new Rl2Settings();
        using var e = MetaGenRL.Core.Envs.EnvRegistry.Make(env, 0);
        using var agent = new Rl2Agent(settings, e.ObservationSize, e.ActionSize, 0L);
        var collect = new List<double>();
        var update = new List<double>();
        long steps = 0, updates = 0;
        for (int r = 0; r <= rounds; r++)
        {
            var sw = Stopwatch.StartNew();
            var trials = Enumerable.Range(0, settings.TrialsPerIteration).Select(_ => agent.RunTrial(e, long.MaxValue)).ToList();
            double c = sw.Elapsed.TotalSeconds;
            long before = agent.Updates;
            sw.Restart();
            agent.Train(trials);
            double u = sw.Elapsed.TotalSeconds;
            if (r == 0) continue;
            long n = trials.Sum(t => (long)t.Length), k = agent.Updates - before;
            collect.Add(n / c);
            update.Add(k / u);
            steps += n; updates += k;
        }
        return Result("rl2", env, rounds, steps, updates, collect, update);
    }

    static string Measure(string algoName, string env, int rounds)
    {
        var algo = Algorithms.Parse(algoName);
        var cfg = AgentGroup.EffectiveConfig(RunConfig.Default, algo);
        using var g = new OnPolicyGroup(cfg, env, [0], [0L], "cpu", algo);
        var collect = new List<double>();
        var update = new List<double>();
        long steps = 0, updates = 0;
        for (int r = 0; r <= rounds; r++)
        {
            var sw = Stopwatch.StartNew();
            var res = g.Collect([1L], [long.MaxValue], _ => { });
            double c = sw.Elapsed.TotalSeconds;
            long n = res[0].Updates ?? 0;
            sw.Restart();
            for (long j = 0; j < n; j++) g.Update(j, [true], _ => { });
            double u = sw.Elapsed.TotalSeconds;
            if (r == 0) continue;   // warm-up
            collect.Add(res[0].Steps / c);
            update.Add(n / u);
            steps += res[0].Steps; updates += n;
        }
        return Result(algoName, env, rounds, steps, updates, collect, update);
    }

    /// <summary>One measurement as JSON: per-rollout sizes, medians of the rates, and the overall env-steps/s.</summary>
    static string Result(string algo, string env, int rounds, long steps, long updates, List<double> collect, List<double> update) =>
        JsonSerializer.Serialize(new
        {
            workload = "onpolicy",
            algo,
            env,
            rollout_steps = steps / rounds,
            updates_per_rollout = updates / rounds,
            env_steps_per_s = Math.Round(Median(collect), 0),
            updates_per_s = Math.Round(Median(update), 1),
            env_steps_per_s_overall = Math.Round(steps / (steps / Median(collect) + updates / Median(update)), 0),
            threads = torch.get_num_threads(),
        });

    static double Median(List<double> xs)
    {
        var s = xs.OrderBy(x => x).ToArray();
        return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
    }
}
