//! JSON-aware mutations: parse the input's JSON (for a safetensors file, its header), change
//! one node, write it back. Replace a value with one of another type or an interesting number,
//! drop or rename a key, add a key, grow, shrink or reorder an array, swap two values, nest a
//! value deeper. A safetensors file gets its length prefix recomputed (usually) and keeps its
//! data area.

use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value, json};

use crate::mutate::{DICTIONARY, Format, INTERESTING_INTS};

/// Most nodes visited when choosing one to mutate.
const MAX_NODES: usize = 4096;

/// One step of a path into a JSON document.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

/// Applies one JSON-aware mutation to `data` in place. Returns false (and leaves `data`
/// unchanged) when `data` holds no parsable JSON.
pub fn mutate(
    rng: &mut ChaCha8Rng,
    data: &mut Vec<u8>,
    format: Format,
    corpus: &[Vec<u8>],
) -> bool {
    let (prefix_ok, json_range) = match format {
        Format::Json => (true, 0..data.len()),
        Format::Safetensors => match header_range(data) {
            Some(r) => (true, r),
            None => return false,
        },
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(&data[json_range.clone()]) else {
        return false;
    };
    mutate_value(rng, &mut value, corpus, format);
    let text = if rng.random_bool(0.8) {
        serde_json::to_vec(&value)
    } else {
        serde_json::to_vec_pretty(&value)
    };
    let Ok(text) = text else {
        return false;
    };
    match format {
        Format::Json => *data = text,
        Format::Safetensors => {
            let rest = data[json_range.end..].to_vec();
            // Usually a consistent length prefix, so the mutation reaches the validation
            // behind the JSON parser; sometimes the old one.
            let mut out = if prefix_ok && rng.random_bool(0.9) {
                (text.len() as u64).to_le_bytes().to_vec()
            } else {
                data[..8].to_vec()
            };
            out.extend_from_slice(&text);
            out.extend_from_slice(&rest);
            *data = out;
        }
    }
    true
}

/// Whether `data` holds well-formed JSON where `format` expects it (such inputs are the
/// useful parents: their mutants get past the JSON parser to the validation behind it).
pub fn is_well_formed(data: &[u8], format: Format) -> bool {
    let range = match format {
        Format::Json => Some(0..data.len()),
        Format::Safetensors => header_range(data),
    };
    range.is_some_and(|r| serde_json::from_slice::<serde::de::IgnoredAny>(&data[r]).is_ok())
}

/// The header bytes of a safetensors file, when its length prefix points inside the file.
fn header_range(data: &[u8]) -> Option<std::ops::Range<usize>> {
    let prefix: [u8; 8] = data.get(..8)?.try_into().ok()?;
    let len = usize::try_from(u64::from_le_bytes(prefix)).ok()?;
    let end = 8usize.checked_add(len)?;
    (end <= data.len()).then_some(8..end)
}

fn mutate_value(rng: &mut ChaCha8Rng, root: &mut Value, corpus: &[Vec<u8>], format: Format) {
    let mut paths = Vec::new();
    collect_paths(root, &mut Vec::new(), &mut paths);
    let Some(path) = paths.choose(rng).cloned() else {
        return;
    };
    let replacement_pool = paths.clone();
    let snapshot = root.clone();
    let Some(node) = node_at(root, &path) else {
        return;
    };
    match rng.random_range(0..10) {
        0 | 1 => *node = interesting_value(rng, Some(node)),
        2 => tweak_number(rng, node),
        3 => {
            if let Value::Object(map) = node {
                drop_key(rng, map);
            } else {
                *node = interesting_value(rng, Some(node));
            }
        }
        4 => {
            if let Value::Object(map) = node {
                rename_or_add_key(rng, map);
            } else {
                *node = Value::Null;
            }
        }
        5 => array_op(rng, node),
        6 => {
            // Copy another node of the same document here (e.g. one tensor's offsets onto
            // another's: overlaps).
            if let Some(other) = replacement_pool.choose(rng)
                && let Some(v) = node_at_ref(&snapshot, other)
            {
                *node = v.clone();
            }
        }
        7 => {
            // Nest: wrap the value in an array or an object.
            let inner = node.take();
            *node = if rng.random_bool(0.5) {
                Value::Array(vec![inner])
            } else {
                json!({ "k": inner })
            };
        }
        8 => {
            // A value from another corpus entry.
            if let Some(v) = corpus_value(rng, corpus, format) {
                *node = v;
            }
        }
        _ => *node = interesting_value(rng, None),
    }
}

fn collect_paths(value: &Value, prefix: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    if out.len() >= MAX_NODES {
        return;
    }
    out.push(prefix.clone());
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                prefix.push(Step::Key(k.clone()));
                collect_paths(v, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                prefix.push(Step::Index(i));
                collect_paths(v, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn node_at<'a>(root: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    let mut node = root;
    for step in path {
        node = match step {
            Step::Key(k) => node.get_mut(k.as_str())?,
            Step::Index(i) => node.get_mut(*i)?,
        };
    }
    Some(node)
}

fn node_at_ref<'a>(root: &'a Value, path: &[Step]) -> Option<&'a Value> {
    let mut node = root;
    for step in path {
        node = match step {
            Step::Key(k) => node.get(k.as_str())?,
            Step::Index(i) => node.get(*i)?,
        };
    }
    Some(node)
}

/// A value of a random kind, often of another type than `current`.
fn interesting_value(rng: &mut ChaCha8Rng, current: Option<&Value>) -> Value {
    match rng.random_range(0..14) {
        0 => Value::Null,
        1 => Value::Bool(rng.random()),
        2 | 3 => {
            let n = *INTERESTING_INTS.choose(rng).unwrap_or(&0);
            Value::from(n)
        }
        4 => {
            let n = *INTERESTING_INTS.choose(rng).unwrap_or(&0) as i64;
            Value::from(n)
        }
        5 => Value::from(
            *[0.5f64, -0.0, 1e308, -1e308, 1e-310, 3.5, -2.0]
                .choose(rng)
                .unwrap_or(&0.5),
        ),
        6 => Value::from(""),
        7 => {
            let token = DICTIONARY.choose(rng).copied().unwrap_or("x");
            Value::from(token.trim_matches('"'))
        }
        8 => Value::Array(Vec::new()),
        9 => Value::Object(Map::new()),
        10 => match current {
            Some(v) => Value::Array(vec![v.clone(), v.clone()]),
            None => Value::Array(vec![Value::from(0)]),
        },
        11 => match current {
            Some(Value::String(s)) => Value::from(format!("{s}{s}")),
            _ => Value::from("x".repeat(rng.random_range(1..300))),
        },
        12 => Value::from(rng.random_range(-4i64..=64)),
        _ => Value::from(rng.random::<u32>()),
    }
}

fn tweak_number(rng: &mut ChaCha8Rng, node: &mut Value) {
    let Some(n) = node.as_i64().or_else(|| node.as_f64().map(|f| f as i64)) else {
        *node = Value::from(rng.random_range(-2i64..=8));
        return;
    };
    *node = match rng.random_range(0..7) {
        0 => Value::from(n.wrapping_add(1)),
        1 => Value::from(n.wrapping_sub(1)),
        2 => Value::from(n.wrapping_neg()),
        3 => Value::from(n.wrapping_mul(2)),
        4 => Value::from(n / 2),
        5 => Value::from(0),
        _ => Value::from((n as f64) + 0.5),
    };
}

fn drop_key(rng: &mut ChaCha8Rng, map: &mut Map<String, Value>) {
    let keys: Vec<String> = map.keys().cloned().collect();
    if let Some(k) = keys.choose(rng) {
        map.remove(k);
    }
}

fn rename_or_add_key(rng: &mut ChaCha8Rng, map: &mut Map<String, Value>) {
    let new_key = DICTIONARY
        .choose(rng)
        .copied()
        .unwrap_or("x")
        .trim_matches('"')
        .to_string();
    let keys: Vec<String> = map.keys().cloned().collect();
    match keys.choose(rng) {
        Some(old) if rng.random_bool(0.5) => {
            if let Some(v) = map.remove(old) {
                map.insert(new_key, v);
            }
        }
        _ => {
            let v = interesting_value(rng, None);
            map.insert(new_key, v);
        }
    }
}

fn array_op(rng: &mut ChaCha8Rng, node: &mut Value) {
    let Value::Array(items) = node else {
        *node = Value::Array(vec![node.take()]);
        return;
    };
    match rng.random_range(0..6) {
        0 if !items.is_empty() => {
            let i = rng.random_range(0..items.len());
            items.remove(i);
        }
        1 if !items.is_empty() => {
            let i = rng.random_range(0..items.len());
            let v = items[i].clone();
            items.insert(i, v);
        }
        2 => items.clear(),
        3 => {
            let n = items.len().min(512);
            let copy: Vec<Value> = items.iter().take(n).cloned().collect();
            items.extend(copy);
        }
        4 if items.len() > 1 => {
            let a = rng.random_range(0..items.len());
            let b = rng.random_range(0..items.len());
            items.swap(a, b);
        }
        _ => items.push(interesting_value(rng, None)),
    }
}

/// A random node of another corpus entry's JSON.
fn corpus_value(rng: &mut ChaCha8Rng, corpus: &[Vec<u8>], format: Format) -> Option<Value> {
    let other = corpus.choose(rng)?;
    let range = match format {
        Format::Json => 0..other.len(),
        Format::Safetensors => header_range(other)?,
    };
    let value: Value = serde_json::from_slice(&other[range]).ok()?;
    let mut paths = Vec::new();
    collect_paths(&value, &mut Vec::new(), &mut paths);
    let path = paths.choose(rng)?;
    node_at_ref(&value, path).cloned()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn json_mutations_keep_json_valid_and_change_it() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let original = br#"{"a": [1, 2, 3], "b": {"c": "d"}, "e": 1.5}"#.to_vec();
        let mut changed = 0;
        for _ in 0..200 {
            let mut data = original.clone();
            assert!(mutate(
                &mut rng,
                &mut data,
                Format::Json,
                std::slice::from_ref(&original)
            ));
            let v: Result<Value, _> = serde_json::from_slice(&data);
            assert!(v.is_ok(), "{}", String::from_utf8_lossy(&data));
            changed += usize::from(v.ok() != serde_json::from_slice(&original).ok());
        }
        assert!(changed > 120, "only {changed} of 200 changed the document");
    }

    #[test]
    fn safetensors_mutations_keep_the_data_area() {
        let header = br#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(header);
        file.extend_from_slice(&[1, 2, 3, 4]);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut consistent = 0;
        for _ in 0..100 {
            let mut data = file.clone();
            assert!(mutate(&mut rng, &mut data, Format::Safetensors, &[]));
            assert_eq!(&data[data.len() - 4..], &[1, 2, 3, 4]);
            consistent += usize::from(header_range(&data) == Some(8..data.len() - 4));
        }
        assert!(
            consistent > 70,
            "{consistent} of 100 kept a consistent prefix"
        );
        // Not JSON at all: nothing to do.
        let mut junk = b"\x01\x00\x00\x00\x00\x00\x00\x00{".to_vec();
        assert!(!mutate(&mut rng, &mut junk, Format::Safetensors, &[]));
    }
}
