//! Per-device memory accounting: a ledger per device and RAII allocations that free on drop.
//!
//! Bytes are counted as the device would store them: tile-padded shapes under a tiled profile.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tt_ops::Tensor;
use tt_shard::DeviceProfile;

use crate::error::MeshError;

/// One device's memory ledger.
#[derive(Debug)]
pub(crate) struct Ledger {
    pub(crate) device: usize,
    budget: Option<u64>,
    tile: usize,
    tile_padding: bool,
    used: AtomicU64,
    peak: AtomicU64,
    allocations: AtomicU64,
    frees: AtomicU64,
}

impl Ledger {
    pub(crate) fn new(device: usize, profile: &DeviceProfile) -> Self {
        Self {
            device,
            budget: profile.dram_bytes,
            tile: profile.tile,
            tile_padding: profile.tile_padding,
            used: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            allocations: AtomicU64::new(0),
            frees: AtomicU64::new(0),
        }
    }

    /// Bytes a tensor occupies on this device (last two dims tile-padded under a tiled profile).
    pub(crate) fn tensor_bytes(&self, t: &Tensor) -> u64 {
        let shape = t.shape();
        let rank = shape.len();
        let elems = shape.iter().enumerate().fold(1u64, |acc, (i, &d)| {
            let d = if self.tile_padding && self.tile > 1 && i + 2 >= rank {
                d.div_ceil(self.tile) * self.tile
            } else {
                d
            };
            acc.saturating_mul(d as u64)
        });
        elems.saturating_mul(t.dtype().size_bytes() as u64)
    }

    /// Reserve `bytes`; `new_allocation` counts it as an allocation (not a resize).
    fn reserve(&self, bytes: u64, new_allocation: bool) -> Result<(), MeshError> {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            let new = cur.saturating_add(bytes);
            if let Some(budget) = self.budget
                && new > budget
            {
                return Err(MeshError::OutOfMemory {
                    device: self.device,
                    needed: bytes,
                    available: budget.saturating_sub(cur),
                    in_use: cur,
                    budget,
                });
            }
            match self
                .used
                .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.peak.fetch_max(new, Ordering::Relaxed);
                    if new_allocation {
                        self.allocations.fetch_add(1, Ordering::Relaxed);
                    }
                    return Ok(());
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// Release `bytes`; `free` counts it as a free (not a resize).
    fn release(&self, bytes: u64, free: bool) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
        if free {
            self.frees.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn stats(&self) -> MemoryStats {
        MemoryStats {
            device: self.device,
            used: self.used.load(Ordering::Acquire),
            peak: self.peak.load(Ordering::Relaxed),
            budget: self.budget,
            allocations: self.allocations.load(Ordering::Relaxed),
            frees: self.frees.load(Ordering::Relaxed),
        }
    }
}

/// Bytes reserved on one device; released when dropped.
#[derive(Debug)]
pub struct Allocation {
    ledger: Arc<Ledger>,
    bytes: u64,
}

impl Allocation {
    /// Reserve `bytes` on `ledger`'s device.
    pub(crate) fn new(ledger: &Arc<Ledger>, bytes: u64) -> Result<Self, MeshError> {
        ledger.reserve(bytes, true)?;
        Ok(Self {
            ledger: Arc::clone(ledger),
            bytes,
        })
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Device (row-major index) the bytes are on.
    pub fn device(&self) -> usize {
        self.ledger.device
    }

    pub(crate) fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// Grow or shrink to `bytes` (growing past the budget is an error and leaves it unchanged).
    pub(crate) fn resize(&mut self, bytes: u64) -> Result<(), MeshError> {
        if bytes > self.bytes {
            self.ledger.reserve(bytes - self.bytes, false)?;
        } else {
            self.ledger.release(self.bytes - bytes, false);
        }
        self.bytes = bytes;
        Ok(())
    }
}

impl Drop for Allocation {
    fn drop(&mut self) {
        self.ledger.release(self.bytes, true);
    }
}

/// Physical memory of this machine in bytes (`MemTotal` of `/proc/meminfo`), if the OS reports
/// it.
pub fn host_memory_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_total(&info)
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The host profile with a budget: this machine's physical memory split evenly over `devices`
/// (unbounded when the size is unknown). Simulated devices all live in host memory, so a plan
/// (weights plus KV cache) that cannot fit in it is refused with the bytes needed and available
/// before anything is allocated, instead of ending the process when an allocation fails.
pub fn host_profile_within_memory(devices: usize) -> DeviceProfile {
    match host_memory_bytes() {
        Some(total) => DeviceProfile::host_with_budget(total / devices.max(1) as u64),
        None => DeviceProfile::host(),
    }
}

/// Memory counters of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryStats {
    /// Device (row-major index).
    pub device: usize,
    /// Bytes in use now.
    pub used: u64,
    /// Most bytes ever in use at once.
    pub peak: u64,
    /// Budget (`None` = unbounded).
    pub budget: Option<u64>,
    /// Allocations made.
    pub allocations: u64,
    /// Allocations freed.
    pub frees: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_is_read_in_bytes() {
        let info = "MemTotal:       24576000 kB\nMemFree:         1000 kB\n";
        assert_eq!(parse_mem_total(info), Some(24_576_000 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: lots kB\n"), None);
    }

    #[test]
    fn the_host_budget_is_split_over_the_devices() {
        let one = host_profile_within_memory(1);
        let eight = host_profile_within_memory(8);
        assert_eq!(one.name, "host");
        match (one.dram_bytes, eight.dram_bytes, host_memory_bytes()) {
            (Some(a), Some(b), Some(total)) => {
                assert_eq!(a, total);
                assert_eq!(b, total / 8);
            }
            (None, None, None) => {}
            other => panic!("inconsistent budgets {other:?}"),
        }
        assert_eq!(host_profile_within_memory(0).dram_bytes, one.dram_bytes);
    }
}
