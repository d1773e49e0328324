//! Where each target's inputs live, and reading them: the committed seed corpus
//! (`fuzz/corpus/<target>/`), the committed crash regressions (`fuzz/regressions/<target>/`)
//! and the crash artifacts libFuzzer writes (`fuzz/artifacts/<target>/`, not committed).

use std::path::{Path, PathBuf};

use crate::targets::Target;

/// The root of the fuzz package (`fuzz/`).
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The committed seed corpus of `target`: `fuzz/corpus/<target>`.
pub fn corpus_dir(target: Target) -> PathBuf {
    root().join("corpus").join(target.name())
}

/// The committed inputs that once crashed `target` or broke a promise:
/// `fuzz/regressions/<target>`.
pub fn regressions_dir(target: Target) -> PathBuf {
    root().join("regressions").join(target.name())
}

/// Where `cargo fuzz run` saves crashing inputs of `target`: `fuzz/artifacts/<target>`.
pub fn artifacts_dir(target: Target) -> PathBuf {
    root().join("artifacts").join(target.name())
}

/// Every regular file of `dir` with its bytes, sorted by name. A missing directory has none.
pub fn read_dir_inputs(dir: &Path) -> std::io::Result<Vec<(PathBuf, Vec<u8>)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|p| std::fs::read(&p).map(|bytes| (p, bytes)))
        .collect()
}
