/// What the run commands (train, meta-train, meta-test) share: the output folder check, running the work under the
/// progress display with Ctrl-C handling, and the summary line of a single-agent run.
module MetaGenRL.Pipeline.RunCommand

open System
open System.IO
open System.Threading
open MetaGenRL.Actors
open MetaGenRL.Core.Engine
open MetaGenRL.Pipeline.Errors

/// Marks a run failed by `e`: its one-line cause and, when the population gave up, every agent failure.
let recordFailure (w: Results.RunWriter) (e: exn) =
    match e with
    | :? PopulationFailedException as p -> w.AddFailures p.Reasons
    | _ -> ()
    w.Failed(messageOf e)

/// Runs `work` under the progress display with Ctrl-C handling and periodic flushes of the writers, then writes
/// the final status. One writer holds every agent's rows; several hold one agent each (agent k's rows go to
/// writer k as agent 0, and checkpoint markers to all). On each checkpoint marker the writers flush, so the rows a
/// checkpoint covers are on disk soon after it. Why agents failed goes to every run.json (`failures`). Returns 0
/// when complete, 130 when interrupted; a failure is flushed as "failed" and rethrown.
let executeRuns (writers: Results.RunWriter list) (title: string) (total: int64)
                (work: Action<Metric> -> (string -> unit) -> IProgress<int64> -> CancellationToken -> PopulationResult)
                (describe: PopulationResult -> string) : int =
    use cts = new CancellationTokenSource()
    let onCancel = ConsoleCancelEventHandler(fun _ e -> e.Cancel <- true; cts.Cancel())
    Console.CancelKeyPress.AddHandler onCancel
    let ws = Array.ofList writers
    let flushAll status = for w in ws do w.Flush status
    // Periodic flushes keep at most a minute of rows at risk if the process is killed.
    use _timer = new Timer((fun _ -> try flushAll "running" with _ -> ()), null, 60_000, 60_000)
    let mutable lastReturn = nan
    let mutable episodes = 0
    let onMetric =
        Action<Metric>(fun m ->
            if m.Name = PopulationCoordinator.CheckpointMarker then
                for w in ws do w.Add(0, m.EnvStep, m.Name, m.Value)
                flushAll "running"
            elif ws.Length = 1 then ws[0].Add(m.Agent, m.EnvStep, m.Name, m.Value)
            else ws[m.Agent].Add(0, m.EnvStep, m.Name, m.Value)
            if m.Name = "episode_return" then
                lastReturn <- m.Value
                episodes <- episodes + 1)
    // Each agent failure is shown as it happens, with its cause and where the agent restarts from.
    let onFailure (line: string) = eprintfn "agent failure: %s" line
    let status () = if episodes = 0 then "" else sprintf "episode %d return %.1f" episodes lastReturn
    try
        try
            flushAll "running"
            let result =
                try Some(Progress.run title total status (fun progress -> work onMetric onFailure progress cts.Token))
                with :? OperationCanceledException when cts.IsCancellationRequested -> None
            let finalStatus = if cts.IsCancellationRequested then "interrupted" else "complete"
            result |> Option.iter (fun r -> for w in ws do w.AddFailures r.FailureReasons)
            flushAll finalStatus
            match result with
            | Some r -> printfn "%s: %s" finalStatus (describe r)
            | None -> printfn "%s" finalStatus
            for w in ws do
                printfn "results: %s" w.ParquetPath
                printfn "provenance: %s" w.RunJsonPath
            if finalStatus = "complete" then 0 else 130
        with e ->
            for w in ws do recordFailure w e
            reraise ()
    finally
        Console.CancelKeyPress.RemoveHandler onCancel

/// `executeRuns` with one writer holding every agent's rows.
let execute (writer: Results.RunWriter) title total work describe = executeRuns [ writer ] title total work describe

/// The run folder of each seed: `out` itself for one seed, `out/s<seed>` for several.
let seedRuns (out: string) (seeds: int list) =
    match seeds with
    | [ _ ] -> [ out ]
    | _ -> seeds |> List.map (fun s -> Path.Combine(out, sprintf "s%d" s))

/// Takes the folder for this process (creating it; see FolderLock), then refuses to overwrite a completed run
/// unless forced. The lock is held until the returned value is disposed.
let prepareOut (out: string) (force: bool) =
    let lock = FolderLock.acquire out
    if Results.isComplete out && not force then
        (lock :> IDisposable).Dispose()
        usageError "--out '%s' already holds a completed run; pass --force to overwrite it or choose another folder" out
    lock

/// One writer per seed, each a run of its own in its seed's folder (see seedRuns), created after the folders are
/// taken and checked; `key seed` names the run. The folders stay locked until the second value is disposed.
let seedWriters (out: string) (seeds: int list) (force: bool) (key: int -> Results.RunKey) (configJson: string) (command: string) =
    let locks = Collections.Generic.List<FolderLock.Lock>()
    try
        locks.Add(prepareOut out force)
        let runs = seedRuns out seeds
        for dir in runs do if dir <> out then locks.Add(prepareOut dir force)
        let writers = List.zip seeds runs |> List.map (fun (seed, dir) -> Results.RunWriter(dir, key seed, configJson, command))
        writers, FolderLock.all (List.ofSeq locks)
    with _ ->
        (FolderLock.all (List.ofSeq locks)).Dispose()
        reraise ()
