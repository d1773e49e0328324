//! BF16 tensors read in place on demand: a mapping of the tensor's own bytes, with nothing made
//! resident, for lookup tables such as the embedding (a forward pass reads a few of its rows).
//!
//! [`Checkpoint::bf16_tensor`] makes the whole file resident, which a model reading every weight
//! per token needs. A model whose weights come from elsewhere (the packed-weight cache) still
//! looks up embedding rows; copying the table costs a warm load ~0.2 s and the process ~200 MB
//! (Phi-3-mini). Mapped on demand, a row is read from the page cache the first time it is used,
//! and only the pages mapped in count in the process's memory. Those pages are as large as the
//! page cache's folios: a checkpoint made resident is cached in 2 MiB folios, so a long prompt
//! whose ids spread over the vocabulary maps most of the table (measured: 185 of Phi-3's 197 MB
//! after a 1,024-token prefill; advising the mapping `MADV_NOHUGEPAGE` and `MADV_RANDOM` did not
//! change that on Linux 6.18). So this storage gives its pages back on request
//! ([`tt_ops::Tensor::release_pages`], `MADV_DONTNEED`), which the decoder does after each lookup.

use std::fs::File;
use std::ops::Range;
use std::sync::Arc;

use half::bf16;
use memmap2::{Mmap, MmapOptions};
use tt_ops::{SharedElements, Tensor};

use super::Checkpoint;
use crate::error::CheckpointError;

impl<C> Checkpoint<C> {
    /// Tensor `name` as BF16, read in place from a mapping of its bytes only, each page read
    /// when first used. Tensors stored in another dtype (or BF16 at an odd offset) are
    /// converted into a new buffer, as [`Checkpoint::bf16_tensor`] does.
    pub fn bf16_tensor_on_demand(&self, name: &str) -> Result<Tensor, CheckpointError> {
        self.bf16_in_place_or_copy(name, |e| {
            let file = &self.files[e.file].file;
            file.check()?;
            let map =
                map_range(file.file(), e.bytes.clone()).map_err(|source| CheckpointError::Io {
                    path: file.path().to_path_buf(),
                    source,
                })?;
            // A change while it was mapped: nothing of the mapping is handed out.
            file.check()?;
            Ok(Arc::new(OnDemandBf16 { map }))
        })
    }
}

/// A tensor's BF16 bytes in a mapping of their own, which gives its pages back on request.
struct OnDemandBf16 {
    map: Mmap,
}

impl SharedElements<bf16> for OnDemandBf16 {
    fn elements(&self) -> &[bf16] {
        // Alignment (an even file offset, page-aligned mapping) and length were checked when
        // this was made; an empty slice is unreachable.
        bytemuck::try_cast_slice(&self.map[..]).unwrap_or(&[])
    }

    fn release_pages(&self) {
        #[cfg(unix)]
        {
            // SAFETY: a read-only MAP_SHARED mapping of a file: MADV_DONTNEED drops this
            // process's page table entries only, and the next access maps the same file bytes
            // in again from the page cache (or the disk). memmap2 marks it unsafe because on a
            // private or anonymous mapping the pages would come back zeroed; here the bytes any
            // borrow sees stay the same, under the contract that checkpoint files do not change
            // while mapped (module docs of `checkpoint`), the one every in-place tensor relies on.
            let _ = unsafe {
                self.map
                    .unchecked_advise(memmap2::UncheckedAdvice::DontNeed)
            };
        }
    }
}

/// A read-only shared mapping of `bytes` of `file`, nothing read yet.
fn map_range(file: &File, bytes: Range<usize>) -> std::io::Result<Mmap> {
    // SAFETY: as in `pages::map_resident`, whose contract this mapping shares: a read-only
    // MAP_SHARED mapping handed out as `&[u8]` for as long as a tensor over it lives, so the file
    // must neither change nor shrink meanwhile (the contract on `Checkpoint` in the module docs).
    // This process never writes checkpoint files; the file is mapped from the descriptor opened
    // and identified at open, after `OpenFile::check` found it unchanged, and checked again before
    // the tensor is handed out. `bytes` lies inside the file (validated against its length at
    // open, and the file is unchanged since); memmap2 aligns the offset down to a page itself.
    unsafe {
        MmapOptions::new()
            .offset(bytes.start as u64)
            .len(bytes.len())
            .map(file)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::path::Path;

    use super::*;

    #[test]
    fn bf16_tensors_on_demand_match_a_copy_and_map_only_their_bytes() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/phi3-tiny");
        let ckpt = Checkpoint::<serde_json::Value>::open_dir(&dir).unwrap();
        for name in ckpt.tensor_names() {
            let t = ckpt.bf16_tensor_on_demand(name).unwrap();
            assert_eq!(t.shape(), ckpt.tensor_info(name).unwrap().shape.as_slice());
            let copy = ckpt.read_all::<bf16>(name).unwrap();
            assert_eq!(t.as_bf16().unwrap(), copy.as_slice(), "{name}");
        }
        // In place, not a copy, and not the whole file's resident mapping.
        let name = "model.embed_tokens.weight";
        let (lazy, resident) = (
            ckpt.bf16_tensor_on_demand(name).unwrap(),
            ckpt.bf16_tensor(name).unwrap(),
        );
        assert_ne!(
            lazy.as_bf16().unwrap().as_ptr(),
            resident.as_bf16().unwrap().as_ptr()
        );
        // Pages given back leave the process (Linux: the mapping's Rss in /proc/self/smaps
        // drops to zero) and are mapped in again, unchanged.
        let before = lazy.as_bf16().unwrap().to_vec();
        let at = lazy.as_bf16().unwrap().as_ptr() as usize;
        #[cfg(target_os = "linux")]
        assert!(rss_kb_of(at) > 0, "the table was just read");
        lazy.release_pages();
        #[cfg(target_os = "linux")]
        assert_eq!(rss_kb_of(at), 0, "release_pages left pages mapped");
        assert_eq!(lazy.as_bf16().unwrap(), before.as_slice());
        let err = ckpt
            .bf16_tensor_on_demand("model.no_such.weight")
            .unwrap_err();
        assert!(
            matches!(err, CheckpointError::MissingTensor { .. }),
            "{err}"
        );
    }

    /// Resident kB of the mapping holding address `at`, from /proc/self/smaps.
    #[cfg(target_os = "linux")]
    fn rss_kb_of(at: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            let head = line.split_whitespace().next().unwrap_or("");
            if let Some((lo, hi)) = head.split_once('-')
                && let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = (lo..hi).contains(&at);
            } else if inside && let Some(kb) = line.strip_prefix("Rss:") {
                return kb.trim().trim_end_matches("kB").trim().parse().unwrap();
            }
        }
        panic!("no mapping holds {at:#x}");
    }

    #[test]
    fn tensors_of_other_dtypes_are_converted_copies() {
        let dir = tempfile::tempdir().unwrap();
        let values = [1.0f32, -2.5, 3.0e-3, 65504.0, 1.0e30, -0.0];
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 3], &bytes)
                .unwrap();
        let file = safetensors::serialize([("t", view)], None).unwrap();
        std::fs::write(dir.path().join("model.safetensors"), file).unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        let ckpt = Checkpoint::<serde_json::Value>::open_dir(dir.path()).unwrap();
        let t = ckpt.bf16_tensor_on_demand("t").unwrap();
        assert_eq!(t.shape(), &[2, 3]);
        let expected: Vec<bf16> = values.iter().map(|&v| bf16::from_f32(v)).collect();
        assert_eq!(t.as_bf16().unwrap(), expected.as_slice());
    }
}
