//! Ranking logits: top-k with a deterministic order, and the per-step hit tests of the eval.
//!
//! The order is total, so every run ranks the same logits the same way:
//! - a larger logit ranks first;
//! - equal logits (`-0.0 == 0.0`, `-inf == -inf`) rank by token id, **lowest id first** (this is
//!   also what `torch.argmax`, and so HF greedy generation, picks among equal maxima);
//! - NaN ranks below every number (NaNs among themselves by id, lowest first).

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// How many candidates the "top-5" metrics look at.
pub const TOP_K: usize = 5;

/// One ranked token: its id and its logit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Token id (the index into the logits).
    pub id: u32,
    /// The logit of that token.
    pub logit: f32,
}

/// The eval's total order: `Less` means `a` ranks before (above) `b`. See the module doc.
pub fn rank_order(a: &Candidate, b: &Candidate) -> Ordering {
    let by_value = match (a.logit.is_nan(), b.logit.is_nan()) {
        (false, false) => b.logit.partial_cmp(&a.logit).unwrap_or(Ordering::Equal),
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (true, true) => Ordering::Equal,
    };
    by_value.then(a.id.cmp(&b.id))
}

/// The `k` best tokens of `logits`, best first (fewer when `logits` has fewer than `k` entries).
pub fn top_k(logits: &[f32], k: usize) -> Vec<Candidate> {
    let mut best: Vec<Candidate> = Vec::with_capacity(k + 1);
    if k == 0 {
        return best;
    }
    for (id, &logit) in (0u32..).zip(logits) {
        let c = Candidate { id, logit };
        if best.len() == k {
            match best.last() {
                Some(last) if rank_order(&c, last) == Ordering::Less => {
                    best.pop();
                }
                _ => continue,
            }
        }
        let at = best.partition_point(|b| rank_order(b, &c) == Ordering::Less);
        best.insert(at, c);
    }
    best
}

/// How equal logits are ordered when ranking a step's candidates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TieBreak {
    /// This crate's total order ([`rank_order`]): equal logits by lowest token id first, like
    /// `torch.argmax`. What [`top_k`] does.
    #[default]
    LowestId,
    /// The order of torch's CPU `torch.topk(logits, k)`, which the seed bringup scored with (on bf16
    /// logits); see [`crate::torch_topk`]. Differs from `LowestId` among equal logits, and in that
    /// torch ranks NaN **first** (above every number) where `LowestId` ranks it last.
    TorchTopk,
}

/// The `k` best tokens of `logits`, best first, equal logits ordered by `tie`.
pub fn top_k_with(logits: &[f32], k: usize, tie: TieBreak) -> Vec<Candidate> {
    match tie {
        TieBreak::LowestId => top_k(logits, k),
        TieBreak::TorchTopk => crate::torch_topk::torch_topk(logits, k),
    }
}

/// The best token of `logits` (`None` when empty).
pub fn argmax(logits: &[f32]) -> Option<u32> {
    top_k(logits, 1).first().map(|c| c.id)
}

/// How many entries of `logits` are NaN or infinite.
pub fn non_finite_count(logits: &[f32]) -> usize {
    logits.iter().filter(|v| !v.is_finite()).count()
}

/// The hit tests of one eval step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepScore {
    /// The device's argmax is the reference token.
    pub top1: bool,
    /// The reference token is among the device's top 5.
    pub top5: bool,
    /// tt-metal's variant: the device's argmax is among HF's top 5 (when the reference has them).
    pub argmax_in_hf_top5: Option<bool>,
}

/// Ranks `logits` (the device's [`TOP_K`] best, equal logits ordered by `tie`) and scores the step
/// as [`score_step`] does; returns the candidates (for the step's record) and the score.
pub fn score_logits(
    logits: &[f32],
    tie: TieBreak,
    reference_token: u32,
    hf_top5: Option<&[u32]>,
) -> (Vec<Candidate>, StepScore) {
    let device_top = top_k_with(logits, TOP_K, tie);
    let score = score_step(&device_top, reference_token, hf_top5);
    (device_top, score)
}

