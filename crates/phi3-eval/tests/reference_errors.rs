//! Every way a reference is refused, with its error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::{SHA_A, reference};
use phi3_eval::fingerprint::sha256_hex;
use phi3_eval::{Reference, ReferenceError, model_fingerprint};
use serde_json::{Value, json};

fn valid() -> Reference {
    reference(
        &[10, 11, 12],
        &[20, 21],
        2,
        32,
        Some(&[[20, 1, 2, 3, 4], [21, 1, 2, 3, 4]]),
    )
}

fn valid_json() -> Value {
    serde_json::from_str(&valid().to_json_pretty()).unwrap()
}

fn parse(v: &Value) -> Result<Reference, ReferenceError> {
    Reference::from_json(&v.to_string())
}

fn inconsistent(edit: impl FnOnce(&mut Value)) -> String {
    let mut v = valid_json();
    edit(&mut v);
    match parse(&v) {
        Err(ReferenceError::Inconsistent { reason }) => reason,
        other => panic!("expected Inconsistent, got {other:?}"),
    }
}

#[test]
fn a_valid_reference_round_trips() {
    let r = parse(&valid_json()).unwrap();
    assert_eq!(r, valid());
    assert_eq!(r.full_sequence(), vec![10, 11, 12, 20, 21]);
    assert_eq!(r.hf_top5_ids(1), Some(&[21, 1, 2, 3, 4][..]));
    assert_eq!(r.decode_len(), 2);
}

#[test]
fn bad_json() {
    let e = Reference::from_json("{\"format\": ").unwrap_err();
    assert!(matches!(e, ReferenceError::BadJson(_)), "{e}");
    assert!(e.to_string().starts_with("the reference is not valid JSON"));
}

#[test]
fn not_a_reference() {
    let e = Reference::from_json("{\"hello\": 1}").unwrap_err();
    assert!(
        matches!(&e, ReferenceError::NotAReference { found } if found == "null"),
        "{e}"
    );
    let mut v = valid_json();
    v["format"] = json!("safetensors-index");
    let e = parse(&v).unwrap_err();
    assert_eq!(
        e.to_string(),
        "not an eval reference: \"format\" is \"safetensors-index\", expected \"tt-phi3-eval-reference\""
    );
}

#[test]
fn wrong_version() {
    for (bad, shown) in [
        (json!(2), "2"),
        (json!("1"), "\"1\""),
        (json!(0), "0"),
        (Value::Null, "null"),
    ] {
        let mut v = valid_json();
        v["version"] = bad;
        let e = parse(&v).unwrap_err();
        assert!(
            matches!(&e, ReferenceError::UnsupportedVersion { found } if found == shown),
            "{e}"
        );
    }
    let mut v = valid_json();
    v["version"] = json!(2);
    assert!(
        parse(&v)
            .unwrap_err()
            .to_string()
            .contains("version 2 is not supported")
    );
}

#[test]
fn malformed_fields_name_their_path() {
    let mut v = valid_json();
    v["generated_tokens"][1] = json!("x");
    let e = parse(&v).unwrap_err();
    match &e {
        ReferenceError::Malformed { path, .. } => assert_eq!(path, "generated_tokens[1]"),
        e => panic!("{e}"),
    }
    assert_eq!(
        e.to_string(),
        "malformed reference at `generated_tokens[1]`: invalid type: string \"x\", expected u32"
    );
    let mut v = valid_json();
    v.as_object_mut().unwrap().remove("model");
    assert!(matches!(parse(&v), Err(ReferenceError::Malformed { .. })));
}

#[test]
fn inconsistent_fields() {
    assert!(
        inconsistent(|v| v["prompt_len"] = json!(4))
            .contains("prompt_len is 4 but prompt_tokens has 3")
    );
    assert!(inconsistent(|v| v["prompt_tokens"] = json!([])).contains("prompt is empty"));
    assert!(
        inconsistent(|v| v["max_new_tokens"] = json!(1))
            .contains("2 generated tokens but max_new_tokens is 1")
    );
    assert!(
        inconsistent(|v| v["generated_tokens"] = json!([])).contains("generated_tokens is empty")
    );
    assert!(
        inconsistent(|v| v["prompt_tokens"][0] = json!(32))
            .contains("outside the vocabulary of 32")
    );
    assert!(inconsistent(|v| v["model"]["sha256"] = json!("ABC")).contains("model.sha256"));
    assert!(
        inconsistent(|v| v["tokenizer"]["sha256"] = json!(SHA_A.to_uppercase()))
            .contains("tokenizer.sha256")
    );
    assert!(
        inconsistent(|v| v["hf_top5"].as_array_mut().unwrap().truncate(1))
            .contains("hf_top5 has 1 steps")
    );
    assert!(
        inconsistent(|v| v["hf_top5"][0]["ids"] = json!([1, 20, 2, 3, 4]))
            .contains("ranks Some(1) first")
    );
    assert!(inconsistent(|v| v["hf_top5"][0]["ids"] = json!([20, 1, 2, 3])).contains("has 4 ids"));
    assert!(
        inconsistent(|v| v["hf_top5"][0]["ids"] = json!([20, 1, 1, 3, 4])).contains("repeats id 1")
    );
    assert!(
        inconsistent(|v| v["hf_top5"][0]["logits"] = json!([1.0, 2.0, 0.0, 0.0, 0.0]))
            .contains("decreasing")
    );
    assert!(
        inconsistent(|v| v["hf_top5"][0]["probs"] = json!([1.0])).contains("1 probs for 5 ids")
    );
}

