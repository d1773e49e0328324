//! An f32 tensor's buffer before a kernel writes it: no zeroing of memory that is about to be
//! overwritten, and rows that start on a cache line.
//!
//! A prefill's products write tens of megabytes per op (a 2x4 mesh's row-parallel layer: eight
//! `[1024, 3072]` f32 partial sums, 100 MB). Zeroing such a buffer first costs as much as the
//! write itself on a memory-bound host, and the matrix-unit kernel writes every element anyway
//! (`kernels::amx_gemm`). Its streaming stores also need 64-byte aligned rows, which the
//! allocator does not promise: the buffer keeps up to 15 spare elements in front instead.

use std::mem::MaybeUninit;

use super::{Buffer, Tensor, numel_of};
use crate::storage::owned;

/// f32 elements per 64-byte cache line.
const LINE_F32: usize = 64 / std::mem::size_of::<f32>();

/// A buffer for an f32 tensor of a given shape whose elements are not yet written.
pub(crate) struct UnwrittenF32 {
    /// The spare elements in front (written: zeros), then the tensor's (unwritten).
    data: Vec<MaybeUninit<f32>>,
    offset: usize,
    shape: Vec<usize>,
}

impl UnwrittenF32 {
    /// Room for a tensor of `shape` whose first element starts a cache line. Large buffers ask
    /// for 2 MiB pages, as [`crate::pages::zeroed_vec`] does.
    pub(crate) fn line_aligned(shape: &[usize]) -> Self {
        let n = numel_of(shape);
        let mut data: Vec<MaybeUninit<f32>> = Vec::with_capacity(n + LINE_F32 - 1);
        // SAFETY: within the capacity just reserved; `MaybeUninit` elements need no
        // initialization.
        unsafe { data.set_len(n + LINE_F32 - 1) };
        crate::pages::advise_huge_pages(&data);
        let offset = data.as_ptr().align_offset(64).min(LINE_F32 - 1);
        data.truncate(offset + n);
        data[..offset].fill(MaybeUninit::new(0.0));
        Self {
            data,
            offset,
            shape: shape.to_vec(),
        }
    }

    /// The tensor's elements, for a kernel to write.
    pub(crate) fn elements(&mut self) -> &mut [MaybeUninit<f32>] {
        &mut self.data[self.offset..]
    }

    /// The tensor with every element zero (for a kernel that adds into its output, or a caller
    /// whose kernel declined).
    pub(crate) fn zeroed(mut self) -> Tensor {
        self.data.fill(MaybeUninit::new(0.0));
        // SAFETY: every element was just written.
        unsafe { self.assume_written() }
    }

    /// The tensor, its elements as the kernel wrote them.
    ///
    /// # Safety
    /// Every element of [`UnwrittenF32::elements`] has been written.
    pub(crate) unsafe fn assume_written(self) -> Tensor {
        let mut data = std::mem::ManuallyDrop::new(self.data);
        let (ptr, len, cap) = (data.as_mut_ptr(), data.len(), data.capacity());
        // SAFETY: the allocation came from a Vec of `MaybeUninit<f32>`, which has the size and
        // alignment of `f32`, so it is deallocated with the same layout; the spare elements were
        // written at creation and the rest by the caller (its contract), so all `len` elements
        // are initialized. `data` is not dropped, so the allocation has one owner.
        let data = unsafe { Vec::from_raw_parts(ptr.cast::<f32>(), len, cap) };
        Tensor {
            buf: Buffer::F32(owned(data)),
            offset: self.offset,
            shape: self.shape,
            row_stride: None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn rows_start_on_a_line_and_written_elements_come_back() {
        for shape in [vec![0], vec![1], vec![3, 5], vec![1024, 3]] {
            let mut u = UnwrittenF32::line_aligned(&shape);
            let e = u.elements();
            assert_eq!(e.len(), shape.iter().product::<usize>());
            assert!(e.is_empty() || e.as_ptr().align_offset(64) == 0);
            for (i, v) in e.iter_mut().enumerate() {
                v.write(i as f32 - 2.5);
            }
            // SAFETY: every element written above.
            let t = unsafe { u.assume_written() };
            assert_eq!(t.shape(), shape.as_slice());
            let want: Vec<f32> = (0..t.numel()).map(|i| i as f32 - 2.5).collect();
            assert_eq!(t.as_f32().unwrap(), want.as_slice());
            assert!(t.as_f32().unwrap().as_ptr().align_offset(64) == 0 || t.numel() == 0);
        }
        let z = UnwrittenF32::line_aligned(&[7, 9]).zeroed();
        assert!(z.as_f32().unwrap().iter().all(|&v| v == 0.0));
    }
}
