/// Ownership of a results folder: one writing process at a time. The lock is an exclusive advisory lock (flock,
/// which .NET takes for FileShare.None on Unix) on `<dir>/.lock`, held by an open stream for the life of the run.
/// The kernel drops it when the process ends in any way (exit, crash, kill -9), so a lock whose holder is gone is
/// simply free: the next writer takes it, with nothing to clean up. Who holds it (pid, host, start time, command)
/// is written to `<dir>/.lock.json`, which a refused writer reads to name the holder. The lock file itself is never
/// deleted: a writer waiting on the old file while a new one is created would otherwise hold a lock on a file
/// nobody else can see. Advisory locks are per host: on a folder shared over NFS, two hosts are not kept apart.
module MetaGenRL.Pipeline.FolderLock

open System
open System.IO
open System.Text.Json.Nodes
open MetaGenRL.Pipeline.Errors

/// The lock file and the holder description inside a locked folder.
let lockFile = ".lock"
let holderFile = ".lock.json"

/// A held lock; disposing releases it (and removes the holder description).
type Lock internal (dir: string, stream: FileStream) =
    member _.Dir = dir
    interface IDisposable with
        member _.Dispose() =
            (try File.Delete(Path.Combine(dir, holderFile)) with _ -> ())
            stream.Dispose()

/// "pid P on HOST since T (COMMAND)", from a holder description, or a plain fallback when it cannot be read.
let private describeHolder (dir: string) =
    try
        let j = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, holderFile)))
        sprintf "pid %d on %s since %s (%s)" (j["pid"].GetValue<int>()) (j["host"].GetValue<string>())
            (j["started"].GetValue<string>()) (j["command"].GetValue<string>())
    with _ -> "another process (its description is not written yet)"

/// True when the lock file can be opened for reading but not locked: another process holds it (as opposed to a
/// folder that cannot be written at all, e.g. a read-only file system).
let private heldByAnother (path: string) =
    try
        use _ = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.None)
        false
    with
    | :? IOException -> true
    | _ -> false

/// Takes the folder for this process, creating it when needed. A folder another writer holds is a usage error
/// naming the holder; so is a folder that cannot be created or written.
let acquire (dir: string) : Lock =
    try Directory.CreateDirectory dir |> ignore
    with e -> usageError "'%s': cannot create the folder (%s)" dir e.Message
    let path = Path.Combine(dir, lockFile)
    let stream =
        try new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None)
        with
        | :? UnauthorizedAccessException as e -> usageError "'%s': cannot write to the folder (%s)" dir e.Message
        | :? IOException when File.Exists path && heldByAnother path ->
            usageError "'%s' is in use by %s; wait for that run to end or stop it, or choose another folder" dir (describeHolder dir)
        | :? IOException as e -> usageError "'%s': cannot write to the folder (%s)" dir e.Message
    try
        let j = JsonObject()
        j["pid"] <- JsonValue.Create Environment.ProcessId
        j["host"] <- JsonValue.Create Environment.MachineName
        j["started"] <- JsonValue.Create(DateTimeOffset.Now.ToString "o")
        j["command"] <- JsonValue.Create(String.Join(" ", Environment.GetCommandLineArgs()))
        Results.writeAllTextAtomic (Path.Combine(dir, holderFile)) (j.ToJsonString())
    with e ->
        stream.Dispose()
        usageError "'%s': cannot write to the folder (%s)" dir e.Message
    new Lock(dir, stream)

/// Empties a folder this process holds, keeping its lock files (a new run into it starts from nothing).
let clear (dir: string) =
    for f in Directory.GetFiles dir do
        let name = Path.GetFileName f
        if name <> lockFile && name <> holderFile then File.Delete f
    for d in Directory.GetDirectories dir do Directory.Delete(d, true)

/// Releases several locks as one.
let all (locks: Lock list) =
    { new IDisposable with member _.Dispose() = for l in List.rev locks do (l :> IDisposable).Dispose() }
