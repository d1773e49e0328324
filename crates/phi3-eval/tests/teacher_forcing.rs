//! The eval loop against a scripted fake model: exact calls, exact indices scored, errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Call, Scripted, reference};
use phi3_eval::{
    EvalError, EvalOptions, Phase, PrefillMode, Progress, TieBreak, run_teacher_forcing,
    run_teacher_forcing_with, torch_topk,
};

const PROMPT: [u32; 3] = [10, 11, 12];
const GENERATED: [u32; 4] = [20, 21, 22, 23];
const VOCAB: usize = 32;

/// Rankings keyed by the position of the last token fed: position 2 is the prompt's end and
/// predicts GENERATED[0]; position 2 + i predicts GENERATED[i].
fn model() -> Scripted {
    Scripted::new(
        VOCAB,
        &[
            (2, &[20, 1, 2, 3, 4]),     // step 0: top-1 hit
            (3, &[5, 21, 6, 7, 8]),     // step 1: top-5 hit only
            (4, &[5, 6, 7, 8, 9]),      // step 2: miss
            (5, &[23, 22, 1, 2, 3]),    // step 3: top-1 hit
            (6, &[31, 30, 29, 28, 27]), // never asked: GENERATED[3] is never fed
        ],
    )
}

#[test]
fn prefill_mode_calls_and_scores_exactly_as_the_seed() {
    let r = reference(&PROMPT, &GENERATED, 4, VOCAB, None);
    let mut m = model();
    let mut seen = Vec::new();
    let run =
        run_teacher_forcing(&mut m, &r, &EvalOptions::default(), &mut |p| seen.push(p)).unwrap();

    assert_eq!(
        m.calls,
        vec![
            Call::Reset,
            Call::Prefill(PROMPT.to_vec()),
            Call::Decode(20),
            Call::Decode(21),
            Call::Decode(22)
        ]
    );
    let rep = &run.report;
    let steps: Vec<(usize, usize, u32, u32, bool, bool)> = rep
        .steps
        .iter()
        .map(|s| {
            (
                s.step,
                s.position,
                s.input_token,
                s.reference_token,
                s.top1,
                s.top5,
            )
        })
        .collect();
    assert_eq!(
        steps,
        vec![
            (0, 3, 12, 20, true, true),
            (1, 4, 20, 21, false, true),
            (2, 5, 21, 22, false, false),
            (3, 6, 22, 23, true, true),
        ]
    );
    assert_eq!(rep.steps[1].device_top5, vec![5, 21, 6, 7, 8]);
    assert_eq!(
        rep.steps[1].device_top5_logits,
        vec![10.0, 9.0, 8.0, 7.0, 6.0]
    );
    assert_eq!(
        (
            rep.summary.top1_hits,
            rep.summary.top5_hits,
            rep.summary.total
        ),
        (2, 3, 4)
    );
    assert_eq!((rep.summary.top1, rep.summary.top5), (0.5, 0.75));
    assert_eq!((rep.prompt_len, rep.decode_len), (3, 4));
    assert_eq!(rep.summary.argmax_in_hf_top5, None);
    assert_eq!(
        seen,
        vec![
            Progress {
                phase: Phase::Prefill,
                done: 1,
                total: 4
            },
            Progress {
                phase: Phase::Decode,
                done: 2,
                total: 4
            },
            Progress {
                phase: Phase::Decode,
                done: 3,
                total: 4
            },
            Progress {
                phase: Phase::Decode,
                done: 4,
                total: 4
            },
        ]
    );
}

#[test]
fn prefill_decode_feeds_the_prompt_token_by_token_with_the_same_scores() {
    let r = reference(&PROMPT, &GENERATED, 4, VOCAB, None);
    let base = run_teacher_forcing(&mut model(), &r, &EvalOptions::default(), &mut |_| {}).unwrap();
    let mut m = model();
    let mut seen = Vec::new();
    let opts = EvalOptions {
        prefill_mode: PrefillMode::PrefillDecode,
        decode_len: None,
    };
    let run = run_teacher_forcing(&mut m, &r, &opts, &mut |p| {
        seen.push((p.phase, p.done, p.total))
    })
    .unwrap();
    assert_eq!(
        m.calls,
        vec![
            Call::Reset,
            Call::Decode(10),
            Call::Decode(11),
            Call::Decode(12),
            Call::Decode(20),
            Call::Decode(21),
            Call::Decode(22)
        ]
    );
    assert_eq!(run.report.steps, base.report.steps);
    assert_eq!(run.report.prefill_mode, PrefillMode::PrefillDecode);
    assert_eq!(
        seen,
        vec![
            (Phase::Prefill, 1, 6),
            (Phase::Prefill, 2, 6),
            (Phase::Prefill, 3, 6),
            (Phase::Decode, 4, 6),
            (Phase::Decode, 5, 6),
            (Phase::Decode, 6, 6)
        ]
    );
}

