//! Next-token choice: greedy argmax, or seeded sampling with temperature, top-k and top-p.
//!
//! The warpers run in HF's order (temperature, then top-k, then top-p); top-k keeps every
//! token tied with the k-th logit, top-p keeps the most likely tokens until their probability
//! reaches p (at least one). Sampling draws from a ChaCha20 stream seeded by the user, so a
//! seed gives the same tokens on every run and platform. Suppressed ids (e.g. stop tokens
//! before `--min-new-tokens`) are never chosen.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::error::SamplingError;

/// Settings for random sampling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature (> 0).
    pub temperature: f32,
    /// Keep the k most likely tokens (`None`: all).
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches p (`None`: all).
    pub top_p: Option<f32>,
    /// Seed of the random stream.
    pub seed: u64,
}

/// How to pick the next token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// The most likely token (lowest id on ties), as HF greedy search.
    Greedy,
    /// Seeded random sampling.
    Random(SamplingParams),
}

/// A token picker with its own random stream (one per sequence).
#[derive(Debug, Clone)]
pub struct Sampler {
    mode: Sampling,
    rng: ChaCha20Rng,
    scratch: Vec<(u32, f32)>,
}

impl Sampler {
    /// Validates settings and seeds the stream.
    pub fn new(mode: Sampling) -> Result<Self, SamplingError> {
        let seed = match mode {
            Sampling::Greedy => 0,
            Sampling::Random(p) => {
                if !(p.temperature.is_finite() && p.temperature > 0.0) {
                    return Err(SamplingError::BadTemperature(p.temperature));
                }
                if let Some(top_p) = p.top_p
                    && !(top_p > 0.0 && top_p <= 1.0)
                {
                    return Err(SamplingError::BadTopP(top_p));
                }
                if p.top_k == Some(0) {
                    return Err(SamplingError::BadTopK);
                }
                p.seed
            }
        };
        Ok(Self {
            mode,
            rng: ChaCha20Rng::seed_from_u64(seed),
            scratch: Vec::new(),
        })
    }

    /// A greedy sampler.
    pub fn greedy() -> Self {
        Self {
            mode: Sampling::Greedy,
            rng: ChaCha20Rng::seed_from_u64(0),
            scratch: Vec::new(),
        }
    }

    /// The mode this sampler uses.
    pub fn mode(&self) -> Sampling {
        self.mode
    }

    /// Picks the next token from one position's logits, never choosing an id in `suppress`.
    pub fn sample(&mut self, logits: &[f32], suppress: &[u32]) -> Result<u32, SamplingError> {
        let _span = tt_mesh::op_span!("sample").entered();
        if logits.is_empty() {
            return Err(SamplingError::EmptyLogits);
        }
        if let Some(index) = logits.iter().position(|v| v.is_nan()) {
            return Err(SamplingError::NanLogit { index });
        }
        let allowed = |i: usize| !suppress.contains(&(i as u32));
        match self.mode {
            Sampling::Greedy => greedy(logits, allowed),
            Sampling::Random(p) => {
                self.scratch.clear();
                self.scratch.extend(
                    logits
                        .iter()
                        .enumerate()
                        .filter(|&(i, &v)| allowed(i) && v > f32::NEG_INFINITY)
                        .map(|(i, &v)| (i as u32, v / p.temperature)),
                );
                let u: f64 = self.rng.random();
                pick(&mut self.scratch, p.top_k, p.top_p, u)
            }
        }
    }
}

/// Argmax over allowed ids; the first maximum wins.
fn greedy(logits: &[f32], allowed: impl Fn(usize) -> bool) -> Result<u32, SamplingError> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in logits.iter().enumerate() {
        if !allowed(i) {
            continue;
        }
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    match best {
        Some((i, v)) if v > f32::NEG_INFINITY => Ok(i as u32),
        _ => Err(SamplingError::NoCandidates),
    }
}

/// Applies top-k and top-p to `(id, scaled logit)` candidates and draws with `u` in [0, 1).
fn pick(
    cands: &mut Vec<(u32, f32)>,
    top_k: Option<usize>,
    top_p: Option<f32>,
    u: f64,
) -> Result<u32, SamplingError> {
    if cands.is_empty() {
        return Err(SamplingError::NoCandidates);
    }
    // Most likely first; ties by id so the order is total and reproducible.
    cands.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if let Some(k) = top_k
        && k < cands.len()
    {
        let kth = cands[k - 1].1;
        let keep = cands.iter().take_while(|c| c.1 >= kth).count();
        cands.truncate(keep);
    }
    let max = f64::from(cands[0].1);
    let weights: Vec<f64> = cands.iter().map(|c| (f64::from(c.1) - max).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut keep = weights.len();
    if let Some(p) = top_p {
        let mut before = 0.0;
        for (n, w) in weights.iter().enumerate() {
            if before >= f64::from(p) * total {
                keep = n.max(1);
                break;
            }
            before += w;
        }
    }
    let kept_total: f64 = weights[..keep].iter().sum();
    let target = u * kept_total;
    let mut acc = 0.0;
    for (c, w) in cands[..keep].iter().zip(&weights) {
        acc += w;
        if target < acc {
            return Ok(c.0);
        }
    }
    // Rounding left the target at the very top: the last kept candidate.
    Ok(cands[keep - 1].0)
}

#[cfg(test)]
mod tests {
    use super::pick;

    #[test]
    fn pick_respects_top_p_boundary() {
        // probabilities ~ [0.5, 0.3, 0.2]: top_p 0.5 keeps only the first.
        let logits = [0.5f64.ln() as f32, 0.3f64.ln() as f32, 0.2f64.ln() as f32];
        for u in [0.0, 0.5, 0.999] {
            let mut c: Vec<(u32, f32)> = logits
                .iter()
                .enumerate()
                .map(|(i, &v)| (i as u32, v))
                .collect();
            assert_eq!(pick(&mut c, None, Some(0.5), u).unwrap(), 0);
        }
        // top_p 0.6 keeps two: u near 1 picks the second.
        let mut c: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as u32, v))
            .collect();
        assert_eq!(pick(&mut c, None, Some(0.6), 0.99).unwrap(), 1);
    }
}
