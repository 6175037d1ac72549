/// The cluster on loopback: a worker process joins a coordinator node with the shared secret, is detected and removed
/// when killed; a worker with another secret cannot join; bad worker flags are named; a coordinator and two worker
/// processes run a sweep with the rows of a local run, also when a worker is killed mid-sweep.
module MetaGenRL.Tests.ClusterTests

open System
open System.Diagnostics
open Expecto
open Akka.Cluster
open MetaGenRL.Actors.Cluster
open MetaGenRL.Pipeline
open MetaGenRL.Pipeline.Experiment
open MetaGenRL.Tests.TestUtil

let private secret = "test-secret-" + Guid.NewGuid().ToString("N")

/// A coordinator node in this process: the cluster's first node, quick to detect and remove a lost worker.
let private coordinator () =
    let system = ClusterNode.Start(NodeOptions("127.0.0.1", 0, [], [ ClusterNode.CoordinatorRole ], secret, TimeSpan.FromSeconds 2.0, TimeSpan.FromSeconds 3.0))
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

/// A free TCP port on 127.0.0.1 (the OS's choice, released at once).
let private freePort () =
    let l = Net.Sockets.TcpListener(Net.IPAddress.Loopback, 0)
    l.Start()
    let port = (l.LocalEndpoint :?> Net.IPEndPoint).Port
    l.Stop()
    port

/// A trial's rows in the experiment folder `out` but the checkpoint markers: (agent, env_step, metric, value).
let private rowsOf (out: string) (t: Trial) =
    Results.readParquet (IO.Path.Combine(ExperimentRunner.trialDir out t, "metrics.parquet"))
    |> List.filter (fun r -> r.metric <> "checkpoint")
    |> List.map (fun r -> r.agent, r.env_step, r.metric, r.value)

/// A small sweep of TD3 trials on Pendulum-v1 (micro size, `steps` env steps each, one per seed, a checkpoint every
/// 500 steps: seconds each), at its scale, with its trials.
let private td3Sweep (name: string) (seeds: int list) (steps: int64) =
    let e =
        atScale { Experiment.create name with
                    Variants = []; MetaTrain = []; MetaTest = [ "Pendulum-v1" ]; Baselines = [ "td3" ]; BaselineSeeds = seeds
                    Scale = Micro; MetaTestSteps = Some steps; Set = [ "checkpoint_every", "500" ] }
    e, expand e

/// Run options for a test experiment in `out`: one core, one torch thread.
let private oneCore (out: string) : ExperimentRunner.RunOptions =
    { Out = out; Cores = 1; TorchThreads = 1; LossLogEvery = 100; Command = "test" }

/// Runs `e` to completion in this process in `root`/local (the reference a cluster run is compared with).
let private localRun (root: string) (e: Experiment) (trials: Trial list) =
    let local = IO.Path.Combine(root, "local")
    let _, status = ExperimentRunner.run e trials (oneCore local) Threading.CancellationToken.None (fun _ w -> w.Wait())
    Expect.equal status "complete" "the local run"
    local

/// A 4-agent MetaGenRL population in two groups of two on Pendulum, small and quick (sync, a checkpoint every 500
/// steps, one torch thread per group so that every node computes alike).
let private spanArgs (steps: int) (out: string) =
    [ "meta-train"; "--envs"; "Pendulum-v1"; "--agents"; "4"; "--steps"; string steps; "--seed"; "0"; "--scale"; "micro"
      "--set"; "group_size=2"; "--torch-threads"; "1"; "--checkpoint-every"; "500"; "--out"; out ]

/// The environment of a spanning run's processes: the secret, and states sent in parts above 4 KiB (every agent state
/// crosses in parts, LargeMessages).
let private spanEnv (root: string) =
    let file = IO.Path.Combine(root, "akka.conf")
    IO.File.WriteAllText(file, sprintf "%s = 4KiB\n" LargeMessages.SplitAbovePath)
    [ ClusterNode.SecretVariable, secret; ClusterNode.ConfigVariable, file ]

/// The single-process run of `spanArgs steps` in `root`/local, then `body out endpoint env` with two worker processes
/// joined to a fresh coordinator address (environment spanEnv), killed afterwards; returns (local folder, out).
let private spanCase (root: string) (steps: int) (body: string -> string -> (string * string) list -> unit) =
    let local = IO.Path.Combine(root, "local")
    let rc, _, err = CliTests.cli (spanArgs steps local)
    Expect.equal rc 0 (sprintf "the single-process run; stderr %s" err)
    let out = IO.Path.Combine(root, "span")
    let endpoint = sprintf "127.0.0.1:%d" (freePort ())
    let env = spanEnv root
    use a = CliTests.startCliWith env [ "worker"; "--join"; endpoint ]
    use b = CliTests.startCliWith env [ "worker"; "--join"; endpoint ]
    try body out endpoint env
    finally
        for p in [ a; b ] do (try p.Kill() with _ -> ())
    local, out

