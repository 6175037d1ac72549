/// Helpers shared by the test files: tolerance checks and the repository layout.
module MetaGenRL.Tests.TestUtil

open System
open System.IO
open Expecto

/// The repository root (the folder holding MetaGenRL.slnx), found upward from the test assembly.
let repoRoot =
    let rec up (d: DirectoryInfo) =
        if isNull d then failwith "MetaGenRL.slnx not found above the test assembly"
        elif File.Exists(Path.Combine(d.FullName, "MetaGenRL.slnx")) then d.FullName
        else up d.Parent
    up (DirectoryInfo AppContext.BaseDirectory)

/// |actual − expected| ≤ tol, with a message naming what was compared.
let close (tol: float) (actual: float) (expected: float) (what: string) =
    if not (abs (actual - expected) <= tol) then
        failtestf "%s: expected %.10g ± %g, got %.10g (diff %.3g)" what expected tol actual (abs (actual - expected))

/// A fresh empty temp folder, deleted by the caller with Directory.Delete(path, true).
let tempDir (prefix: string) =
    let p = Path.Combine(Path.GetTempPath(), sprintf "%s-%s" prefix (Guid.NewGuid().ToString("N").Substring(0, 8)))
    Directory.CreateDirectory p |> ignore
    p

/// Runs f and requires an exception of type 'E whose message contains text.
let throwsContaining<'E when 'E :> exn> (text: string) (what: string) (f: unit -> unit) =
    let ok =
        try f (); None
        with
        | :? 'E as e when e.Message.Contains text -> Some e
        | e -> failtestf "%s: expected %s containing '%s', got %s: %s" what typeof<'E>.Name text (e.GetType().Name) e.Message
    if ok.IsNone then failtestf "%s: expected %s containing '%s', nothing was thrown" what typeof<'E>.Name text
