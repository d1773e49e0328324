//! Reading HF JSON files: parsing with the key of any type error named, and the checks every
//! config key needs (present, positive, in range).
//!
//! Model families build their `config.json` parsers from these, so that every family reports a
//! bad file the same way.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::ConfigError;

/// Largest size accepted for any dimension (keeps every derived product far from overflow).
pub const MAX_DIM: i64 = 1 << 31;

/// Parses JSON text into `T`, naming the key of any type error. The text must be a JSON
/// object.
pub fn parse_json<T: DeserializeOwned>(file: &'static str, text: &str) -> Result<T, ConfigError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| ConfigError::Json {
        file,
        message: e.to_string(),
    })?;
    if !value.is_object() {
        return Err(ConfigError::Json {
            file,
            message: "the top level must be a JSON object".to_string(),
        });
    }
    serde_path_to_error::deserialize(value).map_err(|e| ConfigError::WrongType {
        file,
        field: e.path().to_string(),
        message: e.into_inner().to_string(),
    })
}

/// One id or a list of ids (HF allows both for `eos_token_id`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    /// A single id.
    One(u32),
    /// Several ids.
    Many(Vec<u32>),
}

impl TokenIds {
    /// The ids as a list.
    pub fn into_vec(self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![id],
            TokenIds::Many(ids) => ids,
        }
    }
}

/// A required positive size.
pub fn required(value: Option<i64>, field: &'static str) -> Result<usize, ConfigError> {
    positive(value.ok_or(ConfigError::MissingField { field })?, field)
}

/// A positive size of at most [`MAX_DIM`].
pub fn positive(value: i64, field: &'static str) -> Result<usize, ConfigError> {
    if value <= 0 {
        return Err(ConfigError::NonPositive { field, value });
    }
    if value > MAX_DIM {
        return Err(ConfigError::InvalidValue {
            field,
            value: value as f64,
            expected: "a size of at most 2^31",
        });
    }
    usize::try_from(value).map_err(|_| ConfigError::NonPositive { field, value })
}

/// `value` if it lies in the closed range `lo..=hi` (NaN never does).
pub fn in_range(
    value: f64,
    field: &'static str,
    (lo, hi): (f64, f64),
    expected: &'static str,
) -> Result<f64, ConfigError> {
    if value >= lo && value <= hi {
        Ok(value)
    } else {
        Err(ConfigError::InvalidValue {
            field,
            value,
            expected,
        })
    }
}

/// A positive finite number.
pub fn positive_float(value: f64, field: &'static str) -> Result<f64, ConfigError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(ConfigError::InvalidValue {
            field,
            value,
            expected: "a positive finite number",
        })
    }
}

/// The `model_type` of a `config.json` text, if it has one (for picking a family).
pub fn model_type(text: &str) -> Result<Option<String>, ConfigError> {
    #[derive(Deserialize)]
    struct Probe {
        model_type: Option<String>,
    }
    Ok(parse_json::<Probe>("config.json", text)?.model_type)
}
