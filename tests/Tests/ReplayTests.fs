module MetaGenRL.Tests.ReplayTests

open System
open Expecto
open MetaGenRL.Core.Agents

/// Adds an episode whose observations encode (id, t) as id·1000 + t; next_obs = obs + 0.5.
let addEpisode (rb: TrajectoryReplay) (id: int) (len: int) (truncated: bool) =
    for t in 0 .. len - 1 do
        let o = float32 (id * 1000 + t)
        let last = t = len - 1
        rb.Add([| o |], [| o |], float o, [| o + 0.5f |], last && not truncated, last && truncated, last)

let decode (o: float32) = int o / 1000, int o % 1000

/// Checks every window: consecutive steps of one episode, padding zero, lens/mask consistent.
let checkWindows (b: TrajectoryBatch) (lenOf: int -> int) =
    for i in 0 .. b.B - 1 do
        let l = b.Lens.[i]
        let ep, t0 = decode b.Obs.[i * b.T]
        let len = lenOf ep
        Expect.equal l (min len b.T) (sprintf "window %d length" i)
        Expect.isTrue (t0 >= 0 && t0 <= max (len - b.T) 0) (sprintf "window %d start %d in range" i t0)
        for t in 0 .. b.T - 1 do
            let k = i * b.T + t
            if t < l then
                Expect.equal (decode b.Obs.[k]) (ep, t0 + t) (sprintf "window %d step %d stays in episode %d" i t ep)
                Expect.equal b.NextObs.[k] (b.Obs.[k] + 0.5f) "next_obs aligned"
                Expect.equal b.Mask.[k] 1f "mask valid"
            else
                Expect.equal b.Mask.[k] 0f "mask padding"
                Expect.equal b.Obs.[k] 0f "padding zero"
                Expect.equal b.Rew.[k] 0f "padding reward zero"
                Expect.equal b.Done.[k] 0f "padding done zero"

[<Tests>]
let tests =
    testList "Replay" [
        test "windows stay within one episode; lens and mask are right" {
            let rb = TrajectoryReplay(1000, 1, 1)
            let lens = [| 30; 7; 20; 3; 55 |]
            lens |> Array.iteri (fun i l -> addEpisode rb (i + 1) l false)
            Expect.equal rb.EpisodeCount 5 "episodes"
            let b = rb.Sample(400, 20, Random 1)
            checkWindows b (fun ep -> lens.[ep - 1])
            let seen = [ for i in 0 .. b.B - 1 -> fst (decode b.Obs.[i * b.T]) ] |> Set.ofList
            Expect.equal seen (Set.ofList [ 1 .. 5 ]) "every episode is sampled"
            // the short episode (3 steps) is padded to T
            let i3 = [ 0 .. b.B - 1 ] |> List.find (fun i -> fst (decode b.Obs.[i * b.T]) = 4)
            Expect.equal b.Lens.[i3] 3 "short episode length"
            Expect.sequenceEqual b.Mask.[i3 * 20 .. i3 * 20 + 19] ([ for t in 0 .. 19 -> if t < 3 then 1f else 0f ]) "short mask"
            Expect.equal b.Done.[i3 * 20 + 2] 1f "last valid step is done"
        }
        test "episodes are chosen uniformly, not by length" {
            let rb = TrajectoryReplay(5000, 1, 1)
            addEpisode rb 1 1000 false
            addEpisode rb 2 2 false
            let b = rb.Sample(4000, 20, Random 2)
            let short = [ 0 .. b.B - 1 ] |> List.filter (fun i -> fst (decode b.Obs.[i * b.T]) = 2) |> List.length
            Expect.isTrue (short > 1800 && short < 2200) (sprintf "about half the windows come from the 2-step episode (%d)" short)
        }
        test "the running episode is never sampled" {
            let rb = TrajectoryReplay(1000, 1, 1)
            addEpisode rb 1 10 false
            for t in 0 .. 49 do
                let o = float32 (2000 + t)
                rb.Add([| o |], [| o |], 0.0, [| o + 0.5f |], false, false, false)
            Expect.equal rb.RunningEpisodeLength 50 "running length"
            let b = rb.Sample(500, 5, Random 3)
            for i in 0 .. b.B - 1 do Expect.equal (fst (decode b.Obs.[i * 5])) 1 "only the finished episode"
            Expect.throwsT<InvalidOperationException> (fun () -> TrajectoryReplay(10, 1, 1).Sample(1, 1, Random 0) |> ignore) "empty buffer"
        }
        test "wrap-around evicts episodes whose start was overwritten and samples across the seam" {
            let rb = TrajectoryReplay(10, 1, 1)
            for id in 1 .. 4 do addEpisode rb id 4 false      // 16 transitions into 10 slots
            Expect.equal rb.EpisodeCount 2 "episodes 1 and 2 evicted"
            Expect.equal (rb.Episode 0) (struct (8L, 4)) "episode 3 starts at absolute 8 (slots 8, 9, 0, 1)"
            let b = rb.Sample(200, 4, Random 4)
            checkWindows b (fun _ -> 4)
            let eps = [ for i in 0 .. b.B - 1 -> fst (decode b.Obs.[i * 4]) ] |> Set.ofList
            Expect.equal eps (Set.ofList [ 3; 4 ]) "only surviving episodes"
            addEpisode rb 5 4 false                             // overwrites slots 6..9: episode 3 (start 8) goes
            Expect.equal rb.EpisodeCount 2 "episode 3 evicted"
            checkWindows (rb.Sample(50, 6, Random 5)) (fun _ -> 4)
            addEpisode rb 6 12 false                            // longer than the ring: dropped
            Expect.equal rb.EpisodeCount 0 "an episode longer than the capacity is never sampleable"
        }
        test "terminated, truncated and the learner's done are stored separately" {
            let rb = TrajectoryReplay(100, 1, 1)
            rb.Add([| 1f |], [| 0f |], 1.0, [| 1.5f |], true, false, true)      // terminal
            rb.Add([| 2f |], [| 0f |], 1.0, [| 2.5f |], false, true, false)     // time limit, bootstrapping
            Expect.equal rb.EpisodeCount 2 "both end an episode"
            let b = rb.Sample(50, 2, Random 6)
            for i in 0 .. b.B - 1 do
                let k = i * 2
                if b.Obs.[k] = 1f then Expect.equal (b.Terminated.[k], b.Truncated.[k], b.Done.[k]) (1f, 0f, 1f) "terminal"
                else Expect.equal (b.Terminated.[k], b.Truncated.[k], b.Done.[k]) (0f, 1f, 0f) "truncated"
                Expect.equal b.Lens.[i] 1 "one-step episodes"
        }
    ]
