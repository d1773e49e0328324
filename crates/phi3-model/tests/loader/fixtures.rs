//! The committed HF fixtures (fixtures/phi3-tiny*/, written by scripts/make_fixtures.py):
//! each opens as a sharded checkpoint, passes the Phi-3 tensor check, and its RoPE tables
//! match HF's `reference/rope.safetensors`.
use phi3_model::Phi3Tensors;

use std::path::{Path, PathBuf};

use phi3_model::checkpoint::parse_header;
use phi3_model::{Checkpoint, Dtype, RopeTables, RopeVariant};

use crate::support::repo_root;

fn fixture_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(repo_root().join("fixtures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("phi3-tiny")
                && p.join("reference/rope.safetensors").is_file()
        })
        .collect();
    dirs.sort();
    assert!(
        dirs.iter().any(|d| d.ends_with("phi3-tiny")),
        "fixtures/phi3-tiny with reference/rope.safetensors is missing"
    );
    dirs
}

/// All F32 tensors of a reference file, by name.
fn read_f32_tensors(path: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    parse_header(path, &bytes)
        .unwrap()
        .into_iter()
        .map(|rec| {
            assert_eq!(rec.info.dtype, Dtype::F32);
            let data = bytes[rec.bytes.clone()]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (rec.name, rec.info.shape, data)
        })
        .collect()
}

#[test]
fn fixture_checkpoints_open_and_have_every_tensor() {
    for dir in fixture_dirs() {
        let ck = Checkpoint::open(dir.to_str().unwrap()).unwrap();
        ck.check_phi3_tensors()
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        assert!(!ck.files().is_empty());
        assert!(
            !ck.generation_config().eos_token_ids.is_empty(),
            "{}",
            dir.display()
        );
        // Every tensor can be read whole, and its values are finite.
        for name in ck.tensor_names() {
            let values: Vec<f32> = ck.read_all(name).unwrap();
            assert!(values.iter().all(|v| v.is_finite()), "{name}");
        }
    }
}

#[test]
fn rope_tables_match_hf_fixtures() {
    for dir in fixture_dirs() {
        let ck = Checkpoint::open(dir.to_str().unwrap()).unwrap();
        let tables = RopeTables::new(&ck.config().rope_spec());
        let meta: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("reference/rope.json")).unwrap(),
        )
        .unwrap();
        let hf_factor = meta["attention_factor"].as_f64().unwrap();
        assert!(
            (tables.attention_factor() - hf_factor).abs() < 1e-15,
            "{}",
            dir.display()
        );
        let tensors = read_f32_tensors(&dir.join("reference/rope.safetensors"));
        let get = |name: &str| {
            tensors
                .iter()
                .find(|t| t.0 == name)
                .unwrap_or_else(|| panic!("{}: no {name}", dir.display()))
        };
        let (mut differ, mut total) = (0, 0);
        for (suffix, variant) in [("short", RopeVariant::Short), ("long", RopeVariant::Long)] {
            let (_, _, hf_inv) = get(&format!("inv_freq_{suffix}"));
            let ours = tables.inv_freq(variant);
            assert_eq!(ours.len(), hf_inv.len());
            let n_inv = ours.iter().zip(hf_inv).filter(|(a, b)| a != b).count();
            println!(
                "{} {suffix}: {n_inv}/{} inv_freq differ by 1 ulp",
                dir.display(),
                ours.len()
            );
            for (a, b) in ours.iter().zip(hf_inv) {
                let ulps = (a.to_bits() as i64 - b.to_bits() as i64).abs();
                assert!(ulps <= 1, "{} {suffix}: {a} vs {b}", dir.display());
            }
            let (_, shape, hf_cos) = get(&format!("cos_{suffix}"));
            let (_, _, hf_sin) = get(&format!("sin_{suffix}"));
            let positions: Vec<usize> = (0..shape[0]).collect();
            let cs = tables.cos_sin(variant, &positions);
            assert_eq!(cs.head_dim, shape[1]);
            for (ours, hf) in [(&cs.cos, hf_cos), (&cs.sin, hf_sin)] {
                for (a, b) in ours.iter().zip(hf) {
                    assert!(
                        (a - b).abs() <= 2e-6,
                        "{} {suffix}: {a} vs {b}",
                        dir.display()
                    );
                    differ += usize::from(a != b);
                    total += 1;
                }
            }
        }
        assert!(
            differ * 20 <= total,
            "{}: {differ}/{total} differ",
            dir.display()
        );
        println!(
            "{}: {differ}/{total} cos/sin values differ from HF",
            dir.display()
        );
    }
}
