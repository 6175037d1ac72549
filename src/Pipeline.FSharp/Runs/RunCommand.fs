/// What the run commands (train, meta-train, meta-test) share: the output folder check, running the work under the
/// progress display with Ctrl-C handling, and the summary line of a single-agent run.
module MetaGenRL.Pipeline.RunCommand

open System
open System.IO
open System.Threading
open MetaGenRL.Core.Training
open MetaGenRL.Pipeline.Errors

/// Runs `work` under the progress display with Ctrl-C handling and periodic flushes of `writer`, then writes
/// the final status. Returns 0 when complete, 130 when interrupted; a failure is flushed as "failed" and rethrown.
let execute (writer: Results.RunWriter) (title: string) (total: int64)
            (work: Action<Metric> -> IProgress<int64> -> CancellationToken -> 'T) (describe: 'T -> string) : int =
    use cts = new CancellationTokenSource()
    let onCancel = ConsoleCancelEventHandler(fun _ e -> e.Cancel <- true; cts.Cancel())
    Console.CancelKeyPress.AddHandler onCancel
    // Periodic flushes keep at most a minute of rows at risk if the process is killed.
    use _timer = new Timer((fun _ -> try writer.Flush "running" with _ -> ()), null, 60_000, 60_000)
    let mutable lastReturn = nan
    let mutable episodes = 0
    let onMetric =
        Action<Metric>(fun m ->
            writer.Add(m.Agent, m.EnvStep, m.Name, m.Value)
            if m.Name = "episode_return" then
                lastReturn <- m.Value
                episodes <- episodes + 1)
    let status () = if episodes = 0 then "" else sprintf "episode %d return %.1f" episodes lastReturn
    try
        try
            let result =
                try Some(Progress.run title total status (fun progress -> work onMetric progress cts.Token))
                with :? OperationCanceledException when cts.IsCancellationRequested -> None
            let finalStatus = if cts.IsCancellationRequested then "interrupted" else "complete"
            writer.Flush finalStatus
            match result with
            | Some r -> printfn "%s: %s" finalStatus (describe r)
            | None -> printfn "%s" finalStatus
            printfn "results: %s" writer.ParquetPath
            printfn "provenance: %s" writer.RunJsonPath
            if finalStatus = "complete" then 0 else 130
        with e ->
            (try writer.Flush "failed" with _ -> ())
            reraise ()
    finally
        Console.CancelKeyPress.RemoveHandler onCancel

/// Refuses to overwrite a completed run unless forced, and creates the folder.
let prepareOut (out: string) (force: bool) =
    if Results.isComplete out && not force then
        usageError "--out '%s' already holds a completed run; pass --force to overwrite it or choose another folder" out
    try Directory.CreateDirectory out |> ignore
    with e -> usageError "--out '%s': cannot create the folder (%s)" out e.Message

/// The closing line of a single-agent run.
let describeTrain (summary: TrainSummary) =
    sprintf "%d env steps, %d episodes, %.1f s (%.0f steps/s), last episode return %s"
        summary.EnvSteps summary.Episodes summary.WallSeconds
        (float summary.EnvSteps / max summary.WallSeconds 1e-9)
        (if summary.LastEpisodeReturn.HasValue then sprintf "%.2f" summary.LastEpisodeReturn.Value else "n/a")
