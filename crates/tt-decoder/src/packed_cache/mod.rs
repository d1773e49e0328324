//! The packed-weight cache: a load in a packed precision preset keeps each device's packed
//! weights on disk, and later loads map them instead of reading and packing the checkpoint
//! again (as tt-metal's `TT_METAL_CACHE` keeps converted tensors).
//!
//! - Where: [`PackedCache`] (a [`crate::RuntimeOptions`] field; the CLI's `--packed-cache DIR` /
//!   `--no-packed-cache`): by default `$TT_PHI3_PACKED_CACHE` (`off` disables it), else
//!   `~/.cache/tt-phi3/packed`.
//! - What: every packed weight (`DeviceShards`) of every layer and the LM head, one file per
//!   device (`key.rs` says how files are keyed and named, `file.rs` their layout and checks). The
//!   embedding, the norms and any op a preset computes exactly stay read from the checkpoint.
//! - When: a load whose files are all present and sound maps them (`Session::open`): the
//!   weights are ranges of the mappings, never copied. Otherwise it packs from the checkpoint as
//!   without a cache, and then writes its files (`Session::store`); a stale or corrupt file is
//!   reported (a `tracing` warning says why) and replaced, never used.
//! - Ranks: each process of a mesh spread over ranks reads and writes only its own devices'
//!   files, so ranks share one directory without clobbering each other, and a file written by
//!   one process serves a run over ranks and the other way round (a device's packed shard is the
//!   same bytes either way).
//!
//! Writing a cache is best effort: a failure (disk full, read-only directory) is a warning and
//! the load goes on with the weights it packed.

mod file;
mod key;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use tt_hf::Checkpoint;
use tt_hf::checkpoint::CONFIG_FILE;
use tt_mesh::{ColumnWeights, DeviceShards, Mesh, RowWeights};
use tt_numerics::PackedMatrix;
use tt_shard::Plan;

use crate::config::DecoderConfig;
use crate::error::{Error, Result};
use crate::family::FamilyConfig;
use crate::precision::Numerics;
use crate::sharding::{RuntimeOptions, plan};
use crate::weights::ModelWeights;

pub(crate) use key::{LAYER_OPS, LM_HEAD, layer_base};

/// The environment variable naming the default cache directory (`off` disables the cache).
pub const CACHE_ENV: &str = "TT_PHI3_PACKED_CACHE";

/// Where a load keeps its packed weights.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PackedCache {
    /// No cache: every load packs from the checkpoint.
    Off,
    /// `$TT_PHI3_PACKED_CACHE` (`off`: no cache), else `~/.cache/tt-phi3/packed` (no cache when
    /// neither is set).
    #[default]
    Default,
    /// This directory.
    At(PathBuf),
}

impl PackedCache {
    /// The cache's root directory, `None` when there is no cache.
    pub fn root(&self) -> Option<PathBuf> {
        match self {
            Self::Off => None,
            Self::At(dir) => Some(dir.clone()),
            Self::Default => match std::env::var_os(CACHE_ENV) {
                Some(v) if v == "off" => None,
                Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
                _ => std::env::var_os("HOME")
                    .filter(|h| !h.is_empty())
                    .map(|h| Path::new(&h).join(".cache/tt-phi3/packed")),
            },
        }
    }
}

/// One load's view of the cache: its key and this process's devices.
#[derive(Debug)]
pub(crate) struct Session {
    key: key::CacheKey,
    local: Range<usize>,
    expected: Vec<String>,
}

impl Session {
    /// The cache of a load of `ckpt` (read as `config`, cut by `plan`) onto `mesh` in
    /// `numerics`, under `root`; `None` when nothing packs. Hashes the checkpoint's headers.
    pub fn new<C>(
        root: &Path,
        ckpt: &Checkpoint<C>,
        config: &DecoderConfig,
        plan: &Plan,
        mesh: &Mesh,
        numerics: &Numerics,
    ) -> Result<Option<Self>> {
        let Some(formats) = key::formats(numerics) else {
            return Ok(None);
        };
        let hash = key::checkpoint_hash(&ckpt.files(), &ckpt.dir().join(CONFIG_FILE))
            .map_err(|e| Error::Internal(format!("hashing the checkpoint's headers: {e}")))?;
        Ok(Some(Self {
            key: key::CacheKey::new(root, ckpt.dir(), hash, &formats, plan)?,
            local: mesh.local_devices(),
            expected: key::expected_entries(config.num_hidden_layers, numerics),
        }))
    }

