//! Load progress reporting: the library never prints; callers (the `phi3` binary) draw a bar.

use std::sync::atomic::{AtomicU64, Ordering};

/// Receives load progress. Methods take `&self` because shards are read from several threads.
pub trait LoadProgress: Send + Sync {
    /// Loading starts; `total_bytes` of tensor data will be read (an estimate for bars).
    fn start(&self, total_bytes: u64) {
        let _ = total_bytes;
    }
    /// `bytes` more of checkpoint data were read (for `tensor`).
    fn advance(&self, tensor: &str, bytes: u64) {
        let _ = (tensor, bytes);
    }
    /// Loading is complete.
    fn finish(&self) {}
}

/// Ignores all progress.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl LoadProgress for NoProgress {}

/// Counts bytes read; useful in tests and for summaries.
#[derive(Debug, Default)]
pub struct ByteCounter {
    total: AtomicU64,
    read: AtomicU64,
}

impl ByteCounter {
    /// Total announced by [`LoadProgress::start`].
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Bytes reported so far.
    pub fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }
}

impl LoadProgress for ByteCounter {
    fn start(&self, total_bytes: u64) {
        self.total.store(total_bytes, Ordering::Relaxed);
    }

    fn advance(&self, _tensor: &str, bytes: u64) {
        self.read.fetch_add(bytes, Ordering::Relaxed);
    }
}
