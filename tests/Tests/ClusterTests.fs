/// The cluster's membership on loopback: a worker process joins a coordinator node with the shared secret, is
/// detected and removed when killed; a worker with another secret cannot join; bad worker flags are named.
module MetaGenRL.Tests.ClusterTests

open System
open System.Diagnostics
open Expecto
open Akka.Cluster
open MetaGenRL.Actors.Cluster

let private secret = "test-secret-" + Guid.NewGuid().ToString("N")

/// A coordinator node in this process: the cluster's first node, quick to detect and remove a lost worker.
let private coordinator () =
    let system = ClusterNode.Start(NodeOptions("127.0.0.1", 0, [], [ "coordinator" ], secret, TimeSpan.FromSeconds 2.0, TimeSpan.FromSeconds 3.0))
    Expect.isTrue (ClusterNode.AwaitUp(system, TimeSpan.FromSeconds 20.0)) "the coordinator is up"
    system

let private workers (system: Akka.Actor.ActorSystem) =
    (Cluster.Get system).State.Members |> Seq.filter (fun m -> m.HasRole ClusterNode.WorkerRole) |> List.ofSeq

/// Polls `ok` every 50 ms for up to `seconds`; returns the seconds it took, or fails naming `what`.
let private within (seconds: float) (what: string) (ok: unit -> bool) =
    let clock = Stopwatch.StartNew()
    while not (ok ()) && clock.Elapsed.TotalSeconds < seconds do Threading.Thread.Sleep 50
    if not (ok ()) then failtestf "%s: not within %.0f s" what seconds
    clock.Elapsed.TotalSeconds

[<Tests>]
let tests =
    testSequenced <| testList "Cluster" [
        test "a worker process joins with the shared secret, on 127.0.0.1; killed, it is found unreachable and removed" {
            use system = coordinator ()
            try
                let seed = ClusterNode.Endpoint system
                use p = CliTests.startCliWith [ ClusterNode.SecretVariable, secret ] [ "worker"; "--join"; seed ]
                within 60.0 "the worker is Up" (fun () -> workers system |> List.exists (fun m -> m.Status = MemberStatus.Up)) |> ignore
                let w = workers system |> List.exactlyOne
                Expect.equal w.Address.Host "127.0.0.1" "a worker binds 127.0.0.1 unless given --host"
                Expect.isFalse p.HasExited "the worker keeps running"
                p.Kill()
                p.WaitForExit()
                let unreachable = within 30.0 "the killed worker is unreachable" (fun () -> (Cluster.Get system).State.Unreachable |> Seq.exists (fun m -> m.Address = w.Address))
                let removed = within 30.0 "the killed worker is removed" (fun () -> workers system |> List.isEmpty)
                Expect.isLessThan removed 30.0 (sprintf "unreachable after %.1f s, removed %.1f s later" unreachable removed)
            finally system.Terminate().Wait(TimeSpan.FromSeconds 10.0) |> ignore
        }

        test "a worker with another secret cannot join" {
            use system = coordinator ()
            try
                let rc, _, err =
                    CliTests.cliWith [ ClusterNode.SecretVariable, "another-secret" ] [ "worker"; "--join"; ClusterNode.Endpoint system; "--join-timeout"; "6" ]
                Expect.equal rc 1 "exit code"
                Expect.stringContains err "could not join" "says so"
                Expect.stringContains err "same shared secret" "names the likely cause"
                Expect.isEmpty (workers system) "it never became a member"
            finally system.Terminate().Wait(TimeSpan.FromSeconds 10.0) |> ignore
        }

        test "bad worker flags and a missing secret are named" {
            let env = [ ClusterNode.SecretVariable, secret ]
            for args, text in
                [ [ "worker"; "--join"; "nohost" ], "--join 'nohost': expected HOST:PORT"
                  [ "worker"; "--join"; "127.0.0.1:70000" ], "port in 1–65535"
                  [ "worker"; "--join"; "127.0.0.1:2552"; "--port"; "-1" ], "--port -1"
                  [ "worker"; "--join"; "127.0.0.1:2552"; "--role"; "a b" ], "--role 'a b'"
                  [ "worker"; "--join"; "127.0.0.1:2552"; "--secret-file"; "/nonexistent/secret" ], "--secret-file '/nonexistent/secret': no such file" ] do
                let rc, _, err = CliTests.cliWith env args
                Expect.equal rc 2 (sprintf "%A: exit code (stderr %s)" args err)
                Expect.stringContains err text (sprintf "%A" args)
            let rc, _, err = CliTests.cliWith [ ClusterNode.SecretVariable, "" ] [ "worker"; "--join"; "127.0.0.1:2552" ]
            Expect.equal rc 2 "no secret: exit code"
            Expect.stringContains err ClusterNode.SecretVariable "names the variable"
            Expect.equal (ClusterNode.SystemName "a") (ClusterNode.SystemName "a") "the same secret, the same system"
            Expect.notEqual (ClusterNode.SystemName "a") (ClusterNode.SystemName "b") "another secret, another system"
        }
    ]
