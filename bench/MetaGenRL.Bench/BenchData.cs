using MetaGenRL.Core.Agents;

namespace MetaGenRL.Bench;

/// <summary>Synthetic replay contents for the update benchmarks (the data's values do not affect the cost).</summary>
public static class BenchData
{
    /// <summary>Fills <paramref name="rb"/> with <paramref name="episodes"/> episodes of <paramref name="length"/>
    /// uniform random transitions, each ending in a truncation.</summary>
    public static void FillReplay(TrajectoryReplay rb, int obs, int act, int episodes, int length)
    {
        var rng = new Random(123);
        float[] o = new float[obs], o2 = new float[obs], a = new float[act];
        for (int e = 0; e < episodes; e++)
            for (int t = 0; t < length; t++)
            {
                for (int i = 0; i < obs; i++) { o[i] = (float)rng.NextDouble(); o2[i] = (float)rng.NextDouble(); }
                for (int i = 0; i < act; i++) a[i] = (float)(2 * rng.NextDouble() - 1);
                bool last = t == length - 1;
                rb.Add(o, a, rng.NextDouble(), o2, false, last, last);
            }
    }
}
