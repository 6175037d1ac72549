using MetaGenRL.Core.Checkpoints;
using MetaGenRL.Core.Engine;
using MetaGenRL.Core.Envs;
using MetaGenRL.Core.Randomness;
using MetaGenRL.Core.Torch;
using TorchSharp;
using static TorchSharp.torch;

namespace MetaGenRL.Core.Agents;

/// <summary>
/// RL² (Duan et al. 2016) settings: a GRU policy meta-trained with PPO on trials of several episodes of envs drawn
/// from the meta-train set; the hidden state carries over the episodes of a trial and is reset between trials.
/// Duan et al. train with TRPO; PPO (as the issue asks, and as later RL² implementations do) uses the PPO defaults
/// of <see cref="OnPolicySettings.Ppo"/> where they apply (clip 0.2, λ 0.95, Adam 3·10⁻⁴, 0.5 gradient clip).
/// </summary>
/// <param name="Hidden">GRU units (Duan et al. use 256 for their larger tasks; 64 here, the size of the PPO networks)</param>
/// <param name="EpisodesPerTrial">episodes per trial (Duan et al.: 2 for MuJoCo-style tasks)</param>
/// <param name="TrialsPerIteration">trials collected before each PPO update</param>
/// <param name="Epochs">PPO passes over the iteration's trials</param>
/// <param name="MinibatchTrials">trials per gradient step (whole sequences: backpropagation through each trial)</param>
/// <param name="Clip">PPO's ε</param>
/// <param name="GaeLambda">GAE's λ over a whole trial (a trial is one episode of the meta-MDP)</param>
/// <param name="LearningRate">Adam step size</param>
/// <param name="MaxGradNorm">global-norm gradient clip</param>
/// <param name="Gamma">discount over a trial</param>
public sealed record Rl2Settings(int Hidden = 64, int EpisodesPerTrial = 2, int TrialsPerIteration = 8, int Epochs = 4,
                                 int MinibatchTrials = 4, double Clip = 0.2, double GaeLambda = 0.95,
                                 double LearningRate = 3e-4, double MaxGradNorm = 0.5, double Gamma = 0.99);

/// <summary>
/// RL²'s inputs. Envs of a meta-train set differ in observation and action sizes, so one network reads them all
/// through a fixed padding: x_t = [o_t zero-padded to <c>obsPad</c>, a_{t−1} zero-padded to <c>actPad</c>, r_{t−1},
/// d_{t−1}], where the previous action, reward and done flag are 0 at a trial's first step. The policy outputs
/// <c>actPad</c> means; an env takes the first <c>ActionSize</c> of them, and only those enter the log-probability.
/// The pads are the largest sizes of the meta-train set; an env larger than them cannot be run.
/// </summary>
public static class Rl2Inputs
{
    /// <summary>Length of x_t.</summary>
    public static int Size(int obsPad, int actPad) => obsPad + actPad + 2;

    /// <summary>x_t as above. Throws naming the sizes when the observation or action exceeds its pad.</summary>
    public static float[] Build(float[] obs, float[]? previousAction, double previousReward, bool previousDone, int obsPad, int actPad)
    {
        if (obs.Length > obsPad) throw new ArgumentException($"RL²: an observation of {obs.Length} values exceeds the policy's padding of {obsPad}");
        if (previousAction is not null && previousAction.Length > actPad)
            throw new ArgumentException($"RL²: an action of {previousAction.Length} values exceeds the policy's padding of {actPad}");
        var x = new float[Size(obsPad, actPad)];
        obs.CopyTo(x, 0);
        previousAction?.CopyTo(x, obsPad);
        x[obsPad + actPad] = (float)previousReward;
        x[obsPad + actPad + 1] = previousDone ? 1f : 0f;
        return x;
    }

    /// <summary>1 for the first <paramref name="actionSize"/> of <paramref name="actPad"/> action dims, 0 after.</summary>
    public static float[] ActionMask(int actionSize, int actPad)
    {
        if (actionSize > actPad) throw new ArgumentException($"RL²: an action of {actionSize} values exceeds the policy's padding of {actPad}");
        return Enumerable.Range(0, actPad).Select(i => i < actionSize ? 1f : 0f).ToArray();
    }
}

/// <summary>One trial as collected: inputs, padded raw actions, the env's action mask, rewards, episode ends,
/// old log-probabilities and values, and each episode's return.</summary>
public sealed record Rl2Trial(string EnvId, float[][] Inputs, float[][] Actions, float[] ActionMask, double[] Rewards,
                              bool[] EpisodeEnds, double[] OldLogProb, double[] Values, double[] EpisodeReturns)
{
    public int Length => Inputs.Length;
}

