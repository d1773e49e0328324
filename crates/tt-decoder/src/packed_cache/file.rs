//! One device's packed-weight cache file: writing it atomically, and mapping it after checking
//! every byte.
//!
//! Layout (integers little-endian):
//! - a fixed prefix of [`PREFIX`] bytes: the magic `TTPACKED`, the format version (u32), 4
//!   reserved bytes, the header's length (u64), the header's xxh3-64 (u64), the offset of the
//!   data (u64, a multiple of 4096) and the file's length (u64);
//! - the header, JSON: the key, the device, and the tensor table (per tensor its name, storage
//!   format, rows, columns, offset from the data start, length, and the xxh3-64 of its bytes);
//! - the data: each tensor's tiles exactly as a [`PackedMatrix`] holds them, each starting at a
//!   multiple of [`ALIGN`] bytes (4096) in the file, so every tile (1088, 576 or 2048 bytes, all
//!   multiples of 64) of a mapping starts 64-byte aligned.
//!
//! Writing goes to a temporary file in the same directory, renamed over the final name once
//! complete: a reader sees a whole file or none, a crash leaves at most a temporary file
//! (removed by a later write once it is an hour old), and writers racing on one name each
//! rename a whole file (the last one stays). The data is synced before the rename (a file cut
//! short or zeroed by a power loss would anyway fail its length or checksum check), then dropped
//! from the page cache so that the next load maps it on 2 MiB pages (`drop_cached_pages`).
//!
//! Opening checks, before anything of it is used: magic, version, header checksum, key and
//! device, the file's length, the table (names, shapes, alignment, bounds), and the checksum of
//! every tensor (one read of the whole file through the mapping, tensors hashed in parallel).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use memmap2::Mmap;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tt_numerics::packed::SharedBytes;
use tt_numerics::{PackedMatrix, StorageFormat};
use xxhash_rust::xxh3::xxh3_64;

/// The cache format's version: bump it whenever the layout or the packer's output changes.
pub(crate) const VERSION: u32 = 1;
/// The first bytes of every cache file.
const MAGIC: &[u8; 8] = b"TTPACKED";
/// Bytes of the fixed prefix.
const PREFIX: usize = 48;
/// Alignment of the data and of every tensor in the file.
pub(crate) const ALIGN: usize = 4096;
/// Headers larger than this are refused as corrupt.
const MAX_HEADER: u64 = 64 << 20;
/// Temporary files older than this are left over from a crash.
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// Why a cache file cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unusable {
    /// There is no file yet.
    #[error("no cache file yet")]
    Missing,
    /// It could not be read.
    #[error("unreadable: {0}")]
    Io(#[from] io::Error),
    /// It is not a cache file of this format.
    #[error("not a packed-weight cache file (bad magic)")]
    Magic,
    /// Another version of the format wrote it.
    #[error("written by cache format version {0}, this build reads version {VERSION}")]
    Version(u32),
    /// Its length is not the one its prefix states.
    #[error("truncated or extended: {got} bytes, its header says {expected}")]
    Length {
        /// Bytes the prefix states.
        expected: u64,
        /// Bytes found.
        got: u64,
    },
    /// Its header is damaged or inconsistent.
    #[error("corrupt header: {0}")]
    Header(String),
    /// It was written for another checkpoint, preset or sharding.
    #[error(
        "stale: written for another checkpoint, preset or sharding (key {found}, expected {expected})"
    )]
    Key {
        /// The file's key.
        found: String,
        /// The key of this load.
        expected: String,
    },
    /// A tensor's bytes do not match their checksum.
    #[error("corrupt data: tensor {0} fails its checksum")]
    Checksum(String),
}

/// A tensor of the table.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    name: String,
    format: String,
    rows: usize,
    cols: usize,
    /// From the start of the data.
    offset: u64,
    len: u64,
    /// xxh3-64 of the bytes, 16 hex digits.
    xxh3: String,
}

/// The JSON header.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    key: String,
    device: usize,
    tensors: Vec<Entry>,
}

/// `n` rounded up to a multiple of [`ALIGN`].
fn align_up(n: u64) -> u64 {
    n.div_ceil(ALIGN as u64) * ALIGN as u64
}

