using System.Diagnostics;
using Akka.Actor;
using MetaGenRL.Core.Engine;

namespace MetaGenRL.Actors.Cluster;

/// <summary>Coordinator → worker: run a trial described by <paramref name="Spec"/> (the pipeline's JSON), replying
/// to <paramref name="ReplyTo"/>.</summary>
public sealed record RunTrialOnWorker(string TrialId, string Spec, IActorRef ReplyTo);

/// <summary>Coordinator → worker: stop a trial (the coordinator was interrupted).</summary>
public sealed record StopTrial(string TrialId);

/// <summary>Worker → coordinator: a batch of a trial's rows, in order.</summary>
public sealed record TrialRows(string TrialId, Metric[] Rows);

/// <summary>Worker → coordinator: env steps so far.</summary>
public sealed record TrialProgress(string TrialId, long Steps);

/// <summary>Worker → coordinator: a run.json field the trial sets (its learner's settings, the objective it loaded).</summary>
public sealed record TrialInfo(string TrialId, string Key, string Json);

/// <summary>Worker → coordinator: a line for the trial's notes (a skipped checkpoint, an agent failure).</summary>
public sealed record TrialNote(string TrialId, string Line);

/// <summary>Worker → coordinator, before <see cref="TrialFinished"/>: what a meta-test reads of a meta-train that ran in
/// the worker's own folder (it does not share the experiment folder): parts <paramref name="Names"/> of its checkpoint
/// <paramref name="Checkpoint"/>, with that checkpoint's metadata (JSON) and folder <paramref name="From"/>.</summary>
public sealed record TrialResult(string TrialId, int Checkpoint, string Meta, string From, string[] Names, byte[][] Parts);

/// <summary>Worker → coordinator: the trial ran to its budget; the agent failures it survived.</summary>
public sealed record TrialFinished(string TrialId, string[] FailureReasons);

/// <summary>Worker → coordinator: the trial failed (or was stopped: <paramref name="Stopped"/>).</summary>
public sealed record TrialError(string TrialId, string Message, bool Stopped);

/// <summary>Worker → coordinator: this worker cannot run the trial, though another might (it does not see the
/// folder the trial needs); the coordinator hands it to another worker.</summary>
public sealed record TrialRefused(string TrialId, string Reason);

/// <summary>Thrown by a worker's <see cref="TrialHostActor.RunSpec"/> before it computes anything when this worker
/// cannot run the trial but another might (<see cref="TrialRefused"/>); on the coordinator, the trial's work throws it
/// with the worker's reason.</summary>
public sealed class TrialRefusedException(string message) : Exception(message);

/// <summary>A trial's worker left the cluster (crashed, cut off, stopped) before the trial ended.</summary>
public sealed class WorkerLostException(string message) : Exception(message);

/// <summary>A trial failed on its worker; the message is the worker's.</summary>
public sealed class RemoteTrialException(string message) : Exception(message);

/// <summary>What a worker's trial reports back while it runs.</summary>
public interface ITrialReporter
{
    void SetInfo(string key, string json);
    void Note(string line);
    /// <summary>Parts of the trial's checkpoint <paramref name="checkpoint"/> (see <see cref="TrialResult"/>).</summary>
    void Result(int checkpoint, string meta, string from, IReadOnlyDictionary<string, byte[]> parts);
}

/// <summary>
/// The worker's end (at /user/<see cref="Name"/>): runs each requested trial on its own long-running thread with the
/// pipeline's <see cref="RunSpec"/>, and streams its rows back in order, in batches (at most
/// <see cref="BatchRows"/> rows or <see cref="BatchInterval"/> old, and at each checkpoint marker so that the
/// coordinator's writer can flush what a checkpoint covers), then <see cref="TrialFinished"/> or
/// <see cref="TrialError"/>. Everything a trial sends goes from one thread, so it arrives in order.
/// </summary>
public sealed class TrialHostActor : ReceiveActor
{
    public const string Name = "trial-host";
    public const int BatchRows = 1024;
    public static readonly TimeSpan BatchInterval = TimeSpan.FromMilliseconds(250);

    /// <summary>Runs a trial spec; returns the agent failures it survived; throws on failure
    /// (<see cref="OperationCanceledException"/> when stopped).</summary>
    public delegate string[] RunSpec(string spec, Action<Metric> onMetric, IProgress<long> progress, ITrialReporter reporter, CancellationToken ct);

    readonly Dictionary<string, CancellationTokenSource> _running = new();

    public static Props Props(RunSpec run) => Akka.Actor.Props.Create(() => new TrialHostActor(run));

    public TrialHostActor(RunSpec run)
    {
        Receive<RunTrialOnWorker>(m =>
        {
            var cts = new CancellationTokenSource();
            _running[m.TrialId] = cts;
            var self = Self;
            Task.Factory.StartNew(() => RunOne(run, m, cts.Token), TaskCreationOptions.LongRunning)
                .ContinueWith(_ => self.Tell(new Finished(m.TrialId)));
        });
        Receive<StopTrial>(m => { if (_running.TryGetValue(m.TrialId, out var cts)) cts.Cancel(); });
        Receive<Finished>(m => { if (_running.Remove(m.TrialId, out var cts)) cts.Dispose(); });
    }

    sealed record Finished(string TrialId);

