//! The automation line of the seed's scripts/run_eval.py:
//! `YT_METRICS={"mode": "tt", "trace": false, "top1": 0.92, "top5": 1.0, "prefill_len": 155,
//! "decode_len": 100, "batch": 1, "total": 100}`.
//!
//! Same keys in the same order, and the same bytes Python's `json.dumps` writes (`", "` and `": "`
//! separators, floats as Python's `repr`), so a parser written for the seed reads ours unchanged.
//! `top1`/`top5` are fractions in [0, 1]; `decode_len` is the requested number of generated tokens
//! and `total` the number of steps scored (smaller only if HF stopped early); `trace` is always
//! false here (no trace capture on a simulated mesh); `batch` is 1.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The prefix of the metrics line.
pub const METRICS_PREFIX: &str = "YT_METRICS=";

/// Who produced the logits being scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvalMode {
    /// The (simulated) device model.
    Tt,
    /// HF scored against itself.
    Hf,
}

impl EvalMode {
    /// The JSON value: `"tt"` or `"hf"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EvalMode::Tt => "tt",
            EvalMode::Hf => "hf",
        }
    }
}

/// One run's metrics record.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct YtMetrics {
    /// `"tt"` or `"hf"`.
    pub mode: EvalMode,
    /// Whether trace capture was used (never, here).
    pub trace: bool,
    /// Top-1 accuracy, a fraction.
    pub top1: f64,
    /// Top-5 accuracy, a fraction.
    pub top5: f64,
    /// Prompt length.
    pub prefill_len: usize,
    /// Requested decode length.
    pub decode_len: usize,
    /// Batch size.
    pub batch: usize,
    /// Scored steps.
    pub total: usize,
}

/// A metrics line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The line does not start with `YT_METRICS=`.
    #[error("not a metrics line (no `{METRICS_PREFIX}` prefix)")]
    NoPrefix,
    /// The JSON after the prefix is not a metrics record.
    #[error("bad metrics JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl YtMetrics {
    /// The JSON object as Python's `json.dumps` writes it, keys in the seed's order.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"mode\": \"{}\", \"trace\": {}, \"top1\": {}, \"top5\": {}, \"prefill_len\": {}, \
             \"decode_len\": {}, \"batch\": {}, \"total\": {}}}",
            self.mode.as_str(),
            if self.trace { "true" } else { "false" },
            python_float_repr(self.top1),
            python_float_repr(self.top5),
            self.prefill_len,
            self.decode_len,
            self.batch,
            self.total,
        )
    }

    /// The whole line: `YT_METRICS=` and [`YtMetrics::to_json`].
    pub fn to_line(&self) -> String {
        format!("{METRICS_PREFIX}{}", self.to_json())
    }

    /// Reads a line written by [`YtMetrics::to_line`] or by the seed's Python (key order free).
    pub fn parse_line(line: &str) -> Result<Self, MetricsError> {
        let json = line
            .trim_end()
            .strip_prefix(METRICS_PREFIX)
            .ok_or(MetricsError::NoPrefix)?;
        Ok(serde_json::from_str(json)?)
    }
}

impl fmt::Display for YtMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_line())
    }
}

/// A float as Python's `repr` (and so `json.dumps`) writes it: the shortest digits that read back
/// to the same value; positional with at least one decimal (`1.0`, `0.92`, `0.0001`) when the
/// decimal exponent is in [-4, 16), else scientific with a signed two-digit exponent (`1e-05`,
/// `1.5e+16`); `NaN`, `Infinity`, `-Infinity` as `json.dumps` writes them.
pub fn python_float_repr(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "9.2e-1", "1e-5", "1.5e16".
    let sci = format!("{:e}", v.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if v < 0.0 { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let body = if exp < 0 {
            format!(
                "0.{}{}",
                "0".repeat(exp.unsigned_abs() as usize - 1),
                digits
            )
        } else {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                format!("{}{}.0", digits, "0".repeat(int_len - digits.len()))
            } else {
                format!("{}.{}", &digits[..int_len], &digits[int_len..])
            }
        };
        format!("{sign}{body}")
    } else {
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exp_sign}{:02}", exp.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_python_repr() {
        let cases = [
            (0.92, "0.92"),
            (1.0, "1.0"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (0.5, "0.5"),
            (2.0 / 3.0, "0.6666666666666666"),
            (0.07, "0.07"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (0.000012345, "1.2345e-05"),
            (123.0, "123.0"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (12.5, "12.5"),
            (-0.25, "-0.25"),
            (1e-100, "1e-100"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
        ];
        for (v, want) in cases {
            assert_eq!(python_float_repr(v), want, "{v:e}");
        }
    }

    #[test]
    fn line_has_the_seed_keys_in_order() {
        let m = YtMetrics {
            mode: EvalMode::Tt,
            trace: false,
            top1: 0.92,
            top5: 1.0,
            prefill_len: 155,
            decode_len: 100,
            batch: 1,
            total: 100,
        };
        assert_eq!(
            m.to_line(),
            "YT_METRICS={\"mode\": \"tt\", \"trace\": false, \"top1\": 0.92, \"top5\": 1.0, \
             \"prefill_len\": 155, \"decode_len\": 100, \"batch\": 1, \"total\": 100}"
        );
        assert_eq!(m.to_string(), m.to_line());
        assert_eq!(YtMetrics::parse_line(&m.to_line()).unwrap(), m);
    }

    #[test]
    fn parse_reads_compact_python_output_and_rejects_others() {
        let line = r#"YT_METRICS={"top5":0.99,"mode":"hf","trace":true,"top1":0.9,"prefill_len":20,"decode_len":20,"batch":1,"total":19}"#;
        let m = YtMetrics::parse_line(line).unwrap();
        assert_eq!(
            (m.mode, m.trace, m.total, m.top5),
            (EvalMode::Hf, true, 19, 0.99)
        );
        assert!(matches!(
            YtMetrics::parse_line("{}"),
            Err(MetricsError::NoPrefix)
        ));
        assert!(matches!(
            YtMetrics::parse_line("YT_METRICS={\"mode\": \"tt\"}"),
            Err(MetricsError::Json(_))
        ));
    }
}
