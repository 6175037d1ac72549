/// The coordinator's side of a MetaGenRL cluster: its node (the first, oldest member, with the coordinator role) and
/// the actors of its Up workers (a TrialHostActor for trials, a GroupHostActor for agent groups).
module MetaGenRL.Pipeline.ClusterCoordinator

open System
open System.Diagnostics
open System.Threading
open Akka.Actor
open MetaGenRL.Actors.Cluster
open MetaGenRL.Pipeline.Errors

/// Where a coordinator listens (HOST:PORT), the shared secret, and over how many workers a meta-training population
/// spreads its groups, waiting until that many are Up (0: it runs on one worker like any trial; an experiment's
/// `--span-populations N`; `meta-train --cluster` spreads over its `--workers`).
type ClusterSpec = { Endpoint: string; Secret: string; SpanOver: int }

/// Starts the coordinator's node at `c.Endpoint` and waits until it is Up; a usage error naming the address when it
/// cannot (a bad address, a port in use).
let start (c: ClusterSpec) : ActorSystem =
    let struct (host, port) =
        try ClusterNode.ParseEndpoint(c.Endpoint, "--cluster")
        with :? ArgumentException as ex -> usageError "%s" ex.Message
    let node = NodeOptions(host, port, [], [ ClusterNode.CoordinatorRole ], c.Secret, TimeSpan.FromSeconds 5.0, TimeSpan.FromSeconds 7.0)
    let system =
        try ClusterNode.Start node
        with ex -> usageError "--cluster %s: the coordinator could not start its node there (%s)" c.Endpoint (messageOf ex)
    if not (ClusterNode.AwaitUp(system, TimeSpan.FromSeconds 30.0)) then
        system.Terminate().Wait() |> ignore
        usageError "--cluster %s: the coordinator could not start its cluster there" c.Endpoint
    system

/// The Up workers of the cluster `system` belongs to, oldest first, with the cores each advertises
/// (ClusterNode.CoresRole).
let upWorkersWithCores (system: ActorSystem) =
    (Akka.Cluster.Cluster.Get system).State.Members
    |> Seq.filter (fun m -> m.Status = Akka.Cluster.MemberStatus.Up && m.HasRole ClusterNode.WorkerRole)
    |> Seq.sortWith (fun a b -> if a.IsOlderThan b then -1 elif b.IsOlderThan a then 1 else 0)
    |> Seq.map (fun m -> m.Address, ClusterNode.CoresOf m.Roles)
    |> List.ofSeq

/// The addresses of the Up workers of the cluster `system` belongs to, oldest first.
let upWorkers (system: ActorSystem) = upWorkersWithCores system |> List.map fst

/// Whether a trial that needs `need` cores fits beside trials using `inUse` of `cores` (a trial larger than the
/// machine still runs, alone): how trials are packed onto this process's cores and onto each worker's.
let fits (cores: int) (inUse: int) (need: int) = inUse = 0 || inUse + need <= cores

/// The actor /user/`name` of the node at `address`, or None when it does not answer within 5 s.
let actorOn (system: ActorSystem) (name: string) (address: Address) =
    try Some(system.ActorSelection(sprintf "%O/user/%s" address name).ResolveOne(TimeSpan.FromSeconds 5.0).Result)
    with _ -> None

/// Waits until `count` workers are Up and their /user/`name` actors answer; returns those actors, oldest worker first.
/// Says once what it waits for; a usage error after `timeout`, and OperationCanceledException when `ct` is cancelled.
let awaitWorkers (system: ActorSystem) (count: int) (name: string) (timeout: TimeSpan) (ct: CancellationToken) : IActorRef list =
    let clock = Stopwatch.StartNew()
    let mutable said = false
    let mutable found = []
    while found.Length < count do
        ct.ThrowIfCancellationRequested()
        if clock.Elapsed > timeout then
            usageError "--cluster %s: %d of %d workers joined within %.0f s (start them with ./metagenrl worker --join %s and the same shared secret)"
                (ClusterNode.Endpoint system) found.Length count timeout.TotalSeconds (ClusterNode.Endpoint system)
        let workers = upWorkers system
        if workers.Length >= count then found <- workers |> List.truncate count |> List.choose (actorOn system name)
        if found.Length < count then
            if not said then
                eprintfn "waiting for %d worker%s to join %s" count (if count = 1 then "" else "s") (ClusterNode.Endpoint system)
                said <- true
            ct.WaitHandle.WaitOne 200 |> ignore
    found
