using System.Security.Cryptography;
using System.Text;
using Akka.Actor;
using Akka.Configuration;

namespace MetaGenRL.Actors.Cluster;

/// <summary>
/// How a node of a MetaGenRL cluster starts: where it listens, whom it joins, its roles and the shared secret.
/// </summary>
/// <param name="Host">the address it binds and is reached at; 127.0.0.1 unless given (a node is not reachable from
/// other hosts by accident)</param>
/// <param name="Port">its port; 0: a free one</param>
/// <param name="Seeds">"host:port" of the nodes to join; empty: it is the first node (the coordinator), and joins
/// itself</param>
/// <param name="Roles">its roles (workers: "worker")</param>
/// <param name="Secret">the shared secret; nodes with another secret (or none) cannot join</param>
/// <param name="HeartbeatPause">how long a silent node stays reachable (the failure detector's acceptable pause)</param>
/// <param name="StableAfter">how long membership must be stable before the split-brain resolver downs unreachable
/// nodes</param>
public sealed record NodeOptions(string Host, int Port, IReadOnlyList<string> Seeds, IReadOnlyList<string> Roles, string Secret,
                                 TimeSpan HeartbeatPause, TimeSpan StableAfter)
{
    /// <summary>A node on 127.0.0.1 with a free port, no seeds or roles, a 5 s heartbeat pause and 7 s stable-after.</summary>
    public static NodeOptions Local(string secret) =>
        new("127.0.0.1", 0, [], [], secret, TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(7));
}

/// <summary>
/// Starts ActorSystems as nodes of a MetaGenRL cluster (Akka.Cluster over Akka.Remote's TCP transport).
/// <para>Membership and failure: the seed (the coordinator) is the oldest node; the split-brain resolver runs
/// keep-oldest, so after a partition or a crash the side with the coordinator stays and unreachable workers are
/// downed and removed once membership has been stable for <see cref="NodeOptions.StableAfter"/>.</para>
/// <para>The shared secret: the ActorSystem's name is derived from a SHA-256 of the secret, and Akka.Remote delivers
/// only to the system an address names, so a node started with another secret (or none) addresses a system that
/// does not exist on the seed: its join is never answered and it never becomes a member. The name travels in
/// addresses in the clear; across untrusted networks, enable Akka.Remote's TLS (README) so that it cannot be read
/// off the wire.</para>
/// </summary>
public static class ClusterNode
{
    /// <summary>The environment variable a node reads its shared secret from when none is given otherwise.</summary>
    public const string SecretVariable = "METAGENRL_CLUSTER_SECRET";

    /// <summary>The environment variable naming a HOCON file whose settings take precedence over the node's own (e.g.
    /// Akka.Remote's TLS: <c>akka.remote.dot-netty.tcp.enable-ssl</c> and <c>ssl.certificate</c>).</summary>
    public const string ConfigVariable = "METAGENRL_AKKA_CONFIG";

    /// <summary>The role of nodes that run trials and agent groups.</summary>
    public const string WorkerRole = "worker";

    /// <summary>A worker advertises how many cores its trials may use at once with the role "cores-N"; the coordinator
    /// packs trials onto it as a local run packs them onto its own cores (one per agent).</summary>
    public static string CoresRole(int cores) => $"cores-{cores}";

    /// <summary>The cores a worker advertises in its roles (<see cref="CoresRole"/>); 1 when none is given.</summary>
    public static int CoresOf(IEnumerable<string> roles) =>
        roles.Select(r => r.StartsWith("cores-", StringComparison.Ordinal) && int.TryParse(r.AsSpan(6), out int n) && n > 0 ? n : 0)
             .DefaultIfEmpty(0).Max() is > 0 and var cores ? cores : 1;

    /// <summary>The role of the node that runs an experiment and hands its trials out.</summary>
    public const string CoordinatorRole = "coordinator";

    /// <summary>The ActorSystem name every node with <paramref name="secret"/> uses: "metagenrl-" and 16 hex digits of
    /// SHA-256("metagenrl-cluster:" + secret). Throws naming the variable when the secret is empty.</summary>
    public static string SystemName(string secret)
    {
        if (string.IsNullOrWhiteSpace(secret))
            throw new ArgumentException($"cluster: no shared secret (set {SecretVariable} on every node, or give --secret-file)");
        var hash = SHA256.HashData(Encoding.UTF8.GetBytes("metagenrl-cluster:" + secret));
        return "metagenrl-" + Convert.ToHexString(hash, 0, 8).ToLowerInvariant();
    }

