//! The safetensors file format, parsed and validated here (no trust in the header).
//!
//! Layout: 8 bytes little-endian header length `n`, `n` bytes of JSON header, then the data
//! area. The header maps tensor names to `{dtype, shape, data_offsets: [begin, end]}` (offsets
//! relative to the data area) plus an optional `__metadata__` map of strings.

use std::ops::Range;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::CheckpointError;

/// Element types accepted in checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Dtype {
    /// bfloat16.
    BF16,
    /// IEEE half.
    F16,
    /// IEEE single.
    F32,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::BF16 | Dtype::F16 => 2,
            Dtype::F32 => 4,
        }
    }

    /// The safetensors spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Dtype::BF16 => "BF16",
            Dtype::F16 => "F16",
            Dtype::F32 => "F32",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "BF16" => Some(Dtype::BF16),
            "F16" => Some(Dtype::F16),
            "F32" => Some(Dtype::F32),
            _ => None,
        }
    }
}

/// Dtype and shape of a stored tensor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorInfo {
    /// Element type.
    pub dtype: Dtype,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes of data.
    pub fn byte_len(&self) -> usize {
        self.numel() * self.dtype.size()
    }
}

/// One validated header entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRecord {
    /// Tensor name.
    pub name: String,
    /// Dtype and shape.
    pub info: TensorInfo,
    /// Byte range in the whole file (header included), within the file's length.
    pub bytes: Range<usize>,
}

#[derive(Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// Parses and validates the header of a safetensors file held in `bytes` (the whole file).
/// `path` only labels errors. Every entry's byte range is checked to lie in the file, to match
/// its shape and dtype, and not to overlap another.
pub fn parse_header(path: &Path, bytes: &[u8]) -> Result<Vec<TensorRecord>, CheckpointError> {
    parse_header_of(path, bytes, bytes.len() as u64)
}

/// Header length safetensors itself accepts at most (its `MAX_HEADER_SIZE`).
pub(crate) const MAX_HEADER_LEN: u64 = 100_000_000;

/// [`parse_header`] of a `file_len`-byte file of which `bytes` holds the start: at least the
/// 8-byte length and the header it gives (all of the file if it is shorter than that).
pub(crate) fn parse_header_of(
    path: &Path,
    bytes: &[u8],
    file_len: u64,
) -> Result<Vec<TensorRecord>, CheckpointError> {
    let Some(len_bytes) = bytes.get(..8) else {
        return Err(CheckpointError::Truncated {
            path: path.to_path_buf(),
            expected: 8,
            actual: file_len,
        });
    };
    let mut len_arr = [0u8; 8];
    len_arr.copy_from_slice(len_bytes);
    let header_len = u64::from_le_bytes(len_arr);
    if header_len > file_len.saturating_sub(8) {
        return Err(CheckpointError::HeaderPastEnd {
            path: path.to_path_buf(),
            header_len,
            file_len,
        });
    }
    let malformed = |message: String| CheckpointError::MalformedHeader {
        path: path.to_path_buf(),
        message,
    };
    let data_start = usize::try_from(8 + header_len)
        .map_err(|_| malformed(format!("a header of {header_len} bytes")))?;
    let header = bytes
        .get(8..data_start)
        .ok_or_else(|| malformed(format!("a header of {header_len} bytes was not read")))?;
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| malformed(e.to_string()))?;
    let data_len = file_len - data_start as u64;
    let mut records = Vec::with_capacity(map.len());
    for (name, value) in map {
        if name == "__metadata__" {
            let ok = value
                .as_object()
                .is_some_and(|m| m.values().all(|v| v.is_string()));
            if !ok {
                return Err(malformed(
                    "`__metadata__` must map strings to strings".to_string(),
                ));
            }
            continue;
        }
        let raw: RawEntry =
            serde_json::from_value(value).map_err(|e| malformed(format!("entry `{name}`: {e}")))?;
        let dtype = Dtype::parse(&raw.dtype).ok_or_else(|| CheckpointError::UnsupportedDtype {
            path: path.to_path_buf(),
            tensor: name.clone(),
            dtype: raw.dtype.clone(),
        })?;
        let [begin, end] = raw.data_offsets;
        let expected = raw
            .shape
            .iter()
            .try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d));
        let actual = end.checked_sub(begin);
        let shape: Vec<usize> = raw.shape.iter().map(|&d| d as usize).collect();
        match (expected, actual) {
            (Some(e), Some(a)) if e == a => {}
            (_, None) => {
                return Err(CheckpointError::OffsetsOutOfRange {
                    path: path.to_path_buf(),
                    tensor: name,
                    begin,
                    end,
                    data_len,
                });
            }
            (e, Some(a)) => {
                return Err(CheckpointError::SizeMismatch {
                    path: path.to_path_buf(),
                    tensor: name,
                    shape,
                    expected: e.unwrap_or(u64::MAX),
                    actual: a,
                });
            }
        }
        records.push((name, TensorInfo { dtype, shape }, begin, end));
    }
    check_layout(path, &mut records, data_start as u64, data_len)?;
    Ok(records
        .into_iter()
        .map(|(name, info, begin, end)| TensorRecord {
            name,
            info,
            // In range: end <= data_len was checked, and data_start + data_len = file length.
            bytes: data_start + begin as usize..data_start + end as usize,
        })
        .collect())
}

/// Overlaps, then ranges past the data area: a contiguous layout that merely runs past the
/// end is a truncated file; anything else is a corrupt header.
fn check_layout(
    path: &Path,
    records: &mut [(String, TensorInfo, u64, u64)],
    data_start: u64,
    data_len: u64,
) -> Result<(), CheckpointError> {
    records.sort_by_key(|r| (r.2, r.3));
    let mut prev: Option<&(String, TensorInfo, u64, u64)> = None;
    let mut contiguous = true;
    let mut cursor = 0u64;
    for rec in records.iter() {
        if rec.2 == rec.3 {
            // Empty tensors occupy no bytes, but their offsets must still lie in the data area.
            if rec.2 > data_len {
                return Err(CheckpointError::OffsetsOutOfRange {
                    path: path.to_path_buf(),
                    tensor: rec.0.clone(),
                    begin: rec.2,
                    end: rec.3,
                    data_len,
                });
            }
            continue;
        }
        if let Some(p) = prev
            && rec.2 < p.3
        {
            return Err(CheckpointError::OverlappingTensors {
                path: path.to_path_buf(),
                first: p.0.clone(),
                second: rec.0.clone(),
            });
        }
        contiguous &= rec.2 == cursor;
        cursor = rec.3;
        prev = Some(rec);
    }
    if cursor > data_len {
        if contiguous {
            return Err(CheckpointError::Truncated {
                path: path.to_path_buf(),
                expected: data_start + cursor,
                actual: data_start + data_len,
            });
        }
        if let Some(bad) = records.iter().find(|r| r.3 > data_len) {
            return Err(CheckpointError::OffsetsOutOfRange {
                path: path.to_path_buf(),
                tensor: bad.0.clone(),
                begin: bad.2,
                end: bad.3,
                data_len,
            });
        }
    }
    Ok(())
}
