using System.Collections;
using System.Globalization;
using System.Reflection;
using System.Text;
using System.Text.Json;

namespace MetaGenRL.Core.Config;

/// <summary>Names the official <c>ray_configs.base()</c> key a <see cref="RunConfig"/> property stands for.</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class ConfigKeyAttribute(string name) : Attribute
{
    /// <summary>The official snake_case key, e.g. <c>policy_update_delay</c>.</summary>
    public string Name { get; } = name;
}

/// <summary>
/// Every key of the official <c>ray_configs.base()</c> (metagenrl HEAD a0db145) with its default, plus this
/// port's switches (<c>paper_quirks</c>, <c>torch_threads</c>). Immutable: variants are copies made with
/// <c>with { … }</c> or <see cref="With(string, string)"/>. Keys the TD3 agent does not read yet (objective keys,
/// <c>policy_clip</c>, recurrent switches…) are kept so configs round-trip and the learned objective can plug in.
/// </summary>
public sealed record RunConfig
{
    /// <summary>The defaults of the official <c>base()</c> configuration.</summary>
    public static RunConfig Default { get; } = new();

    // ── RUN / ENVIRONMENT ──
    /// <summary>Environment id(s); a list is assigned round-robin to agents (agent i gets env i mod n).</summary>
    [ConfigKey("env_name")] public IReadOnlyList<string> EnvName { get; init; } = ["LunarLanderContinuous-v2"];
    /// <summary>Episode step limit imposed on top of the env; None = the env's own TimeLimit (1000 for the paper's envs).</summary>
    [ConfigKey("max_episode_length")] public int? MaxEpisodeLength { get; init; }
    /// <summary>Collect/update rounds per training iteration; the population loads the latest α and checks the step budget after each iteration.</summary>
    [ConfigKey("steps")] public int Steps { get; init; } = 10;
    /// <summary>Per-agent stop criterion in env steps (ray <c>timesteps_total</c>; 700k at HEAD, 300k in the Oct-2019 release).</summary>
    [ConfigKey("timesteps_total")] public long TimestepsTotal { get; init; } = 700_000;
    /// <summary>Population size (8 in base(), 20 in train()).</summary>
    [ConfigKey("agent_count")] public int AgentCount { get; init; } = 8;
    /// <summary>Global-norm clip for policy gradients and per-agent objective gradients (not the critic).</summary>
    [ConfigKey("clip_gradient")] public double ClipGradient { get; init; } = 1.0;
    /// <summary>Trajectory window length T sampled from the replay buffer.</summary>
    [ConfigKey("recurrent_time_steps")] public int RecurrentTimeSteps { get; init; } = 20;

    // ── CRITIC ──
    /// <summary>Critic MLP depth: depth−1 hidden layers plus the output layer.</summary>
    [ConfigKey("critic_depth")] public int CriticDepth { get; init; } = 3;
    /// <summary>Units per critic hidden layer.</summary>
    [ConfigKey("critic_units")] public int CriticUnits { get; init; } = 350;
    /// <summary>Critic hidden activation (relu or tanh).</summary>
    [ConfigKey("critic_activation")] public string CriticActivation { get; init; } = "relu";
    /// <summary>LayerNorm (ε 1e-12, learned affine) after each critic hidden activation.</summary>
    [ConfigKey("critic_layernorm")] public bool CriticLayernorm { get; init; } = true;
    /// <summary>Critic Adam learning rate (no gradient clipping).</summary>
    [ConfigKey("critic_learning_rate")] public double CriticLearningRate { get; init; } = 1e-3;
    /// <summary>σ of the TD3 target-policy smoothing noise.</summary>
    [ConfigKey("critic_noise")] public double CriticNoise { get; init; } = 0.2;
    /// <summary>Clip of the TD3 target-policy smoothing noise.</summary>
    [ConfigKey("critic_noise_clip")] public double CriticNoiseClip { get; init; } = 0.5;
    /// <summary>Polyak τ for all target networks, applied with every policy step.</summary>
    [ConfigKey("target_network_update_speed")] public double TargetNetworkUpdateSpeed { get; init; } = 0.005;
    /// <summary>Discount γ.</summary>
    [ConfigKey("discount_factor")] public double DiscountFactor { get; init; } = 0.99;
    /// <summary>GAE λ; used only by the fixed REINFORCE baseline objective.</summary>
    [ConfigKey("gae_factor")] public double GaeFactor { get; init; } = 0.97;
    /// <summary>Critic is recurrent (unused in the official runs; not implemented here: only false is accepted).</summary>
    [ConfigKey("critic_is_recurrent")] public bool CriticIsRecurrent { get; init; }

    // ── REPLAY ──
    /// <summary>Trajectory windows per minibatch (×T transitions).</summary>
    [ConfigKey("buffer_sample_size")] public int BufferSampleSize { get; init; } = 100;
    /// <summary>Replay capacity in transitions.</summary>
    [ConfigKey("buffer_size")] public int BufferSize { get; init; } = 1_000_000;

