using System.Collections.Concurrent;

namespace MetaGenRL.Core.Envs;

/// <summary>A MuJoCo error, or a numerical blow-up, reported as an exception naming its owner (usually the env id).</summary>
public sealed class MuJoCoException(string message) : Exception(message);

/// <summary>
/// A compiled MuJoCo model (mjModel). It is read-only after compilation, so one instance per env type is shared by
/// every env of that type on every thread (<see cref="Shared"/>); each env owns only its <see cref="MuJoCoData"/>.
/// </summary>
public sealed unsafe class MuJoCoModel : IDisposable
{
    static readonly ConcurrentDictionary<string, Lazy<MuJoCoModel>> SharedModels = new();
    // MuJoCo 2.2.2's XML compiler swaps the process-wide error handler while it runs, so compile one model at a time.
    static readonly object LoadGate = new();

    IntPtr _m;
    readonly bool _shared;

    MuJoCoModel(IntPtr m, string name, bool shared)
    {
        _m = m;
        _shared = shared;
        Name = name;
        Nq = MjNative.Nq(m);
        Nv = MjNative.Nv(m);
        Nu = MjNative.Nu(m);
        NBody = MjNative.NBody(m);
        NSite = MjNative.NSite(m);
        Timestep = MjNative.Timestep(m);
        Qpos0Ptr = MjNative.Qpos0(m);
        BodyMassPtr = MjNative.BodyMass(m);
        CtrlRangePtr = MjNative.CtrlRange(m);
        CtrlLimitedPtr = MjNative.CtrlLimited(m);
    }

    /// <summary>The model file's name (without folder).</summary>
    public string Name { get; }
    public int Nq { get; }
    public int Nv { get; }
    public int Nu { get; }
    /// <summary>Bodies including the world body (id 0).</summary>
    public int NBody { get; }
    public int NSite { get; }
    /// <summary>The physics timestep (one mj_step) in seconds.</summary>
    public double Timestep { get; }

    internal IntPtr Handle => _m != IntPtr.Zero ? _m : throw new ObjectDisposedException(Name);
    internal double* Qpos0Ptr { get; }
    internal double* BodyMassPtr { get; }
    internal double* CtrlRangePtr { get; }
    internal byte* CtrlLimitedPtr { get; }

    /// <summary>[nq] the reference configuration (what mj_resetData puts in qpos).</summary>
    public double[] Qpos0 => new ReadOnlySpan<double>(Qpos0Ptr, Nq).ToArray();
    /// <summary>[nbody] compiled body masses in body-id order, world first.</summary>
    public double[] BodyMasses => new ReadOnlySpan<double>(BodyMassPtr, NBody).ToArray();
    public double BodyMass(string body) => BodyMassPtr[BodyId(body)];

    public int BodyId(string body)
    {
        int id = MjNative.BodyId(Handle, body);
        return id >= 0 ? id : throw new ArgumentException($"{Name}: no body named '{body}'", nameof(body));
    }

    public int SiteId(string site)
    {
        int id = MjNative.SiteId(Handle, site);
        return id >= 0 ? id : throw new ArgumentException($"{Name}: no site named '{site}'", nameof(site));
    }

    /// <summary>Compiles an MJCF file. A parse or compile error becomes a <see cref="MuJoCoException"/> carrying
    /// MuJoCo's message. The caller owns the result and disposes it after every <see cref="MuJoCoData"/> made from it.</summary>
    public static MuJoCoModel Load(string xmlPath) => Load(xmlPath, shared: false);

    static MuJoCoModel Load(string xmlPath, bool shared)
    {
        Native.EnsureLoaded();
        const int errSize = 1000;
        byte* err = stackalloc byte[errSize];
        int rc;
        IntPtr m;
        lock (LoadGate) rc = MjNative.LoadXml(xmlPath, out m, err, errSize);
        if (rc != 0 || m == IntPtr.Zero)
        {
            string msg = new string((sbyte*)err);
            if (msg.Length == 0) msg = MjNative.LastErrorText();
            throw new MuJoCoException($"MuJoCo could not load '{xmlPath}': {msg.Trim()}");
        }
        return new MuJoCoModel(m, Path.GetFileName(xmlPath), shared);
    }

    /// <summary>The process-wide model compiled from <c>models/&lt;file&gt;</c>: loaded once, thread-safe, never freed.</summary>
    public static MuJoCoModel Shared(string file) =>
        SharedModels.GetOrAdd(file, f => new Lazy<MuJoCoModel>(() => Load(ModelPath(f), shared: true))).Value;

    /// <summary>Where a bundled model lives: beside MetaGenRL.Core.dll (under <c>models/</c>, or <c>Envs/Models/</c>
    /// where the build keeps the source layout), else in the source tree of a checkout.</summary>
    public static string ModelPath(string file)
    {
        foreach (var sub in new[] { "models", Path.Combine("Envs", "Models") })
        {
            string beside = Path.Combine(Native.AssemblyDir, sub, file);
            if (File.Exists(beside)) return beside;
        }
        for (var d = new DirectoryInfo(Native.AssemblyDir); d is not null; d = d.Parent)
        {
            string src = Path.Combine(d.FullName, "src", "Core.CSharp", "Envs", "Models", file);
            if (File.Exists(src)) return src;
        }
        throw new FileNotFoundException($"MuJoCo model '{file}' not found beside {Native.AssemblyDir} or in the source tree", file);
    }

    /// <summary>Frees a model from <see cref="Load(string)"/>; shared models live as long as the process.</summary>
    public void Dispose()
    {
        if (!_shared && _m != IntPtr.Zero)
        {
            MjNative.DeleteModel(_m);
            _m = IntPtr.Zero;
        }
        GC.SuppressFinalize(this);
    }

    ~MuJoCoModel()
    {
        if (!_shared && _m != IntPtr.Zero) MjNative.DeleteModel(_m);
    }
}
