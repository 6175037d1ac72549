using System.Diagnostics;
using System.Text.Json.Nodes;
using MetaGenRL.Actors;
using MetaGenRL.Core.Config;
using MetaGenRL.Core.Meta;
using MetaGenRL.Core.Training;
using TorchSharp;

namespace MetaGenRL.Bench;

/// <summary>population: total agent env-steps/s (with their updates) of N TD3 members run as Akka.NET actors,
/// against one member driven by a plain loop on a thread of its own — the same work per agent-step, so the ratio shows
/// what the actor layer costs. Torch threads are split evenly over the agents (cores / N, at least 1).</summary>
public static class PopulationBench
{
    public static IEnumerable<string> Run(string[] args)
    {
        var counts = (BenchArgs.Get(args, "--agents") ?? "1,2,4").Split(',').Select(int.Parse).ToArray();
        long steps = (long)BenchArgs.GetDouble(args, "--steps", 3000);
        string env = BenchArgs.Get(args, "--env") ?? "Pendulum-v1";
        var cfg = RunConfig.Default
            .With("policy_units", "64").With("critic_units", "64").With("buffer_sample_size", "16")
            .With("policy_random_exploration_steps", "500").With("steps", "1").With("timesteps_total", steps.ToString());
        int cores = Environment.ProcessorCount;

        // The baseline runs on a thread of its own that ends before the populations start: libgomp throttles the
        // spin-waiting of every team once more OpenMP threads exist than cores, so a team left behind by this
        // thread would slow the agents' teams (measured 2×) and the comparison would show that, not the actors.
        double direct = 0;
        var baseline = new Thread(() => direct = Direct(cfg, env, steps, cores), 16 << 20);
        baseline.Start();
        baseline.Join();
        foreach (int n in counts)
        {
            int threads = Math.Max(1, cores / n);
            var options = new PopulationOptions
            {
                AgentCount = n, TimestepsTotal = steps, Steps = 1, ObjFuncUpdateDelay = -1,
                CheckpointAtEnd = false, TorchThreadsPerGroup = threads, GroupSize = 1,
            };
            var sw = Stopwatch.StartNew();
            MetaAgent Make(int i) => new(cfg, env, i, 1000 + i, "cpu", MemberMode.Td3);
            var result = Population.Run(options, spec => new MemberGroupAdapter(spec.Agents.Select(Make).ToArray(), Make), _ => { });
            double rate = result.AgentEnvSteps.Sum() / sw.Elapsed.TotalSeconds;
            yield return new JsonObject
            {
                ["workload"] = "population",
                ["agents"] = n,
                ["env"] = env,
                ["torch_threads_per_agent"] = threads,
                ["agent_steps_per_s"] = Math.Round(rate, 1),
                ["direct_one_agent_steps_per_s"] = Math.Round(direct, 1),
                ["ratio_to_direct"] = Math.Round(rate / direct, 3),
            }.ToJsonString();
        }
    }

    /// <summary>One member on the official schedule (collect whole episodes, one update per step), no actors.</summary>
    static double Direct(RunConfig cfg, string env, long steps, int threads)
    {
        torch.set_num_threads(threads);
        using var member = new MetaAgent(cfg, env, 0, 1000, "cpu", MemberMode.Td3);
        Action<Metric> none = _ => { };
        var sw = Stopwatch.StartNew();
        long target = 1;
        while (member.EnvSteps < steps)
        {
            var c = member.Collect(target, none);
            for (long j = 0; j < c.Steps; j++) member.Update(j, none);
            if (c.ShortestEpisode is int s) target = s;
        }
        return member.EnvSteps / sw.Elapsed.TotalSeconds;
    }
}
