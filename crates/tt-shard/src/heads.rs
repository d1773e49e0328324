//! How query and KV heads are partitioned over the devices (with GQA replication).
//!
//! Query heads split evenly: device `d` takes heads `[d * hpd, (d + 1) * hpd)`. Each device holds
//! exactly the KV heads its query heads attend with. When there are at least as many KV heads as
//! devices, they split evenly too; when there are fewer, each KV head is replicated on the
//! `devices / kv_heads` consecutive devices whose query heads use it. In both cases a device's
//! local query heads group over its local KV heads exactly as the global ones do
//! (`local_group == group` or one local KV head), so a standard GQA attention works per device.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::dims::DecoderDims;
use crate::error::{PlanError, divisors};

/// The heads one device owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceHeads {
    /// Global query heads of this device.
    pub q_heads: Range<usize>,
    /// Global KV heads this device holds.
    pub kv_heads: Range<usize>,
}

/// Query/KV head partition over the devices of a mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadPartition {
    /// Query heads per device.
    pub heads_per_device: usize,
    /// KV heads per device.
    pub kv_heads_per_device: usize,
    /// Devices holding each KV head (1 = no replication).
    pub kv_copies: usize,
    /// Query heads per KV head (global and on every device).
    pub group: usize,
    /// Per device, in row-major device order.
    pub devices: Vec<DeviceHeads>,
}

impl HeadPartition {
    /// Partition the heads of `dims` over `devices` devices.
    pub fn new(dims: &DecoderDims, devices: usize) -> Result<Self, PlanError> {
        dims.validate()?;
        let (nh, nkv) = (dims.heads, dims.kv_heads);
        if nh % devices != 0 {
            return Err(PlanError::HeadsNotDivisible {
                heads: nh,
                devices,
                divisors: divisors(nh, nh),
            });
        }
        let hpd = nh / devices;
        let group = nh / nkv;
        let (kv_per_device, kv_copies) = if nkv % devices == 0 {
            (nkv / devices, 1)
        } else if devices.is_multiple_of(nkv) {
            (1, devices / nkv)
        } else {
            return Err(PlanError::KvHeadsUneven {
                kv_heads: nkv,
                devices,
            });
        };
        let per_device = (0..devices)
            .map(|d| {
                let q = d * hpd..(d + 1) * hpd;
                let kv_start = q.start / group;
                DeviceHeads {
                    q_heads: q,
                    kv_heads: kv_start..kv_start + kv_per_device,
                }
            })
            .collect();
        Ok(Self {
            heads_per_device: hpd,
            kv_heads_per_device: kv_per_device,
            kv_copies,
            group,
            devices: per_device,
        })
    }

    /// Whether KV heads are replicated over several devices.
    pub fn kv_replicated(&self) -> bool {
        self.kv_copies > 1
    }

    /// Local KV head (index into this device's KV heads) used by local query head `local_q`.
    pub fn local_kv_of(&self, local_q: usize) -> usize {
        if self.kv_heads_per_device == 1 {
            0
        } else {
            local_q / self.group
        }
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
    }

    #[test]
    fn uneven_partitions_are_refused() {
        assert!(matches!(
            HeadPartition::new(&dims(32, 32), 6),
            Err(PlanError::HeadsNotDivisible {
                heads: 32,
                devices: 6,
                ..
            })
        ));
        assert!(matches!(
            HeadPartition::new(&dims(24, 6), 4),
            Err(PlanError::KvHeadsUneven {
                kv_heads: 6,
                devices: 4
            })
        ));
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
        ] {
            let p = HeadPartition::new(&dims(nh, nkv), n).unwrap();
            for dh in &p.devices {
                for (local, q) in dh.q_heads.clone().enumerate() {
                    assert_eq!(dh.kv_heads.start + p.local_kv_of(local), q / (nh / nkv));
                }
            }
        }
    }
}
