module MetaGenRL.Tests.CliTests

open System
open System.Diagnostics
open System.IO
open Expecto
open MetaGenRL.Tests.TestUtil

/// The built CLI.
let cliDll = Path.Combine(repoRoot, "src", "Pipeline.FSharp", "bin", "Release", "net10.0", "MetaGenRL.Pipeline.dll")

let private cliStartInfo (env: (string * string) list) (args: string list) =
    let psi = ProcessStartInfo("dotnet", RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
    psi.ArgumentList.Add cliDll
    for a in args do psi.ArgumentList.Add a
    for k, v in env do psi.Environment[k] <- v
    psi

/// Starts the CLI as a child process with extra environment variables and returns it running, its output drained (a
/// test that kills it).
let startCliWith (env: (string * string) list) (args: string list) =
    let p = Process.Start(cliStartInfo env args)
    p.OutputDataReceived.Add ignore; p.ErrorDataReceived.Add ignore
    p.BeginOutputReadLine(); p.BeginErrorReadLine()
    p

/// Starts the CLI as a child process and returns it running, its output drained (a test that kills it).
let startCli (args: string list) = startCliWith [] args

/// Runs the built CLI as a child process (as a user would) with extra environment variables and returns (exit code,
/// stdout, stderr).
let cliWith (env: (string * string) list) (args: string list) =
    let psi = cliStartInfo env args
    use p = Process.Start psi
    let out = p.StandardOutput.ReadToEndAsync()
    let err = p.StandardError.ReadToEndAsync()
    if not (p.WaitForExit 300_000) then (p.Kill true; failtest "CLI timed out")
    p.ExitCode, out.Result, err.Result

/// Runs the built CLI as a child process (as a user would) and returns (exit code, stdout, stderr).
let cli (args: string list) = cliWith [] args

let expectError (args: string list) (mustContain: string list) =
    let rc, _, err = cli args
    Expect.equal rc 2 (sprintf "exit code for %A (stderr: %s)" args err)
    for s in mustContain do Expect.stringContains err s (sprintf "stderr names '%s'" s)

/// Runs `args out []` to completion in one folder and, in another, starts it, kills it (kill -9) once its second
/// checkpoint exists, resumes it with `--resume`, and checks that the resumed run has the rows of the uninterrupted
/// one (checkpoint markers aside). Returns the stdout of the resume.
let killAndResume (name: string) (args: string -> string list -> string list) =
    let whole = TestUtil.tempDir (name + "-whole")
    let killed = TestUtil.tempDir (name + "-killed")
    try
        let rc, out, err = cli (args whole [])
        Expect.equal rc 0 (sprintf "uninterrupted; stdout %s stderr %s" out err)
        use p = startCli (args killed [])
        let store = MetaGenRL.Core.Checkpoints.CheckpointStore killed
        let clock = Stopwatch.StartNew()
        while not p.HasExited && store.Latest().GetValueOrDefault(-1) < 1 && clock.Elapsed.TotalSeconds < 120.0 do
            Threading.Thread.Sleep 10
        Expect.isFalse p.HasExited "the run was still going at its second checkpoint"
        p.Kill()
        p.WaitForExit()
        Expect.isFalse (MetaGenRL.Pipeline.Results.isComplete killed) "a killed run is not complete"
        let rc2, out2, err2 = cli (args killed [ "--resume" ])
        Expect.equal rc2 0 (sprintf "resumed; stdout %s stderr %s" out2 err2)
        Expect.stringContains out2 "resuming from checkpoint" "it resumed"
        let comparable (d: string) =
            MetaGenRL.Pipeline.Results.readParquet (Path.Combine(d, "metrics.parquet"))
            |> List.filter (fun r -> r.metric <> "checkpoint")
            |> List.map (fun r -> r.env, r.agent, r.env_step, r.metric, r.value)
        Expect.equal (comparable killed) (comparable whole) "the same rows as the uninterrupted run"
        expectError (args killed [ "--resume" ]) [ "completed run" ]
        out2
    finally
        for d in [ whole; killed ] do Directory.Delete(d, true)

[<Tests>]
let tests =
    testList "CLI" [
        test "help documents train options" {
            let rc, out, err = cli [ "train"; "--help" ]
            Expect.equal rc 0 "exit code"
            for opt in [ "--algo"; "--env"; "--steps"; "--seed"; "--out"; "--set"; "--device" ] do
                Expect.stringContains (out + err) opt "help lists the option"
        }
        test "unknown env id is named with the valid ids, in one line" {
            let _, _, err = cli [ "train"; "--env"; "Nope-v9" ]
            Expect.equal (err.Trim().Split('\n').Length) 1 (sprintf "one line: %s" err)
            Expect.isFalse (err.Contains "(Parameter") "no .NET parameter suffix"
            expectError [ "train"; "--env"; "Nope-v9" ] [ "Nope-v9"; "HalfCheetah-v2" ]
        }
        test "unknown config key is named" { expectError [ "train"; "--set"; "polcy_units=64" ] [ "polcy_units" ] }
        test "unparsable value names key and value" { expectError [ "train"; "--set"; "policy_units=lots" ] [ "policy_units"; "lots" ] }
        test "malformed override is named" { expectError [ "train"; "--set"; "policy_units" ] [ "policy_units" ] }
        test "unknown scale is named" { expectError [ "train"; "--scale"; "huge" ] [ "--scale 'huge'"; "micro, tiny, small, paper" ] }
        test "unknown algorithm is named" { expectError [ "train"; "--algo"; "a2c" ] [ "a2c"; "ppo" ] }
        test "non-positive steps are rejected" { expectError [ "train"; "--steps"; "0" ] [ "--steps" ] }
        test "cuda without CUDA is a clear error" { expectError [ "train"; "--device"; "cuda" ] [ "CUDA is not available" ] }
        test "unknown argument exits non-zero" {
            let rc, _, _ = cli [ "train"; "--bogus" ]
            Expect.notEqual rc 0 "exit code"
        }

        test "baselines on the same harness: random-objective and reinforce-offpolicy report objective losses" {
            for algo in [ "random-objective"; "reinforce-offpolicy" ] do
                let dir = tempDir ("cli-" + algo)
                try
                    let rc, out, err =
                        cli [ "train"; "--algo"; algo; "--env"; "Pendulum-v1"; "--steps"; "250"; "--seed"; "2"; "--out"; dir
                              "--set"; "policy_units=16"; "--set"; "critic_units=16"; "--set"; "buffer_sample_size=4"
                              "--set"; "policy_random_exploration_steps=150"; "--loss-log-every"; "5" ]
                    Expect.equal rc 0 (sprintf "%s exit code; stdout %s stderr %s" algo out err)
                    let rows = MetaGenRL.Pipeline.Results.readParquet (Path.Combine(dir, "metrics.parquet"))
                    Expect.isTrue (rows |> List.exists (fun r -> r.metric = "policy_obj_loss")) (algo + ": objective loss logged")
                    Expect.isTrue (rows |> List.forall (fun r -> r.variant = algo && Double.IsFinite r.value)) (algo + ": rows")
                finally Directory.Delete(dir, true)
        }

        test "tiny train run writes complete Parquet and run.json" {
            let dir = tempDir "cli-train"
            try
                let rc, out, err =
                    cli [ "train"; "--algo"; "td3"; "--env"; "Pendulum-v1"; "--steps"; "450"; "--seed"; "3"; "--out"; dir
                          "--scale"; "micro"; "--set"; "policy_random_exploration_steps=200"; "--loss-log-every"; "10" ]
                Expect.equal rc 0 (sprintf "exit code; stdout %s stderr %s" out err)
                let rows = MetaGenRL.Pipeline.Results.readParquet (Path.Combine(dir, "metrics.parquet"))
                let returns = rows |> List.filter (fun r -> r.metric = "episode_return")
                Expect.equal returns.Length 2 "two 200-step Pendulum episodes in 450 steps"
                Expect.isTrue (rows |> List.exists (fun r -> r.metric = "critic_loss")) "losses logged"
                Expect.isTrue (rows |> List.forall (fun r -> r.seed = 3 && r.env = "Pendulum-v1" && r.phase = "train")) "row keys"
                Expect.isTrue (MetaGenRL.Pipeline.Results.isComplete dir) "run.json complete"
                let cfg = Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "run.json"))).RootElement.GetProperty("config")
                Expect.equal (cfg.GetProperty("policy_units").GetInt32()) 16 "scale preset recorded in the resolved config"
                Expect.equal (cfg.GetProperty("recurrent_time_steps").GetInt32()) 10 "scale preset"
                Expect.equal (cfg.GetProperty("policy_random_exploration_steps").GetInt32()) 200 "--set applies after the scale"
                // A completed run is not overwritten by accident.
                let rc2, _, err2 = cli [ "train"; "--env"; "Pendulum-v1"; "--steps"; "10"; "--out"; dir ]
                Expect.equal rc2 2 "refuses to overwrite"
                Expect.stringContains err2 "--force" "suggests --force"
            finally Directory.Delete(dir, true)
        }
    
        test "train --seed s and an experiment's baseline trial of seed s give identical rows; run.json holds the config that ran" {
            let root = tempDir "cli-vs-trial"
            try
                let dir = Path.Combine(root, "train")
                let rc, out, err =
                    cli [ "train"; "--algo"; "ddpg"; "--env"; "Pendulum-v1"; "--steps"; "330"; "--seed"; "4"; "--out"; dir
                          "--scale"; "micro"; "--loss-log-every"; "100" ]
                Expect.equal rc 0 (sprintf "train exit code; stdout %s stderr %s" out err)
                let e =
                    { MetaGenRL.Pipeline.Experiment.create "same" with
                        Variants = []; MetaTrain = []; MetaTest = [ "Pendulum-v1" ]; Baselines = [ "ddpg" ]; BaselineSeeds = [ 4 ]
                        Scale = MetaGenRL.Pipeline.Experiment.Micro; MetaTestSteps = Some 330L }
                let exp = Path.Combine(root, "exp")
                Expect.equal (MetaGenRL.Pipeline.Script.main e [| "x.fsx"; "--out"; exp; "--no-report" |]) 0 "experiment exit code"
                let trialDir = Directory.GetDirectories(Path.Combine(exp, "trials")) |> Array.exactlyOne
                let key (r: MetaGenRL.Pipeline.Results.Row) = r.agent, r.env_step, r.metric, r.value
                let cliRows = MetaGenRL.Pipeline.Results.readParquet (Path.Combine(dir, "metrics.parquet")) |> List.map key
                let trialRows = MetaGenRL.Pipeline.Results.readParquet (Path.Combine(trialDir, "metrics.parquet")) |> List.map key
                Expect.isGreaterThan (cliRows |> List.filter (fun (_, _, m, _) -> m = "episode_return") |> List.length) 0 "episodes ran"
                Expect.equal cliRows trialRows "the same rows (agent, env_step, metric, value) in the same order"
                // provenance: the config that ran, in run.json and in the Parquet key-value metadata
                let config (d: string) = Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(d, "run.json")))["config"]
                let cfg = config dir
                Expect.equal (cfg["env_name"].ToJsonString()) "[\"Pendulum-v1\"]" "env_name as run"
                Expect.equal (cfg["timesteps_total"].GetValue<int64>()) 330L "timesteps_total as run"
                Expect.equal (cfg["agent_count"].GetValue<int>()) 1 "agent_count as run"
                Expect.equal (cfg["policy_update_delay"].GetValue<int>()) 1 "DDPG's own setting recorded"
                Expect.equal (cfg["critic_noise"].GetValue<float>()) 0.0 "DDPG's own setting recorded"
                Expect.equal (cfg["checkpoint_every"].GetValue<int64>()) 1000L "the checkpoint interval that ran"
                Expect.equal (cfg.ToJsonString()) ((config trialDir).ToJsonString()) "train and the trial ran the same config"
                let kv = MetaGenRL.Tests.ResultsTests.duck (sprintf "SELECT decode(value) FROM parquet_kv_metadata('%s') WHERE decode(key) = 'metagenrl.config'" (Path.Combine(dir, "metrics.parquet")))
                Expect.equal (Text.Json.Nodes.JsonNode.Parse(kv.Head.Head).ToJsonString()) (cfg.ToJsonString()) "Parquet metadata holds the same config (read by DuckDB)"
            finally Directory.Delete(root, true)
        }

        test "train --seeds 0,1,2 runs one group and writes one run per seed; each seed's rows equal its lone run's" {
            let root = tempDir "cli-seeds"
            try
                let args (seeds: string list) out =
                    [ "train"; "--algo"; "td3"; "--env"; "Pendulum-v1"; "--steps"; "260"; "--out"; out; "--scale"; "micro"
                      "--loss-log-every"; "50" ] @ seeds
                let rc, out, err = cli (args [ "--seeds"; "0,1,2" ] (Path.Combine(root, "all")))
                Expect.equal rc 0 (sprintf "exit code; stdout %s stderr %s" out err)
                let rc1, _, err1 = cli (args [ "--seed"; "1" ] (Path.Combine(root, "one")))
                Expect.equal rc1 0 ("lone seed: " + err1)
                let rows (d: string) = MetaGenRL.Pipeline.Results.readParquet (Path.Combine(d, "metrics.parquet"))
                for s in [ 0; 1; 2 ] do
                    let rs = rows (Path.Combine(root, "all", sprintf "s%d" s))
                    Expect.isTrue (rs |> List.forall (fun r -> r.seed = s && r.agent = 0)) (sprintf "seed %d's run holds its own rows" s)
                    Expect.isLessThanOrEqual (rs |> List.map (fun r -> r.env_step) |> List.max) 260L "the budget is honoured"
                // in a group of three, seed 1 follows its own schedule: the same rows as alone, up to the rounding of
                // the batched kernels (float32 through a few hundred updates: returns agree to 1e-3 relative)
                let inGroup = rows (Path.Combine(root, "all", "s1")) |> List.filter (fun r -> r.metric = "episode_return")
                let alone = rows (Path.Combine(root, "one")) |> List.filter (fun r -> r.metric = "episode_return")
                Expect.equal (inGroup |> List.map (fun r -> r.env_step)) (alone |> List.map (fun r -> r.env_step)) "same episodes"
                for a, b in List.zip inGroup alone do close (1e-3 * (abs b.value + 1.0)) a.value b.value "episode return"
                expectError [ "train"; "--seeds"; "0,0" ] [ "--seeds"; "twice" ]
                expectError [ "train"; "--seed"; "1"; "--seeds"; "2,3" ] [ "--seed and --seeds" ]
            finally Directory.Delete(root, true)
        }

        test "two writers on one folder: the second exits 2 naming the holder; a killed holder's folder is free again" {
            let dir = tempDir "cli-lock"
            let args steps = [ "train"; "--env"; "Pendulum-v1"; "--steps"; string steps; "--out"; dir; "--scale"; "micro"
                               "--set"; "policy_random_exploration_steps=200" ]
            try
                // the first writer: long enough to be killed while it holds the folder
                use first = startCli (args 1_000_000)
                let holder = Path.Combine(dir, MetaGenRL.Pipeline.FolderLock.holderFile)
                let clock = Stopwatch.StartNew()
                while not (File.Exists holder) && not first.HasExited && clock.Elapsed.TotalSeconds < 120.0 do Threading.Thread.Sleep 100
                Expect.isFalse first.HasExited "the first writer is running"
                Expect.isTrue (File.Exists holder) "the holder is described"
                expectError (args 300) [ dir; sprintf "in use by pid %d" first.Id; Environment.MachineName ]
                Expect.isFalse first.HasExited "the refused writer did not disturb the first"
                first.Kill true
                first.WaitForExit()
                // the kernel released the lock with the process: the folder can be taken over at once
                let rc, out, err = cli (args 300)
                Expect.equal rc 0 (sprintf "a new run takes over the folder of a killed one; stdout %s stderr %s" out err)
                Expect.isTrue (MetaGenRL.Pipeline.Results.isComplete dir) "and completes"
                Expect.isFalse (File.Exists holder) "a finished run leaves no holder description"
                expectError (args 300) [ dir; "completed run" ]
            finally Directory.Delete(dir, true)
        }
    ]
