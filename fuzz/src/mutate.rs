//! Byte-level mutations (bit flips, byte insert/delete/overwrite, interesting integers, chunk
//! duplication and splicing from other corpus entries), stacked a few at a time on one parent,
//! as AFL's "havoc" stage does. JSON-aware mutations live in [`crate::json`].

use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;

use crate::json;

/// How the bytes of a target's input are laid out, so that structure-aware mutations can find
/// the JSON in them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The whole input is JSON text (config.json, index, reference).
    Json,
    /// A safetensors file: 8-byte little-endian header length, JSON header, data.
    Safetensors,
}

/// Integers that break size arithmetic: zero, one, -1, powers of two around type limits.
pub const INTERESTING_INTS: [u64; 24] = [
    0,
    1,
    2,
    7,
    8,
    16,
    255,
    256,
    65_535,
    65_536,
    (1 << 28),
    (1 << 31) - 1,
    1 << 31,
    (1 << 32) - 1,
    1 << 32,
    1 << 53,
    (1 << 53) + 1,
    (1 << 63) - 1,
    1 << 63,
    u64::MAX,
    u64::MAX - 1,
    i64::MIN as u64,
    i32::MIN as u64,
    -1i64 as u64,
];

/// Numbers as JSON (or almost-JSON) text, substituted for numbers in the input.
pub const INTERESTING_NUMBER_TEXT: [&str; 30] = [
    "0",
    "-0",
    "-1",
    "1",
    "2",
    "3",
    "2147483648",
    "4294967295",
    "4294967296",
    "268435456",
    "9007199254740993",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "-9223372036854775809",
    "1e308",
    "1e309",
    "-1e309",
    "1e-400",
    "0.5",
    "1.0",
    "-2.5",
    "NaN",
    "Infinity",
    "-Infinity",
    "00",
    "1.",
    "1e",
];

/// JSON tokens and the key names of every format under test, inserted at random places.
pub const DICTIONARY: [&str; 44] = [
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "\\",
    "\\u0000",
    "\\ud800",
    "null",
    "true",
    "false",
    "{}",
    "[]",
    "\"\"",
    "\"dtype\"",
    "\"shape\"",
    "\"data_offsets\"",
    "\"__metadata__\"",
    "\"BF16\"",
    "\"F16\"",
    "\"F32\"",
    "\"I8\"",
    "\"weight_map\"",
    "\"metadata\"",
    "\"../x.safetensors\"",
    "\"model_type\"",
    "\"phi3\"",
    "\"hidden_size\"",
    "\"num_attention_heads\"",
    "\"num_key_value_heads\"",
    "\"head_dim\"",
    "\"rope_scaling\"",
    "\"rope_parameters\"",
    "\"longrope\"",
    "\"short_factor\"",
    "\"long_factor\"",
    "\"format\"",
    "\"version\"",
    "\"prompt_tokens\"",
    "\"generated_tokens\"",
    "\"hf_top5\"",
    "\u{FEFF}",
];

/// Stacks 1 to 4 random mutations on `parent`; `corpus` supplies material for splicing.
/// The result is at most `max_len` bytes.
pub fn mutate(
    rng: &mut ChaCha8Rng,
    parent: &[u8],
    corpus: &[Vec<u8>],
    format: Format,
    max_len: usize,
) -> Vec<u8> {
    let mut out = parent.to_vec();
    let rounds = match rng.random_range(0..8) {
        0..=3 => 1,
        4..=5 => 2,
        6 => 3,
        _ => 4,
    };
    for _ in 0..rounds {
        mutate_once(rng, &mut out, corpus, format);
        out.truncate(max_len);
    }
    out
}

