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
