module MetaGenRL.Pipeline.Program

open System
open Argu

/// Exit codes: 0 done, 1 a run failed, 2 bad input, 130 interrupted. Every error is one line on stderr; the
/// stack trace only with --verbose.
[<EntryPoint>]
let main argv =
    let verbose, argv = Errors.verboseFlag argv
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
    | :? OperationCanceledException ->
        eprintfn "interrupted"
        130
    | e -> Errors.report verbose e
