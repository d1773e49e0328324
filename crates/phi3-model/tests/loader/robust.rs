//! Byte-mutation properties: corrupt headers, indexes and configs give errors, never panics,
//! and any header that is accepted only points inside its file.

use std::path::Path;

use phi3_model::Phi3Config;
use phi3_model::checkpoint::{parse_header, parse_index};
use proptest::prelude::*;

use crate::support::{RawTensor, tiny_config, write_safetensors};

fn valid_file() -> Vec<u8> {
    static FILE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    FILE.get_or_init(write_valid_file).clone()
}

fn write_valid_file() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    write_safetensors(
        &path,
        &[
            RawTensor::bf16("a", &[2, 3], &[1.0; 6]),
            RawTensor::f32("b", &[4], &[2.0; 4]),
            RawTensor::f16("c", &[1, 1], &[3.0]),
        ],
    );
    std::fs::read(&path).unwrap()
}

/// (position, new byte) edits applied to a valid file, plus an optional cut.
fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    for &(pos, b) in edits {
        let n = bytes.len();
        bytes[pos % n] = b;
    }
    if let Some(c) = cut {
        bytes.truncate(c % (bytes.len() + 1));
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn mutated_safetensors_never_panic(
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in prop::option::of(any::<usize>()),
    ) {
        let bytes = mutate(valid_file(), &edits, cut);
        if let Ok(records) = parse_header(Path::new("fuzz"), &bytes) {
            let mut ranges: Vec<_> = records.iter().map(|r| r.bytes.clone()).collect();
            ranges.sort_by_key(|r| r.start);
            for r in &ranges {
                prop_assert!(r.end <= bytes.len());
                prop_assert_eq!(r.len(), records.iter().find(|x| x.bytes == *r).unwrap().info.byte_len());
            }
            for w in ranges.windows(2) {
                prop_assert!(w[0].is_empty() || w[1].is_empty() || w[0].end <= w[1].start);
            }
        }
    }

    #[test]
    fn mutated_configs_never_panic(
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in prop::option::of(any::<usize>()),
    ) {
        let text = tiny_config().to_string().into_bytes();
        let bytes = mutate(text, &edits, cut);
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(cfg) = Phi3Config::from_json_str(&text) {
            // Accepted configs satisfy every invariant the model relies on.
            prop_assert!(cfg.head_dim() % 2 == 0);
            prop_assert_eq!(cfg.num_attention_heads % cfg.num_key_value_heads, 0);
            if let Some(l) = &cfg.rope.long_rope {
                prop_assert_eq!(l.short_factor.len(), cfg.head_dim() / 2);
                prop_assert_eq!(l.long_factor.len(), cfg.head_dim() / 2);
            }
            let _ = cfg.parameter_count();
            let _ = phi3_model::RopeTables::new(&cfg.rope_spec());
        }
    }

    #[test]
    fn arbitrary_json_values_never_panic(size in any::<i64>(), factor in any::<f64>(), name in ".{0,12}") {
        let mut v = tiny_config();
        v["hidden_size"] = serde_json::json!(size);
        v["rope_scaling"]["long_factor"] = serde_json::json!([factor, 1.0]);
        v["rope_scaling"]["type"] = serde_json::json!(name);
        let _ = Phi3Config::from_json_str(&v.to_string());
        let index = serde_json::json!({"weight_map": {"a": name}});
        let _ = parse_index(Path::new("fuzz"), &index.to_string());
    }
}

#[test]
fn checkpoint_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<phi3_model::Checkpoint>();
    assert_send_sync::<phi3_model::RopeTables>();
    assert_send_sync::<phi3_model::Phi3Tokenizer>();
}
