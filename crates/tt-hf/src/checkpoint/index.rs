//! `model.safetensors.index.json`: which shard file holds each tensor of a sharded checkpoint.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::CheckpointError;

/// File name of the index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

#[derive(Deserialize)]
struct RawIndex {
    weight_map: Option<BTreeMap<String, String>>,
}

/// Parses the text of an index: shard file name -> tensor names it holds (sorted).
/// `path` only labels errors. Shard names must be plain file names in the same directory.
pub fn parse_index(
    path: &Path,
    text: &str,
) -> Result<BTreeMap<String, Vec<String>>, CheckpointError> {
    let malformed = |message: String| CheckpointError::MalformedIndex {
        path: path.to_path_buf(),
        message,
    };
    let raw: RawIndex = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
    let weight_map = raw
        .weight_map
        .ok_or_else(|| malformed("no `weight_map` object".to_string()))?;
    if weight_map.is_empty() {
        return Err(malformed("`weight_map` is empty".to_string()));
    }
    let mut shards: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (tensor, shard) in weight_map {
        let plain = !shard.is_empty()
            && shard != "."
            && shard != ".."
            && !shard.contains(['/', '\\'])
            && !shard.contains('\0');
        if !plain {
            return Err(malformed(format!(
                "tensor `{tensor}` points at `{shard}`, which is not a file name in the \
                 checkpoint directory"
            )));
        }
        shards.entry(shard).or_default().push(tensor);
    }
    Ok(shards)
}
