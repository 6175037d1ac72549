/// What a meta-learner that runs outside MetaGenRL's population engine (RL² in Rl2Run) gives the experiment runner:
/// a meta-train into a run folder, resumable from its checkpoints, and a meta-test of what it learned on one env and
/// seed. Its CLI commands call the same two functions, so a trial and the command with the same seed give the same
/// numbers. The runner owns the folder, the writer (run.json, metrics.parquet) and the resume point; the learner
/// owns its loop, its checkpoint parts and the `onMetric` rows.
module MetaGenRL.Pipeline.MetaLearnerRun

open System
open System.Text.Json.Nodes
open System.Threading
open MetaGenRL.Actors
open MetaGenRL.Core.Checkpoints
open MetaGenRL.Core.Engine

/// A meta-train in a run folder this process holds.
type TrainJob =
    { /// The meta-train env set; rows carry agent = the env's index in it.
      Envs: string list
      Seed: int
      /// Env steps in all, over the whole set.
      Steps: int64
      /// Env steps between checkpoints (see Engine.checkpointEvery); one more at the end.
      CheckpointEvery: int64
      /// The run folder's checkpoints. Each checkpoint is preceded by an Engine.CheckpointMarker row (value: its
      /// index), which is how a resume knows the rows it covers.
      Store: CheckpointStore
      /// Where it starts: ResumePoint.Start, or the checkpoint a resumed run continues from (Engine.resumePoint).
      Resume: Engine.ResumePoint
      /// Sets a field of run.json (the learner records its settings under its own name).
      SetInfo: string -> JsonNode -> unit }

/// A meta-test of a meta-trained run on one env and seed: no checkpoints (an interrupted one starts over).
type TestJob =
    { /// The meta-train run folder; its newest checkpoint that verifies is tested.
      Source: string
      Env: string
      Seed: int
      Steps: int64
      /// Sets a field of run.json (`objective`: what was loaded, from which checkpoint).
      SetInfo: string -> JsonNode -> unit
      /// A line for the trial's console notes (e.g. a damaged checkpoint passed over).
      Note: string -> unit }

/// A meta-learner's meta-train: rows through the Action, env steps so far through the progress; cancellation throws
/// OperationCanceledException.
type Train = TrainJob -> Action<Metric> -> IProgress<int64> -> CancellationToken -> PopulationResult

/// A meta-learner's meta-test, as Train.
type Test = TestJob -> Action<Metric> -> IProgress<int64> -> CancellationToken -> PopulationResult

/// The config such a run records in run.json and its Parquet metadata: the defaults with its envs, its budget, one
/// agent and, for a meta-train, its checkpoint interval. Its own settings go to run.json under its name.
let config (envs: string list) (steps: int64) (checkpointEvery: int64 option) =
    Settings.resolveConfig (
        [ sprintf "env_name=%s" (String.Join(",", envs)); sprintf "timesteps_total=%d" steps; "agent_count=1" ]
        @ (checkpointEvery |> Option.map (sprintf "checkpoint_every=%d") |> Option.toList))