#[test]
fn tt_metal_variant_uses_hf_top5() {
    let hf = [
        [20, 1, 2, 3, 4],
        [21, 5, 9, 10, 11],
        [22, 1, 2, 3, 4],
        [23, 1, 2, 3, 4],
    ];
    let r = reference(&PROMPT, &GENERATED, 4, VOCAB, Some(&hf));
    let run = run_teacher_forcing(&mut model(), &r, &EvalOptions::default(), &mut |_| {}).unwrap();
    let variant: Vec<Option<bool>> = run
        .report
        .steps
        .iter()
        .map(|s| s.argmax_in_hf_top5)
        .collect();
    // Step 1: device argmax 5 is in HF's [21, 5, ...]; step 2: argmax 5 is not in [22, 1, 2, 3, 4].
    assert_eq!(
        variant,
        vec![Some(true), Some(true), Some(false), Some(true)]
    );
    assert_eq!(run.report.summary.argmax_in_hf_top5_hits, Some(3));
    assert_eq!(
        run.report.steps[1].hf_top5.as_deref(),
        Some(&[21, 5, 9, 10, 11][..])
    );
}

#[test]
fn decode_len_limits_the_steps() {
    let r = reference(&PROMPT, &GENERATED, 4, VOCAB, None);
    let mut m = model();
    let opts = EvalOptions {
        decode_len: Some(2),
        ..EvalOptions::default()
    };
    let run = run_teacher_forcing(&mut m, &r, &opts, &mut |_| {}).unwrap();
    assert_eq!(
        m.calls,
        vec![
            Call::Reset,
            Call::Prefill(PROMPT.to_vec()),
            Call::Decode(20)
        ]
    );
    assert_eq!((run.report.summary.total, run.report.decode_len), (2, 2));

    // One step: prefill only, no decode at all.
    let mut m = model();
    let opts = EvalOptions {
        decode_len: Some(1),
        ..EvalOptions::default()
    };
    let run = run_teacher_forcing(&mut m, &r, &opts, &mut |_| {}).unwrap();
    assert_eq!(m.calls, vec![Call::Reset, Call::Prefill(PROMPT.to_vec())]);
    assert_eq!(run.report.summary.top1, 1.0);
}

#[test]
fn hf_stopping_early_scores_what_was_generated() {
    // Asked for 6 tokens; HF stopped after 4 (the last being a stop token).
    let r = reference(&PROMPT, &GENERATED, 6, VOCAB, None);
    let run = run_teacher_forcing(&mut model(), &r, &EvalOptions::default(), &mut |_| {}).unwrap();
    assert_eq!((run.report.decode_len, run.report.summary.total), (6, 4));
    let m = run.report.yt_metrics(phi3_eval::EvalMode::Tt, false, 1);
    assert_eq!((m.decode_len, m.total), (6, 4));
}

