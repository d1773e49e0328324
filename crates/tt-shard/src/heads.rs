//! How query and KV heads are partitioned over the devices: GQA replication and head padding.
//!
//! Every device holds the same number of query head slots (`heads_per_device`, `H`) and KV head
//! slots (`kv_heads_per_device`, `K`). Local query slot `j` attends with local KV slot
//! `j / (H / K)` on every device ([`HeadPartition::local_kv_of`]), so one standard GQA kernel
//! with local group `H / K` runs everywhere. A slot is either a real head of the checkpoint or a
//! zero padding head ([`DeviceHeads::q_sources`], [`DeviceHeads::kv_sources`]); a zero query
//! head meets zero `o_proj` columns, so it adds nothing to the all_reduce.
//!
//! A device's slots come in `K` *bins*: one KV slot and the `G = H / K` query slots that use it.
//! The real query heads of a bin all belong to the bin's KV head. The layout is the one with
//! the fewest KV slots per device, then the fewest query slots per device (the KV cache, which
//! grows with the context, is paid per KV slot; a query slot costs only weights):
//! - **fewer KV heads than devices or as many** (`kv_heads <= devices`): `K = 1`. Every device
//!   holds one real KV head (KV heads are replicated, none padded). KV head `i` gets
//!   `devices / kv_heads` or one more devices (the first ones get one more), its query heads
//!   split as evenly as possible over them (first devices get more), and
//!   `G = ceil(group / floor(devices / kv_heads))`.
//! - **more KV heads than devices**: `K = ceil(kv_heads / devices)`, `G = group`. Each KV head
//!   and its whole group live on one device; device `d` takes the next `kv_heads / devices` or
//!   one more KV heads (the first devices take one more), and the rest of its `K` bins are zero.
//!
//! Both are optimal in that order: `K` cannot be smaller (every device needs a KV slot; every
//! KV head needs one), and no smaller `G` fits the query heads into `devices * K` bins. When
//! `heads % devices == 0` and `kv_heads` divides or is a multiple of `devices`, nothing is
//! padded and the layout is the even split (device `d` takes query heads
//! `[d * H, (d + 1) * H)`). A device must compute at least one real query head, so a mesh with
//! more devices than query heads is refused ([`PlanError::MoreDevicesThanHeads`]); every mesh
//! up to `heads` devices plans.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::dims::DecoderDims;
use crate::error::PlanError;

/// The heads one device owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceHeads {
    /// Global query heads of this device: the real ones (never empty). In an unpadded plan
    /// these are local heads `0..H` in order; in a padded plan [`Self::q_sources`] places them.
    pub q_heads: Range<usize>,
    /// Global KV heads this device holds: the real ones, each once (never empty).
    pub kv_heads: Range<usize>,
    /// Per local query head (`heads_per_device` entries): the global query head it computes,
    /// or `None` for a zero padding head (zero Q rows, zero `o_proj` columns).
    pub q_sources: Vec<Option<usize>>,
    /// Per local KV head (`kv_heads_per_device` entries): the global KV head it holds, or
    /// `None` for a zero padding head (zero K and V rows; only padding query heads use it).
    pub kv_sources: Vec<Option<usize>>,
}

impl DeviceHeads {
    /// Zero query heads on this device.
    pub fn q_padding(&self) -> usize {
        self.q_sources.iter().filter(|s| s.is_none()).count()
    }

    /// Zero KV heads on this device.
    pub fn kv_padding(&self) -> usize {
        self.kv_sources.iter().filter(|s| s.is_none()).count()
    }
}

/// Query/KV head partition over the devices of a mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadPartition {
    /// Query head slots per device (padding included).
    pub heads_per_device: usize,
    /// KV head slots per device (padding included).
    pub kv_heads_per_device: usize,
    /// Most devices holding one KV head (1 = no replication). In an unpadded plan every KV head
    /// is on exactly this many devices; in a padded one some may be on fewer.
    pub kv_copies: usize,
    /// Query heads per KV head in the model.
    pub group: usize,
    /// Per device, in row-major device order.
    pub devices: Vec<DeviceHeads>,
}

/// One KV slot and the real query heads that use it.
struct Bin {
    kv: usize,
    q: Range<usize>,
}

/// Part `i` of `total` units split into `parts` contiguous runs, the first runs one longer.
fn balanced(total: usize, parts: usize, i: usize) -> Range<usize> {
    let parts = parts.max(1);
    let (base, extra) = (total / parts, total % parts);
    let at = |k: usize| k * base + k.min(extra);
    at(i)..at(i + 1)
}

