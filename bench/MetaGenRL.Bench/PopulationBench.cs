using System.Diagnostics;
using System.Text.Json.Nodes;
using MetaGenRL.Actors;
using MetaGenRL.Core.Config;
using MetaGenRL.Core.Engine;

namespace MetaGenRL.Bench;

/// <summary>
/// population: agent-steps/s (env steps with their updates under the official schedule; meta-train adds the
/// meta-gradient every obj_func_update_delay iterations and the server's Adam step) of K agents run as ONE batched
/// group against the same K agents as K groups of one, side by side in one process, each through the whole engine
/// (Population.Run on Akka.NET actors, Pendulum-v1 with 50-step episodes, no random-exploration phase so every step
/// runs the policy). The cores are split over the groups (cores / groups torch threads each, at least 1).
/// Sizes: small (hidden 64, 16 windows) and paper (hidden 350, 100 windows). Also prints the analytic matmul FLOPs
/// per agent-step, from which a GPU projection follows.
/// </summary>
public static class PopulationBench
{
    public static IEnumerable<string> Run(string[] args)
    {
        var ks = (BenchArgs.Get(args, "--agents") ?? "1,4,16,64").Split(',').Select(int.Parse).ToArray();
        var sizes = (BenchArgs.Get(args, "--sizes") ?? "small,paper").Split(',');
        var modes = (BenchArgs.Get(args, "--modes") ?? "train,meta-train").Split(',');
        long smallSteps = (long)BenchArgs.GetDouble(args, "--steps", 200);
        long paperSteps = (long)BenchArgs.GetDouble(args, "--paper-steps", 100);
        if (Math.Min(smallSteps, paperSteps) < 2 * Episode) throw new ArgumentException($"--steps and --paper-steps: at least {2 * Episode}");
        int paperMaxK = (int)BenchArgs.GetDouble(args, "--paper-max-agents", 16);
        foreach (var size in sizes)
            foreach (var mode in modes)
                foreach (int k in ks)
                {
                    bool paper = size == "paper";
                    if (paper && k > paperMaxK) continue;
                    if (mode == "meta-train" && k < 2) continue;   // a population of one trains no objective
                    long steps = paper ? paperSteps : smallSteps;
                    var cfg = Config(paper, steps);
                    double one = Measure(cfg, mode, k, groupSize: 0, steps);
                    double many = Measure(cfg, mode, k, groupSize: 1, steps);
                    yield return new JsonObject
                    {
                        ["workload"] = "population", ["size"] = size, ["mode"] = mode, ["agents"] = k,
                        ["group_size"] = k, ["hidden"] = cfg.PolicyUnits, ["windows"] = cfg.BufferSampleSize,
                        ["agent_steps_per_s"] = Math.Round(one, 1),
                        ["groups_of_one_agent_steps_per_s"] = Math.Round(many, 1),
                        ["speedup"] = Math.Round(one / many, 2),
                        ["steps_per_agent"] = steps, ["cores"] = Environment.ProcessorCount,
                        ["mflop_per_agent_step"] = Math.Round(FlopsPerAgentStep(cfg, mode == "meta-train") / 1e6, 1),
                    }.ToJsonString();
                }
    }

    static RunConfig Config(bool paper, long steps) => RunConfig.Default
        .With("policy_units", paper ? "350" : "64").With("critic_units", paper ? "350" : "64")
        .With("buffer_sample_size", paper ? "100" : "16").With("max_episode_length", "50")
        .With("policy_random_exploration_steps", "0").With("steps", "1").With("timesteps_total", steps.ToString())
        .With("buffer_size", "20000").With("obj_func_anneal_steps", "0");

