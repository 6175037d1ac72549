// The paper's Table 1 protocol: objectives meta-trained on five env sets (10 agents per env), and RL² and EPG
// meta-trained on the same sets (each one learner with the env steps of the population beside it), each meta-tested on
// Cheetah, Hopper and Lunar (seen or unseen), against the hand-designed baselines (TD3, DDPG, PPO, off- and on-policy
// REINFORCE); 6 meta-train × 2 meta-test seeds at paper scale (the paper ran EPG with 3). Paper scale needs GPUs or a
// cluster (see --dry-run for the estimate).
//   dotnet fsi experiments/table1.fsx -- --scale paper
//   dotnet fsi experiments/table1.fsx -- --help | --dry-run | --out DIR
#load "common.fsx"

open MetaGenRL.Pipeline
open MetaGenRL.Pipeline.Experiment

let cheetah, hopper, lunar, walker, ant = "HalfCheetah-v2", "Hopper-v2", "LunarLanderContinuous-v2", "Walker2d-v2", "Ant-v2"

let table1 =
    { Experiment.create "table1" with
        MetaTrain =
          [ [ cheetah; hopper ]
            [ lunar; cheetah ]
            [ lunar; hopper; walker; ant ]
            [ cheetah; lunar; walker; ant ]
            [ cheetah; hopper; walker; ant ] ]
        MetaTest = [ cheetah; hopper; lunar ]
        AgentsPerEnv = Some 10
        Variants = [ objective "full"; rl2; epg ]
        Baselines = [ "td3"; "ddpg"; "ppo"; "reinforce-offpolicy"; "reinforce-onpolicy" ]
        MetaTrainSeeds = [ 0 .. 5 ]
        MetaTestSeeds = [ 0; 1 ]
        BaselineSeeds = [ 0 .. 5 ]
        Scale = Paper
        AtScale =
          [ // Below paper scale: the two pair sets, one agent per env, one seed each.
            for s in [ Micro; Tiny; Small ] ->
                s, fun e ->
                    { e with MetaTrain = List.take 2 e.MetaTrain; AgentsPerEnv = Some 1; MetaTrainSeeds = [ 0 ]
                             MetaTestSeeds = [ 0 ]; BaselineSeeds = [ 0 ] } ] }

exit (Script.main table1 fsi.CommandLineArgs)
