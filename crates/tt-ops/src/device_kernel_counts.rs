//! How many [`device_linear()`](crate::device_linear()) calls each [`DeviceKernel`] served, since
//! the process started: take a [`device_kernel_counts`] snapshot before and after a stretch of
//! work and [`DeviceKernelCounts::since`] gives the calls in between (what `cargo xtask bench`
//! reports per prefill and decode), as [`crate::kernels::path_counts`] does for products with
//! bf16/f32 weights.
//!
//! A call is counted once, on the kernel chosen for it (the fast kernel when its plan holds for
//! the call's activations, else the reference emulation), whatever the number of tasks it splits
//! into. Counters are relaxed atomics: exact once the counted calls have returned.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::device_linear::DeviceKernel;

/// One counter per [`DeviceKernel::ALL`] entry.
static COUNTS: [AtomicU64; DeviceKernel::ALL.len()] =
    [const { AtomicU64::new(0) }; DeviceKernel::ALL.len()];

/// Calls per [`DeviceKernel`] since the process started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceKernelCounts {
    /// Indexed by [`DeviceKernel::index`].
    calls: [u64; DeviceKernel::ALL.len()],
}

impl DeviceKernelCounts {
    /// The calls of `kernel`.
    pub fn get(&self, kernel: DeviceKernel) -> u64 {
        self.calls.get(kernel.index()).copied().unwrap_or(0)
    }

    /// The calls counted in `self` but not in `earlier` (0 where `earlier` is the later one).
    pub fn since(&self, earlier: &DeviceKernelCounts) -> DeviceKernelCounts {
        let mut calls = self.calls;
        for (c, e) in calls.iter_mut().zip(&earlier.calls) {
            *c = c.saturating_sub(*e);
        }
        DeviceKernelCounts { calls }
    }

    /// Every kernel with its calls, in [`DeviceKernel::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (DeviceKernel, u64)> + '_ {
        DeviceKernel::ALL.iter().map(|&k| (k, self.get(k)))
    }

    /// The first kernel (in [`DeviceKernel::ALL`] order) with calls: after one call, the kernel
    /// it ran.
    pub fn first_used(&self) -> Option<DeviceKernel> {
        self.iter().find(|&(_, calls)| calls > 0).map(|(k, _)| k)
    }

    /// Calls over all kernels.
    pub fn total(&self) -> u64 {
        self.calls.iter().sum()
    }
}

/// The calls of each kernel so far.
pub fn device_kernel_counts() -> DeviceKernelCounts {
    DeviceKernelCounts {
        calls: std::array::from_fn(|i| COUNTS[i].load(Ordering::Relaxed)),
    }
}

/// Counts one [`device_linear()`](crate::device_linear()) call on `kernel`.
pub(crate) fn record(kernel: DeviceKernel) {
    // A kernel missing from `DeviceKernel::ALL` has no counter (index_matches_the_all_list).
    if let Some(c) = COUNTS.get(kernel.index()) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tt_numerics::{Accumulation, MathFidelity, OpSettings, StorageFormat};

    use super::*;
    use crate::device_linear::{DeviceWeight, device_linear, device_linear_reference};
    use crate::tensor::Tensor;

    #[test]
    fn index_matches_the_all_list() {
        for (i, k) in DeviceKernel::ALL.iter().enumerate() {
            assert_eq!(k.index(), i, "{k:?}");
        }
        let mut names: Vec<&str> = DeviceKernel::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DeviceKernel::ALL.len());
    }

    #[test]
    fn since_subtracts_per_kernel() {
        let mut a = DeviceKernelCounts::default();
        let mut b = DeviceKernelCounts::default();
        a.calls[DeviceKernel::Reference.index()] = 7;
        a.calls[DeviceKernel::PackedAvx2.index()] = 2;
        b.calls[DeviceKernel::Reference.index()] = 3;
        let d = a.since(&b);
        assert_eq!(d.get(DeviceKernel::Reference), 4);
        assert_eq!(d.get(DeviceKernel::PackedAvx2), 2);
        assert_eq!(d.get(DeviceKernel::PackedAvx512), 0);
        assert_eq!(d.total(), 6);
        assert_eq!(b.since(&a).total(), 0);
        assert_eq!(d.first_used(), Some(DeviceKernel::PackedAvx2));
        assert_eq!(b.since(&a).first_used(), None);
        assert_eq!(d.iter().count(), DeviceKernel::ALL.len());
    }

    /// Each call counts once, on the kernel it ran. Other tests of this process call
    /// device_linear concurrently, so the counters only give lower bounds here.
    #[test]
    fn device_linear_calls_are_counted_on_their_kernel() {
        let (n, k, m) = (64, 96, 3);
        let w: Vec<f32> = (0..n * k).map(|i| ((i % 13) as f32 - 6.0) / 8.0).collect();
        let w = Tensor::from_f32(w, &[n, k]).unwrap();
        let x: Vec<f32> = (0..m * k).map(|i| ((i % 7) as f32 - 3.0) / 4.0).collect();
        let x = Tensor::from_f32(x, &[m, k]).unwrap();
        let f32 = StorageFormat::F32;
        let settings = OpSettings::new(f32, MathFidelity::HiFi4, Accumulation::Fp32, f32, "test");
        let weight = DeviceWeight::pack(&w, StorageFormat::Bfp8B).unwrap();
        let expected = weight.kernel(&settings);

        let before = device_kernel_counts();
        device_linear_reference(&x, &weight, &settings).unwrap();
        let after = device_kernel_counts();
        assert!(after.since(&before).get(DeviceKernel::Reference) >= 1);

        let before = device_kernel_counts();
        for _ in 0..3 {
            device_linear(&x, &weight, &settings).unwrap();
        }
        let after = device_kernel_counts();
        assert!(after.since(&before).get(expected) >= 3);
        assert!(after.since(&before).total() >= 3);
    }
}
