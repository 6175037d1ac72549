// A population spanning nodes: the same meta-training population (4 agents in two groups of two, Pendulum-v1, sync,
// micro size) run in one process, then with its two groups on two local worker processes (the coordinator, the
// objective server and the writer in the first process). On one machine the total cannot grow; the figures show what
// the remote schedule costs (every collect and update is a round trip per group). The rate counts the run itself:
// agent env steps over the time from its first row to its last (startup and the join are reported apart).
// Prints one JSON line per run.
//   dotnet fsi bench/span.fsx [-- --steps N]
#load "clusterbench.fsx"

open System
open System.Diagnostics
open System.IO
open MetaGenRL.Pipeline
open Clusterbench

let argv = fsi.CommandLineArgs |> Array.skip 1
let steps =
    match Array.tryFindIndex ((=) "--steps") argv with
    | Some i -> int argv.[i + 1]
    | None -> 2000
let agents = 4

let measure (workers: int) =
    let out = Path.Combine(Path.GetTempPath(), sprintf "span-bench-%s" (Guid.NewGuid().ToString("N").Substring(0, 8)))
    let endpoint = sprintf "127.0.0.1:%d" (freePort ())
    let run =
        [ "meta-train"; "--envs"; "Pendulum-v1"; "--agents"; string agents; "--steps"; string steps; "--seed"; "0"
          "--scale"; "micro"; "--set"; "group_size=2"; "--torch-threads"; "1"; "--out"; out ]
        @ (if workers = 0 then [] else [ "--cluster"; endpoint; "--workers"; string workers ])
    let clock = Stopwatch.StartNew()
    let procs = [ for _ in 1 .. workers -> startCli [ "worker"; "--join"; endpoint ] ]
    try
        use p = startCli run
        p.WaitForExit()
        let total = clock.Elapsed.TotalSeconds
        if p.ExitCode <> 0 then failwithf "meta-train with %d workers exited %d" workers p.ExitCode
        let rows = Results.readParquet (Path.Combine(out, "metrics.parquet"))
        let first, last = rows |> List.map (fun r -> r.wall_time_s) |> List.min, rows |> List.map (fun r -> r.wall_time_s) |> List.max
        let running = last - first
        printfn "{\"workload\":\"span\",\"workers\":%d,\"agents\":%d,\"group_size\":2,\"mode\":\"meta-train\",\"steps\":%d,\"seconds_total\":%.1f,\"seconds_running\":%.1f,\"agent_steps_per_s\":%.0f}"
            workers agents steps total running (float (agents * steps) / running)
    finally
        for w in procs do (try w.Kill() with _ -> ())
        if Directory.Exists out then Directory.Delete(out, true)

measure 0
measure 2
