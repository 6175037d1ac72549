// The hand-designed algorithms alone, on the paper's test envs: TD3, DDPG, off-policy REINFORCE with GAE and a
// random (never trained) objective, through the same harness, logger and schedule as the learned objective.
//   dotnet fsi experiments/baselines.fsx                   tiny: Pendulum and InvertedDoublePendulum, 2 seeds
//   dotnet fsi experiments/baselines.fsx -- --scale paper  Cheetah, Hopper, Lunar; 6 seeds
//   dotnet fsi experiments/baselines.fsx -- --help | --dry-run | --out DIR
#load "common.fsx"

open MetaGenRL.Pipeline
open MetaGenRL.Pipeline.Experiment

let baselines =
    { Experiment.create "baselines" with
        Variants = []
        MetaTest = [ "HalfCheetah-v2"; "Hopper-v2"; "LunarLanderContinuous-v2" ]
        Baselines = [ "td3"; "ddpg"; "reinforce-offpolicy"; "random-objective" ]
        BaselineSeeds = [ 0 .. 5 ]
        AtScale = [ (Tiny, fun e -> { e with MetaTest = [ "Pendulum-v1"; "InvertedDoublePendulum-v2" ]; BaselineSeeds = [ 0; 1 ] }) ] }

exit (Script.main baselines fsi.CommandLineArgs)
