module MetaGenRL.Tests.ConfigTests

open System
open Expecto
open MetaGenRL.Core.Config

/// Every key of the official ray_configs.base(), plus this port's own switches.
let officialKeys =
    [ "env_name"; "max_episode_length"; "steps"; "clip_gradient"; "recurrent_time_steps"; "agent_count"
      "critic_depth"; "critic_units"; "critic_activation"; "critic_layernorm"; "critic_learning_rate"
      "critic_noise"; "critic_noise_clip"; "target_network_update_speed"; "discount_factor"; "gae_factor"
      "buffer_sample_size"; "buffer_size"; "policy_depth"; "policy_units"; "policy_activation"; "policy_layernorm"
      "policy_learning_rate"; "policy_lr_annealing_base"; "policy_update_delay"; "policy_update_start"
      "policy_clip"; "policy_exploration"; "policy_reset_prob"; "policy_random_exploration_steps"
      "critic_is_recurrent"; "policy_is_recurrent"; "obj_func_enabled"; "obj_func_type"; "obj_func_depth"
      "obj_func_units"; "obj_func_lstm_units"; "obj_func_input_transform_depth"; "obj_func_input_transform_units"
      "obj_func_input_transform_out_units"; "obj_func_input_transform_layernorm"; "obj_func_activation"
      "obj_func_layernorm"; "obj_func_learning_rate"; "obj_func_error_scale"; "obj_func_error_func"
      "obj_func_second_order_adam"; "obj_func_second_order_stepsize"; "obj_func_second_order_steps"
      "obj_func_update_delay"; "obj_func_anneal_steps"; "timesteps_total"; "paper_quirks" ]

let throwsWith (f: unit -> obj) (parts: string list) what =
    let ex = Expect.throwsC (fun () -> f () |> ignore) id
    match ex with
    | :? ArgumentException -> ()
    | e -> failtestf "%s: expected ArgumentException, got %s" what (e.GetType().Name)
    for p in parts do
        Expect.stringContains ex.Message p (sprintf "%s: message names '%s'" what p)

