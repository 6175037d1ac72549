namespace MetaGenRL.Bench;

/// <summary>Tiny option reader shared by the workloads: `--name value`.</summary>
public static class BenchArgs
{
    public static string? Get(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }

    public static double GetDouble(string[] args, string name, double fallback) =>
        Get(args, name) is { } s ? double.Parse(s, System.Globalization.CultureInfo.InvariantCulture) : fallback;
}
