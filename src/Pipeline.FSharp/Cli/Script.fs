/// The one call an experiment script ends with: `Script.main experiment fsi.CommandLineArgs`. Parses the script's
/// flags (--help, --dry-run, --out, --scale, …), validates and expands the experiment, then runs it with a live
/// display, writes the merged results and the report.
module MetaGenRL.Pipeline.Script

open System
open System.IO
open System.Threading
open Argu
open Spectre.Console
open MetaGenRL.Pipeline.Errors
open MetaGenRL.Pipeline.Experiment
open MetaGenRL.Pipeline.ExperimentRunner

type ScriptArgs =
    | Dry_Run
    | [<AltCommandLine("-o")>] Out of dir: string
    | Scale of name: string
    | Set of ``key=value``: string
    | Meta_Train_Steps of steps: int64
    | Meta_Test_Steps of steps: int64
    | Agents of count: int
    | Objective of dir: string
    | Cores of count: int
    | Torch_Threads of count: int
    | Cluster of ``host:port``: string
    | Secret_File of path: string
    | Span_Populations of workers: int
    | Device of device: string
    | Mode of ``sync|async``: string
    | Loss_Log_Every of updates: int
    | No_Report
    | Tensorboard
    | Verbose

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Dry_Run -> "print the expanded trials (variant × seed × env × phase), agent-steps and a time estimate; write nothing."
            | Out _ -> "experiment folder (default results/<experiment>/<scale>-<hash of the resolved declaration>, so a re-run finds its trials)."
            | Scale _ ->
                sprintf "%s (default: the script's; micro is a seconds-long pipeline check)."
                    (String.Join(" | ", Scale.all |> List.map Scale.name))
            | Set _ -> "override a config key for every trial, by its official name (repeatable; keys: ./metagenrl config)."
            | Meta_Train_Steps _ -> "per-agent env steps of each meta-train population (default: the scale's)."
            | Meta_Test_Steps _ -> "env steps of each meta-test and baseline run (default: the scale's)."
            | Agents _ -> "population size of each meta-train trial (default: the scale's)."
            | Objective _ -> "meta-test what this meta-train folder learned: its objective, or its RL² policy (repeatable; replaces the script's Objectives)."
            | Cores _ -> "cores the trials may use at once, one per agent (default: all)."
            | Torch_Threads _ -> "torch intra-op threads per agent (default 1)."
            | Cluster _ -> "run the trials on cluster workers: start a coordinator listening on HOST:PORT (127.0.0.1:PORT for one host) that hands trials to the workers that join it (./metagenrl worker --join HOST:PORT), packed onto the cores each worker advertises (its --cores) as a local run packs them; where every node reaches --out at the same path, a trial whose worker is lost resumes from its last checkpoint, else it runs again from the start (see ./metagenrl worker --local-out)."
            | Secret_File _ -> "a file whose first line is the cluster's shared secret (default: the METAGENRL_CLUSTER_SECRET variable)."
            | Span_Populations _ -> "with --cluster: each MetaGenRL meta-train trial spreads its agent groups over N workers, waiting until N are up (group g on worker g mod N; one such trial at a time, nothing else runs beside it), with the objective server and the writer here; other trials run on one worker each."
            | Device _ -> "cpu (default), cuda or cuda:N."
            | Mode _ -> "meta-train schedule: sync (default; deterministic for a seed) or async."
            | Loss_Log_Every _ -> "log losses every K updates (default 100)."
            | No_Report -> "do not write the report at the end."
            | Tensorboard -> "also write TensorBoard event files per trial and agent with the report."
            | Verbose -> "on an error, also print its stack trace. Exit codes: 0 done, 1 a trial failed, 2 bad input, 130 interrupted."

