/// The user-facing error every layer raises for bad input (flags, declarations, run folders).
module MetaGenRL.Pipeline.Errors

/// A user-facing error: printed as "error: <message>" with a non-zero exit, no stack trace.
exception UsageError of string

let usageError fmt = Printf.kprintf (fun s -> raise (UsageError s)) fmt