    // ── POLICY ──
    /// <summary>Policy MLP depth: depth−1 hidden layers plus the tanh output layer.</summary>
    [ConfigKey("policy_depth")] public int PolicyDepth { get; init; } = 3;
    /// <summary>Units per policy hidden layer.</summary>
    [ConfigKey("policy_units")] public int PolicyUnits { get; init; } = 350;
    /// <summary>Policy hidden activation (relu or tanh).</summary>
    [ConfigKey("policy_activation")] public string PolicyActivation { get; init; } = "relu";
    /// <summary>LayerNorm (ε 1e-12, learned affine) after each policy hidden activation.</summary>
    [ConfigKey("policy_layernorm")] public bool PolicyLayernorm { get; init; } = true;
    /// <summary>Policy Adam learning rate.</summary>
    [ConfigKey("policy_learning_rate")] public double PolicyLearningRate { get; init; } = 1e-3;
    /// <summary>Base of the exponential LR warm-up; only active when policy_update_start &gt; 0.</summary>
    [ConfigKey("policy_lr_annealing_base")] public double PolicyLrAnnealingBase { get; init; } = 25;
    /// <summary>Policy step and target update every this many critic updates.</summary>
    [ConfigKey("policy_update_delay")] public int PolicyUpdateDelay { get; init; } = 2;
    /// <summary>Env steps of policy LR warm-up; 0 disables it (every shipped config).</summary>
    [ConfigKey("policy_update_start")] public long PolicyUpdateStart { get; init; }
    /// <summary>Unused by the official code; kept so official configs parse, and only true is accepted.</summary>
    [ConfigKey("policy_clip")] public bool PolicyClip { get; init; } = true;
    /// <summary>σ of the Gaussian exploration noise on actions.</summary>
    [ConfigKey("policy_exploration")] public double PolicyExploration { get; init; } = 0.1;
    /// <summary>Probability of resetting the policy (an unused feature of the official code); only 0 is accepted.</summary>
    [ConfigKey("policy_reset_prob")] public double PolicyResetProb { get; init; }
    /// <summary>Env steps of uniform random actions at the start of each agent.</summary>
    [ConfigKey("policy_random_exploration_steps")] public long PolicyRandomExplorationSteps { get; init; } = 10_000;
    /// <summary>Policy is recurrent (unused in the official runs; not implemented here: only false is accepted).</summary>
    [ConfigKey("policy_is_recurrent")] public bool PolicyIsRecurrent { get; init; }

    // ── OBJECTIVE L_α (read by the learned objective, not by TD3) ──
    /// <summary>Train the policy on the objective; false = the DDPG/TD3 baseline (policy loss −Q1).</summary>
    [ConfigKey("obj_func_enabled")] public bool ObjFuncEnabled { get; init; } = true;
    /// <summary>Objective type: learned-reinforce or reinforce (fixed GAE baseline).</summary>
    [ConfigKey("obj_func_type")] public string ObjFuncType { get; init; } = "learned-reinforce";
    /// <summary>Objective output head depth (depth−1 hidden + linear 1).</summary>
    [ConfigKey("obj_func_depth")] public int ObjFuncDepth { get; init; } = 3;
    /// <summary>Units per objective head hidden layer.</summary>
    [ConfigKey("obj_func_units")] public int ObjFuncUnits { get; init; } = 32;
    /// <summary>LSTM units of the objective.</summary>
    [ConfigKey("obj_func_lstm_units")] public int ObjFuncLstmUnits { get; init; } = 32;
    /// <summary>Depth of the objective's input transforms (action net: depth hidden; reward/value net: depth−1 hidden + linear).</summary>
    [ConfigKey("obj_func_input_transform_depth")] public int ObjFuncInputTransformDepth { get; init; } = 3;
    /// <summary>Units of the objective's input-transform hidden layers.</summary>
    [ConfigKey("obj_func_input_transform_units")] public int ObjFuncInputTransformUnits { get; init; } = 32;
    /// <summary>Output size of the reward/value input transform.</summary>
    [ConfigKey("obj_func_input_transform_out_units")] public int ObjFuncInputTransformOutUnits { get; init; } = 8;
    /// <summary>LayerNorm in the reward/value input transform.</summary>
    [ConfigKey("obj_func_input_transform_layernorm")] public bool ObjFuncInputTransformLayernorm { get; init; }
    /// <summary>Objective hidden activations; several split the units (relu half, square half).</summary>
    [ConfigKey("obj_func_activation")] public IReadOnlyList<string> ObjFuncActivation { get; init; } = ["relu", "square"];
    /// <summary>LayerNorm in the objective's action net and head.</summary>
    [ConfigKey("obj_func_layernorm")] public bool ObjFuncLayernorm { get; init; } = true;
    /// <summary>Objective (server) Adam learning rate.</summary>
    [ConfigKey("obj_func_learning_rate")] public double ObjFuncLearningRate { get; init; } = 1e-3;
    /// <summary>Error bound scale s in L = f(x·s)/s.</summary>
    [ConfigKey("obj_func_error_scale")] public double ObjFuncErrorScale { get; init; } = 1e-3;
    /// <summary>Error bound function (tanh).</summary>
    [ConfigKey("obj_func_error_func")] public string ObjFuncErrorFunc { get; init; } = "tanh";
    /// <summary>Inner step uses differentiable Adam instead of SGD.</summary>
    [ConfigKey("obj_func_second_order_adam")] public bool ObjFuncSecondOrderAdam { get; init; }
    /// <summary>Inner SGD step size on the summed objective.</summary>
    [ConfigKey("obj_func_second_order_stepsize")] public double ObjFuncSecondOrderStepsize { get; init; } = 1e-3;
    /// <summary>Number of inner steps; the meta batch is (steps+1)·buffer_sample_size windows.</summary>
    [ConfigKey("obj_func_second_order_steps")] public int ObjFuncSecondOrderSteps { get; init; } = 1;
    /// <summary>Objective gradient every this many iterations; −1 = frozen.</summary>
    [ConfigKey("obj_func_update_delay")] public int ObjFuncUpdateDelay { get; init; } = 2;
    /// <summary>Env steps over which the policy loss anneals from −Q1 to L_α.</summary>
    [ConfigKey("obj_func_anneal_steps")] public long ObjFuncAnnealSteps { get; init; } = 10_000;
    /// <summary>This port's L_α ablations (the paper's Figure 5; the official code has no switch for them): full, no-value, no-time, no-reward, q-input
    /// (Q1(s, π(s)) with gradient as an input), forward-lstm, no-lstm (per-step MLP in place of the LSTM).</summary>
    [ConfigKey("obj_func_variant")] public string ObjFuncVariant { get; init; } = "full";

