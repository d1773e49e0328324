//! phi3-fuzz: a stable-Rust mutation fuzzer for the parsers that read user files.
//!
//! cargo-fuzz needs a nightly toolchain; this crate needs none. It mutates inputs from a small
//! committed corpus (`fuzz/corpus/<target>/`) with byte-level and JSON-aware mutations, runs
//! each through a parser under `catch_unwind`, and treats any panic, or any accepted input that
//! breaks a promise of the parser, as a crash: the input is saved to `fuzz/crashes/<target>/`
//! and the run exits non-zero. See docs/ROBUSTNESS.md for the commands and the recorded runs.
//!
//! - [`targets`]: the four targets (`config`, `safetensors-header`, `index`, `reference`).
//! - [`mutate`], [`json`]: the mutations.
//! - [`campaign`]: the loop, outcome-guided corpus growth, crash saving; [`signature`]: the
//!   outcome signatures that guide it.
//! - [`seeds`]: the built-in seeds and the default corpus and crash directories.

pub mod campaign;
pub mod json;
pub mod mutate;
pub mod seeds;
pub mod signature;
pub mod targets;

pub use campaign::{Budget, Crash, Monitor, Options, Report, load_corpus, run, run_target};
pub use seeds::{builtin_seeds, default_corpus_dir, default_crash_dir};
pub use targets::Target;

/// The committed corpus of `target` (or its built-in seeds when the directory is empty).
pub fn seeds_of(target: Target, max_len: usize) -> std::io::Result<Vec<Vec<u8>>> {
    let files = load_corpus(&default_corpus_dir(target), max_len)?;
    if files.is_empty() {
        return Ok(builtin_seeds(target).into_iter().map(|(_, b)| b).collect());
    }
    Ok(files.into_iter().map(|(_, b)| b).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::{Context, Finding, Verdict};

    /// Every committed seed is accepted by its parser: the corpus starts from valid inputs.
    #[test]
    fn committed_seeds_are_accepted() {
        for target in Target::ALL {
            let files = load_corpus(&default_corpus_dir(target), 1 << 20).unwrap();
            assert!(files.len() >= 2, "{}: {} seeds", target.name(), files.len());
            let mut ctx = Context::new();
            for (path, bytes) in files {
                assert!(
                    bytes.len() <= 4096,
                    "{} is {} bytes",
                    path.display(),
                    bytes.len()
                );
                let outcome = target.run(&bytes, &mut ctx).unwrap();
                let generation_only = path.ends_with("generation_config.json");
                match outcome {
                    Verdict::Accepted(_) => assert!(!generation_only),
                    Verdict::Rejected(kind) => assert!(
                        generation_only && kind.ends_with("|gen-ok"),
                        "{}: {kind}",
                        path.display()
                    ),
                }
            }
        }
    }

    /// The CI run: a few thousand seeded mutations per target, no crash, and the mutations
    /// reach a variety of outcomes (a fuzzer stuck on one error would pass vacuously).
    #[test]
    fn each_target_survives_seeded_mutations() {
        for (target, min_outcomes) in [
            (Target::Config, 40),
            (Target::SafetensorsHeader, 30),
            (Target::Index, 10),
            (Target::Reference, 20),
        ] {
            let seeds = seeds_of(target, 64 * 1024).unwrap();
            let options = Options::new(0x5eed, Budget::Iterations(3000));
            let report = run_target(target, seeds, &options, None, &mut |_| {}).unwrap();
            let crashes: Vec<_> = report
                .crashes
                .iter()
                .map(|c| {
                    (
                        c.message.clone(),
                        String::from_utf8_lossy(&c.input).into_owned(),
                    )
                })
                .collect();
            assert!(crashes.is_empty(), "{}: {crashes:?}", target.name());
            assert!(report.executions > 3000);
            assert!(
                report.outcomes >= min_outcomes,
                "{}: only {} distinct outcomes",
                target.name(),
                report.outcomes
            );
            assert!(report.accepted > 0, "{}: nothing accepted", target.name());
        }
    }

    /// Inputs the long runs found (fuzz/regressions/<target>/) are now refused with a typed
    /// error, and name what is wrong.
    #[test]
    fn found_inputs_are_refused() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
        let mut count = 0;
        for target in Target::ALL {
            let files = load_corpus(&root.join(target.name()), 1 << 20).unwrap();
            for (path, bytes) in files {
                count += 1;
                let outcome = target.run(&bytes, &mut Context::new());
                match outcome {
                    Ok(Verdict::Rejected(kind)) => assert!(
                        kind.starts_with("InvalidValue")
                            || kind.starts_with("BadFactor")
                            || kind.starts_with("Inconsistent"),
                        "{}: {kind}",
                        path.display()
                    ),
                    other => panic!("{}: {other:?}", path.display()),
                }
            }
        }
        assert_eq!(count, 4);
    }

    /// A panic inside the harness is caught, saved with its message, and stops the campaign.
    #[test]
    fn panics_are_caught_saved_and_stop_the_run() {
        let crash_dir = tempfile::tempdir().unwrap();
        // Panics ("attempt to divide by zero") when the document has `"a": 0`.
        let mut harness = |input: &[u8], _: &mut Context| {
            let v: serde_json::Value = serde_json::from_slice(input).unwrap_or_default();
            if let Some(a) = v.get("a").and_then(serde_json::Value::as_u64) {
                std::hint::black_box(10 / a);
            }
            Ok(Verdict::Rejected(format!("{}", input.len() % 7)))
        };
        let mut options = Options::new(1, Budget::Iterations(200_000));
        options.crash_dir = Some(crash_dir.path().to_path_buf());
        let report = run(
            &mut harness,
            mutate::Format::Json,
            vec![br#"{"a": 5, "b": [1, 2]}"#.to_vec()],
            &options,
            None,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(report.crashes.len(), 1);
        let crash = &report.crashes[0];
        assert!(
            crash.message.contains("divide by zero"),
            "{}",
            crash.message
        );
        let saved = crash.saved.as_ref().unwrap();
        assert_eq!(std::fs::read(saved).unwrap(), crash.input);
        let text = std::fs::read_to_string(saved.with_extension("txt")).unwrap();
        assert!(text.contains("divide by zero"), "{text}");
        assert!(
            report.executions < 200_000,
            "the run did not stop at the crash"
        );
    }

    /// A violated promise counts as a crash too.
    #[test]
    fn violations_are_crashes() {
        let mut harness = |input: &[u8], _: &mut Context| {
            if input.len() > 12 {
                Err(Finding::Violation("too long".into()))
            } else {
                Ok(Verdict::Accepted("short".into()))
            }
        };
        let options = Options::new(2, Budget::Iterations(10_000));
        let report = run(
            &mut harness,
            mutate::Format::Json,
            vec![b"[1, 2]".to_vec()],
            &options,
            None,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(report.crashes.len(), 1);
        assert_eq!(report.crashes[0].message, "too long");
        assert!(report.crashes[0].saved.is_none());
    }
}