/// The experiment after the script's flags.
let applyArgs (e: Experiment) (args: ParseResults<ScriptArgs>) =
    let e = match args.TryGetResult Scale with Some s -> { e with Scale = Scale.parse s } | None -> e
    let e = atScale e
    // The flags are checked by their own names before they merge with the declaration's fields.
    let overrides = args.GetResults Set |> List.map Settings.parseOverride
    checkOverrides "--set" overrides
    checkBudget "--meta-train-steps" (args.TryGetResult Meta_Train_Steps)
    checkBudget "--meta-test-steps" (args.TryGetResult Meta_Test_Steps)
    match args.TryGetResult Agents with
    | Some n when n < 2 -> usageError "--agents %d: meta-training needs at least 2 agents" n
    | _ -> ()
    args.TryGetResult Device |> Option.iter (fun d ->
        try MetaGenRL.Core.Torch.Devices.Resolve d |> ignore
        with :? ArgumentException as ex -> usageError "--device: %s" (messageOf ex))
    { e with
        Set = e.Set @ overrides
        MetaTrainSteps = args.TryGetResult Meta_Train_Steps |> Option.orElse e.MetaTrainSteps
        MetaTestSteps = args.TryGetResult Meta_Test_Steps |> Option.orElse e.MetaTestSteps
        Agents = args.TryGetResult Agents |> Option.orElse e.Agents
        Objectives = match args.GetResults Objective with [] -> e.Objectives | dirs -> dirs
        Device = args.GetResult(Device, defaultValue = e.Device)
        Mode =
            match args.TryGetResult Mode |> Option.map (fun m -> m.Trim().ToLowerInvariant()) with
            | None -> e.Mode
            | Some "sync" -> MetaGenRL.Actors.ScheduleMode.Sync
            | Some "async" -> MetaGenRL.Actors.ScheduleMode.Async
            | Some m -> usageError "--mode '%s': expected sync or async" m }

let private describeEnvs (t: Trial) =
    match t.Phase, t.Seen with
    | MetaTrainPhase, _ -> String.Join("+", t.Envs)
    | _, Some true -> t.Envs.Head + " (seen)"
    | _, Some false -> t.Envs.Head + " (unseen)"
    | _ -> t.Envs.Head

/// Prints the expanded grid, the agent-steps and a rough time estimate.
let printPlan (e: Experiment) (trials: Trial list) (out: string) (cores: int) =
    // Redirected output (logs, CI) gets wide rows instead of Spectre's 80-column default.
    if not (Progress.interactive ()) then AnsiConsole.Profile.Width <- 200
    let table = Table().AddColumns("phase", "variant", "envs", "seed", "meta seed", "sweep", "agents", "steps")
    for t in trials do
        table.AddRow(
            t.Phase.Name, t.Variant, describeEnvs t, string t.Seed,
            (t.MetaSeed |> Option.map string |> Option.defaultValue ""),
            String.Join(", ", t.Swept |> List.map (fun (k, v) -> k + "=" + v)), string t.Agents, string t.Steps)
        |> ignore
    AnsiConsole.Write table
    let count phase = trials |> List.filter (fun t -> t.Phase = phase) |> List.length
    let agentSteps = trials |> List.sumBy (fun t -> t.AgentSteps)
    printfn "experiment %s at scale %s: %d %s (%d meta-train, %d meta-test, %d baseline), %s agent-steps"
        e.Name (Scale.name e.Scale) trials.Length (if trials.Length = 1 then "trial" else "trials") (count MetaTrainPhase) (count MetaTestPhase) (count BaselinePhase)
        (agentSteps.ToString("N0", Globalization.CultureInfo.InvariantCulture))
    printfn "rough time on %d cores: %s" cores (formatDuration (estimateSeconds e.Scale cores trials))
    printfn "(every run stops at its budget; --set budget_check_per_iteration=true restores the official check between"
    printfn " training iterations of `steps` rounds, which can exceed the budget by up to `steps` episodes per agent)"
    printfn "folder: %s" out

// ── PROGRESS ──

let private estimateOf (scale: Scale) (r: TrialRun) = estimateSeconds scale 1 [ r.Trial ]

/// Estimated core-seconds of work done so far (a run's overshoot past its budget counts as its budget).
let private workDone (scale: Scale) (runs: TrialRun list) =
    runs |> List.sumBy (fun r -> estimateOf scale r * float r.ShownSteps / float (max 1L r.Trial.Steps))

let private trialLine (r: TrialRun) =
    let ret = if r.ReturnText = "" then "" else ", return " + r.ReturnText
    sprintf "%s %d/%d%s" r.Trial.Id r.ShownSteps r.Trial.Steps ret