    /// <summary>Steady-state agent-steps/s of K agents as groups of <paramref name="groupSize"/> (0: one group): from the
    /// end of the first collect (every agent at step 50, one episode) to the end of the last collect (step S), i.e.
    /// S − 50 env steps per agent with exactly their S − 50 update iterations; startup and the first collect, which
    /// has no updates yet, are left out.</summary>
    static double Measure(RunConfig cfg, string mode, int k, int groupSize, long steps)
    {
        var algorithm = mode == "meta-train" ? Algorithm.MetaTrain : Algorithm.Td3;
        var run = AgentGroup.EffectiveConfig(cfg.With("agent_count", k.ToString()), algorithm);
        var groups = Grouping.Partition(Enumerable.Repeat("Pendulum-v1", k).ToArray(), groupSize);
        var options = new PopulationOptions
        {
            AgentCount = k, Groups = groups, TimestepsTotal = steps, Steps = 1,
            Mode = algorithm == Algorithm.MetaTrain ? ScheduleMode.Sync : ScheduleMode.Independent,
            ObjFuncUpdateDelay = run.ObjFuncUpdateDelay, PolicyUpdateDelay = run.PolicyUpdateDelay,
            CheckpointAtEnd = false, TorchThreadsPerGroup = Math.Max(1, Environment.ProcessorCount / groups.Length),
        };
        var marks = new Marks(Episode, steps);
        Population.Run(options,
            spec => new AgentGroup(run, "Pendulum-v1", spec.Agents, spec.Agents.Select(i => (long)i).ToArray(), "cpu", algorithm),
            _ => { }, marks);
        return k * (steps - Episode) / (marks.End - marks.Start);
    }

    const long Episode = 50;

    /// <summary>Times at which the population's progress (the slowest agent's env steps) reached two values.</summary>
    sealed class Marks(long first, long last) : IProgress<long>
    {
        readonly Stopwatch _clock = Stopwatch.StartNew();
        public double Start { get; private set; } = double.NaN;
        public double End { get; private set; } = double.NaN;
        public void Report(long value)
        {
            if (value >= first && double.IsNaN(Start)) Start = _clock.Elapsed.TotalSeconds;
            if (value >= last && double.IsNaN(End)) End = _clock.Elapsed.TotalSeconds;
        }
    }

    /// <summary>Analytic matmul FLOPs of one agent-step under the official schedule (one update iteration per env
    /// step: a critic step every iteration, a policy step every policy_update_delay-th, and with meta-training a
    /// meta-gradient every obj_func_update_delay-th), counting 2·in·out per row of a dense layer forward and 2× that
    /// for its backward; the meta-gradient's double backward counted as 3 backwards. The acting forward is included.</summary>
    public static double FlopsPerAgentStep(RunConfig c, bool metaTrain)
    {
        const int obs = 3, act = 1;   // Pendulum-v1
        double Mlp(int inp, int units, int depth, int outp) =>
            2.0 * (inp * units + (depth - 2) * units * units + units * outp);
        double n = c.BufferSampleSize * c.RecurrentTimeSteps;
        double pi = Mlp(obs, c.PolicyUnits, c.PolicyDepth, act), q = Mlp(obs + act, c.CriticUnits, c.CriticDepth, 1);
        double critic = n * (pi + 2 * q) + n * 2 * q * 3;                   // targets forward; twin critics fwd + bwd
        double policy = n * (pi + q) * 3 / c.PolicyUpdateDelay;              // π and Q1 forward + backward
        double acting = pi;
        double meta = 0;
        if (metaTrain)
        {
            // per row: the LSTM cell over [z, h] plus the action and reward/value nets (2 hidden layers each)
            int h = c.ObjFuncLstmUnits, u = c.ObjFuncInputTransformUnits, z = u + c.ObjFuncInputTransformOutUnits;
            double objective = 2.0 * 4 * h * (z + h) + 2.0 * 2 * u * u * (act + 1);
            double rows = 2 * n;                                              // (S+1)·B·T rows, S = 1
            // inner step on half the rows: forward, backward and the double backward (≈ 4 passes); outer value on
            // all rows: π' and Q forward and backward to α (≈ 3 passes)
            meta = (rows / 2 * (pi + q + objective) * 4 + rows * (pi + q) * 3) / c.ObjFuncUpdateDelay;
        }
        return critic + policy + acting + meta;
    }
}
