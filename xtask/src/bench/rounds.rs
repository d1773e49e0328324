//! `--rounds N`: the whole measurement (every configuration of ours, then every peer) taken N
//! times in turn, each figure's best kept. On a machine whose memory bandwidth drifts between
//! phases minutes long (a virtual machine), one pass times each engine in whatever phase its
//! turn falls; taking every engine's best over interleaved rounds compares them in their best
//! phase alike. Every round's own figures stay in the report ([`RoundFigures`]).

use serde::Serialize;

use super::peer;
use super::report::Run;

/// One configuration's timed figures in one round.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RoundFigures {
    /// `2x4 accuracy`, `HF CPU bf16`, `llama.cpp Q8_0`.
    pub label: String,
    /// (prompt tokens, tokens per second).
    pub prefill_tok_s: Vec<(usize, f64)>,
    /// (context, milliseconds per token).
    pub decode_ms_per_token: Vec<(usize, f64)>,
    /// Seconds of the load, when timed.
    pub load_s: Option<f64>,
}

/// Our runs' figures of one round.
pub fn run_figures(runs: &[Run]) -> Vec<RoundFigures> {
    runs.iter()
        .map(|r| RoundFigures {
            label: format!("{} {}", r.mesh, r.fidelity),
            prefill_tok_s: r.prefill.iter().map(|p| (p.tokens, p.tok_s)).collect(),
            decode_ms_per_token: r
                .decode
                .iter()
                .map(|d| (d.context, d.ms_per_token))
                .collect(),
            load_s: Some(r.load_s),
        })
        .collect()
}

/// The peers' figures of one round.
pub fn peer_figures(peers: &[serde_json::Value]) -> Vec<RoundFigures> {
    peers
        .iter()
        .map(|p| {
            let f = |key: &str| p.get(key).and_then(serde_json::Value::as_f64);
            let s = |key: &str| {
                p.get(key)
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("?")
            };
            let context = p
                .get("decode_context")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0) as usize;
            RoundFigures {
                label: format!("{} {}", s("engine"), s("dtype")),
                prefill_tok_s: peer::prefill_lens(p)
                    .into_iter()
                    .filter_map(|t| Some((t as usize, peer::prefill_tok_s(p, t as usize)?)))
                    .collect(),
                decode_ms_per_token: f("decode_ms_per_token")
                    .map(|ms| (context, ms))
                    .into_iter()
                    .collect(),
                load_s: f("load_s"),
            }
        })
        .collect()
}

/// Folds a later round's runs into `best` (the same configurations in the same order): the
/// faster prefill per prompt length, the faster decode per context and batched decode, the
/// faster load (with its `cat`), the larger peak RSS.
pub fn keep_best_runs(best: &mut [Run], round: Vec<Run>) {
    for (b, r) in best.iter_mut().zip(round) {
        debug_assert_eq!((&b.mesh, &b.fidelity), (&r.mesh, &r.fidelity));
        for p in r.prefill {
            match b.prefill.iter_mut().find(|q| q.tokens == p.tokens) {
                Some(q) if q.tok_s >= p.tok_s => {}
                Some(q) => *q = p,
                None => b.prefill.push(p),
            }
        }
        for d in r.decode {
            match b.decode.iter_mut().find(|e| e.context == d.context) {
                Some(e) if e.ms_per_token <= d.ms_per_token => {}
                Some(e) => *e = d,
                None => b.decode.push(d),
            }
        }
        match (&mut b.batch, r.batch) {
            (Some(x), Some(y)) if y.ms_per_step < x.ms_per_step => *x = y,
            (x @ None, y) => *x = y,
            _ => {}
        }
        if r.load_s < b.load_s {
            (b.load_s, b.load_over_cat, b.cat) = (r.load_s, r.load_over_cat, r.cat);
        }
        b.peak_rss_bytes = b.peak_rss_bytes.max(r.peak_rss_bytes);
    }
}

/// Folds a later round's peers into `best` (the same peers in the same order): per prompt
/// length the faster prefill entry, the faster decode, the faster load, the larger peak RSS.
pub fn keep_best_peers(best: &mut [serde_json::Value], round: Vec<serde_json::Value>) {
    use serde_json::Value;
    for (b, r) in best.iter_mut().zip(round) {
        let tok_s = |e: &Value| e.get("tok_s").and_then(Value::as_f64).unwrap_or(0.0);
        if let (Some(Value::Array(mut merged)), Some(Value::Array(rp))) =
            (b.get("prefill").cloned(), r.get("prefill"))
        {
            for e in rp {
                match merged
                    .iter_mut()
                    .find(|m| m.get("tokens").is_some() && m.get("tokens") == e.get("tokens"))
                {
                    Some(m) if tok_s(m) >= tok_s(e) => {}
                    Some(m) => *m = e.clone(),
                    None => merged.push(e.clone()),
                }
            }
            b["prefill"] = Value::Array(merged);
        }
        for (key, lower_is_better) in [
            ("decode_ms_per_token", true),
            ("load_s", true),
            ("peak_rss_bytes", false),
        ] {
            let (x, y) = (
                b.get(key).and_then(Value::as_f64),
                r.get(key).and_then(Value::as_f64),
            );
            if let (Some(x), Some(y)) = (x, y)
                && ((lower_is_better && y < x) || (!lower_is_better && y > x))
            {
                b[key] = r[key].clone();
            }
        }
    }
}

/// The report's lines of every round's figures (nothing for one round).
pub fn lines(rounds: &[Vec<RoundFigures>]) -> String {
    if rounds.len() < 2 {
        return String::new();
    }
    let mut out = format!(
        "rounds: the table keeps each figure's best of {} interleaved rounds (ours, then the peers, in turn); each round's:\n",
        rounds.len()
    );
    let Some(first) = rounds.first() else {
        return out;
    };
    for (i, config) in first.iter().enumerate() {
        // One figure (`key` in the list `of` picks) in every round, " / " between.
        let per_round = |of: fn(&RoundFigures) -> &[(usize, f64)], key: usize| {
            rounds
                .iter()
                .map(|r| {
                    r.get(i)
                        .and_then(|f| of(f).iter().find(|(k, _)| *k == key))
                        .map_or("-".to_string(), |&(_, v)| fmt(v))
                })
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let parts: Vec<String> = (config.prefill_tok_s.iter())
            .map(|&(len, _)| format!("prefill {len} {} tok/s", per_round(prefill_of, len)))
            .chain(
                (config.decode_ms_per_token.iter())
                    .map(|&(ctx, _)| format!("decode@{ctx} {} ms", per_round(decode_of, ctx))),
            )
            .collect();
        out.push_str(&format!("  {}: {}\n", config.label, parts.join("; ")));
    }
    out
}

fn prefill_of(f: &RoundFigures) -> &[(usize, f64)] {
    &f.prefill_tok_s
}

fn decode_of(f: &RoundFigures) -> &[(usize, f64)] {
    &f.decode_ms_per_token
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
