//! Content hashes that tie a reference to the model and tokenizer it was made with.
//!
//! Both are SHA-256, written as 64 lowercase hex digits, and scripts/make_reference.py computes
//! them the same way (docs/EVAL.md):
//! - **model**: one SHA-256 over the model directory's `config.json` followed by every regular file
//!   whose name ends in `.safetensors`, in byte order of their names. Each file contributes its name
//!   (UTF-8), a 0 byte, its length as a little-endian u64 and then its bytes. Nothing else in the
//!   directory (index, tokenizer, README) counts.
//! - **tokenizer**: SHA-256 of the bytes of `tokenizer.json`.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::reference::ReferenceError;

/// The file of a model directory that the model hash starts with.
pub const CONFIG_FILE: &str = "config.json";
/// The tokenizer file that the tokenizer hash covers.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// The files the model hash covers, in hashing order: `config.json`, then the `*.safetensors`
/// files sorted by name.
pub fn model_files(dir: &Path) -> Result<Vec<PathBuf>, ReferenceError> {
    let config = dir.join(CONFIG_FILE);
    if !config.is_file() {
        return Err(ReferenceError::MissingConfig {
            dir: dir.to_path_buf(),
        });
    }
    let entries = std::fs::read_dir(dir).map_err(|source| ReferenceError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut weights: Vec<(String, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ReferenceError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            // A non-UTF-8 name cannot end in ".safetensors" as Python sees it either; skip it.
            continue;
        };
        if name.ends_with(".safetensors") && path.is_file() {
            weights.push((name, path));
        }
    }
    if weights.is_empty() {
        return Err(ReferenceError::MissingWeights {
            dir: dir.to_path_buf(),
        });
    }
    weights.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut files = vec![config];
    files.extend(weights.into_iter().map(|(_, p)| p));
    Ok(files)
}

/// The model hash of a HuggingFace-layout directory (see the module doc).
pub fn model_fingerprint(dir: &Path) -> Result<String, ReferenceError> {
    let files = model_files(dir)?;
    let mut hasher = Sha256::new();
    for path in &files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let len = std::fs::metadata(path)
            .map_err(|source| ReferenceError::Io {
                path: path.clone(),
                source,
            })?
            .len();
        hasher.update(name.as_bytes());
        hasher.update([0u8]);
        hasher.update(len.to_le_bytes());
        let hashed = hash_file_into(path, &mut hasher)?;
        if hashed != len {
            return Err(ReferenceError::Io {
                path: path.clone(),
                source: std::io::Error::other(format!(
                    "file changed while hashing ({len} then {hashed} bytes)"
                )),
            });
        }
    }
    tracing::debug!(dir = %dir.display(), files = files.len(), "hashed model directory");
    Ok(hex(&hasher.finalize()))
}

/// The tokenizer hash: SHA-256 of the bytes of the given `tokenizer.json`.
pub fn tokenizer_fingerprint(tokenizer_json: &Path) -> Result<String, ReferenceError> {
    let mut hasher = Sha256::new();
    hash_file_into(tokenizer_json, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

/// SHA-256 of a byte string, as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Whether `s` looks like a hash of this module: 64 lowercase hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn hash_file_into(path: &Path, hasher: &mut Sha256) -> Result<u64, ReferenceError> {
    let io_err = |source| ReferenceError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io_err)?;
        if n == 0 {
            return Ok(total);
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_strings() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(is_sha256_hex(&sha256_hex(b"abc")));
        assert!(!is_sha256_hex("ABC"));
        assert!(!is_sha256_hex(&"A".repeat(64)));
    }

    #[test]
    fn model_hash_frames_config_then_sorted_weights() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(p.join("config.json"), b"{}").unwrap();
        std::fs::write(p.join("b.safetensors"), b"BB").unwrap();
        std::fs::write(p.join("a.safetensors"), b"A").unwrap();
        std::fs::write(p.join("model.safetensors.index.json"), b"ignored").unwrap();
        std::fs::write(p.join("tokenizer.json"), b"ignored").unwrap();
        std::fs::create_dir(p.join("dir.safetensors")).unwrap();

        let names: Vec<String> = model_files(p)
            .unwrap()
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["config.json", "a.safetensors", "b.safetensors"]);

        let mut framed = Vec::new();
        for (name, bytes) in [
            ("config.json", &b"{}"[..]),
            ("a.safetensors", b"A"),
            ("b.safetensors", b"BB"),
        ] {
            framed.extend_from_slice(name.as_bytes());
            framed.push(0);
            framed.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            framed.extend_from_slice(bytes);
        }
        assert_eq!(model_fingerprint(p).unwrap(), sha256_hex(&framed));

        // Moving bytes between files changes the hash (the framing keeps file boundaries).
        std::fs::write(p.join("a.safetensors"), b"AB").unwrap();
        std::fs::write(p.join("b.safetensors"), b"B").unwrap();
        assert_ne!(model_fingerprint(p).unwrap(), sha256_hex(&framed));
    }

    #[test]
    fn missing_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            model_fingerprint(dir.path()),
            Err(ReferenceError::MissingConfig { .. })
        ));
        std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
        assert!(matches!(
            model_fingerprint(dir.path()),
            Err(ReferenceError::MissingWeights { .. })
        ));
        assert!(matches!(
            tokenizer_fingerprint(&dir.path().join("tokenizer.json")),
            Err(ReferenceError::Io { .. })
        ));
    }

    #[test]
    fn tokenizer_hash_is_the_file_hash() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("tokenizer.json");
        std::fs::write(&t, b"abc").unwrap();
        assert_eq!(tokenizer_fingerprint(&t).unwrap(), sha256_hex(b"abc"));
    }
}
