/// Stops a process whose parent is gone. `dotnet fsi script.fsx` runs the script in a child process of the `dotnet`
/// command; when that parent is killed (kill -9, a closed job), the child would run on, re-parented, and keep
/// writing the experiment folder that a re-run needs. The watch polls the parent pid and calls `onOrphaned` once it
/// changes, which the experiment treats as Ctrl-C.
module MetaGenRL.Pipeline.ParentWatch

open System
open System.Runtime.InteropServices
open System.Threading

[<DllImport("libc", EntryPoint = "getppid")>]
extern int private getppid()

/// How often the parent pid is read.
let pollInterval = TimeSpan.FromMilliseconds 500.0

/// Starts watching (a no-op on Windows, where the parent is not tracked this way); dispose to stop.
let start (onOrphaned: unit -> unit) : IDisposable =
    if OperatingSystem.IsWindows() then { new IDisposable with member _.Dispose() = () }
    else
        let parent = getppid ()
        let fired = ref 0
        let timer =
            new Timer((fun _ ->
                if getppid () <> parent && Interlocked.Exchange(&fired.contents, 1) = 0 then onOrphaned ()),
                      null, pollInterval, pollInterval)
        timer :> IDisposable
