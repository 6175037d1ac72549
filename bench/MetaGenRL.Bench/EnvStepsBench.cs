using System.Diagnostics;
using System.Text.Json.Nodes;
using MetaGenRL.Core.Envs;

namespace MetaGenRL.Bench;

/// <summary>env-steps: environment steps per second with uniform random actions (resets included), and for
/// MuJoCo envs the raw mj_step rate, so the wrapper's cost over frame_skip × mj_step is visible.</summary>
public static class EnvStepsBench
{
    public static IEnumerable<string> Run(string[] args)
    {
        double seconds = BenchArgs.GetDouble(args, "--seconds", 1.0);
        var ids = BenchArgs.Get(args, "--env") is { } one ? new[] { one } : EnvRegistry.Ids.ToArray();
        foreach (var id in ids)
        {
            using var env = EnvRegistry.Make(id, 0);
            double rate = Measure(env, seconds);
            int? frameSkip = env.GetType().GetProperty("FrameSkip")?.GetValue(env) as int?;
            double? raw = frameSkip is null ? null : MuJoCoEnvs.MeasureRawStepRate(id, seconds);
            var o = new JsonObject
            {
                ["workload"] = "env-steps",
                ["env"] = id,
                ["env_steps_per_s"] = Math.Round(rate),
                ["frame_skip"] = frameSkip,
                ["raw_physics_steps_per_s"] = raw is null ? null : Math.Round(raw.Value),
                // > 0: the wrapper costs this fraction on top of frame_skip raw steps.
                ["wrapper_overhead"] = raw is null ? null : Math.Round(raw.Value / frameSkip!.Value / rate - 1.0, 4),
            };
            yield return o.ToJsonString();
        }
    }

    static double Measure(IEnv env, double seconds)
    {
        var rng = new Random(1);
        // Pre-drawn actions keep RNG cost out of the timed loop.
        var actions = new float[256][];
        for (int i = 0; i < actions.Length; i++)
        {
            actions[i] = new float[env.ActionSize];
            for (int k = 0; k < env.ActionSize; k++)
                actions[i][k] = (float)(env.ActionLow[k] + (env.ActionHigh[k] - env.ActionLow[k]) * rng.NextDouble());
        }
        env.Reset();
        long steps = 0;
        void Loop(long n)
        {
            for (long i = 0; i < n; i++)
                if (env.Step(actions[(steps + i) & 255]).Done) env.Reset();
            steps += n;
        }
        Loop(1000); // warm-up
        steps = 0;
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed.TotalSeconds < seconds) Loop(500);
        return steps / sw.Elapsed.TotalSeconds;
    }
}
