using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using MetaGenRL.Core;
using MetaGenRL.Core.Agents;
using MetaGenRL.Core.Config;
using MetaGenRL.Core.Objective;
using MetaGenRL.Core.Torch;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaGenRL.Bench;

/// <summary>
/// update-cycle: one MetaGenRL agent update cycle as /work/shared/bench/pytorch_reference.py defines it — 2 critic
/// updates + 1 policy update through L_α (with its Polyak target update) + 1 second-order meta-gradient with an
/// Adam step on α — with HalfCheetah shapes (obs 17, act 6), T = 20. Sizes: paper (hidden 350, 100 windows) and
/// small (hidden 64, 16 windows); <c>--hidden H --batch B</c> picks one. Unlike the reference (random tensors), every
/// step samples its own batch from a filled trajectory replay and copies it to a tensor, as training does.
/// The PyTorch reference runs in the same process run, alternating with ours (<c>--rounds N</c>, default 2); each
/// side reports the best of its per-round medians. <c>--pytorch PATH</c> names the script (default:
/// ../shared/bench/pytorch_reference.py above the repository), run with /usr/bin/python3; skipped with a note
/// when either is absent (<c>--no-pytorch</c> skips it). <c>--reps N</c>, <c>--threads N</c> optional. Our side runs with
/// <see cref="MetaGenRL.Core.Torch.AllocatorTuning"/> as training does (<c>--no-malloc-tuning</c> turns it off).
/// </summary>
public static class UpdateCycleBench
{
    const int Obs = 17, Act = 6, T = 20;

    /// <summary>Runs the update-cycle workload and returns one JSON object per line.</summary>
    public static IEnumerable<string> Run(string[] args)
    {
        Native.EnsureLoaded();
        bool tuned = !args.Contains("--no-malloc-tuning") && MetaGenRL.Core.Torch.AllocatorTuning.Apply();
        int? hidden = Int(args, "--hidden"), batch = Int(args, "--batch"), reps = Int(args, "--reps");
        int rounds = Int(args, "--rounds") ?? 2;
        int threads = Int(args, "--threads") ?? 2;
        torch.set_num_threads(threads);
        var sizes = new List<(int Hidden, int Batch)>();
        if (hidden != null || batch != null) sizes.Add((hidden ?? 350, batch ?? 100));
        else { sizes.Add((350, 100)); sizes.Add((64, 16)); }
        string? script = args.Contains("--no-pytorch") ? null : FindScript(BenchArgs.Get(args, "--pytorch"));
        string? note = args.Contains("--no-pytorch") ? "pytorch reference skipped (--no-pytorch)"
            : script is null ? "pytorch reference not found (pass --pytorch PATH)"
            : !File.Exists("/usr/bin/python3") ? "/usr/bin/python3 not found" : null;
        if (note != null) script = null;

        foreach (var (h, b) in sizes)
        {
            int n = reps ?? (h >= 256 ? 8 : 30);
            Parts? best = null;
            PyParts? py = null;
            string? pyNote = note;
            for (int r = 0; r < rounds; r++)
            {
                var ours = Measure(h, b, n);
                best = best is null || ours.Cycle < best.Cycle ? ours : best;
                if (script != null)
                {
                    var p = RunPyTorch(script, threads, Math.Max(3, n / 2), h, b, out var err);
                    if (p is null) { pyNote = err; script = null; }
                    else py = py is null || p.Cycle < py.Cycle ? p : py;
                }
            }
            yield return JsonSerializer.Serialize(new
            {
                workload = "update-cycle",
                hidden = h,
                batch = b,
                T,
                obs = Obs,
                act = Act,
                threads,
                malloc_tuning = tuned,
                reps = n,
                rounds,
                cycle_ms = Math.Round(best!.Cycle, 2),
                critic_ms = Math.Round(best.Critic, 2),
                policy_ms = Math.Round(best.Policy, 2),
                objective_ms = Math.Round(best.Objective, 2),
                pytorch_cycle_ms = py is null ? (double?)null : Math.Round(py.Cycle, 2),
                pytorch_critic_ms = py?.Critic,
                pytorch_policy_ms = py?.Policy,
                pytorch_objective_ms = py?.Objective,
                ratio = py is null ? (double?)null : Math.Round(best.Cycle / py.Cycle, 3),
                note = pyNote,
            });
        }
    }

    sealed record Parts(double Cycle, double Critic, double Policy, double Objective);
    sealed record PyParts(double Cycle, double Critic, double Policy, double Objective);

    // ── OURS ──

