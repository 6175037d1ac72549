using System.Runtime.InteropServices;

namespace MetaGenRL.Core.Envs;

/// <summary>Position, angle and velocities of one Box2D body (the body origin, not its centre of mass).</summary>
[StructLayout(LayoutKind.Sequential)]
public struct Box2DBodyState
{
    public float X, Y, Angle, Vx, Vy, Omega;
}

/// <summary>
/// P/Invoke bindings for <c>native/metagenrl_box2d.cpp</c>, a generic C ABI over Box2D 2.4. A world is an
/// opaque handle; bodies are integer ids 0, 1, 2, … in creation order within their world. All arguments are
/// blittable, so no call allocates. Creation calls return −1 (or a null world) on failure.
/// </summary>
internal static unsafe partial class Box2DNative
{
    const string Lib = Native.Box2DShim;

    [LibraryImport(Lib, EntryPoint = "mgb2_world_create")]
    internal static partial IntPtr WorldCreate(float gx, float gy);

    [LibraryImport(Lib, EntryPoint = "mgb2_world_destroy")]
    internal static partial void WorldDestroy(IntPtr world);

    [LibraryImport(Lib, EntryPoint = "mgb2_world_step")]
    internal static partial void WorldStep(IntPtr world, float dt, int velocityIterations, int positionIterations);

    [LibraryImport(Lib, EntryPoint = "mgb2_body_create")]
    internal static partial int BodyCreate(IntPtr world, int dynamic, float x, float y, float angle);

    /// <summary>Convex polygon fixture from <c>xy</c> = [2n] vertices x0, y0, x1, y1, … in body coordinates
    /// (3 ≤ n ≤ 8; Box2D takes their convex hull, so the winding does not matter).</summary>
    [LibraryImport(Lib, EntryPoint = "mgb2_fixture_polygon")]
    internal static partial int FixturePolygon(IntPtr world, int body, float* xy, int n, float density, float friction,
        float restitution, ushort category, ushort mask);

    [LibraryImport(Lib, EntryPoint = "mgb2_fixture_box")]
    internal static partial int FixtureBox(IntPtr world, int body, float hx, float hy, float density, float friction,
        float restitution, ushort category, ushort mask);

    [LibraryImport(Lib, EntryPoint = "mgb2_fixture_edge")]
    internal static partial int FixtureEdge(IntPtr world, int body, float x1, float y1, float x2, float y2, float density,
        float friction, float restitution, ushort category, ushort mask);

    [LibraryImport(Lib, EntryPoint = "mgb2_revolute_joint")]
    internal static partial int RevoluteJoint(IntPtr world, int bodyA, int bodyB, float ax, float ay, float bx, float by,
        float referenceAngle, int enableMotor, float motorSpeed, float maxMotorTorque, int enableLimit, float lower, float upper);

    [LibraryImport(Lib, EntryPoint = "mgb2_body_apply_force_center")]
    internal static partial void ApplyForceToCenter(IntPtr world, int body, float fx, float fy, int wake);

    [LibraryImport(Lib, EntryPoint = "mgb2_body_apply_impulse")]
    internal static partial void ApplyLinearImpulse(IntPtr world, int body, float ix, float iy, float px, float py, int wake);

    [LibraryImport(Lib, EntryPoint = "mgb2_body_set_velocity")]
    internal static partial void SetVelocity(IntPtr world, int body, float vx, float vy, float omega);

    [LibraryImport(Lib, EntryPoint = "mgb2_body_state")]
    internal static partial void BodyState(IntPtr world, int body, Box2DBodyState* state);

    [LibraryImport(Lib, EntryPoint = "mgb2_body_awake")]
    internal static partial int BodyAwake(IntPtr world, int body);

    [LibraryImport(Lib, EntryPoint = "mgb2_body_mass")]
    internal static partial float BodyMass(IntPtr world, int body);

    [LibraryImport(Lib, EntryPoint = "mgb2_body_touching")]
    internal static partial int BodyTouching(IntPtr world, int body);

    [LibraryImport(Lib, EntryPoint = "mgb2_body_begin_count")]
    internal static partial int BodyBeginCount(IntPtr world, int body);

    internal static Box2DBodyState State(IntPtr world, int body)
    {
        Box2DBodyState s;
        BodyState(world, body, &s);
        return s;
    }

    /// <summary>Turns a −1 from a creation call into an exception naming what failed.</summary>
    internal static int Check(int rc, string what) =>
        rc >= 0 ? rc : throw new InvalidOperationException($"Box2D shim: {what} failed");
}
