//! Views that are not one contiguous run, and storage borrowed from elsewhere: the pieces of
//! [`Tensor`] that let weights be read in place from a memory-mapped checkpoint.

use std::sync::Arc;

use half::bf16;

use super::{Buffer, DType, Tensor};
use crate::error::{OpError, Result};
use crate::storage::{SharedElements, Store, owned};

impl Tensor {
    /// A bf16 tensor over `owner`'s elements `offset .. offset + numel` without copying them
    /// (read-only: writes copy first). Errors if the run does not fit in `owner`.
    pub fn from_shared_bf16(
        owner: Arc<dyn SharedElements<bf16>>,
        offset: usize,
        shape: &[usize],
    ) -> Result<Self> {
        let len = owner.elements().len();
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if n.and_then(|n| n.checked_add(offset))
            .is_none_or(|end| end > len)
        {
            return Err(OpError::DataLength {
                shape: shape.to_vec(),
                expected: n.unwrap_or(usize::MAX),
                got: len.saturating_sub(offset),
            });
        }
        Ok(Self {
            buf: Buffer::Bf16(Arc::new(Store::Shared(owner))),
            offset,
            shape: shape.to_vec(),
            row_stride: None,
        })
    }

    /// Columns `start .. start + len` of a matrix as a view (no copy) whose rows lie
    /// [`Tensor::row_stride`] elements apart. Errors unless the tensor is 2-D and the range fits.
    pub fn columns(&self, start: usize, len: usize) -> Result<Tensor> {
        const OP: &str = "Tensor::columns";
        let [rows, cols] = self.dims::<2>()?;
        if start.checked_add(len).is_none_or(|end| end > cols) {
            return Err(OpError::out_of_range(
                OP,
                format!("end of column range [{start}, {start}+{len})"),
                start.saturating_add(len) as i64,
                cols + 1,
            ));
        }
        Ok(Tensor {
            buf: self.buf.clone(),
            offset: self.offset + start,
            shape: vec![rows, len],
            row_stride: Some(self.row_stride.unwrap_or(cols)),
        })
    }

    /// Whether the elements are one contiguous run (false only for a [`Tensor::columns`] view
    /// narrower than its matrix).
    pub fn is_contiguous(&self) -> bool {
        self.row_stride.is_none()
    }

    /// Distance between consecutive rows of a 2-D tensor (its width when contiguous).
    pub fn row_stride(&self) -> usize {
        self.row_stride
            .unwrap_or_else(|| self.shape.last().copied().unwrap_or(1))
    }

    /// The column ranges `ranges` of a matrix, side by side, as a new contiguous `[rows, total]`
    /// tensor (`total` = the ranges' summed length): e.g. one device's Q, K and V columns of a
    /// fused projection computed for every device at once. Errors unless the tensor is 2-D and
    /// every range fits.
    pub fn gather_columns(&self, ranges: &[std::ops::Range<usize>]) -> Result<Tensor> {
        const OP: &str = "Tensor::gather_columns";
        let [rows, cols] = self.dims::<2>()?;
        let mut total = 0usize;
        for r in ranges {
            if r.start > r.end || r.end > cols {
                return Err(OpError::out_of_range(
                    OP,
                    format!("end of column range [{}, {})", r.start, r.end),
                    r.end as i64,
                    cols + 1,
                ));
            }
            total += r.len();
        }
        fn pick<T: Copy>(
            v: &[T],
            stride: usize,
            rows: usize,
            ranges: &[std::ops::Range<usize>],
            total: usize,
        ) -> Vec<T> {
            let mut out = Vec::with_capacity(rows * total);
            for i in 0..rows {
                for r in ranges {
                    out.extend_from_slice(&v[i * stride + r.start..i * stride + r.end]);
                }
            }
            out
        }
        let stride = self.row_stride();
        let buf = match &self.buf {
            Buffer::F32(v) => {
                Buffer::F32(owned(pick(&v[self.offset..], stride, rows, ranges, total)))
            }
            Buffer::Bf16(v) => {
                Buffer::Bf16(owned(pick(&v[self.offset..], stride, rows, ranges, total)))
            }
        };
        Ok(Tensor {
            buf,
            offset: 0,
            shape: vec![rows, total],
            row_stride: None,
        })
    }

    /// A contiguous tensor with the same elements: a cheap clone if it already is, else a copy.
    pub fn contiguous(&self) -> Tensor {
        let Some(stride) = self.row_stride else {
            return self.clone();
        };
        let (rows, cols) = (self.shape[0], self.shape[1]);
        let pick = |r: usize| self.offset + r * stride..self.offset + r * stride + cols;
        let buf = match &self.buf {
            Buffer::F32(v) => {
                Buffer::F32(owned((0..rows).flat_map(|r| v[pick(r)].to_vec()).collect()))
            }
            Buffer::Bf16(v) => {
                Buffer::Bf16(owned((0..rows).flat_map(|r| v[pick(r)].to_vec()).collect()))
            }
        };
        Tensor {
            buf,
            offset: 0,
            shape: self.shape.clone(),
            row_stride: None,
        }
    }

    /// A 2-D bf16 tensor's elements as rows `stride` apart: `(elements, stride)`, where row `r` is
    /// `elements[r * stride .. r * stride + cols]` (the form the matmul kernels read).
    pub fn bf16_rows(&self) -> Result<(&[bf16], usize)> {
        let stride = self.row_stride();
        match &self.buf {
            Buffer::Bf16(v) => Ok((&v[self.offset..self.offset + self.strided_span()], stride)),
            Buffer::F32(_) => Err(self.dtype_error("Tensor::bf16_rows", DType::Bf16)),
        }
    }

    /// [`Tensor::bf16_rows`] for an f32 tensor.
    pub fn f32_rows(&self) -> Result<(&[f32], usize)> {
        let stride = self.row_stride();
        match &self.buf {
            Buffer::F32(v) => Ok((&v[self.offset..self.offset + self.strided_span()], stride)),
            Buffer::Bf16(_) => Err(self.dtype_error("Tensor::f32_rows", DType::F32)),
        }
    }

    /// Elements from the first to one past the last of the tensor, in storage.
    pub(super) fn strided_span(&self) -> usize {
        match (self.row_stride, self.shape.as_slice()) {
            (Some(stride), &[rows, cols]) if rows > 0 && cols > 0 => (rows - 1) * stride + cols,
            (Some(_), _) => 0,
            (None, _) => self.numel(),
        }
    }

    pub(super) fn not_contiguous(&self, op: &'static str) -> OpError {
        OpError::invalid(
            op,
            format!(
                "a column view {:?} with row stride {} is not contiguous; call contiguous() first",
                self.shape,
                self.row_stride()
            ),
        )
    }
}
