using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using Akka.Actor;
using Akka.Configuration;
using Akka.Serialization;
using MetaGenRL.Actors;
using MetaGenRL.Actors.Cluster;
using MetaGenRL.Core.Engine;

namespace MetaGenRL.Bench;

/// <summary>
/// serialization: the population's parameter messages through <see cref="WireSerializer"/> and through Akka's default
/// Newtonsoft JSON serializer, side by side: bytes, and µs of a round trip (serialize, then deserialize) for a
/// 1M-float <see cref="LoadObjective"/> and an <see cref="Updated"/> with 4 gradients of 100k floats; then the time of a
/// remote round trip (there and back, Ask on an echo actor) of the 1M-float message between two ActorSystems on
/// 127.0.0.1 with the wire serializer. <c>--rounds N</c> (default 9). Figures are medians over the rounds after a
/// first (warm-up) round.
/// </summary>
public static class SerializationBench
{
    public static IEnumerable<string> Run(string[] args)
    {
        int rounds = (int)BenchArgs.GetDouble(args, "--rounds", 9);
        var rng = new Random(1);
        float[] Floats(int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var rows = Enumerable.Range(0, 16).Select(i => new Metric(1000L * i, "critic_loss", rng.NextDouble(), i % 4)).ToArray();
        var messages = new (string Name, object Message)[]
        {
            ("LoadObjective 1M floats", new LoadObjective(Floats(1_000_000), 1)),
            ("Updated 4x100k floats", new Updated(0, 1, 2, [Floats(100_000), Floats(100_000), Floats(100_000), Floats(100_000)], rows)),
        };

        using (var system = ActorSystem.Create("bench", ConfigurationFactory.ParseString(
                   "akka.loglevel = WARNING\nakka.suppress-json-serializer-warning = on\n" + WireSerializer.Hocon)))
        {
            var wire = system.Serialization.FindSerializerForType(typeof(LoadObjective));
            var json = new NewtonSoftJsonSerializer((ExtendedActorSystem)system);
            foreach (var (name, message) in messages)
            {
                var w = RoundTrips(wire, message, rounds);
                var j = RoundTrips(json, message, rounds);
                yield return JsonSerializer.Serialize(new
                {
                    workload = "serialization",
                    message = name,
                    wire_bytes = w.Bytes,
                    json_bytes = j.Bytes,
                    bytes_ratio = Math.Round((double)j.Bytes / w.Bytes, 2),
                    wire_us = Math.Round(w.Micros, 0),
                    json_us = Math.Round(j.Micros, 0),
                    us_ratio = Math.Round(j.Micros / w.Micros, 1),
                    wire_serialize_us = Math.Round(w.SerializeMicros, 0),
                    json_serialize_us = Math.Round(j.SerializeMicros, 0),
                    wire_bitwise = w.Bitwise,
                    json_bitwise = j.Bitwise,
                    rounds,
                });
            }
            system.Terminate().Wait();
        }

        yield return Remote((LoadObjective)messages[0].Message, rounds);
    }

    record struct Figures(int Bytes, double Micros, double SerializeMicros, bool Bitwise);

    /// <summary>Median µs of serialize + deserialize (and of serialize alone) of <paramref name="message"/>, whether
    /// the copy's floats equal the original's bit for bit.</summary>
    static Figures RoundTrips(Serializer s, object message, int rounds)
    {
        var total = new List<double>();
        var ser = new List<double>();
        int bytes = 0;
        object back = message;
        for (int r = 0; r <= rounds; r++)
        {
            var sw = Stopwatch.StartNew();
            var b = s.ToBinary(message);
            double t1 = sw.Elapsed.TotalMicroseconds;
            back = s is SerializerWithStringManifest m ? m.FromBinary(b, m.Manifest(message)) : s.FromBinary(b, message.GetType());
            double t2 = sw.Elapsed.TotalMicroseconds;
            bytes = b.Length;
            if (r == 0) continue;
            ser.Add(t1);
            total.Add(t2);
        }
        return new Figures(bytes, Median(total), Median(ser), SameFloats(message, back));
    }

    static bool SameFloats(object a, object b)
    {
        static float[][] Of(object m) => m switch
        {
            LoadObjective l => [l.Alpha],
            Updated u => u.Gradients.Select(g => g ?? []).ToArray(),
            _ => [],
        };
        var (x, y) = (Of(a), Of(b));
        return x.Length == y.Length && x.Zip(y).All(p => MemoryMarshal.AsBytes(p.First.AsSpan()).SequenceEqual(MemoryMarshal.AsBytes(p.Second.AsSpan())));
    }

    /// <summary>Median ms of an Ask round trip of <paramref name="message"/> to an echo actor in a second ActorSystem
    /// over Akka.Remote on 127.0.0.1 (serialized, sent, deserialized, and the same way back).</summary>
    static string Remote(LoadObjective message, int rounds)
    {
        const string remote = "akka.loglevel = WARNING\nakka.actor.provider = remote\nakka.remote.dot-netty.tcp { hostname = 127.0.0.1, port = 0 }\n";
        using var b = ActorSystem.Create("bench-b", ConfigurationFactory.ParseString(remote + WireSerializer.Hocon));
        using var a = ActorSystem.Create("bench-a", ConfigurationFactory.ParseString(remote + WireSerializer.Hocon));
        b.ActorOf(Props.Create<Echo>(), "echo");
        int port = ((ExtendedActorSystem)b).Provider.DefaultAddress.Port!.Value;
        var timeout = TimeSpan.FromSeconds(30);
        var echo = a.ActorSelection($"akka.tcp://bench-b@127.0.0.1:{port}/user/echo").ResolveOne(timeout).Result;
        var ms = new List<double>();
        bool intact = true;
        for (int r = 0; r <= rounds; r++)
        {
            var sw = Stopwatch.StartNew();
            var back = echo.Ask<LoadObjective>(message, timeout).Result;
            double t = sw.Elapsed.TotalMilliseconds;
            intact &= !ReferenceEquals(back, message) && SameFloats(message, back);
            if (r > 0) ms.Add(t);
        }
        int bytes = a.Serialization.FindSerializerFor(message).ToBinary(message).Length;
        a.Terminate().Wait();
        b.Terminate().Wait();
        return JsonSerializer.Serialize(new
        {
            workload = "serialization",
            message = "LoadObjective 1M floats, remote round trip on 127.0.0.1 (wire)",
            wire_bytes = bytes,
            round_trip_ms = Math.Round(Median(ms), 1),
            mb_per_s = Math.Round(2 * bytes / 1e6 / (Median(ms) / 1e3), 0),
            bitwise = intact,
            rounds,
        });
    }

    sealed class Echo : UntypedActor
    {
        protected override void OnReceive(object message) => Sender.Tell(message, Self);
    }

    static double Median(List<double> xs)
    {
        var s = xs.Order().ToArray();
        return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
    }
}