/// Runs the sweep `e` into `out` through a coordinator with two worker processes (worker i with the extra flags
/// `workerArgs i`) and kills the first worker (kill -9) once a trial running on it is `ripe`; returns the trial states,
/// the experiment's status and the trial that was on the killed worker (None: none was killed).
let private sweepKillingAWorker (e: Experiment) (trials: Trial list) (out: string) (workerArgs: int -> string list)
                                (ripe: ExperimentRunner.TrialRun -> bool) =
    let endpoint = sprintf "127.0.0.1:%d" (freePort ())
    let workerPorts = [ freePort (); freePort () ]
    let victim = sprintf "127.0.0.1:%d" workerPorts.Head
    let mutable lost : Trial option = None
    let watch (runs: ExperimentRunner.TrialRun list) (work: Threading.Tasks.Task) =
        let start i =
            CliTests.startCliWith [ ClusterNode.SecretVariable, secret ] ([ "worker"; "--join"; endpoint; "--port"; string workerPorts.[i] ] @ workerArgs i)
        use a = start 0
        use b = start 1
        try
            while not work.IsCompleted do
                if lost.IsNone then
                    for r in runs do
                        match (try Results.readRunJson (ExperimentRunner.trialDir out r.Trial) with _ -> None) with
                        | Some j when lost.IsNone && j.ContainsKey "worker" && (string j.["worker"]).Contains victim
                                      && r.Status = ExperimentRunner.Running && ripe r ->
                            a.Kill()
                            lost <- Some r.Trial
                        | _ -> ()
                work.Wait 20 |> ignore
        finally
            for p in [ a; b ] do (try p.Kill() with _ -> ())
    let spec : ClusterCoordinator.ClusterSpec = { Endpoint = endpoint; Secret = secret; SpanOver = 0 }
    let runs, status = ExperimentRunner.runOn (Some spec) e trials (oneCore out) Threading.CancellationToken.None watch
    runs, status, lost

