/// Checkpointable state: SeededRandom, env RNG state at episode boundaries, bit-for-bit agent resume, the
/// binary helpers, and the atomic checkpoint store.
module MetaGenRL.Tests.StateTests

open System
open System.Collections.Generic
open System.IO
open System.Text.Json.Nodes
open Expecto
open TorchSharp
open MetaGenRL.Core.Agents
open MetaGenRL.Core.Checkpoints
open MetaGenRL.Core.Config
open MetaGenRL.Core.Envs
open MetaGenRL.Core.Randomness
open MetaGenRL.Core.Engine
open MetaGenRL.Tests.TestUtil

/// A mix of every kind of draw, so a stream comparison covers each override.
let draws (r: Random) =
    let bytes = Array.zeroCreate<byte> 13
    r.NextBytes bytes
    [ yield float (r.Next())
      yield float (r.Next 7)
      yield float (r.Next(-5, 5))
      yield r.NextDouble()
      yield float (r.NextSingle())
      yield float (r.NextInt64())
      yield float (r.NextInt64(1_000_000_000_000L))
      yield float (r.NextInt64(-3L, 3L))
      yield! bytes |> Array.map float ]

// ── AGENT HELPERS ──

let withKeys (c: RunConfig) (kvs: (string * string) list) =
    kvs |> List.fold (fun (c: RunConfig) (k, v) -> c.With(k, v)) c

let smallConfig units =
    withKeys RunConfig.Default
        [ "policy_units", string units; "critic_units", string units; "buffer_sample_size", "4"; "recurrent_time_steps", "5"
          "policy_random_exploration_steps", "60"; "buffer_size", "500" ]

/// A one-agent group (slot 0 is "the agent").
let newAgent (cfg: RunConfig) seed dtype =
    new Td3Group(cfg, 2, [| -1f |], [| 1f |], [| seed |], torch.CPU, dtype)

/// Acts in a point-mass env for `steps` steps, storing every transition.
let collect = MetaGenRL.Tests.Td3Tests.collect

/// Updates j0..j0+m−1 with losses read, plus one exploration action after each (uses the agent's Rng).
let continueRun (agent: Td3Group) (j0: int64) m =
    [ for j in j0 .. j0 + int64 m - 1L do
        let r = agent.Update(j, true)
        yield r.CriticLoss.[0]
        yield (if r.PolicyUpdated then r.PolicyLoss.[0] else nan)
        yield! (agent.Act [| [| 0.3f; -0.1f |] |]).[0] |> Array.map float ]

let allTensors (a: Td3Group) =
    Seq.concat [ a.Policy :> seq<torch.Tensor>; a.Q1; a.Q2; a.PolicyTarget; a.Q1Target; a.Q2Target
                 a.CriticOptimizer.FirstMoments; a.CriticOptimizer.SecondMoments
                 a.PolicyOptimizer.FirstMoments; a.PolicyOptimizer.SecondMoments ]
    |> List.ofSeq

/// Raw element bytes of a tensor (via the CPU), for bitwise comparison.
let rawBytes (t: torch.Tensor) = t.detach().cpu().contiguous().bytes.ToArray()

let sameBits (what: string) (xs: torch.Tensor list) (ys: torch.Tensor list) =
    Expect.equal xs.Length ys.Length (what + ": tensor count")
    List.iteri2 (fun i (x: torch.Tensor) (y: torch.Tensor) ->
        Expect.isTrue (x.dtype = y.dtype && x.shape = y.shape && rawBytes x = rawBytes y) (sprintf "%s: tensor %d differs" what i)) xs ys

/// Bit-for-bit equality of loss lists (NaN marks "no policy step" and must line up).
let sameLosses (xs: float list) (ys: float list) what =
    Expect.equal xs.Length ys.Length (what + ": length")
    List.iteri2 (fun i (x: float) (y: float) ->
        if BitConverter.DoubleToInt64Bits x <> BitConverter.DoubleToInt64Bits y then
            failtestf "%s[%d]: %.17g vs %.17g" what i x y) xs ys

