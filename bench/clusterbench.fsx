// What the cluster benchmarks (sweep.fsx, span.fsx) share: the built CLI, a free port on 127.0.0.1, a shared secret,
// and starting a CLI process (a worker, a coordinator) with that secret and its output drained.
#load "../experiments/common.fsx"

open System
open System.Diagnostics
open System.IO
open System.Net

let secret = Guid.NewGuid().ToString "N"
let cli = Path.Combine(__SOURCE_DIRECTORY__, "../src/Pipeline.FSharp/bin/Release/net10.0/MetaGenRL.Pipeline.dll")

/// A free TCP port on 127.0.0.1 (the OS's choice, released at once).
let freePort () =
    let l = new Sockets.TcpListener(IPAddress.Loopback, 0)
    l.Start()
    let p = (l.LocalEndpoint :?> IPEndPoint).Port
    l.Stop()
    p

/// Starts `./metagenrl args` with the shared secret; its output is read and dropped.
let startCli (args: string list) =
    let psi = ProcessStartInfo("dotnet", RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
    for a in cli :: args do psi.ArgumentList.Add a
    psi.Environment["METAGENRL_CLUSTER_SECRET"] <- secret
    let p = Process.Start psi
    p.OutputDataReceived.Add ignore; p.ErrorDataReceived.Add ignore
    p.BeginOutputReadLine(); p.BeginErrorReadLine()
    p
