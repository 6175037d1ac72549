using Akka.Actor;
using MetaGenRL.Core.Agents;
using MetaGenRL.Core.Envs;
using MetaGenRL.Core.Randomness;
using MetaGenRL.Core.Torch;

namespace MetaGenRL.Actors;

/// <summary>An inner loop to run: the job, the env id, the env's seed and the torch threads to use.</summary>
public sealed record RunInnerLoop(EpgJob Job, string EnvId, int EnvSeed, int TorchThreads);

/// <summary>An inner loop's outcome, for its member.</summary>
public sealed record InnerLoopDone(int Member, EpgLifetime Lifetime);

/// <summary>
/// Runs EPG inner loops. Each one trains a fresh agent on its own env with the job's φ, on this actor's pinned thread
/// (TorchSharp dispose scopes and no_grad are per thread), and replies <see cref="InnerLoopDone"/>, or a
/// <see cref="Status.Failure"/> naming the member and env when the loop throws.
/// </summary>
public sealed class InnerLoopActor : ReceiveActor
{
    public static Props Props(EpgSettings settings) =>
        Akka.Actor.Props.Create(() => new InnerLoopActor(settings)).WithDispatcher(Population.GroupDispatcher);

    public InnerLoopActor(EpgSettings settings)
    {
        Receive<RunInnerLoop>(m =>
        {
            try
            {
                if (m.TorchThreads > 0) TorchThreads.Use(m.TorchThreads);
                using var env = EnvRegistry.Make(m.EnvId, m.EnvSeed);
                var life = EpgInnerLoop.Run(settings, m.Job.Phi, env, m.Job.Steps, m.Job.AgentSeed);
                Sender.Tell(new InnerLoopDone(m.Job.Member, life));
            }
            catch (Exception ex)
            {
                Sender.Tell(new Status.Failure(new InvalidOperationException($"EPG inner loop {m.Job.Member} on {m.EnvId}: {ex.Message}", ex)));
            }
        });
    }
}

/// <summary>
/// A pool of <see cref="InnerLoopActor"/>s in an ActorSystem: runs an ES epoch's inner loops concurrently, as many at
/// once as it has workers, and returns their lifetimes in member order, so the result does not depend on which worker
/// ran what or when. Each inner loop makes its own env from the env id and a seed derived from the agent seed.
/// </summary>
public sealed class EpgWorkerPool : IDisposable
{
    readonly ActorSystem _system;
    readonly bool _ownsSystem;
    readonly IActorRef[] _workers;
    readonly int _torchThreads;

    /// <param name="system">the ActorSystem to run in (made with <see cref="Population.SystemConfig"/>); null: an own one</param>
    /// <param name="workers">inner loops at once (≥ 1)</param>
    /// <param name="torchThreads">intra-op threads per inner loop (0: leave torch's setting)</param>
    public EpgWorkerPool(ActorSystem? system, EpgSettings settings, int workers, int torchThreads = 1)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(workers, 1);
        _ownsSystem = system is null;
        _system = system ?? ActorSystem.Create($"epg-{Guid.NewGuid():N}"[..12], Population.SystemConfig);
        _workers = Enumerable.Range(0, workers).Select(_ => _system.ActorOf(InnerLoopActor.Props(settings))).ToArray();
        _torchThreads = torchThreads;
    }

    /// <summary>The env seed of an inner loop with agent seed <paramref name="agentSeed"/>.</summary>
    public static int EnvSeed(long agentSeed) => Seeds.DeriveInt(agentSeed, Seeds.EnvStream);

    /// <summary>Runs <paramref name="jobs"/> (env ids from <paramref name="envIds"/>) and returns their lifetimes in
    /// the jobs' order; throws the first failure (by member) once all have ended, or on cancellation.</summary>
    public IReadOnlyList<EpgLifetime> Run(IReadOnlyList<EpgJob> jobs, IReadOnlyList<string> envIds, CancellationToken ct = default)
    {
        var queue = new Queue<int>(Enumerable.Range(0, jobs.Count));
        var results = new EpgLifetime?[jobs.Count];
        var errors = new Exception?[jobs.Count];
        async Task Drain(IActorRef worker)
        {
            while (true)
            {
                int i;
                lock (queue) { if (queue.Count == 0 || ct.IsCancellationRequested) return; i = queue.Dequeue(); }
                var j = jobs[i];
                try
                {
                    var done = await worker.Ask<InnerLoopDone>(new RunInnerLoop(j, envIds[j.EnvIndex], EnvSeed(j.AgentSeed), _torchThreads), ct).ConfigureAwait(false);
                    results[i] = done.Lifetime;
                }
                catch (OperationCanceledException) { return; }
                catch (Exception ex) { errors[i] = ex; }
            }
        }
        Task.WaitAll(_workers.Select(Drain).ToArray());
        ct.ThrowIfCancellationRequested();
        var first = errors.FirstOrDefault(e => e is not null);
        if (first is not null) throw first;
        return results.Select(r => r!).ToArray();
    }

    public void Dispose()
    {
        foreach (var w in _workers) _system.Stop(w);
        if (_ownsSystem) _system.Terminate().Wait();
    }
}
