//! The packed-weight cache on the tiny fixtures: a load through the cache computes exactly what a
//! load without it does; a stale or corrupt cache file is detected and rebuilt, never used;
//! writers racing on one directory leave whole files; ranks share a directory.
//!
//! Every test works on a copy of a fixture in a temporary directory, with a cache directory of
//! its own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::fixture_dir;
use tt_decoder::{
    Logits, Model, PackedCache, RuntimeOptions, cache_files, open_checkpoint_dir, parse_preset,
};
use tt_mesh::{MeshShape, ThreadRanks, Transport};

/// A copy of fixture `name` in a new temporary directory (kept alive by the returned guard).
fn copy_fixture(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    for entry in std::fs::read_dir(fixture_dir(name)).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
    }
    (tmp, dir)
}

fn options(
    mesh: (usize, usize),
    preset: &str,
    cache: PackedCache,
    transport: Option<Arc<dyn Transport>>,
) -> RuntimeOptions {
    let mut opts = RuntimeOptions::new(MeshShape::new(mesh.0, mesh.1).unwrap());
    opts.precision = Some(parse_preset(preset).unwrap());
    opts.max_seq_len = 32;
    opts.packed_cache = cache;
    opts.transport = transport;
    opts
}

/// All-position logits of a fixed prompt, as bits.
fn logits_with(dir: &Path, opts: &RuntimeOptions) -> Vec<u32> {
    let ckpt = open_checkpoint_dir(dir, &tt_lm::families()).unwrap();
    let model = Model::load(&ckpt, opts).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let vocab = model.config().vocab_size as u32;
    let tokens: Vec<u32> = (0..12).map(|i| (i * 37 + 5) % vocab).collect();
    let mut cache = model.new_cache().unwrap();
    let out = model.prefill(&mut cache, 0, &tokens, Logits::All).unwrap();
    out.to_f32_vec().iter().map(|v| v.to_bits()).collect()
}

fn logits(dir: &Path, mesh: (usize, usize), preset: &str, cache: PackedCache) -> Vec<u32> {
    logits_with(dir, &options(mesh, preset, cache, None))
}

/// The cache files of a load (this process hosting every device).
fn files(dir: &Path, mesh: (usize, usize), preset: &str, cache: &Path) -> Vec<PathBuf> {
    let ckpt = open_checkpoint_dir(dir, &tt_lm::families()).unwrap();
    cache_files(
        &ckpt,
        &options(mesh, preset, PackedCache::At(cache.into()), None),
    )
    .unwrap()
}

fn read_all(files: &[PathBuf]) -> Vec<Vec<u8>> {
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// Overwrites bytes at `at` of `path` in place, keeping its modification time.
fn patch(path: &Path, at: u64, bytes: &[u8]) {
    let mtime = std::fs::metadata(path).unwrap().modified().unwrap();
    let mut f = OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(bytes).unwrap();
    f.set_modified(mtime).unwrap();
}

/// The data offset of a cache file (its prefix's u64 at byte 32).
fn data_offset(path: &Path) -> u64 {
    let b = std::fs::read(path).unwrap();
    u64::from_le_bytes(b[32..40].try_into().unwrap())
}

/// The byte range of tensor `name` in the safetensors file `path`.
fn tensor_bytes(path: &Path, name: &str) -> (u64, usize) {
    let b = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap());
    let header: serde_json::Value = serde_json::from_slice(&b[8..8 + n as usize]).unwrap();
    let offsets = &header[name]["data_offsets"];
    let (start, end) = (offsets[0].as_u64().unwrap(), offsets[1].as_u64().unwrap());
    (8 + n + start, (end - start) as usize)
}

#[test]
fn loads_through_the_cache_compute_what_loads_without_it_do() {
    // Fused QKV (phi3-tiny), separate projections with GQA, padded heads (llama-tiny-odd), a
    // tied LM head; bfloat8_b everywhere and bfloat4_b FF1/FF3; one device and a 2x4 mesh.
    for name in [
        "phi3-tiny",
        "llama-tiny-gqa",
        "llama-tiny-odd",
        "llama-tiny-tied",
    ] {
        let (_tmp, dir) = copy_fixture(name);
        let cache = tempfile::tempdir().unwrap();
        for preset in ["accuracy", "performance"] {
            for mesh in [(1, 1), (2, 4)] {
                let at = PackedCache::At(cache.path().into());
                let plain = logits(&dir, mesh, preset, PackedCache::Off);
                let cold = logits(&dir, mesh, preset, at.clone());
                let paths = files(&dir, mesh, preset, cache.path());
                assert_eq!(paths.len(), mesh.0 * mesh.1);
                let written = read_all(&paths);
                let warm = logits(&dir, mesh, preset, at.clone());
                assert!(cold == plain, "{name} {preset} {mesh:?}: cold load differs");
                assert!(warm == plain, "{name} {preset} {mesh:?}: warm load differs");
                // The warm load mapped the files, it did not write them again.
                assert_eq!(read_all(&paths), written, "{name} {preset} {mesh:?}");
            }
        }
        // Presets that pack nothing have no cache.
        assert!(files(&dir, (2, 4), "bf16", cache.path()).is_empty());
    }
}

