namespace MetaGenRL.Core.Envs;

/// <summary>
/// LunarLanderContinuous-v2 on Box2D 2.4 (through <see cref="Box2DNative"/>): land a two-legged craft on the
/// flat pad between the flags. Action (main, lateral) ∈ [−1, 1]²; the main engine fires only for main &gt; 0
/// (at 50–100 % power) and a side engine only for |lateral| &gt; 0.5. The reward is the change of a shaping
/// potential (distance, speed, tilt, leg contacts) minus fuel, with −100 for a crash or leaving the screen and
/// +100 when the craft comes to rest (Box2D puts it to sleep). Truncated at 1000 steps.
/// The v2 quirks are kept on purpose: the side-engine application point swings with the craft's angle, the
/// angular-velocity observation is scaled by 20/FPS = 0.4, and leg contact is a flag that the last
/// begin/end event decides.
/// </summary>
public sealed class LunarLanderContinuousEnv : EnvBase
{
    // ── CONSTANTS ── (pixel values divided by Scale give world units)
    const float Fps = 50f, Scale = 30f;
    const float W = 600f / Scale, H = 400f / Scale;        // 20 × 13.33 world units
    const float MainEnginePower = 13f, SideEnginePower = 0.6f;
    const float SideEngineHeight = 14f, SideEngineAway = 12f;
    const float LegAway = 20f, LegDown = 18f, LegW = 2f, LegH = 8f, LegSpringTorque = 40f;
    const float InitialRandom = 1000f;
    const int Chunks = 11;
    const int VelocityIterations = 6 * 30, PositionIterations = 2 * 30;
    const ushort GroundCategory = 0x0001, LanderCategory = 0x0010, LegCategory = 0x0020;

    // Hull outline in pixels, counter-clockwise from the top left.
    static readonly float[] LanderPoly = [-14, 17, -17, 0, -17, -10, 17, -10, 17, 0, 14, 17];
    static readonly float[] Low = [-1f, -1f], High = [1f, 1f];

    IntPtr _world;
    int _moon = -1, _lander = -1, _leg0 = -1, _leg1 = -1;
    double _helipadY;
    double _shaping;
    bool _hasShaping;
    readonly double[] _terrainX = new double[Chunks], _terrainY = new double[Chunks];

    public LunarLanderContinuousEnv(int seed) : base("LunarLanderContinuous-v2", seed, maxEpisodeSteps: 1000) { }

    public override int ObservationSize => 8;
    public override int ActionSize => 2;
    public override float[] ActionLow => (float[])Low.Clone();
    public override float[] ActionHigh => (float[])High.Clone();

    // ── READ-ONLY VIEWS (tests, diagnostics) ──
    public double LanderMass => Box2DNative.BodyMass(RequireWorld(), _lander);
    public double LegMass => Box2DNative.BodyMass(RequireWorld(), _leg0);
    public bool LanderAwake => Box2DNative.BodyAwake(RequireWorld(), _lander) != 0;
    /// <summary>The hull has touched something since reset (a crash, whatever the speed).</summary>
    public bool GameOver => Box2DNative.BodyBeginCount(RequireWorld(), _lander) > 0;
    /// <summary>The shaping potential of the latest observation.</summary>
    public double Shaping => _shaping;
    public double HelipadY => _helipadY;
    public double HelipadX1 => _terrainX[Chunks / 2 - 1];
    public double HelipadX2 => _terrainX[Chunks / 2 + 1];
    /// <summary>Hull body state in world units (origin, angle, velocities).</summary>
    public Box2DBodyState LanderState => Box2DNative.State(RequireWorld(), _lander);
    /// <summary>x of the 11 terrain vertices.</summary>
    public IReadOnlyList<double> TerrainX => Array.AsReadOnly(_terrainX);
    /// <summary>Smoothed height of the 11 terrain vertices in the current episode.</summary>
    public IReadOnlyList<double> TerrainY => Array.AsReadOnly(_terrainY);

    /// <summary>Gives hull and legs the same linear velocity (a rigid kick that leaves the joints satisfied);
    /// for tests and diagnostics, e.g. to send the craft off-screen.</summary>
    public void SetLanderVelocity(double vx, double vy)
    {
        IntPtr w = RequireWorld();
        foreach (int b in new[] { _lander, _leg0, _leg1 })
            Box2DNative.SetVelocity(w, b, (float)vx, (float)vy, Box2DNative.State(w, b).Omega);
    }

