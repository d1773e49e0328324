//! A `llama` GGUF as a HuggingFace `LlamaForCausalLM` checkpoint, the way transformers 5.24
//! converts it (`AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)`, then a plain
//! `LlamaForCausalLM` with `quantization_config` removed, saved in float32):
//!
//! - tensor names: `token_embd` -> `model.embed_tokens`, `blk.{i}.attn_q` -> `self_attn.q_proj`, ...;
//!   no `lm_head.weight` when the file has no `output.weight` (tied embeddings);
//! - `attn_q`/`attn_k` rows: llama.cpp's converter interleaves each head's two rotary halves;
//!   HF undoes it (`LlamaTensorProcessor._reverse_permute_weights`): row `h*2d + a*d + j` of the HF
//!   weight is row `h*2d + 2j + a` of the GGUF one (`d` = head_dim/2, `attn_k` with the KV heads);
//! - config.json and generation_config.json with HF's keys and values, as JSON values;
//! - tokenizer.json: byte-level BPE from `tokenizer.ggml.tokens`/`merges`, control tokens
//!   (`token_type` 3) as special added tokens, as transformers' GGUF tokenizer converter builds it.

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value as Json, json};

use super::{Gguf, Value};

/// The transformers release whose conversion this module reproduces (written in the JSON files).
pub const TRANSFORMERS_VERSION: &str = "5.24.0";

/// The HF config values read from a `llama` GGUF.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaDims {
    /// `general.name` (HF writes it as `_model_name_or_path`).
    pub name: String,
    /// `llama.block_count`.
    pub layers: usize,
    /// `llama.embedding_length`.
    pub hidden: usize,
    /// `llama.feed_forward_length`.
    pub intermediate: usize,
    /// `llama.attention.head_count`.
    pub heads: usize,
    /// `llama.attention.head_count_kv`.
    pub kv_heads: usize,
    /// `llama.rope.dimension_count`, else hidden / heads.
    pub head_dim: usize,
    /// `llama.context_length`.
    pub context: usize,
    /// `llama.rope.freq_base` (f32 in the file).
    pub rope_theta: f32,
    /// `llama.attention.layer_norm_rms_epsilon` (f32 in the file).
    pub rms_norm_eps: f32,
    /// `llama.vocab_size`, else the number of tokens.
    pub vocab: usize,
    /// No `output.weight` in the file.
    pub tied: bool,
    /// `tokenizer.ggml.bos_token_id`, `eos_token_id`, `padding_token_id`, `unknown_token_id`.
    pub bos: Option<u64>,
    /// End-of-sequence id.
    pub eos: Option<u64>,
    /// Padding id.
    pub pad: Option<u64>,
    /// Unknown-token id.
    pub unk: Option<u64>,
}

impl LlamaDims {
    /// Reads the dims of a `llama` GGUF.
    pub fn read(g: &Gguf) -> Result<Self> {
        let arch = g.get_str("general.architecture")?;
        ensure!(
            arch == "llama",
            "GGUF architecture is {arch:?}, not \"llama\""
        );
        let n = |k: &str| -> Result<usize> { Ok(g.get_u64(&format!("llama.{k}"))? as usize) };
        let opt = |k: &str| g.metadata.get(k).and_then(Value::as_u64);
        let heads = n("attention.head_count")?;
        let hidden = n("embedding_length")?;
        ensure!(
            heads > 0 && hidden.is_multiple_of(heads),
            "hidden {hidden} is not a multiple of {heads} heads"
        );
        let head_dim = match g.metadata.get("llama.rope.dimension_count") {
            Some(v) => v
                .as_u64()
                .context("llama.rope.dimension_count is not an integer")?
                as usize,
            None => hidden / heads,
        };
        let vocab = match g.metadata.get("llama.vocab_size") {
            Some(v) => v.as_u64().context("llama.vocab_size is not an integer")? as usize,
            None => g.get_array("tokenizer.ggml.tokens")?.len(),
        };
        Ok(Self {
            name: g.get_str("general.name").unwrap_or_default().to_string(),
            layers: n("block_count")?,
            hidden,
            intermediate: n("feed_forward_length")?,
            heads,
            kv_heads: n("attention.head_count_kv")?,
            head_dim,
            context: n("context_length")?,
            rope_theta: g.get_f32("llama.rope.freq_base")?,
            rms_norm_eps: g.get_f32("llama.attention.layer_norm_rms_epsilon")?,
            vocab,
            tied: g.tensor("output.weight").is_none(),
            bos: opt("tokenizer.ggml.bos_token_id"),
            eos: opt("tokenizer.ggml.eos_token_id"),
            pad: opt("tokenizer.ggml.padding_token_id"),
            unk: opt("tokenizer.ggml.unknown_token_id"),
        })
    }

