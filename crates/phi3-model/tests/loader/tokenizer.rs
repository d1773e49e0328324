//! The Phi-3 tokenizer: expected ids from fixtures/phi3-tokenizer/README.md, the chat template,
//! streaming decode and the vocab check.

use std::sync::OnceLock;

use phi3_model::{ChatMessage, Phi3Tokenizer, StreamDecoder, TokenizerError};

/// The Phi-3 chat template of the bundled tokenizer, rendered.
fn chat_prompt(messages: &[ChatMessage], add_generation_prompt: bool) -> String {
    tok()
        .chat_template()
        .expect("the Phi-3 tokenizer_config.json has a chat template")
        .render(messages, add_generation_prompt)
        .unwrap()
}

use crate::support::repo_root;

fn tok() -> &'static Phi3Tokenizer {
    static TOK: OnceLock<Phi3Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        Phi3Tokenizer::from_dir(&repo_root().join("fixtures/phi3-tokenizer")).unwrap()
    })
}

#[test]
fn encodes_without_bos() {
    let ids = tok()
        .encode("The quick brown fox jumps over the lazy dog.")
        .unwrap();
    assert_eq!(
        ids,
        [
            450, 4996, 17354, 1701, 29916, 432, 17204, 975, 278, 17366, 11203, 29889
        ]
    );
    assert_eq!(
        tok().decode(&ids, false).unwrap(),
        "The quick brown fox jumps over the lazy dog."
    );
    assert_eq!(tok().token_to_id("<|end|>"), Some(32007));
    assert_eq!(tok().id_to_token(32010).as_deref(), Some("<|user|>"));
    assert!(tok().encode("").unwrap().is_empty());
}

#[test]
fn chat_template_matches_phi3() {
    let messages = [ChatMessage::user(
        "Describe the Swift programming language.",
    )];
    assert_eq!(
        chat_prompt(&messages, true),
        "<|user|>\nDescribe the Swift programming language.<|end|>\n<|assistant|>\n"
    );
    let ids = tok().encode_chat(&messages, true).unwrap();
    assert_eq!(
        ids,
        [
            32010, 4002, 29581, 278, 14156, 8720, 4086, 29889, 32007, 32001
        ]
    );
    assert_eq!(
        tok().decode(&ids, false).unwrap(),
        "<|user|>Describe the Swift programming language.<|end|><|assistant|>"
    );
    assert_eq!(
        chat_prompt(
            &[
                ChatMessage::system("Be brief."),
                ChatMessage::user("Hi"),
                ChatMessage::assistant("Hello")
            ],
            false
        ),
        "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello<|end|>\n<|endoftext|>"
    );
}

#[test]
fn stream_decoding_reassembles_text() {
    let text = "Grüße, 世界! A crab 🦀 and naïve café.\n  Indented → done ✓";
    let ids = tok().encode(text).unwrap();
    for skip in [false, true] {
        let mut dec = StreamDecoder::new(skip);
        let mut out = String::new();
        let mut held_back = 0;
        for &id in &ids {
            match dec.push(tok(), id).unwrap() {
                Some(delta) => {
                    assert!(!delta.contains('\u{FFFD}'), "{delta:?}");
                    out.push_str(&delta);
                }
                None => held_back += 1,
            }
        }
        if let Some(rest) = dec.flush(tok()).unwrap() {
            out.push_str(&rest);
        }
        assert_eq!(out, tok().decode(&ids, skip).unwrap());
        assert_eq!(out, text);
        assert!(held_back > 0, "byte-fallback pieces must be held back");
        assert_eq!(dec.ids(), ids);
    }
}

#[test]
fn stream_flush_emits_incomplete_bytes() {
    // "x🦀" is `▁x` then four byte pieces; the first byte alone is an incomplete character:
    // held back, then flushed as U+FFFD.
    let ids = tok().encode("x🦀").unwrap();
    assert_eq!(ids.len(), 5, "{ids:?}");
    let mut dec = StreamDecoder::new(false);
    assert_eq!(dec.push(tok(), ids[0]).unwrap().as_deref(), Some("x"));
    assert_eq!(dec.push(tok(), ids[1]).unwrap(), None);
    assert_eq!(dec.flush(tok()).unwrap().as_deref(), Some("\u{FFFD}"));
    assert_eq!(dec.flush(tok()).unwrap(), None);
}

#[test]
fn vocab_must_fit_the_model() {
    assert_eq!(tok().max_token_id(), 32010);
    tok().check_fits(32064).unwrap();
    let err = tok().check_fits(32000).unwrap_err();
    assert!(matches!(
        err,
        TokenizerError::VocabTooLarge {
            max_id: 32010,
            vocab_size: 32000
        }
    ));
    assert!(
        err.to_string().contains("does not belong to this model"),
        "{err}"
    );
}

#[test]
fn load_errors_and_non_phi3_tokenizers() {
    let dir = tempfile::tempdir().unwrap();
    let err = Phi3Tokenizer::from_dir(dir.path()).unwrap_err();
    assert!(matches!(err, TokenizerError::Load { .. }), "{err:?}");
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, "{not json").unwrap();
    assert!(matches!(
        Phi3Tokenizer::from_file(&path),
        Err(TokenizerError::Load { .. })
    ));

    let word_level = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": {"hello": 0, "world": 1, "[UNK]": 2}, "unk_token": "[UNK]"}
    });
    std::fs::write(&path, word_level.to_string()).unwrap();
    let t = Phi3Tokenizer::from_file(&path).unwrap();
    assert_eq!(t.encode("hello world").unwrap(), [0, 1]);
    let err = t
        .encode_chat(&[ChatMessage::user("hello")], true)
        .unwrap_err();
    assert!(
        matches!(err, TokenizerError::NoChatTemplate { .. }),
        "{err:?}"
    );
}

#[test]
fn prompt_files_must_be_utf8() {
    use phi3_model::tokenizer::read_prompt_file;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.txt");
    std::fs::write(&good, "caf\u{e9}\n").unwrap();
    assert_eq!(read_prompt_file(&good).unwrap(), "caf\u{e9}\n");

    let bad = dir.path().join("latin1.txt");
    std::fs::write(&bad, b"caf\xe9 au lait").unwrap();
    let err = read_prompt_file(&bad).unwrap_err();
    assert!(
        matches!(&err, TokenizerError::PromptNotUtf8 { path, offset: 3 } if *path == bad),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "the prompt file {} is not UTF-8 text (invalid byte at offset 3); save it as UTF-8",
            bad.display()
        )
    );

    let missing = dir.path().join("missing.txt");
    let err = read_prompt_file(&missing).unwrap_err();
    assert!(matches!(err, TokenizerError::PromptIo { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with(&format!(
            "cannot read the prompt file {}: ",
            missing.display()
        )),
        "{err}"
    );
}
