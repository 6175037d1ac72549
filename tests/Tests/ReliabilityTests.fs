/// Faults a real week of experiments brings, on the real engine: agents that fail before and after a checkpoint,
/// damaged checkpoints, truncated files, read-only and full disks. Process faults run the CLI as a child process.
module MetaGenRL.Tests.ReliabilityTests

open System
open System.IO
open System.Threading
open Expecto
open MetaGenRL.Actors
open MetaGenRL.Core.Config
open MetaGenRL.Core.Engine
open MetaGenRL.Pipeline
open MetaGenRL.Tests.TestUtil

/// A real agent group whose `call` ("update" or "collect") throws, or reports slot `agent` non-finite, at its nth
/// call (counted over every incarnation of that agent's group); fires once.
type FaultAt = { Agent: int; Call: string; At: int; Throw: bool }

/// What happened to the faulty agent's slot: each restore (Some bytes: LoadState; None: ResetAgent).
type FaultLog() =
    member val Calls = 0 with get, set
    /// Groups made for the fault's agent (a rebuilt group is made anew, in its initial state).
    member val Made = 0 with get, set
    member val Restores = ResizeArray<byte[] option>()

let private faulty (inner: IAgentGroup) (fault: FaultAt) (log: FaultLog) =
    let slot = inner.Agents |> Seq.tryFindIndex ((=) fault.Agent)
    if slot.IsSome then log.Made <- log.Made + 1
    let hit (call: string) =
        if slot.IsSome && call = fault.Call then
            log.Calls <- log.Calls + 1
            log.Calls = fault.At
        else false
    { new IAgentGroup with
        member _.Agents = inner.Agents
        member _.Size = inner.Size
        member _.EnvId = inner.EnvId
        member _.EnvSteps = inner.EnvSteps
        member _.Collect(targets, limits, onMetric) =
            if hit "collect" && fault.Throw then failwith "injected collect exception"
            inner.Collect(targets, limits, onMetric)
        member _.Update(j, active, onMetric) =
            let fire = hit "update"
            if fire && fault.Throw then failwith "injected update exception"
            let res = inner.Update(j, active, onMetric)
            if fire then res[slot.Value] <- "non-finite critic_loss = NaN (injected)"
            res
        member _.ComputesObjectiveGradients = inner.ComputesObjectiveGradients
        member _.ObjectiveGradients(active, onMetric) = inner.ObjectiveGradients(active, onMetric)
        member _.ObjectiveSize = inner.ObjectiveSize
        member _.LoadObjective alpha = inner.LoadObjective alpha
        member _.ObjectiveParameters s = inner.ObjectiveParameters s
        member _.SaveState(s, r) = inner.SaveState(s, r)
        member _.LoadState(s, b) =
            if Some s = slot then log.Restores.Add(Some b)
            inner.LoadState(s, b)
        member _.ResetAgent s =
            if Some s = slot then log.Restores.Add None
            inner.ResetAgent s
        member _.Dispose() = inner.Dispose() }

/// A 2-agent sync meta-train run on InvertedPendulum-v2 (one group of two) with tiny networks.
let private metaRun (steps: int64) (checkpointEvery: int64) =
    let cfg =
        Settings.resolveConfig
            [ "policy_units=16"; "critic_units=16"; "buffer_sample_size=4"; "policy_random_exploration_steps=50"
              "obj_func_anneal_steps=100"; "steps=1"; sprintf "checkpoint_every=%d" checkpointEvery ]
    let seeds = Array.init 2 (Engine.agentSeed 3)
    { Engine.create cfg Algorithm.MetaTrain [ "InvertedPendulum-v2" ] seeds steps ScheduleMode.Sync with LossLogEvery = 20 }

