//! Device profiles: memory per device and the layout constraints a plan must respect.

use serde::{Deserialize, Serialize};

/// DRAM per Wormhole b0 chip used by [`DeviceProfile::wormhole_b0`]: 12 GB, taken as decimal
/// (12e9 bytes). The chip carries 12 GiB of GDDR6, but firmware, kernel binaries and activation
/// buffers live there too; planning against the smaller decimal figure keeps about 0.88 GB of
/// headroom that the plan does not otherwise count.
pub const WORMHOLE_B0_DRAM_BYTES: u64 = 12_000_000_000;

/// What one device offers and demands: memory budget and layout constraints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceProfile {
    /// Profile name (`host`, `wormhole_b0`, ...).
    pub name: String,
    /// DRAM bytes per device; `None` means unbounded.
    pub dram_bytes: Option<u64>,
    /// Tile edge: the last two dims of a tiled tensor are padded to multiples of this.
    pub tile: usize,
    /// The rotary op's last dimension must be a multiple of this (1 = no constraint).
    pub rotary_multiple: usize,
    /// Whether tensors are stored tile-padded (and tile constraints are checked).
    pub tile_padding: bool,
}

impl DeviceProfile {
    /// The host: no layout constraints, unbounded memory.
    pub fn host() -> Self {
        Self {
            name: "host".to_string(),
            dram_bytes: None,
            tile: 1,
            rotary_multiple: 1,
            tile_padding: false,
        }
    }

    /// The host with a memory budget of `bytes` per device.
    pub fn host_with_budget(bytes: u64) -> Self {
        Self {
            dram_bytes: Some(bytes),
            ..Self::host()
        }
    }

    /// A Tenstorrent Wormhole b0 chip: [`WORMHOLE_B0_DRAM_BYTES`] of DRAM, 32x32 tiles, rotary
    /// last dim a multiple of 64.
    pub fn wormhole_b0() -> Self {
        Self {
            name: "wormhole_b0".to_string(),
            dram_bytes: Some(WORMHOLE_B0_DRAM_BYTES),
            tile: 32,
            rotary_multiple: 64,
            tile_padding: true,
        }
    }

    /// A built-in profile by name (`host` or `wormhole_b0`).
    pub fn by_name(name: &str) -> Option<Self> {
        match name {
            "host" => Some(Self::host()),
            "wormhole_b0" => Some(Self::wormhole_b0()),
            _ => None,
        }
    }

    /// Names accepted by [`DeviceProfile::by_name`].
    pub const NAMES: [&'static str; 2] = ["host", "wormhole_b0"];

    /// `n` rounded up to the tile (unchanged when tile padding does not apply).
    pub fn pad(&self, n: usize) -> usize {
        if self.tile_padding && self.tile > 1 {
            n.div_ceil(self.tile) * self.tile
        } else {
            n
        }
    }

    /// A weight or cache shape with its last two dims tile-padded (a 1-D shape pads its only dim).
    pub fn pad_shape(&self, shape: &[usize]) -> Vec<usize> {
        let mut out = shape.to_vec();
        let rank = out.len();
        for d in out.iter_mut().skip(rank.saturating_sub(2)) {
            *d = self.pad(*d);
        }
        out
    }

    /// Width the rotary op sees for `head_dim` (even): each half is padded to a multiple of
    /// `rotary_multiple / 2`, so the whole is a multiple of `rotary_multiple`.
    pub fn rotary_dim(&self, head_dim: usize) -> usize {
        let half_multiple = (self.rotary_multiple / 2).max(1);
        2 * (head_dim / 2).div_ceil(half_multiple) * half_multiple
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wormhole_pads_to_tiles_and_rotary_halves() {
        let w = DeviceProfile::wormhole_b0();
        assert_eq!(w.pad(4008), 4032);
        assert_eq!(w.pad(4032), 4032);
        assert_eq!(w.pad_shape(&[4008, 3072]), vec![4032, 3072]);
        assert_eq!(w.pad_shape(&[2, 3, 5, 7]), vec![2, 3, 32, 32]);
        assert_eq!(w.pad_shape(&[3000]), vec![3008]);
        assert_eq!(w.rotary_dim(96), 128);
        assert_eq!(w.rotary_dim(128), 128);
        assert_eq!(w.rotary_dim(64), 64);
        assert_eq!(w.dram_bytes, Some(12_000_000_000));
    }

    #[test]
    fn host_pads_nothing() {
        let h = DeviceProfile::host();
        assert_eq!(h.pad(4008), 4008);
        assert_eq!(h.pad_shape(&[4008, 3]), vec![4008, 3]);
        assert_eq!(h.rotary_dim(96), 96);
        assert_eq!(h.dram_bytes, None);
        assert_eq!(DeviceProfile::host_with_budget(5).dram_bytes, Some(5));
        assert_eq!(
            DeviceProfile::by_name("wormhole_b0"),
            Some(DeviceProfile::wormhole_b0())
        );
        assert_eq!(DeviceProfile::by_name("gpu"), None);
    }
}
