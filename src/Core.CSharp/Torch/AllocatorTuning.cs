using System.Runtime.InteropServices;

namespace MetaGenRL.Core.Torch;

/// <summary>
/// glibc malloc settings for training processes. libtorch allocates every tensor with malloc; tensors of a few MB
/// (a 2000 × 350 float activation is 2.8 MB) exceed glibc's mmap threshold, so each one is a fresh mmap whose pages
/// fault in on first touch and are unmapped at dispose. A dispose scope frees a whole update's tensors at once, which
/// also lets glibc trim the heap. Raising the mmap threshold to its maximum (32 MB) and disabling trimming makes these
/// blocks come from a reused heap instead: measured −20 to −30 % on the paper-size update cycle. Process-wide and
/// idempotent; a no-op off glibc.
/// </summary>
public static class AllocatorTuning
{
    const int M_TRIM_THRESHOLD = -1, M_MMAP_THRESHOLD = -3;
    static int _applied;

    [DllImport("libc", EntryPoint = "mallopt")]
    static extern int MallOpt(int param, int value);

    /// <summary>Applies the settings once per process; returns whether glibc accepted them.</summary>
    public static bool Apply()
    {
        if (Interlocked.Exchange(ref _applied, 1) == 1 || !OperatingSystem.IsLinux()) return false;
        try
        {
            bool ok = MallOpt(M_MMAP_THRESHOLD, 32 * 1024 * 1024) == 1;
            ok &= MallOpt(M_TRIM_THRESHOLD, int.MaxValue) == 1;
            return ok;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return false; }
    }
}
