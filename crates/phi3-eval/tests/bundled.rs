//! The bundled default model and its reference: the reference is valid, Rust computes the same
//! model and tokenizer hashes as the Python that wrote it, and the files respect the size limits.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use phi3_eval::{
    EvalMode, EvalOptions, ModelError, Reference, TeacherForcedModel, prompt_text_of_file,
    run_teacher_forcing,
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn bundled() -> (PathBuf, Reference) {
    let dir = root().join("fixtures/phi3-tiny-en");
    let reference = Reference::load(&dir.join("reference/eval_reference.json")).unwrap();
    (dir, reference)
}

#[test]
fn bundled_reference_matches_the_bundled_model_and_prompt() {
    let (dir, r) = bundled();
    assert_eq!(
        (r.max_new_tokens, r.decode_len(), r.model.vocab_size),
        (100, 100, 32064)
    );
    assert!((140..=160).contains(&r.prompt_len), "{}", r.prompt_len);
    assert_eq!(r.hf_top5.as_ref().map(Vec::len), Some(100));
    // Hashes written by scripts/make_reference.py, recomputed here.
    r.check_model_dir(&dir).unwrap();
    r.check_tokenizer_file(&dir.join("tokenizer.json")).unwrap();
    r.check_tokenizer_file(&root().join("fixtures/phi3-tokenizer/tokenizer.json"))
        .unwrap();
    let text = std::fs::read_to_string(root().join("fixtures/prompts/eval_prompt.txt")).unwrap();
    assert_eq!(r.prompt.text.as_deref(), Some(prompt_text_of_file(&text)));
}

#[test]
fn bundled_weights_respect_the_size_limits() {
    let (dir, _) = bundled();
    let files = phi3_eval::fingerprint::model_files(&dir).unwrap();
    let sizes: Vec<u64> = files[1..]
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .collect();
    assert_eq!(sizes.len(), 2);
    assert!(sizes.iter().sum::<u64>() <= 16_000_000, "{sizes:?}");
    assert!(sizes.iter().all(|&s| s <= 8 << 20), "{sizes:?}");
}

/// Replays HF: its logits are HF's top 5 as recorded, every other token far below.
struct HfReplay {
    reference: Reference,
    fed: usize,
}

impl TeacherForcedModel for HfReplay {
    fn vocab_size(&self) -> usize {
        self.reference.model.vocab_size
    }
    fn reset(&mut self) -> Result<(), ModelError> {
        self.fed = 0;
        Ok(())
    }
    fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        self.fed += tokens.len();
        Ok(self.logits())
    }
    fn decode(&mut self, _token: u32) -> Result<Vec<f32>, ModelError> {
        self.fed += 1;
        Ok(self.logits())
    }
}

impl HfReplay {
    fn logits(&self) -> Vec<f32> {
        let step = self.fed - self.reference.prompt_len;
        let hf = &self.reference.hf_top5.as_ref().unwrap()[step];
        let mut logits = vec![-1.0e4f32; self.vocab_size()];
        for (&id, &l) in hf.ids.iter().zip(&hf.logits) {
            logits[id as usize] = l;
        }
        logits
    }
}

#[test]
fn hf_replayed_through_the_eval_scores_100_percent() {
    let (_, reference) = bundled();
    let mut model = HfReplay {
        reference: reference.clone(),
        fed: 0,
    };
    let run =
        run_teacher_forcing(&mut model, &reference, &EvalOptions::default(), &mut |_| {}).unwrap();
    let report = run.report;
    assert_eq!(
        report.accuracy_lines(),
        "Top-1 accuracy: 100.00% (1.0000)\nTop-5 accuracy: 100.00% (1.0000)\n\
         Top-1 in HF top-5 (tt-metal): 100.00% (1.0000)\n"
    );
    let line = report.yt_metrics(EvalMode::Tt, false, 1).to_line();
    assert_eq!(
        line,
        format!(
            "YT_METRICS={{\"mode\": \"tt\", \"trace\": false, \"top1\": 1.0, \"top5\": 1.0, \
             \"prefill_len\": {}, \"decode_len\": 100, \"batch\": 1, \"total\": 100}}",
            reference.prompt_len
        )
    );
}