    // ── RESET ──
    protected override float[] ResetCore()
    {
        DestroyWorld();
        _world = Box2DNative.WorldCreate(0f, -10f);
        if (_world == IntPtr.Zero) throw new InvalidOperationException($"{Id}: Box2D world creation failed");
        _hasShaping = false;

        // Terrain: 12 random heights, the middle five flattened into the pad, then a 3-tap smoothing whose
        // left neighbour of the first chunk wraps around to the last height (kept from v2).
        Span<double> height = stackalloc double[Chunks + 1];
        for (int i = 0; i < height.Length; i++) height[i] = Uniform(0, H / 2);
        _helipadY = H / 4;
        for (int i = Chunks / 2 - 2; i <= Chunks / 2 + 2; i++) height[i] = _helipadY;
        for (int i = 0; i < Chunks; i++)
        {
            _terrainX[i] = W / (Chunks - 1) * i;
            _terrainY[i] = 0.33 * (height[(i - 1 + height.Length) % height.Length] + height[i] + height[i + 1]);
        }

        _moon = Box2DNative.Check(Box2DNative.BodyCreate(_world, 0, 0, 0, 0), "moon body");
        Box2DNative.Check(Box2DNative.FixtureEdge(_world, _moon, 0, 0, W, 0, 0, 0.2f, 0, GroundCategory, 0xFFFF), "moon base");
        for (int i = 0; i < Chunks - 1; i++)
            Box2DNative.Check(Box2DNative.FixtureEdge(_world, _moon, (float)_terrainX[i], (float)_terrainY[i],
                (float)_terrainX[i + 1], (float)_terrainY[i + 1], 0, 0.1f, 0, GroundCategory, 0xFFFF), "moon edge");

        // Hull, dropped from the top centre with a random push applied during the first (reset) step.
        _lander = Box2DNative.Check(Box2DNative.BodyCreate(_world, 1, W / 2, H, 0), "lander body");
        unsafe
        {
            Span<float> poly = stackalloc float[LanderPoly.Length];
            for (int i = 0; i < poly.Length; i++) poly[i] = LanderPoly[i] / Scale;
            fixed (float* p = poly)
                Box2DNative.Check(Box2DNative.FixturePolygon(_world, _lander, p, poly.Length / 2, 5f, 0.1f, 0f,
                    LanderCategory, GroundCategory), "lander hull");
        }
        float fx = (float)Uniform(-InitialRandom, InitialRandom), fy = (float)Uniform(-InitialRandom, InitialRandom);
        Box2DNative.ApplyForceToCenter(_world, _lander, fx, fy, 1);

        // Legs: i = −1 is created first and sits on the +x side. The joint anchors start 18 px apart
        // vertically and the limits exclude the initial angle, so the legs snap into place during the
        // first steps; the motor keeps them spread (a soft spring of 40 N·m).
        _leg0 = CreateLeg(-1);
        _leg1 = CreateLeg(+1);

        return Advance(0f, 0f).Observation;
    }

    int CreateLeg(int i)
    {
        int leg = Box2DNative.Check(Box2DNative.BodyCreate(_world, 1, W / 2 - i * LegAway / Scale, H, i * 0.05f), "leg body");
        Box2DNative.Check(Box2DNative.FixtureBox(_world, leg, LegW / Scale, LegH / Scale, 1f, 0.2f, 0f,
            LegCategory, GroundCategory), "leg box");
        float lower = i == -1 ? 0.4f : -0.9f, upper = i == -1 ? 0.9f : -0.4f;
        Box2DNative.Check(Box2DNative.RevoluteJoint(_world, _lander, leg, 0, 0, i * LegAway / Scale, LegDown / Scale, 0f,
            1, 0.3f * i, LegSpringTorque, 1, lower, upper), "leg joint");
        return leg;
    }

    // ── STEP ──
    protected override (float[] Observation, double Reward, bool Terminated) StepCore(float[] action)
    {
        if (_world == IntPtr.Zero) throw new InvalidOperationException($"{Id}: Step called before Reset");
        return Advance(Math.Clamp(action[0], -1f, 1f), Math.Clamp(action[1], -1f, 1f));
    }

