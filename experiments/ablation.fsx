// The default job. The L_α ablation (paper Figure 5) is not built yet; until it is, this script runs a short
// TD3 demo on Pendulum-v1 (15k env steps, small networks) and prints its learning curve.
//   dotnet fsi experiments/ablation.fsx            (results in results/demo/td3-Pendulum-v1-s0)
//   dotnet fsi experiments/ablation.fsx -- --force (re-run over a completed demo)
#load "common.fsx"

open MetaGenRL.Pipeline

printfn "ablation.fsx: the learned-objective ablation is not implemented yet; running the TD3 demo instead."

let args = fsi.CommandLineArgs |> Array.skip 1
let request =
    { Runs.TrainRequest.Default with
        Algo = "td3"
        Env = "Pendulum-v1"
        Steps = 15_000L
        Seed = 0
        Experiment = "demo"
        Force = Array.contains "--force" args
        Overrides =
          [ "policy_units=64"; "critic_units=64"; "buffer_sample_size=32"; "policy_random_exploration_steps=1000" ] }

let out = Runs.defaultOut request
let code =
    if Runs.isComplete out && not request.Force then
        printfn "%s already holds a completed demo run (pass -- --force to run it again)." out
        0
    else
        try Runs.train request "dotnet fsi experiments/ablation.fsx"
        with Runs.UsageError msg -> eprintfn "error: %s" msg; 2

if code = 0 then
    let returns =
        Results.readParquet (System.IO.Path.Combine(out, "metrics.parquet"))
        |> List.filter (fun r -> r.metric = "episode_return")
    printfn "\nlearning curve (episode return, mean of 5 episodes):"
    for chunk in returns |> List.chunkBySize 5 do
        let last = List.last chunk
        printfn "  env step %6d  return %8.1f" last.env_step (chunk |> List.averageBy (fun r -> r.value))
exit code
