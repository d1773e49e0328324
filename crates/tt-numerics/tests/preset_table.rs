//! Snapshot of every preset's table, and of one with overrides.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tt_numerics::Preset;
use tt_numerics::table::all_presets_table;

#[test]
fn every_preset_table() {
    insta::assert_snapshot!(all_presets_table());
}

#[test]
fn overridden_preset_table() {
    let p = Preset::parse("performance,ff2.weights=bfp4,sdpa.fidelity=hifi4,lm_head.output=bf16")
        .unwrap();
    insta::assert_snapshot!(p.to_string());
}