impl HeadPartition {
    /// Partition the heads of `dims` over `devices` devices, padding with zero heads where
    /// the counts do not divide (see the module docs for the rule).
    pub fn new(dims: &DecoderDims, devices: usize) -> Result<Self, PlanError> {
        dims.validate()?;
        let (nh, nkv) = (dims.heads, dims.kv_heads);
        if devices == 0 {
            return Err(PlanError::ZeroDim { name: "devices" });
        }
        if devices > nh {
            return Err(PlanError::MoreDevicesThanHeads {
                heads: nh,
                kv_heads: nkv,
                devices,
            });
        }
        let group = nh / nkv;
        // Bins in global head order, then (K, G).
        let (bins, kv_per_device, local_group): (Vec<Bin>, usize, usize) = if nkv <= devices {
            let min_bins = devices / nkv;
            let bins = (0..nkv)
                .flat_map(|kv| {
                    let b = balanced(devices, nkv, kv).len();
                    (0..b).map(move |j| {
                        let q = balanced(group, b, j);
                        Bin {
                            kv,
                            q: kv * group + q.start..kv * group + q.end,
                        }
                    })
                })
                .collect();
            (bins, 1, group.div_ceil(min_bins))
        } else {
            let bins = (0..nkv)
                .map(|kv| Bin {
                    kv,
                    q: kv * group..(kv + 1) * group,
                })
                .collect();
            (bins, nkv.div_ceil(devices), group)
        };
        let hpd = kv_per_device * local_group;
        let per_device: Vec<DeviceHeads> = (0..devices)
            .map(|d| {
                let mine = &bins[balanced(bins.len(), devices, d)];
                let mut q_sources = Vec::with_capacity(hpd);
                let mut kv_sources = Vec::with_capacity(kv_per_device);
                for b in mine {
                    kv_sources.push(Some(b.kv));
                    q_sources.extend(b.q.clone().map(Some));
                    q_sources.resize(kv_sources.len() * local_group, None);
                }
                q_sources.resize(hpd, None);
                kv_sources.resize(kv_per_device, None);
                let (first, last) = (mine.first(), mine.last());
                DeviceHeads {
                    q_heads: first.map_or(0, |b| b.q.start)..last.map_or(0, |b| b.q.end),
                    kv_heads: first.map_or(0, |b| b.kv)..last.map_or(0, |b| b.kv + 1),
                    q_sources,
                    kv_sources,
                }
            })
            .collect();
        let mut holders = vec![0usize; nkv];
        for b in &bins {
            holders[b.kv] += 1;
        }
        Ok(Self {
            heads_per_device: hpd,
            kv_heads_per_device: kv_per_device,
            kv_copies: holders.into_iter().max().unwrap_or(1),
            group,
            devices: per_device,
        })
    }

    /// Whether KV heads are replicated over several devices.
    pub fn kv_replicated(&self) -> bool {
        self.kv_copies > 1
    }

    /// Query heads per KV head on every device (`heads_per_device / kv_heads_per_device`).
    pub fn local_group(&self) -> usize {
        self.heads_per_device / self.kv_heads_per_device.max(1)
    }

    /// Local KV head (index into this device's KV heads) used by local query head `local_q`:
    /// `local_q / local_group()`, the same on every device.
    pub fn local_kv_of(&self, local_q: usize) -> usize {
        local_q / self.local_group().max(1)
    }

    /// Whether any device holds a zero padding head (query or KV).
    pub fn is_padded(&self) -> bool {
        self.devices
            .iter()
            .any(|d| d.q_padding() > 0 || d.kv_padding() > 0)
    }

    /// Zero query heads over the whole mesh.
    pub fn q_padding(&self) -> usize {
        self.devices.iter().map(DeviceHeads::q_padding).sum()
    }

