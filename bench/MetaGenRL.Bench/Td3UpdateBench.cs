using System.Diagnostics;
using System.Text.Json;
using MetaGenRL.Core;
using MetaGenRL.Core.Agents;
using MetaGenRL.Core.Config;
using MetaGenRL.Core.Torch;
using TorchSharp;

namespace MetaGenRL.Bench;

/// <summary>
/// td3-update: wall time of one TD3 update iteration as the official schedule runs it — one critic step plus half
/// a policy step and half a Polyak target update (policy_update_delay 2) — with HalfCheetah shapes (obs 17, act 6),
/// T = 20 windows sampled from a filled trajectory replay. Sampling and host→device copies are included.
/// Sizes: paper (hidden 350, 100 windows) and small (hidden 64, 16 windows); <c>--hidden H --batch B</c> picks one.
/// <c>--device cpu|cuda</c>, <c>--reps N</c> optional. Figures are medians after a warm-up.
/// </summary>
public static class Td3UpdateBench
{
    const int Obs = 17, Act = 6, T = 20;

    /// <summary>Runs the td3-update workload and returns one JSON object per line.</summary>
    public static IEnumerable<string> Run(string[] args)
    {
        Native.EnsureLoaded();
        // As every trainer does (and update-cycle unless --no-malloc-tuning): large tensors from a reused heap.
        bool tuned = !args.Contains("--no-malloc-tuning") && MetaGenRL.Core.Torch.AllocatorTuning.Apply();
        int? hidden = IntArg(args, "--hidden"), batch = IntArg(args, "--batch"), reps = IntArg(args, "--reps");
        string deviceName = StrArg(args, "--device") ?? "cpu";
        var device = Devices.Resolve(deviceName);
        var sizes = new List<(int Hidden, int Batch)>();
        if (hidden != null || batch != null) sizes.Add((hidden ?? 350, batch ?? 100));
        else { sizes.Add((350, 100)); sizes.Add((64, 16)); }
        foreach (var (h, b) in sizes)
            yield return Measure(h, b, device, deviceName, reps ?? (h >= 256 ? 30 : 100), tuned);
    }

    static string Measure(int hidden, int batch, torch.Device device, string deviceName, int reps, bool tuned)
    {
        var cfg = RunConfig.Default
            .With("policy_units", hidden.ToString()).With("critic_units", hidden.ToString())
            .With("buffer_sample_size", batch.ToString()).With("buffer_size", "30000");
        float[] low = Enumerable.Repeat(-1f, Act).ToArray(), high = Enumerable.Repeat(1f, Act).ToArray();
        using var agent = new Td3Group(cfg, Obs, low, high, [0L], device);
        BenchData.FillReplay(agent.Replay[0], Obs, Act, episodes: 25, length: 1000);
        bool[] on = [true];

        int warm = Math.Max(3, reps / 10);
        for (int j = 0; j < warm; j++) { agent.CriticStep(on); agent.PolicyStep(on); agent.UpdateTargets(on); }
        var critic = new double[reps];
        var policy = new double[reps];
        var sample = new double[reps];
        var rng = new Random(1);
        var sw = new Stopwatch();
        for (int r = 0; r < reps; r++)
        {
            sw.Restart();
            agent.CriticStep(on);
            Sync(device);
            critic[r] = sw.Elapsed.TotalMilliseconds;
            sw.Restart();
            agent.PolicyStep(on);
            agent.UpdateTargets(on);
            Sync(device);
            policy[r] = sw.Elapsed.TotalMilliseconds;
            sw.Restart();
            agent.Replay[0].Sample(batch, T, rng);
            sample[r] = sw.Elapsed.TotalMilliseconds;
        }
        double c = Median(critic), p = Median(policy);
        return JsonSerializer.Serialize(new
        {
            workload = "td3-update",
            hidden,
            batch,
            T,
            obs = Obs,
            act = Act,
            device = deviceName,
            threads = torch.get_num_threads(),
            malloc_tuning = tuned,
            reps,
            ms_per_update = Math.Round(c + p / cfg.PolicyUpdateDelay, 3),
            critic_ms = Math.Round(c, 3),
            policy_ms = Math.Round(p, 3),
            sample_ms = Math.Round(Median(sample), 3),
        });
    }


    static void Sync(torch.Device d)
    {
        if (d.type == DeviceType.CUDA) torch.cuda.synchronize(d);
    }

    static double Median(double[] xs)
    {
        var s = xs.OrderBy(x => x).ToArray();
        return s.Length % 2 == 1 ? s[s.Length / 2] : 0.5 * (s[s.Length / 2 - 1] + s[s.Length / 2]);
    }

    static string? StrArg(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }

    static int? IntArg(string[] args, string name)
    {
        var s = StrArg(args, name);
        if (s == null) return null;
        return int.TryParse(s, out var v) && v > 0 ? v : throw new ArgumentException($"{name}: expected a positive integer, got '{s}'");
    }
}
