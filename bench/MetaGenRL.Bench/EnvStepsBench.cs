using System.Diagnostics;
using System.Text.Json.Nodes;
using MetaGenRL.Core.Envs;

namespace MetaGenRL.Bench;

/// <summary>env-steps: environment steps per second with uniform random actions (resets included), and for
/// MuJoCo envs the raw mj_step rate timed inside the same loop, on exactly the states the env visited, so the
/// wrapper's cost over frame_skip × mj_step is visible.</summary>
public static class EnvStepsBench
{
    public static IEnumerable<string> Run(string[] args)
    {
        double seconds = BenchArgs.GetDouble(args, "--seconds", 1.0);
        var ids = BenchArgs.Get(args, "--env") is { } one ? new[] { one } : EnvRegistry.Ids.ToArray();
        foreach (var id in ids)
        {
            using var env = EnvRegistry.Make(id, 0);
            var mj = env as MuJoCoEnv;
            var actions = RandomActions(env, 256);
            long steps = 0, resetTicks = 0;
            void Loop(long n)
            {
                for (long i = 0; i < n; i++)
                    if (env.Step(actions[(steps + i) & 255]).Done)
                    {
                        long t0 = Stopwatch.GetTimestamp();
                        env.Reset();
                        resetTicks += Stopwatch.GetTimestamp() - t0;
                    }
                steps += n;
            }
            env.Reset();
            Loop(1000); // warm-up
            steps = 0;
            resetTicks = 0;
            long physSteps0 = mj?.PhysicsSteps ?? 0;
            double physSec0 = mj?.PhysicsSeconds ?? 0;
            var sw = Stopwatch.StartNew();
            while (sw.Elapsed.TotalSeconds < seconds) Loop(500);
            double wall = sw.Elapsed.TotalSeconds;
            double? physSec = mj is null ? null : mj.PhysicsSeconds - physSec0;
            double resetSec = resetTicks / (double)Stopwatch.Frequency;
            var o = new JsonObject
            {
                ["workload"] = "env-steps",
                ["env"] = id,
                ["env_steps_per_s"] = Math.Round(steps / wall),
                ["frame_skip"] = mj?.FrameSkip,
                ["raw_physics_steps_per_s"] = physSec is null ? null : Math.Round((mj!.PhysicsSteps - physSteps0) / physSec.Value),
                // Time outside mj_step (observation, reward, resets, P/Invoke) as a fraction of the time inside it.
                ["wrapper_overhead"] = physSec is null ? null : Math.Round(wall / physSec.Value - 1.0, 4),
                // The same without resets: what each Step costs beyond its frame_skip mj_steps.
                ["step_overhead"] = physSec is null ? null : Math.Round((wall - resetSec) / physSec.Value - 1.0, 4),
                ["reset_share"] = Math.Round(resetSec / wall, 4),
            };
            yield return o.ToJsonString();
        }
    }

    /// <summary>Pre-drawn uniform actions keep RNG cost out of the timed loop.</summary>
    static float[][] RandomActions(IEnv env, int count)
    {
        var rng = new Random(1);
        var actions = new float[count][];
        for (int i = 0; i < count; i++)
        {
            actions[i] = new float[env.ActionSize];
            for (int k = 0; k < env.ActionSize; k++)
                actions[i][k] = (float)(env.ActionLow[k] + (env.ActionHigh[k] - env.ActionLow[k]) * rng.NextDouble());
        }
        return actions;
    }
}
