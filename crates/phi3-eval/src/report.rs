//! The per-step eval report: JSON for tools, a short text table for people, and the seed's
//! accuracy lines.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::metrics::{EvalMode, YtMetrics};
use crate::teacher_forcing::PrefillMode;

/// One scored step of a teacher-forcing run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Step index, 0-based (step 0 scores the prompt's last logits).
    pub step: usize,
    /// Index of the reference token in prompt + generated (`prompt_len + step`).
    pub position: usize,
    /// The token fed last before these logits (the last prompt token at step 0).
    pub input_token: u32,
    /// The token HF generated here.
    pub reference_token: u32,
    /// The model's 5 best tokens, best first.
    pub device_top5: Vec<u32>,
    /// Their logits.
    pub device_top5_logits: Vec<f32>,
    /// HF's 5 best tokens here, when the reference has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hf_top5: Option<Vec<u32>>,
    /// The model's argmax is the reference token.
    pub top1: bool,
    /// The reference token is among the model's top 5.
    pub top5: bool,
    /// tt-metal's variant: the model's argmax is among HF's top 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argmax_in_hf_top5: Option<bool>,
    /// NaN or infinite logits at this step.
    pub non_finite: usize,
}

/// Totals over the steps of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Scored steps.
    pub total: usize,
    /// Top-1 hits.
    pub top1_hits: usize,
    /// Top-5 hits.
    pub top5_hits: usize,
    /// `top1_hits / total`.
    pub top1: f64,
    /// `top5_hits / total`.
    pub top5: f64,
    /// tt-metal's variant, hits (when the reference has HF's top 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argmax_in_hf_top5_hits: Option<usize>,
    /// tt-metal's variant, fraction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argmax_in_hf_top5: Option<f64>,
    /// The first step whose argmax is not the reference token: where the model starts to diverge.
    pub first_top1_miss: Option<usize>,
    /// The first step whose top 5 misses the reference token.
    pub first_top5_miss: Option<usize>,
    /// Steps with any NaN or infinite logit.
    pub non_finite_steps: usize,
}

/// The report of one teacher-forcing run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// The reference's model id.
    pub model_id: String,
    /// How the prompt entered the model.
    pub prefill_mode: PrefillMode,
    /// Prompt length.
    pub prompt_len: usize,
    /// Requested decode length (the scored steps are fewer only if HF stopped early).
    pub decode_len: usize,
    /// Totals.
    pub summary: Summary,
    /// Every scored step.
    pub steps: Vec<StepRecord>,
}

/// One accuracy line in the seed's format, e.g. `Top-1 accuracy: 92.00% (0.9200)`.
pub fn accuracy_line(label: &str, fraction: f64) -> String {
    format!("{label}: {:.2}% ({fraction:.4})", fraction * 100.0)
}

fn fraction(hits: usize, total: usize) -> f64 {
    if total == 0 {
        0.0
    } else {
        hits as f64 / total as f64
    }
}

impl Summary {
    /// Totals of `steps`.
    pub fn of(steps: &[StepRecord]) -> Self {
        let total = steps.len();
        let top1_hits = steps.iter().filter(|s| s.top1).count();
        let top5_hits = steps.iter().filter(|s| s.top5).count();
        let with_hf: Vec<bool> = steps.iter().filter_map(|s| s.argmax_in_hf_top5).collect();
        let hf_hits = (!with_hf.is_empty()).then(|| with_hf.iter().filter(|&&h| h).count());
        Summary {
            total,
            top1_hits,
            top5_hits,
            top1: fraction(top1_hits, total),
            top5: fraction(top5_hits, total),
            argmax_in_hf_top5_hits: hf_hits,
            argmax_in_hf_top5: hf_hits.map(|h| fraction(h, with_hf.len())),
            first_top1_miss: steps.iter().find(|s| !s.top1).map(|s| s.step),
            first_top5_miss: steps.iter().find(|s| !s.top5).map(|s| s.step),
            non_finite_steps: steps.iter().filter(|s| s.non_finite > 0).count(),
        }
    }
}

impl EvalReport {
    /// A report over `steps`, with its summary.
    pub fn new(
        model_id: String,
        prefill_mode: PrefillMode,
        prompt_len: usize,
        decode_len: usize,
        steps: Vec<StepRecord>,
    ) -> Self {
        EvalReport {
            model_id,
            prefill_mode,
            prompt_len,
            decode_len,
            summary: Summary::of(&steps),
            steps,
        }
    }

    /// The seed's two lines (`Top-1 accuracy: ...`, `Top-5 accuracy: ...`), then tt-metal's
    /// variant when the reference had HF's top 5; one `\n` after each line.
    pub fn accuracy_lines(&self) -> String {
        let mut out = String::new();
        out.push_str(&accuracy_line("Top-1 accuracy", self.summary.top1));
        out.push('\n');
        out.push_str(&accuracy_line("Top-5 accuracy", self.summary.top5));
        out.push('\n');
        if let Some(v) = self.summary.argmax_in_hf_top5 {
            out.push_str(&accuracy_line("Top-1 in HF top-5 (tt-metal)", v));
            out.push('\n');
        }
        out
    }

