// Meta-trains the learned objective L_α with a population of agents, one population per seed; the objectives
// (checkpoints under results/meta_train/<id>/trials/mt_*/checkpoints) are what meta_test.fsx tests.
//   dotnet fsi experiments/meta_train.fsx                   tiny (and micro): Pendulum & InvertedPendulum, 2 agents
//   dotnet fsi experiments/meta_train.fsx -- --scale paper  Lunar & Cheetah, 20 agents, 700k steps
//   dotnet fsi experiments/meta_train.fsx -- --help | --dry-run | --out DIR
#load "common.fsx"

open MetaGenRL.Pipeline
open MetaGenRL.Pipeline.Experiment

let metaTrain =
    { Experiment.create "meta_train" with
        MetaTrain = [ [ "LunarLanderContinuous-v2"; "HalfCheetah-v2" ] ]
        MetaTest = []
        Variants = [ objective "full" ]
        Baselines = []
        MetaTrainSeeds = [ 0 ]
        AtScale = [ for s in [ Micro; Tiny ] -> s, fun e -> { e with MetaTrain = [ [ "Pendulum-v1"; "InvertedPendulum-v2" ] ] } ] }

exit (Script.main metaTrain fsi.CommandLineArgs)