    sealed class Reporter(RunTrialOnWorker m, Action flush) : ITrialReporter
    {
        public void SetInfo(string key, string json) { flush(); m.ReplyTo.Tell(new TrialInfo(m.TrialId, key, json)); }
        public void Note(string line) { flush(); m.ReplyTo.Tell(new TrialNote(m.TrialId, line)); }
        public void Result(int checkpoint, string meta, string from, IReadOnlyDictionary<string, byte[]> parts)
        {
            flush();
            var names = parts.Keys.Order(StringComparer.Ordinal).ToArray();
            m.ReplyTo.Tell(new TrialResult(m.TrialId, checkpoint, meta, from, names, names.Select(n => parts[n]).ToArray()));
        }
    }

    static void RunOne(RunSpec run, RunTrialOnWorker m, CancellationToken ct)
    {
        var batch = new List<Metric>();
        var clock = Stopwatch.StartNew();
        var gate = new object();
        void Flush()
        {
            lock (gate)
            {
                if (batch.Count == 0) return;
                m.ReplyTo.Tell(new TrialRows(m.TrialId, batch.ToArray()));
                batch.Clear();
                clock.Restart();
            }
        }
        void OnMetric(Metric row)
        {
            bool full;
            lock (gate)
            {
                batch.Add(row);
                full = batch.Count >= BatchRows || clock.Elapsed >= BatchInterval || row.Name == "checkpoint";
            }
            if (full) Flush();
        }
        long lastSteps = -1;
        var progress = new Progress(steps =>
        {
            if (steps == Interlocked.Exchange(ref lastSteps, steps)) return;
            Flush();
            m.ReplyTo.Tell(new TrialProgress(m.TrialId, steps));
        });
        try
        {
            var reasons = run(m.Spec, OnMetric, progress, new Reporter(m, Flush), ct);
            Flush();
            m.ReplyTo.Tell(new TrialFinished(m.TrialId, reasons));
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            Flush();
            m.ReplyTo.Tell(new TrialError(m.TrialId, "stopped", true));
        }
        catch (TrialRefusedException ex)
        {
            Flush();
            m.ReplyTo.Tell(new TrialRefused(m.TrialId, ex.Message));
        }
        catch (Exception ex)
        {
            Flush();
            m.ReplyTo.Tell(new TrialError(m.TrialId, ex.Message, false));
        }
    }

    sealed class Progress(Action<long> report) : IProgress<long>
    {
        readonly Stopwatch _clock = Stopwatch.StartNew();
        public void Report(long value)
        {
            if (_clock.ElapsedMilliseconds < 500) return;
            _clock.Restart();
            report(value);
        }
    }
}

/// <summary>
/// The coordinator's end of one remote trial: sends the request to the worker's <see cref="TrialHostActor"/>, watches
/// it, and hands what comes back to the trial's writer (rows in order, progress, run.json fields, notes). Completes
/// <c>done</c> with the failure reasons, or with <see cref="RemoteTrialException"/> when the trial failed there,
/// <see cref="WorkerLostException"/> when the worker left the cluster first, or as cancelled when it was stopped.
/// </summary>
public sealed class RemoteTrialActor : ReceiveActor
{
    public static Props Props(IActorRef host, string trialId, string spec, Action<Metric> onMetric, IProgress<long> progress,
                              ITrialReporter reporter, TaskCompletionSource<string[]> done) =>
        Akka.Actor.Props.Create(() => new RemoteTrialActor(host, trialId, spec, onMetric, progress, reporter, done));

    readonly IActorRef _host;
    readonly string _trialId;
    readonly string _spec;
    readonly TaskCompletionSource<string[]> _done;

    public RemoteTrialActor(IActorRef host, string trialId, string spec, Action<Metric> onMetric, IProgress<long> progress,
                            ITrialReporter reporter, TaskCompletionSource<string[]> done)
    {
        _host = host; _trialId = trialId; _spec = spec; _done = done;
        Receive<TrialRows>(m => { foreach (var r in m.Rows) onMetric(r); });
        Receive<TrialProgress>(m => progress.Report(m.Steps));
        Receive<TrialInfo>(m => reporter.SetInfo(m.Key, m.Json));
        Receive<TrialNote>(m => reporter.Note(m.Line));
        Receive<TrialResult>(m =>
        {
            if (m.Names.Length == m.Parts.Length)
                reporter.Result(m.Checkpoint, m.Meta, m.From, m.Names.Zip(m.Parts).ToDictionary(p => p.First, p => p.Second));
            else
            {
                _done.TrySetException(new RemoteTrialException($"trial {_trialId}: its worker sent {m.Names.Length} part names for {m.Parts.Length} parts"));
                Context.Stop(Self);
            }
        });
        Receive<TrialFinished>(m => { _done.TrySetResult(m.FailureReasons); Context.Stop(Self); });
        Receive<TrialError>(m =>
        {
            if (m.Stopped) _done.TrySetCanceled();
            else _done.TrySetException(new RemoteTrialException(m.Message));
            Context.Stop(Self);
        });
        Receive<TrialRefused>(m =>
        {
            _done.TrySetException(new TrialRefusedException(m.Reason));
            Context.Stop(Self);
        });
        Receive<StopTrial>(m => _host.Tell(m));
        Receive<Terminated>(t =>
        {
            _done.TrySetException(new WorkerLostException($"worker {t.ActorRef.Path.Address} left the cluster during trial {_trialId}"));
            Context.Stop(Self);
        });
    }

    protected override void PreStart()
    {
        Context.Watch(_host);
        _host.Tell(new RunTrialOnWorker(_trialId, _spec, Self));
    }

    protected override void PostStop() =>
        _done.TrySetException(new WorkerLostException($"the coordinator stopped following trial {_trialId}"));
}
