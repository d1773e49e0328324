//! Rotary position tables: one builder, the scaling variants as small functions.
//!
//! A model describes its rotary embedding by a [`RopeSpec`] (base `theta`, head width and a
//! [`RopeScaling`]); [`RopeTables::new`] turns it into inverse frequencies once, and
//! [`RopeTables::cos_sin`] into the cos/sin rows [`crate::rotary_embedding`] takes. Facts mirrored
//! from HF transformers 5.x (docs FACTS §1):
//! - plain: `inv_freq[i] = 1 / theta^(2i/d)` in float32, the exponent `2i/d` divided in float32;
//! - LongRoPE ([`long_rope_inv_freq`]): `1 / (ext[i] * theta^(2i/d))` with `ext` the short or long
//!   factor list, chosen per forward call from `L = max(position) + 1` (long iff
//!   `L > original_max_position_embeddings`, for every position of that call), and an attention
//!   factor multiplying cos and sin ([`default_attention_factor`]);
//! - Llama 3 ([`llama3_inv_freq`]): low frequencies divided by `factor`, high ones kept, the band
//!   between blended smoothly, in float32 op by op as torch evaluates it;
//! - `freq = position * inv_freq` (one float32 product), `cos = cos(cat(freq, freq)) * factor`,
//!   likewise `sin`, all float32.
//!
//! Powers and cosines are evaluated in f64 and rounded once to f32, which is what an exactly
//! rounded float32 library gives; torch's vectorised float32 routines are within 1 ulp of that.

/// Which factor list a forward call uses (only LongRoPE has two).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RopeVariant {
    /// `short_factor` (or the only table): max position + 1 <= original max.
    Short,
    /// `long_factor`: max position + 1 > original max.
    Long,
}

/// How a model scales its rotary frequencies.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    Plain,
    /// Phi-3's LongRoPE: two factor lists, chosen per forward call.
    LongRope {
        /// Frequency divisors used while max position + 1 <= `original_max_position_embeddings`.
        short_factor: Vec<f64>,
        /// Frequency divisors used beyond it.
        long_factor: Vec<f64>,
        /// Pretraining context length that selects the factor list.
        original_max_position_embeddings: usize,
        /// The cos/sin multiplier (resolved: explicit, or [`default_attention_factor`]).
        attention_factor: f64,
    },
    /// Llama 3's `llama3` scaling (`rope_type: "llama3"`).
    Llama3 {
        /// Divisor of the low frequencies.
        factor: f64,
        /// Wavelengths above `original / low_freq_factor` are divided by `factor`.
        low_freq_factor: f64,
        /// Wavelengths below `original / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// Pretraining context length.
        original_max_position_embeddings: usize,
    },
}

/// A model's rotary embedding: base, head width and scaling.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeSpec {
    /// Base wavelength (`rope_theta`).
    pub theta: f64,
    /// Width of one head (`head_dim`; the tables have `head_dim / 2` frequencies).
    pub head_dim: usize,
    /// Scaling variant.
    pub scaling: RopeScaling,
}

