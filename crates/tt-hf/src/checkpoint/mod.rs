//! HF checkpoints: find the directory, memory-map its safetensors files, read tensor blocks.
//!
//! A [`Checkpoint`] is a validated view of `config.json` (parsed by the model family's
//! [`HfConfig`], so this module knows no family), the optional
//! `generation_config.json`, and one `model.safetensors` or several shards listed by
//! `model.safetensors.index.json`. Nothing is read eagerly: reads copy a row x column block of
//! a 2-D tensor (or a flat range) straight from the mapped file into the caller's buffer,
//! converting BF16/F16/F32 to bf16 or f32, so each device receives only its shard.
//!
//! [`Checkpoint::bf16_tensor`] instead hands out a BF16 tensor in place: a [`Tensor`] whose
//! storage is the mapped pages themselves (shared with the OS page cache, so a warm checkpoint
//! loads without copying 7.6 GB into fresh memory). The map stays alive as long as any such
//! tensor does. A file's first such tensor makes the whole file resident, on 2 MiB pages under
//! the default [`PagePolicy::Huge`] (`checkpoint/pages.rs` explains why and how).
//!
//! **Files must not change while in use.** Each file is kept open, and its identity (device,
//! inode, size, times) is recorded at open and checked before every read and before it is mapped
//! (`checkpoint/file.rs`): a file rewritten, truncated, replaced or deleted since is reported as
//! [`CheckpointError::FileChanged`]; copies are read with `pread`, so a file cut short under them
//! is an error, not a SIGBUS. Tensors read in place are different: a model reads them from the
//! shared mapping for as long as it lives, so a file truncated under a live model raises SIGBUS
//! at its next read of the lost pages, and bytes written in place change its weights.
//! [`Checkpoint::watch`] gives a handle to check between forward passes; the window that remains
//! is a change landing during one.

mod config;
mod element;
mod file;
mod format;
mod hub;
mod index;
mod on_demand;
mod pages;
mod progress;

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use half::bf16;
use memmap2::Mmap;
use tt_ops::{SharedElements, Tensor};

pub use config::{HfConfig, ModelConfig, read_config_text};
pub use element::Element;
pub use file::CheckpointWatch;
pub use format::{Dtype, TensorInfo, TensorRecord, parse_header};
pub use hub::{HubEnv, resolve_model};
pub use index::{INDEX_FILE, parse_index};
pub use pages::{PagePolicy, Residency};
pub use progress::{ByteCounter, LoadProgress, NoProgress};

use crate::error::{CheckpointError, ConfigError};
use crate::generation_config::GenerationConfig;

/// Single-file weights name.
pub const SINGLE_FILE: &str = "model.safetensors";
/// Config file name.
pub const CONFIG_FILE: &str = "config.json";
/// Generation config file name.
pub const GENERATION_CONFIG_FILE: &str = "generation_config.json";
/// Tokenizer file name.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// An opened, validated checkpoint whose `config.json` is a `C`.
pub struct Checkpoint<C = serde_json::Value> {
    dir: PathBuf,
    config: C,
    generation_config: Option<GenerationConfig>,
    files: Vec<MappedFile>,
    tensors: HashMap<String, Entry>,
    progress: Arc<dyn LoadProgress>,
    page_policy: PagePolicy,
    /// Set when a re-read into 2 MiB pages gained nothing (the filesystem or kernel cannot):
    /// later files are not re-read.
    huge_pages_unavailable: AtomicBool,
}

struct MappedFile {
    /// The file, open since the checkpoint opened it, with its identity then. Headers and copies
    /// are read from it with `pread`.
    file: Arc<file::OpenFile>,
    /// The mapping BF16 tensors read in place, made resident on first use ([`pages`]).
    resident: Mutex<Option<pages::Resident>>,
}

/// A tensor's BF16 bytes inside a mapped file, viewed as elements.
struct MappedBf16 {
    map: Arc<Mmap>,
    bytes: Range<usize>,
}

impl SharedElements<bf16> for MappedBf16 {
    fn elements(&self) -> &[bf16] {
        // Alignment and length were checked when this was made; an empty slice is unreachable.
        bytemuck::try_cast_slice(&self.map[self.bytes.clone()]).unwrap_or(&[])
    }
}

struct Entry {
    file: usize,
    info: TensorInfo,
    bytes: Range<usize>,
}

impl<C> std::fmt::Debug for Checkpoint<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("dir", &self.dir)
            .field("files", &self.files.len())
            .field("tensors", &self.tensors.len())
            .finish_non_exhaustive()
    }
}

