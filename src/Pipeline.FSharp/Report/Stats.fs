/// Pure statistics for reports: means, IQM, bootstrap confidence intervals and probability of improvement,
/// following rliable (Agarwal et al., "Deep RL at the Edge of the Statistical Precipice", NeurIPS 2021).
/// Every random choice comes from a System.Random built from an explicit seed, so a report is reproducible.
module MetaGenRL.Pipeline.Stats

open System

/// Arithmetic mean; NaN for no values.
let mean (xs: float[]) = if xs.Length = 0 then nan else Array.average xs

/// Sample standard deviation (ddof = 1); NaN for fewer than two values.
let sampleStd (xs: float[]) =
    if xs.Length < 2 then nan
    else
        let m = mean xs
        sqrt ((xs |> Array.sumBy (fun x -> (x - m) * (x - m))) / float (xs.Length - 1))

/// Interquartile mean as rliable computes it, i.e. scipy.stats.trim_mean(x, 0.25): sort, cut floor(0.25 n)
/// values from each end, average the rest. For n < 4 nothing is cut; n = 5 keeps the middle 3.
let iqm (xs: float[]) =
    if xs.Length = 0 then nan
    else
        let s = Array.sort xs
        let cut = xs.Length / 4
        mean s.[cut .. xs.Length - cut - 1]

/// The q-quantile (0 ≤ q ≤ 1) of sorted values with linear interpolation (numpy's default).
let quantileSorted (sorted: float[]) (q: float) =
    if sorted.Length = 0 then nan
    else
        let h = q * float (sorted.Length - 1)
        let lo = int (floor h)
        let hi = min (lo + 1) (sorted.Length - 1)
        sorted.[lo] + (h - float lo) * (sorted.[hi] - sorted.[lo])

/// Bootstrap settings: resamples, confidence level (0.95 → 2.5 % and 97.5 % percentiles) and the seed.
type Bootstrap = { Resamples: int; Confidence: float; Seed: int }

/// 2000 resamples, 95 %, seed 0: what reports use.
let defaultBootstrap = { Resamples = 2000; Confidence = 0.95; Seed = 0 }

let private percentileInterval (b: Bootstrap) (estimates: float[]) =
    let s = Array.sort estimates
    let alpha = 1.0 - b.Confidence
    quantileSorted s (alpha / 2.0), quantileSorted s (1.0 - alpha / 2.0)

let private resample (rng: Random) (xs: float[]) = Array.init xs.Length (fun _ -> xs.[rng.Next xs.Length])

/// Stratified percentile bootstrap: each resample draws every stratum with replacement from itself only
/// (strata never mix, as rliable's StratifiedBootstrap over tasks), then applies `statistic` to the resampled
/// strata in their original order. Returns the (lower, upper) percentile interval.
let stratifiedBootstrapCI (b: Bootstrap) (statistic: float[][] -> float) (strata: float[][]) =
    let rng = Random b.Seed
    Array.init b.Resamples (fun _ -> statistic (strata |> Array.map (resample rng)))
    |> percentileInterval b

/// Percentile bootstrap of one sample (the one-stratum case of stratifiedBootstrapCI).
let percentileBootstrapCI (b: Bootstrap) (statistic: float[] -> float) (xs: float[]) =
    stratifiedBootstrapCI b (fun strata -> statistic strata.[0]) [| xs |]

/// P(X > Y) + ½ P(X = Y) over all pairs of one run of X and one run of Y (rliable's probability of improvement
/// on one task, the Mann–Whitney U statistic divided by n·m). NaN when either side is empty.
let probabilityOfImprovement (xs: float[]) (ys: float[]) =
    if xs.Length = 0 || ys.Length = 0 then nan
    else
        let score x y = if x > y then 1.0 elif x = y then 0.5 else 0.0
        (xs |> Array.sumBy (fun x -> ys |> Array.sumBy (score x))) / float (xs.Length * ys.Length)

/// Average over tasks of the per-task probability of improvement; each pair is (X runs, Y runs) on one task.
let aggregateProbabilityOfImprovement (tasks: (float[] * float[])[]) =
    tasks |> Array.map (fun (x, y) -> probabilityOfImprovement x y) |> mean

/// Stratified bootstrap CI of the aggregate probability of improvement: X and Y of every task are resampled
/// independently, each within itself.
let aggregateProbabilityOfImprovementCI (b: Bootstrap) (tasks: (float[] * float[])[]) =
    let strata = tasks |> Array.collect (fun (x, y) -> [| x; y |])
    let statistic (s: float[][]) = Array.init tasks.Length (fun i -> s.[2 * i], s.[2 * i + 1]) |> aggregateProbabilityOfImprovement
    stratifiedBootstrapCI b statistic strata

/// Aggregate IQM over tasks: the IQM of all runs of all tasks pooled (rliable flattens the runs × tasks matrix).
let aggregateIqm (tasks: float[][]) = iqm (Array.concat tasks)

/// (x − low) / (high − low): 0 at the reference `low` (random-objective), 1 at `high` (TD3).
let normalise (low: float) (high: float) (x: float) = (x - low) / (high - low)
