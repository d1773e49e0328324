//! KV-cache layouts and the cache-writing ops `fill_cache`, `paged_fill_cache`, `paged_update_cache`.
//!
//! TTNN counterparts: `ttnn.fill_cache`, `ttnn.experimental.paged_fill_cache`,
//! `ttnn.experimental.paged_update_cache`. A cache tensor is f32 or bf16 (written values are rounded
//! to the cache's dtype) in one of two layouts:
//! - contiguous `[B, nkv, len, dh]`: user `b`, head `h`, row `r` at `((b * nkv + h) * len + r) * dh`;
//! - paged `[num_blocks, nkv, block, dh]` with a [`PageTable`] `[B, blocks_per_seq]`: row `r` of user
//!   `b` lives in block `page_table[b][r / block]` at in-block row `r % block`. `block` is a multiple
//!   of 32 and a user's capacity is `blocks_per_seq * block` rows.
//!
//! Contracts:
//! - `fill_cache(cache, x [1, nkv, s, dh], batch_idx, update_idx)` writes rows
//!   `update_idx .. update_idx + s` of user `batch_idx`; `update_idx` is a multiple of 32.
//! - `paged_update_cache(cache, x [1, B, nkv, dh], update_idxs [B], page_table?)` writes one row per
//!   user at `update_idxs[b]`; `-1` skips the user. `B` equals the cache's (or page table's) batch.
//!
//! Every index is validated before anything is written, so a failed call leaves the cache unchanged.

use crate::error::{OpError, Result};
use crate::tensor::{DType, Element, Tensor};

/// Tile height: fill offsets and page block sizes are multiples of it.
pub const TILE: usize = 32;

/// A page table `[batch, blocks_per_seq]` mapping each user's logical blocks to physical cache blocks.
///
/// Entries are validated against the cache when they are used: a block a call touches must be in
/// `0 .. num_blocks`; untouched entries may hold anything (e.g. -1 for unallocated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageTable {
    entries: Vec<i32>,
    batch: usize,
    blocks_per_seq: usize,
}

impl PageTable {
    /// A table from row-major `entries`; errors if `entries.len() != batch * blocks_per_seq`.
    pub fn new(entries: Vec<i32>, batch: usize, blocks_per_seq: usize) -> Result<Self> {
        if entries.len() != batch * blocks_per_seq {
            return Err(OpError::DataLength {
                shape: vec![batch, blocks_per_seq],
                expected: batch * blocks_per_seq,
                got: entries.len(),
            });
        }
        Ok(Self {
            entries,
            batch,
            blocks_per_seq,
        })
    }

    /// Users (rows of the table).
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Logical blocks per user.
    pub fn blocks_per_seq(&self) -> usize {
        self.blocks_per_seq
    }

    /// The row-major entries.
    pub fn entries(&self) -> &[i32] {
        &self.entries
    }

    /// Entry for user `b`, logical block `i` (both in range by construction of the caller).
    fn entry(&self, b: usize, i: usize) -> i32 {
        self.entries[b * self.blocks_per_seq + i]
    }
}

/// A validated view of a cache tensor's layout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry<'a> {
    /// Heads.
    pub nkv: usize,
    /// Head width.
    pub dh: usize,
    /// Users.
    pub batch: usize,
    /// Rows per user.
    pub capacity: usize,
    /// Rows per contiguous run (len for a contiguous cache, block for a paged one).
    pub run: usize,
    /// Physical blocks (paged) or users (contiguous) in the tensor.
    pub slots: usize,
    table: Option<&'a PageTable>,
}

impl<'a> Geometry<'a> {
    /// Interpret `cache` as contiguous (`page_table = None`) or paged.
    pub(crate) fn new(
        op: &'static str,
        cache: &Tensor,
        page_table: Option<&'a PageTable>,
    ) -> Result<Self> {
        let [d0, nkv, d2, dh] = cache.dims::<4>().map_err(|_| {
            OpError::shape(
                op,
                format!(
                    "cache must be [B, nkv, len, dh] or [blocks, nkv, block, dh], got {:?}",
                    cache.shape()
                ),
            )
        })?;
        match page_table {
            None => Ok(Self {
                nkv,
                dh,
                batch: d0,
                capacity: d2,
                run: d2,
                slots: d0,
                table: None,
            }),
            Some(t) => {
                if d2 == 0 || !d2.is_multiple_of(TILE) {
                    return Err(OpError::shape(
                        op,
                        format!("paged cache block {d2} is not a positive multiple of {TILE}"),
                    ));
                }
                Ok(Self {
                    nkv,
                    dh,
                    batch: t.batch,
                    capacity: t.blocks_per_seq * d2,
                    run: d2,
                    slots: d0,
                    table: Some(t),
                })
            }
        }
    }

