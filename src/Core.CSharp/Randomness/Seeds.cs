
namespace MetaGenRL.Core.Randomness;

/// <summary>
/// The one definition of the seed streams: derives independent seeds for an agent's random streams from its one seed (SplitMix64 finaliser over
/// (seed, stream)), so the same seed always gives the same init, noise, exploration, replay draws and env.
/// </summary>
public static class Seeds
{
    /// <summary>Network initialisation (torch.Generator, CPU).</summary>
    public const int InitStream = 1;
    /// <summary>Target-policy smoothing noise (torch.Generator on the agent's device).</summary>
    public const int NoiseStream = 2;
    /// <summary>Exploration actions and replay sampling (<see cref="SeededRandom"/>).</summary>
    public const int ExploreStream = 3;
    /// <summary>The environment's own seed.</summary>
    public const int EnvStream = 4;
    /// <summary>The initial values of the agent's copy of α (a random objective's α; at meta-train agent 0's α is
    /// copied to every agent).</summary>
    public const int ObjectiveInitStream = 101;
    /// <summary>The lengths of an agent's lives under log-uniform lifetimes (<see cref="SeededRandom"/>, one per life).</summary>
    public const int LifetimeStream = 102;
    /// <summary>The physical parameters of an agent's env family, one draw per life (<see cref="SeededRandom"/>).</summary>
    public const int EnvParamsStream = 103;
    /// <summary>Life ℓ ≥ 1 of an agent starts from stream <c>LifeStreamBase + ℓ</c> of its agent seed (fresh networks,
    /// noise and exploration); life 0 is the agent seed itself.</summary>
    public const int LifeStreamBase = 2000;
    /// <summary>The seed life <paramref name="life"/> of the agent with seed <paramref name="agentSeed"/> starts from.</summary>
    public static long LifeSeed(long agentSeed, int life) =>
        life == 0 ? agentSeed : unchecked((long)Derive(agentSeed, LifeStreamBase + life));
    /// <summary>Population member i's agent seed is stream <c>MemberStreamBase + i</c> of the run seed.</summary>
    public const int MemberStreamBase = 1000;

    /// <summary>The seed of agent <paramref name="index"/> of a run with seed <paramref name="runSeed"/> (a population
    /// member, or one seed's lone agent with index 0): distinct per index, and derived from the run seed only, so an
    /// agent computes the same numbers in any command that runs it.</summary>
    public static long AgentSeed(long runSeed, int index) => unchecked((long)Derive(runSeed, MemberStreamBase + index));

    /// <summary>A 64-bit seed for <paramref name="stream"/> of run seed <paramref name="seed"/>.</summary>
    public static ulong Derive(long seed, int stream)
    {
        ulong z = unchecked((ulong)seed * 0x9E3779B97F4A7C15UL + (ulong)stream * 0xD1B54A32D192ED03UL + 0x632BE59BD9B4E019UL);
        z = unchecked((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL);
        z = unchecked((z ^ (z >> 27)) * 0x94D049BB133111EBUL);
        return z ^ (z >> 31);
    }

    /// <summary>A non-negative 31-bit seed (for env constructors).</summary>
    public static int DeriveInt(long seed, int stream) => (int)(Derive(seed, stream) & 0x7FFF_FFFF);

    /// <summary>A checkpointable generator for <paramref name="stream"/> of run seed <paramref name="seed"/>.</summary>
    public static SeededRandom Random(long seed, int stream) => new(Derive(seed, stream));
}
