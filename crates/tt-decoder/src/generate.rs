//! Generation: prefill, then decode token by token, as HF's `generate` does it.
//!
//! One difference from a plain decode loop, kept on purpose because HF's `generate` does it: the
//! first time a sequence's total length exceeds `original_max_position_embeddings` while its cache
//! was written with the short factors, the cache is dropped and the whole sequence is prefilled
//! again (now with the long factors), so cached keys never mix the two factor lists.
//!
//! Several sequences are generated together: each occupies one cache row and every decode step
//! advances all unfinished sequences in one forward call.

use std::time::Instant;

use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::model::{Logits, Model};
use crate::sampling::Sampler;

/// When to stop and what to suppress.
#[derive(Debug, Clone, Default)]
pub struct GenerateOptions {
    /// Tokens to generate at most per sequence.
    pub max_new_tokens: usize,
    /// Stop tokens are suppressed until this many tokens are generated.
    pub min_new_tokens: usize,
    /// Tokens that end a sequence (generated, then the sequence stops).
    pub stop_tokens: Vec<u32>,
}

/// Timings of one generation call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerateTimings {
    /// Seconds spent in prefill calls (the first prefill of every sequence).
    pub prefill_s: f64,
    /// Prompt tokens prefilled.
    pub prefill_tokens: usize,
    /// Seconds of every decode step (one entry per step, all sequences together; a step that
    /// recomputed a cache at the LongRoPE switch is included).
    pub decode_steps_s: Vec<f64>,
    /// What this process exchanged with the other ranks during the decode steps (zero unless
    /// the mesh spans several ranks).
    pub decode_traffic: tt_mesh::RankTraffic,
}

impl GenerateTimings {
    /// Median seconds per decode step (0 when nothing was decoded).
    pub fn decode_median_s(&self) -> f64 {
        let mut v = self.decode_steps_s.clone();
        if v.is_empty() {
            return 0.0;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }
}

/// What generation produced for one sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// Prompt ids followed by the generated ids.
    pub tokens: Vec<u32>,
    /// Length of the prompt.
    pub prompt_len: usize,
    /// Whether a stop token ended the sequence.
    pub stopped: bool,
}

impl Generated {
    /// The generated ids only.
    pub fn new_tokens(&self) -> &[u32] {
        &self.tokens[self.prompt_len..]
    }
}

struct Sequence {
    tokens: Vec<u32>,
    prompt_len: usize,
    done: bool,
    stopped: bool,
}

/// Generates from each prompt (one cache row each); `on_token(sequence, token)` is called for
/// every generated token as soon as it is chosen.
pub fn generate(
    model: &Model,
    cache: &mut KvCache,
    prompts: &[Vec<u32>],
    samplers: &mut [Sampler],
    options: &GenerateOptions,
    on_token: &mut dyn FnMut(usize, u32),
) -> Result<(Vec<Generated>, GenerateTimings)> {
    if prompts.len() > cache.batch() || samplers.len() != prompts.len() {
        return Err(Error::BatchMismatch {
            given: prompts.len(),
            batch: cache.batch().min(samplers.len()),
        });
    }
    let original_max = model.rope().original_max_position_embeddings();
    let mut timings = GenerateTimings::default();
    let mut seqs: Vec<Sequence> = prompts
        .iter()
        .map(|p| Sequence {
            tokens: p.clone(),
            prompt_len: p.len(),
            done: options.max_new_tokens == 0,
            stopped: false,
        })
        .collect();
    let mut pending: Vec<Option<Vec<f32>>> = vec![None; seqs.len()];

    // Prefill every prompt (its last logits choose the first new token).
    let start = Instant::now();
    for (user, seq) in seqs.iter().enumerate() {
        if seq.done {
            continue;
        }
        let logits = model.prefill(cache, user, &seq.tokens, Logits::Last)?;
        pending[user] = Some(logits.to_f32_vec());
        timings.prefill_tokens += seq.tokens.len();
    }
    timings.prefill_s = start.elapsed().as_secs_f64();

    loop {
        // Choose each live sequence's next token from its pending logits.
        for (user, seq) in seqs.iter_mut().enumerate() {
            let Some(logits) = pending[user].take() else {
                continue;
            };
            let generated = seq.tokens.len() - seq.prompt_len;
            let suppress: &[u32] = if generated < options.min_new_tokens {
                &options.stop_tokens
            } else {
                &[]
            };
            let token = samplers[user].sample(&logits, suppress)?;
            seq.tokens.push(token);
            on_token(user, token);
            let generated = generated + 1;
            if options.stop_tokens.contains(&token) {
                seq.done = true;
                seq.stopped = true;
            } else if generated >= options.max_new_tokens {
                seq.done = true;
            }
        }
        if seqs.iter().all(|s| s.done) {
            break;
        }

        // Feed each live sequence's newest token.
        let step = Instant::now();
        let traffic = model.mesh().rank_traffic();
        let mut batch: Vec<Option<u32>> = vec![None; cache.batch()];
        for (user, seq) in seqs.iter().enumerate() {
            if seq.done {
                continue;
            }
            let total = seq.tokens.len();
            let crosses = original_max.is_some_and(|m| total > m && cache.len(user) <= m);
            if crosses {
                // HF drops the cache here and recomputes the whole sequence with long factors.
                let logits = model.prefill(cache, user, &seq.tokens, Logits::Last)?;
                pending[user] = Some(logits.to_f32_vec());
            } else {
                batch[user] = seq.tokens.last().copied();
            }
        }
        if batch.iter().any(Option::is_some) {
            let logits = model.decode(cache, &batch)?;
            let vocab = logits.dim(1)?;
            let values = logits.f32_values();
            for (user, token) in batch.iter().enumerate() {
                if token.is_some() {
                    pending[user] = Some(values[user * vocab..(user + 1) * vocab].to_vec());
                }
            }
        }
        timings.decode_steps_s.push(step.elapsed().as_secs_f64());
        let step_traffic = model.mesh().rank_traffic().since(&traffic);
        timings.decode_traffic = timings.decode_traffic.plus(&step_traffic);
    }

    let out = seqs
        .into_iter()
        .map(|s| Generated {
            tokens: s.tokens,
            prompt_len: s.prompt_len,
            stopped: s.stopped,
        })
        .collect();
    Ok((out, timings))
}