/// Runs `run` with `fault` injected into a folder of checkpoints; returns the result, the rows in delivery order,
/// the fault's log and the checkpoints' agent parts (index → agent → bytes).
let private runFaulty (run: Engine.EngineRun) (fault: FaultAt) =
    let dir = tempDir "reliability"
    try
        let log = FaultLog()
        let make = Func<GroupSpec, IAgentGroup>(fun spec -> faulty (Engine.makeGroup run spec) fault log)
        let store = MetaGenRL.Core.Checkpoints.CheckpointStore dir
        let options = Engine.populationOptions run store None false ignore
        let rows = ResizeArray<Metric>()
        let res =
            try Ok(Population.Run(options, make, Action<Metric>(rows.Add), null, CancellationToken.None))
            with e -> Error e
        let parts =
            [ for i in store.List() -> i, (store.Load i).Parts ]
        res, List.ofSeq rows, log, parts
    finally Directory.Delete(dir, true)

// ── PROCESS FAULTS ON A REAL FILE SYSTEM ──


/// Runs `command` (argv; "{disk}" stands for the folder) in a private mount namespace where a fresh tmpfs of
/// `sizeKb` is mounted on a folder, after the shell lines `prepare` ran in it, read-only when `readOnly`. The files
/// `save` (paths relative to the tmpfs, globs allowed) are copied out before the namespace ends. As root the
/// namespace is a plain one (unshare -m); otherwise an unprivileged user namespace (unshare -rm). Returns the exit
/// code, stdout, stderr and the folder holding the saved copies, and a temp folder the caller deletes.
let private onTmpfs (sizeKb: int) (prepare: string) (readOnly: bool) (command: string list) (save: string list) =
    let root = tempDir "tmpfs"
    let disk = Path.Combine(root, "disk")
    let saved = Path.Combine(root, "saved")
    Directory.CreateDirectory disk |> ignore
    Directory.CreateDirectory saved |> ignore
    let script =
        String.concat "\n"
            [ sprintf "mount -t tmpfs -o size=%dk tmpfs \"$DISK\" || exit 97" sizeKb
              "cd \"$DISK\" || exit 97"
              prepare
              (if readOnly then "mount -o remount,ro \"$DISK\" || exit 97" else "")
              "\"$@\"; rc=$?"
              "cd \"$DISK\" && for f in $SAVE; do if [ -f \"$f\" ]; then mkdir -p \"$SAVED/$(dirname \"$f\")\" && cp \"$f\" \"$SAVED/$f\"; fi; done"
              "exit $rc" ]
    let psi = Diagnostics.ProcessStartInfo("unshare", RedirectStandardOutput = true, RedirectStandardError = true,
                                           UseShellExecute = false, WorkingDirectory = repoRoot)
    let asRoot = Environment.UserName = "root"
    for a in (if asRoot then [ "-m" ] else [ "-r"; "-m" ]) @ [ "sh"; "-c"; script; "sh" ] @ (command |> List.map (fun a -> a.Replace("{disk}", disk))) do
        psi.ArgumentList.Add a
    psi.Environment["DISK"] <- disk
    psi.Environment["SAVED"] <- saved
    psi.Environment["SAVE"] <- String.Join(" ", save)
    use p = Diagnostics.Process.Start psi
    let out = p.StandardOutput.ReadToEndAsync()
    let err = p.StandardError.ReadToEndAsync()
    if not (p.WaitForExit 300_000) then (p.Kill true; failtest "the command on the tmpfs timed out")
    if p.ExitCode = 97 then
        failtestf "could not mount a tmpfs in a private mount namespace (needs root or unprivileged user namespaces): %s" err.Result
    (p.ExitCode, out.Result, err.Result, saved), root

let private json (path: string) = Text.Json.Nodes.JsonNode.Parse(File.ReadAllText path)

/// The lines of stderr that say "error: …".
let private errorLines (err: string) =
    err.Split('\n') |> Array.filter (fun l -> l.StartsWith "error:") |> List.ofArray

