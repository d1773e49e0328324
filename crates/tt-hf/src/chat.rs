//! Chat templates: the checkpoint's own Jinja template, rendered as HF transformers renders it.
//!
//! The template comes from `chat_template` in `tokenizer_config.json` (a string, or a list of
//! named templates of which `default` is used) or from `chat_template.jinja`. It is rendered with
//! `minijinja` under HF's settings: `trim_blocks` and `lstrip_blocks` on, Python string methods
//! (`strip`, `startswith`, ...) available, `raise_exception(msg)` an error. The variables are
//! HF's: `messages` (each `{role, content}`), `add_generation_prompt`, `bos_token`, `eos_token`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::TokenizerError;

/// Who speaks a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The system prompt.
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
}

/// One chat turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// Speaker.
    pub role: Role,
    /// Text of the turn.
    pub content: String,
}

impl ChatMessage {
    /// A user turn.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }

    /// A system turn.
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
        }
    }

    /// An assistant turn.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// A checkpoint's chat template with the special tokens it may print.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    dir: PathBuf,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// A template given as text; `dir` names its origin in errors.
    pub fn new(source: String, dir: &Path, bos_token: String, eos_token: String) -> Self {
        Self {
            source,
            dir: dir.to_path_buf(),
            bos_token,
            eos_token,
        }
    }

    /// The template text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages`, ending with the assistant's opening when `add_generation_prompt`.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        let fail = |e: minijinja::Error| TokenizerError::ChatTemplate {
            dir: self.dir.clone(),
            message: one_line(&e),
        };
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template("chat", &self.source).map_err(fail)?;
        let template = env.get_template("chat").map_err(fail)?;
        template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(fail)
    }
}

/// A template error and its causes on one line.
fn one_line(e: &minijinja::Error) -> String {
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out.replace('\n', " ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn template(source: &str) -> ChatTemplate {
        ChatTemplate::new(
            source.to_string(),
            Path::new("t"),
            "<s>".into(),
            "</s>".into(),
        )
    }

    #[test]
    fn renders_with_hf_whitespace_rules() {
        // trim_blocks drops the newline after a block tag, lstrip_blocks the indent before it.
        let t = template(
            "{% for m in messages %}\n    {{ bos_token }}[{{ m['role'] }}] {{ m['content'].strip() }}\n{% endfor %}\n{% if add_generation_prompt %}\n<go>{% endif %}",
        );
        let out = t
            .render(
                &[ChatMessage::user("  hi "), ChatMessage::assistant("yo")],
                true,
            )
            .unwrap();
        assert_eq!(out, "    <s>[user] hi\n    <s>[assistant] yo\n<go>");
    }

    #[test]
    fn raise_exception_is_an_error() {
        let t = template(
            "{% if messages[0]['role'] != 'system' %}{{ raise_exception('need a system turn') }}{% endif %}",
        );
        let err = t.render(&[ChatMessage::user("x")], false).unwrap_err();
        assert!(err.to_string().contains("need a system turn"), "{err}");
    }
}