    (float[] Observation, double Reward, bool Terminated) Advance(float main, float lateral)
    {
        var s = Box2DNative.State(_world, _lander);
        double sin = Math.Sin(s.Angle), cos = Math.Cos(s.Angle);
        // tip points along the hull's up axis, side along its right axis (both in world frame).
        double tipX = sin, tipY = cos, sideX = -cos, sideY = sin;
        // Two dispersions are drawn every step, whether or not an engine fires, so the stream stays aligned.
        double d0 = Uniform(-1, 1) / Scale, d1 = Uniform(-1, 1) / Scale;

        double mPower = 0;
        if (main > 0)
        {
            mPower = (Math.Clamp(main, 0f, 1f) + 1.0) * 0.5;   // 50 %..100 %: the engine cannot throttle lower
            double ox = tipX * (4 / Scale + 2 * d0) + sideX * d1;
            double oy = -tipY * (4 / Scale + 2 * d0) - sideY * d1;
            Box2DNative.ApplyLinearImpulse(_world, _lander,
                (float)(-ox * MainEnginePower * mPower), (float)(-oy * MainEnginePower * mPower),
                (float)(s.X + ox), (float)(s.Y + oy), 1);
        }

        double sPower = 0;
        if (Math.Abs(lateral) > 0.5f)
        {
            double dir = Math.Sign(lateral);
            sPower = Math.Clamp(Math.Abs(lateral), 0.5f, 1f);
            double ox = tipX * d0 + sideX * (3 * d1 + dir * SideEngineAway / Scale);
            double oy = -tipY * d0 - sideY * (3 * d1 + dir * SideEngineAway / Scale);
            // v2 quirk: the x offset uses the tip's x and the y offset the tip's y, so the nozzle position
            // is not a rigid point of the hull.
            Box2DNative.ApplyLinearImpulse(_world, _lander,
                (float)(-ox * SideEnginePower * sPower), (float)(-oy * SideEnginePower * sPower),
                (float)(s.X + ox - tipX * 17 / Scale), (float)(s.Y + oy + tipY * SideEngineHeight / Scale), 1);
        }

        Box2DNative.WorldStep(_world, 1f / Fps, VelocityIterations, PositionIterations);

        s = Box2DNative.State(_world, _lander);
        double o0 = (s.X - W / 2) / (W / 2);
        double o1 = (s.Y - (_helipadY + LegDown / Scale)) / (H / 2);
        double o2 = s.Vx * (W / 2) / Fps;
        double o3 = s.Vy * (H / 2) / Fps;
        double o4 = s.Angle;
        double o5 = 20.0 * s.Omega / Fps;
        double o6 = Box2DNative.BodyTouching(_world, _leg0);
        double o7 = Box2DNative.BodyTouching(_world, _leg1);

        double shaping = -100 * Math.Sqrt(o0 * o0 + o1 * o1) - 100 * Math.Sqrt(o2 * o2 + o3 * o3)
                         - 100 * Math.Abs(o4) + 10 * o6 + 10 * o7;
        double reward = _hasShaping ? shaping - _shaping : 0.0;
        _shaping = shaping;
        _hasShaping = true;
        reward -= mPower * 0.30;
        reward -= sPower * 0.03;

        bool terminated = false;
        if (Box2DNative.BodyBeginCount(_world, _lander) > 0 || Math.Abs(o0) >= 1.0)
        {
            terminated = true;
            reward = -100;
        }
        // Checked second, so a crash that left the craft asleep still counts as a landing (kept from v2).
        if (Box2DNative.BodyAwake(_world, _lander) == 0)
        {
            terminated = true;
            reward = +100;
        }

        float[] obs = [(float)o0, (float)o1, (float)o2, (float)o3, (float)o4, (float)o5, (float)o6, (float)o7];
        return (obs, reward, terminated);
    }

    // ── LIFETIME ──
    IntPtr RequireWorld() =>
        _world != IntPtr.Zero ? _world : throw new InvalidOperationException($"{Id}: no world yet; call Reset first");

    void DestroyWorld()
    {
        if (_world == IntPtr.Zero) return;
        Box2DNative.WorldDestroy(_world);
        _world = IntPtr.Zero;
    }

    public override void Dispose()
    {
        DestroyWorld();
        base.Dispose();
    }

    ~LunarLanderContinuousEnv() => DestroyWorld();
}
