using TorchSharp;

namespace MetaGenRL.Core.Torch;

/// <summary>The one place that turns a user's device choice into a TorchSharp device.</summary>
public static class Devices
{
    /// <summary>Resolves "cpu", "cuda" or "cuda:N". Throws <see cref="ArgumentException"/> naming the value
    /// when it is unknown or when CUDA is asked for but not available in this build/machine.</summary>
    public static torch.Device Resolve(string name)
    {
        Native.EnsureLoaded();
        string n = (name ?? "").Trim().ToLowerInvariant();
        if (n == "cpu") return torch.CPU;
        if (n == "cuda" || n.StartsWith("cuda:"))
        {
            if (!torch.cuda.is_available())
                throw new ArgumentException(
                    $"device '{name}': CUDA is not available (this build uses the {BuildBackend} libtorch package" +
                    (BuildBackend == "cpu" ? "; rebuild with: dotnet build -c Release -p:TorchBackend=cuda" : "; no CUDA device was found") + ")");
            int index = n == "cuda" ? 0 : int.TryParse(n[5..], out var i) && i >= 0 ? i
                : throw new ArgumentException($"device '{name}': expected cuda:N with N a non-negative integer");
            if (index >= torch.cuda.device_count())
                throw new ArgumentException($"device '{name}': only {torch.cuda.device_count()} CUDA device(s) present");
            return torch.device(DeviceType.CUDA, index);
        }
        throw new ArgumentException($"device '{name}': expected cpu, cuda or cuda:N");
    }

    /// <summary>"cpu" or "cuda": the libtorch package this assembly was built against.</summary>
    public static string BuildBackend =>
        AppDomain.CurrentDomain.GetAssemblies().Any(a => a.GetName().Name?.Contains("cuda", StringComparison.OrdinalIgnoreCase) == true)
            || File.Exists(Path.Combine(Native.AssemblyDir, "runtimes", "linux-x64", "native", "libtorch_cuda.so"))
            ? "cuda" : "cpu";
}

/// <summary>The one place that sets libtorch's intra-op thread count. libtorch also resizes process-wide pools
/// (MKL, pthreadpool) when it changes, so a change is made only when the calling thread's count differs, and never
/// by two threads at once.</summary>
public static class TorchThreads
{
    static readonly object Gate = new();

    /// <summary>Sets the calling thread's intra-op thread count to <paramref name="threads"/> (≥ 1) if it differs.</summary>
    public static void Use(int threads)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        lock (Gate)
            if (torch.get_num_threads() != threads) torch.set_num_threads(threads);
    }
}
