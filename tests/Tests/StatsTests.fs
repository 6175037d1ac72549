module MetaGenRL.Tests.StatsTests

open System
open Expecto
open MetaGenRL.Pipeline
open MetaGenRL.Pipeline.Stats
open MetaGenRL.Tests.TestUtil

let private b = defaultBootstrap

[<Tests>]
let tests =
    testList "Report.Stats" [
        test "mean and sample std (ddof 1) by hand" {
            close 1e-12 (mean [| 1.0; 2.0; 3.0; 4.0 |]) 2.5 "mean"
            // mean 5; squared deviations 9+1+1+1+0+0+4+16 = 32; 32/7 = 4.571428…
            close 1e-12 (sampleStd [| 2.0; 4.0; 4.0; 4.0; 5.0; 5.0; 7.0; 9.0 |]) (sqrt (32.0 / 7.0)) "std"
            Expect.isTrue (Double.IsNaN(sampleStd [| 3.0 |])) "std of one value is NaN"
            Expect.isTrue (Double.IsNaN(mean [||])) "mean of nothing is NaN"
        }

        test "IQM = scipy trim_mean(x, 0.25): cut floor(n/4) at each end" {
            close 1e-12 (iqm [| 8.0; 1.0; 7.0; 2.0; 6.0; 3.0; 5.0; 4.0 |]) 4.5 "n=8: mean(3,4,5,6)"
            close 1e-12 (iqm [| 5.0; 1.0; 4.0; 2.0; 3.0 |]) 3.0 "n=5: cut 1, mean(2,3,4)"
            close 1e-12 (iqm [| 1.0; 2.0; 3.0; 4.0; 5.0; 6.0; 100.0 |]) 4.0 "n=7: cut 1, mean(2..6)"
            close 1e-12 (iqm [| 1.0; 2.0; 3.0; 4.0; 5.0; 6.0; 7.0; 8.0; 1000.0 |]) 5.0 "n=9: cut 2, mean(3..7)"
            close 1e-12 (iqm [| 1.0; 2.0; 100.0 |]) (103.0 / 3.0) "n=3: nothing cut"
        }

        test "probability of improvement with ties, by hand" {
            // X=[1,2,3], Y=[2,2]: 1 vs 2 → 0,0; 2 vs 2 → ½,½; 3 vs 2 → 1,1; total 3 over 6 pairs.
            close 1e-12 (probabilityOfImprovement [| 1.0; 2.0; 3.0 |] [| 2.0; 2.0 |]) 0.5 "ties"
            // X=[3,4], Y=[1,2,3]: 3 → 1+1+½; 4 → 1+1+1; 5.5 / 6.
            close 1e-12 (probabilityOfImprovement [| 3.0; 4.0 |] [| 1.0; 2.0; 3.0 |]) (5.5 / 6.0) "one tie"
            close 1e-12 (aggregateProbabilityOfImprovement [| [| 3.0; 4.0 |], [| 1.0; 2.0; 3.0 |]; [| 1.0; 2.0; 3.0 |], [| 2.0; 2.0 |] |])
                ((5.5 / 6.0 + 0.5) / 2.0) "aggregate = mean over tasks"
        }

        test "normalise and quantile" {
            close 1e-12 (normalise -1300.0 -300.0 -300.0) 1.0 "td3 mean → 1"
            close 1e-12 (normalise 0.0 10.0 2.5) 0.25 "quarter"
            close 1e-12 (quantileSorted [| 1.0; 2.0; 3.0; 4.0 |] 0.25) 1.75 "numpy linear quantile"
        }

        test "bootstrap CI: degenerate data gives a zero-width interval" {
            Expect.equal (percentileBootstrapCI b iqm [| 5.0; 5.0; 5.0 |]) (5.0, 5.0) "constant"
        }

        test "bootstrap CI of the mean of [0, 1] is [0, 1]" {
            // Resampled means are 0, ½, 1 with probabilities ¼, ½, ¼: the 2.5 % and 97.5 % percentiles are 0 and 1.
            Expect.equal (percentileBootstrapCI b mean [| 0.0; 1.0 |]) (0.0, 1.0) "percentiles"
        }

        test "bootstrap CI contains the point estimate and is deterministic for a seed" {
            let xs = [| 3.1; -2.0; 7.5; 0.4; 12.0; 5.5; 1.1; 9.9 |]
            let lo, hi = percentileBootstrapCI b iqm xs
            Expect.isTrue (lo <= iqm xs && iqm xs <= hi && lo < hi) (sprintf "%g in [%g, %g]" (iqm xs) lo hi)
            Expect.equal (percentileBootstrapCI b iqm xs) (lo, hi) "same seed, same bounds"
            Expect.notEqual (percentileBootstrapCI { b with Seed = 1 } iqm xs) (lo, hi) "another seed, other bounds"
        }

        test "stratified bootstrap never mixes strata" {
            // Stratum 0 is all 0, stratum 1 all 100: any draw across strata would make the mean of stratum 0 positive.
            let strata = [| [| 0.0; 0.0; 0.0 |]; [| 100.0; 100.0; 100.0 |] |]
            Expect.equal (stratifiedBootstrapCI b (fun s -> mean s.[0]) strata) (0.0, 0.0) "stratum 0 stays 0"
            Expect.equal (stratifiedBootstrapCI b aggregateIqm strata) (50.0, 50.0) "pooled IQM of a fixed 3+3 split"
            // Unstratified resampling of the pooled runs would vary the IQM.
            let lo, hi = percentileBootstrapCI b iqm (Array.concat strata)
            Expect.isTrue (lo < hi) "pooled resampling mixes"
        }

        test "aggregate probability of improvement CI" {
            let tasks = [| [| 5.0; 6.0 |], [| 1.0; 2.0 |]; [| 3.0 |], [| 0.0; 1.0 |] |]
            Expect.equal (aggregateProbabilityOfImprovementCI b tasks) (1.0, 1.0) "always better"
            let lo, hi = aggregateProbabilityOfImprovementCI b [| [| 1.0; 3.0 |], [| 2.0 |] |]
            Expect.equal (lo, hi) (0.0, 1.0) "half/half: resampled P is 0, ½ or 1"
        }
    ]