    /// config.json as transformers writes it for the converted model (without
    /// `quantization_config`), as a JSON value with sorted keys.
    pub fn config_json(&self) -> Json {
        json!({
            "_model_name_or_path": self.name,
            "architectures": ["LlamaForCausalLM"],
            "attention_bias": false,
            "attention_dropout": 0.0,
            "bos_token_id": self.bos,
            "dtype": "float32",
            "eos_token_id": self.eos,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "hidden_size": self.hidden,
            "initializer_range": 0.02,
            "intermediate_size": self.intermediate,
            "max_position_embeddings": self.context,
            "mlp_bias": false,
            "model_type": "llama",
            "num_attention_heads": self.heads,
            "num_hidden_layers": self.layers,
            "num_key_value_heads": self.kv_heads,
            "pad_token_id": self.pad,
            "pretraining_tp": 1,
            "rms_norm_eps": f64::from(self.rms_norm_eps),
            "rope_parameters": {"rope_theta": f64::from(self.rope_theta), "rope_type": "default"},
            "tie_word_embeddings": self.tied,
            "transformers_version": TRANSFORMERS_VERSION,
            "unk_token_id": self.unk,
            "use_cache": true,
            "vocab_size": self.vocab,
        })
    }

    /// generation_config.json as transformers writes it from the model config.
    pub fn generation_config_json(&self) -> Json {
        json!({
            "_from_model_config": true,
            "bos_token_id": self.bos,
            "eos_token_id": self.eos,
            "output_attentions": false,
            "output_hidden_states": false,
            "pad_token_id": self.pad,
            "transformers_version": TRANSFORMERS_VERSION,
            "use_cache": true,
        })
    }
}

/// The HF name of a GGUF tensor, or None for tensors HF drops (e.g. `rope_freqs`).
pub fn hf_name(gguf_name: &str) -> Option<String> {
    let fixed = match gguf_name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some(name.to_string());
    }
    let rest = gguf_name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (part, suffix) = rest.rsplit_once('.')?;
    let hf = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// Undoes llama.cpp's rotary row interleave of an `attn_q`/`attn_k` weight (`rows` x `cols`,
/// row-major) with `heads` heads: HF row `h*2d + a*d + j` is GGUF row `h*2d + 2j + a`.
pub fn reverse_permute(w: &[f32], rows: usize, cols: usize, heads: usize) -> Result<Vec<f32>> {
    ensure!(
        w.len() == rows * cols,
        "{} values for a {rows}x{cols} weight",
        w.len()
    );
    ensure!(
        heads > 0 && rows.is_multiple_of(2 * heads),
        "{rows} rows are not {heads} heads of pairs"
    );
    let d = rows / heads / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..heads {
        for a in 0..2 {
            for j in 0..d {
                let dst = (h * 2 * d + a * d + j) * cols;
                let src = (h * 2 * d + 2 * j + a) * cols;
                out[dst..dst + cols].copy_from_slice(&w[src..src + cols]);
            }
        }
    }
    Ok(out)
}

/// GPT-2's byte-to-unicode alphabet (printable bytes map to themselves, the others to U+0100...).
fn byte_alphabet() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let code = if printable {
            u32::from(b)
        } else {
            extra += 1;
            255 + extra
        };
        out[usize::from(b)] = char::from_u32(code).unwrap_or('\0');
    }
    out
}