#[test]
fn a_warm_load_reads_the_cache_not_the_checkpoint() {
    let (_tmp, dir) = copy_fixture("phi3-tiny");
    let cache = tempfile::tempdir().unwrap();
    let at = PackedCache::At(cache.path().into());
    let before = logits(&dir, (1, 2), "accuracy", at.clone());
    // Change a packed weight of the checkpoint behind its key's back (same size, header and
    // modification time): the documented blind spot of a key that reads no tensor data.
    let shard = dir.join("model-00001-of-00002.safetensors");
    let (start, len) = tensor_bytes(&shard, "model.layers.0.self_attn.o_proj.weight");
    patch(&shard, start, &vec![0x3f; len]);
    let without = logits(&dir, (1, 2), "accuracy", PackedCache::Off);
    assert!(without != before, "the patch must change the model");
    // Through the cache the packed layers are the cached ones, bit for bit.
    assert!(logits(&dir, (1, 2), "accuracy", at) == before);
}

/// A named way to damage a cache file.
type Damage<'a> = (&'static str, Box<dyn Fn() + 'a>);

#[test]
fn a_stale_or_corrupt_cache_file_is_rebuilt_never_used() {
    let (_tmp, dir) = copy_fixture("llama-tiny-gqa");
    let cache = tempfile::tempdir().unwrap();
    let at = PackedCache::At(cache.path().into());
    let (mesh, preset) = ((2, 2), "accuracy");
    let plain = logits(&dir, mesh, preset, PackedCache::Off);
    assert!(logits(&dir, mesh, preset, at.clone()) == plain);
    let paths = files(&dir, mesh, preset, cache.path());
    let good = read_all(&paths);
    let victim = &paths[1];
    let data = data_offset(victim);
    let len = std::fs::metadata(victim).unwrap().len();
    let byte = |at: u64| good[1][at as usize];
    let damages: Vec<Damage> = vec![
        (
            "a flipped data byte",
            Box::new(|| patch(victim, data + 100, &[!byte(data + 100)])),
        ),
        (
            "a flipped last byte",
            Box::new(|| patch(victim, len - 1, &[!byte(len - 1)])),
        ),
        (
            "a flipped header byte",
            Box::new(|| patch(victim, 60, &[!byte(60)])),
        ),
        ("another version", Box::new(|| patch(victim, 8, &[99]))),
        ("bad magic", Box::new(|| patch(victim, 0, b"XX"))),
        (
            "a truncated file",
            Box::new(|| {
                File::options()
                    .write(true)
                    .open(victim)
                    .unwrap()
                    .set_len(len - 4096)
                    .unwrap()
            }),
        ),
        (
            "an empty file",
            Box::new(|| File::create(victim).map(drop).unwrap()),
        ),
        (
            "a missing file",
            Box::new(|| std::fs::remove_file(victim).unwrap()),
        ),
        (
            "another device's file",
            Box::new(|| {
                std::fs::copy(&paths[0], victim).unwrap();
            }),
        ),
    ];
    for (what, damage) in damages {
        damage();
        assert!(
            std::fs::read(victim).ok().as_ref() != Some(&good[1]),
            "{what}: no damage"
        );
        // A corrupt file used would change the logits; a rebuilt one is the same bytes again.
        assert!(
            logits(&dir, mesh, preset, at.clone()) == plain,
            "{what}: logits"
        );
        assert!(read_all(&paths) == good, "{what}: not rebuilt");
    }
}