/// Shows the experiment's progress until `work` completes: a Spectre live table on a terminal, a plain line every
/// 15 s otherwise.
let watch (e: Experiment) (runs: TrialRun list) (work: Threading.Tasks.Task) =
    let clock = Diagnostics.Stopwatch.StartNew()
    let total = runs |> List.sumBy (estimateOf e.Scale)
    // Work finished in an earlier invocation does not count towards this one's rate.
    let before = workDone e.Scale runs
    let finished () = runs |> List.filter (fun r -> r.Status.Finished) |> List.length
    let header () =
        let now = workDone e.Scale runs
        let eta = if now > before then Some(clock.Elapsed.TotalSeconds * (total - now) / (now - before)) else None
        sprintf "trials %d/%d done, %.0f%% of the work, %s elapsed, ETA %s" (finished ()) runs.Length (100.0 * now / max total 1e-9)
            (clock.Elapsed.ToString @"hh\:mm\:ss") (eta |> Option.map formatDuration |> Option.defaultValue "…")
    let waitStep (ms: int) = (work :> IAsyncResult).AsyncWaitHandle.WaitOne ms |> ignore
    if Progress.interactive () then
        let table () =
            let t = Table().AddColumns("trial", "status", "env steps", "last return", "time")
            t.Title <- TableTitle(Markup.Escape(header ()))
            for r in runs |> List.filter (fun r -> r.Status = Running) do
                t.AddRow(Markup.Escape r.Trial.Id, r.Status.Name, sprintf "%d/%d" r.ShownSteps r.Trial.Steps, r.ReturnText,
                         r.Clock.Elapsed.ToString @"hh\:mm\:ss") |> ignore
            t
        AnsiConsole.Live(table ()).Start(fun ctx ->
            while not work.IsCompleted do
                ctx.UpdateTarget(table ())
                waitStep 250
            ctx.UpdateTarget(table ()))
    else
        let mutable next = TimeSpan.FromSeconds 15.0
        let mutable seen = Set.empty
        let notesShown = Collections.Generic.Dictionary<string, int>()
        let showNotes () =
            for r in runs do
                let notes = lock r.Notes (fun () -> List.ofSeq r.Notes)
                let shown = match notesShown.TryGetValue r.Trial.Id with | true, n -> n | _ -> 0
                for n in List.skip shown notes do printfn "[%s] %s: %s" (clock.Elapsed.ToString @"hh\:mm\:ss") r.Trial.Id n
                notesShown[r.Trial.Id] <- notes.Length
        while not work.IsCompleted do
            waitStep 200
            showNotes ()
            for r in runs do
                let key = r.Trial.Id, r.Status.Name
                if r.Status <> Pending && r.Status <> Done && not (seen.Contains key) then
                    seen <- seen.Add key
                    printfn "[%s] %s: %s" (clock.Elapsed.ToString @"hh\:mm\:ss") r.Status.Name (trialLine r)
            if clock.Elapsed >= next then
                printfn "[%s] %s" (clock.Elapsed.ToString @"hh\:mm\:ss") (header ())
                for r in runs |> List.filter (fun r -> r.Status = Running) do printfn "    %s" (trialLine r)
                next <- clock.Elapsed + TimeSpan.FromSeconds 15.0

/// The final status table.
let printStatus (runs: TrialRun list) =
    let t = Table().AddColumns("trial", "phase", "status", "env steps", "last return", "time", "note")
    for r in runs do
        let notes = lock r.Notes (fun () -> List.ofSeq r.Notes)
        let failures = notes |> List.filter (fun n -> n.StartsWith "agent ")
        let note =
            [ match r.Status with Failed m | Blocked m -> m | _ -> ()
              match failures with
              | [] -> ()
              | first :: _ -> sprintf "%d agent failure(s), first: %s" failures.Length first
              yield! notes |> List.filter (fun n -> not (n.StartsWith "agent ")) ]
            |> String.concat "; "
        t.AddRow(Markup.Escape r.Trial.Id, r.Trial.Phase.Name, r.Status.Name, string r.ShownSteps, r.ReturnText,
                 (if r.Clock.Elapsed > TimeSpan.Zero then r.Clock.Elapsed.ToString @"hh\:mm\:ss" else ""),
                 Markup.Escape note) |> ignore
    AnsiConsole.Write t

// ── ENTRY ──

/// The default folder: results/<name>/<scale>-<hash of the resolved declaration>.
let experimentOut (e: Experiment) (trials: Trial list) = Path.Combine("results", e.Name, configId e trials)

/// Checks that `out` can hold results: an existing experiment folder must be readable and its experiment.json valid.
let private checkOut (out: string) =
    let json = experimentJsonPath out
    if File.Exists json then
        try Text.Json.Nodes.JsonNode.Parse(File.ReadAllText json) |> ignore
        with ex -> usageError "--out '%s': experiment.json is unreadable (%s); move the folder away or choose another" out ex.Message
    try Directory.CreateDirectory(Path.Combine(out, "trials")) |> ignore
    with ex -> usageError "--out '%s': cannot create the folder (%s)" out ex.Message

