//! Making a mapped checkpoint file resident, on 2 MiB page-cache pages where the kernel can.
//!
//! Decode reads every weight once per token, straight from the mapped files. On 4 KiB pages each
//! 4 KiB read needs an address translation (two-level under a hypervisor); on 2 MiB pages almost
//! none. Measured on the 2-core development VM: decode 311.6 -> 276.5 ms/token, the bf16 GEMV from
//! 24-25 to 29-31 GB/s (docs/PERFORMANCE.md).
//!
//! The page size of a file mapping follows the page cache. A file read into the cache by `read`
//! (`cat`, a copy) is usually held in small folios, and any mapping of it then gets 4 KiB pages.
//! A file read *through* a mapping advised `MADV_HUGEPAGE` is cached in 2 MiB folios (recent
//! Linux, on filesystems with large folios: ext4, xfs, btrfs, tmpfs) and stays so while cached.
//! So under [`PagePolicy::Huge`] a file found mapped on small pages has its clean cached pages
//! dropped (`POSIX_FADV_DONTNEED`, which never loses data) and is read again through an advised
//! mapping: one disk read, once; every later load finds the large folios in the cache.
//!
//! A file is mapped from the descriptor the checkpoint opened it with (never reopened by path),
//! after checking that it is unchanged since (`file.rs`), and checked again once resident.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use memmap2::{Advice, Mmap};

use super::Checkpoint;
use crate::error::CheckpointError;

/// How the loader treats the page size of the mapped checkpoint files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PagePolicy {
    /// Map the files as they are cached (4 KiB pages unless the cache holds large folios).
    AsCached,
    /// Ask for 2 MiB pages; a file cached in small pages is dropped from the page cache and read
    /// again from disk, once.
    #[default]
    Huge,
}

/// What the mapped checkpoint files are on ([`Checkpoint::make_resident`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Residency {
    /// Bytes of all files.
    pub bytes: u64,
    /// Bytes mapped on 2 MiB pages (0 where the kernel does not say).
    pub huge_bytes: u64,
    /// Files this checkpoint read again from disk into 2 MiB pages.
    pub reread_files: usize,
}

impl<C> Checkpoint<C> {
    /// Makes every file resident now, as loading a model does file by file (under the default
    /// [`PagePolicy::Huge`], a file cached on small pages is read again into 2 MiB pages). Returns
    /// what the files are now on.
    pub fn make_resident(&self) -> Result<Residency, CheckpointError> {
        let mut total = Residency::default();
        for i in 0..self.files.len() {
            self.with_resident(i, |r| {
                total.bytes += r.map.len() as u64;
                // Read now, not at mapping time: the kernel may have split pages since.
                total.huge_bytes += huge_mapped_bytes(r.map.as_ptr()).unwrap_or(0);
                total.reread_files += usize::from(r.reread);
            })?;
        }
        Ok(total)
    }

    /// File `index` mapped for in-place reads, made resident the first time (whole file) under
    /// the page policy.
    pub(super) fn resident_map(&self, index: usize) -> Result<Arc<Mmap>, CheckpointError> {
        self.with_resident(index, |r| Arc::clone(&r.map))
    }

    /// `f` of file `index`'s resident mapping, made the first time it is asked for.
    fn with_resident<T>(
        &self,
        index: usize,
        f: impl FnOnce(&Resident) -> T,
    ) -> Result<T, CheckpointError> {
        let mapped = &self.files[index];
        let file = &*mapped.file;
        let mut slot = mapped
            .resident
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(r) = slot.as_ref() {
            file.check()?;
            return Ok(f(r));
        }
        file.check()?;
        let may_reread = !self.huge_pages_unavailable.load(Ordering::Relaxed);
        let r = make_resident(file.file(), file.path(), self.page_policy, may_reread).map_err(
            |source| CheckpointError::Io {
                path: file.path().to_path_buf(),
                source,
            },
        )?;
        if r.map.len() as u64 != file.len() {
            return Err(CheckpointError::FileChanged {
                path: file.path().to_path_buf(),
                what: format!(
                    "it was mapped with {} bytes but had {} at open",
                    r.map.len(),
                    file.len()
                ),
            });
        }
        // A change while the pages were read in: nothing of the mapping is handed out.
        file.check()?;
        if r.reread && r.huge_bytes.is_some_and(|b| b < r.map.len() as u64 / 2) {
            tracing::info!(
                "the page cache does not take 2 MiB pages for {}: later files are mapped as cached",
                file.path().display()
            );
            self.huge_pages_unavailable.store(true, Ordering::Relaxed);
        }
        tracing::debug!(file = %file.path().display(), huge_bytes = ?r.huge_bytes, reread = r.reread, "resident");
        Ok(f(slot.insert(r)))
    }
}

/// Files smaller than this are left as they are cached (a re-read could gain at most one page).
const MIN_REREAD_BYTES: usize = 4 << 20;

/// A file mapping made resident.
pub(crate) struct Resident {
    pub map: Arc<Mmap>,
    /// Bytes of the mapping on 2 MiB pages (`None` where the kernel does not say).
    pub huge_bytes: Option<u64>,
    /// Whether the file was dropped from the page cache and read again.
    pub reread: bool,
}

