using System.Diagnostics;
using System.Text.Json.Nodes;
using MetaGenRL.Core.Agents;
using MetaGenRL.Core.Config;
using MetaGenRL.Core.Torch;
using TorchSharp;

namespace MetaGenRL.Bench;

/// <summary>
/// group-update: where one TD3 update iteration of a group of K agents spends its time, per part (replay sampling
/// and stacking, critic step, policy step with the Polyak update), with Pendulum shapes (obs 3, act 1), T = 20,
/// replays filled with synthetic episodes. Medians after a warm-up; <c>--agents 1,4,16,64 --sizes small,paper
/// --threads N --reps R</c>.
/// </summary>
public static class GroupUpdateBench
{
    const int Obs = 3, Act = 1;

    public static IEnumerable<string> Run(string[] args)
    {
        AllocatorTuning.Apply();
        var ks = (BenchArgs.Get(args, "--agents") ?? "1,4,16,64").Split(',').Select(int.Parse).ToArray();
        var sizes = (BenchArgs.Get(args, "--sizes") ?? "small,paper").Split(',');
        int threads = (int)BenchArgs.GetDouble(args, "--threads", Environment.ProcessorCount);
        int reps = (int)BenchArgs.GetDouble(args, "--reps", 20);
        TorchThreads.Use(threads);
        foreach (var size in sizes)
            foreach (int k in ks)
            {
                bool paper = size == "paper";
                var cfg = RunConfig.Default
                    .With("policy_units", paper ? "350" : "64").With("critic_units", paper ? "350" : "64")
                    .With("buffer_sample_size", paper ? "100" : "16").With("buffer_size", "20000");
                foreach (var kv in (BenchArgs.Get(args, "--set") ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries))
                    cfg = cfg.With(kv.Split('=')[0], kv.Split('=')[1]);
                float[] low = [-2f], high = [2f];
                using var g = new Td3Group(cfg, Obs, low, high, Enumerable.Range(0, k).Select(i => (long)i).ToList(), torch.CPU);
                foreach (var rb in g.Replay) BenchData.FillReplay(rb, Obs, Act, episodes: 20, length: 200);
                var on = Enumerable.Repeat(true, k).ToArray();
                for (int j = 0; j < 3; j++) g.Update(j, on);
                var (sample, critic, policy) = (new double[reps], new double[reps], new double[reps]);
                var sw = new Stopwatch();
                for (int r = 0; r < reps; r++)
                {
                    sw.Restart();
                    using (torch.NewDisposeScope()) g.SampleTensors(on, cfg.BufferSampleSize);
                    sample[r] = sw.Elapsed.TotalMilliseconds;
                    sw.Restart(); g.CriticStep(on); critic[r] = sw.Elapsed.TotalMilliseconds;
                    sw.Restart(); g.PolicyStep(on); g.UpdateTargets(on); policy[r] = sw.Elapsed.TotalMilliseconds;
                }
                double c = Median(critic), p = Median(policy);
                double perUpdate = c + p / cfg.PolicyUpdateDelay;
                yield return new JsonObject
                {
                    ["workload"] = "group-update", ["size"] = size, ["agents"] = k, ["threads"] = threads,
                    ["ms_per_update"] = Math.Round(perUpdate, 3), ["ms_per_agent_update"] = Math.Round(perUpdate / k, 3),
                    ["sample_ms"] = Math.Round(Median(sample), 3), ["critic_ms"] = Math.Round(c, 3), ["policy_ms"] = Math.Round(p, 3),
                }.ToJsonString();
            }
    }

    static double Median(double[] xs)
    {
        var s = xs.OrderBy(x => x).ToArray();
        return s[s.Length / 2];
    }
}
