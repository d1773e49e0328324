//! Opens every committed fixture (config.json, generation_config.json, the shard index, every tensor
//! of every shard, every reference file) and checks names, shapes and dtypes against the fixture's
//! own config, plus the few cross-checks a file set can carry by itself (embedding rows, the
//! logits head, the RoPE tables against their formula). No Python needed: see fixtures/README.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use half::bf16;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

/// Models that must exist (each also has its own test below for what makes it special).
const MODELS: [&str; 4] = [
    "phi3-tiny",
    "phi3-tiny-gqa",
    "phi3-tiny-window",
    "phi3-tiny-tied",
];
const TOTAL_BUDGET: u64 = 20_000_000;
const FILE_BUDGET: u64 = 8 * 1024 * 1024;
/// HF itself run in bf16 must track the fp32 logits at least this well (make_fixtures.py's gate).
const MIN_HF_BF16_PCC: f64 = 0.9985;
/// Peaked predictions: flat logits make bf16 comparisons (and greedy margins) meaningless.
const MIN_MAX_ABS_LOGIT: f64 = 10.0;

/// The repository's fixtures/, or `$PHI3_FIXTURES_DIR` (to check a freshly generated copy).
fn fixtures_dir() -> PathBuf {
    match std::env::var_os("PHI3_FIXTURES_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures"),
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&read(path))
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn usize_of(v: &Value, key: &str) -> usize {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing or not an unsigned integer")) as usize
}

