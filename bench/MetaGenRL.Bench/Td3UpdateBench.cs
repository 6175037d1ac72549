namespace MetaGenRL.Bench;

// PLACEHOLDER: replaced by the real implementation.
public static class Td3UpdateBench
{
    /// <summary>Runs the td3-update workload and returns one JSON object per line.</summary>
    public static IEnumerable<string> Run(string[] args) => throw new NotImplementedException("td3-update");
}