impl<C: HfConfig> Checkpoint<C> {
    /// Opens a local directory or an HF model id from the offline cache (environment from
    /// [`HubEnv::from_env`]).
    pub fn open(model: &str) -> Result<Self, CheckpointError> {
        Self::open_with_env(model, &HubEnv::from_env())
    }

    /// [`Checkpoint::open`] with an explicit cache environment.
    pub fn open_with_env(model: &str, env: &HubEnv) -> Result<Self, CheckpointError> {
        let dir = resolve_model(model, env)?;
        Self::open_dir(&dir)
    }

    /// Opens a checkpoint directory.
    pub fn open_dir(dir: &Path) -> Result<Self, CheckpointError> {
        Self::open_dir_with(dir, C::from_json_str)
    }
}

impl<C: ModelConfig> Checkpoint<C> {
    /// Opens a checkpoint directory whose `config.json` text `parse` validates (a family chosen
    /// at run time).
    pub fn open_dir_with(
        dir: &Path,
        parse: impl FnOnce(&str) -> Result<C, ConfigError>,
    ) -> Result<Self, CheckpointError> {
        let layout = Layout::detect(dir)?;
        let config = read_config_text(&dir.join(CONFIG_FILE))
            .and_then(|text| parse(&text))
            .map_err(|source| CheckpointError::Config {
                dir: dir.to_path_buf(),
                source,
            })?;
        let gen_path = dir.join(GENERATION_CONFIG_FILE);
        let generation_config = if gen_path.is_file() {
            Some(GenerationConfig::from_file(&gen_path).map_err(|source| {
                CheckpointError::Config {
                    dir: dir.to_path_buf(),
                    source,
                }
            })?)
        } else {
            None
        };
        let mut files = Vec::new();
        let mut tensors = HashMap::new();
        match layout {
            Layout::Single(path) => {
                let (file, records) = open_file(&path)?;
                for rec in records {
                    tensors.insert(rec.name, entry(0, rec.info, rec.bytes));
                }
                files.push(file);
            }
            Layout::Sharded(index_path) => {
                let text =
                    std::fs::read_to_string(&index_path).map_err(|source| CheckpointError::Io {
                        path: index_path.clone(),
                        source,
                    })?;
                let shards = parse_index(&index_path, &text)?;
                check_shards_present(dir, &index_path, &shards)?;
                for (shard, names) in shards {
                    let (file, records) = open_file(&dir.join(&shard))?;
                    let mut by_name: BTreeMap<String, TensorRecord> =
                        records.into_iter().map(|r| (r.name.clone(), r)).collect();
                    for name in names {
                        let rec = by_name.remove(&name).ok_or_else(|| {
                            CheckpointError::TensorNotInShard {
                                index: index_path.clone(),
                                tensor: name.clone(),
                                shard: shard.clone(),
                            }
                        })?;
                        tensors.insert(name, entry(files.len(), rec.info, rec.bytes));
                    }
                    files.push(file);
                }
            }
        }
        tracing::debug!(dir = %dir.display(), files = files.len(), tensors = tensors.len(), "checkpoint opened");
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            generation_config,
            files,
            tensors,
            progress: Arc::new(NoProgress),
            page_policy: PagePolicy::default(),
            huge_pages_unavailable: AtomicBool::new(false),
        })
    }

    /// `generation_config.json`, or HF's fallback built from `config.json` when absent.
    pub fn generation_config(&self) -> GenerationConfig {
        self.generation_config
            .clone()
            .unwrap_or_else(|| self.config.generation_defaults())
    }
}

impl<C> Checkpoint<C> {
    /// Sets how later loads treat the page size of the mapped files (default
    /// [`PagePolicy::Huge`]).
    pub fn set_page_policy(&mut self, policy: PagePolicy) {
        self.page_policy = policy;
    }

    /// Reports every later read to `progress`.
    pub fn set_progress(&mut self, progress: Arc<dyn LoadProgress>) {
        self.progress = progress;
    }

    /// The directory the checkpoint lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The validated `config.json`.
    pub fn config(&self) -> &C {
        &self.config
    }

    /// `tokenizer.json` in the checkpoint directory, if present.
    pub fn tokenizer_path(&self) -> Option<PathBuf> {
        Some(self.dir.join(TOKENIZER_FILE)).filter(|p| p.is_file())
    }

    /// The safetensors files backing the checkpoint.
    pub fn files(&self) -> Vec<&Path> {
        self.files.iter().map(|f| f.file.path()).collect()
    }

    /// A handle that tells whether any file changed on disk since the checkpoint opened it
    /// ([`CheckpointWatch::check`]); it can outlive the checkpoint, e.g. in a model.
    pub fn watch(&self) -> CheckpointWatch {
        CheckpointWatch::new(self.files.iter().map(|f| Arc::clone(&f.file)).collect())
    }