fn f64_list(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("a JSON array")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

fn id_list(v: &Value) -> Vec<i64> {
    v.as_array()
        .expect("a JSON array")
        .iter()
        .map(|x| x.as_i64().expect("an integer"))
        .collect()
}

/// What a test needs from config.json, read from either layout: the published Phi-3 one
/// (`rope_scaling.type`, top-level `rope_theta`) or the transformers 5.x one (`rope_parameters`).
#[derive(Debug)]
struct Cfg {
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    layers: usize,
    inter: usize,
    vocab: usize,
    tied: bool,
    window: Option<usize>,
    original_max: usize,
    max_pos: usize,
    theta: f64,
    short: Vec<f64>,
    long: Vec<f64>,
}

fn parse_config(v: &Value) -> Cfg {
    assert_eq!(v["model_type"], "phi3");
    assert_eq!(v["architectures"][0], "Phi3ForCausalLM");
    let hidden = usize_of(v, "hidden_size");
    let heads = usize_of(v, "num_attention_heads");
    let (rope, theta) = if v["rope_scaling"].is_object() {
        assert!(
            v["rope_parameters"].is_null(),
            "both rope_scaling and rope_parameters"
        );
        (
            &v["rope_scaling"],
            v["rope_theta"].as_f64().expect("rope_theta"),
        )
    } else {
        let rp = &v["rope_parameters"];
        (
            rp,
            rp["rope_theta"]
                .as_f64()
                .expect("rope_parameters.rope_theta"),
        )
    };
    let kind = rope["rope_type"].as_str().or(rope["type"].as_str());
    assert_eq!(kind, Some("longrope"), "rope type");
    let original_max = usize_of(v, "original_max_position_embeddings");
    if let Some(inner) = rope["original_max_position_embeddings"].as_u64() {
        assert_eq!(inner as usize, original_max);
    }
    Cfg {
        hidden,
        heads,
        kv_heads: v["num_key_value_heads"]
            .as_u64()
            .map_or(heads, |n| n as usize),
        head_dim: v["head_dim"]
            .as_u64()
            .map_or(hidden / heads, |n| n as usize),
        layers: usize_of(v, "num_hidden_layers"),
        inter: usize_of(v, "intermediate_size"),
        vocab: usize_of(v, "vocab_size"),
        tied: v["tie_word_embeddings"].as_bool().unwrap_or(false),
        window: v["sliding_window"].as_u64().map(|n| n as usize),
        original_max,
        max_pos: usize_of(v, "max_position_embeddings"),
        theta,
        short: f64_list(&rope["short_factor"]),
        long: f64_list(&rope["long_factor"]),
    }
}

/// Every weight the config implies, with its shape.
fn expected_weights(c: &Cfg) -> BTreeMap<String, Vec<usize>> {
    let (h, dh) = (c.hidden, c.head_dim);
    let mut m = BTreeMap::new();
    m.insert("model.embed_tokens.weight".into(), vec![c.vocab, h]);
    m.insert("model.norm.weight".into(), vec![h]);
    if !c.tied {
        m.insert("lm_head.weight".into(), vec![c.vocab, h]);
    }
    for i in 0..c.layers {
        let p = format!("model.layers.{i}");
        let qkv = (c.heads + 2 * c.kv_heads) * dh;
        m.insert(format!("{p}.self_attn.qkv_proj.weight"), vec![qkv, h]);
        m.insert(
            format!("{p}.self_attn.o_proj.weight"),
            vec![h, c.heads * dh],
        );
        m.insert(format!("{p}.mlp.gate_up_proj.weight"), vec![2 * c.inter, h]);
        m.insert(format!("{p}.mlp.down_proj.weight"), vec![h, c.inter]);
        m.insert(format!("{p}.input_layernorm.weight"), vec![h]);
        m.insert(format!("{p}.post_attention_layernorm.weight"), vec![h]);
    }
    m
}

fn f32s(st: &SafeTensors<'_>, name: &str, shape: &[usize]) -> Vec<f32> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), Dtype::F32, "{name} dtype");
    assert_eq!(t.shape(), shape, "{name} shape");
    let v: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert!(
        v.iter().all(|x| x.is_finite()),
        "{name} has non-finite values"
    );
    v
}

fn i64s(st: &SafeTensors<'_>, name: &str, len: usize, vocab: usize) -> Vec<i64> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), Dtype::I64, "{name} dtype (token ids are I64)");
    assert_eq!(t.shape(), [len], "{name} shape");
    let v: Vec<i64> = t
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert!(
        v.iter().all(|&x| (0..vocab as i64).contains(&x)),
        "{name} ids out of range"
    );
    v
}

fn names(st: &SafeTensors<'_>) -> BTreeSet<String> {
    st.names().into_iter().map(String::from).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Loaded bf16 weights widened to f32, by name.
type Weights = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Index, shards and every tensor: names, dtypes and shapes exactly as the config implies.
fn check_checkpoint(dir: &Path, c: &Cfg) -> Weights {
    let index = read_json(&dir.join("model.safetensors.index.json"));
    let map = index["weight_map"].as_object().expect("weight_map");
    let shards: BTreeSet<&str> = map
        .values()
        .map(|s| s.as_str().expect("shard name"))
        .collect();
    assert_eq!(
        shards.len(),
        2,
        "weights must span exactly two shards: {shards:?}"
    );
    let on_disk: BTreeSet<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    let listed: BTreeSet<String> = shards.iter().map(|s| s.to_string()).collect();
    assert_eq!(on_disk, listed, "shard files on disk vs index");

    let expected = expected_weights(c);
    let mut weights = Weights::new();
    let mut total_bytes = 0usize;
    for shard in &shards {
        let bytes = read(&dir.join(shard));
        let st = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{shard}: {e}"));
        assert!(!st.is_empty(), "{shard} is empty");
        for (name, t) in st.tensors() {
            assert_eq!(
                map.get(&name).and_then(Value::as_str),
                Some(*shard),
                "index entry of {name}"
            );
            let shape = expected
                .get(&name)
                .unwrap_or_else(|| panic!("unexpected tensor {name} in {shard}"));
            assert_eq!(t.shape(), shape.as_slice(), "{name} shape");
            assert_eq!(t.dtype(), Dtype::BF16, "{name} dtype");
            total_bytes += t.data().len();
            let v: Vec<f32> = t
                .data()
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect();
            assert!(
                v.iter().all(|x| x.is_finite()),
                "{name} has non-finite values"
            );
            assert!(
                weights
                    .insert(name.clone(), (t.shape().to_vec(), v))
                    .is_none(),
                "{name} twice"
            );
        }
    }
    let found: BTreeSet<&String> = weights.keys().collect();
    let want: BTreeSet<&String> = expected.keys().collect();
    assert_eq!(
        found, want,
        "tensors in the shards vs tensors the config implies"
    );
    assert_eq!(
        map.len(),
        weights.len(),
        "index lists tensors that no shard holds"
    );
    assert_eq!(
        weights.contains_key("lm_head.weight"),
        !c.tied,
        "lm_head present iff not tied"
    );
    assert_eq!(
        index["metadata"]["total_size"].as_u64(),
        Some(total_bytes as u64),
        "index metadata.total_size"
    );
    weights
}

fn check_generation_config(dir: &Path, c: &Cfg) -> Vec<i64> {
    let g = read_json(&dir.join("generation_config.json"));
    let eos = match &g["eos_token_id"] {
        Value::Array(_) => id_list(&g["eos_token_id"]),
        v => vec![v.as_i64().expect("eos_token_id")],
    };
    assert!(!eos.is_empty());
    for id in eos.iter().chain(g["bos_token_id"].as_i64().iter()) {
        assert!(
            (0..c.vocab as i64).contains(id),
            "special id {id} outside the vocabulary"
        );
    }
    eos
}

/// logits.safetensors; returns (short ids, short logits).
fn check_logits(ref_dir: &Path, c: &Cfg) -> (Vec<i64>, Vec<f32>) {
    let bytes = read(&ref_dir.join("logits.safetensors"));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let want = set(&[
        "short.input_ids",
        "short.logits",
        "long.input_ids",
        "long.logits",
    ]);
    assert_eq!(names(&st), want);
    let short_len = st.tensor("short.input_ids").unwrap().shape()[0];
    let long_len = st.tensor("long.input_ids").unwrap().shape()[0];
    assert!(
        short_len > 1 && short_len <= c.original_max,
        "short sequence must use short factors"
    );
    assert!(
        long_len > c.original_max && long_len <= c.max_pos,
        "long sequence must use long factors"
    );
    let ids = i64s(&st, "short.input_ids", short_len, c.vocab);
    let logits = f32s(&st, "short.logits", &[short_len, c.vocab]);
    i64s(&st, "long.input_ids", long_len, c.vocab);
    let long = f32s(&st, "long.logits", &[long_len, c.vocab]);
    for (seq, v) in [("short", &logits), ("long", &long)] {
        let peak = v.iter().fold(0f64, |m, x| m.max(f64::from(x.abs())));
        assert!(
            peak >= MIN_MAX_ABS_LOGIT,
            "{seq} logits too flat: max |logit| {peak}"
        );
    }
    (ids, logits)
}

/// hidden.safetensors: embed, layer.<i>, final_norm; the embed rows must be the checkpoint's rows
/// and final_norm times lm_head must give the short logits.
fn check_hidden(ref_dir: &Path, c: &Cfg, w: &Weights, short_ids: &[i64], short_logits: &[f32]) {
    let bytes = read(&ref_dir.join("hidden.safetensors"));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut want = vec!["input_ids".to_string(), "embed".into(), "final_norm".into()];
    want.extend((0..c.layers).map(|i| format!("layer.{i}")));
    assert_eq!(names(&st), want.into_iter().collect());
    let t = short_ids.len();
    let ids = i64s(&st, "input_ids", t, c.vocab);
    assert_eq!(ids, short_ids, "hidden states are for the short sequence");
    let h = c.hidden;
    for i in 0..c.layers {
        f32s(&st, &format!("layer.{i}"), &[t, h]);
    }
    let embed = f32s(&st, "embed", &[t, h]);
    let table = &w["model.embed_tokens.weight"].1;
    for (p, &id) in ids.iter().enumerate() {
        let row = &table[id as usize * h..(id as usize + 1) * h];
        assert_eq!(&embed[p * h..(p + 1) * h], row, "embed row at position {p}");
    }
    let normed = f32s(&st, "final_norm", &[t, h]);
    let head = &w[if c.tied {
        "model.embed_tokens.weight"
    } else {
        "lm_head.weight"
    }]
    .1;
    let mut worst = 0f64;
    let scale = short_logits
        .iter()
        .fold(0f64, |m, x| m.max(f64::from(x.abs())));
    for p in 0..t {
        for v in 0..c.vocab {
            let dot: f64 = (0..h)
                .map(|k| f64::from(normed[p * h + k]) * f64::from(head[v * h + k]))
                .sum();
            worst = worst.max((dot - f64::from(short_logits[p * c.vocab + v])).abs());
        }
    }
    assert!(
        worst <= 1e-4 * scale,
        "final_norm x lm_head vs logits: {worst} (scale {scale})"
    );
}

fn check_rope(ref_dir: &Path, c: &Cfg) {
    let meta = read_json(&ref_dir.join("rope.json"));
    assert_eq!(meta["rope_type"], "longrope");
    assert_eq!(
        usize_of(&meta, "original_max_position_embeddings"),
        c.original_max
    );
    let s = c.max_pos as f64 / c.original_max as f64;
    let want_af = if s <= 1.0 {
        1.0
    } else {
        (1.0 + s.ln() / (c.original_max as f64).ln()).sqrt()
    };
    let af = meta["attention_factor"].as_f64().expect("attention_factor");
    assert!(
        (af - want_af).abs() < 1e-12,
        "attention factor {af} vs {want_af}"
    );

    let half = c.head_dim / 2;
    assert_eq!(c.short.len(), half, "short_factor length");
    assert_eq!(c.long.len(), half, "long_factor length");
    let bytes = read(&ref_dir.join("rope.safetensors"));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let want = set(&[
        "inv_freq_short",
        "inv_freq_long",
        "cos_short",
        "sin_short",
        "cos_long",
        "sin_long",
    ]);
    assert_eq!(names(&st), want);
    let n_short = usize_of(&meta, "cos_sin_short_positions");
    let n_long = usize_of(&meta, "cos_sin_long_positions");
    assert!(n_short <= c.original_max && n_long > c.original_max);
    for (kind, factors, n) in [("short", &c.short, n_short), ("long", &c.long, n_long)] {
        let inv = f32s(&st, &format!("inv_freq_{kind}"), &[half]);
        for (i, (&got, &f)) in inv.iter().zip(factors.iter()).enumerate() {
            let want = 1.0 / (f * c.theta.powf(2.0 * i as f64 / c.head_dim as f64));
            assert!(
                ((f64::from(got) - want) / want).abs() < 1e-6,
                "inv_freq_{kind}[{i}]"
            );
        }
        let cos = f32s(&st, &format!("cos_{kind}"), &[n, c.head_dim]);
        let sin = f32s(&st, &format!("sin_{kind}"), &[n, c.head_dim]);
        for p in 0..n {
            for j in 0..c.head_dim {
                let angle = f64::from(p as f32 * inv[j % half]);
                let (ws, wc) = angle.sin_cos();
                let k = p * c.head_dim + j;
                assert!(
                    (f64::from(cos[k]) - af * wc).abs() < 2e-6,
                    "cos_{kind}[{p},{j}]"
                );
                assert!(
                    (f64::from(sin[k]) - af * ws).abs() < 2e-6,
                    "sin_{kind}[{p},{j}]"
                );
            }
        }
    }
    let short = f32s(&st, "inv_freq_short", &[half]);
    let long = f32s(&st, "inv_freq_long", &[half]);
    assert!(
        short.iter().zip(&long).all(|(a, b)| a != b),
        "short and long tables must differ"
    );
}

fn check_generate(ref_dir: &Path, c: &Cfg, eos: &[i64]) {
    let g = read_json(&ref_dir.join("generate.json"));
    let prompt = id_list(&g["prompt_ids"]);
    let out = id_list(&g["output_ids"]);
    let new = id_list(&g["new_ids"]);
    let n_new = usize_of(&g, "max_new_tokens");
    assert_eq!(g["do_sample"], false);
    assert!(
        !prompt.is_empty() && prompt.len() <= c.original_max,
        "prompt within short factors"
    );
    assert_eq!(out.len(), prompt.len() + n_new, "all new tokens generated");
    assert!(
        out.len() > c.original_max,
        "generation must cross original_max"
    );
    assert_eq!(&out[..prompt.len()], prompt.as_slice());
    assert_eq!(&out[prompt.len()..], new.as_slice());
    assert!(
        out.iter().all(|&t| (0..c.vocab as i64).contains(&t)),
        "ids in range"
    );
    assert!(
        new.iter().all(|t| !eos.contains(t)),
        "no stop token among the new ids"
    );
    assert_eq!(
        id_list(&g["eos_token_id"]),
        eos,
        "eos ids as in generation_config.json"
    );
    let lengths: Vec<usize> = id_list(&g["forward_input_lengths"])
        .iter()
        .map(|&n| n as usize)
        .collect();
    assert_eq!(lengths.len(), n_new);
    assert_eq!(lengths[0], prompt.len());
    assert!(
        lengths.contains(&(c.original_max + 1)),
        "HF recomputes at length original_max + 1"
    );
    let plain = id_list(&g["no_recompute_output_ids"]);
    assert_eq!(plain.len(), out.len());
    assert_eq!(&plain[..prompt.len()], prompt.as_slice());
    let margins = f64_list(&g["step_relative_margins"]);
    assert_eq!(margins.len(), n_new);
    let min = g["min_relative_margin"].as_f64().unwrap();
    assert!(min > 1e-3, "greedy path too close to a tie: {min}");
    assert!(g["no_recompute_min_relative_margin"].as_f64().unwrap() > 1e-3);
}

fn check_model(name: &str) -> Cfg {
    let dir = fixtures_dir().join(name);
    assert!(dir.is_dir(), "missing fixture {}", dir.display());
    let c = parse_config(&read_json(&dir.join("config.json")));
    assert_eq!(c.hidden, c.heads * c.head_dim);
    assert_eq!(c.heads % c.kv_heads, 0);
    assert_eq!(c.original_max, 64);
    assert_eq!(c.max_pos, 1024);
    assert_ne!(c.vocab % 256, 0, "vocabulary must need padding");
    assert!(
        c.short.iter().zip(&c.long).all(|(s, l)| s != l),
        "short and long factors differ"
    );
    let weights = check_checkpoint(&dir, &c);
    let eos = check_generation_config(&dir, &c);
    let ref_dir = dir.join("reference");
    let meta = read_json(&ref_dir.join("meta.json"));
    assert_eq!(meta["token_id_dtype"], "I64");
    assert_eq!(meta["dtype"], "float32");
    for seq in ["short", "long"] {
        let p = meta["hf_bf16_pcc"][seq]
            .as_f64()
            .unwrap_or_else(|| panic!("meta.json hf_bf16_pcc.{seq} missing"));
        assert!(
            (MIN_HF_BF16_PCC..=1.0).contains(&p),
            "HF bf16 logits PCC on {seq}: {p}"
        );
    }
    let (ids, logits) = check_logits(&ref_dir, &c);
    check_hidden(&ref_dir, &c, &weights, &ids, &logits);
    check_rope(&ref_dir, &c);
    check_generate(&ref_dir, &c, &eos);
    let files: BTreeSet<String> = std::fs::read_dir(&ref_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let want = set(&[
        "logits.safetensors",
        "hidden.safetensors",
        "rope.safetensors",
        "rope.json",
        "generate.json",
        "meta.json",
    ]);
    assert_eq!(files, want, "reference files");
    c
}

#[test]
fn phi3_tiny() {
    let c = check_model("phi3-tiny");
    assert_eq!(
        (c.heads, c.kv_heads, c.head_dim),
        (8, 8, 48),
        "Phi-3-mini proportions scaled down"
    );
    assert_ne!(c.head_dim % 64, 0);
    assert!(!c.tied && (2..=3).contains(&c.layers));
    assert!(
        c.window.is_none_or(|w| w >= c.max_pos),
        "window has no effect"
    );
}

#[test]
fn phi3_tiny_gqa() {
    let c = check_model("phi3-tiny-gqa");
    assert!(c.kv_heads < c.heads, "fewer KV heads than query heads");
    assert!(!c.tied);
}

#[test]
fn phi3_tiny_window() {
    let c = check_model("phi3-tiny-window");
    let w = c.window.expect("sliding_window set");
    let bytes = read(&fixtures_dir().join("phi3-tiny-window/reference/logits.safetensors"));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let short_len = st.tensor("short.input_ids").unwrap().shape()[0];
    assert!(
        w < short_len,
        "sliding_window {w} must be shorter than the test sequences"
    );
}

#[test]
fn phi3_tiny_tied() {
    let c = check_model("phi3-tiny-tied");
    assert!(c.tied, "tie_word_embeddings");
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// No file in fixtures/ over 8 MiB; the test fixtures (these models, ops/, phi3-tokenizer/)
/// together within 20 MB; the README lists every fixture.
#[test]
fn budget_and_readme() {
    for path in files_under(&fixtures_dir()) {
        let size = path.metadata().unwrap().len();
        assert!(size <= FILE_BUDGET, "{} is {size} bytes", path.display());
    }
    let mut total = 0;
    for dir in MODELS.iter().chain(["ops", "phi3-tokenizer"].iter()) {
        let dir = fixtures_dir().join(dir);
        if dir.exists() {
            total += files_under(&dir)
                .iter()
                .map(|p| p.metadata().unwrap().len())
                .sum::<u64>();
        }
    }
    assert!(total <= TOTAL_BUDGET, "test fixtures total {total} bytes");
    let readme = String::from_utf8(read(&fixtures_dir().join("README.md"))).unwrap();
    for name in MODELS.iter().chain(["phi3-tokenizer"].iter()) {
        assert!(
            readme.contains(&format!("`{name}`")),
            "fixtures/README.md does not list {name}"
        );
    }
}

/// If the op fixture generator exists, its output directory must exist and hold files, and every
/// safetensors file in it must parse (the shapes are checked by the ops' own tests).
#[test]
fn op_fixtures_present() {
    let ops = fixtures_dir().join("ops");
    let generator = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/op_fixtures.py");
    if generator.exists() {
        assert!(
            ops.is_dir(),
            "scripts/op_fixtures.py exists but fixtures/ops/ does not"
        );
    }
    if !ops.exists() {
        return;
    }
    let files = files_under(&ops);
    assert!(!files.is_empty(), "fixtures/ops/ is empty");
    for path in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
    {
        let bytes = read(path);
        SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}
