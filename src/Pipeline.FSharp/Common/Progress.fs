/// The one console owner for long work: a Spectre.Console progress bar on a terminal, plain periodic lines
/// when output is redirected (CI, logs, pipes).
module MetaGenRL.Pipeline.Progress

open System
open System.Threading
open System.Threading.Tasks
open Spectre.Console

/// True when stdout is an interactive terminal that can redraw a live display.
let interactive () =
    not Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive

/// Runs `work` on a worker thread while this thread shows its progress towards `total` units.
/// `status` adds a short live note (e.g. the last episode return). Returns what `work` returns,
/// or rethrows what it threw.
let run (title: string) (total: int64) (status: unit -> string) (work: IProgress<int64> -> 'T) : 'T =
    let mutable current = 0L
    let reporter = { new IProgress<int64> with member _.Report v = Interlocked.Exchange(&current, v) |> ignore }
    let job = Task.Run(fun () -> work reporter)
    let clock = Diagnostics.Stopwatch.StartNew()
    let line () =
        let c = Interlocked.Read &current
        let rate = float c / max clock.Elapsed.TotalSeconds 1e-9
        let pct = if total > 0L then 100.0 * float c / float total else 0.0
        sprintf "%d/%d (%.0f%%), %.0f steps/s, %s elapsed%s" c total pct rate
            (clock.Elapsed.ToString @"hh\:mm\:ss") (match status () with "" -> "" | s -> ", " + s)
    if interactive () then
        AnsiConsole.Progress()
            .AutoClear(false)
            .Columns(TaskDescriptionColumn(), ProgressBarColumn(), PercentageColumn(), RemainingTimeColumn(), SpinnerColumn())
            .Start(fun ctx ->
                let t = ctx.AddTask(Markup.Escape title, true, float (max total 1L))
                while not job.IsCompleted do
                    t.Value <- float (Interlocked.Read &current)
                    t.Description <- Markup.Escape(sprintf "%s  %s" title (status ()))
                    (job :> IAsyncResult).AsyncWaitHandle.WaitOne 150 |> ignore
                t.Value <- float (Interlocked.Read &current))
    else
        let every = TimeSpan.FromSeconds 10.0
        let mutable next = every
        // Waiting on the handle, not job.Wait, so a failure surfaces below as itself, not as an AggregateException.
        while not ((job :> IAsyncResult).AsyncWaitHandle.WaitOne 200) do
            if clock.Elapsed >= next then
                Console.WriteLine(sprintf "[%s] %s" title (line ()))
                next <- clock.Elapsed + every
        Console.WriteLine(sprintf "[%s] %s" title (line ()))
    job.GetAwaiter().GetResult()
