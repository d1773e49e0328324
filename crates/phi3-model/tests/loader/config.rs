//! `Phi3Config` parsing, both rope spellings, and every validation error.

use phi3_model::{ConfigError, Phi3Config};
use serde_json::{Value, json};

use crate::support::{repo_root, tiny_config};

fn parse(v: &Value) -> Result<Phi3Config, ConfigError> {
    Phi3Config::from_json_str(&v.to_string())
}

fn with(mut v: Value, key: &str, value: Value) -> Value {
    v[key] = value;
    v
}

fn without(mut v: Value, key: &str) -> Value {
    v.as_object_mut().unwrap().remove(key);
    v
}

#[test]
fn real_phi3_mini_128k_config() {
    let cfg =
        Phi3Config::from_file(&repo_root().join("fixtures/configs/phi3-mini-128k.json")).unwrap();
    assert_eq!(cfg.hidden_size, 3072);
    assert_eq!(cfg.num_hidden_layers, 32);
    assert_eq!(cfg.head_dim(), 96);
    assert_eq!(cfg.qkv_size(), 3 * 3072);
    assert_eq!(cfg.gate_up_size(), 2 * 8192);
    assert_eq!(cfg.kv_group_size(), 1);
    assert_eq!(cfg.vocab_size, 32064);
    assert_eq!(cfg.max_position_embeddings, 131072);
    assert_eq!(cfg.sliding_window, Some(262144));
    assert_eq!(cfg.eos_token_ids, vec![32000]);
    assert_eq!(cfg.torch_dtype.as_deref(), Some("bfloat16"));
    assert!(!cfg.tie_word_embeddings);
    let long = cfg.rope.long_rope.as_ref().unwrap();
    assert_eq!(long.original_max_position_embeddings, 4096);
    assert_eq!(long.short_factor.len(), 48);
    assert_eq!(cfg.long_rope_original_max(), Some(4096));
    // HF's Phi3ForCausalLM on this config has 3,821,079,552 parameters (counted with torch).
    assert_eq!(cfg.parameter_count(), 3_821_079_552);
}

#[test]
fn rope_parameters_form_equals_rope_scaling_form() {
    let old = tiny_config();
    let mut new = without(old.clone(), "rope_scaling");
    new = without(new, "rope_theta");
    new = without(new, "original_max_position_embeddings");
    new["rope_parameters"] = json!({
        "rope_type": "longrope", "rope_theta": 10000.0, "short_factor": [1.0, 1.5],
        "long_factor": [2.0, 3.0], "original_max_position_embeddings": 16,
        "partial_rotary_factor": 1.0
    });
    assert_eq!(parse(&old).unwrap(), parse(&new).unwrap());
}

#[test]
fn longrope_aliases() {
    let base = parse(&tiny_config()).unwrap();
    for name in ["su", "longrope"] {
        let mut v = tiny_config();
        v["rope_scaling"]["type"] = json!(name);
        assert_eq!(parse(&v).unwrap().rope, base.rope, "{name}");
    }
    // HF's Phi3Config maps "yarn" with short/long lists to longrope as well.
    let mut v = tiny_config();
    v["rope_scaling"]["type"] = json!("yarn");
    assert_eq!(parse(&v).unwrap().rope, base.rope);
}