/// Writes `tensors` (entry name, packed matrix) as device `device`'s cache file `path` with
/// `key`: to a temporary file, then renamed over `path`.
pub(crate) fn write(
    path: &Path,
    key: &str,
    device: usize,
    tensors: &[(String, &PackedMatrix)],
) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("a cache file path has no directory"))?;
    std::fs::create_dir_all(dir)?;
    remove_stale_temps(dir);
    let hashes: Vec<u64> = tensors
        .par_iter()
        .map(|(_, m)| xxh3_64(m.bytes()))
        .collect();
    let mut offset = 0u64;
    let entries = tensors
        .iter()
        .zip(&hashes)
        .map(|((name, m), hash)| {
            let e = Entry {
                name: name.clone(),
                format: m.format().name().to_string(),
                rows: m.rows(),
                cols: m.cols(),
                offset,
                len: m.byte_size() as u64,
                xxh3: format!("{hash:016x}"),
            };
            offset = align_up(offset + e.len);
            e
        })
        .collect::<Vec<_>>();
    let data_len = entries.last().map_or(0, |e| e.offset + e.len);
    let header = serde_json::to_vec(&Header {
        key: key.to_string(),
        device,
        tensors: entries,
    })
    .map_err(io::Error::other)?;
    let data_offset = align_up((PREFIX + header.len()) as u64);
    let file_len = data_offset + data_len;
    let mut prefix = Vec::with_capacity(PREFIX);
    prefix.extend_from_slice(MAGIC);
    prefix.extend_from_slice(&VERSION.to_le_bytes());
    prefix.extend_from_slice(&[0; 4]);
    prefix.extend_from_slice(&(header.len() as u64).to_le_bytes());
    prefix.extend_from_slice(&xxh3_64(&header).to_le_bytes());
    prefix.extend_from_slice(&data_offset.to_le_bytes());
    prefix.extend_from_slice(&file_len.to_le_bytes());

    let temp = temp_path(path);
    let result = (|| {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&temp)?);
        out.write_all(&prefix)?;
        out.write_all(&header)?;
        let mut at = (PREFIX + header.len()) as u64;
        for (_, m) in tensors {
            let start = align_up(at);
            io::copy(&mut io::repeat(0).take(start - at), &mut out)?;
            out.write_all(m.bytes())?;
            at = start + m.byte_size() as u64;
        }
        let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        // On disk before it gets its name; then out of the page cache, so that the next load
        // reads it through its advised mapping, into 2 MiB pages (`map`).
        file.sync_data()?;
        drop_cached_pages(&file);
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Drops the file's clean pages from the page cache (a hint; never loses data). Pages cached
/// by `write` are small (4 KiB); pages read through a mapping advised `MADV_HUGEPAGE` are cached
/// as 2 MiB folios where the kernel and filesystem can (as `tt_hf`'s checkpoint mapping does),
/// which spares decode, reading every weight per token, most of its address translations.
fn drop_cached_pages(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open descriptor; the call only affects the kernel's cache.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// A temporary name beside `path`, unique to this process and call.
fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}-{n}.tmp", std::process::id()))
}