// ── ENV HELPERS ──

/// Steps with actions from `actions` until the episode ends; returns every observation and reward.
let episode (env: IEnv) (actions: Random) maxSteps =
    let lo, hi = env.ActionLow, env.ActionHigh
    let trace = ResizeArray<float32[]>()
    trace.Add(env.Reset())
    let mutable fin = false
    let mutable n = 0
    while not fin && n < maxSteps do
        let a = Array.init lo.Length (fun k -> lo.[k] + (hi.[k] - lo.[k]) * actions.NextSingle())
        let s = env.Step a
        trace.Add(Array.append s.Observation [| float32 s.Reward; (if s.Terminated then 1f else 0f) |])
        fin <- s.Done
        n <- n + 1
    Expect.isTrue fin (sprintf "%s: the episode ended within %d steps" env.Id maxSteps)
    trace |> List.ofSeq

// ── STORE HELPERS ──

let parts (kvs: (string * byte[]) list) = readOnlyDict kvs
let meta (step: int) = JsonObject(dict [ "env_step", JsonValue.Create(step) :> JsonNode; "wall_time", JsonValue.Create(1.5) :> JsonNode ])
let payload (i: int) n = Array.init n (fun k -> byte ((k * 31 + i) % 251))

[<Tests>]
let tests =
    testList "State" [
        // ── SeededRandom ──
        testCase "SeededRandom: xoshiro256** reference outputs and SplitMix64 seeding" <| fun () ->
            let r = SeededRandom.FromState [| 1UL; 2UL; 3UL; 4UL |]
            Expect.equal [ for _ in 1 .. 4 -> r.NextUInt64() ] [ 11520UL; 0UL; 1509978240UL; 1215971899390074240UL ] "reference stream of state (1, 2, 3, 4)"
            let s = (SeededRandom 0UL).GetState()
            Expect.equal s.[0] 0xE220A8397B1DCDAFUL "first SplitMix64 output of seed 0"
            Expect.equal s.[1] 0x6E789E6AA1B965F4UL "second SplitMix64 output of seed 0"

        testCase "SeededRandom: same seed ⇒ same stream; another seed ⇒ another" <| fun () ->
            let a = [ for _ in 1 .. 20 do yield! draws (SeededRandom 42L) ]
            let b = [ for _ in 1 .. 20 do yield! draws (SeededRandom 42L) ]
            Expect.equal a b "seed 42 twice"
            let r1, r2 = SeededRandom 42L, SeededRandom 43L
            Expect.notEqual (draws r1) (draws r2) "seeds 42 and 43"

        testCase "SeededRandom: a restored state continues the stream exactly" <| fun () ->
            let r = SeededRandom 7L
            for _ in 1 .. 100 do draws r |> ignore
            let st = r.GetState()
            let expected = [ for _ in 1 .. 50 do yield! draws r ]
            let other = SeededRandom 999L
            other.SetState st
            Expect.equal [ for _ in 1 .. 50 do yield! draws other ] expected "continued from the state"
            let fresh = SeededRandom.FromState st
            Expect.equal [ for _ in 1 .. 50 do yield! draws fresh ] expected "FromState"
            st.[0] <- st.[0] + 1UL
            Expect.notEqual (r.GetState()) st "GetState returns a copy"

        testCase "SeededRandom: invalid states are rejected" <| fun () ->
            let r = SeededRandom 1L
            throwsContaining<ArgumentException> "4 words" "short state" (fun () -> r.SetState [| 1UL; 2UL |])
            throwsContaining<ArgumentException> "all-zero" "zero state" (fun () -> r.SetState [| 0UL; 0UL; 0UL; 0UL |])
            Expect.throwsT<ArgumentOutOfRangeException> (fun () -> r.Next -1 |> ignore) "Next(−1)"
            Expect.throwsT<ArgumentOutOfRangeException> (fun () -> r.Next(5, 4) |> ignore) "Next(5, 4)"

        testCase "SeededRandom: distribution sanity and ranges" <| fun () ->
            let r = SeededRandom 2024L
            let n = 100_000
            let mean = Seq.init n (fun _ -> r.NextDouble()) |> Seq.average
            close 0.01 mean 0.5 "mean of NextDouble"
            let counts = Array.zeroCreate 10
            for _ in 1 .. n do
                let k = r.Next 10
                Expect.isTrue (k >= 0 && k < 10) "Next(10) in [0, 10)"
                counts.[k] <- counts.[k] + 1
            for c in counts do close 600.0 (float c) (float n / 10.0) "Next(10) bucket count"
            for _ in 1 .. 10_000 do
                let d, f = r.NextDouble(), r.NextSingle()
                Expect.isTrue (d >= 0.0 && d < 1.0 && f >= 0f && f < 1f) "NextDouble/NextSingle in [0, 1)"
                let k = r.Next(-3, 4)
                Expect.isTrue (k >= -3 && k < 4) "Next(−3, 4)"
                let big = r.Next(Int32.MinValue, Int32.MaxValue)
                Expect.isTrue (big < Int32.MaxValue) "Next over the full int range"
                let l = r.NextInt64(-10L, 10L)
                Expect.isTrue (l >= -10L && l < 10L) "NextInt64(−10, 10)"
                Expect.isTrue (r.Next() < Int32.MaxValue && r.NextInt64() < Int64.MaxValue) "Next()/NextInt64() below MaxValue"
            Expect.equal (r.Next 1) 0 "Next(1)"
            Expect.equal (r.Next 0) 0 "Next(0)"
            Expect.equal (r.Next(5, 5)) 5 "Next(5, 5)"

        // ── ENVS ──
        testCase "Env: AtEpisodeBoundary and no RNG state mid-episode" <| fun () ->
            use env = new PointMassEnv(1, maxEpisodeSteps = 3)
            Expect.isTrue env.AtEpisodeBoundary "before the first reset"
            env.Reset() |> ignore
            Expect.isFalse env.AtEpisodeBoundary "after reset"
            throwsContaining<InvalidOperationException> "between episodes" "mid-episode save" (fun () -> env.GetRngState() |> ignore)
            for _ in 1 .. 3 do env.Step [| 0f |] |> ignore
            Expect.isTrue env.AtEpisodeBoundary "after truncation"
            Expect.equal (env.GetRngState()).Length 4 "state words"

        for id in [ "Hopper-v2"; "LunarLanderContinuous-v2"; "Pendulum-v1" ] do
            testCase (sprintf "Env RNG roundtrip: %s restored at an episode boundary plays the same next episodes" id) <| fun () ->
                use a = EnvRegistry.Make(id, 11) :?> EnvBase
                use b = EnvRegistry.Make(id, 12345) :?> EnvBase
                episode a (SeededRandom 1L) 1000 |> ignore
                b.SetRngState(a.GetRngState())
                for k in 2L .. 3L do
                    let ea = episode a (SeededRandom k) 1000
                    let eb = episode b (SeededRandom k) 1000
                    Expect.equal eb.Length ea.Length (sprintf "episode %d length" k)
                    List.iteri2 (fun t (x: float32[]) (y: float32[]) -> Expect.equal y x (sprintf "episode %d step %d" k t)) ea eb
                Expect.equal (b.GetRngState()) (a.GetRngState()) "generators agree afterwards"

        testCase "Env: SetRngState abandons a running episode" <| fun () ->
            use env = new PointMassEnv(1)
            let st = env.GetRngState()
            env.Reset() |> ignore
            env.SetRngState st
            Expect.isTrue env.AtEpisodeBoundary "boundary after restore"
            Expect.throwsT<InvalidOperationException> (fun () -> env.Step [| 0f |] |> ignore) "step needs a reset"

        // ── AGENT ──
        testCase "Agent: resume from a checkpoint continues bit-for-bit (float32, with replay)" <| fun () ->
            let cfg = smallConfig 16
            use a = newAgent cfg 1L torch.ScalarType.Float32
            use env = new PointMassEnv(3)
            collect a env 200
            let n = 12
            for j in 0L .. int64 n - 1L do a.Update(j, false) |> ignore
            let state = AgentState.Save(a, 0, true)
            let expected = continueRun a (int64 n) 10
            use b = newAgent cfg 99L torch.ScalarType.Float32
            let info = AgentState.Load(b, 0, state)
            Expect.isTrue info.HasReplay "replay restored"
            Expect.equal info.CriticUpdates (int64 n) "critic updates restored"
            Expect.equal info.PolicyUpdates (int64 (n / 2)) "policy updates restored"
            Expect.equal b.Replay.[0].Count 200 "replay count"
            let actual = continueRun b (int64 n) 10
            sameLosses actual expected "losses and actions after resume"
            sameBits "parameters and Adam moments" (allTensors b) (allTensors a)
            Expect.equal (b.Rng.[0].GetState()) (a.Rng.[0].GetState()) "exploration generator"
            Expect.equal b.EnvSteps a.EnvSteps "env steps"
            Expect.isTrue ((AgentState.Save(b, 0, true)) = (AgentState.Save(a, 0, true))) "the two agents now save identical bytes"

        testCase "Agent: float64 state roundtrips exactly; without replay the replay is reported and left empty" <| fun () ->
            let cfg = smallConfig 8
            use a = newAgent cfg 5L torch.ScalarType.Float64
            use env = new PointMassEnv(4)
            collect a env 120
            for j in 0L .. 5L do a.Update(j, false) |> ignore
            let state = AgentState.Save(a, 0, false)
            use b = newAgent cfg 6L torch.ScalarType.Float64
            collect b (new PointMassEnv(9)) 80
            let info = AgentState.Load(b, 0, state)
            Expect.isFalse info.HasReplay "no replay in the state"
            Expect.equal (b.Replay.[0].Count, b.Replay.[0].EpisodeCount, b.Replay.[0].RunningEpisodeLength) (0, 0, 0) "replay emptied"
            Expect.equal info.EnvSteps 120L "env steps"
            sameBits "float64 parameters and moments" (allTensors b) (allTensors a)
            Expect.isLessThan state.Length (AgentState.Save(a, 0, true)).Length "the replay makes the state bigger"

        testCase "Agent: a mismatched or damaged state is refused, naming what differs" <| fun () ->
            use a = newAgent (smallConfig 16) 1L torch.ScalarType.Float32
            collect a (new PointMassEnv(3)) 100
            let state = AgentState.Save(a, 0, true)
            use wide = newAgent (smallConfig 32) 2L torch.ScalarType.Float32
            throwsContaining<InvalidDataException> "checkpoint policy layer 0 weight has shape [16, 2], the agent expects [32, 2]" "wider nets"
                (fun () -> AgentState.Load(wide, 0, state) |> ignore)
            use f64 = newAgent (smallConfig 16) 2L torch.ScalarType.Float64
            throwsContaining<InvalidDataException> "dtype" "other dtype" (fun () -> AgentState.Load(f64, 0, state) |> ignore)
            use obs3 = new Td3Group(smallConfig 16, 3, [| -1f |], [| 1f |], [| 2L |], torch.CPU)
            throwsContaining<InvalidDataException> "obs 2" "other obs size" (fun () -> AgentState.Load(obs3, 0, state) |> ignore)
            use small = new Td3Group(smallConfig 16, 2, [| -1f |], [| 1f |], [| 2L |], torch.CPU, replayCapacity = 300)
            let before = allTensors small |> List.map (fun t -> t.clone())
            throwsContaining<InvalidDataException> "capacity 500" "other replay capacity" (fun () -> AgentState.Load(small, 0, state) |> ignore)
            sameBits "a refused load changes no parameter" (allTensors small) before
            use b = newAgent (smallConfig 16) 2L torch.ScalarType.Float32
            Expect.throwsT<EndOfStreamException> (fun () -> AgentState.Load(b, 0, state.[.. state.Length - 20]) |> ignore) "truncated"
            let junk = Array.copy state
            junk.[0] <- byte 'X'
            throwsContaining<InvalidDataException> "not an agent state" "bad magic" (fun () -> AgentState.Load(b, 0, junk) |> ignore)
            throwsContaining<InvalidDataException> "unexpected bytes" "trailing bytes" (fun () -> AgentState.Load(b, 0, Array.append state [| 0uy |]) |> ignore)

        testCase "StateIO: tensor lists and float arrays roundtrip" <| fun () ->
            use ms = new MemoryStream()
            let ts = [ torch.randn([| 3L; 4L |], dtype = torch.ScalarType.Float64); torch.arange(5L); torch.tensor([| 1.5f; -0f; nanf |]) ]
            let xs = [| 1f; Single.Epsilon; -3.25f; infinityf |]
            do
                use w = new BinaryWriter(ms, Text.Encoding.UTF8, true)
                StateIO.WriteTensors(w, "alpha", ts)
                StateIO.WriteFloats(w, ReadOnlySpan xs)
            ms.Position <- 0L
            use r = new BinaryReader(ms)
            let back = StateIO.ReadTensors(r, "alpha", torch.CPU)
            for t, u in Seq.zip ts back do
                Expect.equal u.dtype t.dtype "dtype"
                Expect.equal u.shape t.shape "shape"
                Expect.isTrue (rawBytes t = rawBytes u) "bytes (NaN and −0 included)"
            Expect.equal (StateIO.ReadFloats(r, "xs", 4L)) xs "floats"

        // ── CHECKPOINT STORE ──
        testCase "CheckpointStore: write, list, latest, load, prune" <| fun () ->
            let run = tempDir "ckpt"
            try
                let store = CheckpointStore run
                Expect.equal (store.Latest()) (Nullable()) "empty store"
                Expect.isEmpty (store.List()) "nothing listed"
                for i in 1 .. 4 do
                    store.Write(i, parts [ sprintf "agent-0.bin" , payload i (1000 * i); "objective.bin", payload (i + 7) 10 ], meta (100 * i)) |> ignore
                Expect.equal (List.ofSeq (store.List())) [ 1; 2; 3; 4 ] "listed"
                Expect.equal (store.Latest()) (Nullable 4) "latest"
                let c = store.Load 2
                Expect.equal c.Index 2 "index"
                Expect.equal c.Parts.["agent-0.bin"] (payload 2 2000) "agent part"
                Expect.equal c.Parts.["objective.bin"] (payload 9 10) "objective part"
                Expect.equal (c.Meta.["env_step"].GetValue<int>()) 200 "meta env_step"
                Expect.isTrue (abs (DateTimeOffset.UtcNow - c.Created).TotalMinutes < 5.0) "created timestamp"
                Expect.isTrue (File.Exists(Path.Combine(run, "checkpoints", "ckpt-000002", "manifest.json"))) "manifest file"
                throwsContaining<IOException> "already exists" "rewrite of a valid index" (fun () -> store.Write(4, parts [], meta 0) |> ignore)
                throwsContaining<ArgumentException> "plain file name" "path in a part name" (fun () -> store.Write(5, parts [ "../x", [||] ], meta 0) |> ignore)
                throwsContaining<DirectoryNotFoundException> "ckpt-000009" "missing checkpoint" (fun () -> store.Load 9 |> ignore)
                let tmp = Path.Combine(store.Root, "ckpt-000005.tmp-" + Guid.NewGuid().ToString("N"))
                Directory.CreateDirectory tmp |> ignore
                File.WriteAllBytes(Path.Combine(tmp, "agent-0.bin"), payload 5 10)
                let deleted = store.Prune 2
                Expect.equal (List.ofSeq (store.List())) [ 3; 4 ] "two newest kept"
                Expect.equal deleted.Count 3 "ckpt 1, ckpt 2 and the tmp leftover deleted"
                Expect.isFalse (Directory.Exists tmp) "tmp leftover pruned"
            finally Directory.Delete(run, true)

        testCase "CheckpointStore: half-written, corrupted and truncated checkpoints are never Latest" <| fun () ->
            let run = tempDir "ckpt"
            try
                let store = CheckpointStore run
                for i in 1 .. 3 do store.Write(i, parts [ "agent-0.bin", payload i 4096 ], meta i) |> ignore
                // A crash mid-write leaves a tmp folder (here with a complete-looking manifest copied in).
                let tmp = Path.Combine(store.Root, "ckpt-000004.tmp-" + Guid.NewGuid().ToString("N"))
                Directory.CreateDirectory tmp |> ignore
                for f in Directory.GetFiles(store.PathOf 3) do File.Copy(f, Path.Combine(tmp, Path.GetFileName f))
                // A final-named folder without a manifest (written by something else, or a manual copy).
                Directory.CreateDirectory(store.PathOf 5) |> ignore
                File.WriteAllBytes(Path.Combine(store.PathOf 5, "agent-0.bin"), payload 5 10)
                Expect.equal (List.ofSeq (store.List())) [ 1; 2; 3; 5 ] "tmp folders are not listed"
                Expect.equal (store.Latest()) (Nullable 3) "tmp and manifest-less folders ignored"
                throwsContaining<InvalidDataException> "manifest.json is missing" "no manifest" (fun () -> store.Load 5 |> ignore)
                // Flip one byte of ckpt 3's part: same size, wrong hash.
                let part3 = Path.Combine(store.PathOf 3, "agent-0.bin")
                let bytes = File.ReadAllBytes part3
                bytes.[100] <- bytes.[100] ^^^ 1uy
                File.WriteAllBytes(part3, bytes)
                Expect.equal (store.Latest()) (Nullable 2) "corrupted part ignored"
                throwsContaining<InvalidDataException> "agent-0.bin does not match its SHA-256" "corrupted" (fun () -> store.Load 3 |> ignore)
                // Truncate ckpt 2's part.
                let part2 = Path.Combine(store.PathOf 2, "agent-0.bin")
                File.WriteAllBytes(part2, (File.ReadAllBytes part2).[.. 999])
                throwsContaining<InvalidDataException> "agent-0.bin has 1000 bytes, the manifest says 4096" "truncated" (fun () -> store.Load 2 |> ignore)
                Expect.equal (store.Latest()) (Nullable 1) "truncated part ignored"
                // A garbled manifest.
                File.WriteAllText(Path.Combine(store.PathOf 1, "manifest.json"), "{ \"format\": ")
                throwsContaining<InvalidDataException> "not valid JSON" "garbled manifest" (fun () -> store.Load 1 |> ignore)
                Expect.equal (store.Latest()) (Nullable()) "nothing valid left"
                // The writer can reuse an index whose folder is invalid: it is moved aside, then pruned.
                store.Write(3, parts [ "agent-0.bin", payload 33 64 ], meta 3) |> ignore
                Expect.equal (store.Latest()) (Nullable 3) "rewritten"
                Expect.equal (store.Load 3).Parts.["agent-0.bin"] (payload 33 64) "new contents"
                store.Prune 1 |> ignore
                let left = Directory.GetDirectories store.Root |> Array.map Path.GetFileName |> Array.sort
                Expect.equal left [| "ckpt-000003"; "ckpt-000005" |] "older folders, moved-aside and tmp leftovers pruned; the newer invalid one kept"
            finally Directory.Delete(run, true)
    ]