[<Tests>]
let tests =
    testSequenced <| testList "Reliability" [
        test "a group that throws after a checkpoint restores its agents from that checkpoint" {
            let res, rows, log, parts = runFaulty (metaRun 500L 150L) { Agent = 1; Call = "update"; At = 360; Throw = true }
            let res = match res with Ok r -> r | Error e -> failtestf "the run failed: %s" e.Message
            Expect.equal res.Failures 2 (sprintf "both agents of the group failed once: %A" res.FailureReasons)
            Expect.isTrue (res.FailureReasons |> Array.forall (fun r -> r.Contains "injected update exception")) "the reason is kept"
            let failedAt = rows |> List.findIndex (fun m -> m.Name = "agent_failure")
            let before = rows |> List.take failedAt |> List.filter (fun m -> m.Name = "checkpoint") |> List.map (fun m -> int m.Value)
            Expect.isNonEmpty before "a checkpoint precedes the failure"
            let restoredFrom = parts |> List.find (fun (i, _) -> i = List.last before) |> snd
            match List.ofSeq log.Restores with
            | [ Some bytes ] -> Expect.equal bytes restoredFrom["agent__1"] "agent 1 restored from the newest checkpoint before the failure"
            | other -> failtestf "expected one restore of agent 1 from a checkpoint, got %A" (other |> List.map Option.isSome)
            Expect.equal res.AgentEnvSteps.Length 2 "the run completed"
        }

        test "an agent that fails before any checkpoint restarts from its initial state and the run completes" {
            // a NaN loss fails one slot (restored in place); an exception breaks the whole group (rebuilt)
            for throw in [ false; true ] do
                let res, rows, log, _ = runFaulty (metaRun 300L 200L) { Agent = 1; Call = "update"; At = 20; Throw = throw }
                let res = match res with Ok r -> r | Error e -> failtestf "throw=%b: the run failed: %s" throw e.Message
                Expect.equal res.Failures (if throw then 2 else 1) (sprintf "throw=%b: failures %A" throw res.FailureReasons)
                let reason = if throw then "injected update exception" else "non-finite critic_loss = NaN (injected)"
                Expect.stringContains res.FailureReasons[0] reason "the cause is kept"
                let firstMarker = rows |> List.findIndex (fun m -> m.Name = "checkpoint")
                let failedAt = rows |> List.findIndex (fun m -> m.Name = "agent_failure")
                Expect.isLessThan failedAt firstMarker "the failure comes before the first checkpoint"
                if throw then
                    Expect.equal log.Made 2 "the group was rebuilt (a new group starts in its initial state)"
                    Expect.isEmpty log.Restores "no checkpointed state was loaded into the rebuilt group"
                else
                    Expect.equal log.Made 1 "the group was kept"
                    Expect.equal (List.ofSeq log.Restores) [ None ] "agent 1's slot was reset to its initial state"
                Expect.equal res.AgentEnvSteps.Length 2 "the run completed"
                let after = rows |> List.skip failedAt |> List.filter (fun m -> m.Agent = 1 && m.Name = "episode_return")
                Expect.isNonEmpty after "agent 1 went on after its restart"
        }

        test "a run that gives up says why: exit 1, the first cause in one line, run.json failed with every failure" {
            let dir = tempDir "gives-up"
            try
                let rc, out, err =
                    CliTests.cli [ "train"; "--steps"; "600"; "--scale"; "micro"; "--set"; "critic_learning_rate=1e30"
                                   "--set"; "policy_random_exploration_steps=100"; "--out"; dir ]
                Expect.equal rc 1 (sprintf "a failed run exits 1; stdout %s stderr %s" out err)
                match errorLines err with
                | [ line ] ->
                    Expect.stringContains line "agent 0 failed 11 times, more than max_restarts_per_agent (10); first cause: non-finite" "the original cause"
                | other -> failtestf "expected one error line, got %A" other
                Expect.isFalse (err.Contains "   at ") "no stack trace without --verbose"
                Expect.stringContains err "agent failure: agent 0: non-finite" "each failure is shown as it happens"
                Expect.stringContains err "restarted from its initial state (no checkpoint yet)" "with where the agent restarts from"
                let j = json (Path.Combine(dir, "run.json"))
                Expect.equal (j["status"].GetValue<string>()) "failed" "run.json says failed"
                Expect.stringContains (j["error"].GetValue<string>()) "first cause: non-finite" "…with the cause"
                Expect.equal (j["failures"].AsArray().Count) 11 "…and every failure"
                let rc2, _, err2 =
                    CliTests.cli [ "train"; "--steps"; "600"; "--scale"; "micro"; "--set"; "critic_learning_rate=1e30"; "--force"; "--out"; dir; "--verbose" ]
                Expect.equal rc2 1 "--verbose: still exit 1"
                Expect.stringContains err2 "   at " "--verbose prints the stack trace"
            finally Directory.Delete(dir, true)
        }

        test "a full disk: the run fails in one line naming the file, and run.json says failed, not running" {
            let (rc, out, err, saved), root =
                onTmpfs 128 "" false
                    [ "dotnet"; CliTests.cliDll; "train"; "--steps"; "1500"; "--scale"; "micro"; "--out"; "{disk}/run" ] [ "run/run.json" ]
            try
                Expect.equal rc 1 (sprintf "exit 1; stdout %s stderr %s" out err)
                match errorLines err with
                | [ line ] -> Expect.stringContains line "No space left on device" "the cause, naming the file"
                | other -> failtestf "expected one error line, got %A (stderr %s)" other err
                Expect.isFalse (err.Contains "   at ") "no stack trace"
                let j = json (Path.Combine(saved, "run", "run.json"))
                Expect.equal (j["status"].GetValue<string>()) "failed" "run.json says failed"
                Expect.stringContains (j["error"].GetValue<string>()) "No space left on device" "…with the cause"
            finally Directory.Delete(root, true)
        }

        test "a full disk during an experiment: experiment.json and the trial say failed with the cause" {
            let script = Path.Combine(repoRoot, "experiments", "meta_train.fsx")
            let (rc, out, err, saved), root =
                onTmpfs 160 "" false
                    [ "dotnet"; "fsi"; script; "--"; "--scale"; "micro"; "--out"; "{disk}/exp"; "--no-report" ]
                    [ "exp/experiment.json"; "exp/trials/*/run.json" ]
            try
                Expect.equal rc 1 (sprintf "exit 1; stdout %s stderr %s" out err)
                let exp = json (Path.Combine(saved, "exp", "experiment.json"))
                Expect.equal (exp["status"].GetValue<string>()) "failed" (sprintf "experiment.json says failed (stdout %s)" out)
                Expect.stringContains (exp["error"].GetValue<string>()) "No space left on device" "…with the cause"
                for t in exp["trials"].AsArray() do
                    Expect.notEqual (t["status"].GetValue<string>()) "running" "no trial is left running"
                let runs = Directory.GetFiles(Path.Combine(saved, "exp", "trials"), "run.json", SearchOption.AllDirectories)
                Expect.isNonEmpty runs "the trial's run.json was kept"
                for r in runs do
                    let j = json r
                    Expect.equal (j["status"].GetValue<string>()) "failed" "the trial's run.json says failed"
                    Expect.stringContains (j["error"].GetValue<string>()) "No space left on device" "…with the cause"
                Expect.stringContains out "No space left on device" "the cause is on the console"
            finally Directory.Delete(root, true)
        }

        test "a read-only --out is refused in one line naming the folder (exit 2)" {
            let (rc, out, err, _), root =
                onTmpfs 64 "mkdir -p run && touch run/.lock" true
                    [ "dotnet"; CliTests.cliDll; "train"; "--steps"; "100"; "--out"; "{disk}/run" ] []
            try
                Expect.equal rc 2 (sprintf "exit 2; stdout %s stderr %s" out err)
                match errorLines err with
                | [ line ] ->
                    Expect.stringContains line "/disk/run': cannot write to the folder" "names the folder"
                    Expect.stringContains line "Read-only file system" "and why"
                | other -> failtestf "expected one error line, got %A" other
            finally Directory.Delete(root, true)
        }
    ]