    // ── THIS PORT ──
    /// <summary>Replicate the official code's quirks: time-limit ends stored as terminal and "+d" in the TD target and
    /// in GAE. False: truncation bootstraps, no +d. (L_α's LSTM masking has its own key, obj_func_lstm_masking.)</summary>
    [ConfigKey("paper_quirks")] public bool PaperQuirks { get; init; } = true;
    /// <summary>The agent acts in [−1, 1] on every action dim and the env rescales linearly to its own box, so L_α's
    /// action inputs, the exploration noise and the target smoothing mean the same on every env. The paper's envs are
    /// all ±1 and unchanged by it; false: the agent acts in the env's own box (the official code, which never met a
    /// box other than ±1).</summary>
    [ConfigKey("normalize_actions")] public bool NormalizeActions { get; init; } = true;
    /// <summary>How L_α's backward-in-time LSTM treats a window shorter than T. official: the whole padded window is
    /// reversed and then the valid length applied, so a window of at most T/2 valid steps gets LSTM output 0 on
    /// every valid step (no policy gradient through L_α) and longer short windows only on part of them (the
    /// official code). per-sequence: each window's valid steps are reversed on their own and all of them count.</summary>
    [ConfigKey("obj_func_lstm_masking")] public string ObjFuncLstmMasking { get; init; } = "official";
    /// <summary>0 (official): the inner step obj_func_second_order_stepsize acts on the objective summed over the
    /// sampled windows as they are. N &gt; 0: the step size is scaled by N / buffer_sample_size, so the inner step
    /// has the size it would have on a batch of N windows (the paper's 100), whatever the batch.</summary>
    [ConfigKey("obj_func_second_order_reference_windows")] public int ObjFuncSecondOrderReferenceWindows { get; init; }
    /// <summary>Meta-training only: env steps an agent lives before it is reset (fresh policy, critics, targets,
    /// optimiser state, replay and exploration; its env and its copy of α carry on), so L_α keeps meeting agents
    /// that learn from scratch. Lives are staggered: member i of N starts with a life of L·(N − i)/N, so the
    /// population always holds agents at every stage of learning. 0 = agents live for the whole run (the official code).</summary>
    [ConfigKey("agent_lifetime")] public long AgentLifetime { get; init; }
    /// <summary>&gt; 0: each life's length is drawn log-uniformly from [agent_lifetime_min, agent_lifetime] (seeded per
    /// agent and life) instead of being agent_lifetime.</summary>
    [ConfigKey("agent_lifetime_min")] public long AgentLifetimeMin { get; init; }
    /// <summary>The anneal from −Q1 to L_α (obj_func_anneal_steps) starts again with each life; false: it counts the
    /// agent's env steps over all its lives. (Random exploration always starts again: a new life is a fresh agent.)</summary>
    [ConfigKey("agent_lifetime_restart_anneal")] public bool AgentLifetimeRestartAnneal { get; init; } = true;
    /// <summary>Env families: nominal (gym's physics), train (each agent life draws its env's physical parameters
    /// uniformly from the family's training ranges) or held-out (from bands outside every training range, for
    /// meta-test). Applies to envs with parameters (Pendulum-v1: gravity, mass, length, torque;
    /// MountainCarContinuous-v0: power); the others always run nominal. The draws are seeded per agent and life
    /// and reported as env_param_* rows.</summary>
    [ConfigKey("env_params")] public string EnvParams { get; init; } = "nominal";
    /// <summary>libtorch intra-op threads of each agent group; None: the cores split evenly over the groups.</summary>
    [ConfigKey("torch_threads")] public int? TorchThreads { get; init; }
    /// <summary>Env steps between population checkpoints, taken at round boundaries; 0 = max(1000, timesteps_total / 5).</summary>
    [ConfigKey("checkpoint_every")] public long CheckpointEvery { get; init; }
    /// <summary>Population checkpoints include every agent's replay buffer (needed for a bit-exact resume; large).</summary>
    [ConfigKey("checkpoint_replay")] public bool CheckpointReplay { get; init; } = true;
    /// <summary>Agents per group: the agents of one env are computed as batched groups of this many (stacked
    /// networks, one batched update); 0 = every agent of an env in one group.</summary>
    [ConfigKey("group_size")] public int GroupSize { get; init; }
    /// <summary>The official budget check: timesteps_total is compared with the step count only at the end of each
    /// training iteration (every <c>steps</c> rounds), so a run overshoots its budget by up to an iteration. False
    /// (default): collection stops exactly at the budget and the run ends after that round's updates.</summary>
    [ConfigKey("budget_check_per_iteration")] public bool BudgetCheckPerIteration { get; init; }

