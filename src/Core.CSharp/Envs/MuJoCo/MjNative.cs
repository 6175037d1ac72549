using System.Runtime.InteropServices;

namespace MetaGenRL.Core.Envs;

/// <summary>
/// P/Invoke surface of MuJoCo 2.2.2. Everything that can reach <c>mju_error</c> goes through the
/// <c>metagenrl_mujoco</c> shim (native/metagenrl_mujoco.c), which turns MuJoCo errors into return codes;
/// only <c>mj_step</c> itself is bound directly, for the raw step-rate benchmark.
/// </summary>
internal static unsafe partial class MjNative
{
    // ── MODEL ──
    [LibraryImport(Native.MuJoCoShim, EntryPoint = "mgr_load_xml", StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int LoadXml(string path, out IntPtr model, byte* err, int errSize);
    [LibraryImport(Native.MuJoCoShim, EntryPoint = "mgr_delete_model")] internal static partial void DeleteModel(IntPtr m);
    [LibraryImport(Native.MuJoCoShim, EntryPoint = "mgr_nq")] internal static partial int Nq(IntPtr m);
    [LibraryImport(Native.MuJoCoShim, EntryPoint = "mgr_nv")] internal static partial int Nv(IntPtr m);
    [LibraryImport(Native.MuJoCoShim, EntryPoint = "mgr_nu")] internal static partial int Nu(IntPtr m);
    [LibraryImport(Native.MuJoCoShim, EntryPoint = "mgr_nbody")] internal static partial int NBody(IntPtr m);
    [LibraryImport(Native.MuJoCoShim, EntryPoint = "mgr_nsite")] internal static partial int NSite(IntPtr m);
    [LibraryImport(Native.MuJoCoShim, EntryPoint = "mgr_timestep")] internal static partial double Timestep(IntPtr m);
    [LibraryImport(Native.MuJoCoShim, EntryPoint = "mgr_qpos0")] internal static partial double* Qpos0(IntPtr m);
    [LibraryImport(Native.MuJoCoShim, EntryPoint = "mgr_body_mass")] internal static partial double* BodyMass(IntPtr m);
    [LibraryImport(Native.MuJoCoShim, EntryPoint = "mgr_actuator_ctrlrange")] internal static partial double* CtrlRange(IntPtr m);
    [LibraryImport(Native.MuJoCoShim, EntryPoint = "mgr_actuator_ctrllimited")] internal static partial byte* CtrlLimited(IntPtr m);
    [LibraryImport(Native.MuJoCoShim, EntryPoint = "mgr_body_id", StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int BodyId(IntPtr m, string name);
    [LibraryImport(Native.MuJoCoShim, EntryPoint = "mgr_site_id", StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int SiteId(IntPtr m, string name);

    // ── DATA ──
    [LibraryImport(Native.MuJoCoShim, EntryPoint = "mgr_make_data")] internal static partial int MakeData(IntPtr m, out IntPtr d);
    [LibraryImport(Native.MuJoCoShim, EntryPoint = "mgr_delete_data")] internal static partial void DeleteData(IntPtr d);
    [LibraryImport(Native.MuJoCoShim, EntryPoint = "mgr_qpos")] internal static partial double* Qpos(IntPtr d);
    [LibraryImport(Native.MuJoCoShim, EntryPoint = "mgr_qvel")] internal static partial double* Qvel(IntPtr d);
    [LibraryImport(Native.MuJoCoShim, EntryPoint = "mgr_ctrl")] internal static partial double* Ctrl(IntPtr d);
    [LibraryImport(Native.MuJoCoShim, EntryPoint = "mgr_xpos")] internal static partial double* Xpos(IntPtr d);
    [LibraryImport(Native.MuJoCoShim, EntryPoint = "mgr_site_xpos")] internal static partial double* SiteXpos(IntPtr d);
    [LibraryImport(Native.MuJoCoShim, EntryPoint = "mgr_qfrc_constraint")] internal static partial double* QfrcConstraint(IntPtr d);
    [LibraryImport(Native.MuJoCoShim, EntryPoint = "mgr_cfrc_ext")] internal static partial double* CfrcExt(IntPtr d);
    [LibraryImport(Native.MuJoCoShim, EntryPoint = "mgr_time")] internal static partial double* Time(IntPtr d);

    // ── SIMULATION ── (0 = ok, -1 = MuJoCo error; StepN > 0 = numerical blow-up)
    [LibraryImport(Native.MuJoCoShim, EntryPoint = "mgr_reset")] internal static partial int Reset(IntPtr m, IntPtr d);
    [LibraryImport(Native.MuJoCoShim, EntryPoint = "mgr_forward")] internal static partial int Forward(IntPtr m, IntPtr d);
    [LibraryImport(Native.MuJoCoShim, EntryPoint = "mgr_step_n")] internal static partial int StepN(IntPtr m, IntPtr d, int n);
    [LibraryImport(Native.MuJoCoShim, EntryPoint = "mgr_last_error")] internal static partial IntPtr LastError();
    [LibraryImport(Native.MuJoCoShim, EntryPoint = "mgr_last_warning")] internal static partial IntPtr LastWarning();

    /// <summary>Unguarded <c>mj_step</c>, for measuring MuJoCo's own speed only.</summary>
    [LibraryImport(Native.MuJoCo, EntryPoint = "mj_step")] internal static partial void RawStep(IntPtr m, IntPtr d);
    [LibraryImport(Native.MuJoCo, EntryPoint = "mj_version")] internal static partial int Version();

    internal static string LastErrorText() => Marshal.PtrToStringUTF8(LastError()) ?? "";
    internal static string LastWarningText() => Marshal.PtrToStringUTF8(LastWarning()) ?? "";
}
