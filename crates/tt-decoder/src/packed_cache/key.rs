//! What a packed-weight cache file is for, and where it lives.
//!
//! A device's file is keyed by (all hashed with xxh3-128 into one key, written in the file's
//! header and compared on every load):
//! - the cache format's version ([`super::file::VERSION`]);
//! - the checkpoint ([`checkpoint_hash`]): for every safetensors file, its name, size,
//!   modification time and whole safetensors header (tensor names, dtypes, shapes, offsets),
//!   and the bytes of `config.json`. Nothing of the 7.6 GB of tensor data is read: a rewrite of
//!   a file that keeps its size, its header and its modification time (to the nanosecond the
//!   filesystem keeps) goes unnoticed;
//! - the weight format each op class packs in (`qkv`, `o`, `ff1_ff3`, `ff2`, `lm_head`; `host`
//!   for an op computed exactly from the checkpoint's own tensors, which the cache does not
//!   hold). Only the storage format changes the packed bytes: fidelity and accumulation do not;
//! - the mesh shape, the device's index, and the device's part of the sharding plan (its row and
//!   column ranges of every weight and its head sources), which is what its shards are cut by.
//!
//! The directory is `<root>/<checkpoint dir name>-<hash of its canonical path>/<formats>-<mesh>-
//! <hash of the whole plan's shards>/`, one `device-<d>.ttpk` per device: a checkpoint changed
//! in place finds its old files, sees the wrong key and replaces them; another mesh or preset has
//! files of its own.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use tt_numerics::OpClass;
use tt_shard::{Plan, WeightKind};
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use crate::precision::Numerics;

/// The packed layers of a model, in cache order: (name, op class, outputs per device).
pub(crate) const LAYER_OPS: [(&str, OpClass, usize); 4] = [
    ("qkv", OpClass::Qkv, 3),
    ("o", OpClass::O, 1),
    ("gate_up", OpClass::Ff1Ff3, 2),
    ("down", OpClass::Ff2, 1),
];

/// The LM head's entry name.
pub(crate) const LM_HEAD: &str = "lm_head";

/// The op classes whose weights a cache may hold, in key order.
const CACHED_OPS: [(&str, OpClass); 5] = [
    ("qkv", OpClass::Qkv),
    ("o", OpClass::O),
    ("ff1_ff3", OpClass::Ff1Ff3),
    ("ff2", OpClass::Ff2),
    ("lm_head", OpClass::LmHead),
];

/// Safetensors headers larger than this are refused (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100 << 20;

/// The entry name of output `o` of a layer (`layers.3.qkv.1`) or of the LM head (`lm_head.0`).
pub(crate) fn entry_name(base: &str, output: usize) -> String {
    format!("{base}.{output}")
}

/// The base name of layer `i`'s op `op` (`layers.3.qkv`).
pub(crate) fn layer_base(i: usize, op: &str) -> String {
    format!("layers.{i}.{op}")
}

/// Whether `op`'s weights are packed (and so cached) under `numerics`.
pub(crate) fn packs(numerics: &Numerics, op: OpClass) -> bool {
    !numerics.op(op).is_exact_math()
}

/// Every entry a device's file must hold, in file order.
pub(crate) fn expected_entries(layers: usize, numerics: &Numerics) -> Vec<String> {
    let mut names = Vec::new();
    for i in 0..layers {
        for (op, class, outputs) in LAYER_OPS {
            if packs(numerics, class) {
                names.extend((0..outputs).map(|o| entry_name(&layer_base(i, op), o)));
            }
        }
    }
    if packs(numerics, OpClass::LmHead) {
        names.push(entry_name(LM_HEAD, 0));
    }
    names
}

/// Each cached op class's packed format (`host` if it is not packed), dot separated; `None`
/// when nothing packs (no cache then).
pub(crate) fn formats(numerics: &Numerics) -> Option<String> {
    let names: Vec<&str> = CACHED_OPS
        .iter()
        .map(|&(_, op)| match packs(numerics, op) {
            true => numerics.op(op).weights.name(),
            false => "host",
        })
        .collect();
    names.iter().any(|&n| n != "host").then(|| names.join("."))
}

/// A checkpoint file's safetensors header: its 8-byte length and the JSON it announces.
fn safetensors_header(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: a safetensors header of {n} bytes", path.display()),
        ));
    }
    let mut out = len.to_vec();
    file.take(n).read_to_end(&mut out)?;
    Ok(out)
}

