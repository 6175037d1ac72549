// MetaGenRL benchmark harness: `dotnet run -c Release --project bench/MetaGenRL.Bench -- <workload> [--json]`.
// Each workload yields one JSON object per measurement; without --json they are printed as aligned text.
using System.Text.Json.Nodes;
using MetaGenRL.Bench;
using MetaGenRL.Core;

var workloads = new Dictionary<string, (string Help, Func<string[], IEnumerable<string>> Run)>
{
    ["env-steps"] = ("env-steps/s of every env (--env ID, --seconds S) and, for MuJoCo, the raw mj_step rate", EnvStepsBench.Run),
    ["td3-update"] = ("ms per TD3 update at paper size and small size (--hidden H --batch B)", Td3UpdateBench.Run),
    ["population"] = ("agent-steps/s of K agents in one batched group vs K groups of one, train and meta-train, small and paper size (--agents 1,4,16,64 --sizes small,paper --modes train,meta-train --steps S --paper-steps S)", PopulationBench.Run),
    ["group-update"] = ("ms per TD3 update iteration of a group of K agents, by part (--agents 1,4,16,64 --sizes small,paper --threads N)", GroupUpdateBench.Run),
    ["onpolicy"] = ("env-steps/s of a collect and gradient steps/s of the updates of PPO, on-policy REINFORCE, RL² and EPG at their default size (--algos ppo,reinforce-onpolicy,rl2,epg --envs Pendulum-v1,HalfCheetah-v2 --rounds N)", OnPolicyBench.Run),
    ["serialization"] = ("bytes and µs of a round trip of a 1M-float LoadObjective and a 4×100k-float Updated, WireSerializer vs Akka's default JSON, and ms of a remote round trip on 127.0.0.1 (--rounds N)", SerializationBench.Run),
    ["update-cycle"] = ("ms per MetaGenRL update cycle (2 critic + policy via L_α + meta-gradient) vs PyTorch (--hidden H --batch B --pytorch PATH)", UpdateCycleBench.Run),
};

if (args.Length == 0 || args[0] is "-h" or "--help" || !workloads.ContainsKey(args[0]))
{
    if (args.Length > 0 && args[0] is not ("-h" or "--help")) Console.Error.WriteLine($"unknown workload '{args[0]}'");
    Console.Error.WriteLine("usage: MetaGenRL.Bench <workload> [options] [--json]\nworkloads:");
    foreach (var (name, w) in workloads) Console.Error.WriteLine($"  {name,-12} {w.Help}");
    return args.Length == 0 || args[0] is "-h" or "--help" ? 0 : 2;
}

Native.EnsureLoaded();
bool json = args.Contains("--json");
foreach (var line in workloads[args[0]].Run(args.Skip(1).Where(a => a != "--json").ToArray()))
{
    if (json) { Console.WriteLine(line); continue; }
    var o = JsonNode.Parse(line)!.AsObject();
    Console.WriteLine(string.Join("  ", o.Select(kv => $"{kv.Key}={kv.Value?.ToJsonString().Trim('"') ?? "null"}")));
}
return 0;