/// Removes temporary files of `dir` older than [`STALE_TEMP`] (left by a crashed write).
fn remove_stale_temps(dir: &Path) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in read.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > STALE_TEMP);
        if name.starts_with('.') && name.ends_with(".tmp") && old {
            tracing::info!(file = %entry.path().display(), "removing a stale temporary cache file");
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A device's cache file, mapped and checked: its tensors by entry name, read in place.
#[derive(Debug)]
pub(crate) struct DeviceFile {
    /// Tensors by entry name.
    pub tensors: HashMap<String, PackedMatrix>,
    /// Bytes of the file.
    pub bytes: u64,
}

/// Little-endian u64 at `at` of the prefix.
fn le_u64(prefix: &[u8; PREFIX], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&prefix[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Maps device `device`'s cache file `path`, checks it against `key` and `expected` (the entry
/// names it must hold, no more) and every tensor's checksum.
pub(crate) fn open(
    path: &Path,
    key: &str,
    device: usize,
    expected: &[String],
) -> Result<DeviceFile, Unusable> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Unusable::Missing),
        Err(e) => return Err(e.into()),
    };
    let len = file.metadata()?.len();
    let mut prefix = [0u8; PREFIX];
    file.read_exact(&mut prefix).map_err(|_| Unusable::Length {
        expected: PREFIX as u64,
        got: len,
    })?;
    if &prefix[..8] != MAGIC {
        return Err(Unusable::Magic);
    }
    let version = u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
    if version != VERSION {
        return Err(Unusable::Version(version));
    }
    let (header_len, header_hash) = (le_u64(&prefix, 16), le_u64(&prefix, 24));
    let (data_offset, file_len) = (le_u64(&prefix, 32), le_u64(&prefix, 40));
    if file_len != len {
        return Err(Unusable::Length {
            expected: file_len,
            got: len,
        });
    }
    if header_len > MAX_HEADER
        || data_offset % ALIGN as u64 != 0
        || data_offset < PREFIX as u64 + header_len
        || data_offset > file_len
    {
        return Err(Unusable::Header(format!(
            "header of {header_len} bytes, data at {data_offset}, file of {file_len}"
        )));
    }
    let mut header = Vec::new();
    (&mut file).take(header_len).read_to_end(&mut header)?;
    if header.len() as u64 != header_len || xxh3_64(&header) != header_hash {
        return Err(Unusable::Header("the header fails its checksum".into()));
    }
    let header: Header =
        serde_json::from_slice(&header).map_err(|e| Unusable::Header(e.to_string()))?;
    if header.key != key || header.device != device {
        return Err(Unusable::Key {
            found: format!("{} (device {})", header.key, header.device),
            expected: format!("{key} (device {device})"),
        });
    }
    let names: Vec<&String> = header.tensors.iter().map(|e| &e.name).collect();
    if names.len() != expected.len() || names.iter().zip(expected).any(|(a, b)| *a != b) {
        return Err(Unusable::Header(format!(
            "it holds {} tensors, this load needs {} others",
            names.len(),
            expected.len()
        )));
    }
    let map = map(&file)?;
    if map.len() as u64 != file_len {
        return Err(Unusable::Length {
            expected: file_len,
            got: map.len() as u64,
        });
    }
    let data: SharedBytes = Arc::new(map);
    let tensors = header
        .tensors
        .par_iter()
        .map(|e| tensor(&data, data_offset, file_len, e).map(|m| (e.name.clone(), m)))
        .collect::<Result<HashMap<_, _>, _>>()?;
    Ok(DeviceFile {
        tensors,
        bytes: file_len,
    })
}

/// Entry `e` as a matrix over the mapping, after checking its place, shape and checksum.
fn tensor(
    data: &SharedBytes,
    data_offset: u64,
    file_len: u64,
    e: &Entry,
) -> Result<PackedMatrix, Unusable> {
    let bad = |what: &str| Unusable::Header(format!("tensor {}: {what}", e.name));
    let format: StorageFormat = e.format.parse().map_err(|_| bad("unknown format"))?;
    let start = data_offset
        .checked_add(e.offset)
        .filter(|s| s % ALIGN as u64 == 0)
        .ok_or_else(|| bad("misaligned"))?;
    let end = start
        .checked_add(e.len)
        .filter(|&end| end <= file_len)
        .ok_or_else(|| bad("past the end of the file"))?;
    let range = usize::try_from(start).map_err(|_| bad("offset"))?
        ..usize::try_from(end).map_err(|_| bad("length"))?;
    let m = PackedMatrix::from_shared(e.rows, e.cols, format, Arc::clone(data), range)
        .map_err(|err| bad(&err.to_string()))?;
    if format!("{:016x}", xxh3_64(m.bytes())) != e.xxh3 {
        return Err(Unusable::Checksum(e.name.clone()));
    }
    Ok(m)
}

/// A read-only shared mapping of a cache file, its pages made resident (on 2 MiB pages where
/// the kernel can).
fn map(file: &File) -> io::Result<Mmap> {
    // SAFETY: `Mmap::map` makes a read-only MAP_SHARED mapping whose bytes are handed out as
    // `&[u8]` for as long as the model lives, so the file must neither change nor shrink
    // meanwhile. This project never writes a cache file in place: a rebuild writes a new file
    // and renames it over the name, which leaves this mapping's inode untouched. Another
    // process writing or truncating the file in place breaks that contract (stated in
    // docs/ARCHITECTURE.md: the cache directory is this project's alone), as for checkpoint
    // files; the length and every checksum are checked right after mapping, so a file changed
    // before then is refused, not used.
    let map = unsafe { Mmap::map(file) }?;
    #[cfg(target_os = "linux")]
    {
        // Only hints: without them pages are 4 KiB, or fault in on first use.
        let _ = map.advise(memmap2::Advice::HugePage);
        let _ = map.advise(memmap2::Advice::PopulateRead);
    }
    Ok(map)
}
