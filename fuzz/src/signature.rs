//! The novelty signal of the campaign: an outcome reduced to its kind. An error's `Debug` text
//! keeps its identifiers (variant and field names, which come from the code) and the known words
//! of its messages; names and values a mutation produced are dropped, so that every garbage
//! `model_type` is one outcome while `MissingField { field: "vocab_size" }` and
//! `MissingField { field: "hidden_size" }` are two.

/// Words kept from the strings of an error (key names of the formats under test and the words
/// of parser and validation messages); any other word in a string is a value a mutation
/// produced and is dropped.
const VOCABULARY: &[&str] = &[
    // config.json and generation_config.json
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "max_position_embeddings",
    "original_max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
    "partial_rotary_factor",
    "rope_scaling",
    "rope_parameters",
    "sliding_window",
    "tie_word_embeddings",
    "hidden_act",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "torch_dtype",
    "dtype",
    "rope_type",
    "type",
    "short_factor",
    "long_factor",
    "attention_factor",
    "factor",
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "max_length",
    "max_new_tokens",
    "longrope",
    // safetensors and the index
    "shape",
    "data_offsets",
    "__metadata__",
    "weight_map",
    "metadata",
    "entry",
    "RawEntry",
    // the reference
    "format",
    "version",
    "model",
    "tokenizer",
    "generator",
    "prompt",
    "prompt_len",
    "prompt_tokens",
    "generated_tokens",
    "hf_top5",
    "ids",
    "logits",
    "probs",
    "sha256",
    "id",
    "transformers",
    "torch",
    "source",
    "file",
    "text",
    "attn_implementation",
    // serde_json messages
    "invalid",
    "value",
    "length",
    "missing",
    "field",
    "unknown",
    "variant",
    "expected",
    "EOF",
    "trailing",
    "characters",
    "number",
    "string",
    "integer",
    "boolean",
    "sequence",
    "map",
    "null",
    "floating",
    "struct",
    "escape",
    "control",
    "character",
    "recursion",
    "limit",
    "exceeded",
    "key",
    "lone",
    "leading",
    "surrogate",
    "comma",
    "colon",
    "ident",
    "range",
    "object",
    "list",
    "while",
    "parsing",
    "u32",
    "u64",
    "i64",
    "f32",
    "f64",
    "usize",
    // our messages
    "empty",
    "prompt",
    "outside",
    "vocabulary",
    "repeats",
    "decreasing",
    "ranks",
    "steps",
    "lowercase",
    "hex",
    "generated",
    "plain",
    "name",
    "greedy",
    "strings",
    "top",
];

/// Field names of error structs whose strings are kept (as [`VOCABULARY`] words); the strings
/// of every other field (tensor names, found values, paths) are values and are dropped.
const KEPT_FIELDS: &[&str] = &["field", "list", "key", "file", "message", "reason", "Error"];

/// An error's kind for the novelty signal: the identifiers of its `Debug` text (variant and
/// field names, which come from the code) and the [`VOCABULARY`] words of its messages, without
/// numbers, names or values (a message's backquoted or quoted parts are values too). Every
/// garbage `model_type` is then one outcome, while `MissingField { field: "vocab_size" }` and
/// `MissingField { field: "hidden_size" }` are two.
pub fn signature_of(debug: &str) -> String {
    const MAX_WORDS: usize = 24;
    // A message keeps at most this many distinct words: names a mutation built from key names
    // (`weight_map`, `hf_top5`, ...) could otherwise make each combination a new outcome.
    const MAX_STRING_WORDS: usize = 6;
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut last_ident = String::new();
    // Inside a string: whether its words count, and whether we are inside a quoted part.
    let mut string: Option<bool> = None;
    let mut inner_quote = false;
    let mut after_string_value = false;
    let mut string_words: Vec<String> = Vec::new();
    let mut escaped = false;
    for c in debug.chars() {
        let boundary = !(c.is_ascii_alphanumeric() || c == '_');
        if boundary && !word.is_empty() {
            let mut w = std::mem::take(&mut word);
            let keep = match string {
                None => {
                    // Outside strings, words are identifiers or numbers (`1e-5`, `3.5e10`):
                    // keep the identifiers only.
                    last_ident.clone_from(&w);
                    w.retain(|c| !c.is_ascii_digit());
                    !(w.is_empty() || w == "e" || w == "E")
                }
                Some(kept) => {
                    // serde's "invalid type: string \"<value>\", expected ..." quotes the
                    // value it found; when the value itself holds quotes, skip to "expected".
                    let keep = kept
                        && !inner_quote
                        && !after_string_value
                        && VOCABULARY.contains(&w.as_str());
                    let keep = if w == "string" && keep {
                        after_string_value = true;
                        true
                    } else if w == "expected" && after_string_value {
                        after_string_value = false;
                        kept && !inner_quote
                    } else {
                        keep
                    };
                    let keep =
                        keep && string_words.len() < MAX_STRING_WORDS && !string_words.contains(&w);
                    if keep {
                        string_words.push(w.clone());
                    }
                    keep
                }
            };
            if keep && words.len() < MAX_WORDS && !w.chars().all(|c| c.is_ascii_digit()) {
                words.push(w);
            }
        }
        if escaped {
            escaped = false;
            if c == '"' {
                inner_quote = !inner_quote;
            }
            continue;
        }
        match (c, string) {
            ('"', None) => {
                string = Some(KEPT_FIELDS.contains(&last_ident.as_str()));
                inner_quote = false;
                after_string_value = false;
                string_words.clear();
            }
            ('"', Some(_)) => string = None,
            ('\\', Some(_)) => escaped = true,
            ('`', Some(_)) => inner_quote = !inner_quote,
            (c, _) if !boundary => word.push(c),
            _ => {}
        }
    }
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_keep_key_names_and_drop_values() {
        let a = signature_of(r#"MissingField { field: "vocab_size" }"#);
        assert_eq!(a, "MissingField field vocab_size");
        assert_ne!(a, signature_of(r#"MissingField { field: "hidden_size" }"#));
        assert_eq!(
            signature_of(r#"WrongModelType { model_type: "llama" }"#),
            signature_of(r#"WrongModelType { model_type: "x[]\"y\\ z" }"#)
        );
        assert_eq!(
            signature_of(
                r#"MalformedHeader { path: "a", message: "entry `w1`: missing field `dtype` at line 1" }"#
            ),
            "MalformedHeader path message entry missing field"
        );
        assert_eq!(
            signature_of("BadFactor { list: \"long_factor\", index: 1, value: 3.5e-310 }"),
            signature_of("BadFactor { list: \"long_factor\", index: 0, value: 1e300 }"),
        );
        assert_eq!(
            signature_of(r#"BadJson(Error("expected value", line: 12, column: 3))"#),
            "BadJson Error expected value line column"
        );
        assert_eq!(
            signature_of(
                r#"Malformed { path: "generated_tokens[3]", message: "invalid type: string \"x\", expected u32" }"#
            ),
            "Malformed path message invalid type string expected u32"
        );
    }
}