    /// Errors with [`CheckpointError::FileChanged`] if a file changed on disk since it was
    /// opened (see [`Checkpoint::watch`]).
    pub fn check_unchanged(&self) -> Result<(), CheckpointError> {
        self.files.iter().try_for_each(|f| f.file.check())
    }

    /// Names of all tensors, sorted.
    pub fn tensor_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Total bytes of tensor data (for progress bars).
    pub fn total_bytes(&self) -> u64 {
        self.tensors.values().map(|e| e.bytes.len() as u64).sum()
    }

    /// Dtype and shape of `name`.
    pub fn tensor_info(&self, name: &str) -> Result<&TensorInfo, CheckpointError> {
        self.entry(name).map(|e| &e.info)
    }

    /// Like [`Checkpoint::tensor_info`], and checks the shape against `expected`.
    pub fn expect_shape(
        &self,
        name: &str,
        expected: &[usize],
    ) -> Result<&TensorInfo, CheckpointError> {
        let info = self.tensor_info(name)?;
        if info.shape != expected {
            return Err(CheckpointError::WrongShape {
                tensor: name.to_string(),
                expected: expected.to_vec(),
                actual: info.shape.clone(),
            });
        }
        Ok(info)
    }

    /// Checks that every tensor in `expected` (name and shape, as a family lists them from its
    /// config) is present with its shape.
    pub fn check_tensors(&self, expected: &[(String, Vec<usize>)]) -> Result<(), CheckpointError> {
        for (name, shape) in expected {
            self.expect_shape(name, shape)?;
        }
        Ok(())
    }

    /// Copies `rows` x `cols` of the 2-D tensor `name` into `dst` (row-major,
    /// `rows.len() * cols.len()` values), converting to `T`.
    pub fn read_block<T: Element>(
        &self,
        name: &str,
        rows: Range<usize>,
        cols: Range<usize>,
        dst: &mut [T],
    ) -> Result<(), CheckpointError> {
        let e = self.entry(name)?;
        let bad = |message: String| CheckpointError::BadRead {
            tensor: name.to_string(),
            shape: e.info.shape.clone(),
            message,
        };
        let [n_rows, n_cols] = e.info.shape[..] else {
            return Err(bad("a block read needs a 2-D tensor".to_string()));
        };
        if rows.start > rows.end || rows.end > n_rows || cols.start > cols.end || cols.end > n_cols
        {
            return Err(bad(format!(
                "rows {rows:?} x cols {cols:?} is outside the tensor"
            )));
        }
        let width = cols.len();
        if dst.len() != rows.len() * width {
            return Err(bad(format!(
                "destination holds {} values, the block has {}",
                dst.len(),
                rows.len() * width
            )));
        }
        let size = e.info.dtype.size();
        self.files[e.file].file.check()?;
        if width == n_cols {
            // Whole rows: one run of the file.
            self.copy_converted(e, rows.start * n_cols, dst)?;
        } else if width > 0 {
            for (r, out) in rows.clone().zip(dst.chunks_exact_mut(width)) {
                self.copy_converted(e, r * n_cols + cols.start, out)?;
            }
        }
        self.progress
            .advance(name, (rows.len() * width * size) as u64);
        Ok(())
    }

    /// Copies the flat element range `range` of tensor `name` (any rank) into `dst`.
    pub fn read_flat<T: Element>(
        &self,
        name: &str,
        range: Range<usize>,
        dst: &mut [T],
    ) -> Result<(), CheckpointError> {
        let e = self.entry(name)?;
        let numel = e.info.numel();
        if range.start > range.end || range.end > numel || dst.len() != range.len() {
            return Err(CheckpointError::BadRead {
                tensor: name.to_string(),
                shape: e.info.shape.clone(),
                message: format!(
                    "elements {range:?} into a destination of {} values (tensor has {numel})",
                    dst.len()
                ),
            });
        }
        let size = e.info.dtype.size();
        self.files[e.file].file.check()?;
        self.copy_converted(e, range.start, dst)?;
        self.progress.advance(name, (range.len() * size) as u64);
        Ok(())
    }

    /// The whole tensor `name` as a bf16 [`Tensor`] of its shape. A BF16 tensor is not copied: the
    /// result reads the mapped file in place, and its pages are made resident now (so the first
    /// forward pass does not fault them in one by one). Other dtypes are converted into a new
    /// buffer.
    pub fn bf16_tensor(&self, name: &str) -> Result<Tensor, CheckpointError> {
        self.bf16_in_place_or_copy(name, |e| {
            self.files[e.file].file.check()?;
            Ok(Arc::new(MappedBf16 {
                map: self.resident_map(e.file)?,
                bytes: e.bytes.clone(),
            }))
        })
    }

