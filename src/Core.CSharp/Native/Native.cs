using System.Reflection;
using System.Runtime.InteropServices;

namespace MetaGenRL.Core;

/// <summary>
/// Makes TorchSharp's libtorch, MuJoCo and this project's native shims loadable from any host: the CLI, the
/// test runner, and a plain <c>dotnet fsi</c> script that references the built DLLs (fsi has no deps.json, so
/// nothing under <c>runtimes/</c> is probed). Call <see cref="EnsureLoaded"/> before the first <c>torch.*</c> call.
/// </summary>
public static class Native
{
    /// <summary>Library names used in this project's <c>[DllImport]</c>/<c>[LibraryImport]</c> declarations.</summary>
    public const string MuJoCo = "mujoco";
    public const string MuJoCoShim = "metagenrl_mujoco";
    public const string Box2DShim = "metagenrl_box2d";

    static readonly object Gate = new();
    static bool _loaded;
    static readonly Dictionary<string, IntPtr> Handles = new();

    /// <summary>Idempotent and thread-safe. Throws <see cref="DllNotFoundException"/> naming what is missing
    /// and how to install it.</summary>
    public static void EnsureLoaded()
    {
        lock (Gate)
        {
            if (_loaded) return;
            if (OperatingSystem.IsLinux()) LoadTorchLinux();
            TrySetResolver(typeof(Native).Assembly, ResolveOwn);
            _loaded = true;
        }
    }

    /// <summary>The folder holding <c>MetaGenRL.Core.dll</c> (models and native shims are copied there).</summary>
    public static string AssemblyDir => Path.GetDirectoryName(typeof(Native).Assembly.Location) ?? AppContext.BaseDirectory;

    // ── TORCH ──
    static void LoadTorchLinux()
    {
        string torchDir = Path.GetDirectoryName(typeof(TorchSharp.torch).Assembly.Location)!;
        string? libtorchDir = FindFirst(
            Path.Combine(torchDir, "runtimes", "linux-x64", "native"),
            // NuGet cache layout: <root>/torchsharp/<ver>/lib/net6.0/TorchSharp.dll
            Path.GetFullPath(Path.Combine(torchDir, "..", "..", "..", "..", "libtorch-cpu-linux-x64", "2.10.0", "runtimes", "linux-x64", "native")),
            Path.GetFullPath(Path.Combine(torchDir, "..", "..", "..", "..", "libtorch-cuda-12.8-linux-x64", "2.10.0", "runtimes", "linux-x64", "native")));
        string? sharpDir = FindFirst(
            Path.Combine(torchDir, "runtimes", "linux-x64", "native"),
            Path.GetFullPath(Path.Combine(torchDir, "..", "..", "runtimes", "linux-x64", "native")));

        if (libtorchDir is null || !File.Exists(Path.Combine(libtorchDir, "libtorch_cpu.so")))
        {
            // Let TorchSharp's own probing try (deps.json hosts); it reports its own error if that fails.
            return;
        }
        // Load by full path, so that a system libtorch (e.g. Debian's python3-torch) is never picked instead.
        foreach (var lib in new[] { "libgomp.so.1", "libc10.so", "libtorch_cpu.so", "libc10_cuda.so", "libtorch_cuda.so", "libtorch.so" })
        {
            string p = Path.Combine(libtorchDir, lib);
            if (File.Exists(p)) Handles[lib] = NativeLibrary.Load(p);
        }
        if (sharpDir is null) return;
        string sharp = Path.Combine(sharpDir, "libLibTorchSharp.so");
        if (!File.Exists(sharp)) return;
        IntPtr h;
        try { h = NativeLibrary.Load(sharp); }
        catch (DllNotFoundException e) when (e.Message.Contains("GLIBCXX_3.4.32"))
        {
            // The build patches this file; a stale or foreign copy gets a patched twin under /tmp.
            string dir = Path.Combine(Path.GetTempPath(), $"torchsharp-{typeof(TorchSharp.torch).Assembly.GetName().Version}-patched");
            Directory.CreateDirectory(dir);
            string patched = Path.Combine(dir, "libLibTorchSharp.so");
            if (!File.Exists(patched)) MetaGenRL.Build.ElfVersionPatch.WeakenFile(sharp, patched, "GLIBCXX_3.4.32");
            h = NativeLibrary.Load(patched);
        }
        Handles["LibTorchSharp"] = h;
        TrySetResolver(typeof(TorchSharp.torch).Assembly, (name, _, _) =>
            name is "LibTorchSharp" or "libLibTorchSharp" or "libLibTorchSharp.so" ? h : IntPtr.Zero);
    }

    // ── MUJOCO AND SHIMS ──
    static IntPtr ResolveOwn(string name, Assembly asm, DllImportSearchPath? path)
    {
        lock (Handles)
        {
            if (Handles.TryGetValue(name, out var cached)) return cached;
            IntPtr h = name switch
            {
                MuJoCo => LoadFirst(name, "libmujoco.so.2.2.2", "libmujoco.so"),
                MuJoCoShim or Box2DShim => LoadFirst(name, ShimCandidates(name)),
                _ => IntPtr.Zero,
            };
            if (h != IntPtr.Zero) Handles[name] = h;
            return h;
        }
    }

    static string[] ShimCandidates(string name)
    {
        string file = $"lib{name}.so";
        var c = new List<string> { Path.Combine(AssemblyDir, file), Path.Combine(AppContext.BaseDirectory, file) };
        // Running from a source checkout (fsi, tests): native/build beside the repository root.
        for (var d = new DirectoryInfo(AssemblyDir); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "native", "build", file))) { c.Add(Path.Combine(d.FullName, "native", "build", file)); break; }
        return c.ToArray();
    }

    static IntPtr LoadFirst(string name, params string[] candidates)
    {
        foreach (var c in candidates)
            if (NativeLibrary.TryLoad(c, out var h)) return h;
        string hint = name == MuJoCo
            ? "install it with: apt-get install -y libmujoco2.2.2 libmujoco-dev"
            : "build it with ./build.sh (needs g++, libmujoco-dev and libbox2d-dev)";
        throw new DllNotFoundException($"native library '{name}' not found (tried: {string.Join(", ", candidates)}); {hint}");
    }

    static string? FindFirst(params string[] dirs) => dirs.FirstOrDefault(Directory.Exists);

    static void TrySetResolver(Assembly asm, DllImportResolver resolver)
    {
        try { NativeLibrary.SetDllImportResolver(asm, resolver); }
        catch (InvalidOperationException) { /* a resolver is already set for this assembly */ }
    }
}
