// A hyperparameter grid: the meta-gradient's inner step size × the population size, each point meta-trained and
// meta-tested on a seen and an unseen env, with TD3 as the reference. The swept values are columns of the results.
//   dotnet fsi experiments/sweep.fsx
//   dotnet fsi experiments/sweep.fsx -- --help | --dry-run | --out DIR | --scale small
#load "common.fsx"

open MetaGenRL.Pipeline
open MetaGenRL.Pipeline.Experiment

let sweep =
    { Experiment.create "sweep" with
        MetaTrain = [ [ "Pendulum-v1"; "InvertedPendulum-v2" ] ]
        MetaTest = [ "Pendulum-v1"; "InvertedDoublePendulum-v2" ]
        Variants = [ objective "full" ]
        Sweep = [ axis "obj_func_second_order_stepsize" [ 1e-4; 1e-3; 1e-2 ]; axis "agent_count" [ 2; 4 ] ]
        Baselines = [ "td3" ]
        MetaTrainSteps = Some 4000L
        MetaTestSteps = Some 5000L }

exit (Script.main sweep fsi.CommandLineArgs)
