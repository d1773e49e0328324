//! The teacher-forcing eval of the seed bringup (docs/EVAL.md, FACTS §5), against any model that
//! implements [`TeacherForcedModel`].
//!
//! With a reference of prompt `p` (length `P`) and generated tokens `g[0..N]`:
//! 1. the model prefills `p` (or, with [`PrefillMode::PrefillDecode`], decodes `p` one token at a
//!    time); its last logits are scored against `g[0]`;
//! 2. for `i` in `0..N-1` it decodes `g[i]` and the logits are scored against `g[i+1]`.
//!
//! So N steps are scored with N-1 decode calls; `g[N-1]` is never fed. A step is a top-1 hit when
//! the model's argmax is the reference token, a top-5 hit when the reference token is among the
//! model's 5 best (ranking: crate::scoring). When the reference carries HF's top-5 lists, each step
//! also records tt-metal's variant: whether the model's argmax is among HF's top 5.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::reference::Reference;
use crate::report::{EvalReport, StepRecord};
use crate::scoring::{TieBreak, non_finite_count, score_logits};

/// The error type a model adapter returns.
pub type ModelError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A causal LM that can be driven one step at a time: what the eval needs of the model.
pub trait TeacherForcedModel {
    /// Length of the logits the model returns.
    fn vocab_size(&self) -> usize;
    /// Forgets any previous sequence (empties the KV cache); the next call starts at position 0.
    fn reset(&mut self) -> Result<(), ModelError>;
    /// Runs `tokens` at the next positions as one prefill and returns the logits of the last one.
    fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>, ModelError>;
    /// Runs one token at the next position and returns its logits.
    fn decode(&mut self, token: u32) -> Result<Vec<f32>, ModelError>;
}

/// How the prompt enters the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrefillMode {
    /// One prefill call over the whole prompt (the seed's default).
    #[default]
    Prefill,
    /// One decode call per prompt token (the seed's `--prefill_decode`).
    PrefillDecode,
}

/// Options of one eval run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EvalOptions {
    /// How the prompt enters the model.
    pub prefill_mode: PrefillMode,
    /// How many generated tokens to score (`--max-new-tokens`); `None`: the reference's
    /// `max_new_tokens`. Fewer are scored if HF stopped early.
    pub decode_len: Option<usize>,
}

/// Which part of the run a progress report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Feeding the prompt.
    Prefill,
    /// Teacher-forced decode steps.
    Decode,
}

/// Progress of a run, reported after every model call: `done` of `total` calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The phase of the call that just finished.
    pub phase: Phase,
    /// Model calls done so far.
    pub done: usize,
    /// Model calls in the whole run (1 or `prompt_len` for the prompt, plus N-1 decodes).
    pub total: usize,
}

/// Why an eval run stopped.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The model's vocabulary is not the reference's.
    #[error("the model has a vocabulary of {model} but the reference was made with {reference}")]
    VocabMismatch {
        /// `TeacherForcedModel::vocab_size`.
        model: usize,
        /// The reference's `model.vocab_size`.
        reference: usize,
    },
    /// More tokens were asked for than the reference was made with.
    #[error(
        "asked to score {requested} tokens but the reference was made with max_new_tokens = {available}"
    )]
    DecodeLenTooLong {
        /// Requested decode length.
        requested: usize,
        /// The reference's `max_new_tokens`.
        available: usize,
    },
    /// A decode length of zero scores nothing.
    #[error("the decode length must be at least 1")]
    ZeroDecodeLen,
    /// The reference has no prompt or no generated token (an unvalidated reference).
    #[error("the reference has an empty prompt or no generated tokens")]
    EmptyReference,
    /// The model failed.
    #[error("the model failed during {what}: {source}")]
    Model {
        /// "reset", "prefill", "prompt token 3", "decode step 7"...
        what: String,
        /// The adapter's error.
        #[source]
        source: ModelError,
    },
    /// The model returned logits of the wrong length.
    #[error("the model returned {found} logits at {what}, expected {expected}")]
    LogitsLength {
        /// Where.
        what: String,
        /// `vocab_size`.
        expected: usize,
        /// What came back.
        found: usize,
    },
}

/// The result of one run: the deterministic report and the wall times of its two phases.
#[derive(Debug, Clone)]
pub struct EvalRun {
    /// Per-step records and summary.
    pub report: EvalReport,
    /// Time spent feeding the prompt.
    pub prefill_time: Duration,
    /// Time spent in the N-1 decode steps.
    pub decode_time: Duration,
}