    static Parts Measure(int hidden, int batch, int reps)
    {
        var cfg = RunConfig.Default
            .With("policy_units", hidden.ToString()).With("critic_units", hidden.ToString())
            .With("buffer_sample_size", batch.ToString()).With("buffer_size", "30000");
        float[] low = Enumerable.Repeat(-1f, Act).ToArray(), high = Enumerable.Repeat(1f, Act).ToArray();
        using var agent = new Td3Group(cfg, Obs, low, high, [0L], torch.CPU);
        var spec = ObjectiveSpec.FromConfig(cfg);
        using var gen = new Generator(7, torch.CPU);
        var alpha = ObjectiveNetwork.Init(spec, [gen], torch.CPU);
        // the server's copy of α is one flat vector (it receives and averages flat gradients)
        var serverAlpha = torch.tensor(ObjectiveNetwork.Flatten(alpha, 0)).unsqueeze(0);
        using var alphaOpt = new TfAdam([serverAlpha], cfg.ObjFuncLearningRate);
        agent.Objective = new LearnedObjective(spec, alpha, annealSteps: 0, cfg.PaperQuirks);
        var inner = InnerStepOptions.FromConfig(cfg) with { Diagnostics = false };   // as agent groups run 9 of 10
        BenchData.FillReplay(agent.Replay[0], Obs, Act, episodes: 25, length: 1000);
        bool[] on = [true];

        void Objective()
        {
            using var scope = torch.NewDisposeScope();
            var bt = agent.SampleTensors(on, (inner.Steps + 1) * batch);
            var g = FuturePolicyValue.Compute(agent, spec, alpha, bt, inner)[0];   // clipped, flattened (as groups send it)
            alphaOpt.Step([torch.tensor(g.Gradient).unsqueeze(0)]);                // the server's Adam step
            ObjectiveNetwork.Load(alpha, serverAlpha.data<float>().ToArray());     // the group loads the new α
        }
        void Policy() { agent.PolicyStep(on); agent.UpdateTargets(on); }

        for (int w = 0; w < 2; w++) { agent.CriticStep(on); agent.CriticStep(on); Policy(); Objective(); }
        var cycle = new double[reps];
        var critic = new double[reps];
        var policy = new double[reps];
        var objective = new double[reps];
        var sw = new Stopwatch();
        for (int r = 0; r < reps; r++)
        {
            var all = Stopwatch.StartNew();
            sw.Restart(); agent.CriticStep(on); agent.CriticStep(on); critic[r] = sw.Elapsed.TotalMilliseconds / 2;
            sw.Restart(); Policy(); policy[r] = sw.Elapsed.TotalMilliseconds;
            sw.Restart(); Objective(); objective[r] = sw.Elapsed.TotalMilliseconds;
            cycle[r] = all.Elapsed.TotalMilliseconds;
        }
        foreach (var a in alpha) a.Dispose();
        return new Parts(Median(cycle), Median(critic), Median(policy), Median(objective));
    }


    // ── PYTORCH REFERENCE ──

    static string? FindScript(string? given)
    {
        if (given != null) return File.Exists(given) ? Path.GetFullPath(given) : null;
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "MetaGenRL.slnx")))
            {
                foreach (var rel in new[] { "../shared/bench/pytorch_reference.py", "../../shared/bench/pytorch_reference.py" })
                {
                    var p = Path.GetFullPath(Path.Combine(d.FullName, rel));
                    if (File.Exists(p)) return p;
                }
                return null;
            }
        return null;
    }

    static PyParts? RunPyTorch(string script, int threads, int cycles, int hidden, int batch, out string? error)
    {
        error = null;
        var psi = new ProcessStartInfo("/usr/bin/python3")
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        foreach (var a in new[] { script, threads.ToString(), cycles.ToString(), hidden.ToString(), batch.ToString() }) psi.ArgumentList.Add(a);
        psi.Environment["OMP_NUM_THREADS"] = threads.ToString();
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        string output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        var m = Regex.Match(output, @"cycle_ms_median ([\d.]+) critic_ms ([\d.]+) policy_ms ([\d.]+) objective_ms ([\d.]+)");
        if (p.ExitCode != 0 || !m.Success)
        {
            error = $"pytorch reference failed (rc {p.ExitCode}): {(stderr.Result + output).Trim().Split('\n').LastOrDefault()}";
            return null;
        }
        double D(int i) => double.Parse(m.Groups[i].Value, CultureInfo.InvariantCulture);
        return new PyParts(D(1), D(2), D(3), D(4));
    }

    // ── HELPERS ──

    static double Median(double[] xs)
    {
        var s = xs.OrderBy(x => x).ToArray();
        return s.Length % 2 == 1 ? s[s.Length / 2] : 0.5 * (s[s.Length / 2 - 1] + s[s.Length / 2]);
    }

    static int? Int(string[] args, string name)
    {
        var s = BenchArgs.Get(args, name);
        if (s == null) return null;
        return int.TryParse(s, out var v) && v > 0 ? v : throw new ArgumentException($"{name}: expected a positive integer, got '{s}'");
    }
}