    // ── ON-POLICY BASELINES (ppo, reinforce-onpolicy) ── None: the algorithm's default (Agents.OnPolicySettings,
    // which names the source of each). discount_factor is shared with the other algorithms.
    /// <summary>Env steps per rollout: whole episodes are collected until at least this many.</summary>
    [ConfigKey("onpolicy_rollout_steps")] public long? OnPolicyRolloutSteps { get; init; }
    /// <summary>PPO: passes over each rollout; reinforce-onpolicy: value-function steps per rollout (the policy takes one).</summary>
    [ConfigKey("onpolicy_epochs")] public int? OnPolicyEpochs { get; init; }
    /// <summary>Samples per gradient step; 0: the whole rollout.</summary>
    [ConfigKey("onpolicy_minibatch_size")] public int? OnPolicyMinibatchSize { get; init; }
    /// <summary>PPO's ratio clip ε; 0: no clipping (REINFORCE).</summary>
    [ConfigKey("onpolicy_clip")] public double? OnPolicyClip { get; init; }
    /// <summary>GAE's λ.</summary>
    [ConfigKey("onpolicy_gae_lambda")] public double? OnPolicyGaeLambda { get; init; }
    /// <summary>Adam step size of the policy (mean network and log-std).</summary>
    [ConfigKey("onpolicy_policy_learning_rate")] public double? OnPolicyPolicyLearningRate { get; init; }
    /// <summary>Adam step size of the value function.</summary>
    [ConfigKey("onpolicy_value_learning_rate")] public double? OnPolicyValueLearningRate { get; init; }
    /// <summary>Weight of the policy's entropy bonus.</summary>
    [ConfigKey("onpolicy_entropy_coef")] public double? OnPolicyEntropyCoef { get; init; }
    /// <summary>Global-norm gradient clip of each network per step; 0: none.</summary>
    [ConfigKey("onpolicy_max_grad_norm")] public double? OnPolicyMaxGradNorm { get; init; }
    /// <summary>Normalise advantages to mean 0, std 1 per gradient step's sample.</summary>
    [ConfigKey("onpolicy_normalize_advantages")] public bool? OnPolicyNormalizeAdvantages { get; init; }
    /// <summary>Normalise observations by a running mean and variance (per agent, updated while collecting).</summary>
    [ConfigKey("onpolicy_normalize_observations")] public bool? OnPolicyNormalizeObservations { get; init; }
    /// <summary>Units per hidden layer of the policy and value networks.</summary>
    [ConfigKey("onpolicy_units")] public int? OnPolicyUnits { get; init; }
    /// <summary>Hidden layers + 1 of the policy and value networks (tanh, no LayerNorm).</summary>
    [ConfigKey("onpolicy_depth")] public int? OnPolicyDepth { get; init; }

    // ── EPG (meta-train --algo epg) ── None: Agents.EpgSettings' default.
    /// <summary>Env steps of one EPG inner loop (a fresh agent's lifetime).</summary>
    [ConfigKey("epg_inner_steps")] public long? EpgInnerSteps { get; init; }
    /// <summary>Antithetic pairs per ES epoch (2 × this many inner loops).</summary>
    [ConfigKey("epg_pairs")] public int? EpgPairs { get; init; }
    /// <summary>ES perturbation scale σ.</summary>
    [ConfigKey("epg_sigma")] public double? EpgSigma { get; init; }
    /// <summary>Adam step size on the loss's parameters φ.</summary>
    [ConfigKey("epg_es_learning_rate")] public double? EpgEsLearningRate { get; init; }

    // ── KEYS, OVERRIDES, VALIDATION ──