    /// This process's devices' files.
    pub fn files(&self) -> Vec<PathBuf> {
        self.local.clone().map(|d| self.key.file(d)).collect()
    }

    /// Device `d`'s key.
    fn device_key(&self, d: usize) -> &str {
        self.key.devices.get(d).map_or("", String::as_str)
    }

    /// Every local device's file, mapped and checked; `None` (with a log line saying why) when
    /// any is missing, stale or corrupt.
    pub fn open(&self) -> Option<Mapped> {
        let start = Instant::now();
        let opened = self
            .local
            .clone()
            .map(|d| {
                let path = self.key.file(d);
                file::open(&path, self.device_key(d), d, &self.expected).map_err(|e| (path, e))
            })
            .collect::<std::result::Result<Vec<_>, _>>();
        match opened {
            Ok(devices) => {
                let bytes: u64 = devices.iter().map(|f| f.bytes).sum();
                tracing::info!(
                    dir = %self.key.dir.display(),
                    files = devices.len(),
                    mib = bytes >> 20,
                    seconds = start.elapsed().as_secs_f64(),
                    "packed-weight cache: mapped and checked"
                );
                Some(Mapped {
                    first: self.local.start,
                    devices: devices.into_iter().map(|f| f.tensors).collect(),
                })
            }
            Err((path, file::Unusable::Missing)) => {
                tracing::info!(file = %path.display(), "packed-weight cache: not built yet; packing from the checkpoint");
                None
            }
            Err((path, why)) => {
                tracing::warn!(file = %path.display(), "packed-weight cache unusable, rebuilding it: {why}");
                None
            }
        }
    }

    /// Writes every local device's packed weights of `weights` (a warning if that fails).
    pub fn store(&self, weights: &ModelWeights) {
        let start = Instant::now();
        let written = self
            .local
            .clone()
            .into_par_iter()
            .map(|d| {
                let path = self.key.file(d);
                let tensors = device_tensors(weights, d, &self.expected)?;
                file::write(&path, self.device_key(d), d, &tensors)
                    .map_err(|e| format!("writing {}: {e}", path.display()))?;
                Ok(tensors
                    .iter()
                    .map(|(_, m)| m.byte_size() as u64)
                    .sum::<u64>())
            })
            .collect::<std::result::Result<Vec<u64>, String>>();
        match written {
            Ok(bytes) => tracing::info!(
                dir = %self.key.dir.display(),
                files = bytes.len(),
                mib = bytes.iter().sum::<u64>() >> 20,
                seconds = start.elapsed().as_secs_f64(),
                "packed-weight cache: written"
            ),
            Err(why) => tracing::warn!("packed-weight cache not written: {why}"),
        }
    }
}

/// Device `d`'s packed weights of `weights`, named, in the order of `expected`.
fn device_tensors<'w>(
    weights: &'w ModelWeights,
    d: usize,
    expected: &[String],
) -> std::result::Result<Vec<(String, &'w PackedMatrix)>, String> {
    let mut all: Vec<(String, &PackedMatrix)> = Vec::new();
    let mut add = |base: String, shards: &'w DeviceShards| -> std::result::Result<(), String> {
        let ws = shards.device(d).map_err(|e| e.to_string())?;
        for (o, w) in ws.iter().enumerate() {
            all.push((key::entry_name(&base, o), w.packed()));
        }
        Ok(())
    };
    for (i, layer) in weights.layers.iter().enumerate() {
        for (op, ..) in LAYER_OPS {
            let shards = match op {
                "qkv" => column_shards(&layer.qkv.weights),
                "o" => row_shards(&layer.o.weights),
                "gate_up" => column_shards(&layer.gate_up.weights),
                _ => row_shards(&layer.down.weights),
            };
            if let Some(s) = shards {
                add(layer_base(i, op), s)?;
            }
        }
    }
    if let Some(s) = column_shards(&weights.lm_head.weights) {
        add(LM_HEAD.to_string(), s)?;
    }
    let names: Vec<&String> = all.iter().map(|(n, _)| n).collect();
    if names.len() != expected.len() || names.iter().zip(expected).any(|(a, b)| *a != b) {
        return Err(format!(
            "the model holds {} packed tensors on device {d}, the cache expects {}",
            names.len(),
            expected.len()
        ));
    }
    Ok(all)
}

