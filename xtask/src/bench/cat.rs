//! The load's yardstick: a `cat` of the files a load reads, every file once, in order, into one
//! reusable buffer (what `cat FILES > /dev/null` does), timed.
//!
//! A bf16/f32 load reads the checkpoint; a load in a packed preset (`accuracy`, `performance`)
//! maps its packed-weight cache instead (`tt_decoder::packed_cache`; the checkpoint gives only the
//! embedding and the norms there), so its `load/cat` divides by a `cat` of those cache files,
//! taken after the run's load has written or checked them.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

/// Which files a [`Cat`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CatSource {
    /// The checkpoint's safetensors files.
    Checkpoint,
    /// The packed-weight cache files of one run's mesh and preset (`tt_decoder::cache_files`).
    PackedCache,
}

impl CatSource {
    /// `checkpoint` or `packed cache`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Checkpoint => "checkpoint",
            Self::PackedCache => "packed cache",
        }
    }
}

/// Reading every file of a load once, in order, with `std::fs::File::read`.
#[derive(Debug, Clone, Serialize)]
pub struct Cat {
    /// Which files.
    pub source: CatSource,
    /// Files read.
    pub files: usize,
    /// Bytes read.
    pub bytes: u64,
    /// Wall seconds.
    pub seconds: f64,
    /// Packed cache: whether every file was there and current before the run's load (a warm
    /// cache, which the load maps; otherwise the load packed the checkpoint and wrote them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_before_load: Option<bool>,
}

impl Cat {
    /// `checkpoint, 4 files, 7.64 GB` / `packed cache, 1 file, 3.96 GB, warm`.
    pub fn what(&self) -> String {
        let files = match self.files {
            1 => "1 file".to_string(),
            n => format!("{n} files"),
        };
        let warm = match self.current_before_load {
            Some(true) => ", warm: current before the load",
            Some(false) => ", cold: the load wrote them",
            None => "",
        };
        format!(
            "{}, {files}, {} GB{warm}",
            self.source.name(),
            super::report::num(self.bytes as f64 / 1e9)
        )
    }
}

/// Reads every file once, in order, into one reusable buffer.
pub fn cat_files<P: AsRef<Path>>(source: CatSource, files: &[P]) -> Result<Cat> {
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    let start = Instant::now();
    for path in files {
        let path = path.as_ref();
        let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        loop {
            let n = file
                .read(&mut buf)
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
        }
    }
    Ok(Cat {
        source,
        files: files.len(),
        bytes,
        seconds: start.elapsed().as_secs_f64(),
        current_before_load: None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn reads_every_byte_and_names_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.bin");
        let b = dir.path().join("b.bin");
        std::fs::write(&a, vec![1u8; 3 << 20]).unwrap();
        std::fs::write(&b, [2u8; 5]).unwrap();
        let mut cat = cat_files(CatSource::PackedCache, &[&a, &b]).unwrap();
        assert_eq!((cat.files, cat.bytes), (2, (3 << 20) + 5));
        cat.current_before_load = Some(true);
        assert_eq!(
            cat.what(),
            "packed cache, 2 files, 0.003 GB, warm: current before the load"
        );
        let one = cat_files(CatSource::Checkpoint, &[b]).unwrap();
        assert_eq!(one.what(), "checkpoint, 1 file, 0.000 GB");
        assert!(cat_files(CatSource::Checkpoint, &[dir.path().join("missing")]).is_err());
    }
}
