/// `./metagenrl worker --join HOST:PORT`: a node of a MetaGenRL cluster (Akka.Cluster) with the worker role. It joins
/// the coordinator at HOST:PORT with the shared secret, runs the trials the coordinator sends it (a TrialHostActor
/// over ExperimentRunner.runSpec, in the experiment's folder where it shares it, else in a folder of its own) and the
/// agent groups of populations spanning the cluster (a GroupHostActor over Engine.resolveBlueprint), and stays until
/// Ctrl-C or until the cluster removes it.
module MetaGenRL.Pipeline.Worker

open System
open System.IO
open System.Threading
open MetaGenRL.Actors.Cluster
open MetaGenRL.Pipeline.Errors

type WorkerRequest =
    { Join: string
      /// The address to bind and be reached at (default 127.0.0.1).
      Host: string
      /// 0: a free port.
      Port: int
      /// Roles besides "worker".
      Roles: string list
      SecretFile: string option
      /// How long to wait for the join before giving up.
      JoinTimeout: TimeSpan
      /// --local-out: this worker does not share the experiment folder and keeps its trial folders here. None: it
      /// runs trials in the experiment folder where it sees it, else under defaultLocalOut.
      LocalOut: string option
      /// --cores: how many cores the trials it is sent may use at once (one per agent), advertised to the coordinator.
      Cores: int }

/// Where a worker without --local-out keeps the trial folders of an experiment whose folder it does not see: a
/// folder of the system's temp folder named after the worker's address.
let defaultLocalOut (endpoint: string) =
    Path.Combine(Path.GetTempPath(), "metagenrl-worker-" + endpoint.Replace(':', '_'))

/// The shared secret: the first line of `file`, else the METAGENRL_CLUSTER_SECRET variable; a usage error naming both
/// when neither gives one.
let readSecret (file: string option) =
    let secret =
        match file with
        | Some f ->
            if not (File.Exists f) then usageError "--secret-file '%s': no such file" f
            (File.ReadAllLines f |> Array.tryHead |> Option.defaultValue "").Trim()
        | None -> Environment.GetEnvironmentVariable ClusterNode.SecretVariable |> Option.ofObj |> Option.defaultValue ""
    if String.IsNullOrWhiteSpace secret then
        usageError "cluster: no shared secret; set %s on every node or give --secret-file FILE" ClusterNode.SecretVariable
    secret

/// Checks the request; each message names the flag.
let validate (r: WorkerRequest) =
    (try ClusterNode.ParseEndpoint(r.Join, "--join") |> ignore with :? ArgumentException as e -> usageError "%s" e.Message)
    if r.Port < 0 || r.Port > 65535 then usageError "--port %d: expected 0 (a free port) to 65535" r.Port
    if String.IsNullOrWhiteSpace r.Host then usageError "--host: empty"
    for role in r.Roles do
        if String.IsNullOrWhiteSpace role || role |> Seq.exists (fun c -> not (Char.IsLetterOrDigit c || c = '-' || c = '_')) then
            usageError "--role '%s': use letters, digits, '-' and '_'" role
    r.LocalOut |> Option.iter (fun dir ->
        if String.IsNullOrWhiteSpace dir then usageError "--local-out: empty"
        try Directory.CreateDirectory dir |> ignore
        with :? IOException | :? UnauthorizedAccessException | :? ArgumentException as e ->
            usageError "--local-out '%s': cannot make this folder (%s)" dir e.Message)
    if r.Cores < 1 then usageError "--cores %d: must be ≥ 1" r.Cores

/// Whether `system`'s cluster still has its coordinator (a member with the coordinator role that is not leaving).
let private hasCoordinator (system: Akka.Actor.ActorSystem) =
    (Akka.Cluster.Cluster.Get system).State.Members
    |> Seq.exists (fun m -> m.HasRole ClusterNode.CoordinatorRole && (m.Status = Akka.Cluster.MemberStatus.Up || m.Status = Akka.Cluster.MemberStatus.Joining))

/// Runs the worker node until Ctrl-C (exit 130). When its coordinator leaves (an experiment ended) or the cluster
/// removes it, it starts a fresh node and joins the same address again, so one worker serves one experiment after
/// another. Exit 1 when the first join does not complete within the timeout (later joins wait for a coordinator).
let run (r: WorkerRequest) : int =
    validate r
    let secret = readSecret r.SecretFile
    let roles = ClusterNode.WorkerRole :: ClusterNode.CoresRole r.Cores :: r.Roles
    let options = NodeOptions(r.Host, r.Port, [ r.Join ], roles, secret, TimeSpan.FromSeconds 5.0, TimeSpan.FromSeconds 7.0)
    use stop = new ManualResetEventSlim(false)
    use cancel = new CancellationTokenSource()
    let onCancel = ConsoleCancelEventHandler(fun _ e -> e.Cancel <- true; stop.Set(); cancel.Cancel())
    Console.CancelKeyPress.AddHandler onCancel
    /// One node's life: Some exit code to stop with, None to join again.
    let serve (first: bool) =
        let system = ClusterNode.Start options
        try
            let folders =
                match r.LocalOut with
                | Some dir -> ExperimentRunner.LocalOnly(Path.GetFullPath dir)
                | None -> ExperimentRunner.OutOr(defaultLocalOut (ClusterNode.Endpoint system))
            system.ActorOf(TrialHostActor.Props(ExperimentRunner.runSpec system folders r.Cores), TrialHostActor.Name) |> ignore
            system.ActorOf(GroupHostActor.Props(Engine.resolveBlueprint), GroupHostActor.Name) |> ignore
            let cluster = Akka.Cluster.Cluster.Get system
            let mutable removed = false
            cluster.RegisterOnMemberRemoved(fun () -> removed <- true)
            if not (ClusterNode.AwaitUp(system, r.JoinTimeout, cancel.Token)) then
                if stop.IsSet then Some 130
                elif first then
                    eprintfn "error: could not join %s within %.0f s (is a coordinator listening there, with the same shared secret?)" r.Join r.JoinTimeout.TotalSeconds
                    Some 1
                else None
            else
                printfn "worker %s joined %s (roles: %s)" (ClusterNode.Endpoint system) r.Join (String.Join(", ", roles))
                match folders with
                | ExperimentRunner.LocalOnly dir -> printfn "trial folders under %s (--local-out: trials lost with this worker run again from the start)" dir
                | ExperimentRunner.OutOr _ -> ()
                while not stop.IsSet && not removed && hasCoordinator system do stop.Wait 1000 |> ignore
                if stop.IsSet then
                    cluster.Leave cluster.SelfAddress
                    Some 130
                else
                    printfn "the coordinator at %s is gone; waiting for the next one there" r.Join
                    None
        finally
            system.Terminate().Wait(TimeSpan.FromSeconds 10.0) |> ignore
    try
        let mutable result = serve true
        while result.IsNone do result <- serve false
        result.Value
    finally
        Console.CancelKeyPress.RemoveHandler onCancel