fn mutate_once(rng: &mut ChaCha8Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>], format: Format) {
    // JSON-aware mutations get about a third of the draws: they reach the validation code
    // behind the parser, which random bytes rarely do.
    match rng.random_range(0..18) {
        0 => flip_bit(rng, data),
        1 => overwrite_byte(rng, data),
        2 => insert_bytes(rng, data),
        3 => delete_range(rng, data),
        4 => interesting_int(rng, data),
        5 | 6 => number_text(rng, data),
        7 => duplicate_chunk(rng, data),
        8 => splice(rng, data, corpus),
        9 => crossover(rng, data, corpus),
        10 => truncate(rng, data),
        11 => insert_token(rng, data),
        12 if format == Format::Safetensors => length_prefix(rng, data),
        _ => {
            if !json::mutate(rng, data, format, corpus) {
                overwrite_byte(rng, data);
            }
        }
    }
}

fn flip_bit(rng: &mut ChaCha8Rng, data: &mut [u8]) {
    if data.is_empty() {
        return;
    }
    let i = rng.random_range(0..data.len());
    data[i] ^= 1 << rng.random_range(0..8);
}

fn overwrite_byte(rng: &mut ChaCha8Rng, data: &mut Vec<u8>) {
    if data.is_empty() {
        data.push(rng.random());
        return;
    }
    let i = rng.random_range(0..data.len());
    data[i] = match rng.random_range(0..4) {
        0 => rng.random(),
        1 => *[0u8, 0xFF, 0x7F, 0x80].choose(rng).unwrap_or(&0),
        _ => *b"{}[],:\"0123456789-.eE \\nt".choose(rng).unwrap_or(&b'0'),
    };
}

fn insert_bytes(rng: &mut ChaCha8Rng, data: &mut Vec<u8>) {
    let at = rng.random_range(0..=data.len());
    let n = rng.random_range(1..=8);
    let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
    data.splice(at..at, bytes);
}

fn delete_range(rng: &mut ChaCha8Rng, data: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    let start = rng.random_range(0..data.len());
    let max = (data.len() - start).min(64);
    let n = rng.random_range(1..=max);
    data.drain(start..start + n);
}

fn interesting_int(rng: &mut ChaCha8Rng, data: &mut Vec<u8>) {
    let value = *INTERESTING_INTS.choose(rng).unwrap_or(&0);
    let width = *[1usize, 2, 4, 8].choose(rng).unwrap_or(&8);
    let bytes = if rng.random_bool(0.5) {
        value.to_le_bytes()
    } else {
        value.to_be_bytes()
    };
    let bytes = if rng.random_bool(0.5) {
        &bytes[..width]
    } else {
        &bytes[8 - width..]
    };
    if data.len() < width {
        data.extend_from_slice(bytes);
        return;
    }
    let at = rng.random_range(0..=data.len() - width);
    data[at..at + width].copy_from_slice(bytes);
}

/// Replaces one run of number characters (digits, sign, point, exponent) with an interesting
/// number, or inserts one when the input has none.
fn number_text(rng: &mut ChaCha8Rng, data: &mut Vec<u8>) {
    let text = INTERESTING_NUMBER_TEXT
        .choose(rng)
        .copied()
        .unwrap_or("0")
        .as_bytes()
        .to_vec();
    let runs = number_runs(data);
    match runs.choose(rng) {
        Some(&(start, end)) => {
            data.splice(start..end, text);
        }
        None => {
            let at = rng.random_range(0..=data.len());
            data.splice(at..at, text);
        }
    }
}

/// Byte ranges of maximal runs that look like JSON numbers.
fn number_runs(data: &[u8]) -> Vec<(usize, usize)> {
    let is_num = |b: u8| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E');
    let mut runs = Vec::new();
    let mut i = 0;
    while i < data.len() {
        if data[i].is_ascii_digit()
            || (data[i] == b'-' && data.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            let start = i;
            while i < data.len() && is_num(data[i]) {
                i += 1;
            }
            runs.push((start, i));
        } else {
            i += 1;
        }
    }
    runs
}

fn duplicate_chunk(rng: &mut ChaCha8Rng, data: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    let start = rng.random_range(0..data.len());
    let n = rng.random_range(1..=(data.len() - start).min(256));
    let chunk = data[start..start + n].to_vec();
    let at = rng.random_range(0..=data.len());
    data.splice(at..at, chunk);
}

