//! The CI regression run of the fuzz targets, without the fuzz engine: every committed seed
//! (`fuzz/corpus/<target>/`), every saved crash input (`fuzz/regressions/<target>/`) and every
//! artifact a local `cargo fuzz run` left (`fuzz/artifacts/<target>/`) goes through its target
//! function; none may panic or break a promise.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::panic::AssertUnwindSafe;

use phi3_fuzz::inputs::{artifacts_dir, corpus_dir, read_dir_inputs, regressions_dir};
use phi3_fuzz::{Context, Finding, Target, Verdict};
use phi3_model::GenerationConfig;

/// Replays every input of every target's corpus, regressions and artifacts directories.
#[test]
fn replay_corpus_regressions_and_artifacts() {
    let mut failures = Vec::new();
    let mut replayed = 0;
    for target in Target::ALL {
        let mut ctx = Context::new();
        for dir in [
            corpus_dir(target),
            regressions_dir(target),
            artifacts_dir(target),
        ] {
            for (path, bytes) in read_dir_inputs(&dir).unwrap() {
                replayed += 1;
                let outcome =
                    std::panic::catch_unwind(AssertUnwindSafe(|| target.run(&bytes, &mut ctx)));
                match outcome {
                    Ok(Ok(_)) => {}
                    Ok(Err(Finding::Violation(m))) => {
                        failures.push(format!("{}: broken promise: {m}", path.display()));
                    }
                    Ok(Err(Finding::Harness(m))) => {
                        failures.push(format!("{}: harness failure: {m}", path.display()));
                    }
                    Err(_) => failures.push(format!("{}: panicked", path.display())),
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // 13 seeds and 4 regressions are committed; the corpus may grow, never shrink.
    assert!(replayed >= 17, "only {replayed} inputs replayed");
}

/// Every committed seed is a valid input of its parser, so the engine starts past the first
/// checks (`generation_config.json` is a seed of the `config` target for
/// `GenerationConfig::from_json_str`, which the target also runs).
#[test]
fn committed_seeds_are_accepted() {
    for target in Target::ALL {
        let files = read_dir_inputs(&corpus_dir(target)).unwrap();
        assert!(files.len() >= 2, "{}: {} seeds", target.name(), files.len());
        let mut ctx = Context::new();
        for (path, bytes) in files {
            assert!(
                bytes.len() <= 4096,
                "{} is {} bytes",
                path.display(),
                bytes.len()
            );
            let verdict = target.run(&bytes, &mut ctx).unwrap();
            if path.ends_with("generation_config.json") {
                assert!(matches!(verdict, Verdict::Rejected(_)), "{verdict:?}");
                let text = std::str::from_utf8(&bytes).unwrap();
                GenerationConfig::from_json_str(text).unwrap();
            } else {
                assert!(
                    matches!(verdict, Verdict::Accepted(_)),
                    "{}: {verdict:?}",
                    path.display()
                );
            }
        }
    }
}

/// The inputs the earlier fuzzer found (accepted, then broken: NaN RoPE tables, an infinite
/// attention factor, a logit beyond f32) are now refused with a typed error naming the problem.
#[test]
fn found_inputs_are_refused() {
    let cases = [
        (Target::Config, "original-max-one.json", "InvalidValue"),
        (Target::Config, "rope-factor-subnormal.json", "BadFactor"),
        (Target::Config, "rope-theta-subnormal.json", "InvalidValue"),
        (
            Target::Reference,
            "logit-out-of-f32-range.json",
            "Inconsistent",
        ),
    ];
    for (target, name, kind) in cases {
        let bytes = std::fs::read(regressions_dir(target).join(name)).unwrap();
        match target.run(&bytes, &mut Context::new()) {
            Ok(Verdict::Rejected(error)) => assert!(error.contains(kind), "{name}: {error}"),
            other => panic!("{name}: {other:?}"),
        }
    }
}

/// `fuzz_one`, the engine's entry, returns quietly on valid and invalid inputs alike.
#[test]
fn fuzz_one_returns_on_typed_errors() {
    for target in Target::ALL {
        for input in [&b""[..], b"{", b"\x08\0\0\0\0\0\0\0{}      ", b"[1, 2]"] {
            phi3_fuzz::fuzz_one(target, input);
        }
    }
}