/// <summary>
/// The RL² agent: a GRU over x_t (<see cref="Rl2Inputs"/>), a Gaussian head (linear mean over the padded action
/// dims, a state-independent log-std) and a linear value head, all in float32 with a leading slot dim of one so
/// TF-form Adam and the stacked helpers apply. Collects trials, takes PPO steps on whole trial sequences
/// (backpropagation through time), and runs frozen at meta-test. Randomness from its seed: init (init stream),
/// action noise (noise stream), trial order and env choice (explore stream).
/// </summary>
public sealed class Rl2Agent : IDisposable
{
    public Rl2Settings Settings { get; }
    public int ObsPad { get; }
    public int ActPad { get; }
    public int InputSize => Rl2Inputs.Size(ObsPad, ActPad);
    /// <summary>Parameters in order: W_ih [1,3H,I], W_hh [1,3H,H], b_ih [1,3H], b_hh [1,3H], W_μ [1,A,H], b_μ [1,A],
    /// log σ [1,A], W_v [1,1,H], b_v [1,1].</summary>
    public IReadOnlyList<Tensor> Parameters => _p;
    /// <summary>PPO updates taken.</summary>
    public long Updates { get; private set; }

    readonly List<Tensor> _p;
    readonly TfAdam _adam;
    readonly Generator _noise;
    readonly SeededRandom _rng;

    public Rl2Agent(Rl2Settings settings, int obsPad, int actPad, long seed)
    {
        Settings = settings; ObsPad = obsPad; ActPad = actPad;
        int H = settings.Hidden, I = InputSize, A = actPad;
        using var gen = new Generator(Seeds.Derive(seed, Seeds.InitStream), torch.CPU);
        Tensor Glorot(long outs, long ins)
        {
            double lim = Math.Sqrt(6.0 / (ins + outs));
            return torch.rand([1, outs, ins], dtype: ScalarType.Float64, generator: gen).mul_(2 * lim).sub_(lim);
        }
        var init = new List<Tensor>
        {
            Glorot(3 * H, I), Glorot(3 * H, H), torch.zeros(1, 3 * H, dtype: ScalarType.Float64), torch.zeros(1, 3 * H, dtype: ScalarType.Float64),
            Glorot(A, H).mul_(0.01), torch.zeros(1, A, dtype: ScalarType.Float64), torch.zeros(1, A, dtype: ScalarType.Float64),
            Glorot(1, H), torch.zeros(1, 1, dtype: ScalarType.Float64),
        };
        _p = init.Select(t => { var x = t.to(ScalarType.Float32).requires_grad_(true); x.DetachFromDisposeScope(); t.Dispose(); return x; }).ToList();
        _adam = new TfAdam(_p, settings.LearningRate, eps: 1e-5);
        _noise = new Generator(Seeds.Derive(seed, Seeds.NoiseStream), torch.CPU);
        _rng = Seeds.Random(seed, Seeds.ExploreStream);
    }

    /// <summary>Draws the action noise and trial choices from <paramref name="seed"/>'s streams from now on (a frozen
    /// policy meta-tested with several seeds).</summary>
    public void Reseed(long seed)
    {
        _noise.manual_seed(unchecked((long)Seeds.Derive(seed, Seeds.NoiseStream)));
        _rng.SetState(Seeds.Random(seed, Seeds.ExploreStream).GetState());
    }

    /// <summary>Picks an index in [0, n) with the agent's own generator (e.g. the env of the next trial).</summary>
    public int Choose(int n) => _rng.Next(n);

    /// <summary>One GRU step: x [B, I], h [B, H] → h' [B, H].</summary>
    Tensor Cell(Tensor x, Tensor h)
    {
        var gi = x.matmul(_p[0][0].t()) + _p[2][0];
        var gh = h.matmul(_p[1][0].t()) + _p[3][0];
        var (ir, iz, inn) = Split3(gi);
        var (hr, hz, hn) = Split3(gh);
        var r = (ir + hr).sigmoid();
        var z = (iz + hz).sigmoid();
        var n = (inn + r * hn).tanh();
        return (1 - z) * n + z * h;
    }

    static (Tensor, Tensor, Tensor) Split3(Tensor g)
    {
        var parts = g.chunk(3, -1);
        return (parts[0], parts[1], parts[2]);
    }

    /// <summary>The heads at hidden states h [.., H]: means [.., A] and values [..].</summary>
    (Tensor Mean, Tensor Value) Heads(Tensor h) =>
        (h.matmul(_p[4][0].t()) + _p[5][0], (h.matmul(_p[7][0].t()) + _p[8][0]).squeeze(-1));

