//! A shared handle on the output matrix for parallel tasks that each own disjoint elements.
//!
//! Tasks split `out[m, n]` by column ranges (GEMV) or by (row, column) tiles (GEMM), so no task's
//! share is one contiguous slice and `par_chunks_mut` cannot hand them out. Each task instead asks
//! for the row segments it owns; the disjointness argument lives with the caller.
//!
//! The elements are `f32`, or `MaybeUninit<f32>` for an output not yet written (a kernel that
//! writes every element can fill a fresh buffer without zeroing it first; see
//! [`crate::tensor::UnwrittenF32`]).

use std::marker::PhantomData;
use std::mem::MaybeUninit;

/// Raw view of `out` that parallel tasks write through, one disjoint segment each.
pub(crate) struct DisjointOut<'a, T = f32> {
    ptr: *mut T,
    len: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

// SAFETY: the handle is only a pointer plus the exclusive borrow it came from; all access goes
// through `segment` and `raw`, whose contracts make concurrent accesses disjoint, so sharing it
// between threads is no different from handing each thread its own `&mut` sub-slice.
unsafe impl<T: Send> Send for DisjointOut<'_, T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for DisjointOut<'_, T> {}

/// `out` seen as elements that may be uninitialized, for a kernel that takes either kind.
///
/// # Safety
/// Everything written through the returned slice is an initialized `f32` (never
/// `MaybeUninit::uninit()`), so that `out` stays initialized for its owner.
pub(crate) unsafe fn as_unwritten(out: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`; the borrow is carried over; the
    // caller's promise keeps every element initialized.
    unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast(), out.len()) }
}

impl<'a, T> DisjointOut<'a, T> {
    /// Takes the exclusive borrow of `out` for the lifetime of the handle.
    pub(crate) fn new(out: &'a mut [T]) -> Self {
        Self {
            ptr: out.as_mut_ptr(),
            len: out.len(),
            _borrow: PhantomData,
        }
    }

    /// A raw pointer to `out[start]`, for a task that writes elements of `out[start..start +
    /// span]` it owns, scattered among other tasks' elements (a transposed tile store).
    ///
    /// # Safety
    /// The caller writes only elements no other task reads or writes while this handle lives.
    /// (Bounds of the span are checked here.)
    pub(crate) unsafe fn raw(&self, start: usize, span: usize) -> *mut T {
        assert!(
            start <= self.len && span <= self.len - start,
            "raw span out of bounds"
        );
        // SAFETY: start is within the live borrow (checked above); creating the pointer reads or
        // writes nothing.
        unsafe { self.ptr.add(start) }
    }
}

impl DisjointOut<'_, f32> {
    /// The mutable segment `out[start..start + len]`.
    ///
    /// # Safety
    /// While the returned slice lives, no other segment handed out by this handle may overlap it.
    /// (Bounds are checked here, overlap is the caller's promise.)
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn segment(&self, start: usize, len: usize) -> &mut [f32] {
        assert!(
            start <= self.len && len <= self.len - start,
            "segment out of bounds"
        );
        // SAFETY: in bounds (checked above) of a live exclusive borrow; non-overlap is promised by
        // the caller, so this is the only reference to these elements.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}