#[test]
fn a_changed_checkpoint_gets_a_new_cache() {
    let (_tmp, dir) = copy_fixture("phi3-tiny");
    let cache = tempfile::tempdir().unwrap();
    let at = PackedCache::At(cache.path().into());
    let (mesh, preset) = ((2, 4), "performance");
    logits(&dir, mesh, preset, at.clone());
    let paths = files(&dir, mesh, preset, cache.path());
    let first = read_all(&paths);
    let shard = dir.join("model-00002-of-00002.safetensors");

    // Touched: the same weights under a new modification time; the files are rebuilt (new key).
    let later = SystemTime::now() + Duration::from_secs(10);
    File::options()
        .write(true)
        .open(&shard)
        .unwrap()
        .set_modified(later)
        .unwrap();
    assert_eq!(files(&dir, mesh, preset, cache.path()), paths, "same place");
    let plain = logits(&dir, mesh, preset, PackedCache::Off);
    assert!(logits(&dir, mesh, preset, at.clone()) == plain);
    let touched = read_all(&paths);
    assert!(touched != first, "a touched checkpoint keeps its old cache");

    // Rewritten: other weights, and a new modification time.
    let (start, len) = tensor_bytes(&shard, "model.layers.1.mlp.down_proj.weight");
    patch(&shard, start, &vec![0x3c; len]);
    File::options()
        .write(true)
        .open(&shard)
        .unwrap()
        .set_modified(later + Duration::from_secs(10))
        .unwrap();
    let changed = logits(&dir, mesh, preset, PackedCache::Off);
    assert!(changed != plain, "the rewrite must change the model");
    assert!(logits(&dir, mesh, preset, at.clone()) == changed);
    assert!(logits(&dir, mesh, preset, at) == changed);
    assert!(read_all(&paths) != touched);
}

#[test]
fn writers_racing_on_one_directory_leave_whole_files() {
    let (_tmp, dir) = copy_fixture("phi3-tiny-gqa");
    let (mesh, preset) = ((2, 4), "accuracy");
    let plain = logits(&dir, mesh, preset, PackedCache::Off);
    // The same files written alone, elsewhere (file bytes do not depend on the cache root).
    let alone = tempfile::tempdir().unwrap();
    logits(&dir, mesh, preset, PackedCache::At(alone.path().into()));
    let want = read_all(&files(&dir, mesh, preset, alone.path()));

    let cache = tempfile::tempdir().unwrap();
    let at = PackedCache::At(cache.path().into());
    let all = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| logits(&dir, mesh, preset, at.clone())))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert!(all.iter().all(|l| *l == plain));
    let paths = files(&dir, mesh, preset, cache.path());
    assert!(read_all(&paths) == want);
    // No temporary file is left behind.
    let parent = paths[0].parent().unwrap();
    let names: Vec<String> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), paths.len(), "{names:?}");
}

/// Logits of every rank of a mesh spread over `ranks` thread ranks.
fn rank_logits(dir: &Path, mesh: (usize, usize), preset: &str, cache: &PackedCache, ranks: usize) {
    let transports = ThreadRanks::new(ranks);
    let want = logits(dir, mesh, preset, PackedCache::Off);
    std::thread::scope(|s| {
        let handles: Vec<_> = transports
            .into_iter()
            .map(|t| {
                let opts = options(mesh, preset, cache.clone(), Some(Arc::new(t)));
                s.spawn(move || {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(1)
                        .build()
                        .unwrap();
                    pool.install(|| logits_with(dir, &opts))
                })
            })
            .collect();
        for (rank, h) in handles.into_iter().enumerate() {
            assert!(h.join().unwrap() == want, "rank {rank} of {ranks}");
        }
    });
}

#[test]
fn ranks_share_one_cache_directory() {
    let (_tmp, dir) = copy_fixture("phi3-tiny");
    let (mesh, preset) = ((2, 4), "accuracy");
    // Written by one process, mapped by ranks (each its own devices' files).
    let cache = tempfile::tempdir().unwrap();
    let at = PackedCache::At(cache.path().into());
    logits(&dir, mesh, preset, at.clone());
    let paths = files(&dir, mesh, preset, cache.path());
    let one = read_all(&paths);
    rank_logits(&dir, mesh, preset, &at, 4);
    assert!(read_all(&paths) == one, "the ranks rewrote the files");
    // Written by ranks (each its own devices), the same bytes one process writes.
    let cache = tempfile::tempdir().unwrap();
    let at = PackedCache::At(cache.path().into());
    rank_logits(&dir, mesh, preset, &at, 2);
    assert!(read_all(&files(&dir, mesh, preset, cache.path())) == one);
    rank_logits(&dir, mesh, preset, &at, 2);
}
