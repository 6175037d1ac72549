module MetaGenRL.Tests.Main

open System
open Expecto
open Expecto.Impl

/// Runs every [<Tests>] value in this assembly, then prints one plain "N passed, N failed, N skipped" line
/// on the raw standard output (Expecto's own summary is coloured and padded, so CI cannot read it).
[<EntryPoint>]
let main argv =
    MetaGenRL.Core.Native.EnsureLoaded()
    let mutable summary : TestRunSummary option = None
    let config =
        { defaultConfig with
            printer =
                { defaultConfig.printer with
                    summary = fun cfg s ->
                        summary <- Some s
                        defaultConfig.printer.summary cfg s } }
    let rc = runTestsInAssemblyWithCLIArgs [ CLIArguments.Printer config.printer ] argv
    let line =
        match summary with
        | Some s ->
            let failed = s.failed.Length + s.errored.Length
            sprintf "\n%d passed, %d failed, %d skipped\n" s.passed.Length failed s.ignored.Length
        | None -> "\n0 passed, 1 failed\n"
    use out = Console.OpenStandardOutput()
    let bytes = Text.Encoding.UTF8.GetBytes line
    out.Write(bytes, 0, bytes.Length)
    out.Flush()
    rc