    /// <summary>Parses "host:port" (the port 1–65535), naming <paramref name="what"/> in the message.</summary>
    public static (string Host, int Port) ParseEndpoint(string endpoint, string what)
    {
        int colon = endpoint.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(endpoint[(colon + 1)..], out int port) || port < 1 || port > 65535)
            throw new ArgumentException($"{what} '{endpoint}': expected HOST:PORT with a port in 1–65535");
        return (endpoint[..colon], port);
    }

    /// <summary>The node's configuration: cluster provider, TCP on Host:Port, seeds, roles, the failure detector and
    /// the keep-oldest split-brain resolver, <see cref="WireSerializer.Hocon"/> (raw bytes for MetaGenRL's messages,
    /// 64 MiB frames, every other unbound type refused), quiet logging, and <see cref="Population.SystemConfig"/>'s
    /// dispatcher; then, in front of all of it, the HOCON file named by <see cref="ConfigVariable"/> if set.</summary>
    public static Config Configuration(NodeOptions o)
    {
        var name = SystemName(o.Secret);
        string Quote(string s) => "\"" + s.Replace("\\", "\\\\").Replace("\"", "\\\"") + "\"";
        var seeds = o.Seeds.Select(s =>
        {
            var (host, port) = ParseEndpoint(s, "seed");
            return Quote($"akka.tcp://{name}@{host}:{port}");
        });
        var hocon = $$"""
            akka {
              actor.provider = cluster
              # leaving waits for the others to see it; a peer already gone would hold a stop for the default 10 s
              coordinated-shutdown.phases.cluster-exiting.timeout = 3s
              remote {
                log-remote-lifecycle-events = off
                dot-netty.tcp {
                  hostname = {{Quote(o.Host)}}
                  port = {{o.Port}}
                }
              }
              cluster {
                seed-nodes = [{{string.Join(", ", seeds)}}]
                roles = [{{string.Join(", ", o.Roles.Select(Quote))}}]
                log-info = off
                downing-provider-class = "Akka.Cluster.SBR.SplitBrainResolverProvider, Akka.Cluster"
                split-brain-resolver {
                  active-strategy = keep-oldest
                  stable-after = {{(int)o.StableAfter.TotalMilliseconds}}ms
                  keep-oldest.down-if-alone = off
                }
                failure-detector {
                  heartbeat-interval = 1s
                  acceptable-heartbeat-pause = {{(int)o.HeartbeatPause.TotalMilliseconds}}ms
                }
              }
            }
            """;
        var own = ConfigurationFactory.ParseString(hocon)
            .WithFallback(ConfigurationFactory.ParseString(WireSerializer.Hocon))
            .WithFallback(Population.SystemConfig);
        var file = Environment.GetEnvironmentVariable(ConfigVariable);
        if (string.IsNullOrWhiteSpace(file)) return own;
        if (!File.Exists(file)) throw new ArgumentException($"{ConfigVariable}={file}: no such file");
        try { return ConfigurationFactory.ParseString(File.ReadAllText(file)).WithFallback(own); }
        catch (Exception e) when (e is not ArgumentException)
        {
            throw new ArgumentException($"{ConfigVariable}={file}: not valid HOCON ({e.Message})", e);
        }
    }

    /// <summary>Starts the node. With no seeds it joins itself (the first node of a cluster).</summary>
    public static ActorSystem Start(NodeOptions o)
    {
        var system = ActorSystem.Create(SystemName(o.Secret), Configuration(o));
        if (o.Seeds.Count == 0)
        {
            var cluster = Akka.Cluster.Cluster.Get(system);
            cluster.Join(cluster.SelfAddress);
        }
        return system;
    }

    /// <summary>Waits until this node is Up in its cluster; false after <paramref name="timeout"/> or once
    /// <paramref name="ct"/> is cancelled.</summary>
    public static bool AwaitUp(ActorSystem system, TimeSpan timeout, CancellationToken ct = default)
    {
        var up = new TaskCompletionSource();
        Akka.Cluster.Cluster.Get(system).RegisterOnMemberUp(() => up.TrySetResult());
        try { return up.Task.Wait(timeout, ct); }
        catch (OperationCanceledException) { return false; }
    }

    /// <summary>The "host:port" a node listens on (its actual port when it was started with port 0).</summary>
    public static string Endpoint(ActorSystem system)
    {
        var a = Akka.Cluster.Cluster.Get(system).SelfAddress;
        return $"{a.Host}:{a.Port}";
    }
}
