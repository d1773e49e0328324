//! The device-local tensor: a shape plus row-major f32 or bf16 storage.
//!
//! Storage is reference counted, so `clone`, [`Tensor::reshape`], [`Tensor::select`] and
//! [`Tensor::narrow`] along the outermost non-unit dimension are views that copy nothing. A view
//! is always one contiguous run of the underlying buffer (`offset .. offset + numel`).
//! Mutable access is copy-on-write: if the buffer is shared, the view's elements are copied into a
//! fresh buffer first, so writing through one tensor never changes another.
//!
//! One exception to contiguity: [`Tensor::columns`] of a matrix is a view whose rows lie
//! [`Tensor::row_stride`] elements apart (a row-parallel weight shard read in place). Only
//! [`crate::linear`] reads such views directly; every other access copies them to a contiguous
//! tensor first ([`Tensor::contiguous`]), and [`Tensor::as_f32`]/[`Tensor::as_bf16`] refuse them.
//! Storage may also be borrowed from a longer-lived owner ([`Tensor::from_shared_bf16`]), e.g. a
//! memory-mapped checkpoint, so weights need not be copied into fresh memory.
//!
//! Activations are f32 tensors (see [`crate::Fidelity`] for bf16 rounding between ops); weights
//! and KV caches may be bf16 tensors.

use std::sync::Arc;

use half::bf16;

use crate::error::{OpError, Result};
use crate::storage::{Store, owned, unique};

/// Element type of a tensor's storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE 754 single precision.
    F32,
    /// bfloat16 (8-bit exponent, 7-bit mantissa), as stored by the device.
    Bf16,
}

impl DType {
    /// Bytes per element.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::Bf16 => 2,
        }
    }
}

/// A storage element type: `f32` or `bf16`. Lets kernels be generic over cache storage.
pub trait Element: Copy + Send + Sync + 'static {
    /// The dtype tag of this element type.
    const DTYPE: DType;
    /// Widen to f32 (exact).
    fn to_f32(self) -> f32;
    /// Narrow from f32 (round to nearest even for bf16; identity for f32).
    fn from_f32(x: f32) -> Self;
    /// Borrow the storage of `t` as a slice of this element type.
    fn slice(t: &Tensor) -> Result<&[Self]>;
    /// Mutably borrow the storage of `t` (copy-on-write) as a slice of this element type.
    fn slice_mut(t: &mut Tensor) -> Result<&mut [Self]>;
    /// A tensor owning `data` with `shape`.
    fn tensor(data: Vec<Self>, shape: &[usize]) -> Result<Tensor>;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x
    }
    fn slice(t: &Tensor) -> Result<&[Self]> {
        t.as_f32()
    }
    fn slice_mut(t: &mut Tensor) -> Result<&mut [Self]> {
        t.as_f32_mut()
    }
    fn tensor(data: Vec<Self>, shape: &[usize]) -> Result<Tensor> {
        Tensor::from_f32(data, shape)
    }
}

impl Element for bf16 {
    const DTYPE: DType = DType::Bf16;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from_bits(u32::from(self.to_bits()) << 16)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
    fn slice(t: &Tensor) -> Result<&[Self]> {
        t.as_bf16()
    }
    fn slice_mut(t: &mut Tensor) -> Result<&mut [Self]> {
        t.as_bf16_mut()
    }
    fn tensor(data: Vec<Self>, shape: &[usize]) -> Result<Tensor> {
        Tensor::from_bf16(data, shape)
    }
}

#[derive(Debug, Clone)]
enum Buffer {
    F32(Arc<Store<f32>>),
    Bf16(Arc<Store<bf16>>),
}

/// A device-local, row-major tensor with f32 or bf16 storage.
#[derive(Debug, Clone)]
pub struct Tensor {
    buf: Buffer,
    offset: usize,
    shape: Vec<usize>,
    /// Distance between the rows of a 2-D column view; `None` for a contiguous tensor.
    row_stride: Option<usize>,
}

