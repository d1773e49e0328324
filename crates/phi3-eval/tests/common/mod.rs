//! Shared test helpers: a scripted fake model and hand-made references.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::collections::HashMap;

use phi3_eval::reference::{GeneratorInfo, ModelInfo, PromptInfo, PromptSource, TokenizerInfo};
use phi3_eval::{HfStep, ModelError, Reference, TeacherForcedModel};

/// A model call, as the fake records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Reset,
    Prefill(Vec<u32>),
    Decode(u32),
}

/// A fake model whose logits after the token at position `p` rank `rankings[p]` first (logits
/// 10, 9, 8, ... in that order; every other token 0).
pub struct Scripted {
    pub vocab: usize,
    pub rankings: HashMap<usize, Vec<u32>>,
    pub calls: Vec<Call>,
    pub consumed: usize,
    /// Return logits of this length instead of `vocab` at this position.
    pub wrong_len_at: Option<(usize, usize)>,
    /// Fail when decoding at this position.
    pub fail_at: Option<usize>,
    /// Put a NaN in the logits at this position.
    pub nan_at: Option<usize>,
}

impl Scripted {
    pub fn new(vocab: usize, rankings: &[(usize, &[u32])]) -> Self {
        Scripted {
            vocab,
            rankings: rankings.iter().map(|(p, r)| (*p, r.to_vec())).collect(),
            calls: Vec::new(),
            consumed: 0,
            wrong_len_at: None,
            fail_at: None,
            nan_at: None,
        }
    }

    fn logits_at(&self, pos: usize) -> Vec<f32> {
        let len = match self.wrong_len_at {
            Some((p, len)) if p == pos => len,
            _ => self.vocab,
        };
        let mut logits = vec![0.0f32; len];
        if let Some(r) = self.rankings.get(&pos) {
            for (i, &t) in r.iter().enumerate() {
                logits[t as usize] = 10.0 - i as f32;
            }
        }
        if self.nan_at == Some(pos) {
            logits[len - 1] = f32::NAN;
        }
        logits
    }
}

impl TeacherForcedModel for Scripted {
    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn reset(&mut self) -> Result<(), ModelError> {
        self.calls.push(Call::Reset);
        self.consumed = 0;
        Ok(())
    }

    fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        self.calls.push(Call::Prefill(tokens.to_vec()));
        self.consumed += tokens.len();
        Ok(self.logits_at(self.consumed - 1))
    }

    fn decode(&mut self, token: u32) -> Result<Vec<f32>, ModelError> {
        self.calls.push(Call::Decode(token));
        self.consumed += 1;
        if self.fail_at == Some(self.consumed - 1) {
            return Err("device out of memory".into());
        }
        Ok(self.logits_at(self.consumed - 1))
    }
}

pub const SHA_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
pub const SHA_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// A valid reference with the given tokens and optional HF top-5 id lists.
pub fn reference(
    prompt: &[u32],
    generated: &[u32],
    max_new_tokens: usize,
    vocab: usize,
    hf: Option<&[[u32; 5]]>,
) -> Reference {
    Reference {
        format: "tt-phi3-eval-reference".into(),
        version: 1,
        model: ModelInfo {
            id: "test/model".into(),
            sha256: SHA_A.into(),
            vocab_size: vocab,
        },
        tokenizer: TokenizerInfo {
            sha256: SHA_B.into(),
        },
        generator: GeneratorInfo {
            transformers: "5.24.0".into(),
            torch: Some("2.15.0".into()),
            dtype: "float32".into(),
            attn_implementation: Some("eager".into()),
        },
        prompt: PromptInfo {
            source: PromptSource::Ids,
            file: None,
            text: None,
        },
        prompt_len: prompt.len(),
        prompt_tokens: prompt.to_vec(),
        max_new_tokens,
        generated_tokens: generated.to_vec(),
        hf_top5: hf.map(|steps| {
            steps
                .iter()
                .map(|ids| HfStep {
                    ids: ids.to_vec(),
                    logits: vec![],
                    probs: vec![],
                })
                .collect()
        }),
    }
}
