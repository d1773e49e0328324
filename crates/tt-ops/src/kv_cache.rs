//! `KvCache`: one layer's K and V cache tensors with their layout, for callers that want one handle.
//!
//! A thin owner over the cache ops: the cache is explicit state that the caller passes to forward
//! (nothing hidden), stored f32 or bf16, contiguous `[B, nkv, len, dh]` or paged
//! `[blocks, nkv, block, dh]` with a [`PageTable`]. Every method forwards to the op of the same
//! contract ([`fill_cache`]/[`paged_fill_cache`], [`paged_update_cache`], [`sdpa_decode`]).

use crate::cache::{PageTable, TILE, fill_cache, paged_fill_cache, paged_update_cache};
use crate::error::{OpError, Result};
use crate::sdpa_decode::{SdpaDecodeOptions, sdpa_decode};
use crate::tensor::{DType, Tensor};

/// K and V caches of one layer plus an optional page table.
#[derive(Debug, Clone)]
pub struct KvCache {
    k: Tensor,
    v: Tensor,
    page_table: Option<PageTable>,
}

impl KvCache {
    /// A zeroed contiguous cache `[batch, nkv, len, dh]` for K and for V.
    pub fn contiguous(batch: usize, nkv: usize, len: usize, dh: usize, dtype: DType) -> Self {
        // Separate buffers: a shared one would be copied whole by the first write (copy-on-write).
        // Zeroed allocations are lazily faulted in, so untouched rows cost no memory.
        Self {
            k: Tensor::zeros(&[batch, nkv, len, dh], dtype),
            v: Tensor::zeros(&[batch, nkv, len, dh], dtype),
            page_table: None,
        }
    }

    /// A zeroed paged cache `[num_blocks, nkv, block, dh]` addressed through `page_table`.
    /// `block` must be a positive multiple of 32.
    pub fn paged(
        num_blocks: usize,
        nkv: usize,
        block: usize,
        dh: usize,
        dtype: DType,
        page_table: PageTable,
    ) -> Result<Self> {
        if block == 0 || !block.is_multiple_of(TILE) {
            return Err(OpError::invalid(
                "KvCache::paged",
                format!("block {block} is not a positive multiple of {TILE}"),
            ));
        }
        Ok(Self {
            k: Tensor::zeros(&[num_blocks, nkv, block, dh], dtype),
            v: Tensor::zeros(&[num_blocks, nkv, block, dh], dtype),
            page_table: Some(page_table),
        })
    }

    /// The K cache tensor.
    pub fn k(&self) -> &Tensor {
        &self.k
    }

    /// The V cache tensor.
    pub fn v(&self) -> &Tensor {
        &self.v
    }

    /// The page table of a paged cache.
    pub fn page_table(&self) -> Option<&PageTable> {
        self.page_table.as_ref()
    }

    /// Storage dtype.
    pub fn dtype(&self) -> DType {
        self.k.dtype()
    }

    /// Rows each user can hold.
    pub fn capacity(&self) -> usize {
        let s = self.k.shape();
        match &self.page_table {
            None => s[2],
            Some(t) => t.blocks_per_seq() * s[2],
        }
    }

    /// Bytes of K plus V storage.
    pub fn size_bytes(&self) -> usize {
        self.k.size_bytes() + self.v.size_bytes()
    }

    /// Prefill: write `k`, `v [1, nkv, s, dh]` at rows `update_idx ..` of user `batch_idx`.
    pub fn fill(
        &mut self,
        k: &Tensor,
        v: &Tensor,
        batch_idx: usize,
        update_idx: usize,
    ) -> Result<()> {
        match &self.page_table {
            None => {
                fill_cache(&mut self.k, k, batch_idx, update_idx)?;
                fill_cache(&mut self.v, v, batch_idx, update_idx)
            }
            Some(t) => {
                paged_fill_cache(&mut self.k, k, t, batch_idx, update_idx)?;
                paged_fill_cache(&mut self.v, v, t, batch_idx, update_idx)
            }
        }
    }

    /// Decode: write `k`, `v [1, B, nkv, dh]` at each user's position (`-1` skips).
    pub fn update(&mut self, k: &Tensor, v: &Tensor, positions: &[i32]) -> Result<()> {
        if k.shape() != v.shape() {
            return Err(OpError::shape(
                "KvCache::update",
                format!("k {:?} and v {:?} differ", k.shape(), v.shape()),
            ));
        }
        paged_update_cache(&mut self.k, k, positions, self.page_table.as_ref())?;
        paged_update_cache(&mut self.v, v, positions, self.page_table.as_ref())
    }

    /// Decode attention of `q [1, B, nh, dh]` over this cache (see [`sdpa_decode`]).
    pub fn attend(&self, q: &Tensor, cur_pos: &[i32], opts: &SdpaDecodeOptions) -> Result<Tensor> {
        sdpa_decode(q, &self.k, &self.v, cur_pos, self.page_table.as_ref(), opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{rand_vec, random_page_table};

    #[test]
    fn paged_and_contiguous_handles_agree() {
        let (b, nkv, nh, dh, bps) = (2, 2, 4, 16, 3);
        let table = random_page_table(b, bps, 8, 11);
        let mut c = KvCache::contiguous(b, nkv, bps * TILE, dh, DType::Bf16);
        let mut p = KvCache::paged(8, nkv, TILE, dh, DType::Bf16, table).unwrap();
        assert_eq!(c.capacity(), p.capacity());
        let s = 50;
        for u in 0..b {
            let k = Tensor::from_f32(rand_vec(nkv * s * dh, u as u64), &[1, nkv, s, dh]).unwrap();
            let v =
                Tensor::from_f32(rand_vec(nkv * s * dh, 10 + u as u64), &[1, nkv, s, dh]).unwrap();
            c.fill(&k, &v, u, 0).unwrap();
            p.fill(&k, &v, u, 0).unwrap();
        }
        let k = Tensor::from_f32(rand_vec(b * nkv * dh, 20), &[1, b, nkv, dh]).unwrap();
        c.update(&k, &k, &[s as i32, 70]).unwrap();
        p.update(&k, &k, &[s as i32, 70]).unwrap();
        let q = Tensor::from_f32(rand_vec(b * nh * dh, 21), &[1, b, nh, dh]).unwrap();
        let o = SdpaDecodeOptions::default();
        let yc = c.attend(&q, &[s as i32, 70], &o).unwrap();
        assert_eq!(
            yc.as_f32().unwrap(),
            p.attend(&q, &[s as i32, 70], &o).unwrap().as_f32().unwrap()
        );
        assert_eq!(c.size_bytes(), 2 * b * nkv * bps * TILE * dh * 2);
        assert!(matches!(
            c.update(&k, &q, &[0, 0]),
            Err(OpError::Shape { .. })
        ));
        let t = random_page_table(1, 1, 1, 0);
        assert!(matches!(
            KvCache::paged(1, 1, 16, 8, DType::F32, t),
            Err(OpError::InvalidArgument { .. })
        ));
    }
}