/// Numbers beyond f32's range parse as infinity (and would be written back as null): refused.
/// The fuzzer found this (fuzz/regressions/reference/).
#[test]
fn logits_and_probabilities_out_of_range() {
    let mut v = valid_json();
    v["hf_top5"][0]["logits"] = json!([1e39, 2.0, 1.0, 0.0, -1.0]);
    let reason = match parse(&v) {
        Err(ReferenceError::Inconsistent { reason }) => reason,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        reason,
        "hf_top5[0] has logit inf, which is not a finite f32"
    );
    assert_eq!(
        parse(&v).unwrap_err().to_string(),
        "inconsistent reference: hf_top5[0] has logit inf, which is not a finite f32"
    );
    assert_eq!(
        inconsistent(|v| v["hf_top5"][1]["probs"] = json!([0.5, 1.5, 0.0, 0.0, 0.0])),
        "hf_top5[1] has probability 1.5, outside [0, 1]"
    );
    assert_eq!(
        inconsistent(|v| v["hf_top5"][1]["probs"] = json!([0.5, -0.1, 0.0, 0.0, 0.0])),
        "hf_top5[1] has probability -0.1, outside [0, 1]"
    );
}

fn write_model(dir: &Path, weights: &[u8]) {
    std::fs::write(dir.join("config.json"), b"{\"vocab_size\": 32}").unwrap();
    std::fs::write(dir.join("model-00001-of-00001.safetensors"), weights).unwrap();
}

#[test]
fn a_reference_for_another_model_is_refused() {
    let ours = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    write_model(ours.path(), b"weights of ours");
    write_model(other.path(), b"weights of another");
    let mut r = valid();
    r.model.sha256 = model_fingerprint(ours.path()).unwrap();
    r.check_model_dir(ours.path()).unwrap();

    let e = r.check_model_dir(other.path()).unwrap_err();
    match &e {
        ReferenceError::ModelMismatch {
            reference_model,
            expected,
            found,
            dir,
        } => {
            assert_eq!(reference_model, "test/model");
            assert_eq!(expected, &r.model.sha256);
            assert_eq!(found, &model_fingerprint(other.path()).unwrap());
            assert_eq!(dir, other.path());
        }
        e => panic!("{e}"),
    }
    assert!(
        e.to_string()
            .starts_with("the reference was made for another model")
    );

    // The config counts too.
    std::fs::write(ours.path().join("config.json"), b"{\"vocab_size\": 33}").unwrap();
    assert!(matches!(
        r.check_model_dir(ours.path()),
        Err(ReferenceError::ModelMismatch { .. })
    ));
}

#[test]
fn a_reference_for_another_tokenizer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tokenizer.json");
    std::fs::write(&tok, b"{\"model\": {}}").unwrap();
    let mut r = valid();
    r.tokenizer.sha256 = sha256_hex(b"{\"model\": {}}");
    r.check_tokenizer_file(&tok).unwrap();
    std::fs::write(&tok, b"{\"model\": {\"x\": 1}}").unwrap();
    let e = r.check_tokenizer_file(&tok).unwrap_err();
    assert!(matches!(e, ReferenceError::TokenizerMismatch { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("the reference was made with another tokenizer")
    );
}

#[test]
fn another_prompt_is_refused() {
    let r = valid();
    r.check_prompt(&[10, 11, 12]).unwrap();
    let e = r.check_prompt(&[10, 99, 12]).unwrap_err();
    assert!(
        matches!(
            e,
            ReferenceError::PromptMismatch {
                index: 1,
                expected: Some(11),
                found: Some(99)
            }
        ),
        "{e}"
    );
    let e = r.check_prompt(&[10, 11]).unwrap_err();
    assert!(
        matches!(
            e,
            ReferenceError::PromptMismatch {
                index: 2,
                expected: Some(12),
                found: None
            }
        ),
        "{e}"
    );
}

#[test]
fn missing_file() {
    let e = Reference::load(Path::new("/nonexistent/eval_reference.json")).unwrap_err();
    assert!(matches!(e, ReferenceError::Io { .. }), "{e}");
}
