//! What one forward call must move and compute, counted from the config: the denominators of the
//! benchmark's effective figures. Also the median and the synthetic prompt.
//!
//! - Decode reads every matrix once per step whatever the batch (the GEMV serves all rows from one
//!   pass): the matrices of every layer (`tt_decoder::names`: Phi-3's `qkv_proj`, `o_proj`,
//!   `gate_up_proj`, `down_proj`; Llama's separate projections) and the LM head (the embedding matrix when tied), in bf16. The embedding table is only
//!   indexed (one row per token) and the norms are vectors: neither is counted.
//! - Prefill with [`phi3_model::Logits::Last`] multiplies every token by every layer matrix and
//!   the last one by the LM head: `2 x params` FLOPs per matrix row pass. Attention (`Q K^T` and
//!   `P V`, causal, within the sliding window) is counted apart.

use tt_decoder::FamilyConfig;
use tt_decoder::names::LayerTensor;
use tt_decoder::sharding::WEIGHT_DTYPE_BYTES;

/// Sizes of a model that the benchmark's effective figures divide by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Decoder layers.
    pub layers: u64,
    /// Parameters of every layer's matrices, all layers together.
    pub layer_matmul_params: u64,
    /// Parameters of the LM head (`vocab x hidden`; the embedding matrix when tied).
    pub lm_head_params: u64,
    /// Rows of Q per token (query heads x head_dim).
    pub q_size: u64,
    /// Rows of K (or V) per token (KV heads x head_dim).
    pub kv_size: u64,
    /// Keys a query attends to at most (the sliding window), if bounded.
    pub window: Option<u64>,
}

impl Counts {
    /// The counts of `config` (a family's config, or the decoder's view of it).
    pub fn new(config: &impl FamilyConfig) -> Self {
        let config = config.decoder_config();
        let h = config.hidden_size as u64;
        // The layer's matrices (its norms are vectors), with the shapes the checkpoint holds.
        let per_layer: u64 = LayerTensor::of(&config)
            .into_iter()
            .map(|t| t.shape(&config))
            .filter(|shape| shape.len() == 2)
            .map(|shape| shape.iter().map(|&d| d as u64).product::<u64>())
            .sum();
        Self {
            layers: config.num_hidden_layers as u64,
            layer_matmul_params: per_layer * config.num_hidden_layers as u64,
            lm_head_params: config.vocab_size as u64 * h,
            q_size: config.q_size() as u64,
            kv_size: config.kv_size() as u64,
            window: config.sliding_window.map(|w| w as u64),
        }
    }

    /// Weight bytes one decode step reads (every matrix once, bf16).
    pub fn decode_weight_bytes(&self) -> u64 {
        (self.layer_matmul_params + self.lm_head_params) * WEIGHT_DTYPE_BYTES as u64
    }

    /// KV cache bytes one user's decode step reads at `context` cached tokens (K and V of every
    /// layer, `elem_bytes` per value: 4 under f32 fidelity, 2 under bf16).
    pub fn kv_bytes_read(&self, context: u64, elem_bytes: u64) -> u64 {
        let keys = self.window.map_or(context, |w| context.min(w));
        self.layers * 2 * self.kv_size * keys * elem_bytes
    }

    /// Matmul FLOPs of a prefill of `tokens` with logits for the last position only.
    pub fn prefill_matmul_flops(&self, tokens: u64) -> f64 {
        2.0 * (self.layer_matmul_params as f64 * tokens as f64 + self.lm_head_params as f64)
    }

    /// Attention FLOPs of a causal prefill of `tokens` (`Q K^T` and `P V`: 2 x 2 x q_size per
    /// attended key, every layer).
    pub fn prefill_attention_flops(&self, tokens: u64) -> f64 {
        4.0 * self.layers as f64 * self.q_size as f64 * attended_pairs(tokens, self.window) as f64
    }
}

/// Query-key pairs of a causal pass over `tokens` where a query sees at most `window` keys.
fn attended_pairs(tokens: u64, window: Option<u64>) -> u64 {
    let full = |t: u64| t * (t + 1) / 2;
    match window {
        Some(w) if tokens > w => full(w) + (tokens - w) * w,
        _ => full(tokens),
    }
}

