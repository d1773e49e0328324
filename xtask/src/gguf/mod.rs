//! A reader for llama.cpp's GGUF files (version 2 and 3): header, metadata key-values, tensor
//! infos and the aligned tensor data, plus dequantization ([`dequant`]), the mapping of a `llama`
//! GGUF to a HuggingFace `LlamaForCausalLM` checkpoint ([`llama`]) and the conversion that writes
//! it ([`convert`]).
//!
//! Layout (little-endian): magic `GGUF`, `u32` version, `u64` tensor count, `u64` metadata count;
//! each metadata entry is a string key, a `u32` value type and the value (strings are a `u64`
//! length and UTF-8 bytes; arrays a `u32` item type, a `u64` length and the items); each tensor info
//! is a string name, a `u32` dimension count, `u64` dimensions (innermost first), a `u32` ggml type
//! and a `u64` offset into the data section. The data section starts at the first multiple of
//! `general.alignment` (default 32) after the tensor infos.

pub mod convert;
pub mod dequant;
pub mod llama;

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail, ensure};

pub use dequant::{GgmlType, dequantize};

/// The file's first four bytes.
const MAGIC: &[u8; 4] = b"GGUF";
/// Alignment of the data section when `general.alignment` is absent.
const DEFAULT_ALIGNMENT: u64 = 32;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `u8` (type 0).
    U8(u8),
    /// `i8` (type 1).
    I8(i8),
    /// `u16` (type 2).
    U16(u16),
    /// `i16` (type 3).
    I16(i16),
    /// `u32` (type 4).
    U32(u32),
    /// `i32` (type 5).
    I32(i32),
    /// `f32` (type 6).
    F32(f32),
    /// `bool` (type 7, one byte).
    Bool(bool),
    /// UTF-8 string (type 8).
    String(String),
    /// Array of values of one type (type 9).
    Array(Vec<Value>),
    /// `u64` (type 10).
    U64(u64),
    /// `i64` (type 11).
    I64(i64),
    /// `f64` (type 12).
    F64(f64),
}

impl Value {
    /// The value as an unsigned integer, if it is an integer type holding a non-negative value.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a string slice.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

/// One tensor's description.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// GGUF tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions as GGUF stores them: innermost (contiguous) first.
    pub dims: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Offset of the first byte, relative to the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> u64 {
        self.dims.iter().product()
    }