/// tokenizer.json for a `gpt2` (byte-level BPE) GGUF tokenizer, as transformers builds it.
pub fn tokenizer_json(g: &Gguf) -> Result<Json> {
    let model = g.get_str("tokenizer.ggml.model")?;
    ensure!(
        model == "gpt2",
        "tokenizer.ggml.model is {model:?}; only \"gpt2\" (byte-level BPE) is supported"
    );
    if let Some(pre) = g.metadata.get("tokenizer.ggml.pre").and_then(Value::as_str) {
        // transformers replaces the GPT-2 split for these pre-tokenizers; SmolLM2's "smollm" keeps it.
        const OTHER_SPLITS: &[&str] = &[
            "llama3",
            "llama-v3",
            "llama-bpe",
            "qwen2",
            "tekken",
            "gpt-4o",
        ];
        ensure!(
            !OTHER_SPLITS.contains(&pre),
            "tokenizer.ggml.pre {pre:?} needs a split regex this converter lacks"
        );
    }
    let tokens = g.get_array("tokenizer.ggml.tokens")?;
    let types = g.get_array("tokenizer.ggml.token_type")?;
    ensure!(
        tokens.len() == types.len(),
        "{} tokens but {} token types",
        tokens.len(),
        types.len()
    );
    let alphabet = byte_alphabet();
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (id, (tok, ty)) in tokens.iter().zip(types).enumerate() {
        let tok = tok
            .as_str()
            .with_context(|| format!("token {id} is not a string"))?;
        let spelled = tok.chars().all(|c| alphabet.contains(&c));
        let key = if spelled {
            tok.to_string()
        } else {
            tok.bytes().map(|b| alphabet[usize::from(b)]).collect()
        };
        let ty = ty
            .as_u64()
            .with_context(|| format!("token type {id} is not an integer"))?;
        match ty {
            3 if spelled => added.push(json!({
                "id": id, "content": tok, "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": false, "special": true,
            })),
            4 => bail!("user-defined token {id} ({tok:?}): not supported by this converter"),
            _ => {}
        }
        if vocab.insert(key, json!(id)).is_some() {
            bail!("token {tok:?} appears twice in the vocabulary");
        }
    }
    let merges = g
        .get_array("tokenizer.ggml.merges")?
        .iter()
        .map(|m| {
            let m = m.as_str().context("a merge is not a string")?;
            let (a, b) = m
                .split_once(' ')
                .with_context(|| format!("merge {m:?} has no space"))?;
            Ok(json!([a, b]))
        })
        .collect::<Result<Vec<_>>>()?;
    let byte_level = |prefix: bool| json!({"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": true, "use_regex": true});
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": byte_level(false),
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {},
        },
        "decoder": byte_level(true),
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges,
        },
    }))
}

/// tokenizer_config.json: the special tokens by content and the GGUF's chat template.
pub fn tokenizer_config_json(g: &Gguf, dims: &LlamaDims) -> Result<Json> {
    let tokens = g.get_array("tokenizer.ggml.tokens")?;
    let content = |id: Option<u64>| -> Result<Json> {
        match id {
            None => Ok(Json::Null),
            Some(id) => Ok(json!(
                tokens
                    .get(id as usize)
                    .and_then(Value::as_str)
                    .with_context(|| format!("special token id {id} is not in the vocabulary"))?
            )),
        }
    };
    Ok(json!({
        "backend": "tokenizers",
        "bos_token": content(dims.bos)?,
        "chat_template": g.get_str("tokenizer.chat_template")?,
        "eos_token": content(dims.eos)?,
        "model_max_length": dims.context,
        "pad_token": content(dims.pad)?,
        "tokenizer_class": "TokenizersBackend",
        "unk_token": content(dims.unk)?,
    }))
}