/// Maps `file` (opened as `path`, which only labels logs) for the tensors to read, with every page
/// resident. Under [`PagePolicy::Huge`] and `may_reread`, a file found on small pages is read
/// again into 2 MiB pages.
pub(super) fn make_resident(
    file: &File,
    path: &Path,
    policy: PagePolicy,
    may_reread: bool,
) -> std::io::Result<Resident> {
    let map = map_resident(file, policy)?;
    let len = map.len();
    let huge_bytes = huge_mapped_bytes(map.as_ptr());
    // Mostly huge is not enough: every 4 KiB page left costs its own translations.
    let on_small_pages = huge_bytes.is_some_and(|b| b < len as u64 / 16 * 15);
    if policy == PagePolicy::Huge && may_reread && on_small_pages && len >= MIN_REREAD_BYTES {
        // Our own mapping must go first: the kernel keeps pages that a process maps.
        drop(map);
        let t = Instant::now();
        drop_cached_pages(file);
        let map = map_resident(file, PagePolicy::Huge)?;
        let huge_bytes = huge_mapped_bytes(map.as_ptr());
        tracing::info!(
            file = %path.display(),
            seconds = t.elapsed().as_secs_f64(),
            huge_mib = huge_bytes.unwrap_or(0) >> 20,
            mib = len >> 20,
            "read the file again into 2 MiB page-cache pages (once: they stay cached)"
        );
        return Ok(Resident {
            map: Arc::new(map),
            huge_bytes,
            reread: true,
        });
    }
    Ok(Resident {
        map: Arc::new(map),
        huge_bytes,
        reread: false,
    })
}

/// A read-only shared mapping of `file`, advised per `policy`, with its pages made resident.
fn map_resident(file: &File, policy: PagePolicy) -> std::io::Result<Mmap> {
    // SAFETY: `Mmap::map` makes a read-only MAP_SHARED mapping of the whole file and hands out
    // `&[u8]` over it, which must neither change nor fault while borrowed. This process never
    // writes checkpoint files (they are opened read-only). Another process can, and nothing here
    // can stop it: a write to the file shows through a shared mapping (MAP_PRIVATE would not
    // help: pages not yet copied show it too), and a truncation makes the pages past the new
    // end raise SIGBUS when touched. So soundness rests on the contract stated on `Checkpoint`
    // (module docs): its files are not modified while it, or a model holding tensors read in
    // place from this mapping, lives. What the checkpoint does about a breach: the file is
    // mapped from the descriptor opened (and identified) at open, only after `OpenFile::check`
    // found it unchanged, and checked again before any tensor of the mapping is handed out
    // (`with_resident`); copies never read the mapping. A breach after that is detected by the
    // next check (`Checkpoint::watch`), not prevented.
    let map = unsafe { Mmap::map(file) }?;
    #[cfg(target_os = "linux")]
    if policy == PagePolicy::Huge {
        // Only hints: without them the pages are 4 KiB or fault in on first use.
        let _ = map.advise(Advice::HugePage);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = policy;
    let _ = map.advise(Advice::PopulateRead);
    Ok(map)
}

/// Drops the file's clean, unmapped pages from the page cache (a hint; never loses data).
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

/// Bytes of the mapping that starts at `start` which the kernel maps with 2 MiB pages
/// (`FilePmdMapped` in `/proc/self/smaps`); `None` if it does not say.
pub(super) fn huge_mapped_bytes(start: *const u8) -> Option<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    smaps_field_kib(&smaps, start as usize, "FilePmdMapped:").map(|kib| kib * 1024)
}

/// The value in kB of `field` in the `smaps` entry of the mapping starting at `start`.
fn smaps_field_kib(smaps: &str, start: usize, field: &str) -> Option<u64> {
    let head = format!("{start:x}-");
    let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&head));
    lines.next()?;
    lines
        // Field lines start `Name:`; the next mapping's line starts `start-end`.
        .take_while(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|t| t.ends_with(':'))
        })
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0021000 r--p 00000000 fe:00 42   /usr/bin/x
Size:                132 kB
FilePmdMapped:         7 kB
7f0000000000-7f0000400000 r--s 00000000 fe:00 99   /m/model.safetensors
Size:               4096 kB
Rss:                4096 kB
FilePmdMapped:      2048 kB
VmFlags: rd sh mr mw me ms hg
7f0000400000-7f0000500000 rw-p 00000000 00:00 0
FilePmdMapped:         0 kB
";

    #[test]
    fn finds_the_field_of_the_right_mapping() {
        assert_eq!(
            smaps_field_kib(SMAPS, 0x7f00_0000_0000, "FilePmdMapped:"),
            Some(2048)
        );
        assert_eq!(
            smaps_field_kib(SMAPS, 0x55d0_c000_0000, "FilePmdMapped:"),
            Some(7)
        );
        assert_eq!(smaps_field_kib(SMAPS, 0x1234, "FilePmdMapped:"), None);
        assert_eq!(smaps_field_kib(SMAPS, 0x7f00_0040_0000, "Rss:"), None);
    }

    #[test]
    fn a_small_file_is_mapped_resident_and_never_reread() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("w.bin");
        std::fs::write(&path, vec![7u8; 1 << 16])?;
        for policy in [PagePolicy::AsCached, PagePolicy::Huge] {
            let r = make_resident(&File::open(&path)?, &path, policy, true)?;
            assert_eq!(r.map.len(), 1 << 16);
            assert!(r.map.iter().all(|&b| b == 7));
            assert!(!r.reread);
        }
        Ok(())
    }

    #[test]
    fn a_large_file_keeps_its_bytes_whatever_its_pages() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("w.bin");
        let bytes: Vec<u8> = (0..(6usize << 20)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes)?;
        let r = make_resident(&File::open(&path)?, &path, PagePolicy::Huge, true)?;
        assert_eq!(&r.map[..], &bytes[..]);
        if let Some(huge) = r.huge_bytes {
            assert!(huge <= bytes.len() as u64);
        }
        Ok(())
    }
}
