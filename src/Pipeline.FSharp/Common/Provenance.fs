/// Where a result came from: code version, packages, machine, time. Travels with every result file.
module MetaGenRL.Pipeline.Provenance

open System
open System.Diagnostics
open System.IO
open System.Reflection

/// Runs git in the folder holding this assembly (a source checkout); None when git or the repo is absent.
let private git (args: string) =
    try
        let dir = Path.GetDirectoryName(Assembly.GetExecutingAssembly().Location)
        let psi = ProcessStartInfo("git", args, WorkingDirectory = dir, RedirectStandardOutput = true,
                                   RedirectStandardError = true, UseShellExecute = false)
        use p = Process.Start psi
        let out = p.StandardOutput.ReadToEnd().Trim()
        p.WaitForExit()
        if p.ExitCode = 0 then Some out else None
    with _ -> None

/// The commit the code was built from, or "unknown".
let gitCommit = lazy (git "rev-parse HEAD" |> Option.defaultValue "unknown")

/// True when tracked files differ from the commit (results may not be reproducible from it).
let gitDirty = lazy (match git "status --porcelain --untracked-files=no" with Some s -> s <> "" | None -> false)

let private versionOf (t: Type) =
    let a = t.Assembly
    match a.GetCustomAttribute<AssemblyInformationalVersionAttribute>() with
    | null -> string (a.GetName().Version)
    | v -> v.InformationalVersion.Split('+').[0]

/// Versions of the packages that shape the numbers.
let packageVersions () : (string * string) list =
    [ "dotnet", Environment.Version.ToString()
      "TorchSharp", versionOf typeof<TorchSharp.torch>
      "libtorch", (try TorchSharp.torch.__version__ with _ -> "unknown")
      "Parquet.Net", versionOf typeof<Parquet.ParquetOptions>
      "Akka", versionOf typeof<Akka.Actor.ActorSystem>
      "MetaGenRL", versionOf typeof<MetaGenRL.Core.Native> ]

/// The machine: host name, OS, core count.
let host () =
    sprintf "%s (%s, %d cores)" Environment.MachineName (Runtime.InteropServices.RuntimeInformation.OSDescription) Environment.ProcessorCount
