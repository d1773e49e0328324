//! The model's KV cache: per layer and per device, K and V split by KV heads.
//!
//! Each device (of this process, when the mesh spans ranks) holds a `[max_batch, nkv_d, max_seq_len, dh]` K and V cache (a
//! [`tt_ops::KvCache`]) in every layer, exactly the plan's `kv_cache` shard, with its bytes
//! reserved on the device before anything is written. f32 under an f32 cache format (so the
//! reference path keeps HF's fp32 keys), else bf16 (what a device stores; a bfloat8_b cache's
//! values are rounded before they are written, see [`crate::precision`]). The cache is
//! explicit state passed to every forward call; it remembers how many rows each user holds and
//! which RoPE variant wrote them.

use tt_mesh::{Allocation, Mesh};
use tt_ops::{DType, Fidelity};
use tt_shard::Plan;

use crate::error::{Error, Result};
use tt_ops::RopeVariant;

/// K and V caches of every layer on every device, plus each user's length.
pub struct KvCache {
    /// `[layer][local device]`.
    pub(crate) layers: Vec<Vec<tt_ops::KvCache>>,
    lens: Vec<usize>,
    variants: Vec<Option<RopeVariant>>,
    capacity: usize,
    _reserved: Vec<Allocation>,
}

impl KvCache {
    /// Reserves and allocates the cache the plan describes on `mesh` (a typed error naming the
    /// device, bytes needed and available when a device is full; nothing is allocated then).
    /// The cache holds f32 under f32 fidelity, else bf16.
    pub fn new(plan: &Plan, mesh: &Mesh, fidelity: Fidelity) -> Result<Self> {
        let dtype = match fidelity {
            Fidelity::F32 => DType::F32,
            Fidelity::Bf16 => DType::Bf16,
        };
        Self::with_dtype(plan, mesh, dtype)
    }

    /// [`KvCache::new`] with the element type given.
    pub fn with_dtype(plan: &Plan, mesh: &Mesh, dtype: DType) -> Result<Self> {
        let shard = plan.kv_cache();
        let [batch, nkv, len, dh] = <[usize; 4]>::try_from(shard.shape.as_slice())
            .map_err(|_| Error::Internal(format!("KV cache shard shape {:?}", shard.shape)))?;
        let layers = plan.dims().layers;
        let per_device = [2, layers, batch, nkv, len, dh, dtype.size_bytes()]
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
            .ok_or_else(|| {
                Error::Internal(format!(
                    "a KV cache of {layers} layers x batch {batch} x {nkv} heads x {len} positions                      x {dh} does not fit in 64 bits of bytes"
                ))
            })?;
        let reserved = mesh
            .local_devices()
            .map(|d| mesh.allocate(d, per_device))
            .collect::<Result<Vec<_>, _>>()?;
        let layers = (0..layers)
            .map(|_| {
                mesh.local_devices()
                    .map(|_| tt_ops::KvCache::contiguous(batch, nkv, len, dh, dtype))
                    .collect()
            })
            .collect();
        Ok(Self {
            layers,
            lens: vec![0; batch],
            variants: vec![None; batch],
            capacity: len,
            _reserved: reserved,
        })
    }

    /// Users (cache rows).
    pub fn batch(&self) -> usize {
        self.lens.len()
    }

    /// Tokens each user can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Tokens cached for `user` (0 for an unknown user).
    pub fn len(&self, user: usize) -> usize {
        self.lens.get(user).copied().unwrap_or(0)
    }

    /// Whether no user has any cached token.
    pub fn is_empty(&self) -> bool {
        self.lens.iter().all(|&l| l == 0)
    }

    /// The RoPE variant the latest rows of `user` were written with.
    pub fn variant(&self, user: usize) -> Option<RopeVariant> {
        self.variants.get(user).copied().flatten()
    }

    /// Forgets `user`'s tokens (the rows are overwritten by the next prefill).
    pub fn reset(&mut self, user: usize) {
        if let Some(l) = self.lens.get_mut(user) {
            *l = 0;
        }
        if let Some(v) = self.variants.get_mut(user) {
            *v = None;
        }
    }

    /// Marks `user` as holding `len` tokens written with `variant` without computing them: the rows
    /// keep whatever the cache holds (zeros at first). For benchmarks that need a long context (a
    /// decode step attends over `len` rows whatever their values), never for real generation.
    pub fn assume_filled(&mut self, user: usize, len: usize, variant: RopeVariant) -> Result<()> {
        self.check_room(user, 0, len)?;
        self.set(user, len, variant);
        Ok(())
    }

    /// Checks that `user` exists and can take `extra` more tokens after `start`.
    pub(crate) fn check_room(&self, user: usize, start: usize, extra: usize) -> Result<()> {
        if user >= self.batch() {
            return Err(Error::UserOutOfRange {
                user,
                batch: self.batch(),
            });
        }
        if start + extra > self.capacity {
            return Err(Error::SequenceTooLong {
                needed: start + extra,
                capacity: self.capacity,
            });
        }
        Ok(())
    }

    /// Records that `user` now holds `len` tokens, the latest written with `variant`.
    pub(crate) fn set(&mut self, user: usize, len: usize, variant: RopeVariant) {
        if let Some(l) = self.lens.get_mut(user) {
            *l = len;
        }
        if let Some(v) = self.variants.get_mut(user) {
            *v = Some(variant);
        }
    }
}