    static readonly (string Key, PropertyInfo Prop)[] Props =
        typeof(RunConfig).GetProperties(BindingFlags.Public | BindingFlags.Instance)
            .Select(p => (Key: p.GetCustomAttribute<ConfigKeyAttribute>()?.Name!, Prop: p))
            .Where(e => e.Key != null)
            .ToArray();

    /// <summary>All official key names (plus this port's), in declaration order.</summary>
    public static IReadOnlyList<string> Keys { get; } = Props.Select(p => p.Key).ToArray();

    /// <summary>The value of a key, boxed (for printing and provenance).</summary>
    public object? Get(string key) => Find(key).GetValue(this);

    /// <summary>A copy with <paramref name="key"/> (official name) set from its text form. Lists are comma
    /// separated (brackets and quotes optional); <c>None</c>/<c>null</c> sets a nullable key to null.
    /// Throws <see cref="ArgumentException"/> naming the key for an unknown key, an unparsable or an out-of-range value.</summary>
    public RunConfig With(string key, string value)
    {
        var prop = Find(key);
        object? parsed = ParseText(key, value, prop.PropertyType);
        return WithValue(key, prop, parsed);
    }

    /// <summary>Applies several <c>key=value</c> overrides in order.</summary>
    public RunConfig With(IEnumerable<KeyValuePair<string, string>> overrides) =>
        overrides.Aggregate(this, (c, kv) => c.With(kv.Key, kv.Value));

    RunConfig WithValue(string key, PropertyInfo prop, object? value)
    {
        var copy = this with { };
        prop.SetValue(copy, value);
        copy.CheckKey(key);
        return copy;
    }

    static PropertyInfo Find(string key)
    {
        foreach (var (k, p) in Props) if (k == key) return p;
        var close = Keys
            .Select(k => (k, d: Levenshtein(k, key ?? "")))
            .Where(e => e.d <= Math.Max(3, (key ?? "").Length / 4) || e.k.Contains(key ?? "\0") || (key ?? "").Contains(e.k))
            .OrderBy(e => e.d).Take(3).Select(e => e.k).ToArray();
        string hint = close.Length > 0 ? $"; did you mean {string.Join(", ", close)}?" : "";
        throw new ArgumentException($"unknown config key '{key}'{hint}");
    }

    /// <summary>Checks every key's range; throws <see cref="ArgumentException"/> naming the first bad key.</summary>
    public RunConfig Validate()
    {
        foreach (var k in Keys) CheckKey(k);
        if (AgentLifetimeMin > 0 && AgentLifetimeMin > AgentLifetime)
            throw new ArgumentException($"config key 'agent_lifetime_min' = {AgentLifetimeMin}: exceeds agent_lifetime = {AgentLifetime} (log-uniform lifetimes are drawn from [agent_lifetime_min, agent_lifetime])");
        return this;
    }