/// The median of `values` (the mean of the middle two for an even count; 0 when empty).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `n` deterministic token ids in `1 .. vocab`: `(i * 7919 + 13) % (vocab - 1) + 1`
/// (scripts/hf_bench.py builds the same prompt).
pub fn synthetic_ids(vocab: usize, n: usize) -> Vec<u32> {
    let modulus = vocab.saturating_sub(1).max(1) as u64;
    (0..n as u64)
        .map(|i| ((i * 7919 + 13) % modulus + 1) as u32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The config at `file`, parsed by the family its `model_type` names.
    fn config(file: &str) -> tt_decoder::DecoderConfig {
        let text = std::fs::read_to_string(crate::workspace_root().join(file)).unwrap();
        tt_decoder::family_for(&text, &tt_lm::families())
            .unwrap()
            .parse_config(&text)
            .unwrap()
    }

    /// Phi-3-mini-128k: 7.45 GB of bf16 matrices per decode token (docs/PERFORMANCE.md).
    #[test]
    fn phi3_mini_counts() {
        let c = Counts::new(&config("fixtures/configs/phi3-mini-128k.json"));
        assert_eq!(c.layers, 32);
        // Per layer: 3072 x (9216 + 3072 + 16384 + 8192).
        assert_eq!(c.layer_matmul_params, 32 * 3072 * 36_864);
        assert_eq!(c.lm_head_params, 32_064 * 3072);
        assert_eq!(c.decode_weight_bytes(), 7_444_758_528);
        // 32 layers x K and V x 3072 values x 4096 tokens x 2 bytes = 1.61 GB.
        assert_eq!(c.kv_bytes_read(4096, 2), 1_610_612_736);
        let flops = c.prefill_matmul_flops(155);
        assert_eq!(flops, 2.0 * (3_623_878_656.0 * 155.0 + 98_500_608.0));
        // 155 x 156 / 2 pairs, 4 x 3072 FLOPs each, 32 layers.
        assert_eq!(
            c.prefill_attention_flops(155),
            4.0 * 32.0 * 3072.0 * 12_090.0
        );
    }

    /// The tiny bundled model ties its LM head to the embedding: the head is still read.
    #[test]
    fn bundled_model_counts_its_tied_head() {
        let cfg = config("fixtures/phi3-tiny-en/config.json");
        assert!(cfg.tie_word_embeddings);
        let c = Counts::new(&cfg);
        assert_eq!(c.layer_matmul_params, 4 * 128 * (384 + 128 + 1024 + 512));
        assert_eq!(c.lm_head_params, 32_064 * 128);
    }

    /// Llama's separate projections count as Phi-3's fused ones would.
    #[test]
    fn llama_counts_its_separate_projections() {
        let c = Counts::new(&config("fixtures/llama-tiny-gqa/config.json"));
        // H 128, 8 query and 2 KV heads of 16, I 256: q, k, v, o, gate, up, down.
        let per_layer = 128 * (128 + 32 + 32 + 128 + 256 + 256 + 256);
        assert_eq!(c.layer_matmul_params, 2 * per_layer);
        assert_eq!((c.q_size, c.kv_size), (128, 32));
    }

    #[test]
    fn the_window_bounds_attention() {
        assert_eq!(attended_pairs(4, None), 10);
        assert_eq!(attended_pairs(4, Some(8)), 10);
        // Queries 0..5 see 1, 2, 2, 2, 2 keys.
        assert_eq!(attended_pairs(5, Some(2)), 9);
        let c = Counts {
            window: Some(100),
            ..Counts::new(&config("fixtures/phi3-tiny-en/config.json"))
        };
        assert_eq!(c.kv_bytes_read(4096, 4), c.kv_bytes_read(100, 4));
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    /// The 155 ids of docs/PERFORMANCE.md's formula, here with the model's vocabulary.
    #[test]
    fn synthetic_prompt() {
        let ids = synthetic_ids(32_064, 155);
        assert_eq!(ids.len(), 155);
        assert_eq!(&ids[..3], &[14, 7933, 15_852]);
        assert!(ids.iter().all(|&t| (1..32_064).contains(&t)));
    }
}