    /// Checks that rows `0 .. rows` of user `b` map into the cache (the page entries they touch).
    pub(crate) fn check_rows(
        &self,
        op: &'static str,
        b: usize,
        start: usize,
        rows: usize,
    ) -> Result<()> {
        if start + rows > self.capacity {
            return Err(OpError::out_of_range(
                op,
                format!("last row for user {b}"),
                (start + rows) as i64 - 1,
                self.capacity,
            ));
        }
        if let Some(t) = self.table
            && rows > 0
        {
            for i in start / self.run..=(start + rows - 1) / self.run {
                let e = t.entry(b, i);
                if e < 0 || e as usize >= self.slots {
                    return Err(OpError::out_of_range(
                        op,
                        format!("page_table[{b}][{i}]"),
                        e.into(),
                        self.slots,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Element offset of (user `b`, head `h`, row `r`) and the rows left in its contiguous run.
    /// The caller has validated the row with [`Geometry::check_rows`].
    #[inline]
    pub(crate) fn locate(&self, b: usize, h: usize, r: usize) -> (usize, usize) {
        let (slot, in_run) = match self.table {
            None => (b, r),
            Some(t) => (t.entry(b, r / self.run) as usize, r % self.run),
        };
        (
            ((slot * self.nkv + h) * self.run + in_run) * self.dh,
            self.run - in_run,
        )
    }
}

/// Write rows of `x` (f32 or bf16 source) into an f32 or bf16 cache at the offsets `dst_rows` yields.
fn write_rows<E: Element>(
    cache: &mut [E],
    src: &[f32],
    dh: usize,
    rows: impl Iterator<Item = (usize, usize)>,
) {
    for (src_at, dst_at) in rows {
        for (d, s) in cache[dst_at..dst_at + dh]
            .iter_mut()
            .zip(&src[src_at..src_at + dh])
        {
            *d = E::from_f32(*s);
        }
    }
}

fn write_cache(cache: &mut Tensor, src: &[f32], dh: usize, plan: &[(usize, usize)]) -> Result<()> {
    match cache.dtype() {
        DType::F32 => write_rows(cache.as_f32_mut()?, src, dh, plan.iter().copied()),
        DType::Bf16 => write_rows(cache.as_bf16_mut()?, src, dh, plan.iter().copied()),
    }
    Ok(())
}

fn fill_impl(
    op: &'static str,
    cache: &mut Tensor,
    x: &Tensor,
    page_table: Option<&PageTable>,
    batch_idx: usize,
    update_idx: usize,
) -> Result<()> {
    let g = Geometry::new(op, cache, page_table)?;
    let [one, nkv, s, dh] = x.dims::<4>().map_err(|_| {
        OpError::shape(
            op,
            format!("x must be [1, nkv, s, dh], got {:?}", x.shape()),
        )
    })?;
    if one != 1 || nkv != g.nkv || dh != g.dh {
        return Err(OpError::shape(
            op,
            format!("x {:?} does not match cache {:?}", x.shape(), cache.shape()),
        ));
    }
    if batch_idx >= g.batch {
        return Err(OpError::out_of_range(
            op,
            "batch_idx",
            batch_idx as i64,
            g.batch,
        ));
    }
    if !update_idx.is_multiple_of(TILE) {
        return Err(OpError::invalid(
            op,
            format!("update_idx {update_idx} is not a multiple of {TILE}"),
        ));
    }
    g.check_rows(op, batch_idx, update_idx, s)?;
    let mut plan = Vec::with_capacity(nkv * s);
    for h in 0..nkv {
        for r in 0..s {
            plan.push(((h * s + r) * dh, g.locate(batch_idx, h, update_idx + r).0));
        }
    }
    write_cache(cache, &x.f32_values(), dh, &plan)
}

/// Write `x [1, nkv, s, dh]` into rows `update_idx .. update_idx + s` of user `batch_idx` of a
/// contiguous cache `[B, nkv, len, dh]`.
pub fn fill_cache(
    cache: &mut Tensor,
    x: &Tensor,
    batch_idx: usize,
    update_idx: usize,
) -> Result<()> {
    fill_impl("fill_cache", cache, x, None, batch_idx, update_idx)
}

/// [`fill_cache`] for a paged cache `[blocks, nkv, block, dh]`: user `batch_idx`'s logical rows
/// `update_idx ..` go through `page_table` (TTNN's op starts at row 0; `update_idx` allows chunks).
pub fn paged_fill_cache(
    cache: &mut Tensor,
    x: &Tensor,
    page_table: &PageTable,
    batch_idx: usize,
    update_idx: usize,
) -> Result<()> {
    fill_impl(
        "paged_fill_cache",
        cache,
        x,
        Some(page_table),
        batch_idx,
        update_idx,
    )
}

/// Write one row per user: `x [1, B, nkv, dh]` row of user `b` goes to position `update_idxs[b]`
/// (`-1` skips the user) of a contiguous cache (`page_table = None`) or a paged one.
pub fn paged_update_cache(
    cache: &mut Tensor,
    x: &Tensor,
    update_idxs: &[i32],
    page_table: Option<&PageTable>,
) -> Result<()> {
    const OP: &str = "paged_update_cache";
    let g = Geometry::new(OP, cache, page_table)?;
    let [one, b, nkv, dh] = x.dims::<4>().map_err(|_| {
        OpError::shape(
            OP,
            format!("x must be [1, B, nkv, dh], got {:?}", x.shape()),
        )
    })?;
    if one != 1 || nkv != g.nkv || dh != g.dh || b != update_idxs.len() || b != g.batch {
        return Err(OpError::shape(
            OP,
            format!(
                "x {:?} must be [1, B, nkv, dh] matching cache {:?} (batch {}) and {} update_idxs",
                x.shape(),
                cache.shape(),
                g.batch,
                update_idxs.len()
            ),
        ));
    }
    let mut plan = Vec::with_capacity(b * nkv);
    for (u, &p) in update_idxs.iter().enumerate() {
        if p == -1 {
            continue;
        }
        if p < 0 {
            return Err(OpError::out_of_range(
                OP,
                format!("update_idxs[{u}]"),
                p.into(),
                g.capacity,
            ));
        }
        g.check_rows(OP, u, p as usize, 1)?;
        for h in 0..nkv {
            plan.push(((u * nkv + h) * dh, g.locate(u, h, p as usize).0));
        }
    }
    write_cache(cache, &x.f32_values(), dh, &plan)
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