    void CheckKey(string key)
    {
        void Need(bool ok, string what)
        {
            if (!ok) throw new ArgumentException($"config key '{key}' = {Format(Get(key))}: {what}");
        }
        switch (key)
        {
            case "env_name": Need(EnvName.Count > 0 && EnvName.All(e => !string.IsNullOrWhiteSpace(e)), "expected at least one non-empty env id"); break;
            case "max_episode_length": Need(MaxEpisodeLength is null or > 0, "expected None or a positive integer"); break;
            case "steps": Need(Steps >= 1, "expected ≥ 1"); break;
            case "timesteps_total": Need(TimestepsTotal >= 0, "expected ≥ 0"); break;
            case "agent_count": Need(AgentCount >= 1, "expected ≥ 1"); break;
            case "clip_gradient": Need(ClipGradient > 0 && double.IsFinite(ClipGradient), "expected a positive number"); break;
            case "recurrent_time_steps": Need(RecurrentTimeSteps >= 1, "expected ≥ 1"); break;
            case "critic_depth": Need(CriticDepth >= 1, "expected ≥ 1"); break;
            case "critic_units": Need(CriticUnits >= 1, "expected ≥ 1"); break;
            case "critic_activation": Need(CriticActivation is "relu" or "tanh", "expected relu or tanh"); break;
            case "critic_learning_rate": Need(CriticLearningRate > 0 && double.IsFinite(CriticLearningRate), "expected a positive number"); break;
            case "critic_noise": Need(CriticNoise >= 0 && double.IsFinite(CriticNoise), "expected ≥ 0"); break;
            case "critic_noise_clip": Need(CriticNoiseClip >= 0 && double.IsFinite(CriticNoiseClip), "expected ≥ 0"); break;
            case "target_network_update_speed": Need(TargetNetworkUpdateSpeed is >= 0 and <= 1, "expected in [0, 1]"); break;
            case "discount_factor": Need(DiscountFactor is >= 0 and <= 1, "expected in [0, 1]"); break;
            case "gae_factor": Need(GaeFactor is >= 0 and <= 1, "expected in [0, 1]"); break;
            case "buffer_sample_size": Need(BufferSampleSize >= 1, "expected ≥ 1"); break;
            case "buffer_size": Need(BufferSize >= 1, "expected ≥ 1"); break;
            case "policy_depth": Need(PolicyDepth >= 1, "expected ≥ 1"); break;
            case "policy_units": Need(PolicyUnits >= 1, "expected ≥ 1"); break;
            case "policy_activation": Need(PolicyActivation is "relu" or "tanh", "expected relu or tanh"); break;
            case "policy_learning_rate": Need(PolicyLearningRate > 0 && double.IsFinite(PolicyLearningRate), "expected a positive number"); break;
            case "policy_lr_annealing_base": Need(PolicyLrAnnealingBase > 1 && double.IsFinite(PolicyLrAnnealingBase), "expected > 1"); break;
            case "policy_update_delay": Need(PolicyUpdateDelay >= 1, "expected ≥ 1"); break;
            case "policy_update_start": Need(PolicyUpdateStart >= 0, "expected ≥ 0"); break;
            case "policy_exploration": Need(PolicyExploration >= 0 && double.IsFinite(PolicyExploration), "expected ≥ 0"); break;
            case "policy_reset_prob": Need(PolicyResetProb == 0, "not implemented (the official code never reads it either)"); break;
            case "policy_clip": Need(PolicyClip, "has no effect (the official code never reads it); the policy's gradient clip is clip_gradient"); break;
            case "critic_is_recurrent": Need(!CriticIsRecurrent, "a recurrent critic is not implemented (the official runs never use one)"); break;
            case "policy_is_recurrent": Need(!PolicyIsRecurrent, "a recurrent policy is not implemented (the official runs never use one)"); break;
            case "policy_random_exploration_steps": Need(PolicyRandomExplorationSteps >= 0, "expected ≥ 0"); break;
            case "obj_func_type": Need(ObjFuncType is "learned-reinforce" or "reinforce", "expected learned-reinforce or reinforce"); break;
            case "obj_func_depth": Need(ObjFuncDepth >= 1, "expected ≥ 1"); break;
            case "obj_func_units": Need(ObjFuncUnits >= 1, "expected ≥ 1"); break;
            case "obj_func_lstm_units": Need(ObjFuncLstmUnits >= 1, "expected ≥ 1"); break;
            case "obj_func_input_transform_depth": Need(ObjFuncInputTransformDepth >= 1, "expected ≥ 1"); break;
            case "obj_func_input_transform_units": Need(ObjFuncInputTransformUnits >= 1, "expected ≥ 1"); break;
            case "obj_func_input_transform_out_units": Need(ObjFuncInputTransformOutUnits >= 1, "expected ≥ 1"); break;
            case "obj_func_activation": Need(ObjFuncActivation.Count > 0 && ObjFuncActivation.All(a => a is "relu" or "square" or "tanh" or "elu" or "sigmoid"), "expected a non-empty list of relu, square, tanh, elu, sigmoid"); break;
            case "obj_func_learning_rate": Need(ObjFuncLearningRate > 0 && double.IsFinite(ObjFuncLearningRate), "expected a positive number"); break;
            case "obj_func_error_scale": Need(ObjFuncErrorScale > 0 && double.IsFinite(ObjFuncErrorScale), "expected a positive number"); break;
            case "obj_func_error_func": Need(ObjFuncErrorFunc is "tanh" or "none", "expected tanh or none"); break;
            case "obj_func_second_order_stepsize": Need(ObjFuncSecondOrderStepsize >= 0 && double.IsFinite(ObjFuncSecondOrderStepsize), "expected ≥ 0"); break;
            case "obj_func_second_order_steps": Need(ObjFuncSecondOrderSteps >= 1, "expected ≥ 1"); break;
            case "obj_func_update_delay": Need(ObjFuncUpdateDelay == -1 || ObjFuncUpdateDelay >= 1, "expected −1 (frozen) or ≥ 1"); break;
            case "obj_func_anneal_steps": Need(ObjFuncAnnealSteps >= 0, "expected ≥ 0"); break;
            case "obj_func_variant": Need(Objective.ObjectiveSpec.VariantNames.Contains(ObjFuncVariant),
                "expected one of " + string.Join(", ", Objective.ObjectiveSpec.VariantNames)); break;
            case "torch_threads": Need(TorchThreads is null or >= 1, "expected None or ≥ 1"); break;
            case "checkpoint_every": Need(CheckpointEvery >= 0, "expected ≥ 0"); break;
            case "obj_func_lstm_masking": Need(ObjFuncLstmMasking is "official" or "per-sequence", "expected official or per-sequence"); break;
            case "obj_func_second_order_reference_windows": Need(ObjFuncSecondOrderReferenceWindows >= 0, "expected ≥ 0 (0: the official step on the batch as sampled)"); break;
            case "agent_lifetime": Need(AgentLifetime >= 0, "expected ≥ 0 (0: no resets)"); break;
            case "agent_lifetime_min": Need(AgentLifetimeMin >= 0, "expected ≥ 0 (0: fixed lifetimes)"); break;
            case "env_params": Need(Envs.EnvFamily.ModeNames.Contains(EnvParams), "expected one of " + string.Join(", ", Envs.EnvFamily.ModeNames)); break;
            case "group_size": Need(GroupSize >= 0, "expected ≥ 0 (0: every agent of an env in one group)"); break;
            case "onpolicy_rollout_steps": Need(OnPolicyRolloutSteps is null or >= 1, "expected None or ≥ 1"); break;
            case "onpolicy_epochs": Need(OnPolicyEpochs is null or >= 1, "expected None or ≥ 1"); break;
            case "onpolicy_minibatch_size": Need(OnPolicyMinibatchSize is null or >= 0, "expected None or ≥ 0 (0: the whole rollout)"); break;
            case "onpolicy_clip": Need(OnPolicyClip is null or (>= 0 and < 1), "expected None or in [0, 1) (0: no clipping)"); break;
            case "onpolicy_gae_lambda": Need(OnPolicyGaeLambda is null or (>= 0 and <= 1), "expected None or in [0, 1]"); break;
            case "onpolicy_policy_learning_rate": Need(OnPolicyPolicyLearningRate is null || (OnPolicyPolicyLearningRate > 0 && double.IsFinite(OnPolicyPolicyLearningRate.Value)), "expected None or a positive number"); break;
            case "onpolicy_value_learning_rate": Need(OnPolicyValueLearningRate is null || (OnPolicyValueLearningRate > 0 && double.IsFinite(OnPolicyValueLearningRate.Value)), "expected None or a positive number"); break;
            case "onpolicy_entropy_coef": Need(OnPolicyEntropyCoef is null || (OnPolicyEntropyCoef >= 0 && double.IsFinite(OnPolicyEntropyCoef.Value)), "expected None or ≥ 0"); break;
            case "onpolicy_max_grad_norm": Need(OnPolicyMaxGradNorm is null || (OnPolicyMaxGradNorm >= 0 && double.IsFinite(OnPolicyMaxGradNorm.Value)), "expected None or ≥ 0 (0: no clipping)"); break;
            case "onpolicy_units": Need(OnPolicyUnits is null or >= 1, "expected None or ≥ 1"); break;
            case "onpolicy_depth": Need(OnPolicyDepth is null or >= 2, "expected None or ≥ 2"); break;
            case "epg_inner_steps": Need(EpgInnerSteps is null or >= 2, "expected None or ≥ 2"); break;
            case "epg_pairs": Need(EpgPairs is null or >= 1, "expected None or ≥ 1"); break;
            case "epg_sigma": Need(EpgSigma is null || (EpgSigma > 0 && double.IsFinite(EpgSigma.Value)), "expected None or a positive number"); break;
            case "epg_es_learning_rate": Need(EpgEsLearningRate is null || (EpgEsLearningRate > 0 && double.IsFinite(EpgEsLearningRate.Value)), "expected None or a positive number"); break;
        }
    }