    /// <summary>Runs one trial of <see cref="Rl2Settings.EpisodesPerTrial"/> episodes on <paramref name="env"/> (at
    /// most <paramref name="limit"/> steps: a cut ends the trial), the hidden state carried over its episodes.</summary>
    public Rl2Trial RunTrial(IEnv env, long limit)
    {
        if (env.ObservationSize > ObsPad || env.ActionSize > ActPad)
            throw new ArgumentException($"RL²: {env.Id} has {env.ObservationSize} observations and {env.ActionSize} actions; this policy reads at most {ObsPad} and {ActPad}");
        var mask = Rl2Inputs.ActionMask(env.ActionSize, ActPad);
        var (inputs, actions, rewards, ends, logps, values, returns) =
            (new List<float[]>(), new List<float[]>(), new List<double>(), new List<bool>(), new List<double>(), new List<double>(), new List<double>());
        using var _ = no_grad();
        using var scope = torch.NewDisposeScope();
        var h = torch.zeros(1, Settings.Hidden);
        float[]? prevAct = null;
        double prevRew = 0;
        bool prevDone = false;
        var maskT = torch.tensor(mask);
        var std = _p[6][0].exp();
        for (int ep = 0; ep < Settings.EpisodesPerTrial && inputs.Count < limit; ep++)
        {
            var obs = env.Reset();
            double ret = 0;
            while (true)
            {
                var x = Rl2Inputs.Build(obs, prevAct, prevRew, prevDone, ObsPad, ActPad);
                h = Cell(torch.tensor(x).unsqueeze(0), h);
                var (mean, value) = Heads(h);
                var eps = torch.randn([ActPad], generator: _noise);
                var a = (mean[0] + std * eps) * maskT;
                var act = a.data<float>().ToArray();
                logps.Add(LogProb(a.unsqueeze(0), mean, maskT).item<float>());
                values.Add(value.item<float>());
                var envAct = new float[env.ActionSize];
                for (int i = 0; i < envAct.Length; i++) envAct[i] = Math.Clamp(act[i], env.ActionLow[i], env.ActionHigh[i]);
                var step = env.Step(envAct);
                inputs.Add(x); actions.Add(act); rewards.Add(step.Reward);
                ret += step.Reward;
                bool cut = inputs.Count >= limit;
                ends.Add(step.Done || cut);
                prevAct = act; prevRew = step.Reward; prevDone = step.Done;
                obs = step.Observation;
                if (step.Done || cut)
                {
                    if (step.Done) returns.Add(ret);
                    else if (env is EnvBase b) b.AbandonEpisode();
                    break;
                }
            }
        }
        return new Rl2Trial(env.Id, inputs.ToArray(), actions.ToArray(), mask, rewards.ToArray(), ends.ToArray(),
                            logps.ToArray(), values.ToArray(), returns.ToArray());
    }

    /// <summary>log N(a; μ, σ²) over the env's action dims only (the mask), summed: [..].</summary>
    Tensor LogProb(Tensor a, Tensor mean, Tensor mask) =>
        (OnPolicyMath.GaussianLogProbPerDim(a, mean, _p[6][0]) * mask).sum(-1);

    /// <summary>Advantages and returns of a trial: GAE over the whole trial (one episode of the meta-MDP; episode ends
    /// inside it are inputs, not ends), its last step terminal.</summary>
    public (double[] Advantages, double[] Returns) Advantages(Rl2Trial t)
    {
        var ends = new byte[t.Length];
        if (t.Length > 0) ends[^1] = 1;
        var (adv, ret) = OnPolicyMath.Gae(t.Rewards, t.Values, new double[t.Length], ends, Settings.Gamma, Settings.GaeLambda);
        return (adv, ret);
    }

    /// <summary>PPO on the trials: <see cref="Rl2Settings.Epochs"/> passes, minibatches of whole trials (a fresh order
    /// per epoch), each re-run through the GRU from a zero state. Returns the last step's (policy loss, value loss,
    /// approx. KL); a non-finite loss throws naming it.</summary>
    public (double PolicyLoss, double ValueLoss, double ApproxKl) Train(IReadOnlyList<Rl2Trial> trials)
    {
        var prepared = trials.Where(t => t.Length > 0).Select(t => (Trial: t, Gae: Advantages(t))).ToList();
        if (prepared.Count == 0) return (0, 0, 0);
        (double, double, double) last = (0, 0, 0);
        for (int epoch = 0; epoch < Settings.Epochs; epoch++)
        {
            var order = Enumerable.Range(0, prepared.Count).ToArray();
            for (int i = order.Length - 1; i > 0; i--) { int r = _rng.Next(i + 1); (order[i], order[r]) = (order[r], order[i]); }
            for (int start = 0; start < order.Length; start += Settings.MinibatchTrials)
            {
                var batch = order.Skip(start).Take(Settings.MinibatchTrials).Select(i => prepared[i]).ToList();
                last = Step(batch);
                Updates++;
            }
        }
        return last;
    }