    /// The row-major (PyTorch) shape: the GGUF dimensions reversed.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// A parsed GGUF file (metadata and tensor infos; tensor bytes are read from the caller's buffer).
#[derive(Debug, Clone)]
pub struct Gguf {
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata key-values.
    pub metadata: BTreeMap<String, Value>,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    /// Alignment of the data section and of every tensor offset.
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
}

impl Gguf {
    /// Parses the header, metadata and tensor infos of a GGUF file held in `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader { bytes, pos: 0 };
        let magic = r.take(4)?;
        ensure!(magic == MAGIC, "not a GGUF file (magic {magic:?})");
        let version = r.u32()?;
        ensure!(
            matches!(version, 2 | 3),
            "GGUF version {version} is not supported (2 or 3)"
        );
        let tensor_count = r.u64()?;
        let kv_count = r.u64()?;
        let mut metadata = BTreeMap::new();
        for i in 0..kv_count {
            let key = r.string().with_context(|| format!("metadata key {i}"))?;
            let ty = r.u32()?;
            let value = r
                .value(ty)
                .with_context(|| format!("metadata value of {key}"))?;
            if metadata.insert(key.clone(), value).is_some() {
                bail!("metadata key {key} appears twice");
            }
        }
        let alignment = match metadata.get("general.alignment") {
            Some(v) => v.as_u64().context("general.alignment is not an integer")?,
            None => DEFAULT_ALIGNMENT,
        };
        ensure!(
            alignment.is_power_of_two(),
            "general.alignment {alignment} is not a power of two"
        );
        let mut tensors = Vec::new();
        for i in 0..tensor_count {
            let name = r.string().with_context(|| format!("tensor info {i}"))?;
            let n_dims = r.u32()?;
            ensure!(n_dims <= 4, "tensor {name}: {n_dims} dimensions");
            let dims = (0..n_dims).map(|_| r.u64()).collect::<Result<Vec<_>>>()?;
            let ggml_type = GgmlType::from_id(r.u32()?);
            let offset = r.u64()?;
            ensure!(
                offset.is_multiple_of(alignment),
                "tensor {name}: offset {offset} is not aligned"
            );
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            });
        }
        let data_offset = (r.pos as u64).next_multiple_of(alignment);
        let gguf = Gguf {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
        };
        for t in &gguf.tensors {
            gguf.tensor_bytes(bytes, t)?;
        }
        Ok(gguf)
    }

    /// The bytes of one tensor (checked against the file length and its type's block size).
    pub fn tensor_bytes<'a>(&self, bytes: &'a [u8], t: &TensorInfo) -> Result<&'a [u8]> {
        let len = t
            .ggml_type
            .byte_len(t.numel())
            .with_context(|| format!("tensor {}", t.name))?;
        let start = self
            .data_offset
            .checked_add(t.offset)
            .context("tensor offset overflows")?;
        let end = start.checked_add(len).context("tensor length overflows")?;
        ensure!(
            end <= bytes.len() as u64,
            "tensor {} ends at byte {end}, past the end of the file ({} bytes)",
            t.name,
            bytes.len()
        );
        Ok(&bytes[start as usize..end as usize])
    }

    /// A metadata value that must be present.
    pub fn get(&self, key: &str) -> Result<&Value> {
        self.metadata
            .get(key)
            .with_context(|| format!("GGUF metadata has no {key}"))
    }

    /// A metadata integer that must be present.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.get(key)?
            .as_u64()
            .with_context(|| format!("GGUF metadata {key} is not an integer"))
    }

    /// A metadata string that must be present.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.get(key)?
            .as_str()
            .with_context(|| format!("GGUF metadata {key} is not a string"))
    }

    /// A metadata `f32` that must be present.
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        match self.get(key)? {
            Value::F32(v) => Ok(*v),
            other => bail!("GGUF metadata {key} is not an f32 ({other:?})"),
        }
    }

    /// A metadata array that must be present.
    pub fn get_array(&self, key: &str) -> Result<&[Value]> {
        match self.get(key)? {
            Value::Array(v) => Ok(v),
            _ => bail!("GGUF metadata {key} is not an array"),
        }
    }

    /// The tensor info of a name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// A bounds-checked little-endian cursor.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).context("length overflows")?;
        let Some(out) = self.bytes.get(self.pos..end) else {
            bail!(
                "unexpected end of file at byte {} (wanted {n} more bytes)",
                self.pos
            );
        };
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn len(&mut self) -> Result<usize> {
        let n = self.u64()?;
        let n = usize::try_from(n).context("length does not fit in memory")?;
        // Every item takes at least one byte: a longer claim is a corrupt file, not an allocation.
        ensure!(
            n <= self.bytes.len() - self.pos,
            "length {n} is past the end of the file"
        );
        Ok(n)
    }

    fn string(&mut self) -> Result<String> {
        let n = self.len()?;
        let raw = self.take(n)?;
        String::from_utf8(raw.to_vec()).context("string is not UTF-8")
    }

    fn value(&mut self, ty: u32) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(u8::from_le_bytes(self.array()?)),
            1 => Value::I8(i8::from_le_bytes(self.array()?)),
            2 => Value::U16(u16::from_le_bytes(self.array()?)),
            3 => Value::I16(i16::from_le_bytes(self.array()?)),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(i32::from_le_bytes(self.array()?)),
            6 => Value::F32(f32::from_le_bytes(self.array()?)),
            7 => match self.take(1)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => bail!("bool byte {b}"),
            },
            8 => Value::String(self.string()?),
            9 => {
                let item = self.u32()?;
                ensure!(item != 9, "nested arrays are not supported");
                let n = self.len()?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(item)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.array()?)),
            12 => Value::F64(f64::from_le_bytes(self.array()?)),
            other => bail!("unknown metadata value type {other}"),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub(crate) mod tests {
    use super::*;

    /// Writes a GGUF v3 file: metadata (key, type id, encoded value) and tensors (name, dims,
    /// type id, data bytes), data aligned to 32.
    pub(crate) fn build(
        kv: &[(&str, u32, Vec<u8>)],
        tensors: &[(&str, &[u64], u32, Vec<u8>)],
    ) -> Vec<u8> {
        fn s(out: &mut Vec<u8>, v: &str) {
            out.extend((v.len() as u64).to_le_bytes());
            out.extend(v.as_bytes());
        }
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend((tensors.len() as u64).to_le_bytes());
        out.extend((kv.len() as u64).to_le_bytes());
        for (k, ty, v) in kv {
            s(&mut out, k);
            out.extend(ty.to_le_bytes());
            out.extend(v);
        }
        let mut offset = 0u64;
        let mut data = Vec::new();
        for (name, dims, ty, bytes) in tensors {
            s(&mut out, name);
            out.extend((dims.len() as u32).to_le_bytes());
            for d in *dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(ty.to_le_bytes());
            out.extend(offset.to_le_bytes());
            data.extend(bytes);
            data.resize(data.len().next_multiple_of(32), 0);
            offset = data.len() as u64;
        }
        out.resize(out.len().next_multiple_of(32), 0);
        out.extend(data);
        out
    }

    pub(crate) fn string_value(v: &str) -> Vec<u8> {
        let mut out = (v.len() as u64).to_le_bytes().to_vec();
        out.extend(v.as_bytes());
        out
    }

    #[test]
    fn parses_metadata_tensors_and_alignment() {
        let mut arr = 8u32.to_le_bytes().to_vec();
        arr.extend(2u64.to_le_bytes());
        arr.extend(string_value("a"));
        arr.extend(string_value("bc"));
        let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let file = build(
            &[
                ("general.architecture", 8, string_value("llama")),
                ("llama.block_count", 4, 30u32.to_le_bytes().to_vec()),
                ("x.eps", 6, 1e-5f32.to_le_bytes().to_vec()),
                ("x.flag", 7, vec![1]),
                ("tokens", 9, arr),
            ],
            &[
                ("a.weight", &[3, 2], 0, data.clone()),
                ("b.weight", &[2], 0, data[..8].to_vec()),
            ],
        );
        let g = Gguf::parse(&file).unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(g.alignment, 32);
        assert_eq!(g.get_str("general.architecture").unwrap(), "llama");
        assert_eq!(g.get_u64("llama.block_count").unwrap(), 30);
        assert_eq!(g.get_f32("x.eps").unwrap(), 1e-5);
        assert_eq!(g.get("x.flag").unwrap(), &Value::Bool(true));
        assert_eq!(
            g.get_array("tokens").unwrap(),
            &[Value::String("a".into()), Value::String("bc".into())]
        );
        let a = g.tensor("a.weight").unwrap();
        assert_eq!(a.shape(), vec![2, 3]);
        assert_eq!(g.tensor_bytes(&file, a).unwrap(), &data[..]);
        let b = g.tensor("b.weight").unwrap();
        assert_eq!(b.offset, 32);
        assert_eq!(g.tensor_bytes(&file, b).unwrap(), &data[..8]);
    }

    #[test]
    fn rejects_bad_magic_truncation_and_huge_lengths() {
        let file = build(
            &[("k", 4, 1u32.to_le_bytes().to_vec())],
            &[("t", &[4], 0, vec![0; 16])],
        );
        let mut bad = file.clone();
        bad[0] = b'X';
        assert!(Gguf::parse(&bad).unwrap_err().to_string().contains("magic"));
        // The tensor's 16 bytes end at data_offset + 16 (the file pads them to 32).
        let data_offset = Gguf::parse(&file).unwrap().data_offset as usize;
        assert!(Gguf::parse(&file[..data_offset + 16]).is_ok());
        for cut in [3, 10, 30, data_offset + 15] {
            assert!(Gguf::parse(&file[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = file.clone();
        // The key length of the first metadata entry (after magic, version and the two counts).
        huge[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Gguf::parse(&huge).is_err());
    }
}