fn numel_of(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    /// A tensor of zeros. The buffer comes from a zeroed allocation, so its pages are only
    /// faulted in when first touched: a large KV cache costs nothing until it is written. (So it
    /// stays on 4 KiB pages: on 2 MiB pages, writing one row of every head faults in the whole
    /// cache, measured at 1.4-6.3 s for a 4K-token cache on a fragmented host.)
    pub fn zeros(shape: &[usize], dtype: DType) -> Self {
        let n = numel_of(shape);
        let buf = match dtype {
            DType::F32 => Buffer::F32(owned(bytemuck::zeroed_vec::<f32>(n))),
            DType::Bf16 => Buffer::Bf16(owned(bytemuck::zeroed_vec::<bf16>(n))),
        };
        Self {
            buf,
            offset: 0,
            shape: shape.to_vec(),
            row_stride: None,
        }
    }

    /// A tensor filled with `value` (rounded to bf16 for a bf16 tensor).
    pub fn full(shape: &[usize], value: f32, dtype: DType) -> Self {
        let n = numel_of(shape);
        let buf = match dtype {
            DType::F32 => Buffer::F32(owned(vec![value; n])),
            DType::Bf16 => Buffer::Bf16(owned(vec![bf16::from_f32(value); n])),
        };
        Self {
            buf,
            offset: 0,
            shape: shape.to_vec(),
            row_stride: None,
        }
    }

    /// An f32 tensor owning `data`; errors if `data.len()` is not the product of `shape`.
    pub fn from_f32(data: Vec<f32>, shape: &[usize]) -> Result<Self> {
        check_len(data.len(), shape)?;
        Ok(Self {
            buf: Buffer::F32(owned(data)),
            offset: 0,
            shape: shape.to_vec(),
            row_stride: None,
        })
    }

    /// A bf16 tensor owning `data`; errors if `data.len()` is not the product of `shape`.
    pub fn from_bf16(data: Vec<bf16>, shape: &[usize]) -> Result<Self> {
        check_len(data.len(), shape)?;
        Ok(Self {
            buf: Buffer::Bf16(owned(data)),
            offset: 0,
            shape: shape.to_vec(),
            row_stride: None,
        })
    }

    /// A tensor of the given dtype made from f32 values (rounded to nearest even for bf16), in a
    /// new buffer (on 2 MiB pages when it is large, [`crate::pages`]).
    pub fn from_f32_as(data: &[f32], shape: &[usize], dtype: DType) -> Result<Self> {
        check_len(data.len(), shape)?;
        match dtype {
            DType::F32 => {
                let mut v = crate::pages::zeroed_vec::<f32>(data.len());
                v.copy_from_slice(data);
                Self::from_f32(v, shape)
            }
            DType::Bf16 => {
                let mut v = crate::pages::zeroed_vec::<bf16>(data.len());
                for (d, &x) in v.iter_mut().zip(data) {
                    *d = bf16::from_f32(x);
                }
                Self::from_bf16(v, shape)
            }
        }
    }

    /// The shape (outermost dimension first).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Size of dimension `dim`; errors if `dim >= rank`.
    pub fn dim(&self, dim: usize) -> Result<usize> {
        self.shape.get(dim).copied().ok_or_else(|| {
            OpError::out_of_range("Tensor::dim", "dim", dim as i64, self.shape.len())
        })
    }

    /// The shape as a fixed-size array; errors unless the rank is exactly `N`.
    pub fn dims<const N: usize>(&self) -> Result<[usize; N]> {
        <[usize; N]>::try_from(self.shape.as_slice()).map_err(|_| {
            OpError::shape(
                "Tensor::dims",
                format!("expected rank {N}, got shape {:?}", self.shape),
            )
        })
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        numel_of(&self.shape)
    }

    /// Storage element type.
    pub fn dtype(&self) -> DType {
        match self.buf {
            Buffer::F32(_) => DType::F32,
            Buffer::Bf16(_) => DType::Bf16,
        }
    }

    /// Bytes this tensor's elements occupy (`numel * dtype size`).
    pub fn size_bytes(&self) -> usize {
        self.numel() * self.dtype().size_bytes()
    }

    /// The elements of an f32 tensor; errors for a bf16 tensor.
    pub fn as_f32(&self) -> Result<&[f32]> {
        if !self.is_contiguous() {
            return Err(self.not_contiguous("Tensor::as_f32"));
        }
        let n = self.numel();
        match &self.buf {
            Buffer::F32(v) => Ok(&v[self.offset..self.offset + n]),
            Buffer::Bf16(_) => Err(self.dtype_error("Tensor::as_f32", DType::F32)),
        }
    }

    /// The elements of a bf16 tensor; errors for an f32 tensor.
    pub fn as_bf16(&self) -> Result<&[bf16]> {
        if !self.is_contiguous() {
            return Err(self.not_contiguous("Tensor::as_bf16"));
        }
        let n = self.numel();
        match &self.buf {
            Buffer::Bf16(v) => Ok(&v[self.offset..self.offset + n]),
            Buffer::F32(_) => Err(self.dtype_error("Tensor::as_bf16", DType::Bf16)),
        }
    }

    /// Mutable elements of an f32 tensor (copy-on-write if the storage is shared).
    pub fn as_f32_mut(&mut self) -> Result<&mut [f32]> {
        if !self.is_contiguous() {
            *self = self.contiguous();
        }
        let n = self.numel();
        let (off, shape_dtype) = (self.offset, self.dtype());
        match &mut self.buf {
            Buffer::F32(v) => {
                let (vec, off) = unique(v, off, n);
                self.offset = off;
                Ok(&mut vec[off..off + n])
            }
            Buffer::Bf16(_) => Err(OpError::DType {
                op: "Tensor::as_f32_mut",
                expected: DType::F32,
                got: shape_dtype,
            }),
        }
    }

    /// Mutable elements of a bf16 tensor (copy-on-write if the storage is shared).
    pub fn as_bf16_mut(&mut self) -> Result<&mut [bf16]> {
        if !self.is_contiguous() {
            *self = self.contiguous();
        }
        let n = self.numel();
        let (off, shape_dtype) = (self.offset, self.dtype());
        match &mut self.buf {
            Buffer::Bf16(v) => {
                let (vec, off) = unique(v, off, n);
                self.offset = off;
                Ok(&mut vec[off..off + n])
            }
            Buffer::F32(_) => Err(OpError::DType {
                op: "Tensor::as_bf16_mut",
                expected: DType::Bf16,
                got: shape_dtype,
            }),
        }
    }

    /// The elements widened to f32 in a new vector.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        if !self.is_contiguous() {
            return self.contiguous().to_f32_vec();
        }
        let n = self.numel();
        match &self.buf {
            Buffer::F32(v) => v[self.offset..self.offset + n].to_vec(),
            Buffer::Bf16(v) => v[self.offset..self.offset + n]
                .iter()
                .map(|&x| Element::to_f32(x))
                .collect(),
        }
    }

    /// Gives the resident pages of borrowed storage that can be read back unchanged (a file
    /// mapping's, see [`SharedElements::release_pages`]) to the OS; owned storage is untouched.
    /// The values stay the same: the next read maps them in again. For a lookup table read a
    /// few rows at a time, so that rows read once do not stay in the process's memory.
    pub fn release_pages(&self) {
        match &self.buf {
            Buffer::F32(s) => s.release_pages(),
            Buffer::Bf16(s) => s.release_pages(),
        }
    }

    /// The elements as f32: borrowed from an f32 tensor, widened into a new vector for bf16.
    pub fn f32_values(&self) -> std::borrow::Cow<'_, [f32]> {
        match self.as_f32() {
            Ok(s) => std::borrow::Cow::Borrowed(s),
            Err(_) => std::borrow::Cow::Owned(self.to_f32_vec()),
        }
    }

    /// This tensor in `dtype` (a cheap clone if it already is; bf16 rounding is nearest even).
    pub fn to_dtype(&self, dtype: DType) -> Tensor {
        if dtype == self.dtype() {
            return self.clone();
        }
        if !self.is_contiguous() {
            return self.contiguous().to_dtype(dtype);
        }
        let n = self.numel();
        let buf = match &self.buf {
            Buffer::F32(v) => Buffer::Bf16(owned(
                v[self.offset..self.offset + n]
                    .iter()
                    .map(|&x| bf16::from_f32(x))
                    .collect(),
            )),
            Buffer::Bf16(_) => Buffer::F32(owned(self.to_f32_vec())),
        };
        Tensor {
            buf,
            offset: 0,
            shape: self.shape.clone(),
            row_stride: None,
        }
    }

    /// The same elements under a new shape (a view); errors if the element counts differ.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if n != Some(self.numel()) {
            return Err(OpError::shape(
                "Tensor::reshape",
                format!("cannot reshape {:?} to {:?}", self.shape, shape),
            ));
        }
        if !self.is_contiguous() {
            return self.contiguous().reshape(shape);
        }
        Ok(Tensor {
            buf: self.buf.clone(),
            offset: self.offset,
            shape: shape.to_vec(),
            row_stride: None,
        })
    }

    /// Index `index` of the leading dimension, with that dimension dropped (a view).
    pub fn select(&self, index: usize) -> Result<Tensor> {
        if !self.is_contiguous() {
            return self.contiguous().select(index);
        }
        let Some((&lead, rest)) = self.shape.split_first() else {
            return Err(OpError::shape(
                "Tensor::select",
                "cannot select from a scalar",
            ));
        };
        if index >= lead {
            return Err(OpError::out_of_range(
                "Tensor::select",
                "index",
                index as i64,
                lead,
            ));
        }
        let inner = numel_of(rest);
        Ok(Tensor {
            buf: self.buf.clone(),
            offset: self.offset + index * inner,
            shape: rest.to_vec(),
            row_stride: None,
        })
    }

    /// Elements `start .. start + len` of dimension `dim`.
    ///
    /// A view (no copy) when every dimension before `dim` has size 1, which includes the leading
    /// dimension; otherwise the slice is copied into a new buffer.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Tensor> {
        if !self.is_contiguous() {
            return self.contiguous().narrow(dim, start, len);
        }
        let size = self.dim(dim)?;
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(OpError::out_of_range(
                "Tensor::narrow",
                format!("end of range [{start}, {start}+{len}) in dim {dim}"),
                start.saturating_add(len) as i64,
                size + 1,
            ));
        }
        let outer = numel_of(&self.shape[..dim]);
        let inner = numel_of(&self.shape[dim + 1..]);
        let mut shape = self.shape.clone();
        shape[dim] = len;
        if outer == 1 {
            return Ok(Tensor {
                buf: self.buf.clone(),
                offset: self.offset + start * inner,
                shape,
                row_stride: None,
            });
        }
        let pick = |o: usize| {
            let base = self.offset + (o * size + start) * inner;
            base..base + len * inner
        };
        let buf = match &self.buf {
            Buffer::F32(v) => Buffer::F32(owned(
                (0..outer).flat_map(|o| v[pick(o)].to_vec()).collect(),
            )),
            Buffer::Bf16(v) => Buffer::Bf16(owned(
                (0..outer).flat_map(|o| v[pick(o)].to_vec()).collect(),
            )),
        };
        Ok(Tensor {
            buf,
            offset: 0,
            shape,
            row_stride: None,
        })
    }

    /// Concatenate tensors of one dtype along `dim` (all other dimensions must agree). Copies.
    pub fn cat(tensors: &[&Tensor], dim: usize) -> Result<Tensor> {
        const OP: &str = "Tensor::cat";
        let Some(first) = tensors.first() else {
            return Err(OpError::invalid(OP, "no tensors to concatenate"));
        };
        let rank = first.rank();
        if dim >= rank {
            return Err(OpError::out_of_range(OP, "dim", dim as i64, rank));
        }
        let mut total = 0;
        for t in tensors {
            let same_rest =
                t.rank() == rank && (0..rank).all(|d| d == dim || t.shape[d] == first.shape[d]);
            if !same_rest {
                return Err(OpError::shape(
                    OP,
                    format!(
                        "shape {:?} does not match {:?} outside dim {dim}",
                        t.shape, first.shape
                    ),
                ));
            }
            if t.dtype() != first.dtype() {
                return Err(OpError::DType {
                    op: OP,
                    expected: first.dtype(),
                    got: t.dtype(),
                });
            }
            total += t.shape[dim];
        }
        let outer = numel_of(&first.shape[..dim]);
        let inner = numel_of(&first.shape[dim + 1..]);
        let mut shape = first.shape.clone();
        shape[dim] = total;
        fn gather<T: Element>(
            ts: &[&Tensor],
            outer: usize,
            inner: usize,
            dim: usize,
        ) -> Result<Vec<T>> {
            let ts: Vec<Tensor> = ts.iter().map(|t| t.contiguous()).collect();
            let slices = ts.iter().map(T::slice).collect::<Result<Vec<_>>>()?;
            let mut out = Vec::new();
            for o in 0..outer {
                for (t, s) in ts.iter().zip(&slices) {
                    let run = t.shape[dim] * inner;
                    out.extend_from_slice(&s[o * run..(o + 1) * run]);
                }
            }
            Ok(out)
        }
        match first.dtype() {
            DType::F32 => Tensor::from_f32(gather::<f32>(tensors, outer, inner, dim)?, &shape),
            DType::Bf16 => Tensor::from_bf16(gather::<bf16>(tensors, outer, inner, dim)?, &shape),
        }
    }

    /// Whether two tensors share one storage buffer (i.e. one is a view of the other's buffer).
    pub fn shares_storage(&self, other: &Tensor) -> bool {
        match (&self.buf, &other.buf) {
            (Buffer::F32(a), Buffer::F32(b)) => Arc::ptr_eq(a, b),
            (Buffer::Bf16(a), Buffer::Bf16(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    fn dtype_error(&self, op: &'static str, expected: DType) -> OpError {
        OpError::DType {
            op,
            expected,
            got: self.dtype(),
        }
    }
}

fn check_len(len: usize, shape: &[usize]) -> Result<()> {
    let expected = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if expected != Some(len) {
        return Err(OpError::DataLength {
            shape: shape.to_vec(),
            expected: expected.unwrap_or(usize::MAX),
            got: len,
        });
    }
    Ok(())
}

#[path = "tensor_views.rs"]
mod views;

#[path = "tensor_unwritten.rs"]
mod unwritten;
pub(crate) use unwritten::UnwrittenF32;

#[cfg(test)]
#[path = "tensor_tests.rs"]
mod tests;