/// A run folder's rows: (agent, env_step, metric, value), in file order.
let private populationRows (out: string) =
    Results.readParquet (IO.Path.Combine(out, "metrics.parquet")) |> List.map (fun r -> r.agent, r.env_step, r.metric, r.value)

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

        test "a worker's METAGENRL_AKKA_CONFIG file takes precedence over its own settings; a missing one is named" {
            use system = coordinator ()
            let file = IO.Path.GetTempFileName()
            try
                IO.File.WriteAllText(file, "akka.cluster.roles = [\"worker\", \"gpu\"]\n")
                let env = [ ClusterNode.SecretVariable, secret; ClusterNode.ConfigVariable, file ]
                use p = CliTests.startCliWith env [ "worker"; "--join"; ClusterNode.Endpoint system ]
                within 60.0 "the worker is Up" (fun () -> workers system |> List.exists (fun m -> m.Status = MemberStatus.Up)) |> ignore
                Expect.isTrue ((workers system |> List.exactlyOne).HasRole "gpu") "the file's roles"
                p.Kill()
                let rc, _, err = CliTests.cliWith [ ClusterNode.SecretVariable, secret; ClusterNode.ConfigVariable, file + ".missing" ] [ "worker"; "--join"; ClusterNode.Endpoint system ]
                Expect.equal rc 2 "exit code"
                Expect.stringContains err (sprintf "%s=%s.missing: no such file" ClusterNode.ConfigVariable file) "names the variable and the file"
            finally
                IO.File.Delete file
                system.Terminate().Wait(TimeSpan.FromSeconds 10.0) |> ignore
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

        test "a trial crosses as JSON unchanged; a worker that shares --out but does not see the trial folder refuses it, naming the folder; one that does not share --out refuses a resume, naming the folder and the checkpoint" {
            let e =
                { Experiment.create "wire-trials" with
                    MetaTrain = [ [ "Pendulum-v1"; "Reacher-v2" ] ]; MetaTest = [ "Pendulum-v1"; "Hopper-v2" ]
                    Variants = [ objective "full"; rl2; epg ]; Baselines = [ "td3"; "ppo" ]
                    Sweep = [ axis "obj_func_second_order_stepsize" [ 0.001; 0.01 ] ]; Scale = Tiny }
            let trials = expand e
            for t in trials do
                Expect.equal (trialOfJson (trialToJson t)) t (t.Id + " round-trips")
            use system = Akka.Actor.ActorSystem.Create("worker-alone")
            let root = tempDir "worker-alone"
            try
                // the coordinator's folder, as this worker sees it at the same path: its token, no trial folders
                let out = IO.Path.Combine(root, "results")
                IO.Directory.CreateDirectory out |> ignore
                IO.File.WriteAllText(ExperimentRunner.clusterTokenPath out, "token-1")
                let local = IO.Path.Combine(root, "local")
                let t = trials |> List.find (fun t -> t.Phase = BaselinePhase)
                let refusal (folders: ExperimentRunner.WorkerFolders) (token: string) (resumeIndex: int option) =
                    let host = system.ActorOf(TrialHostActor.Props(ExperimentRunner.runSpec system folders 1))
                    let inbox = Akka.Actor.Inbox.Create system
                    let spec = Text.Json.Nodes.JsonObject()
                    spec["trial"] <- trialToJson t
                    for k, v in [ "mode", "Sync"; "device", "cpu"; "out", out; "out_token", token; "command", "test" ] do
                        spec[k] <- Text.Json.Nodes.JsonValue.Create(v: string)
                    for k, v in [ "torch_threads", 1; "loss_log_every", 100 ] do spec[k] <- Text.Json.Nodes.JsonValue.Create(v: int)
                    spec["resume"] <- Text.Json.Nodes.JsonValue.Create resumeIndex.IsSome
                    resumeIndex |> Option.iter (fun i -> spec["resume_index"] <- Text.Json.Nodes.JsonValue.Create i)
                    host.Tell(RunTrialOnWorker(t.Id, spec.ToJsonString(), inbox.Receiver), Akka.Actor.ActorRefs.NoSender)
                    match inbox.Receive(TimeSpan.FromSeconds 20.0) with
                    | :? TrialError as err ->
                        Expect.isFalse err.Stopped "a failure, not a stop"
                        "error: " + err.Message
                    | :? TrialRefused as r -> "refused: " + r.Reason   // another worker may run it
                    | other -> failtestf "expected a TrialError or TrialRefused, got %A" other
                // the token matches: it shares --out, and the trial's folder is missing there: an error
                let msg = refusal (ExperimentRunner.OutOr local) "token-1" None
                Expect.stringStarts msg "error: " "the shared folder is broken: the trial fails"
                Expect.stringContains msg (sprintf "does not see the trial folder %s" (ExperimentRunner.trialDir out t)) "names the folder"
                Expect.stringContains msg "same path" "says what is needed"
                // --local-out, or another token (a copy of the folder, another coordinator): it does not share --out
                for folders, token in [ ExperimentRunner.LocalOnly local, "token-1"; ExperimentRunner.OutOr local, "token-2" ] do
                    let msg = refusal folders token (Some 2)
                    let what = sprintf "%A, %s" folders token
                    Expect.stringStarts msg "refused: " (what + ": refused, for a worker that shares --out")
                    Expect.stringContains msg (sprintf "does not share the experiment folder %s" out) (what + ": names the experiment folder")
                    Expect.stringContains msg (ExperimentRunner.localExperimentDir local out) (what + ": names its own folder")
                    Expect.stringContains msg (sprintf "cannot resume trial %s from checkpoint 2 in %s" t.Id (ExperimentRunner.trialDir out t))
                        (what + ": names the checkpoint and the trial folder")
                Expect.isFalse (IO.Directory.Exists(ExperimentRunner.trialDir (ExperimentRunner.localExperimentDir local out) t)) "nothing was run"
            finally
                system.Terminate().Wait() |> ignore
                IO.Directory.Delete(root, true)
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

        test "a coordinator and two worker processes run a sweep with a local run's rows; a worker killed mid-sweep loses no trial and doubles none" {
            let root = tempDir "cluster-sweep"
            let e, trials = td3Sweep "cluster" [ 0; 1; 2 ] 2000L
            try
                let local = localRun root e trials
                let out = IO.Path.Combine(root, "cluster")
                // the first worker is killed once a trial on it has passed its first checkpoint
                let runs, status, lost = sweepKillingAWorker e trials out (fun _ -> []) (fun r -> r.Steps >= 600L)
                Expect.equal status "complete" "the cluster run"
                Expect.isSome lost "a worker was killed mid-trial"
                for t in trials do
                    Expect.equal (rowsOf out t) (rowsOf local t) (t.Id + ": the local run's rows, each once")
                let notes = runs |> List.collect (fun r -> List.ofSeq r.Notes)
                Expect.exists notes (fun n -> n.Contains "left the cluster" && n.Contains "runs again on another worker") "the lost trial was re-run"
                let resumed =
                    trials |> List.filter (fun t -> (Results.readRunJson (ExperimentRunner.trialDir out t)).Value.ContainsKey "resumes")
                Expect.isNonEmpty resumed "the re-run resumed from a checkpoint"
            finally IO.Directory.Delete(root, true)
        }

        test "meta-train --cluster and a script's cluster flags: bad flags are named before anything starts" {
            let env = [ ClusterNode.SecretVariable, secret ]
            let out = IO.Path.Combine(IO.Path.GetTempPath(), "span-flags-" + Guid.NewGuid().ToString("N"))
            for args, text in
                [ [ "--workers"; "2" ], "--workers: only with --cluster HOST:PORT"
                  [ "--secret-file"; "/etc/hostname" ], "--secret-file: only with --cluster HOST:PORT"
                  [ "--cluster"; "127.0.0.1:2552"; "--workers"; "0" ], "--workers 0: must be ≥ 1"
                  [ "--cluster"; "nohost" ], "--cluster 'nohost': expected HOST:PORT"
                  [ "--cluster"; "127.0.0.1:2552"; "--algo"; "rl2" ], "--cluster: only a metagenrl population spans nodes (--algo rl2" ] do
                let rc, _, err = CliTests.cliWith env ([ "meta-train"; "--envs"; "Pendulum-v1"; "--agents"; "2"; "--out"; out ] @ args)
                Expect.equal rc 2 (sprintf "%A: exit code (stderr %s)" args err)
                Expect.stringContains err text (sprintf "%A" args)
            let rc, _, err = CliTests.cliWith [ ClusterNode.SecretVariable, "" ] [ "meta-train"; "--envs"; "Pendulum-v1"; "--cluster"; "127.0.0.1:2552"; "--out"; out ]
            Expect.equal rc 2 "no secret: exit code"
            Expect.stringContains err ClusterNode.SecretVariable "names the variable"
            Expect.isFalse (IO.File.Exists(IO.Path.Combine(out, "metrics.parquet"))) "nothing written"
            if IO.Directory.Exists out then IO.Directory.Delete(out, true)
            // an experiment script: the cluster's own flags only with --cluster, refused before anything is written
            let e, _ = td3Sweep "flags" [ 0 ] 100L
            for flags in [ [ "--span-populations"; "2" ]; [ "--secret-file"; "/etc/hostname" ] ] do
                Expect.equal (Script.main e (Array.ofList ([ "x.fsx"; "--out"; out; "--no-report" ] @ flags))) 2 (sprintf "%A: exit code" flags)
                Expect.isFalse (IO.Directory.Exists out) (sprintf "%A: nothing written" flags)
        }

        test "trials are packed onto a worker by the cores it advertises (--cores), as a local run packs them" {
            Expect.equal (ClusterNode.CoresOf [ "worker"; ClusterNode.CoresRole 8 ]) 8 "cores-8"
            Expect.equal (ClusterNode.CoresOf [ "worker" ]) 1 "none advertised: one at a time"
            Expect.equal (ClusterNode.CoresOf [ "cores-x"; "cores-0" ]) 1 "malformed roles count as none"
            Expect.isTrue (ClusterCoordinator.fits 2 0 4) "a trial larger than the worker runs alone"
            Expect.isFalse (ClusterCoordinator.fits 2 1 2) "not beside another"
            let root = tempDir "cluster-cores"
            let e, trials = td3Sweep "cores" [ 0; 1; 2 ] 1500L
            let opts = oneCore (IO.Path.Combine(root, "out"))
            let endpoint = sprintf "127.0.0.1:%d" (freePort ())
            let mutable most = 0
            let watch (runs: ExperimentRunner.TrialRun list) (work: Threading.Tasks.Task) =
                use w = CliTests.startCliWith [ ClusterNode.SecretVariable, secret ] [ "worker"; "--join"; endpoint; "--cores"; "2" ]
                try
                    while not work.IsCompleted do
                        most <- max most (runs |> List.filter (fun r -> r.Status = ExperimentRunner.Running) |> List.length)
                        work.Wait 20 |> ignore
                finally (try w.Kill() with _ -> ())
            try
                let _, status = ExperimentRunner.runOn (Some { Endpoint = endpoint; Secret = secret; SpanOver = 0 }) e trials opts Threading.CancellationToken.None watch
                Expect.equal status "complete" "the sweep"
                Expect.equal most 2 "two one-agent trials at a time on a worker with 2 cores, never three"
            finally IO.Directory.Delete(root, true)
        }

        test "a trial that only a worker sharing --out can resume is refused by one that does not; with no other worker it fails, and runs on one that shares" {
            let root = tempDir "cluster-refused"
            let e, trials = td3Sweep "refused" [ 0; 1 ] 1500L
            let first, second = trials.[0], trials.[1]
            let opts = oneCore (IO.Path.Combine(root, "out"))
            try
                // here, one trial at a time, interrupted once the first has a checkpoint: the second never started
                use cts = new Threading.CancellationTokenSource()
                let _, status =
                    ExperimentRunner.run e trials opts cts.Token (fun _ work ->
                        while not work.IsCompleted do
                            if (MetaGenRL.Core.Checkpoints.CheckpointStore(ExperimentRunner.trialDir opts.Out first)).Latest().HasValue then cts.Cancel()
                            work.Wait 20 |> ignore)
                Expect.equal status "interrupted" "the local run"
                let withWorker (args: string list) =
                    let endpoint = sprintf "127.0.0.1:%d" (freePort ())
                    ExperimentRunner.runOn (Some { Endpoint = endpoint; Secret = secret; SpanOver = 0 }) e trials opts Threading.CancellationToken.None (fun _ work ->
                        use w = CliTests.startCliWith [ ClusterNode.SecretVariable, secret ] ([ "worker"; "--join"; endpoint ] @ args)
                        try work.Wait() finally (try w.Kill() with _ -> ()))
                // a worker that does not share --out: it runs the second from the start, and refuses the first
                let runs, status = withWorker [ "--local-out"; IO.Path.Combine(root, "local") ]
                Expect.equal status "failed" "the first trial could not run"
                let runOf (t: Trial) = runs |> List.find (fun r -> r.Trial.Id = t.Id)
                Expect.equal (runOf second).Status ExperimentRunner.Complete "the second ran from the start"
                match (runOf first).Status with
                | ExperimentRunner.Failed msg ->
                    Expect.stringContains msg "every worker in the cluster refused it" "says why"
                    Expect.stringContains msg "cannot resume trial" "with the worker's reason"
                | s -> failtestf "the first: expected failed, got %A" s
                Expect.exists (List.ofSeq (runOf first).Notes) (fun n -> n.Contains "refused it") "a note names the worker"
                let onDisk = (Results.readRunJson (ExperimentRunner.trialDir opts.Out first)).Value["status"].GetValue<string>()
                Expect.equal onDisk "interrupted" "its run.json: interrupted (its checkpoint kept), not failed"
                // a worker that shares --out resumes it from its checkpoint
                let runs, status = withWorker []
                Expect.equal status "complete" "the second cluster run"
                ignore runs
                let whole = { opts with Out = IO.Path.Combine(root, "whole") }
                let _, status = ExperimentRunner.run e trials whole Threading.CancellationToken.None (fun _ w -> w.Wait())
                Expect.equal status "complete" "an uninterrupted local run"
                for t in trials do Expect.equal (rowsOf opts.Out t) (rowsOf whole.Out t) (t.Id + ": the uninterrupted rows, each once")
            finally IO.Directory.Delete(root, true)
        }

        test "a 4-agent population split over two worker processes gives the rows of the single-process run in sync mode" {
            let root = tempDir "cluster-span"
            try
                let local, out =
                    spanCase root 1000 (fun out endpoint env ->
                        let rc, text, err = CliTests.cliWith env (spanArgs 1000 out @ [ "--cluster"; endpoint; "--workers"; "2" ])
                        Expect.equal rc 0 (sprintf "the spanning run; stderr %s" err)
                        Expect.stringContains text "2 groups on 2 workers" "says where the groups run")
                Expect.equal (populationRows out) (populationRows local) "every row, checkpoint markers included, in order"
                // the agent states came to the coordinator in parts and were put together byte for byte
                let store dir = MetaGenRL.Core.Checkpoints.CheckpointStore dir
                Expect.equal (List.ofSeq ((store out).List())) (List.ofSeq ((store local).List())) "the same checkpoints"
                for i in (store local).List() do
                    let mine, theirs = (store out).Load(i).Parts, (store local).Load(i).Parts
                    Expect.equal (Seq.sort mine.Keys |> List.ofSeq) (Seq.sort theirs.Keys |> List.ofSeq) "the same parts"
                    for kv in theirs do Expect.isTrue (kv.Value = mine[kv.Key]) (sprintf "checkpoint %d %s byte for byte" i kv.Key)
                let workers = (Results.readRunJson out).Value["workers"].AsArray()
                Expect.equal workers.Count 2 "run.json names both workers"
            finally IO.Directory.Delete(root, true)
        }

        test "an experiment with --span-populations: its meta-train population spreads over two workers, with a local run's rows for every trial" {
            let root = tempDir "cluster-span-experiment"
            let e =
                atScale { Experiment.create "span-experiment" with
                            MetaTrain = [ [ "Pendulum-v1" ] ]; MetaTest = [ "Pendulum-v1" ]; Variants = [ objective "full" ]; Baselines = [ "td3" ]
                            Agents = Some 4; Scale = Micro; MetaTrainSteps = Some 600L; MetaTestSteps = Some 400L
                            Set = [ "group_size", "2"; "checkpoint_every", "300" ] }
            let trials = expand e
            try
                let local = localRun root e trials
                let out = IO.Path.Combine(root, "span")
                let endpoint = sprintf "127.0.0.1:%d" (freePort ())
                let env = spanEnv root
                let metaTrain = trials |> List.find (fun t -> t.Phase = MetaTrainPhase)
                let mutable alone = true
                let runs, status =
                    ExperimentRunner.runOn (Some { Endpoint = endpoint; Secret = secret; SpanOver = 2 }) e trials (oneCore out)
                        Threading.CancellationToken.None (fun runs work ->
                            use a = CliTests.startCliWith env [ "worker"; "--join"; endpoint; "--cores"; "1" ]
                            use b = CliTests.startCliWith env [ "worker"; "--join"; endpoint; "--cores"; "1" ]
                            try
                                while not work.IsCompleted do
                                    let running = runs |> List.filter (fun r -> r.Status = ExperimentRunner.Running)
                                    if running |> List.exists (fun r -> r.Trial.Id = metaTrain.Id) && running.Length > 1 then alone <- false
                                    work.Wait 20 |> ignore
                            finally
                                for p in [ a; b ] do (try p.Kill() with _ -> ()))
                Expect.equal status "complete" "the cluster run"
                Expect.isTrue alone "nothing ran beside the spanning trial"
                ignore runs
                for t in trials do Expect.equal (rowsOf out t) (rowsOf local t) (t.Id + ": the local run's rows")
                let json = (Results.readRunJson (ExperimentRunner.trialDir out metaTrain)).Value
                Expect.equal (json["workers"].AsArray().Count) 2 "the meta-train trial's run.json names both workers"
                Expect.isNull json["worker"] "…and no single worker"
            finally IO.Directory.Delete(root, true)
        }

        test "a spanning run whose coordinator is killed resumes with --resume on the same workers, with the uninterrupted single-process rows" {
            let root = tempDir "cluster-span-resume"
            try
                let local, out =
                    spanCase root 1500 (fun out endpoint env ->
                        let args = spanArgs 1500 out @ [ "--cluster"; endpoint; "--workers"; "2" ]
                        use first = CliTests.startCliWith env args
                        within 120.0 "the first checkpoint" (fun () -> first.HasExited || (MetaGenRL.Core.Checkpoints.CheckpointStore out).Latest().HasValue) |> ignore
                        Expect.isFalse first.HasExited "the first coordinator was still running"
                        first.Kill()
                        first.WaitForExit()
                        // the workers see their coordinator gone, start fresh nodes and join the same address again
                        let rc, text, err = CliTests.cliWith env (args @ [ "--resume" ])
                        Expect.equal rc 0 (sprintf "the resumed run; stderr %s" err)
                        Expect.stringContains text "resuming from checkpoint" "from a checkpoint")
                Expect.equal (populationRows out) (populationRows local) "the uninterrupted rows, each once, in order"
            finally IO.Directory.Delete(root, true)
        }

        test "a worker killed mid-run: its group is rebuilt on the other worker from the last checkpoint and the run completes" {
            let root = tempDir "cluster-span-loss"
            try
                let out = IO.Path.Combine(root, "span")
                let endpoint = sprintf "127.0.0.1:%d" (freePort ())
                let env = spanEnv root
                use a = CliTests.startCliWith env [ "worker"; "--join"; endpoint ]
                use b = CliTests.startCliWith env [ "worker"; "--join"; endpoint ]
                try
                    let run = Threading.Tasks.Task.Run(fun () -> CliTests.cliWith env (spanArgs 1500 out @ [ "--cluster"; endpoint; "--workers"; "2" ]))
                    within 120.0 "the first checkpoint" (fun () -> run.IsCompleted || (MetaGenRL.Core.Checkpoints.CheckpointStore out).Latest().HasValue) |> ignore
                    Expect.isFalse run.IsCompleted "the run was still going"
                    a.Kill()
                    let rc, text, err = run.Result
                    Expect.equal rc 0 (sprintf "the run completes; stderr %s" err)
                    Expect.stringContains text "step 1500" "to its budget"
                    Expect.stringContains err "left the cluster" "the failure is shown as it happens"
                finally
                    for p in [ a; b ] do (try p.Kill() with _ -> ())
                let rows = Results.readParquet (IO.Path.Combine(out, "metrics.parquet"))
                let failed = rows |> List.filter (fun r -> r.metric = "agent_failure") |> List.map (fun r -> r.agent) |> List.sort
                Expect.isTrue (failed = [ 0; 1 ] || failed = [ 2; 3 ]) (sprintf "the agents of one group failed once each: %A" failed)
                for agent in failed do
                    let restart = rows |> List.find (fun r -> r.metric = "agent_restart" && r.agent = agent)
                    Expect.isGreaterThanOrEqual restart.env_step 500L "it failed after the first checkpoint"
                    let after = rows |> List.skipWhile (fun r -> not (r.metric = "agent_restart" && r.agent = agent))
                    let next = after |> List.tryFind (fun r -> r.agent = agent && r.metric = "episode_return")
                    Expect.isSome next (sprintf "agent %d collects again after its restore" agent)
                let json = (Results.readRunJson out).Value
                Expect.equal (json["status"].GetValue<string>()) "complete" "run.json"
                Expect.stringContains (json.ToJsonString()) "left the cluster" "run.json records the failure"
            finally IO.Directory.Delete(root, true)
        }

        test "a coordinator killed mid-sweep and started again on the same folder finishes it with the same worker, with a local run's rows" {
            let root = tempDir "cluster-restart"
            let declaration =
                """{ Experiment.create "restart" with
                        Variants = []; MetaTrain = []; MetaTest = [ "Pendulum-v1" ]; Baselines = [ "td3" ]; BaselineSeeds = [ 0; 1; 2 ]
                        Scale = Micro; MetaTestSteps = Some 2000L; Set = [ "checkpoint_every", "500" ] }"""
            let e =
                { Experiment.create "restart" with
                    Variants = []; MetaTrain = []; MetaTest = [ "Pendulum-v1" ]; Baselines = [ "td3" ]; BaselineSeeds = [ 0; 1; 2 ]
                    Scale = Micro; MetaTestSteps = Some 2000L; Set = [ "checkpoint_every", "500" ] }
            let script = IO.Path.Combine(root, "restart.fsx")
            IO.File.WriteAllText(script,
                sprintf "#load \"%s\"\nopen MetaGenRL.Pipeline\nopen MetaGenRL.Pipeline.Experiment\nexit (Script.main (%s) fsi.CommandLineArgs)\n"
                    (IO.Path.Combine(repoRoot, "experiments", "common.fsx")) declaration)
            let endpoint = sprintf "127.0.0.1:%d" (freePort ())
            let out = IO.Path.Combine(root, "cluster")
            let coordinator () =
                let psi = ProcessStartInfo("dotnet", RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
                for a in [ "fsi"; script; "--"; "--cluster"; endpoint; "--out"; out; "--no-report" ] do psi.ArgumentList.Add a
                psi.Environment[ClusterNode.SecretVariable] <- secret
                Process.Start psi
            let trials = expand (atScale e)
            use worker = CliTests.startCliWith [ ClusterNode.SecretVariable, secret ] [ "worker"; "--join"; endpoint ]
            try
                // the first coordinator: killed once a trial is complete
                use first = coordinator ()
                first.OutputDataReceived.Add ignore; first.ErrorDataReceived.Add ignore
                first.BeginOutputReadLine(); first.BeginErrorReadLine()
                within 180.0 "a trial completes under the first coordinator" (fun () ->
                    trials |> List.exists (fun t -> Results.isComplete (ExperimentRunner.trialDir out t))) |> ignore
                Expect.isFalse first.HasExited "the first coordinator was still running"
                first.Kill()
                first.WaitForExit()
                Expect.isFalse (trials |> List.forall (fun t -> Results.isComplete (ExperimentRunner.trialDir out t))) "the sweep was not finished"
                // the second: the same command on the same folder; the worker rejoins it
                use second = coordinator ()
                let text = second.StandardOutput.ReadToEndAsync()
                let err = second.StandardError.ReadToEndAsync()
                let exited = second.WaitForExit 300_000
                if not exited then second.Kill true
                Expect.isTrue exited "the second coordinator finished within 5 minutes"
                Expect.equal second.ExitCode 0 (sprintf "the second coordinator; stderr %s" err.Result)
                Expect.stringContains text.Result "experiment restart: complete" "it finished the sweep"
                let local = localRun root (atScale e) trials
                for t in trials do Expect.equal (rowsOf out t) (rowsOf local t) (t.Id + ": the local run's rows, each once")
            finally
                (try worker.Kill() with _ -> ())
                IO.Directory.Delete(root, true)
        }

        test "two workers that do not share --out (--local-out) run a sweep with a local run's rows; a worker killed mid-trial after a checkpoint in its own folder: the trial runs again from the start, each row once" {
            let root = tempDir "cluster-unshared"
            let e, trials = td3Sweep "unshared" [ 0; 1; 2 ] 2000L
            try
                let local = localRun root e trials
                let out = IO.Path.Combine(root, "cluster")
                let localOuts = [ IO.Path.Combine(root, "worker-a"); IO.Path.Combine(root, "worker-b") ]
                // the victim's own folder of a trial: where its checkpoints go
                let victimDir (t: Trial) = ExperimentRunner.trialDir (ExperimentRunner.localExperimentDir localOuts.Head out) t
                // the first worker is killed once a trial running on it has written a checkpoint in its own folder
                let runs, status, lost =
                    sweepKillingAWorker e trials out (fun i -> [ "--local-out"; localOuts.[i] ]) (fun r ->
                        try MetaGenRL.Core.Checkpoints.CheckpointStore(victimDir r.Trial).List().Count > 0 with _ -> false)
                Expect.equal status "complete" "the cluster run"
                let lost = lost |> Option.defaultWith (fun () -> failtest "no worker was killed mid-trial")
                Expect.isNonEmpty (MetaGenRL.Core.Checkpoints.CheckpointStore(victimDir lost).List()) "the lost worker had checkpointed the trial in its own folder"
                for t in trials do
                    Expect.equal (rowsOf out t) (rowsOf local t) (t.Id + ": the local run's rows, each once")
                    let dir = ExperimentRunner.trialDir out t
                    Expect.isFalse (IO.Directory.Exists(IO.Path.Combine(dir, "checkpoints"))) (t.Id + ": no checkpoint in the coordinator's folder")
                    let folder = (Results.readRunJson dir).Value.["worker_folder"].AsObject()
                    Expect.isFalse (folder.["shares_out"].GetValue<bool>()) (t.Id + ": run.json says the worker did not share --out")
                    Expect.isTrue (localOuts |> List.exists (fun d -> folder.["path"].GetValue<string>().StartsWith d)) (t.Id + ": …and names its own folder")
                let rerun = (Results.readRunJson (ExperimentRunner.trialDir out lost)).Value
                Expect.stringContains (rerun.["worker_folder"].["path"].GetValue<string>()) localOuts.[1] "the lost trial ran again on the other worker"
                Expect.isNull (rerun.["resumes"].AsArray() |> Seq.last).["checkpoint"] "…from no checkpoint"
                let notes = runs |> List.find (fun r -> r.Trial = lost) |> fun r -> List.ofSeq r.Notes
                Expect.exists notes (fun n -> n.Contains "left the cluster" && n.Contains "runs again on another worker") "the lost trial was re-run"
                Expect.exists notes (fun n -> n.Contains "runs again from the start") (sprintf "…from the start, says a note (%A)" notes)
            finally IO.Directory.Delete(root, true)
        }

        test "a MetaGenRL meta-train and its meta-test on a worker that does not share --out: the objective comes back to the experiment folder and travels with the meta-test, with a local run's rows" {
            let root = tempDir "cluster-unshared-meta"
            let e =
                { Experiment.create "unshared-meta" with
                    MetaTrain = [ [ "Pendulum-v1"; "Pendulum-v1" ] ]; MetaTest = [ "Pendulum-v1" ]; Variants = [ objective "full" ]
                    Baselines = []; Scale = Micro; MetaTrainSteps = Some 200L; MetaTestSteps = Some 200L }
            let e = atScale e
            let trials = expand e
            try
                let local = IO.Path.Combine(root, "local")
                let _, status = ExperimentRunner.run e trials (oneCore local) Threading.CancellationToken.None (fun _ w -> w.Wait())
                Expect.equal status "complete" "the local run"
                let out = IO.Path.Combine(root, "cluster")
                let endpoint = sprintf "127.0.0.1:%d" (freePort ())
                let spec : ClusterCoordinator.ClusterSpec = { Endpoint = endpoint; Secret = secret; SpanOver = 0 }
                let own = IO.Path.Combine(root, "worker")
                let watch _ (work: Threading.Tasks.Task) =
                    use w = CliTests.startCliWith [ ClusterNode.SecretVariable, secret ] [ "worker"; "--join"; endpoint; "--local-out"; own ]
                    try work.Wait() finally (try w.Kill() with _ -> ())
                let _, status = ExperimentRunner.runOn (Some spec) e trials (oneCore out) Threading.CancellationToken.None watch
                Expect.equal status "complete" "the cluster run"
                for t in trials do Expect.equal (rowsOf out t) (rowsOf local t) (t.Id + ": the local run's rows")
                let train = trials |> List.find (fun t -> t.Phase = MetaTrainPhase)
                let trainDir = ExperimentRunner.trialDir out train
                let store = MetaGenRL.Core.Checkpoints.CheckpointStore trainDir
                let k = store.List() |> Seq.exactlyOne
                Expect.equal (List.ofSeq (store.Load k).Parts.Keys) [ MetaTestRun.objectivePart ] "one checkpoint here, holding the objective alone"
                let copied = (Results.readRunJson trainDir).Value.["result_checkpoint"]
                Expect.stringStarts (copied.["copied_from"].GetValue<string>()) own "run.json names the worker's checkpoint it came from"
                Expect.equal (MetaTestRun.loadObjective trainDir None).Value (MetaTestRun.loadObjective (ExperimentRunner.trialDir local train) None).Value
                    "the local run's α, bit for bit"
                for t in trials |> List.filter (fun t -> t.Phase = MetaTestPhase) do
                    let j = (Results.readRunJson (ExperimentRunner.trialDir out t)).Value
                    Expect.equal (j.["objective"].["dir"].GetValue<string>()) (IO.Path.GetFullPath trainDir) (t.Id + ": tests the experiment folder's objective")
                    Expect.equal (j.["objective"].["sha256"].GetValue<string>()) (store.ManifestHash k) (t.Id + ": …that checkpoint")
                    Expect.isFalse (j.["worker_folder"].["shares_out"].GetValue<bool>()) (t.Id + ": on a worker that does not share --out")
            finally IO.Directory.Delete(root, true)
        }

        test "a worker that does not share --out refuses an RL² or EPG meta-test, naming the meta-train folder it cannot read" {
            let e =
                { Experiment.create "unshared-learners" with
                    MetaTrain = [ [ "Pendulum-v1" ] ]; MetaTest = [ "Pendulum-v1" ]; Variants = [ rl2; epg ]; Baselines = []; Scale = Micro }
            let tests = expand (atScale e) |> List.filter (fun t -> t.Phase = MetaTestPhase)
            Expect.equal (tests |> List.map (fun t -> t.Variant) |> List.distinct |> List.sort) [ "epg"; "rl2" ] "an RL² and an EPG meta-test"
            use system = Akka.Actor.ActorSystem.Create("worker-alone")
            let root = tempDir "worker-learners"
            try
                let out = IO.Path.Combine(root, "results")
                let host = system.ActorOf(TrialHostActor.Props(ExperimentRunner.runSpec system (ExperimentRunner.LocalOnly(IO.Path.Combine(root, "local"))) 1))
                for t in tests do
                    let inbox = Akka.Actor.Inbox.Create system
                    let spec = Text.Json.Nodes.JsonObject()
                    spec["trial"] <- trialToJson t
                    for k, v in [ "mode", "Sync"; "device", "cpu"; "out", out; "out_token", "token"; "command", "test" ] do
                        spec[k] <- Text.Json.Nodes.JsonValue.Create(v: string)
                    for k, v in [ "torch_threads", 1; "loss_log_every", 100 ] do spec[k] <- Text.Json.Nodes.JsonValue.Create(v: int)
                    spec["resume"] <- Text.Json.Nodes.JsonValue.Create false
                    host.Tell(RunTrialOnWorker(t.Id, spec.ToJsonString(), inbox.Receiver), Akka.Actor.ActorRefs.NoSender)
                    match inbox.Receive(TimeSpan.FromSeconds 20.0) with
                    | :? TrialRefused as r ->
                        let source = IO.Path.Combine(out, "trials", t.DependsOn.Value)
                        Expect.stringContains r.Reason (sprintf "trial %s meta-tests what the meta-train in %s learned" t.Id source) (t.Id + ": names the folder")
                        Expect.stringContains r.Reason (sprintf "does not share the experiment folder %s" out) (t.Id + ": says why")
                    | other -> failtestf "%s: expected TrialRefused (a worker that shares --out may run it), got %A" t.Id other
                Expect.isFalse (IO.Directory.Exists(IO.Path.Combine(root, "local"))) "before it made a folder"
            finally
                system.Terminate().Wait() |> ignore
                IO.Directory.Delete(root, true)
        }

        test "--local-out is in the worker's usage; one that cannot be made is named" {
            let _, text, _ = CliTests.cliWith [] [ "worker"; "--help" ]
            Expect.stringContains text "--local-out" "the flag"
            Expect.stringContains text "does not share the experiment's --out" "what it means"
            let file = IO.Path.GetTempFileName()
            try
                let rc, _, err = CliTests.cliWith [ ClusterNode.SecretVariable, secret ] [ "worker"; "--join"; "127.0.0.1:2552"; "--local-out"; file + "/trials" ]
                Expect.equal rc 2 (sprintf "exit code (stderr %s)" err)
                Expect.stringContains err (sprintf "--local-out '%s/trials': cannot make this folder" file) "names the flag and the folder"
            finally IO.File.Delete file
        }
    ]
