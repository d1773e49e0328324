//! An insta snapshot of the report of a hand-made case: a reference fixture and a scripted model
//! that agrees with HF, then slips to HF's second choice, misses, and comes back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::Scripted;
use phi3_eval::{EvalMode, EvalOptions, Reference, run_teacher_forcing};

fn words(t: u32) -> String {
    const W: [&str; 16] = [
        "<unk>", "a", "b", "c", "d", " the", " cat", " sat", " on", " a", " mat", " dog", "\n",
        " ran", " to", ".",
    ];
    W.get(t as usize)
        .map_or_else(|| format!("<{t}>"), |w| (*w).to_owned())
}

#[test]
fn report_of_a_hand_made_case() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/small_reference.json");
    let reference = Reference::load(&path).unwrap();
    // Position 3 is the last prompt token: its logits predict generated[0] = 5.
    let mut model = Scripted::new(
        16,
        &[
            (3, &[5, 11, 12, 13, 14]),  // step 0: top-1
            (4, &[12, 6, 11, 13, 14]), // step 1: HF's second choice wins: top-5, argmax in HF top-5
            (5, &[15, 14, 1, 2, 3]),   // step 2: miss, argmax not in HF top-5
            (6, &[15, 8, 11, 12, 13]), // step 3: top-5, argmax 15 in HF top-5
            (7, &[9, 11, 12, 13, 14]), // step 4: top-1
            (8, &[10, 11, 12, 13, 14]), // step 5: top-1
        ],
    );
    let run =
        run_teacher_forcing(&mut model, &reference, &EvalOptions::default(), &mut |_| {}).unwrap();
    let report = &run.report;
    let text = format!(
        "{}{}\n\n{}",
        report.accuracy_lines(),
        report.yt_metrics(EvalMode::Tt, false, 1),
        report.table(&words)
    );
    insta::assert_snapshot!("report_text", text);
    insta::assert_snapshot!("report_json", report.to_json_pretty());
}
