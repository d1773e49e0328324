//! The eval's prompt options (`--prompt-file`, `--prompt-ids-file`, `--prefill-len`): read before
//! any Python runs, handed to scripts/make_reference.py, and turned into token ids to check that
//! a reference was made for the prompt given, whichever option gave it.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::Path;

use anyhow::{Context, Result, bail};
use phi3_eval::Reference;
use phi3_model::Phi3Tokenizer;
use phi3_model::tokenizer::read_prompt_file;

use super::Args;

/// The prompt named on the command line.
#[derive(Debug, Clone, Copy)]
pub(super) enum PromptSource<'a> {
    /// `--prompt-file`: text.
    Text(&'a Path),
    /// `--prompt-ids-file`: token ids.
    Ids(&'a Path),
    /// `--prefill-len`: run_eval.py's synthetic prompt of this many tokens.
    Synthetic(usize),
}

/// A prompt as read from its file (or, for a synthetic one, its length checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum GivenPrompt {
    /// A text file's contents.
    Text(String),
    /// Token ids.
    Ids(Vec<u32>),
    /// A synthetic prompt's length (at least 1).
    Synthetic(usize),
}

impl PromptSource<'_> {
    /// The prompt option of `args`, if any (clap lets at most one through).
    pub(super) fn of(args: &Args) -> Option<PromptSource<'_>> {
        if let Some(f) = &args.prompt_file {
            Some(PromptSource::Text(f))
        } else if let Some(f) = &args.prompt_ids_file {
            Some(PromptSource::Ids(f))
        } else {
            args.prefill_len.map(PromptSource::Synthetic)
        }
    }

    /// The option as the user wrote it, e.g. `--prefill-len 20`.
    pub(super) fn describe(&self) -> String {
        match self {
            PromptSource::Text(f) => format!("--prompt-file {}", f.display()),
            PromptSource::Ids(f) => format!("--prompt-ids-file {}", f.display()),
            PromptSource::Synthetic(n) => format!("--prefill-len {n}"),
        }
    }

    /// The same option for scripts/make_reference.py.
    fn script_args(&self) -> Vec<OsString> {
        match self {
            PromptSource::Text(f) => vec!["--prompt-file".into(), f.into()],
            PromptSource::Ids(f) => vec!["--prompt-ids-file".into(), f.into()],
            PromptSource::Synthetic(n) => vec!["--prefill-len".into(), n.to_string().into()],
        }
    }

    /// Reads the prompt's file; errors name the file and what is wrong with it.
    pub(super) fn read(&self) -> Result<GivenPrompt> {
        match self {
            PromptSource::Text(f) => Ok(GivenPrompt::Text(read_prompt_file(f)?)),
            PromptSource::Ids(f) => {
                let text = std::fs::read_to_string(f)
                    .with_context(|| format!("reading the prompt ids file {}", f.display()))?;
                let ids = parse_prompt_ids(&text)
                    .with_context(|| format!("the prompt ids file {}", f.display()))?;
                Ok(GivenPrompt::Ids(ids))
            }
            PromptSource::Synthetic(0) => bail!("--prefill-len must be at least 1"),
            PromptSource::Synthetic(n) => Ok(GivenPrompt::Synthetic(*n)),
        }
    }
}

impl GivenPrompt {
    /// The prompt's token ids with the tokenizer of `tokenizer_json`: text encoded as
    /// make_reference.py encodes it, ids as they are, a synthetic prompt built as run_eval.py
    /// builds it.
    pub(super) fn ids(&self, tokenizer_json: &Path) -> Result<Vec<u32>> {
        match self {
            GivenPrompt::Text(text) => Ok(Phi3Tokenizer::from_file(tokenizer_json)?
                .encode(phi3_eval::prompt_text_of_file(text))?),
            GivenPrompt::Ids(ids) => Ok(ids.clone()),
            GivenPrompt::Synthetic(n) => {
                let tokenizer = Phi3Tokenizer::from_file(tokenizer_json)?;
                let special = special_token_ids(tokenizer_json)?;
                Ok(phi3_eval::synthetic_prompt(
                    *n,
                    |text| tokenizer.encode(text).map_err(Into::into),
                    |id| special.contains(&id),
                )?)
            }
        }
    }
}

/// Script arguments naming the prompt and the tokens to generate.
pub(super) fn prompt_script_args(
    prompt: PromptSource<'_>,
    max_new_tokens: Option<usize>,
) -> Vec<OsString> {
    let mut out = prompt.script_args();
    if let Some(n) = max_new_tokens {
        out.extend(["--max-new-tokens".into(), n.to_string().into()]);
    }
    out
}

/// Errors unless `reference` (read from `reference_file`) was made for the prompt given as
/// `prompt`, whose token ids are `ids`.
pub(super) fn check_reference_prompt(
    reference: &Reference,
    reference_file: &Path,
    prompt: PromptSource<'_>,
    ids: &[u32],
) -> Result<()> {
    reference.check_prompt(ids).with_context(|| {
        format!(
            "the reference {} was made for another prompt than {} (make one for this prompt: \
             leave out --reference, or run `cargo xtask reference`)",
            reference_file.display(),
            prompt.describe()
        )
    })
}

