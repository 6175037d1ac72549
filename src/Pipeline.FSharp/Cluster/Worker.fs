/// `./metagenrl worker --join HOST:PORT`: a node of a MetaGenRL cluster (Akka.Cluster) with the worker role. It joins
/// the coordinator at HOST:PORT with the shared secret, runs the trials the coordinator sends it (a TrialHostActor
/// over ExperimentRunner.runSpec) and stays until Ctrl-C or until the cluster removes it.
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
      JoinTimeout: TimeSpan }

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

/// Runs the worker node until Ctrl-C (exit 130) or removal from the cluster (exit 1); exit 1 when the join does not
/// complete within the timeout.
let run (r: WorkerRequest) : int =
    validate r
    let secret = readSecret r.SecretFile
    let options =
        NodeOptions(r.Host, r.Port, [ r.Join ], ClusterNode.WorkerRole :: r.Roles, secret, TimeSpan.FromSeconds 5.0, TimeSpan.FromSeconds 7.0)
    let system = ClusterNode.Start options
    system.ActorOf(TrialHostActor.Props(ExperimentRunner.runSpec system), TrialHostActor.Name) |> ignore
    use stop = new ManualResetEventSlim(false)
    let mutable interrupted = false
    let onCancel = ConsoleCancelEventHandler(fun _ e -> e.Cancel <- true; interrupted <- true; stop.Set())
    Console.CancelKeyPress.AddHandler onCancel
    try
        if not (ClusterNode.AwaitUp(system, r.JoinTimeout)) then
            eprintfn "error: could not join %s within %.0f s (is a coordinator listening there, with the same shared secret?)" r.Join r.JoinTimeout.TotalSeconds
            1
        else
            let cluster = Akka.Cluster.Cluster.Get system
            cluster.RegisterOnMemberRemoved(fun () -> stop.Set())
            printfn "worker %s joined %s (roles: %s)" (ClusterNode.Endpoint system) r.Join (String.Join(", ", ClusterNode.WorkerRole :: r.Roles))
            stop.Wait()
            if interrupted then
                cluster.Leave cluster.SelfAddress
                130
            else
                eprintfn "error: the cluster removed this worker (its coordinator stopped or found it unreachable)"
                1
    finally
        Console.CancelKeyPress.RemoveHandler onCancel
        system.Terminate().Wait(TimeSpan.FromSeconds 10.0) |> ignore