fn column_shards(w: &ColumnWeights) -> Option<&DeviceShards> {
    match w {
        ColumnWeights::Device(s) => Some(s),
        ColumnWeights::Host { .. } => None,
    }
}

fn row_shards(w: &RowWeights) -> Option<&DeviceShards> {
    match w {
        RowWeights::Device(s) => Some(s),
        RowWeights::Host { .. } => None,
    }
}

/// This process's devices' cache files, mapped and checked.
#[derive(Debug)]
pub(crate) struct Mapped {
    first: usize,
    devices: Vec<std::collections::HashMap<String, PackedMatrix>>,
}

impl Mapped {
    /// The packed shards of `base` (`outputs` per device) on `mesh`'s local devices, read in
    /// place; `None` when the cache holds none (the op is computed exactly).
    pub fn shards(&self, mesh: &Mesh, base: &str, outputs: usize) -> Result<Option<DeviceShards>> {
        let first = key::entry_name(base, 0);
        if !self.devices.iter().all(|t| t.contains_key(&first)) {
            return Ok(None);
        }
        let per_device = self
            .devices
            .iter()
            .enumerate()
            .map(|(i, tensors)| {
                (0..outputs)
                    .map(|o| {
                        let name = key::entry_name(base, o);
                        tensors.get(&name).cloned().ok_or_else(|| {
                            Error::Internal(format!(
                                "the packed-weight cache of device {} lacks {name}",
                                self.first + i
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(DeviceShards::from_packed(mesh, per_device)?))
    }
}

/// The cache files a load of `ckpt` under `options` maps (or writes), for this process's
/// devices: e.g. to time a `cat` of them. Empty when the cache is off or nothing packs. The
/// files need not exist yet.
pub fn cache_files<C: FamilyConfig>(
    ckpt: &Checkpoint<C>,
    options: &RuntimeOptions,
) -> Result<Vec<PathBuf>> {
    Ok(session(ckpt, options)?
        .map(|s| s.files())
        .unwrap_or_default())
}

/// Whether a load of `ckpt` under `options` would map its packed-weight cache (a warm load):
/// every file of this process's devices present, written for this checkpoint, preset and
/// sharding, and sound. Reads and checks every file, as that load would (a `tracing` line says
/// why one is unusable). `false` when the cache is off or nothing packs.
pub fn cache_ready<C: FamilyConfig>(
    ckpt: &Checkpoint<C>,
    options: &RuntimeOptions,
) -> Result<bool> {
    Ok(session(ckpt, options)?.is_some_and(|s| s.open().is_some()))
}

/// The cache session of a load of `ckpt` under `options`, `None` when there is none.
fn session<C: FamilyConfig>(
    ckpt: &Checkpoint<C>,
    options: &RuntimeOptions,
) -> Result<Option<Session>> {
    let Some(root) = options.packed_cache.root() else {
        return Ok(None);
    };
    let config = ckpt.config().decoder_config();
    let plan = plan(&config, options)?;
    let mut mesh = Mesh::new(options.mesh, options.profile.clone(), options.topology);
    if let Some(transport) = &options.transport {
        mesh = mesh.with_transport(transport.clone())?;
    }
    let numerics = options.numerics()?;
    Session::new(&root, ckpt, &config, &plan, &mesh, &numerics)
}
