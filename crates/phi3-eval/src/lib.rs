//! Teacher-forcing evaluation of a Phi-3 implementation against HuggingFace references, in the
//! seed bringup's own terms (docs/EVAL.md).
//!
//! - [`reference`]: the reference file (HF fp32 greedy tokens, HF's top 5 per step, model and
//!   tokenizer identity) and its checks; [`fingerprint`]: the model and tokenizer hashes.
//! - [`teacher_forcing`]: the eval loop over a [`TeacherForcedModel`], which the model's adapter
//!   implements (this crate does not depend on the model).
//! - [`scoring`]: top-k with a deterministic order and the per-step hit tests; [`torch_topk`]:
//!   torch's CPU `topk` order among equal logits (how the seed scored bf16 logits).
//! - [`report`]: the per-step report (JSON, text table) and the `Top-1 accuracy: ...` lines.
//! - [`metrics`]: the `YT_METRICS={...}` automation line.
//! - [`synthetic`]: run_eval.py's synthetic prompts.
//!
//! The crate prints nothing; the caller decides what to show.

pub mod fingerprint;
pub mod metrics;
pub mod reference;
pub mod report;
pub mod scoring;
pub mod synthetic;
pub mod teacher_forcing;
pub mod torch_topk;

pub use fingerprint::{model_fingerprint, tokenizer_fingerprint};
pub use metrics::{EvalMode, MetricsError, YtMetrics};
pub use reference::{HfStep, Reference, ReferenceError, prompt_text_of_file};
pub use report::{EvalReport, StepRecord, Summary, accuracy_line};
pub use scoring::{Candidate, TOP_K, TieBreak, score_logits, top_k, top_k_with};
pub use synthetic::{SyntheticError, synthetic_prompt};
pub use teacher_forcing::{
    EvalError, EvalOptions, EvalRun, ModelError, Phase, PrefillMode, Progress, TeacherForcedModel,
    run_teacher_forcing, run_teacher_forcing_with,
};
pub use torch_topk::torch_topk;