/// Inverse frequencies of every variant and the attention factor, built once per model.
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
    /// Builds the tables of `spec`.
    pub fn new(spec: &RopeSpec) -> Self {
        let (theta, head_dim) = (spec.theta, spec.head_dim);
        let single = |inv: Vec<f32>| Self {
            head_dim,
            original_max: None,
            long_inv_freq: inv.clone(),
            short_inv_freq: inv,
            attention_factor: 1.0,
        };
        match &spec.scaling {
            RopeScaling::Plain => single(plain_inv_freq(theta, head_dim)),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => single(llama3_inv_freq(
                &plain_inv_freq(theta, head_dim),
                *factor,
                *low_freq_factor,
                *high_freq_factor,
                *original_max_position_embeddings,
            )),
            RopeScaling::LongRope {
                short_factor,
                long_factor,
                original_max_position_embeddings,
                attention_factor,
            } => Self {
                head_dim,
                original_max: Some(*original_max_position_embeddings),
                short_inv_freq: long_rope_inv_freq(theta, head_dim, short_factor),
                long_inv_freq: long_rope_inv_freq(theta, head_dim, long_factor),
                attention_factor: *attention_factor,
            },
        }
    }

    /// Head dimension (length of a cos/sin row).
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// True when the model switches factor lists per call (LongRoPE).
    pub fn is_long_rope(&self) -> bool {
        self.original_max.is_some()
    }

    /// The length beyond which long factors apply (`None` without LongRoPE).
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

    /// The LongRoPE re-prefill rule of HF generation: a cache written with the short factors must
    /// be recomputed with the long ones once a call crosses the original context, because every
    /// position of a call uses the call's factor list. True when a cache of rows written with
    /// `written` must be recomputed before a call reaching `max_position_plus_one`.
    pub fn needs_recompute(
        &self,
        written: Option<RopeVariant>,
        max_position_plus_one: usize,
    ) -> bool {
        matches!(written, Some(v) if v != self.choose(max_position_plus_one))
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
    /// values each (no allocation). Rows beyond the shorter of the buffers and `positions` are
    /// left untouched.
    pub fn fill_cos_sin(
        &self,
        variant: RopeVariant,
        positions: &[usize],
        cos: &mut [f32],
        sin: &mut [f32],
    ) {
        fill_rows(
            self.inv_freq(variant),
            self.attention_factor as f32,
            positions.iter().copied(),
            cos,
            sin,
        );
    }
}

