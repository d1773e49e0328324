//! `GenerationConfig` parsing.

use phi3_model::{ConfigError, GenerationConfig, Phi3Config};

use crate::support::{repo_root, tiny_config};

#[test]
fn phi3_generation_config_fixture() {
    let g = GenerationConfig::from_file(
        &repo_root().join("fixtures/phi3-tokenizer/generation_config.json"),
    )
    .unwrap();
    assert_eq!(g.eos_token_ids, vec![32000, 32001, 32007]);
    assert_eq!(g.bos_token_id, Some(1));
    assert_eq!(g.pad_token_id, Some(32000));
    assert!(!g.do_sample);
    assert!(g.is_stop_token(32007) && !g.is_stop_token(32010));
}

#[test]
fn single_eos_and_sampling_defaults() {
    let g = GenerationConfig::from_json_str(
        r#"{"eos_token_id": 7, "do_sample": true, "temperature": 0.7, "top_k": 40,
            "top_p": 0.9, "max_length": 128, "max_new_tokens": 32, "transformers_version": "5"}"#,
    )
    .unwrap();
    assert_eq!(g.eos_token_ids, vec![7]);
    assert!(g.do_sample);
    assert_eq!(
        (
            g.temperature,
            g.top_k,
            g.top_p,
            g.max_length,
            g.max_new_tokens
        ),
        (Some(0.7), Some(40), Some(0.9), Some(128), Some(32))
    );
    let empty = GenerationConfig::from_json_str("{}").unwrap();
    assert_eq!(empty, GenerationConfig::default());
}

#[test]
fn generation_config_errors() {
    match GenerationConfig::from_json_str(r#"{"eos_token_id": "x"}"#) {
        Err(ConfigError::WrongType { file, field, .. }) => {
            assert_eq!(
                (file, field.as_str()),
                ("generation_config.json", "eos_token_id")
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        GenerationConfig::from_json_str(r#"{"eos_token_id": -1}"#),
        Err(ConfigError::WrongType { .. })
    ));
    assert!(matches!(
        GenerationConfig::from_json_str("{"),
        Err(ConfigError::Json {
            file: "generation_config.json",
            ..
        })
    ));
}

#[test]
fn fallback_from_model_config() {
    let cfg = Phi3Config::from_json_str(&tiny_config().to_string()).unwrap();
    let g = tt_hf::ModelConfig::generation_defaults(&cfg);
    assert_eq!(
        (g.bos_token_id, g.eos_token_ids.clone(), g.pad_token_id),
        (Some(1), vec![2], Some(0))
    );
    assert!(!g.do_sample);
}