    (double, double, double) Step(List<(Rl2Trial Trial, (double[] Advantages, double[] Returns) Gae)> batch)
    {
        using var scope = torch.NewDisposeScope();
        int B = batch.Count, T = batch.Max(b => b.Trial.Length), I = InputSize, A = ActPad;
        var x = new float[T * B * I]; var act = new float[T * B * A]; var amask = new float[T * B * A];
        var valid = new float[T * B]; var oldLp = new float[T * B]; var adv = new float[T * B]; var ret = new float[T * B];
        for (int b = 0; b < B; b++)
        {
            var (tr, (ad, re)) = batch[b];
            for (int t = 0; t < tr.Length; t++)
            {
                int o = t * B + b;
                tr.Inputs[t].CopyTo(x, o * I);
                tr.Actions[t].CopyTo(act, o * A);
                tr.ActionMask.CopyTo(amask, o * A);
                valid[o] = 1; oldLp[o] = (float)tr.OldLogProb[t]; adv[o] = (float)ad[t]; ret[o] = (float)re[t];
            }
        }
        var xT = torch.tensor(x, [T, B, I]);
        var validT = torch.tensor(valid, [T, B]);
        var advT = torch.tensor(adv, [T, B]);
        var n = validT.sum().clamp_min(1);
        var mu = (advT * validT).sum() / n;
        var sd = (((advT - mu).square() * validT).sum() / n).sqrt();
        advT = (advT - mu) / (sd + 1e-8);
        var h = torch.zeros(B, Settings.Hidden);
        var hs = new List<Tensor>();
        for (int t = 0; t < T; t++) { h = Cell(xT[t], h); hs.Add(h); }
        var (mean, value) = Heads(torch.stack(hs));
        var lp = LogProb(torch.tensor(act, [T, B, A]), mean, torch.tensor(amask, [T, B, A]));
        var policyLoss = OnPolicyMath.ClippedSurrogate(lp.flatten(), torch.tensor(oldLp), advT.flatten(), Settings.Clip, validT.flatten());
        var valueLoss = ((value - torch.tensor(ret, [T, B])).square() * validT).sum() / n;
        var loss = policyLoss + 0.5 * valueLoss;
        double pl = policyLoss.item<float>(), vl = valueLoss.item<float>();
        if (!double.IsFinite(pl) || !double.IsFinite(vl)) throw new InvalidOperationException($"RL²: non-finite loss (policy {pl}, value {vl}) at update {Updates}");
        var grads = torch.autograd.grad([loss], _p).ToList();
        ParamOps.ClipByGlobalNorm(grads, Settings.MaxGradNorm);
        _adam.Step(grads);
        using var _ = no_grad();
        var logRatio = lp.flatten() - torch.tensor(oldLp);
        double kl = (((logRatio.exp() - 1 - logRatio) * validT.flatten()).sum() / n).item<float>();
        return (pl, vl, kl);
    }

    // ── STATE ──

    const string Tag = "RL2A";
    const int Version = 1;

    public byte[] Save()
    {
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            StateIO.WriteHeader(w, Tag, Version);
            w.Write(ObsPad); w.Write(ActPad); w.Write(Settings.Hidden);
            StateIO.WriteTensors(w, "rl2", _p);
            StateIO.WriteAdam(w, "rl2_adam", _adam, 0);
            StateIO.WriteGenerator(w, _noise);
            StateIO.WriteRandom(w, _rng);
            w.Write(Updates);
        }
        return ms.ToArray();
    }

    /// <summary>An agent from <see cref="Save"/>'s bytes (its sizes from them, <paramref name="settings"/> for the rest).</summary>
    public static Rl2Agent Load(byte[] state, Rl2Settings settings)
    {
        using var r = new BinaryReader(new MemoryStream(state));
        StateIO.ExpectHeader(r, Tag, Version, "RL² agent state");
        int obsPad = r.ReadInt32(), actPad = r.ReadInt32(), hidden = r.ReadInt32();
        var agent = new Rl2Agent(settings with { Hidden = hidden }, obsPad, actPad, 0);
        StateIO.ReadTensorsInto(r, "rl2", agent._p);
        StateIO.Apply(agent._adam, 0, StateIO.ReadAdam(r, "rl2_adam", agent._adam, 0));
        StateIO.Apply(agent._noise, StateIO.ReadGenerator(r, agent._noise, "action noise"));
        agent._rng.SetState(StateIO.ReadRandom(r, "trial order"));
        agent.Updates = r.ReadInt64();
        return agent;
    }

    public void Dispose()
    {
        _adam.Dispose();
        foreach (var p in _p) p.Dispose();
        _noise.Dispose();
    }
}
