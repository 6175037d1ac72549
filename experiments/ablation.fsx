// The default job: the paper's Figure 5 ablation. Variants of the learned objective L_α are meta-trained on a pair
// of envs, then each frozen objective trains fresh agents on a seen and an unseen env, against TD3, off-policy
// REINFORCE and a random (never trained) objective.
//   dotnet fsi experiments/ablation.fsx                  tiny scale: minutes on 2 cores (cheap envs)
//   dotnet fsi experiments/ablation.fsx -- --scale paper  Lunar & Cheetah → Cheetah (seen), Hopper (unseen)
//   dotnet fsi experiments/ablation.fsx -- --help | --dry-run | --out DIR
#load "common.fsx"

open MetaGenRL.Pipeline
open MetaGenRL.Pipeline.Experiment

let ablation =
    { Experiment.create "ablation" with
        MetaTrain = [ [ "LunarLanderContinuous-v2"; "HalfCheetah-v2" ] ]
        MetaTest = [ "HalfCheetah-v2"; "Hopper-v2" ]
        Variants = [ objective "full"; objective "no-value"; objective "no-time"; objective "q-input" ]
        Baselines = [ "td3"; "reinforce-offpolicy"; "random-objective" ]
        MetaTrainSeeds = [ 0 ]
        MetaTestSeeds = [ 0; 1 ]
        BaselineSeeds = [ 0; 1 ]
        Scale = Tiny
        AtScale =
          [ // Envs where a few thousand steps show learning; Pendulum is seen, InvertedDoublePendulum unseen.
            Tiny, fun e -> { e with MetaTrain = [ [ "Pendulum-v1"; "InvertedPendulum-v2" ] ]; MetaTest = [ "Pendulum-v1"; "InvertedDoublePendulum-v2" ] }
            Micro, fun e ->
                { e with MetaTrain = [ [ "Pendulum-v1"; "InvertedPendulum-v2" ] ]; MetaTest = [ "Pendulum-v1"; "InvertedDoublePendulum-v2" ]
                         MetaTestSeeds = [ 0 ]; BaselineSeeds = [ 0 ] }
            // The paper: 6 meta-train × 2 meta-test seeds, 20 agents.
            Paper, fun e -> { e with MetaTrainSeeds = [ 0 .. 5 ]; MetaTestSeeds = [ 0; 1 ]; BaselineSeeds = [ 0 .. 5 ] } ] }

exit (Script.main ablation fsi.CommandLineArgs)