fn random_chunk<'a>(rng: &mut ChaCha8Rng, corpus: &'a [Vec<u8>]) -> Option<&'a [u8]> {
    let other = corpus.choose(rng)?;
    if other.is_empty() {
        return None;
    }
    let start = rng.random_range(0..other.len());
    let n = rng.random_range(1..=(other.len() - start).min(512));
    Some(&other[start..start + n])
}

/// Inserts or overwrites with a chunk of another corpus entry.
fn splice(rng: &mut ChaCha8Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    let Some(chunk) = random_chunk(rng, corpus) else {
        return;
    };
    let at = rng.random_range(0..=data.len());
    if rng.random_bool(0.5) {
        data.splice(at..at, chunk.iter().copied());
    } else {
        let end = (at + chunk.len()).min(data.len());
        data.splice(at..end, chunk.iter().copied());
    }
}

/// A prefix of this input followed by a suffix of another.
fn crossover(rng: &mut ChaCha8Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    let Some(other) = corpus.choose(rng) else {
        return;
    };
    let cut = rng.random_range(0..=data.len());
    let from = rng.random_range(0..=other.len());
    data.truncate(cut);
    data.extend_from_slice(&other[from..]);
}

fn truncate(rng: &mut ChaCha8Rng, data: &mut Vec<u8>) {
    let keep = rng.random_range(0..=data.len());
    data.truncate(keep);
}

fn insert_token(rng: &mut ChaCha8Rng, data: &mut Vec<u8>) {
    let token = DICTIONARY.choose(rng).copied().unwrap_or("null");
    let at = rng.random_range(0..=data.len());
    data.splice(at..at, token.bytes());
}

/// Rewrites the 8-byte header length of a safetensors file: an interesting value, or the true
/// header length nudged by a few bytes.
fn length_prefix(rng: &mut ChaCha8Rng, data: &mut Vec<u8>) {
    if data.len() < 8 {
        data.resize(8, 0);
    }
    let mut current = [0u8; 8];
    current.copy_from_slice(&data[..8]);
    let current = u64::from_le_bytes(current);
    let value = if rng.random_bool(0.5) {
        *INTERESTING_INTS.choose(rng).unwrap_or(&0)
    } else {
        let delta = rng.random_range(1..=16u64);
        if rng.random_bool(0.5) {
            current.wrapping_add(delta)
        } else {
            current.wrapping_sub(delta)
        }
    };
    data[..8].copy_from_slice(&value.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn mutations_are_deterministic_under_a_seed_and_respect_max_len() {
        let parent = br#"{"a": [1, 2, 3], "b": {"c": "d"}}"#.to_vec();
        let corpus = vec![parent.clone(), b"[1e5, null]".to_vec()];
        let run = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..200)
                .map(|_| mutate(&mut rng, &parent, &corpus, Format::Json, 40))
                .collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7));
        assert_ne!(a, run(8));
        assert!(a.iter().all(|m| m.len() <= 40));
        // Most mutants differ from the parent.
        let changed = a.iter().filter(|m| **m != parent).count();
        assert!(changed > 150, "only {changed} of 200 mutants changed");
    }

    #[test]
    fn number_runs_find_json_numbers() {
        let runs = number_runs(br#"{"a": -12, "b": [3.5e2], "c": "x-y"}"#);
        assert_eq!(runs, vec![(6, 9), (17, 22)]);
    }

    #[test]
    fn length_prefix_rewrites_the_first_eight_bytes() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut data = vec![0u8; 4];
        length_prefix(&mut rng, &mut data);
        assert_eq!(data.len(), 8);
        let mut data = [2u64.to_le_bytes().to_vec(), b"{}".to_vec()].concat();
        let before = data.clone();
        length_prefix(&mut rng, &mut data);
        assert_eq!(&data[8..], &before[8..]);
        assert_ne!(&data[..8], &before[..8]);
    }
}