    /// Zero KV heads over the whole mesh.
    pub fn kv_padding(&self) -> usize {
        self.devices.iter().map(DeviceHeads::kv_padding).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dims::{GateUpLayout, QkvLayout};

    fn dims(heads: usize, kv_heads: usize) -> DecoderDims {
        DecoderDims {
            hidden: 64,
            heads,
            kv_heads,
            head_dim: 8,
            intermediate: 128,
            vocab: 100,
            layers: 2,
            dtype_bytes: 2,
            tied_embeddings: false,
            qkv_layout: QkvLayout::Fused,
            gate_up_layout: GateUpLayout::Fused,
        }
    }

    #[test]
    fn kv_heads_split_or_replicate() {
        let p = HeadPartition::new(&dims(32, 8), 4).unwrap();
        assert_eq!(
            (p.heads_per_device, p.kv_heads_per_device, p.kv_copies),
            (8, 2, 1)
        );
        assert_eq!(p.devices[3].kv_heads, 6..8);
        let p = HeadPartition::new(&dims(32, 4), 8).unwrap();
        assert_eq!(
            (p.heads_per_device, p.kv_heads_per_device, p.kv_copies),
            (4, 1, 2)
        );
        assert_eq!(p.devices[2].kv_heads, 1..2);
        assert_eq!(p.devices[3].kv_heads, 1..2);
        assert_eq!(p.local_kv_of(3), 0);
        assert!(!p.is_padded());
        assert_eq!(p.devices[3].q_sources, [12, 13, 14, 15].map(Some));
        assert_eq!(p.devices[3].kv_sources, [Some(1)]);
    }

    #[test]
    fn more_devices_than_heads_is_refused() {
        assert!(matches!(
            HeadPartition::new(&dims(8, 2), 9),
            Err(PlanError::MoreDevicesThanHeads {
                heads: 8,
                kv_heads: 2,
                devices: 9
            })
        ));
        assert!(matches!(
            HeadPartition::new(&dims(8, 2), 0),
            Err(PlanError::ZeroDim { name: "devices" })
        ));
        // As many devices as heads: one real head each.
        let p = HeadPartition::new(&dims(8, 2), 8).unwrap();
        assert_eq!((p.heads_per_device, p.kv_heads_per_device), (1, 1));
    }

    #[test]
    fn smollm2_on_8_devices_pads_one_query_head_on_seven() {
        let p = HeadPartition::new(&dims(9, 3), 8).unwrap();
        assert_eq!(
            (p.heads_per_device, p.kv_heads_per_device, p.kv_copies),
            (2, 1, 3)
        );
        let q: Vec<_> = p.devices.iter().map(|d| d.q_sources.clone()).collect();
        let n = None;
        assert_eq!(
            q,
            vec![
                vec![Some(0), n],
                vec![Some(1), n],
                vec![Some(2), n],
                vec![Some(3), n],
                vec![Some(4), n],
                vec![Some(5), n],
                vec![Some(6), Some(7)],
                vec![Some(8), n],
            ]
        );
        let kv: Vec<_> = p.devices.iter().map(|d| d.kv_heads.clone()).collect();
        assert_eq!(kv, vec![0..1, 0..1, 0..1, 1..2, 1..2, 1..2, 2..3, 2..3]);
        assert_eq!(p.devices[6].q_heads, 6..8);
        assert_eq!((p.q_padding(), p.kv_padding()), (7, 0));
        assert!(p.is_padded());
    }

    #[test]
    fn more_kv_heads_than_devices_pads_whole_groups() {
        // SmolLM2 on 2 devices: 3 KV heads of 3 query heads each.
        let p = HeadPartition::new(&dims(9, 3), 2).unwrap();
        assert_eq!((p.heads_per_device, p.kv_heads_per_device), (6, 2));
        assert_eq!(p.devices[0].q_sources, (0..6).map(Some).collect::<Vec<_>>());
        assert_eq!(p.devices[0].kv_sources, [Some(0), Some(1)]);
        assert_eq!(
            p.devices[1].q_sources,
            [Some(6), Some(7), Some(8), None, None, None]
        );
        assert_eq!(p.devices[1].kv_sources, [Some(2), None]);
        assert_eq!(p.local_kv_of(4), 1);
        // Phi-3-medium on 8: 10 KV heads of 4.
        let p = HeadPartition::new(&dims(40, 10), 8).unwrap();
        assert_eq!((p.heads_per_device, p.kv_heads_per_device), (8, 2));
        assert_eq!(p.devices[1].kv_heads, 2..4);
        assert_eq!(p.devices[2].kv_heads, 4..5);
        assert_eq!((p.q_padding(), p.kv_padding()), (24, 6));
    }

    #[test]
    fn every_query_head_sees_its_kv_head_locally() {
        for (nh, nkv, n) in [
            (32, 8, 4),
            (32, 4, 8),
            (32, 32, 8),
            (12, 3, 6),
            (8, 1, 8),
            (8, 8, 1),
            (9, 3, 8),
            (14, 2, 8),
            (14, 2, 3),
            (40, 10, 8),
            (40, 10, 3),
            (12, 4, 5),
        ] {
            let p = HeadPartition::new(&dims(nh, nkv), n).unwrap();
            let mut seen = vec![0; nh];
            for dh in &p.devices {
                assert_eq!(dh.q_sources.len(), p.heads_per_device);
                assert_eq!(dh.kv_sources.len(), p.kv_heads_per_device);
                for (local, q) in dh.q_sources.iter().enumerate() {
                    if let Some(q) = *q {
                        seen[q] += 1;
                        assert!(dh.q_heads.contains(&q));
                        assert_eq!(dh.kv_sources[p.local_kv_of(local)], Some(q / (nh / nkv)));
                    }
                }
            }
            assert!(seen.iter().all(|&s| s == 1), "{nh}/{nkv} on {n}: {seen:?}");
        }
    }
}