#[test]
fn unsupported_rope_types_are_errors() {
    for name in ["linear", "dynamic", "llama3", "ntk"] {
        let v = with(
            tiny_config(),
            "rope_scaling",
            json!({"type": name, "factor": 2.0}),
        );
        match parse(&v) {
            Err(ConfigError::UnsupportedRopeType { rope_type, .. }) => assert_eq!(rope_type, name),
            other => panic!("{name}: {other:?}"),
        }
    }
    // A real YaRN config (no factor lists) is not LongRoPE.
    let v = with(
        tiny_config(),
        "rope_parameters",
        json!({"rope_type": "yarn", "factor": 4.0}),
    );
    let v = with(v, "rope_scaling", Value::Null);
    let err = parse(&v).unwrap_err();
    assert!(
        matches!(err, ConfigError::UnsupportedRopeType { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("`yarn` is not supported"), "{err}");
}

#[test]
fn no_scaling_is_plain_rope() {
    let expected_theta = 10000.0;
    for v in [
        with(tiny_config(), "rope_scaling", Value::Null),
        without(tiny_config(), "rope_scaling"),
        with(
            tiny_config(),
            "rope_scaling",
            json!({"rope_type": "default"}),
        ),
        with(tiny_config(), "rope_scaling", json!({})),
    ] {
        let cfg = parse(&v).unwrap();
        assert!(cfg.rope.long_rope.is_none(), "{v}");
        assert_eq!(cfg.rope.theta, expected_theta);
    }
    let cfg = parse(&without(
        without(tiny_config(), "rope_scaling"),
        "rope_theta",
    ))
    .unwrap();
    assert_eq!(cfg.rope.theta, 10000.0, "HF default theta");
    let cfg = parse(&with(
        without(tiny_config(), "rope_scaling"),
        "rope_theta",
        json!(500000.0),
    ))
    .unwrap();
    assert_eq!(cfg.rope.theta, 500000.0);
}

#[test]
fn rope_dict_precedence() {
    // An empty rope_scaling falls through to rope_parameters (HF: `rope_scaling or rope_parameters`).
    let mut v = with(tiny_config(), "rope_scaling", json!({}));
    v["rope_parameters"] =
        json!({"rope_type": "longrope", "short_factor": [1.0, 1.0], "long_factor": [4.0, 4.0]});
    let cfg = parse(&v).unwrap();
    assert_eq!(cfg.rope.long_rope.unwrap().long_factor, vec![4.0, 4.0]);
    // A non-empty rope_scaling wins over rope_parameters.
    let mut v = tiny_config();
    v["rope_parameters"] = json!({"rope_type": "default"});
    assert!(parse(&v).unwrap().rope.long_rope.is_some());
    // rope_theta inside the dict wins over the top-level one.
    let mut v = tiny_config();
    v["rope_scaling"]["rope_theta"] = json!(777.0);
    assert_eq!(parse(&v).unwrap().rope.theta, 777.0);
}

#[test]
fn original_max_position_embeddings_sources() {
    // Top level wins (HF gives it priority).
    let mut v = tiny_config();
    v["rope_scaling"]["original_max_position_embeddings"] = json!(32);
    assert_eq!(parse(&v).unwrap().long_rope_original_max(), Some(16));
    // Inside the dict when the top level has none.
    let mut v = without(tiny_config(), "original_max_position_embeddings");
    v["rope_scaling"]["original_max_position_embeddings"] = json!(32);
    assert_eq!(parse(&v).unwrap().long_rope_original_max(), Some(32));
    // Neither: HF's default 4096.
    let v = without(tiny_config(), "original_max_position_embeddings");
    assert_eq!(parse(&v).unwrap().long_rope_original_max(), Some(4096));
}

#[test]
fn partial_rotary_factor_is_rejected() {
    let v = with(tiny_config(), "partial_rotary_factor", json!(0.5));
    let err = parse(&v).unwrap_err();
    assert!(matches!(err, ConfigError::UnsupportedPartialRotary { value } if value == 0.5));
    assert!(
        err.to_string().contains("partial_rotary_factor 0.5"),
        "{err}"
    );
    let mut v = tiny_config();
    v["rope_scaling"]["partial_rotary_factor"] = json!(0.75);
    assert!(matches!(
        parse(&v),
        Err(ConfigError::UnsupportedPartialRotary { .. })
    ));
    // 1.0 is fine.
    assert!(parse(&with(tiny_config(), "partial_rotary_factor", json!(1.0))).is_ok());
}

#[test]
fn missing_required_fields_are_named() {
    for field in [
        "hidden_size",
        "num_attention_heads",
        "num_hidden_layers",
        "intermediate_size",
        "vocab_size",
    ] {
        let err = parse(&without(tiny_config(), field)).unwrap_err();
        match &err {
            ConfigError::MissingField { field: f } => assert_eq!(*f, field),
            other => panic!("{field}: {other:?}"),
        }
        assert!(err.to_string().contains(field), "{err}");
    }
}

#[test]
fn zero_or_negative_sizes_are_named() {
    for field in [
        "hidden_size",
        "num_attention_heads",
        "num_key_value_heads",
        "num_hidden_layers",
        "intermediate_size",
        "vocab_size",
        "max_position_embeddings",
        "original_max_position_embeddings",
        "sliding_window",
    ] {
        for value in [0i64, -4] {
            let err = parse(&with(tiny_config(), field, json!(value))).unwrap_err();
            match &err {
                ConfigError::NonPositive {
                    field: f,
                    value: got,
                } => {
                    assert_eq!((*f, *got), (field, value))
                }
                other => panic!("{field}={value}: {other:?}"),
            }
            assert!(err.to_string().contains(field), "{err}");
        }
    }
    let err = parse(&with(tiny_config(), "hidden_size", json!(1i64 << 40))).unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::InvalidValue {
                field: "hidden_size",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn wrong_types_name_the_key() {
    let err = parse(&with(tiny_config(), "hidden_size", json!("8"))).unwrap_err();
    match &err {
        ConfigError::WrongType { field, .. } => assert_eq!(field, "hidden_size"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "config.json: field `hidden_size` has the wrong type: invalid type: string \"8\", \
         expected i64"
    );
    let mut v = tiny_config();
    v["rope_scaling"]["long_factor"] = json!([2.0, "x"]);
    match parse(&v).unwrap_err() {
        ConfigError::WrongType { field, .. } => assert_eq!(field, "rope_scaling.long_factor[1]"),
        other => panic!("{other:?}"),
    }
    let err = parse(&with(tiny_config(), "tie_word_embeddings", json!(1))).unwrap_err();
    assert!(matches!(err, ConfigError::WrongType { .. }), "{err:?}");
}

#[test]
fn not_json_or_not_an_object() {
    for text in ["{\"hidden_size\": 8", "[1, 2]", "", "hello"] {
        match Phi3Config::from_json_str(text) {
            Err(ConfigError::Json { file, .. }) => assert_eq!(file, "config.json"),
            other => panic!("{text:?}: {other:?}"),
        }
    }
    let err = Phi3Config::from_file(std::path::Path::new("/nonexistent/config.json")).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }));
}

#[test]
fn head_arithmetic_is_checked() {
    let err = parse(&with(tiny_config(), "num_attention_heads", json!(3))).unwrap_err();
    assert!(matches!(
        err,
        ConfigError::HiddenNotDivisibleByHeads {
            hidden_size: 8,
            heads: 3
        }
    ));
    let v = with(
        with(tiny_config(), "num_attention_heads", json!(4)),
        "num_key_value_heads",
        json!(3),
    );
    assert!(matches!(
        parse(&v),
        Err(ConfigError::HeadsNotDivisibleByKvHeads {
            heads: 4,
            kv_heads: 3
        })
    ));
    // hidden 6 / 2 heads = 3: odd head_dim.
    let v = with(
        with(tiny_config(), "hidden_size", json!(6)),
        "rope_scaling",
        Value::Null,
    );
    assert!(matches!(
        parse(&v),
        Err(ConfigError::OddHeadDim { head_dim: 3 })
    ));
    // An explicit head_dim need not divide hidden.
    let v = with(
        with(tiny_config(), "hidden_size", json!(10)),
        "head_dim",
        json!(4),
    );
    let cfg = parse(&v).unwrap();
    assert_eq!((cfg.head_dim(), cfg.q_size(), cfg.kv_size()), (4, 8, 4));
}

#[test]
fn factor_lists_must_match_head_dim() {
    for list in ["short_factor", "long_factor"] {
        let mut v = tiny_config();
        v["rope_scaling"][list] = json!([1.0, 1.0, 1.0]);
        let err = parse(&v).unwrap_err();
        match &err {
            ConfigError::FactorLength {
                list: l,
                expected,
                actual,
            } => {
                assert_eq!((*l, *expected, *actual), (list, 2, 3))
            }
            other => panic!("{other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains(list) && msg.contains("expected 2") && msg.contains("has 3"),
            "{msg}"
        );

        let mut v = tiny_config();
        v["rope_scaling"][list] = json!([1.0, -2.0]);
        assert!(matches!(
            parse(&v),
            Err(ConfigError::BadFactor { list: l, index: 1, .. }) if l == list
        ));

        let mut v = tiny_config();
        v["rope_scaling"].as_object_mut().unwrap().remove(list);
        assert!(matches!(
            parse(&v),
            Err(ConfigError::MissingRopeKey { key, .. }) if key == list
        ));
    }
}

#[test]
fn other_model_families_are_named() {
    let err = parse(&with(tiny_config(), "model_type", json!("llama"))).unwrap_err();
    assert!(
        matches!(&err, ConfigError::WrongModelType { model_type, .. } if model_type == "llama")
    );
    assert!(err.to_string().contains("`llama` model"), "{err}");
    // Absent model_type is accepted as phi3.
    assert_eq!(
        parse(&without(tiny_config(), "model_type"))
            .unwrap()
            .model_type,
        "phi3"
    );
}

#[test]
fn optional_keys_and_their_defaults() {
    let cfg = parse(&tiny_config()).unwrap();
    assert_eq!(cfg.sliding_window, None);
    assert_eq!(cfg.num_key_value_heads, 1);
    assert_eq!(cfg.eos_token_ids, vec![2]);
    let v = without(
        without(tiny_config(), "num_key_value_heads"),
        "rms_norm_eps",
    );
    let cfg = parse(&v).unwrap();
    assert_eq!(cfg.num_key_value_heads, 2, "defaults to the query heads");
    assert_eq!(cfg.rms_norm_eps, 1e-5);
    let cfg = parse(&with(tiny_config(), "sliding_window", json!(2047))).unwrap();
    assert_eq!(cfg.sliding_window, Some(2047));
    let cfg = parse(&with(tiny_config(), "eos_token_id", json!([2, 5]))).unwrap();
    assert_eq!(cfg.eos_token_ids, vec![2, 5]);
    let untied = parse(&tiny_config()).unwrap();
    let tied = parse(&with(tiny_config(), "tie_word_embeddings", json!(true))).unwrap();
    assert!(tied.tie_word_embeddings);
    assert_eq!(untied.parameter_count() - tied.parameter_count(), 16 * 8);
}

#[test]
fn bad_floats_and_activations() {
    let err = parse(&with(tiny_config(), "rms_norm_eps", json!(-1e-5))).unwrap_err();
    assert!(matches!(
        err,
        ConfigError::InvalidValue {
            field: "rms_norm_eps",
            ..
        }
    ));
    let err = parse(&with(tiny_config(), "rope_theta", json!(0.0))).unwrap_err();
    assert!(matches!(
        err,
        ConfigError::InvalidValue {
            field: "rope_theta",
            ..
        }
    ));
    let mut v = tiny_config();
    v["rope_scaling"]["attention_factor"] = json!(-1.0);
    assert!(matches!(
        parse(&v),
        Err(ConfigError::InvalidValue {
            field: "attention_factor",
            ..
        })
    ));
    let err = parse(&with(tiny_config(), "hidden_act", json!("gelu"))).unwrap_err();
    assert!(matches!(&err, ConfigError::UnsupportedActivation { act } if act == "gelu"));
}

/// Numbers that would make the f32 RoPE tables NaN or infinite are refused (the fuzzer found
/// a subnormal factor, a subnormal theta and an original context of 1: fuzz/regressions/).
#[test]
fn rope_numbers_that_break_f32_tables() {
    let mut v = tiny_config();
    v["rope_scaling"]["long_factor"] = json!([1e-310, 3.0]);
    let err = parse(&v).unwrap_err();
    assert!(
        matches!(err, ConfigError::BadFactor { list: "long_factor", index: 0, value } if value == 1e-310),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "config.json: rope `long_factor`[0] = 1e-310 is outside [0.001, 1e6]; LongRoPE factors \
         are positive frequency divisors (Phi-3 uses 1 to about 60)"
    );
    let mut v = tiny_config();
    v["rope_scaling"]["short_factor"] = json!([1.0, 1e300]);
    assert!(matches!(
        parse(&v),
        Err(ConfigError::BadFactor {
            list: "short_factor",
            index: 1,
            ..
        })
    ));

    for theta in [1e-310, 1e-4, 1e31] {
        let err = parse(&with(tiny_config(), "rope_theta", json!(theta))).unwrap_err();
        assert!(
            matches!(err, ConfigError::InvalidValue { field: "rope_theta", value, .. } if value == theta),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .ends_with("is invalid: a number between 1e-3 and 1e30 (Phi-3 uses 10000)"),
            "{err}"
        );
    }

    let err = parse(&with(
        tiny_config(),
        "original_max_position_embeddings",
        json!(1),
    ))
    .unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::InvalidValue {
                field: "original_max_position_embeddings",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(
            "`original_max_position_embeddings` = 1 is invalid: at least 2 when LongRoPE extends \
             the context"
        ),
        "{err}"
    );
    // An explicit attention factor, or no extension (scale 1), makes an original context of 1
    // usable.
    let mut v = with(tiny_config(), "original_max_position_embeddings", json!(1));
    v["rope_scaling"]["attention_factor"] = json!(1.2);
    parse(&v).unwrap();
    let v = with(
        with(tiny_config(), "original_max_position_embeddings", json!(1)),
        "max_position_embeddings",
        json!(1),
    );
    parse(&v).unwrap();

    let mut v = tiny_config();
    v["rope_scaling"]["attention_factor"] = json!(1e7);
    assert!(matches!(
        parse(&v),
        Err(ConfigError::InvalidValue {
            field: "attention_factor",
            ..
        })
    ));
    let err = parse(&with(tiny_config(), "rms_norm_eps", json!(1e-50))).unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::InvalidValue {
                field: "rms_norm_eps",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("a number between 1e-30 and 1 (typically 1e-5)"),
        "{err}"
    );
}