[<Tests>]
let tests =
    testList "Config" [
        test "defaults are the official base() values" {
            let c = RunConfig.Default
            Expect.sequenceEqual c.EnvName [ "LunarLanderContinuous-v2" ] "env_name"
            Expect.isNone (Option.ofNullable c.MaxEpisodeLength) "max_episode_length"
            Expect.equal c.Steps 10 "steps"
            Expect.equal c.ClipGradient 1.0 "clip_gradient"
            Expect.equal c.RecurrentTimeSteps 20 "recurrent_time_steps"
            Expect.equal c.AgentCount 8 "agent_count"
            Expect.equal (c.CriticDepth, c.CriticUnits) (3, 350) "critic size"
            Expect.equal (c.PolicyDepth, c.PolicyUnits) (3, 350) "policy size"
            Expect.equal (c.CriticNoise, c.CriticNoiseClip) (0.2, 0.5) "critic noise"
            Expect.equal c.TargetNetworkUpdateSpeed 0.005 "tau"
            Expect.equal c.DiscountFactor 0.99 "gamma"
            Expect.equal c.GaeFactor 0.97 "gae"
            Expect.equal c.BufferSampleSize 100 "buffer_sample_size"
            Expect.equal c.BufferSize 1000000 "buffer_size"
            Expect.equal c.PolicyUpdateDelay 2 "policy_update_delay"
            Expect.equal c.PolicyExploration 0.1 "policy_exploration"
            Expect.equal c.PolicyRandomExplorationSteps 10000L "random steps"
            Expect.equal c.ObjFuncType "learned-reinforce" "obj_func_type"
            Expect.sequenceEqual c.ObjFuncActivation [ "relu"; "square" ] "obj_func_activation"
            Expect.equal c.ObjFuncSecondOrderStepsize 1e-3 "inner step"
            Expect.equal c.ObjFuncAnnealSteps 10000L "anneal"
            Expect.isTrue c.PaperQuirks "paper_quirks"
            Expect.isTrue c.CriticLayernorm "critic_layernorm"
            Expect.isFalse c.ObjFuncInputTransformLayernorm "input transform LN"
            Expect.equal (RunConfig.Default.Get "policy_update_delay") (box 2) "Get by official name"
        }
        test "Keys holds every official name" {
            for k in officialKeys do Expect.contains RunConfig.Keys k (sprintf "key %s" k)
            Expect.equal (RunConfig.Keys |> Seq.distinct |> Seq.length) RunConfig.Keys.Count "no duplicates"
        }
        test "With parses by type and returns a copy" {
            let c = RunConfig.Default
            let c2 = c.With("policy_update_delay", "3").With("discount_factor", "0.95").With("paper_quirks", "false")
                      .With("env_name", "[Hopper-v2, 'HalfCheetah-v2']").With("max_episode_length", "200")
                      .With("policy_random_exploration_steps", "1e3").With("obj_func_type", "reinforce")
            Expect.equal c2.PolicyUpdateDelay 3 "int"
            Expect.equal c2.DiscountFactor 0.95 "double"
            Expect.isFalse c2.PaperQuirks "bool"
            Expect.sequenceEqual c2.EnvName [ "Hopper-v2"; "HalfCheetah-v2" ] "list"
            Expect.equal (c2.MaxEpisodeLength.GetValueOrDefault()) 200 "nullable int"
            Expect.equal c2.PolicyRandomExplorationSteps 1000L "long from 1e3"
            Expect.isNone (Option.ofNullable (c2.With("max_episode_length", "None").MaxEpisodeLength)) "None"
            Expect.equal c.PolicyUpdateDelay 2 "original unchanged"
            Expect.notEqual c c2 "copies differ"
            Expect.equal (c.With("steps", "10")) c "same values compare equal"
        }
        test "With rejects unknown keys, bad values and out-of-range values, naming the key" {
            let c = RunConfig.Default
            throwsWith (fun () -> box (c.With("policy_update_dlay", "2"))) [ "policy_update_dlay"; "policy_update_delay" ] "typo"
            throwsWith (fun () -> box (c.With("nonsense", "2"))) [ "nonsense" ] "unknown"
            throwsWith (fun () -> box (c.With("critic_units", "abc"))) [ "critic_units"; "abc"; "integer" ] "unparsable int"
            throwsWith (fun () -> box (c.With("paper_quirks", "maybe"))) [ "paper_quirks"; "maybe"; "boolean" ] "unparsable bool"
            throwsWith (fun () -> box (c.With("discount_factor", "1.5"))) [ "discount_factor" ] "gamma > 1"
            throwsWith (fun () -> box (c.With("buffer_size", "-5"))) [ "buffer_size" ] "negative size"
            throwsWith (fun () -> box (c.With("critic_noise", "-0.1"))) [ "critic_noise" ] "negative noise"
            throwsWith (fun () -> box (c.With("obj_func_update_delay", "0"))) [ "obj_func_update_delay" ] "delay 0"
            throwsWith (fun () -> box (c.With("critic_activation", "gelu"))) [ "critic_activation" ] "activation"
            Expect.equal (c.With("obj_func_update_delay", "-1").ObjFuncUpdateDelay) -1 "−1 = frozen is allowed"
        }
        test "keys that nothing here reads are refused rather than ignored" {
            let c = RunConfig.Default
            throwsWith (fun () -> box (c.With("policy_reset_prob", "0.1"))) [ "policy_reset_prob"; "not implemented" ] "reset probability"
            throwsWith (fun () -> box (c.With("policy_clip", "false"))) [ "policy_clip"; "clip_gradient" ] "policy_clip"
            throwsWith (fun () -> box (c.With("critic_is_recurrent", "true"))) [ "critic_is_recurrent"; "not implemented" ] "recurrent critic"
            throwsWith (fun () -> box (c.With("policy_is_recurrent", "true"))) [ "policy_is_recurrent"; "not implemented" ] "recurrent policy"
            throwsWith (fun () -> box (RunConfig.FromJson """{"policy_reset_prob": 0.5}""")) [ "policy_reset_prob" ] "from JSON too"
            // their official values still parse, so official configs round-trip
            Expect.equal (c.With("policy_reset_prob", "0").With("policy_clip", "true").With("critic_is_recurrent", "false")) c "official values"
            // obj_func_enabled / obj_func_type that contradict the algorithm
            let algo = MetaGenRL.Core.Engine.Algorithm.MetaTrain
            throwsWith (fun () -> box (MetaGenRL.Core.Engine.AgentGroup.EffectiveConfig(c.With("obj_func_enabled", "false"), algo)))
                [ "obj_func_enabled"; "td3" ] "objective disabled for meta-train"
            throwsWith (fun () -> box (MetaGenRL.Core.Engine.AgentGroup.EffectiveConfig(c.With("obj_func_type", "reinforce"), MetaGenRL.Core.Engine.Algorithm.MetaTest)))
                [ "obj_func_type"; "reinforce-offpolicy" ] "fixed objective for meta-test"
            Expect.isFalse (MetaGenRL.Core.Engine.AgentGroup.EffectiveConfig(c, MetaGenRL.Core.Engine.Algorithm.Td3)).ObjFuncEnabled "td3 disables it itself"
        }
        test "small-scale switches: LSTM masking, inner step relative to the windows" {
            let c = RunConfig.Default
            throwsWith (fun () -> box (c.With("obj_func_lstm_masking", "sometimes"))) [ "obj_func_lstm_masking"; "per-sequence" ] "masking value"
            throwsWith (fun () -> box (c.With("obj_func_second_order_reference_windows", "-1"))) [ "obj_func_second_order_reference_windows" ] "negative"
            let o = MetaGenRL.Core.Objective.InnerStepOptions.FromConfig c
            Expect.isTrue o.OfficialMasking "official masking by default"
            Expect.equal o.StepSize 1e-3 "the official step by default"
            let small = c.With("obj_func_lstm_masking", "per-sequence").With("buffer_sample_size", "16")
                         .With("obj_func_second_order_reference_windows", "100")
            let o2 = MetaGenRL.Core.Objective.InnerStepOptions.FromConfig small
            Expect.isFalse o2.OfficialMasking "per-sequence masking"
            Expect.floatClose Accuracy.veryHigh o2.StepSize (1e-3 * 100.0 / 16.0) "the step of a 100-window batch"
            Expect.isTrue (MetaGenRL.Core.Objective.InnerStepOptions.FromConfig(c.With("paper_quirks", "false"))).OfficialMasking
                "paper_quirks no longer switches the masking"
        }
        test "actions: normalised to ±1 at the agent and rescaled to the env's box; a ±1 box passes through unchanged" {
            let s = MetaGenRL.Core.Engine.ActionScaling([| -2f; 0f |], [| 2f; 10f |], true)
            Expect.isTrue s.Rescales "rescales"
            Expect.equal s.AgentLow [| -1f; -1f |] "agent box low"
            Expect.equal s.AgentHigh [| 1f; 1f |] "agent box high"
            Expect.equal (s.ToEnv [| -1f; -1f |]) [| -2f; 0f |] "low corner"
            Expect.equal (s.ToEnv [| 1f; 1f |]) [| 2f; 10f |] "high corner"
            Expect.equal (s.ToEnv [| 0.5f; 0f |]) [| 1f; 5f |] "interior"
            let unit = MetaGenRL.Core.Engine.ActionScaling([| -1f |], [| 1f |], true)
            let a = [| 0.1f |]
            Expect.isFalse unit.Rescales "a ±1 box is left alone"
            Expect.isTrue (obj.ReferenceEquals(unit.ToEnv a, a)) "the very same action"
            let off = MetaGenRL.Core.Engine.ActionScaling([| -2f |], [| 2f |], false)
            Expect.equal off.AgentLow [| -2f |] "normalize_actions=false: the env's own box"
            Expect.isTrue (obj.ReferenceEquals(off.ToEnv a, a)) "and no rescaling"
            throwsWith (fun () -> box (MetaGenRL.Core.Engine.ActionScaling([| 1f |], [| -1f |], true))) [ "action dim 0" ] "empty box"
            // extremity: mean over dims of |a| in the agent's box (0 centre, 1 a face)
            Expect.floatClose Accuracy.veryHigh (s.Extremity [| -1f; 0.5f |]) 0.75 "normalised box: (1 + 0.5)/2"
            Expect.floatClose Accuracy.veryHigh (off.Extremity [| 1f |]) 0.5 "±2 box: |1|/2"
            let skew = MetaGenRL.Core.Engine.ActionScaling([| 0f |], [| 10f |], false)
            Expect.floatClose Accuracy.veryHigh (skew.Extremity [| 10f |]) 1.0 "[0, 10] box: 10 is on a face"
            Expect.floatClose Accuracy.veryHigh (skew.Extremity [| 5f |]) 0.0 "[0, 10] box: 5 is the centre"
            // an agent group on Pendulum-v1 (±2) acts in ±1
            use g = new MetaGenRL.Core.Engine.AgentGroup(RunConfig.Default.With("policy_units", "8").With("critic_units", "8"), "Pendulum-v1", [| 0 |], [| 1L |], "cpu", MetaGenRL.Core.Engine.Algorithm.Td3)
            Expect.equal g.Td3.ActHigh [| 1f |] "normalised by default"
            use g2 = new MetaGenRL.Core.Engine.AgentGroup(RunConfig.Default.With("policy_units", "8").With("critic_units", "8").With("normalize_actions", "false"), "Pendulum-v1", [| 0 |], [| 1L |], "cpu", MetaGenRL.Core.Engine.Algorithm.Td3)
            Expect.equal g2.Td3.ActHigh [| 2f |] "the official box when switched off"
        }
        test "JSON round-trips with official names" {
            let c = RunConfig.Default.With("env_name", "Hopper-v2,Ant-v2").With("critic_units", "64")
                     .With("max_episode_length", "100").With("paper_quirks", "false").With("target_network_update_speed", "0.01")
            let json = c.ToJson()
            Expect.stringContains json "\"policy_update_delay\": 2" "official key names"
            Expect.stringContains json "\"max_episode_length\": 100" "nullable value"
            let back = RunConfig.FromJson json
            Expect.equal back c "round trip"
            Expect.equal (back.ToJson()) json "stable text"
            Expect.isNone (Option.ofNullable (RunConfig.FromJson(RunConfig.Default.ToJson()).MaxEpisodeLength)) "null round-trips"
            throwsWith (fun () -> box (RunConfig.FromJson """{"critic_unitz": 3}""")) [ "critic_unitz"; "critic_units" ] "unknown JSON key"
            throwsWith (fun () -> box (RunConfig.FromJson """{"critic_units": "x"}""")) [ "critic_units" ] "bad JSON value"
            Expect.equal (RunConfig.FromJson """{"critic_units": 64}""").CriticUnits 64 "partial JSON keeps defaults"
        }
    ]