    /// Tensor `name` as bf16: read in place from the owner `in_place` makes of its entry when
    /// it is stored as BF16 that a mapping can view (little-endian, at an even offset, not
    /// empty), else converted into a new buffer.
    fn bf16_in_place_or_copy(
        &self,
        name: &str,
        in_place: impl FnOnce(&Entry) -> Result<Arc<dyn SharedElements<bf16>>, CheckpointError>,
    ) -> Result<Tensor, CheckpointError> {
        let e = self.entry(name)?;
        let shape = e.info.shape.clone();
        let bad = |message: String| CheckpointError::BadRead {
            tensor: name.to_string(),
            shape: shape.clone(),
            message,
        };
        // Mappings are page-aligned, so alignment only depends on the offset in the file.
        let viewable = e.info.dtype == Dtype::BF16
            && cfg!(target_endian = "little")
            && e.bytes.start.is_multiple_of(align_of::<bf16>())
            && !e.bytes.is_empty();
        if !viewable {
            let data = self.read_all::<bf16>(name)?;
            return Tensor::from_bf16(data, &shape).map_err(|err| bad(err.to_string()));
        }
        let t = Tensor::from_shared_bf16(in_place(e)?, 0, &shape)
            .map_err(|err| bad(err.to_string()))?;
        self.progress.advance(name, e.bytes.len() as u64);
        Ok(t)
    }

    /// Tensor `name` at the precision it is stored in: an F32 tensor as an f32 copy (so a
    /// reference run computes with exactly the file's numbers), any other as
    /// [`Checkpoint::bf16_tensor`] (in place for BF16).
    pub fn tensor_as_stored(&self, name: &str) -> Result<Tensor, CheckpointError> {
        let e = self.entry(name)?;
        if e.info.dtype != Dtype::F32 {
            return self.bf16_tensor(name);
        }
        let shape = e.info.shape.clone();
        let data = self.read_all::<f32>(name)?;
        Tensor::from_f32(data, &shape).map_err(|err| CheckpointError::BadRead {
            tensor: name.to_string(),
            shape,
            message: err.to_string(),
        })
    }

    /// Reads a whole tensor (any rank) into a new vector.
    pub fn read_all<T: Element>(&self, name: &str) -> Result<Vec<T>, CheckpointError> {
        let numel = self.tensor_info(name)?.numel();
        let mut out = vec![T::default(); numel];
        self.read_flat(name, 0..numel, &mut out)?;
        Ok(out)
    }

    /// Reads a block of a 2-D tensor into a new vector (see [`Checkpoint::read_block`]).
    pub fn read_block_vec<T: Element>(
        &self,
        name: &str,
        rows: Range<usize>,
        cols: Range<usize>,
    ) -> Result<Vec<T>, CheckpointError> {
        let mut out = vec![T::default(); rows.len() * cols.len()];
        self.read_block(name, rows, cols, &mut out)?;
        Ok(out)
    }

    fn entry(&self, name: &str) -> Result<&Entry, CheckpointError> {
        self.tensors
            .get(name)
            .ok_or_else(|| CheckpointError::MissingTensor {
                dir: self.dir.clone(),
                tensor: name.to_string(),
            })
    }

    /// Copies `dst.len()` elements of `e` from element `first` on into `dst`, converting, with
    /// `pread` in chunks of about 1 MiB (never through the mapping). The range was validated
    /// against the file's length at open; a file shorter now is an error.
    fn copy_converted<T: Element>(
        &self,
        e: &Entry,
        first: usize,
        dst: &mut [T],
    ) -> Result<(), CheckpointError> {
        let size = e.info.dtype.size();
        let mut buf = vec![0u8; dst.len().min(COPY_CHUNK_BYTES / size) * size];
        let mut offset = (e.bytes.start + first * size) as u64;
        for out in dst.chunks_mut((COPY_CHUNK_BYTES / size).max(1)) {
            let bytes = &mut buf[..out.len() * size];
            self.files[e.file].file.read_exact_at(bytes, offset)?;
            element::convert_into(e.info.dtype, bytes, out);
            offset += bytes.len() as u64;
        }
        Ok(())
    }
}

/// Bytes read per `pread` when copying a tensor.
const COPY_CHUNK_BYTES: usize = 1 << 20;

fn entry(file: usize, info: TensorInfo, bytes: Range<usize>) -> Entry {
    Entry { file, info, bytes }
}

