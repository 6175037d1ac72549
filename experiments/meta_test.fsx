// Meta-tests frozen objectives: each trains fresh agents on the test envs, beside TD3. The objectives are the
// meta-train folders given with --objective DIR, or by default every complete one under results/meta_train
// (from meta_train.fsx).
//   dotnet fsi experiments/meta_test.fsx
//   dotnet fsi experiments/meta_test.fsx -- --objective results/meta_train/<id>/trials/mt_full_…_s0
//   dotnet fsi experiments/meta_test.fsx -- --help | --dry-run | --out DIR
#load "common.fsx"

open MetaGenRL.Pipeline
open MetaGenRL.Pipeline.Experiment

let metaTest =
    { Experiment.create "meta_test" with
        Variants = []
        Objectives = [ "results/meta_train" ]
        MetaTest = [ "HalfCheetah-v2"; "Hopper-v2"; "LunarLanderContinuous-v2" ]
        MetaTestSeeds = [ 0; 1 ]
        Baselines = [ "td3" ]
        BaselineSeeds = [ 0; 1 ]
        AtScale = [ (Tiny, fun e -> { e with MetaTest = [ "Pendulum-v1"; "InvertedDoublePendulum-v2" ]; MetaTestSeeds = [ 0 ]; BaselineSeeds = [ 0 ] }) ] }

exit (Script.main metaTest fsi.CommandLineArgs)