/// Feeds `bytes` to `h`, length first (so consecutive fields cannot run into each other).
fn field(h: &mut Xxh3, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// The checkpoint's identity without reading its tensors: every safetensors file's name, size,
/// modification time (ns) and header, sorted by name, then `config.json`'s bytes.
pub(crate) fn checkpoint_hash(files: &[&Path], config_json: &Path) -> io::Result<u128> {
    let mut files = files.to_vec();
    files.sort_by_key(|p| p.file_name().map(|n| n.to_os_string()));
    let mut h = Xxh3::new();
    for path in files {
        let meta = std::fs::metadata(path)?;
        let mtime = meta
            .modified()?
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        field(&mut h, name.unwrap_or_default().as_bytes());
        h.update(&meta.len().to_le_bytes());
        h.update(&mtime.to_le_bytes());
        field(&mut h, &safetensors_header(path)?);
    }
    field(&mut h, &std::fs::read(config_json)?);
    Ok(h.digest128())
}

/// The weights whose shards a device's packed layers are cut from.
const SHARDED: [WeightKind; 8] = [
    WeightKind::Q,
    WeightKind::K,
    WeightKind::V,
    WeightKind::O,
    WeightKind::Gate,
    WeightKind::Up,
    WeightKind::Down,
    WeightKind::LmHead,
];

/// Device `d`'s part of the plan as bytes: its ranges of every sharded weight and its heads.
fn device_layout(plan: &Plan, d: usize) -> Result<Vec<u8>, tt_shard::PlanError> {
    let shards = SHARDED
        .iter()
        .map(|&kind| plan.shard_of(kind, d).map(|s| s.ranges.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let heads = plan.device_heads(d)?;
    let json = serde_json::json!({
        "shards": shards.iter().map(|r| r.iter().map(|r| [r.start, r.end]).collect::<Vec<_>>()).collect::<Vec<_>>(),
        "q_sources": heads.q_sources,
        "kv_sources": heads.kv_sources,
    });
    Ok(json.to_string().into_bytes())
}

/// Where one load's cache lives and what each device's file must say.
#[derive(Debug, Clone)]
pub(crate) struct CacheKey {
    /// The directory of this checkpoint, formats and sharding.
    pub dir: PathBuf,
    /// Per device of the mesh (all of them), its key as 32 hex digits.
    pub devices: Vec<String>,
}

impl CacheKey {
    /// The key of `plan`'s devices for the checkpoint hashed `ckpt_hash` in directory `ckpt_dir`,
    /// packed in `formats` (from [`formats`]), under the cache root `root`.
    pub fn new(
        root: &Path,
        ckpt_dir: &Path,
        ckpt_hash: u128,
        formats: &str,
        plan: &Plan,
    ) -> Result<Self, tt_shard::PlanError> {
        let mesh = plan.mesh();
        let mesh_name = format!("{}x{}", mesh.rows(), mesh.cols());
        let layouts = (0..plan.num_devices())
            .map(|d| device_layout(plan, d))
            .collect::<Result<Vec<_>, _>>()?;
        let mut whole = Xxh3::new();
        layouts.iter().for_each(|l| field(&mut whole, l));
        let devices = layouts
            .iter()
            .enumerate()
            .map(|(d, layout)| {
                let mut h = Xxh3::new();
                h.update(&super::file::VERSION.to_le_bytes());
                h.update(&ckpt_hash.to_le_bytes());
                field(&mut h, formats.as_bytes());
                field(&mut h, mesh_name.as_bytes());
                h.update(&(d as u64).to_le_bytes());
                field(&mut h, layout);
                format!("{:032x}", h.digest128())
            })
            .collect();
        let canonical = ckpt_dir
            .canonicalize()
            .unwrap_or_else(|_| ckpt_dir.to_path_buf());
        let name = canonical
            .file_name()
            .map_or_else(|| "checkpoint".into(), |n| n.to_string_lossy().into_owned());
        let path_hash = xxh3_64(canonical.as_os_str().as_encoded_bytes());
        let dir = root.join(format!("{name}-{path_hash:016x}")).join(format!(
            "{formats}-{mesh_name}-{:08x}",
            whole.digest() as u32
        ));
        Ok(Self { dir, devices })
    }

    /// Device `d`'s cache file.
    pub fn file(&self, d: usize) -> PathBuf {
        self.dir.join(format!("device-{d}.ttpk"))
    }
}
