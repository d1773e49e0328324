//! The synthetic prompts of the seed's scripts/run_eval.py (`--prefill-len`, `--decode-len`).
//!
//! The sentence "The quick brown fox jumps over the lazy dog." is encoded once (no special tokens
//! added), special tokens are dropped from it, and its token ids are repeated cyclically and cut
//! to exactly `prefill_len` tokens. The repetition is of token ids, not of text: the prompt is not
//! re-encoded. With the Phi-3 tokenizer the sentence is 12 tokens
//! `[450, 4996, 17354, 1701, 29916, 432, 17204, 975, 278, 17366, 11203, 29889]`, so a 20-token
//! prompt is those 12 followed by the first 8.

use crate::teacher_forcing::ModelError;

/// The sentence the synthetic prompts repeat.
pub const SYNTHETIC_SENTENCE: &str = "The quick brown fox jumps over the lazy dog.";
/// run_eval.py's default `--prefill-len`.
pub const DEFAULT_PREFILL_LEN: usize = 20;
/// run_eval.py's default `--decode-len`.
pub const DEFAULT_DECODE_LEN: usize = 20;

/// Why a synthetic prompt could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SyntheticError {
    /// A prompt needs at least one token.
    #[error("the synthetic prefill length must be at least 1")]
    ZeroLength,
    /// The tokenizer failed.
    #[error("cannot encode the synthetic sentence: {0}")]
    Encode(#[source] ModelError),
    /// Nothing is left of the sentence once special tokens are dropped.
    #[error("the synthetic sentence encodes to no ordinary tokens")]
    NoTokens,
}

/// The synthetic prompt of `prefill_len` tokens. `encode` encodes text without adding special
/// tokens; `is_special` tells the tokenizer's special ids (they are dropped from the sentence).
pub fn synthetic_prompt(
    prefill_len: usize,
    encode: impl FnOnce(&str) -> Result<Vec<u32>, ModelError>,
    is_special: impl Fn(u32) -> bool,
) -> Result<Vec<u32>, SyntheticError> {
    if prefill_len == 0 {
        return Err(SyntheticError::ZeroLength);
    }
    let sentence: Vec<u32> = encode(SYNTHETIC_SENTENCE)
        .map_err(SyntheticError::Encode)?
        .into_iter()
        .filter(|&t| !is_special(t))
        .collect();
    if sentence.is_empty() {
        return Err(SyntheticError::NoTokens);
    }
    Ok(sentence.iter().copied().cycle().take(prefill_len).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOX: [u32; 12] = [
        450, 4996, 17354, 1701, 29916, 432, 17204, 975, 278, 17366, 11203, 29889,
    ];

    fn phi3(text: &str) -> Result<Vec<u32>, ModelError> {
        assert_eq!(text, SYNTHETIC_SENTENCE);
        Ok(FOX.to_vec())
    }

    #[test]
    fn repeats_the_sentence_tokens_to_the_length() {
        let p = synthetic_prompt(DEFAULT_PREFILL_LEN, phi3, |_| false).unwrap();
        assert_eq!(p.len(), 20);
        assert_eq!(&p[..12], &FOX);
        assert_eq!(&p[12..], &FOX[..8]);
        assert_eq!(
            synthetic_prompt(5, phi3, |_| false).unwrap(),
            FOX[..5].to_vec()
        );
        let long = synthetic_prompt(30, phi3, |_| false).unwrap();
        assert_eq!(long[24..], FOX[..6]);
    }

    #[test]
    fn drops_special_tokens() {
        let with_bos = |_: &str| -> Result<Vec<u32>, ModelError> { Ok(vec![1, 7, 8, 32000]) };
        let p = synthetic_prompt(5, with_bos, |t| t == 1 || t >= 32000).unwrap();
        assert_eq!(p, vec![7, 8, 7, 8, 7]);
    }

    #[test]
    fn errors() {
        assert!(matches!(
            synthetic_prompt(0, phi3, |_| false),
            Err(SyntheticError::ZeroLength)
        ));
        let only_special = |_: &str| -> Result<Vec<u32>, ModelError> { Ok(vec![1]) };
        assert!(matches!(
            synthetic_prompt(3, only_special, |t| t == 1),
            Err(SyntheticError::NoTokens)
        ));
        let failing = |_: &str| -> Result<Vec<u32>, ModelError> { Err("no tokenizer".into()) };
        let e = synthetic_prompt(3, failing, |_| false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot encode the synthetic sentence: no tokenizer"
        );
    }
}
