//! A checkpoint file held open, its identity at open, and reads that fail instead of faulting.
//!
//! A [`Checkpoint`](super::Checkpoint) keeps each safetensors file open for its whole life and
//! records the file's identity when it opens it: device and inode, size, modification and
//! status-change times. [`OpenFile::check`] compares that record with the open descriptor
//! (`fstat`: was the file written or truncated in place?) and with the path (`stat`: does the
//! name still lead to the same file, or was another one renamed over it?). Any difference is a
//! [`CheckpointError::FileChanged`]. The checkpoint runs the check before every tensor read,
//! before it maps a file, and on demand through [`CheckpointWatch`].
//!
//! Copies ([`OpenFile::read_exact_at`]) go through `pread`, never through a mapping: a file cut
//! short under a copy gives a short read, hence an error, where a mapping would raise SIGBUS.
//!
//! Limits, stated exactly:
//! - A change that lands *between* a check and the end of the access it guards is not seen by
//!   that check. For copies this is harmless (at worst a short read, an error, or bytes of the
//!   new file, which the next check reports). For tensors read in place from a mapping (the
//!   model's BF16 weights) a truncation landing then still raises SIGBUS, and bytes written in
//!   place are read as they are (see `map_resident` in `pages.rs`).
//! - A rewrite that keeps the size and lands within the filesystem's timestamp granularity of the
//!   previous change (a clock tick, a few milliseconds, on Linux filesystems; 2 s on FAT) leaves
//!   both times equal and is not seen.

use std::fs::{File, Metadata};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::format::{MAX_HEADER_LEN, TensorRecord, parse_header_of};
use crate::error::CheckpointError;

/// What identifies one version of a file: where it lives, its size and its last change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    /// Device and inode (0, 0 where the platform does not say).
    dev_ino: (u64, u64),
    /// Length in bytes.
    size: u64,
    /// Last modification (seconds, nanoseconds).
    mtime: (i64, i64),
    /// Last status change (seconds, nanoseconds; 0 where the platform does not say).
    ctime: (i64, i64),
}

impl Identity {
    #[cfg(unix)]
    fn of(meta: &Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            dev_ino: (meta.dev(), meta.ino()),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    #[cfg(not(unix))]
    fn of(meta: &Metadata) -> Self {
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or((0, 0), |d| {
                (d.as_secs() as i64, i64::from(d.subsec_nanos()))
            });
        Self {
            dev_ino: (0, 0),
            size: meta.len(),
            mtime,
            ctime: (0, 0),
        }
    }

    /// How `now` differs from `self` (the record at open), if it does.
    fn difference(&self, now: &Identity) -> Option<String> {
        if now.dev_ino != self.dev_ino {
            Some(format!(
                "it is another file now (device/inode {:?} at open, {:?} now): something was \
                 moved over it",
                self.dev_ino, now.dev_ino
            ))
        } else if now.size != self.size {
            Some(format!(
                "its size went from {} to {} bytes",
                self.size, now.size
            ))
        } else if now.mtime != self.mtime || now.ctime != self.ctime {
            Some("it was modified in place".to_string())
        } else {
            None
        }
    }
}

/// A checkpoint file, open for reading for as long as the checkpoint lives.
#[derive(Debug)]
pub(crate) struct OpenFile {
    path: PathBuf,
    file: File,
    identity: Identity,
}

impl OpenFile {
    /// Opens `path` read-only and records its identity.
    pub(crate) fn open(path: &Path) -> Result<Self, CheckpointError> {
        let io = |source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let identity = Identity::of(&file.metadata().map_err(io)?);
        Ok(Self {
            path: path.to_path_buf(),
            file,
            identity,
        })
    }

    /// The path it was opened by.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The open file (for mapping it).
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Its length at open.
    pub(crate) fn len(&self) -> u64 {
        self.identity.size
    }