/// Writes `cos(cat(f, f)) * factor` and likewise `sin` for each position, `f = p * inv_freq`
/// in f32; one row of `2 * inv_freq.len()` values per position.
pub(crate) fn fill_rows(
    inv_freq: &[f32],
    factor: f32,
    positions: impl Iterator<Item = usize>,
    cos: &mut [f32],
    sin: &mut [f32],
) {
    let half = inv_freq.len();
    let width = 2 * half;
    if width == 0 {
        return;
    }
    let rows = cos
        .chunks_exact_mut(width)
        .zip(sin.chunks_exact_mut(width))
        .zip(positions);
    for ((cos_row, sin_row), pos) in rows {
        let p = pos as f32;
        for (i, &f) in inv_freq.iter().enumerate() {
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

/// `sqrt(1 + ln s / ln original)`, or 1 when `s <= 1` (HF's default LongRoPE attention factor).
pub fn default_attention_factor(scale: f64, original_max: usize) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        (1.0 + scale.ln() / (original_max as f64).ln()).sqrt()
    }
}

/// `theta^(2i/d)` for `i < d/2`, in HF's float32 order.
fn powers(theta: f64, head_dim: usize) -> impl Iterator<Item = f32> {
    let base = f64::from(theta as f32);
    let dim = head_dim as f32;
    (0..head_dim / 2).map(move |i| {
        let exponent = (2 * i) as f32 / dim;
        base.powf(f64::from(exponent)) as f32
    })
}

/// Plain RoPE: `1 / theta^(2i/d)`.
pub fn plain_inv_freq(theta: f64, head_dim: usize) -> Vec<f32> {
    powers(theta, head_dim).map(|p| 1.0 / p).collect()
}

/// LongRoPE: `1 / (ext[i] * theta^(2i/d))`, `ext` rounded to f32 (missing entries count as 1).
pub fn long_rope_inv_freq(theta: f64, head_dim: usize, ext: &[f64]) -> Vec<f32> {
    powers(theta, head_dim)
        .enumerate()
        .map(|(i, p)| 1.0 / (ext.get(i).copied().unwrap_or(1.0) as f32 * p))
        .collect()
}

/// Llama 3 scaling of plain inverse frequencies, each step a float32 op as torch evaluates
/// `_compute_llama3_parameters` (python scalars enter as f32; `a / t` is `reciprocal(t) * a`).
pub fn llama3_inv_freq(
    inv_freq: &[f32],
    factor: f64,
    low_freq_factor: f64,
    high_freq_factor: f64,
    original_max: usize,
) -> Vec<f32> {
    let old = original_max as f64;
    let low_wavelen = (old / low_freq_factor) as f32;
    let high_wavelen = (old / high_freq_factor) as f32;
    let two_pi = (2.0 * std::f64::consts::PI) as f32;
    let (factor32, low32) = (factor as f32, low_freq_factor as f32);
    let band = (high_freq_factor - low_freq_factor) as f32;
    inv_freq
        .iter()
        .map(|&f| {
            let wavelen = (1.0 / f) * two_pi;
            let scaled = if wavelen > low_wavelen {
                f / factor32
            } else {
                f
            };
            let smooth = ((1.0 / wavelen) * old as f32 - low32) / band;
            let smoothed = (1.0 - smooth) * scaled / factor32 + smooth * scaled;
            // torch: `~(wavelen < high) * ~(wavelen > low)`; wavelengths are finite here.
            let medium = wavelen >= high_wavelen && wavelen <= low_wavelen;
            if medium { smoothed } else { scaled }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec(scaling: RopeScaling) -> RopeSpec {
        RopeSpec {
            theta: 500_000.0,
            head_dim: 64,
            scaling,
        }
    }

    /// Llama 3 scaling against a plain f64 evaluation of the same rule (the Llama 3.1 values).
    #[test]
    fn llama3_follows_the_rule_in_each_band() {
        let (factor, low, high, old) = (8.0, 1.0, 4.0, 8192usize);
        let plain = plain_inv_freq(500_000.0, 64);
        let scaled = llama3_inv_freq(&plain, factor, low, high, old);
        let mut bands = [0usize; 3];
        for (&f, &s) in plain.iter().zip(&scaled) {
            let f = f64::from(f);
            let wavelen = 2.0 * std::f64::consts::PI / f;
            let expected = if wavelen < old as f64 / high {
                bands[0] += 1;
                f
            } else if wavelen > old as f64 / low {
                bands[2] += 1;
                f / factor
            } else {
                bands[1] += 1;
                let smooth = (old as f64 / wavelen - low) / (high - low);
                (1.0 - smooth) * f / factor + smooth * f
            };
            assert!(
                (f64::from(s) - expected).abs() <= 1e-6 * expected,
                "{s} vs {expected}"
            );
        }
        assert!(
            bands.iter().all(|&b| b > 0),
            "every band is exercised: {bands:?}"
        );
    }

    #[test]
    fn plain_and_llama3_have_one_variant_longrope_two() {
        let t = RopeTables::new(&spec(RopeScaling::Plain));
        assert_eq!(t.choose(1 << 20), RopeVariant::Short);
        assert!(!t.is_long_rope());
        assert!(!t.needs_recompute(Some(RopeVariant::Short), 1 << 20));
        let t = RopeTables::new(&spec(RopeScaling::LongRope {
            short_factor: vec![1.0; 32],
            long_factor: vec![4.0; 32],
            original_max_position_embeddings: 64,
            attention_factor: 1.25,
        }));
        assert_eq!(t.choose(64), RopeVariant::Short);
        assert_eq!(t.choose(65), RopeVariant::Long);
        assert!(t.needs_recompute(Some(RopeVariant::Short), 65));
        assert!(!t.needs_recompute(None, 65));
        let long = t.inv_freq(RopeVariant::Long);
        let short = t.inv_freq(RopeVariant::Short);
        assert!((short[5] / long[5] - 4.0).abs() < 1e-6);
        let cs = t.cos_sin(RopeVariant::Short, &[0]);
        assert!(cs.cos.iter().all(|&c| (c - 1.25).abs() < 1e-7));
    }
}
