// Sweep throughput: the same small sweep (TD3 on Pendulum-v1, 4 seeds × 3000 steps at micro size) run in this
// process on all cores, then by a cluster coordinator with 1 and with 2 local worker processes (trials packed onto
// the cores each worker advertises, rows streamed back to the coordinator's writers). On one machine the total cannot grow with workers;
// the figures show what distribution costs. Prints one JSON line per run.
//   dotnet fsi bench/sweep.fsx [-- --seeds N --steps N]
#load "clusterbench.fsx"

open System
open System.Diagnostics
open System.IO
open MetaGenRL.Pipeline
open MetaGenRL.Pipeline.Experiment
open Clusterbench

let argv = fsi.CommandLineArgs |> Array.skip 1
let arg (name: string) (fallback: int) =
    match Array.tryFindIndex ((=) name) argv with
    | Some i -> int argv.[i + 1]
    | None -> fallback
let seeds, steps = arg "--seeds" 4, arg "--steps" 3000

let e =
    atScale { Experiment.create "sweep-bench" with
                Variants = []; MetaTrain = []; MetaTest = [ "Pendulum-v1" ]; Baselines = [ "td3" ]
                BaselineSeeds = [ 0 .. seeds - 1 ]; Scale = Micro; MetaTestSteps = Some(int64 steps) }
let trials = expand e

let measure (label: string) (workers: int) =
    let out = Path.Combine(Path.GetTempPath(), sprintf "sweep-bench-%s" (Guid.NewGuid().ToString("N").Substring(0, 8)))
    let opts : ExperimentRunner.RunOptions = { Out = out; Cores = Environment.ProcessorCount; TorchThreads = 1; LossLogEvery = 100; Command = "bench" }
    let endpoint = sprintf "127.0.0.1:%d" (freePort ())
    let cluster = if workers = 0 then None else Some({ Endpoint = endpoint; Secret = secret; SpanOver = 0 } : ClusterCoordinator.ClusterSpec)
    let clock = Stopwatch.StartNew()
    let mutable firstStart = nan
    let watch (runs: ExperimentRunner.TrialRun list) (work: Threading.Tasks.Task) =
        let procs = [ for _ in 1 .. workers -> startCli [ "worker"; "--join"; endpoint ] ]
        try
            while not work.IsCompleted do
                if Double.IsNaN firstStart && runs |> List.exists (fun r -> r.Status <> ExperimentRunner.Pending) then
                    firstStart <- clock.Elapsed.TotalSeconds
                work.Wait 20 |> ignore
        finally
            for p in procs do (try p.Kill() with _ -> ())
    let _, status = ExperimentRunner.runOn cluster e trials opts Threading.CancellationToken.None watch
    let total = clock.Elapsed.TotalSeconds
    Directory.Delete(out, true)
    if status <> "complete" then failwithf "%s: %s" label status
    let running = total - firstStart
    printfn "{\"workload\":\"sweep\",\"run\":\"%s\",\"workers\":%d,\"trials\":%d,\"env_steps\":%d,\"seconds_total\":%.1f,\"seconds_to_first_trial\":%.1f,\"seconds_running\":%.1f,\"env_steps_per_s\":%.0f}"
        label workers trials.Length (int64 trials.Length * int64 steps) total firstStart running (float (int64 trials.Length * int64 steps) / running)

measure "local" 0
measure "cluster" 1
measure "cluster" 2
