//! Rotary position tables for Phi-3: plain RoPE and LongRoPE, as HF transformers 5.x computes them.
//!
//! Facts mirrored (docs FACTS §1):
//! - `inv_freq[i] = 1 / (ext[i] * theta^(2i/d))` in float32, with the exponent `2i/d` divided in
//!   float32, `ext` the short or long factor list rounded to float32 (1 for plain RoPE).
//! - `attention_factor` = the config value if given, else `sqrt(1 + ln s / ln original_max)` with
//!   `s` = the config `factor` or `max_position_embeddings / original_max` (1.0 when `s <= 1`);
//!   it multiplies cos and sin, for short sequences too. Plain RoPE has factor 1.
//! - The factor list is chosen per forward call from `L = max(position) + 1`: long iff
//!   `L > original_max_position_embeddings`, for every position of that call.
//! - `freq = position * inv_freq` (one float32 product), `cos = cos(cat(freq, freq)) * factor`,
//!   likewise `sin`, all float32.
//!
//! Powers and cosines are evaluated in f64 and rounded once to f32, which is what an exactly
//! rounded float32 library gives; torch's vectorised float32 routines are within 1 ulp of that.

use serde::Serialize;

use crate::config::Phi3Config;

/// Which factor list a forward call uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum RopeVariant {
    /// `short_factor` (or plain RoPE): max position + 1 <= original max.
    Short,
    /// `long_factor`: max position + 1 > original max.
    Long,
}

/// Inverse frequencies for both factor lists and the attention factor, built once per model.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeTables {
    head_dim: usize,
    original_max: Option<usize>,
    short_inv_freq: Vec<f32>,
    long_inv_freq: Vec<f32>,
    attention_factor: f64,
}

/// cos and sin rows for a list of positions, each `[positions, head_dim]` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct CosSin {
    /// Variant the rows were built with.
    pub variant: RopeVariant,
    /// Row length.
    pub head_dim: usize,
    /// `cos(cat(freq, freq)) * attention_factor`.
    pub cos: Vec<f32>,
    /// `sin(cat(freq, freq)) * attention_factor`.
    pub sin: Vec<f32>,
}

impl RopeTables {
    /// Builds the tables for a validated config.
    pub fn new(config: &Phi3Config) -> Self {
        let head_dim = config.head_dim();
        let theta = config.rope.theta;
        match &config.rope.long_rope {
            None => {
                let plain = inv_freq(theta, head_dim, None);
                Self {
                    head_dim,
                    original_max: None,
                    long_inv_freq: plain.clone(),
                    short_inv_freq: plain,
                    attention_factor: 1.0,
                }
            }
            Some(long) => {
                let original = long.original_max_position_embeddings;
                let scale = long
                    .factor
                    .unwrap_or(config.max_position_embeddings as f64 / original as f64);
                let attention_factor = long
                    .attention_factor
                    .unwrap_or_else(|| default_attention_factor(scale, original));
                Self {
                    head_dim,
                    original_max: Some(original),
                    short_inv_freq: inv_freq(theta, head_dim, Some(&long.short_factor)),
                    long_inv_freq: inv_freq(theta, head_dim, Some(&long.long_factor)),
                    attention_factor,
                }
            }
        }
    }

    /// Head dimension (length of a cos/sin row).
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// True when the model uses LongRoPE.
    pub fn is_long_rope(&self) -> bool {
        self.original_max.is_some()
    }

    /// The length beyond which long factors apply (`None` for plain RoPE).
    pub fn original_max_position_embeddings(&self) -> Option<usize> {
        self.original_max
    }

    /// The cos/sin multiplier as HF computes it in f64.
    pub fn attention_factor(&self) -> f64 {
        self.attention_factor
    }

    /// Factor list for a forward call whose largest position plus one is `max_position_plus_one`.
    pub fn choose(&self, max_position_plus_one: usize) -> RopeVariant {
        match self.original_max {
            Some(original) if max_position_plus_one > original => RopeVariant::Long,
            _ => RopeVariant::Short,
        }
    }

    /// Factor list for a forward call over `positions` (short when empty).
    pub fn choose_for_positions(&self, positions: &[usize]) -> RopeVariant {
        match positions.iter().max() {
            Some(&max) => self.choose(max.saturating_add(1)),
            None => RopeVariant::Short,
        }
    }

    /// Inverse frequencies (`head_dim / 2` values) of a variant.
    pub fn inv_freq(&self, variant: RopeVariant) -> &[f32] {
        match variant {
            RopeVariant::Short => &self.short_inv_freq,
            RopeVariant::Long => &self.long_inv_freq,
        }
    }

    /// cos/sin rows for `positions` with the variant HF would choose for this call.
    pub fn cos_sin_for_call(&self, positions: &[usize]) -> CosSin {
        self.cos_sin(self.choose_for_positions(positions), positions)
    }

    /// cos/sin rows for `positions` with an explicit variant.
    pub fn cos_sin(&self, variant: RopeVariant, positions: &[usize]) -> CosSin {
        let mut cos = vec![0.0; positions.len() * self.head_dim];
        let mut sin = vec![0.0; positions.len() * self.head_dim];
        self.fill_cos_sin(variant, positions, &mut cos, &mut sin);
        CosSin {
            variant,
            head_dim: self.head_dim,
            cos,
            sin,
        }
    }

    /// Writes cos/sin rows for `positions` into caller buffers of `positions.len() * head_dim`
    /// values each (no allocation; for the decode path). Rows beyond the shorter of the
    /// buffers and `positions` are left untouched.
    pub fn fill_cos_sin(
        &self,
        variant: RopeVariant,
        positions: &[usize],
        cos: &mut [f32],
        sin: &mut [f32],
    ) {
        debug_assert_eq!(cos.len(), positions.len() * self.head_dim);
        debug_assert_eq!(sin.len(), positions.len() * self.head_dim);
        let inv = self.inv_freq(variant);
        let half = self.head_dim / 2;
        let factor = self.attention_factor as f32;
        let rows = cos
            .chunks_exact_mut(self.head_dim)
            .zip(sin.chunks_exact_mut(self.head_dim))
            .zip(positions);
        for ((cos_row, sin_row), &pos) in rows {
            let p = pos as f32;
            for (i, &f) in inv.iter().enumerate() {
                let freq = f64::from(p * f);
                let c = (freq.cos() as f32) * factor;
                let s = (freq.sin() as f32) * factor;
                cos_row[i] = c;
                cos_row[i + half] = c;
                sin_row[i] = s;
                sin_row[i + half] = s;
            }
        }
    }
}

/// `sqrt(1 + ln s / ln original)`, or 1 when `s <= 1` (HF's default LongRoPE attention factor).
pub fn default_attention_factor(scale: f64, original_max: usize) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        (1.0 + scale.ln() / (original_max as f64).ln()).sqrt()
    }
}

/// `1 / (ext[i] * theta^(2i/d))` in HF's float32 order; `ext` = 1 for plain RoPE.
fn inv_freq(theta: f64, head_dim: usize, ext: Option<&[f64]>) -> Vec<f32> {
    let base = f64::from(theta as f32);
    let dim = head_dim as f32;
    (0..head_dim / 2)
        .map(|i| {
            let exponent = (2 * i) as f32 / dim;
            let power = base.powf(f64::from(exponent)) as f32;
            let scaled = match ext {
                Some(ext) => ext.get(i).copied().unwrap_or(1.0) as f32 * power,
                None => power,
            };
            1.0 / scaled
        })
        .collect()
}