/// How the weights are stored.
enum Layout {
    Single(PathBuf),
    Sharded(PathBuf),
}

impl Layout {
    fn detect(dir: &Path) -> Result<Self, CheckpointError> {
        let listing: Vec<String> = std::fs::read_dir(dir)
            .map_err(|source| CheckpointError::Io {
                path: dir.to_path_buf(),
                source,
            })?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let has = |name: &str| listing.iter().any(|f| f == name);
        let any_safetensors = listing.iter().any(|f| f.ends_with(".safetensors"));
        let missing = |file: &'static str, hint: &'static str| CheckpointError::MissingFile {
            dir: dir.to_path_buf(),
            file,
            hint,
        };
        if !has(CONFIG_FILE) && !any_safetensors {
            return Err(CheckpointError::NotACheckpoint {
                dir: dir.to_path_buf(),
            });
        }
        if !has(CONFIG_FILE) {
            return Err(missing(
                CONFIG_FILE,
                "download the model's config.json next to its weights",
            ));
        }
        if has(INDEX_FILE) {
            return Ok(Layout::Sharded(dir.join(INDEX_FILE)));
        }
        if has(SINGLE_FILE) {
            return Ok(Layout::Single(dir.join(SINGLE_FILE)));
        }
        if any_safetensors {
            return Err(missing(
                INDEX_FILE,
                "the directory has *.safetensors shards but no index listing them; download \
                 the index too",
            ));
        }
        Err(missing(
            SINGLE_FILE,
            "no safetensors weights found (PyTorch .bin checkpoints are not supported; \
             download the safetensors files)",
        ))
    }
}

fn check_shards_present(
    dir: &Path,
    index_path: &Path,
    shards: &BTreeMap<String, Vec<String>>,
) -> Result<(), CheckpointError> {
    for (shard, names) in shards {
        if !dir.join(shard).is_file() {
            return Err(CheckpointError::MissingShard {
                index: index_path.to_path_buf(),
                shard: shard.clone(),
                tensors: names.len(),
                example: names.first().cloned().unwrap_or_default(),
            });
        }
    }
    Ok(())
}

/// Opens a safetensors file and reads its header with `pread` (nothing is mapped yet).
fn open_file(path: &Path) -> Result<(MappedFile, Vec<TensorRecord>), CheckpointError> {
    let file = file::OpenFile::open(path)?;
    let records = file.read_header()?;
    Ok((
        MappedFile {
            file: Arc::new(file),
            resident: Mutex::new(None),
        },
        records,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Checkpoint {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/phi3-tiny");
        Checkpoint::open_dir(&dir).unwrap()
    }

    #[test]
    fn making_files_resident_covers_every_file_under_both_policies() {
        for policy in [PagePolicy::AsCached, PagePolicy::Huge] {
            let mut ckpt = tiny();
            ckpt.set_page_policy(policy);
            let sizes: u64 = ckpt
                .files()
                .iter()
                .map(|p| std::fs::metadata(p).unwrap().len())
                .sum();
            let r = ckpt.make_resident().unwrap();
            assert_eq!(r.bytes, sizes);
            assert!(r.huge_bytes <= r.bytes);
            // The tiny shards are under the re-read threshold.
            assert_eq!(r.reread_files, 0);
            // Tensors read afterwards come from the same resident mappings: nothing is mapped
            // or read again.
            let name = ckpt.tensor_names()[0].to_string();
            ckpt.bf16_tensor(&name).unwrap();
            assert_eq!(ckpt.make_resident().unwrap(), r);
        }
    }

    #[test]
    fn bf16_tensors_are_read_in_place_and_match_a_copy() {
        let ckpt = tiny();
        for name in ["model.layers.0.self_attn.qkv_proj.weight", "lm_head.weight"] {
            let a = ckpt.bf16_tensor(name).unwrap();
            let b = ckpt.bf16_tensor(name).unwrap();
            assert_eq!(a.shape(), ckpt.tensor_info(name).unwrap().shape.as_slice());
            assert_eq!(
                a.as_bf16().unwrap().as_ptr(),
                b.as_bf16().unwrap().as_ptr(),
                "{name}: both views read the same mapped bytes"
            );
            let copy = ckpt.read_all::<bf16>(name).unwrap();
            assert_eq!(a.as_bf16().unwrap(), copy.as_slice(), "{name}");
        }
        let err = ckpt.bf16_tensor("model.no_such.weight").unwrap_err();
        assert!(
            matches!(err, CheckpointError::MissingTensor { .. }),
            "{err}"
        );
    }
}