    /// Errors unless the path still names the file opened and the file is unchanged since it was
    /// opened (size, times). Two `stat` calls.
    pub(crate) fn check(&self) -> Result<(), CheckpointError> {
        let changed = |what: String| CheckpointError::FileChanged {
            path: self.path.clone(),
            what,
        };
        let io = |source| CheckpointError::Io {
            path: self.path.clone(),
            source,
        };
        // The path first: a file unlinked (replaced or deleted) has a new status-change time,
        // which the descriptor would report as a change in place.
        match std::fs::metadata(&self.path) {
            Ok(meta) => {
                let now = Identity::of(&meta);
                if now.dev_ino != self.identity.dev_ino
                    && let Some(what) = self.identity.difference(&now)
                {
                    return Err(changed(what));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(changed("it was deleted".to_string()));
            }
            Err(source) => return Err(io(source)),
        }
        let now = Identity::of(&self.file.metadata().map_err(io)?);
        match self.identity.difference(&now) {
            Some(what) => Err(changed(what)),
            None => Ok(()),
        }
    }

    /// Reads and validates the safetensors header ([`parse_header`](super::parse_header)) with
    /// `pread`: the 8-byte length, then the header it gives (at most safetensors' own limit).
    pub(crate) fn read_header(&self) -> Result<Vec<TensorRecord>, CheckpointError> {
        let file_len = self.len();
        let mut head = vec![0u8; file_len.min(8) as usize];
        self.read_exact_at(&mut head, 0)?;
        if let Ok(len_bytes) = <[u8; 8]>::try_from(head.as_slice()) {
            let header_len = u64::from_le_bytes(len_bytes);
            // A length past the end is reported by the parser, from the first 8 bytes alone.
            if header_len <= file_len - 8 {
                if header_len > MAX_HEADER_LEN {
                    return Err(CheckpointError::MalformedHeader {
                        path: self.path.clone(),
                        message: format!(
                            "a header of {header_len} bytes (safetensors allows {MAX_HEADER_LEN})"
                        ),
                    });
                }
                head.resize(8 + header_len as usize, 0);
                self.read_exact_at(&mut head[8..], 8)?;
            }
        }
        parse_header_of(&self.path, &head, file_len)
    }

    /// Fills `buf` from the file at `offset` with `pread` (no mapping, so no SIGBUS). A file now
    /// shorter than that is a [`CheckpointError::FileChanged`].
    pub(crate) fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), CheckpointError> {
        match read_at(&self.file, buf, offset) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(CheckpointError::FileChanged {
                    path: self.path.clone(),
                    what: format!(
                        "it ends before byte {} although it had {} bytes at open",
                        offset + buf.len() as u64,
                        self.identity.size
                    ),
                })
            }
            Err(source) => Err(CheckpointError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

/// A cheap handle that tells whether any file of a checkpoint changed on disk since it was
/// opened ([`Checkpoint::watch`](super::Checkpoint::watch)). It keeps the files open, not
/// mapped; a model can hold one and [`check`](CheckpointWatch::check) it before each forward pass,
/// so a rewritten checkpoint is reported instead of read.
#[derive(Debug, Clone)]
pub struct CheckpointWatch {
    files: Vec<Arc<OpenFile>>,
}

impl CheckpointWatch {
    pub(crate) fn new(files: Vec<Arc<OpenFile>>) -> Self {
        Self { files }
    }

    /// Errors with [`CheckpointError::FileChanged`] if a file was written, truncated, replaced
    /// or deleted since the checkpoint opened it. Two `stat` calls per file.
    pub fn check(&self) -> Result<(), CheckpointError> {
        self.files.iter().try_for_each(|f| f.check())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn file_with(dir: &Path, bytes: &[u8]) -> PathBuf {
        let path = dir.join("w.bin");
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn an_unchanged_file_passes_and_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_with(dir.path(), &[1, 2, 3, 4, 5]);
        let f = OpenFile::open(&path).unwrap();
        f.check().unwrap();
        assert_eq!(f.len(), 5);
        let mut buf = [0u8; 3];
        f.read_exact_at(&mut buf, 2).unwrap();
        assert_eq!(buf, [3, 4, 5]);
    }

    #[test]
    fn truncation_is_a_change_and_a_short_read_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_with(dir.path(), &[9; 64]);
        let f = OpenFile::open(&path).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(10)
            .unwrap();
        let err = f.check().unwrap_err();
        assert!(
            err.to_string()
                .contains("its size went from 64 to 10 bytes"),
            "{err}"
        );
        let mut buf = [0u8; 8];
        let err = f.read_exact_at(&mut buf, 8).unwrap_err();
        assert!(matches!(err, CheckpointError::FileChanged { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("it ends before byte 16 although it had 64 bytes at open"),
            "{err}"
        );
    }

    #[test]
    fn replacement_deletion_and_in_place_writes_are_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_with(dir.path(), &[1; 32]);
        let f = OpenFile::open(&path).unwrap();
        let other = dir.path().join("new.bin");
        std::fs::write(&other, [1; 32]).unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert!(
            f.check()
                .unwrap_err()
                .to_string()
                .contains("it is another file now"),
            "replaced by rename"
        );

        let f = OpenFile::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(
            f.check()
                .unwrap_err()
                .to_string()
                .contains("it was deleted")
        );
        // The open file still reads its old bytes.
        let mut buf = [0u8; 4];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(buf, [1; 4]);

        let path = file_with(dir.path(), &[1; 32]);
        let f = OpenFile::open(&path).unwrap();
        // Past the timestamp granularity of the filesystem (module docs).
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut w = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        w.write_all(&[2; 4]).unwrap();
        drop(w);
        let err = f.check().unwrap_err();
        assert!(err.to_string().contains("modified in place"), "{err}");
    }
}
