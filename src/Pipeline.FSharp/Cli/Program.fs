module MetaGenRL.Pipeline.Program

open System
open Argu

[<EntryPoint>]
let main argv =
    try
        MetaGenRL.Core.Native.EnsureLoaded()
        Cli.run argv
    with
    | :? ArguParseException as e when e.ErrorCode = ErrorCode.HelpText ->
        printfn "%s" e.Message
        0
    | :? ArguParseException as e ->
        eprintfn "%s" e.Message
        2
    | Errors.UsageError msg ->
        eprintfn "error: %s" msg
        2
    | :? ArgumentException as e ->
        eprintfn "error: %s" e.Message
        2
    | e ->
        // Anything else is a failure of the run itself: its message, and the details for a bug report.
        eprintfn "error: %s" e.Message
        eprintfn "%s" (e.ToString())
        1