/// Runs the teacher-forcing eval of `model` against `reference` (see the module doc). Calls
/// `progress` after every model call. Starts with `model.reset()`. Equal logits rank lowest id
/// first ([`TieBreak::LowestId`]); [`run_teacher_forcing_with`] chooses.
pub fn run_teacher_forcing<M: TeacherForcedModel + ?Sized>(
    model: &mut M,
    reference: &Reference,
    options: &EvalOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<EvalRun, EvalError> {
    run_teacher_forcing_with(model, reference, options, TieBreak::LowestId, progress)
}

/// [`run_teacher_forcing`] with the order of equal logits chosen by `tie`: each step's top 5 (and
/// so its top-1, top-5 and argmax-in-HF-top-5 results and the recorded `device_top5`) come from
/// `top_k_with(logits, TOP_K, tie)` ([`crate::scoring::top_k_with`]). [`TieBreak::TorchTopk`] scores the way the seed bringup
/// did (`torch.topk` on CPU), which matters when the device's logits (bf16, bfp8) tie.
pub fn run_teacher_forcing_with<M: TeacherForcedModel + ?Sized>(
    model: &mut M,
    reference: &Reference,
    options: &EvalOptions,
    tie: TieBreak,
    progress: &mut dyn FnMut(Progress),
) -> Result<EvalRun, EvalError> {
    let vocab = model.vocab_size();
    if vocab != reference.model.vocab_size {
        return Err(EvalError::VocabMismatch {
            model: vocab,
            reference: reference.model.vocab_size,
        });
    }
    let requested = options.decode_len.unwrap_or(reference.max_new_tokens);
    if requested == 0 {
        return Err(EvalError::ZeroDecodeLen);
    }
    if requested > reference.max_new_tokens {
        return Err(EvalError::DecodeLenTooLong {
            requested,
            available: reference.max_new_tokens,
        });
    }
    let n = requested.min(reference.generated_tokens.len());
    let prompt = &reference.prompt_tokens;
    let Some(&last_prompt_token) = prompt.last() else {
        return Err(EvalError::EmptyReference);
    };
    if n == 0 {
        return Err(EvalError::EmptyReference);
    }
    let generated = &reference.generated_tokens[..n];
    let prompt_calls = match options.prefill_mode {
        PrefillMode::Prefill => 1,
        PrefillMode::PrefillDecode => prompt.len(),
    };
    let total = prompt_calls + n - 1;
    tracing::info!(prompt_len = prompt.len(), decode_len = n, mode = ?options.prefill_mode, "teacher forcing");

    model.reset().map_err(|source| EvalError::Model {
        what: "reset".into(),
        source,
    })?;
    let started = Instant::now();
    let mut logits = Vec::new();
    match options.prefill_mode {
        PrefillMode::Prefill => {
            logits = model.prefill(prompt).map_err(|source| EvalError::Model {
                what: "prefill".into(),
                source,
            })?;
            progress(Progress {
                phase: Phase::Prefill,
                done: 1,
                total,
            });
        }
        PrefillMode::PrefillDecode => {
            for (i, &t) in prompt.iter().enumerate() {
                logits = model.decode(t).map_err(|source| EvalError::Model {
                    what: format!("prompt token {i}"),
                    source,
                })?;
                progress(Progress {
                    phase: Phase::Prefill,
                    done: i + 1,
                    total,
                });
            }
        }
    }
    let prefill_time = started.elapsed();

    let started = Instant::now();
    let mut steps = Vec::with_capacity(n);
    let mut input_token = last_prompt_token;
    for step in 0..n {
        if step > 0 {
            input_token = generated[step - 1];
            logits = model
                .decode(input_token)
                .map_err(|source| EvalError::Model {
                    what: format!("decode step {step}"),
                    source,
                })?;
            progress(Progress {
                phase: Phase::Decode,
                done: prompt_calls + step,
                total,
            });
        }
        if logits.len() != vocab {
            let what = if step == 0 {
                "the end of the prompt".to_owned()
            } else {
                format!("decode step {step}")
            };
            return Err(EvalError::LogitsLength {
                what,
                expected: vocab,
                found: logits.len(),
            });
        }
        let hf_top5 = reference.hf_top5_ids(step);
        let (device_top, score) = score_logits(&logits, tie, generated[step], hf_top5);
        steps.push(StepRecord {
            step,
            position: prompt.len() + step,
            input_token,
            reference_token: generated[step],
            device_top5: device_top.iter().map(|c| c.id).collect(),
            device_top5_logits: device_top.iter().map(|c| c.logit).collect(),
            hf_top5: hf_top5.map(<[u32]>::to_vec),
            top1: score.top1,
            top5: score.top5,
            argmax_in_hf_top5: score.argmax_in_hf_top5,
            non_finite: non_finite_count(&logits),
        });
    }
    let decode_time = started.elapsed();

    let report = EvalReport::new(
        reference.model.id.clone(),
        options.prefill_mode,
        prompt.len(),
        requested,
        steps,
    );
    Ok(EvalRun {
        report,
        prefill_time,
        decode_time,
    })
}