/// Token ids from a `--prompt-ids-file`: a JSON array, or integers separated by whitespace or
/// commas (as scripts/make_reference.py reads them).
fn parse_prompt_ids(text: &str) -> Result<Vec<u32>> {
    let text = text.trim();
    let ids: Vec<u32> = if text.starts_with('[') {
        serde_json::from_str(text)
            .context("not a JSON array of token ids (integers from 0 to 2^32 - 1)")?
    } else {
        text.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
            .map(|t| {
                t.parse::<u32>()
                    .with_context(|| format!("`{t}` is not a token id"))
            })
            .collect::<Result<_>>()?
    };
    if ids.is_empty() {
        bail!("it holds no token ids");
    }
    Ok(ids)
}

/// The ids of `tokenizer.json`'s special added tokens (dropped from the synthetic sentence, as
/// make_reference.py and run_eval.py drop them).
fn special_token_ids(tokenizer_json: &Path) -> Result<HashSet<u32>> {
    #[derive(serde::Deserialize)]
    struct Added {
        id: u32,
        #[serde(default)]
        special: bool,
    }
    #[derive(serde::Deserialize)]
    struct TokenizerFile {
        #[serde(default)]
        added_tokens: Vec<Added>,
    }
    let text = std::fs::read_to_string(tokenizer_json)
        .with_context(|| format!("reading {}", tokenizer_json.display()))?;
    let file: TokenizerFile = serde_json::from_str(&text)
        .with_context(|| format!("reading the added tokens of {}", tokenizer_json.display()))?;
    Ok(file
        .added_tokens
        .into_iter()
        .filter(|t| t.special)
        .map(|t| t.id)
        .collect())
}

#[cfg(test)]
mod tests {
    use phi3_model::bundled;

    use super::*;

    #[test]
    fn prompt_ids_files_read_as_the_script_reads_them() {
        assert_eq!(parse_prompt_ids("[450, 4996]\n").unwrap(), vec![450, 4996]);
        assert_eq!(
            parse_prompt_ids("450,4996 17354\n1701").unwrap(),
            vec![450, 4996, 17354, 1701]
        );
        for (text, error) in [
            ("", "it holds no token ids"),
            ("[]", "it holds no token ids"),
            ("1, -2", "`-2` is not a token id"),
            ("1 two", "`two` is not a token id"),
            ("[1, 2.5]", "not a JSON array of token ids"),
            ("[4294967296]", "not a JSON array of token ids"),
        ] {
            let err = format!("{:#}", parse_prompt_ids(text).unwrap_err());
            assert!(err.contains(error), "{text:?}: {err}");
        }
    }

    /// run_eval.py's 20-token prompt with the Phi-3 tokenizer: the 12 tokens of the sentence,
    /// then its first 8 (the ids in phi3_eval::synthetic's docs).
    #[test]
    fn the_synthetic_prompt_is_run_evals() {
        let tokenizer = bundled::bundled_model_dir().join("tokenizer.json");
        let special = special_token_ids(&tokenizer).unwrap();
        assert!(
            special.contains(&1) && special.contains(&32000),
            "{special:?}"
        );
        assert!(!special.contains(&450));
        let fox = [
            450, 4996, 17354, 1701, 29916, 432, 17204, 975, 278, 17366, 11203, 29889,
        ];
        let ids = GivenPrompt::Synthetic(20).ids(&tokenizer).unwrap();
        assert_eq!(ids[..12], fox);
        assert_eq!(ids[12..], fox[..8]);
        let err = PromptSource::Synthetic(0).read().unwrap_err();
        assert_eq!(err.to_string(), "--prefill-len must be at least 1");
    }

    #[test]
    fn the_check_names_the_prompt_option_and_the_first_difference() {
        let file = bundled::bundled_model_dir().join("reference/eval_reference.json");
        let reference = Reference::load(&file).unwrap();
        let prompt = reference.prompt_tokens.clone();
        let ids_file = Path::new("ids.txt");
        check_reference_prompt(&reference, &file, PromptSource::Ids(ids_file), &prompt).unwrap();
        let mut other = prompt.clone();
        other[3] = other[3].wrapping_add(1);
        for (source, ids, expected) in [
            (
                PromptSource::Ids(ids_file),
                &other[..],
                "--prompt-ids-file ids.txt",
            ),
            (
                PromptSource::Synthetic(20),
                &prompt[..20],
                "--prefill-len 20",
            ),
        ] {
            let err = check_reference_prompt(&reference, &file, source, ids).unwrap_err();
            let message = format!("{err:#}");
            assert!(
                message.contains(&format!(
                    "the reference {} was made for another prompt than {expected}",
                    file.display()
                )) && message.contains("the prompt differs from the reference's at token"),
                "{message}"
            );
        }
    }
}