    // ── PARSING ──

    static object? ParseText(string key, string text, Type type)
    {
        string s = (text ?? "").Trim();
        var under = Nullable.GetUnderlyingType(type);
        if (under != null)
            return s is "None" or "null" or "none" or "" ? null : ParseText(key, s, under);
        if (type == typeof(IReadOnlyList<string>))
        {
            string inner = s.StartsWith('[') && s.EndsWith(']') ? s[1..^1] : s;
            var items = inner.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
                .Select(x => x.Trim('\'', '"').Trim()).ToArray();
            return items;
        }
        bool ok;
        object? v;
        if (type == typeof(int)) { ok = int.TryParse(s.Replace("_", ""), NumberStyles.Integer, CultureInfo.InvariantCulture, out var i); v = i;
            if (!ok && double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) && d == Math.Floor(d) && Math.Abs(d) <= int.MaxValue) { ok = true; v = (int)d; } }
        else if (type == typeof(long)) { ok = long.TryParse(s.Replace("_", ""), NumberStyles.Integer, CultureInfo.InvariantCulture, out var l); v = l;
            if (!ok && double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) && d == Math.Floor(d) && Math.Abs(d) <= 9e15) { ok = true; v = (long)d; } }
        else if (type == typeof(double)) { ok = double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) && double.IsFinite(d); v = d; }
        else if (type == typeof(bool))
        {
            ok = true;
            v = s.ToLowerInvariant() switch { "true" or "1" or "yes" => true, "false" or "0" or "no" => false, _ => (object?)(ok = false) };
        }
        else if (type == typeof(string)) { ok = true; v = s.Trim('\'', '"'); }
        else if (type.IsEnum)
        {
            ok = Enum.TryParse(type, s.Replace("-", "").Replace("_", ""), ignoreCase: true, out v) && Enum.IsDefined(type, v!);
        }
        else throw new InvalidOperationException($"config key '{key}': unsupported property type {type.Name}");
        if (!ok)
            throw new ArgumentException($"config key '{key}': cannot parse '{text}' as {TypeName(type)}");
        return v;
    }

    static string TypeName(Type t)
    {
        var u = Nullable.GetUnderlyingType(t);
        if (u != null) return TypeName(u) + " or None";
        if (t == typeof(int)) return "an integer";
        if (t == typeof(long)) return "an integer (64-bit)";
        if (t == typeof(double)) return "a finite number";
        if (t == typeof(bool)) return "a boolean (true/false)";
        if (t == typeof(string)) return "a string";
        if (t == typeof(IReadOnlyList<string>)) return "a comma-separated list of strings";
        if (t.IsEnum) return "one of " + string.Join(", ", Enum.GetNames(t));
        return t.Name;
    }

    static string Format(object? v) => v switch
    {
        null => "None",
        IReadOnlyList<string> l => "[" + string.Join(", ", l) + "]",
        double d => d.ToString("R", CultureInfo.InvariantCulture),
        _ => Convert.ToString(v, CultureInfo.InvariantCulture) ?? "",
    };

    static int Levenshtein(string a, string b)
    {
        var d = new int[b.Length + 1];
        for (int j = 0; j <= b.Length; j++) d[j] = j;
        for (int i = 1; i <= a.Length; i++)
        {
            int prev = d[0];
            d[0] = i;
            for (int j = 1; j <= b.Length; j++)
            {
                int tmp = d[j];
                d[j] = Math.Min(Math.Min(d[j] + 1, d[j - 1] + 1), prev + (a[i - 1] == b[j - 1] ? 0 : 1));
                prev = tmp;
            }
        }
        return d[b.Length];
    }

    // ── JSON ──

    /// <summary>Indented JSON object with the official key names, in declaration order.</summary>
    public string ToJson()
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            foreach (var (key, prop) in Props)
            {
                w.WritePropertyName(key);
                switch (prop.GetValue(this))
                {
                    case null: w.WriteNullValue(); break;
                    case int i: w.WriteNumberValue(i); break;
                    case long l: w.WriteNumberValue(l); break;
                    case double d: w.WriteNumberValue(d); break;
                    case bool b: w.WriteBooleanValue(b); break;
                    case string s: w.WriteStringValue(s); break;
                    case IReadOnlyList<string> list:
                        w.WriteStartArray();
                        foreach (var s in list) w.WriteStringValue(s);
                        w.WriteEndArray();
                        break;
                    case Enum e: w.WriteStringValue(e.ToString()); break;
                    case var o: throw new InvalidOperationException($"config key '{key}': cannot write {o.GetType().Name}");
                }
            }
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(ms.ToArray());
    }

    /// <summary>Parses <see cref="ToJson"/>'s format. Missing keys keep their defaults; unknown keys, wrong
    /// types and out-of-range values throw <see cref="ArgumentException"/> naming the key.</summary>
    public static RunConfig FromJson(string json)
    {
        using var doc = JsonDocument.Parse(json);
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
            throw new ArgumentException("config JSON: expected an object of key: value");
        var cfg = Default;
        foreach (var p in doc.RootElement.EnumerateObject())
        {
            var prop = Find(p.Name);
            var e = p.Value;
            string text = e.ValueKind switch
            {
                JsonValueKind.Null => "None",
                JsonValueKind.String => e.GetString()!,
                JsonValueKind.Array => string.Join(",", e.EnumerateArray().Select(x => x.ValueKind == JsonValueKind.String ? x.GetString() : x.GetRawText())),
                _ => e.GetRawText(),
            };
            if (e.ValueKind == JsonValueKind.Array && prop.PropertyType != typeof(IReadOnlyList<string>))
                throw new ArgumentException($"config key '{p.Name}': cannot parse {e.GetRawText()} as {TypeName(prop.PropertyType)}");
            if (e.ValueKind == JsonValueKind.String && prop.PropertyType == typeof(IReadOnlyList<string>))
                text = e.GetString()!; // a single env id given as a string
            cfg = cfg.WithValue(p.Name, prop, ParseText(p.Name, text, prop.PropertyType));
        }
        return cfg;
    }

    // ── EQUALITY (lists compare by content) ──

    /// <summary>Value equality over every key; lists compare element-wise.</summary>
    public bool Equals(RunConfig? other)
    {
        if (other is null) return false;
        if (ReferenceEquals(this, other)) return true;
        foreach (var (_, prop) in Props)
        {
            object? a = prop.GetValue(this), b = prop.GetValue(other);
            if (a is IReadOnlyList<string> la && b is IReadOnlyList<string> lb) { if (!la.SequenceEqual(lb)) return false; }
            else if (!Equals(a, b)) return false;
        }
        return true;
    }

    public override int GetHashCode()
    {
        var h = new HashCode();
        foreach (var (_, prop) in Props)
        {
            object? v = prop.GetValue(this);
            if (v is IReadOnlyList<string> l) foreach (var s in l) h.Add(s);
            else h.Add(v);
        }
        return h.ToHashCode();
    }

    /// <summary>One <c>key = value</c> per line.</summary>
    public override string ToString() => string.Join("\n", Props.Select(p => $"{p.Key} = {Format(p.Prop.GetValue(this))}"));
}