#[test]
fn errors_are_typed_and_located() {
    let r = reference(&PROMPT, &GENERATED, 4, VOCAB, None);
    let opts = EvalOptions::default();

    let e = run_teacher_forcing(&mut Scripted::new(64, &[]), &r, &opts, &mut |_| {}).unwrap_err();
    assert!(
        matches!(
            e,
            EvalError::VocabMismatch {
                model: 64,
                reference: 32
            }
        ),
        "{e}"
    );

    let too_long = EvalOptions {
        decode_len: Some(5),
        ..opts
    };
    let e = run_teacher_forcing(&mut model(), &r, &too_long, &mut |_| {}).unwrap_err();
    assert!(
        matches!(
            e,
            EvalError::DecodeLenTooLong {
                requested: 5,
                available: 4
            }
        ),
        "{e}"
    );

    let zero = EvalOptions {
        decode_len: Some(0),
        ..opts
    };
    assert!(matches!(
        run_teacher_forcing(&mut model(), &r, &zero, &mut |_| {}),
        Err(EvalError::ZeroDecodeLen)
    ));

    let mut failing = model();
    failing.fail_at = Some(4);
    let e = run_teacher_forcing(&mut failing, &r, &opts, &mut |_| {}).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the model failed during decode step 2: device out of memory"
    );

    let mut short = model();
    short.wrong_len_at = Some((2, 31));
    let e = run_teacher_forcing(&mut short, &r, &opts, &mut |_| {}).unwrap_err();
    assert!(
        matches!(
            e,
            EvalError::LogitsLength {
                expected: 32,
                found: 31,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "the model returned 31 logits at the end of the prompt, expected 32"
    );

    let mut empty = reference(&PROMPT, &GENERATED, 4, VOCAB, None);
    empty.prompt_tokens.clear();
    assert!(matches!(
        run_teacher_forcing(&mut model(), &empty, &opts, &mut |_| {}),
        Err(EvalError::EmptyReference)
    ));
}

#[test]
fn non_finite_logits_are_counted_not_fatal() {
    let r = reference(&PROMPT, &GENERATED, 4, VOCAB, None);
    let mut m = model();
    m.nan_at = Some(3);
    let run = run_teacher_forcing(&mut m, &r, &EvalOptions::default(), &mut |_| {}).unwrap();
    let counts: Vec<usize> = run.report.steps.iter().map(|s| s.non_finite).collect();
    assert_eq!(counts, vec![0, 1, 0, 0]);
    assert_eq!(run.report.summary.non_finite_steps, 1);
}

#[test]
fn tie_break_chooses_the_order_of_equal_logits() {
    // A vocabulary-sized model: every step's top 5 is a few distinct logits and then zeros that
    // tie, so the order of the zeros (and of the NaN at step 2, which torch ranks first) depends
    // on the tie-break.
    const V: usize = 32064;
    let scripted = || {
        let mut m = Scripted::new(
            V,
            &[
                (2, &[20, 1, 2, 3, 4]),
                (3, &[21]),
                (4, &[22, 30000]),
                (5, &[]),
            ],
        );
        m.nan_at = Some(4);
        m
    };
    let r = reference(&PROMPT, &GENERATED, 4, V, None);
    let opts = EvalOptions::default();
    let base = run_teacher_forcing(&mut scripted(), &r, &opts, &mut |_| {}).unwrap();
    let lowest =
        run_teacher_forcing_with(&mut scripted(), &r, &opts, TieBreak::LowestId, &mut |_| {})
            .unwrap();
    assert_eq!(lowest.report, base.report);
    let torch =
        run_teacher_forcing_with(&mut scripted(), &r, &opts, TieBreak::TorchTopk, &mut |_| {})
            .unwrap();

    let lowest_top5: Vec<&[u32]> = lowest
        .report
        .steps
        .iter()
        .map(|s| &s.device_top5[..])
        .collect();
    assert_eq!(
        lowest_top5,
        vec![
            &[20, 1, 2, 3, 4][..],
            &[21, 0, 1, 2, 3],
            &[22, 30000, 0, 1, 2],
            &[0, 1, 2, 3, 4]
        ]
    );
    // TorchTopk: exactly torch_topk of the same logits, step by step.
    let m = scripted();
    for (s, pos) in torch.report.steps.iter().zip(2..) {
        let mut logits = vec![0.0f32; V];
        for (i, &t) in m.rankings[&pos].iter().enumerate() {
            logits[t as usize] = 10.0 - i as f32;
        }
        if pos == 4 {
            logits[V - 1] = f32::NAN;
        }
        let want: Vec<u32> = torch_topk(&logits, 5).iter().map(|c| c.id).collect();
        assert_eq!(s.device_top5, want, "step {}", s.step);
    }
    // Step 0 has no ties in its top 5; step 2's NaN is torch's top 1, so its top-1 hit is lost.
    assert_eq!(
        torch.report.steps[0].device_top5,
        lowest.report.steps[0].device_top5
    );
    assert_eq!(torch.report.steps[2].device_top5[0], V as u32 - 1);
    assert!(lowest.report.steps[2].top1 && !torch.report.steps[2].top1);
    assert!(torch.report.steps[2].top5);
}