    /// The report as pretty JSON.
    pub fn to_json_pretty(&self) -> String {
        // Plain structs of numbers, strings and vectors always serialise.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The `YT_METRICS` record of this run (`decode_len` requested, `total` scored).
    pub fn yt_metrics(&self, mode: EvalMode, trace: bool, batch: usize) -> YtMetrics {
        YtMetrics {
            mode,
            trace,
            top1: self.summary.top1,
            top5: self.summary.top5,
            prefill_len: self.prompt_len,
            decode_len: self.decode_len,
            batch,
            total: self.summary.total,
        }
    }

    /// A text table, one row per step: step, position, reference token, hit (`top1`, `top5` or
    /// `MISS`), tt-metal's variant when known (`yes`/`no`), and the model's top 5 (best first; the
    /// argmax as `id="text"` when it is not the reference token). `token_text` renders a token
    /// id (e.g. the tokenizer's decode); it is shown quoted.
    pub fn table(&self, token_text: &dyn Fn(u32) -> String) -> String {
        let with_hf = self.steps.iter().any(|s| s.argmax_in_hf_top5.is_some());
        let reference: Vec<String> = self
            .steps
            .iter()
            .map(|s| format!("{} {:?}", s.reference_token, token_text(s.reference_token)))
            .collect();
        let ref_width = reference
            .iter()
            .map(|r| r.chars().count())
            .max()
            .unwrap_or(0)
            .max("reference".len());
        let mut out = String::new();
        let _ = write!(
            out,
            "{:>4} {:>5}  {:<ref_width$}  {:<4}",
            "step", "pos", "reference", "hit"
        );
        if with_hf {
            out.push_str("  inHF5");
        }
        out.push_str("  device top-5\n");
        for (s, r) in self.steps.iter().zip(&reference) {
            let hit = if s.top1 {
                "top1"
            } else if s.top5 {
                "top5"
            } else {
                "MISS"
            };
            let _ = write!(
                out,
                "{:>4} {:>5}  {:<ref_width$}  {hit:<4}",
                s.step, s.position, r
            );
            if with_hf {
                let v = match s.argmax_in_hf_top5 {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "-",
                };
                let _ = write!(out, "  {v:<5}");
            }
            out.push(' ');
            for (i, id) in s.device_top5.iter().enumerate() {
                let _ = write!(out, " {id}");
                if i == 0 && !s.top1 {
                    let _ = write!(out, "={:?}", token_text(*id));
                }
            }
            if s.non_finite > 0 {
                let _ = write!(out, "  ({} non-finite logits)", s.non_finite);
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(step: usize, reference: u32, top: [u32; 5], hf: Option<bool>) -> StepRecord {
        StepRecord {
            step,
            position: 10 + step,
            input_token: 1,
            reference_token: reference,
            device_top5: top.to_vec(),
            device_top5_logits: vec![5.0, 4.0, 3.0, 2.0, 1.0],
            hf_top5: hf.map(|_| vec![reference, 0, 0, 0, 0]),
            top1: top[0] == reference,
            top5: top.contains(&reference),
            argmax_in_hf_top5: hf,
            non_finite: 0,
        }
    }

    #[test]
    fn accuracy_line_matches_the_seed_format() {
        assert_eq!(
            accuracy_line("Top-1 accuracy", 0.92),
            "Top-1 accuracy: 92.00% (0.9200)"
        );
        assert_eq!(
            accuracy_line("Top-5 accuracy", 1.0),
            "Top-5 accuracy: 100.00% (1.0000)"
        );
        assert_eq!(
            accuracy_line("Top-1 accuracy", 2.0 / 3.0),
            "Top-1 accuracy: 66.67% (0.6667)"
        );
        assert_eq!(
            accuracy_line("Top-1 accuracy", 0.0),
            "Top-1 accuracy: 0.00% (0.0000)"
        );
    }

    #[test]
    fn summary_counts_hits_and_first_misses() {
        let steps = vec![
            step(0, 7, [7, 1, 2, 3, 4], Some(true)),
            step(1, 8, [7, 8, 2, 3, 4], Some(false)),
            step(2, 9, [7, 1, 2, 3, 4], Some(true)),
            step(3, 5, [5, 1, 2, 3, 4], Some(true)),
        ];
        let r = EvalReport::new("m".into(), PrefillMode::Prefill, 10, 4, steps);
        let s = &r.summary;
        assert_eq!((s.total, s.top1_hits, s.top5_hits), (4, 2, 3));
        assert_eq!((s.top1, s.top5), (0.5, 0.75));
        assert_eq!(
            (s.argmax_in_hf_top5_hits, s.argmax_in_hf_top5),
            (Some(3), Some(0.75))
        );
        assert_eq!((s.first_top1_miss, s.first_top5_miss), (Some(1), Some(2)));
        assert_eq!(
            r.accuracy_lines(),
            "Top-1 accuracy: 50.00% (0.5000)\nTop-5 accuracy: 75.00% (0.7500)\n\
             Top-1 in HF top-5 (tt-metal): 75.00% (0.7500)\n"
        );
        let m = r.yt_metrics(EvalMode::Tt, false, 1);
        assert_eq!(
            (m.prefill_len, m.decode_len, m.total, m.top1),
            (10, 4, 4, 0.5)
        );
    }

    #[test]
    fn no_hf_lists_means_no_variant() {
        let r = EvalReport::new(
            "m".into(),
            PrefillMode::Prefill,
            3,
            1,
            vec![step(0, 7, [7, 1, 2, 3, 4], None)],
        );
        assert_eq!(r.summary.argmax_in_hf_top5, None);
        assert_eq!(
            r.accuracy_lines(),
            "Top-1 accuracy: 100.00% (1.0000)\nTop-5 accuracy: 100.00% (1.0000)\n"
        );
        assert!(!r.table(&|t| t.to_string()).contains("inHF5"));
        assert!(!r.to_json_pretty().contains("argmax_in_hf_top5\""));
    }
}
