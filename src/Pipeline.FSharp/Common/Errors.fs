/// The user-facing errors every layer raises for bad input (flags, declarations, run folders), and how any error
/// becomes one line.
module MetaGenRL.Pipeline.Errors

open System

/// A user-facing error: printed as "error: <message>" with exit code 2, no stack trace.
exception UsageError of string

let usageError fmt = Printf.kprintf (fun s -> raise (UsageError s)) fmt

/// An error as one line: a usage error's text, an ArgumentException without .NET's "(Parameter 'x')" suffix, the
/// single inner exception of an AggregateException, otherwise the message.
let rec messageOf (e: exn) : string =
    match e with
    | UsageError m -> m
    | :? AggregateException as a when a.InnerExceptions.Count = 1 -> messageOf a.InnerExceptions[0]
    | :? ArgumentException as a when not (String.IsNullOrEmpty a.ParamName) ->
        a.Message.Replace(sprintf " (Parameter '%s')" a.ParamName, "")
    | e -> e.Message.Replace(Environment.NewLine, " ")

/// True for input that is wrong (exit 2) rather than a run that failed (exit 1).
let rec isUsage (e: exn) =
    match e with
    | UsageError _ | :? ArgumentException -> true
    | :? AggregateException as a when a.InnerExceptions.Count = 1 -> isUsage a.InnerExceptions[0]
    | _ -> false

/// `--verbose` anywhere on a command line (or METAGENRL_VERBOSE=1): errors also print their stack trace. Returns
/// whether it was given and the arguments without it.
let verboseFlag (argv: string[]) =
    let given = argv |> Array.contains "--verbose" || Environment.GetEnvironmentVariable "METAGENRL_VERBOSE" = "1"
    given, argv |> Array.filter (fun a -> a <> "--verbose")

/// Prints an error as one line on stderr ("error: …"), with the stack trace only when `verbose`; returns the exit
/// code: 2 for bad input, 1 for a failed run.
let report (verbose: bool) (e: exn) =
    eprintfn "error: %s" (messageOf e)
    if verbose then eprintfn "%s" (e.ToString())
    if isUsage e then 2 else 1