/// Writes the report of a complete experiment and prints its summary table and files.
let private report (out: string) (tensorboard: bool) =
    let r = Report.write out { Report.ReportOptions.Default with TensorBoard = tensorboard }
    printfn "\n%s" r.Summary
    printfn "report: %s" r.OutDir
    for f in r.Files do printfn "  %s" f

/// Runs a script's experiment with the script's flags; returns the exit code (0 done, 2 bad input, 130 interrupted,
/// 1 a trial failed).
let main (experiment: Experiment) (argv: string[]) : int =
    let verbose, argv = verboseFlag argv
    let scriptName = if argv.Length > 0 then Path.GetFileName argv[0] else "experiment.fsx"
    let parser = ArgumentParser.Create<ScriptArgs>(programName = sprintf "dotnet fsi experiments/%s --" scriptName)
    try
        let args = parser.ParseCommandLine(argv |> Array.skip (min 1 argv.Length), raiseOnUsage = true)
        let e = applyArgs experiment args
        Experiment.validate e
        let trials = expand e
        let out = args.GetResult(Out, defaultValue = experimentOut e trials)
        let cores = args.GetResult(Cores, defaultValue = Environment.ProcessorCount)
        if cores < 1 then usageError "--cores %d: must be ≥ 1" cores
        let threads = args.GetResult(Torch_Threads, defaultValue = 1)
        if threads < 1 then usageError "--torch-threads %d: must be ≥ 1" threads
        let lossLogEvery = args.GetResult(Loss_Log_Every, defaultValue = 100)
        if lossLogEvery < 1 then usageError "--loss-log-every %d: must be ≥ 1" lossLogEvery
        if not (args.Contains Cluster) then
            if args.Contains Secret_File then usageError "--secret-file: only with --cluster"
            if args.Contains Span_Populations then usageError "--span-populations: only with --cluster"
        match args.TryGetResult Span_Populations with
        | Some n when n < 1 -> usageError "--span-populations %d: must be ≥ 1 (workers)" n
        | _ -> ()
        if args.Contains Dry_Run then
            printPlan e trials out cores
            printfn "dry run: nothing was written."
            0
        else
            checkOut out
            checkExisting trials out
            let opts =
                { Out = out; Cores = cores; TorchThreads = threads; LossLogEvery = lossLogEvery
                  Command = "dotnet fsi " + String.Join(" ", argv) }
            let alreadyDone = trials |> List.forall (fun t -> Results.isComplete (trialDir out t)) && File.Exists(mergedPath out)
            if alreadyDone then
                printfn "%s: all %d trials are complete; re-reporting." out trials.Length
                if not (args.Contains No_Report) then report out (args.Contains Tensorboard)
                0
            else
                printPlan e trials out cores
                use cts = new CancellationTokenSource()
                let onCancel = ConsoleCancelEventHandler(fun _ ev -> ev.Cancel <- true; cts.Cancel())
                Console.CancelKeyPress.AddHandler onCancel
                // `dotnet fsi` runs this script in a child process: if that parent is killed, stop as on Ctrl-C
                use _orphan = ParentWatch.start (fun () ->
                    eprintfn "the parent process is gone: stopping as on Ctrl-C"
                    cts.Cancel())
                let cluster =
                    args.TryGetResult Cluster
                    |> Option.map (fun endpoint ->
                        let spec : ClusterCoordinator.ClusterSpec = { Endpoint = endpoint; Secret = Worker.readSecret (args.TryGetResult Secret_File); SpanOver = args.GetResult(Span_Populations, defaultValue = 0) }
                        printfn "coordinator on %s: trials go to the workers that join it (./metagenrl worker --join %s)" endpoint endpoint
                        spec)
                let runs, status =
                    try ExperimentRunner.runOn cluster e trials opts cts.Token (watch e)
                    finally Console.CancelKeyPress.RemoveHandler onCancel
                printStatus runs
                printfn "experiment %s: %s; results in %s" e.Name status out
                match status with
                | "complete" ->
                    printfn "merged results: %s" (mergedPath out)
                    if not (args.Contains No_Report) then report out (args.Contains Tensorboard)
                    0
                | "interrupted" ->
                    printfn "interrupted: run the same command again to resume."
                    130
                | _ -> 1
    with
    | :? ArguParseException as ex ->
        if ex.ErrorCode = ErrorCode.HelpText then printfn "%s" ex.Message; 0
        else eprintfn "%s" ex.Message; 2
    | :? OperationCanceledException ->
        eprintfn "interrupted"
        130
    | e -> Errors.report verbose e
