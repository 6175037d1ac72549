namespace MetaGenRL.Core.Engine;

/// <summary>
/// The action box the agent sees and the map to the env's own box (config key <c>normalize_actions</c>). Normalised,
/// the agent acts in [−1, 1] on every dim and an action a reaches the env as low + (a + 1)·(high − low)/2; an env
/// whose box is already ±1 (every env of the paper) gets the agent's actions unchanged, bit for bit. Not normalised,
/// the agent acts in the env's box directly (the official code). Replay, L_α's inputs, exploration noise and target
/// smoothing all live in the agent's box.
/// </summary>
public sealed class ActionScaling
{
    readonly float[] _low, _high;

    /// <summary>Lower bounds of the agent's box.</summary>
    public float[] AgentLow { get; }
    /// <summary>Upper bounds of the agent's box.</summary>
    public float[] AgentHigh { get; }
    /// <summary>Whether actions are rescaled on their way to the env.</summary>
    public bool Rescales { get; }

    /// <param name="envLow">[act] the env's lower bounds</param>
    /// <param name="envHigh">[act] the env's upper bounds</param>
    /// <param name="normalize">normalize_actions</param>
    public ActionScaling(float[] envLow, float[] envHigh, bool normalize)
    {
        if (envLow.Length != envHigh.Length) throw new ArgumentException($"action bounds have lengths {envLow.Length} and {envHigh.Length}");
        for (int i = 0; i < envLow.Length; i++)
            if (!(float.IsFinite(envLow[i]) && float.IsFinite(envHigh[i]) && envLow[i] < envHigh[i]))
                throw new ArgumentException($"action dim {i}: bounds [{envLow[i]}, {envHigh[i]}] are not a finite, non-empty interval");
        _low = (float[])envLow.Clone(); _high = (float[])envHigh.Clone();
        bool unit = envLow.All(l => l == -1f) && envHigh.All(h => h == 1f);
        Rescales = normalize && !unit;
        AgentLow = Rescales ? Enumerable.Repeat(-1f, envLow.Length).ToArray() : (float[])envLow.Clone();
        AgentHigh = Rescales ? Enumerable.Repeat(1f, envHigh.Length).ToArray() : (float[])envHigh.Clone();
    }

    /// <summary>Mean over dims of |a| measured in the agent's box: 0 at its centre, 1 on its faces (a saturated action).</summary>
    public double Extremity(float[] a)
    {
        double sum = 0;
        for (int i = 0; i < a.Length; i++)
            sum += Math.Abs((2.0 * a[i] - AgentHigh[i] - AgentLow[i]) / (AgentHigh[i] - AgentLow[i]));
        return sum / a.Length;
    }

    /// <summary>The env's action for the agent's action <paramref name="a"/> (the same array when nothing is rescaled).</summary>
    public float[] ToEnv(float[] a)
    {
        if (!Rescales) return a;
        var e = new float[a.Length];
        for (int i = 0; i < a.Length; i++)
            e[i] = (float)(_low[i] + (a[i] + 1.0) * 0.5 * (_high[i] - _low[i]));
        return e;
    }
}