/// Scores one step from the device's ranked candidates (best first, at least [`TOP_K`] unless the
/// vocabulary is smaller), the reference token and, when known, HF's top-5 ids.
pub fn score_step(
    device_top: &[Candidate],
    reference_token: u32,
    hf_top5: Option<&[u32]>,
) -> StepScore {
    let argmax = device_top.first().map(|c| c.id);
    StepScore {
        top1: argmax == Some(reference_token),
        top5: device_top
            .iter()
            .take(TOP_K)
            .any(|c| c.id == reference_token),
        argmax_in_hf_top5: hf_top5
            .map(|hf| argmax.is_some_and(|a| hf.iter().take(TOP_K).any(|&h| h == a))),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ids(c: &[Candidate]) -> Vec<u32> {
        c.iter().map(|c| c.id).collect()
    }

    #[test]
    fn top_k_orders_by_logit() {
        let logits = [0.5, 3.0, -1.0, 2.0, 7.5, 0.0, 2.5];
        assert_eq!(ids(&top_k(&logits, 5)), vec![4, 1, 6, 3, 0]);
        assert_eq!(top_k(&logits, 2)[0], Candidate { id: 4, logit: 7.5 });
        assert_eq!(argmax(&logits), Some(4));
    }

    #[test]
    fn ties_go_to_the_lowest_id() {
        let logits = [1.0, 2.0, 2.0, 0.0, 2.0, 2.0, 2.0, 2.0];
        assert_eq!(ids(&top_k(&logits, 5)), vec![1, 2, 4, 5, 6]);
        assert_eq!(argmax(&logits), Some(1));
        // Signed zeros are equal.
        assert_eq!(ids(&top_k(&[-0.0, 0.0, -1.0], 2)), vec![0, 1]);
        assert_eq!(ids(&top_k(&[0.0, -0.0], 1)), vec![0]);
    }

    #[test]
    fn nan_ranks_last_and_infinities_in_place() {
        let logits = [
            f32::NAN,
            f32::NEG_INFINITY,
            1.0,
            f32::INFINITY,
            f32::NAN,
            f32::NEG_INFINITY,
        ];
        assert_eq!(ids(&top_k(&logits, 6)), vec![3, 2, 1, 5, 0, 4]);
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), Some(0));
        assert_eq!(non_finite_count(&logits), 5);
    }

    #[test]
    fn short_and_empty_inputs() {
        assert_eq!(ids(&top_k(&[1.0, 3.0], 5)), vec![1, 0]);
        assert!(top_k(&[], 5).is_empty());
        assert!(top_k(&[1.0], 0).is_empty());
        assert_eq!(argmax(&[]), None);
    }

    #[test]
    fn score_step_hits() {
        // Device ranking: 7, 3, 9, 1, 4, then 8.
        let logits = [0.0, 5.0, 0.0, 8.0, 4.0, 0.0, 0.0, 9.0, 3.0, 6.0];
        let top = top_k(&logits, TOP_K);
        assert_eq!(ids(&top), vec![7, 3, 9, 1, 4]);

        let hit = score_step(&top, 7, None);
        assert_eq!(
            hit,
            StepScore {
                top1: true,
                top5: true,
                argmax_in_hf_top5: None
            }
        );
        let second = score_step(&top, 3, Some(&[3, 7, 0, 2, 5]));
        assert_eq!(
            second,
            StepScore {
                top1: false,
                top5: true,
                argmax_in_hf_top5: Some(true)
            }
        );
        let fifth = score_step(&top, 4, Some(&[4, 1, 0, 2, 5]));
        assert_eq!(
            fifth,
            StepScore {
                top1: false,
                top5: true,
                argmax_in_hf_top5: Some(false)
            }
        );
        let sixth = score_step(&top, 8, Some(&[8, 0, 2, 5, 6]));
        assert_eq!(
            sixth,
            StepScore {
                top1: false,
                top5: false,
                argmax_in_hf_top5: Some(false)
            }
        );
        // A ranking longer than 5 still scores top-5 on the first five only.
        let top6 = top_k(&logits, 6);
        assert!(!score_step(&top6, 8, None).top5);
        assert_eq!(
            score_step(&[], 1, Some(&[1])),
            StepScore {
                top1: false,
                top5: false,
                argmax_in_hf_top5: Some(false)
            }
        );
    }

    #[test]
    fn tie_break_variants() {
        let mut x = vec![0.0f32; 32064];
        for i in [7, 100, 30000] {
            x[i] = 5.0;
        }
        assert_eq!(
            ids(&top_k_with(&x, 5, TieBreak::LowestId)),
            vec![7, 100, 30000, 0, 1]
        );
        assert_eq!(
            ids(&top_k_with(&x, 5, TieBreak::TorchTopk)),
            vec![100, 30000, 7, 3, 1]
        );
        assert_eq!(TieBreak::default(), TieBreak::LowestId);
        // torch's top-1 here is 7, its top-5 order puts 100 first: score_logits takes the first.
        let (top, score) = score_logits(&x, TieBreak::TorchTopk, 7, None);
        assert_eq!(top[0].id, 100);
        assert!(!score.top1 && score.top5);
        let (top, score) = score_logits(&x, TieBreak::LowestId, 7, Some(&[7, 1, 2, 3, 4]));
        assert_eq!(top, top_k(&x, TOP_K));
        assert!(score.top1 && score.top5 && score.argmax_in_hf_top5 == Some(true));
    }

    fn naive_top_k(logits: &[f32], k: usize) -> Vec<u32> {
        let mut all: Vec<Candidate> = (0u32..)
            .zip(logits)
            .map(|(id, &logit)| Candidate { id, logit })
            .collect();
        all.sort_by(rank_order);
        all.into_iter().take(k).map(|c| c.id).collect()
    }

    proptest! {
        #[test]
        fn top_k_matches_a_full_sort(
            // Few distinct values, so ties are common; NaN and infinities included.
            raw in proptest::collection::vec(0u8..12, 0..300),
            k in 0usize..12,
        ) {
            let logits: Vec<f32> = raw
                .iter()
                .map(|&r| match r {
                    9 => f32::NAN,
                    10 => f32::INFINITY,
                    11 => f32::NEG_INFINITY,
                    v => f32::from(v) * 0.5 - 2.0,
                })
                .collect();
            prop_assert_eq!(ids(&top_k(&logits, k)), naive_top_k(&logits, k));
        }
    }
}
