//! Tensor storage: elements the tensor owns, or elements borrowed from a longer-lived owner.
//!
//! Borrowed storage lets a weight live where it already is (for example in the pages of a
//! memory-mapped checkpoint, which the OS shares with its page cache) instead of being copied
//! into fresh memory. It is read-only: writing through a tensor that borrows its storage copies
//! the tensor's elements into owned storage first (copy-on-write, as for a shared owned buffer).

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// Something that holds a run of elements for as long as any tensor borrows it.
pub trait SharedElements<T>: Send + Sync {
    /// The elements.
    fn elements(&self) -> &[T];

    /// Gives the process's resident pages of the elements back to the OS where they can be read
    /// back unchanged (a file mapping's), e.g. after a lookup read a few rows of a large table.
    /// The elements stay valid and equal; the next read maps them in again. Default: nothing.
    fn release_pages(&self) {}
}

/// The elements behind a tensor.
pub(crate) enum Store<T> {
    /// Owned by the tensor's buffer.
    Owned(Vec<T>),
    /// Borrowed from an owner kept alive by the `Arc`.
    Shared(Arc<dyn SharedElements<T>>),
}

impl<T> Deref for Store<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match self {
            Store::Owned(v) => v,
            Store::Shared(s) => s.elements(),
        }
    }
}

impl<T> Store<T> {
    /// [`SharedElements::release_pages`] of borrowed elements; owned ones stay as they are.
    pub(crate) fn release_pages(&self) {
        if let Store::Shared(s) = self {
            s.release_pages();
        }
    }
}

impl<T> fmt::Debug for Store<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Store::Owned(v) => write!(f, "Owned({} elements)", v.len()),
            Store::Shared(s) => write!(f, "Shared({} elements)", s.elements().len()),
        }
    }
}

/// A buffer of owned elements.
pub(crate) fn owned<T>(v: Vec<T>) -> Arc<Store<T>> {
    Arc::new(Store::Owned(v))
}

/// Makes `v` an owned buffer held only by the caller, copying the window `[off, off + n)` into
/// a new buffer if it is shared or borrowed. Returns the vector and the window's new offset.
pub(crate) fn unique<T: Clone>(
    v: &mut Arc<Store<T>>,
    off: usize,
    n: usize,
) -> (&mut Vec<T>, usize) {
    let reusable = matches!(Arc::get_mut(v), Some(Store::Owned(_)));
    let off = if reusable {
        off
    } else {
        *v = owned(v[off..off + n].to_vec());
        0
    };
    match Arc::get_mut(v) {
        Some(Store::Owned(vec)) => (vec, off),
        // The buffer was just made owned and unshared above.
        _ => unreachable!("a freshly made buffer is owned and unique"),
    }
}