/// Pretty JSON with numbers as Python's `json.dumps(indent=2)` writes them: the exponent of a
/// float has a sign and at least two digits (`9.9e-06`, `1e+300`; serde_json writes `9.9e-6`,
/// `1e300`). Ends with a newline.
pub fn to_python_json(v: &Json) -> Result<String> {
    let s = serde_json::to_string_pretty(v)?;
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len() + 8);
    let (mut in_string, mut escaped) = (false, false);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        out.push(c);
        i += 1;
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if c == '"' {
            in_string = true;
        } else if c == 'e' && i >= 2 && chars[i - 2].is_ascii_digit() {
            match chars.get(i) {
                Some(&sign @ ('-' | '+')) => {
                    out.push(sign);
                    i += 1;
                }
                _ => out.push('+'),
            }
            if chars[i..].iter().take_while(|d| d.is_ascii_digit()).count() == 1 {
                out.push('0');
            }
        }
    }
    out.push('\n');
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn names_map_as_transformers_does() {
        assert_eq!(
            hf_name("token_embd.weight").unwrap(),
            "model.embed_tokens.weight"
        );
        assert_eq!(
            hf_name("blk.12.attn_q.weight").unwrap(),
            "model.layers.12.self_attn.q_proj.weight"
        );
        assert_eq!(
            hf_name("blk.0.ffn_norm.weight").unwrap(),
            "model.layers.0.post_attention_layernorm.weight"
        );
        assert_eq!(
            hf_name("blk.3.ffn_down.weight").unwrap(),
            "model.layers.3.mlp.down_proj.weight"
        );
        assert_eq!(hf_name("rope_freqs.weight"), None);
        assert_eq!(hf_name("blk.x.attn_q.weight"), None);
    }

    /// The forward permutation of llama.cpp's convert_hf_to_gguf.py, written out naively.
    fn forward_permute(w: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
        let d = rows / heads / 2;
        let mut out = vec![0f32; w.len()];
        for h in 0..heads {
            for a in 0..2 {
                for j in 0..d {
                    // HF row (h, a, j) goes to GGUF row (h, j, a).
                    let src = (h * 2 * d + a * d + j) * cols;
                    let dst = (h * 2 * d + j * 2 + a) * cols;
                    out[dst..dst + cols].copy_from_slice(&w[src..src + cols]);
                }
            }
        }
        out
    }

    #[test]
    fn reverse_permute_undoes_llama_cpp_permute() {
        for (heads, head_dim, cols) in [(1, 2, 1), (3, 8, 5), (9, 64, 3)] {
            let rows = heads * head_dim;
            let hf: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let gguf = forward_permute(&hf, rows, cols, heads);
            assert_eq!(reverse_permute(&gguf, rows, cols, heads).unwrap(), hf);
            if head_dim > 2 {
                assert_ne!(gguf, hf);
            }
        }
        // Head 0, head_dim 4: GGUF rows are (j=0,a=0), (j=0,a=1), (j=1,a=0), (j=1,a=1).
        assert_eq!(
            reverse_permute(&[0.0, 1.0, 2.0, 3.0], 4, 1, 1).unwrap(),
            vec![0.0, 2.0, 1.0, 3.0]
        );
        assert!(reverse_permute(&[0.0; 6], 6, 1, 2).is_err());
    }

    #[test]
    fn byte_alphabet_is_gpt2s() {
        let a = byte_alphabet();
        assert_eq!(a[usize::from(b'A')], 'A');
        assert_eq!(a[usize::from(b' ')], 'Ġ');
        assert_eq!(a[usize::from(b'\n')], 'Ċ');
        assert_eq!(a[0], 'Ā');
        let mut sorted = a.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 256);
    }

    #[test]
    fn python_json_pads_one_digit_exponents() {
        let v =
            json!({"eps": 9.999999747378752e-06f64, "big": 1e300, "s": "e-6 \"1e-5\"", "n": 0.02});
        let s = to_python_json(&v).unwrap();
        assert!(s.contains("\"eps\": 9.999999747378752e-06"), "{s}");
        assert!(s.contains("\"big\": 1e+300"), "{s}");
        assert!(s.contains("\"s\": \"e-6 \\\"1e-5\\\"\""), "{s}");
        assert!(s.contains("\"n\": 0.02"), "{s}");
        assert!(s.ends_with("}\n"));
    }
}
