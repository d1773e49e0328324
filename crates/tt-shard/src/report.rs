//! The plan as a text report: model, per-device shards, ranges, memory and collectives.

use std::fmt::{self, Display, Formatter, Write as _};
use std::ops::Range;

use crate::collective::CollectiveOp;
use crate::placement::WeightKind;
use crate::plan::Plan;

/// `n` with thousands separators (`1,128,140,800`).
pub fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in decimal units (`1.128 GB`, `197.0 MB`, `6.1 kB`, `512 B`).
pub fn fmt_bytes(n: u64) -> String {
    let x = n as f64;
    if n >= 1_000_000_000 {
        format!("{:.3} GB", x / 1e9)
    } else if n >= 1_000_000 {
        format!("{:.1} MB", x / 1e6)
    } else if n >= 1_000 {
        format!("{:.1} kB", x / 1e3)
    } else {
        format!("{n} B")
    }
}

fn shape(s: &[usize]) -> String {
    let parts: Vec<_> = s.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

fn range(r: &Range<usize>) -> String {
    format!("{}..{}", r.start, r.end)
}

/// A left-aligned table; columns listed in `right` are right-aligned.
fn table(
    f: &mut Formatter<'_>,
    header: &[&str],
    rows: &[Vec<String>],
    right: &[usize],
) -> fmt::Result {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |f: &mut Formatter<'_>, cells: &[String]| -> fmt::Result {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            if right.contains(&i) {
                let _ = write!(s, "{cell:>w$}");
            } else {
                let _ = write!(s, "{cell:<w$}");
            }
        }
        writeln!(f, "  {}", s.trim_end())
    };
    line(f, &header.iter().map(|h| h.to_string()).collect::<Vec<_>>())?;
    for row in rows {
        line(f, row)?;
    }
    Ok(())
}

impl Display for Plan {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let d = self.dims();
        let p = self.profile();
        let n = self.num_devices();
        let heads = self.heads();
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        writeln!(
            f,
            "Tensor-parallel plan: mesh {} ({n} devices, row-major), 1-D over all devices",
            self.mesh()
        )?;
        let budget = p.dram_bytes.map_or("unbounded".to_string(), |b| {
            format!("{} B ({})", group_digits(b), fmt_bytes(b))
        });
        writeln!(
            f,
            "Profile {}: memory {budget} per device, tile {} (padding {}), rotary multiple {}",
            p.name,
            p.tile,
            if p.tile_padding { "on" } else { "off" },
            p.rotary_multiple
        )?;
        writeln!(
            f,
            "Model: hidden {}, layers {}, heads {}, kv_heads {}, head_dim {}, intermediate {}, vocab {}, \
             {} B/value, qkv {:?}, gate_up {:?}, tied embeddings {}",
            d.hidden,
            d.layers,
            d.heads,
            d.kv_heads,
            d.head_dim,
            d.intermediate,
            d.vocab,
            d.dtype_bytes,
            d.qkv_layout,
            d.gate_up_layout,
            yes_no(d.tied_embeddings)
        )?;
        writeln!(f)?;

        writeln!(f, "Per device:")?;
        let kv_note = if heads.kv_replicated() {
            format!("each KV head replicated on {} devices", heads.kv_copies)
        } else {
            "no KV replication".to_string()
        };
        if heads.is_padded() {
            writeln!(
                f,
                "  heads: {} query + {} KV slots, local GQA group {} (model group {}); padded with \
                 zero heads: {} query + {} KV over the mesh; each KV head on up to {} devices",
                heads.heads_per_device,
                heads.kv_heads_per_device,
                heads.local_group(),
                heads.group,
                heads.q_padding(),
                heads.kv_padding(),
                heads.kv_copies
            )?;
        } else {
            writeln!(
                f,
                "  heads: {} query + {} KV ({kv_note}), GQA group {}",
                heads.heads_per_device, heads.kv_heads_per_device, heads.group
            )?;
        }
        let inter = self.intermediate_split();
        let inter_pad = if inter.is_exact() {
            String::new()
        } else {
            format!(
                " (padded to {} = {} zero gate/up rows and down columns at the end)",
                inter.padded_total(),
                inter.padding()
            )
        };
        writeln!(
            f,
            "  intermediate: {}{inter_pad} -> {} per device{}",
            inter.total,
            inter.per_part,
            pad_note(p.pad(inter.per_part), inter.per_part)
        )?;
        let vocab = self.vocab_split();
        let vocab_pad = if vocab.is_exact() {
            String::new()
        } else {
            format!(
                " (padded to {} = {} rows of zeros at the end)",
                vocab.padded_total(),
                vocab.padding()
            )
        };
        writeln!(
            f,
            "  vocab: {}{vocab_pad} -> {} per device{}",
            vocab.total,
            vocab.per_part,
            pad_note(p.pad(vocab.per_part), vocab.per_part)
        )?;
        if self.rotary_dim() != d.head_dim {
            writeln!(
                f,
                "  rotary: head_dim {} padded to {} for the rotary op (each half {} -> {}), sliced back after",
                d.head_dim,
                self.rotary_dim(),
                d.head_dim / 2,
                self.rotary_dim() / 2
            )?;
        }
        writeln!(f)?;
        if heads.is_padded() {
            self.head_table(f)?;
        }

        writeln!(f, "Weights (bytes per device cover all `count` instances):")?;
        let rows: Vec<Vec<String>> = self
            .weights()
            .iter()
            .map(|w| {
                vec![
                    w.kind.to_string(),
                    w.source.to_string(),
                    w.placement.to_string(),
                    w.count.to_string(),
                    shape(&w.logical_shape),
                    shape(&w.device_shape),
                    shape(&w.padded_shape),
                    group_digits(w.stored_bytes_per_device),
                ]
            })
            .collect();
        table(
            f,
            &[
                "weight",
                "source",
                "placement",
                "count",
                "logical",
                "device",
                "padded",
                "bytes/device",
            ],
            &rows,
            &[3, 7],
        )?;
        let m0 = self.memory().first();
        if let Some(m) = m0 {
            let non_layer = |k: WeightKind| self.weight(k).map_or(0, |w| w.stored_bytes_per_device);
            writeln!(
                f,
                "  per device: {} B ({}) = layers {} + embedding {} + lm_head {} + final_norm {}",
                group_digits(m.weight_bytes),
                fmt_bytes(m.weight_bytes),
                group_digits(m.layer_weight_bytes),
                group_digits(non_layer(WeightKind::Embedding)),
                group_digits(non_layer(WeightKind::LmHead)),
                group_digits(non_layer(WeightKind::FinalNorm)),
            )?;
        }
        let t = self.totals();
        writeln!(
            f,
            "  all devices: {} B stored = {} checkpoint + {} padding + {} replication",
            group_digits(t.stored_bytes),
            group_digits(t.checkpoint_bytes),
            group_digits(t.padding_bytes),
            group_digits(t.replication_bytes)
        )?;
        let replicated: Vec<_> = self
            .weights()
            .iter()
            .filter(|w| w.copies > 1 || !w.in_checkpoint)
            .map(|w| {
                let kv = matches!(w.kind, WeightKind::K | WeightKind::V);
                if kv && heads.is_padded() {
                    format!("{} (up to x{})", w.kind, w.copies)
                } else if w.in_checkpoint {
                    format!("{} (x{})", w.kind, w.copies)
                } else {
                    format!("{} (tied: a second copy of {})", w.kind, w.source)
                }
            })
            .collect();
        if !replicated.is_empty() {
            writeln!(f, "  replicated: {}", replicated.join(", "))?;
        }
        writeln!(f)?;

        writeln!(
            f,
            "Checkpoint ranges per device (rows/cols of the source tensor):"
        )?;
        if heads.is_padded() {
            writeln!(
                f,
                "  (q/k/v rows and o cols: the block of the device's real heads; its shard is \
                 built head by head from the sources above, zeros for `-`)"
            )?;
        }
        let kinds = [
            (WeightKind::Q, true),
            (WeightKind::K, true),
            (WeightKind::V, true),
            (WeightKind::O, false),
            (WeightKind::Gate, true),
            (WeightKind::Up, true),
            (WeightKind::Down, false),
            (WeightKind::LmHead, true),
        ];
        let header: Vec<String> = std::iter::once("device".to_string())
            .chain(
                kinds
                    .iter()
                    .map(|(k, rows)| format!("{k} {}", if *rows { "rows" } else { "cols" })),
            )
            .collect();
        let rows: Vec<Vec<String>> = (0..n)
            .map(|dev| {
                std::iter::once(dev.to_string())
                    .chain(kinds.iter().map(|(k, rows)| {
                        self.shard_of(*k, dev).map_or("-".to_string(), |s| {
                            range(&if *rows { s.rows() } else { s.cols() })
                        })
                    }))
                    .collect()
            })
            .collect();
        let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
        table(f, &header_refs, &rows, &[0])?;
        writeln!(f)?;

        let kv = self.kv_cache();
        let o = self.options();
        writeln!(
            f,
            "KV cache per device (seq_len {}, batch {}):",
            o.seq_len, o.batch
        )?;
        writeln!(
            f,
            "  {} tensors (K and V per layer) of {} (padded {}), {} B per token per batch row, {} B ({}) in all{}",
            kv.tensors,
            shape(&kv.shape),
            shape(&kv.padded_shape),
            group_digits(kv.bytes_per_token),
            group_digits(kv.bytes),
            fmt_bytes(kv.bytes),
            if kv.copies > 1 && heads.is_padded() {
                format!(", each KV head on up to {} devices", kv.copies)
            } else if kv.copies > 1 {
                format!(", each KV head on {} devices", kv.copies)
            } else {
                String::new()
            }
        )?;
        let zero_kv: Vec<String> = self
            .memory()
            .iter()
            .filter(|m| m.kv_cache_padding_bytes > 0)
            .map(|m| format!("{}: {}", m.device, group_digits(m.kv_cache_padding_bytes)))
            .collect();
        if !zero_kv.is_empty() {
            writeln!(f, "  of which zero KV heads (B): {}", zero_kv.join(", "))?;
        }
        if let Some(m) = m0 {
            let of_budget = m.budget.map_or(String::new(), |b| {
                format!(
                    " of {} B ({:.1}% used)",
                    group_digits(b),
                    100.0 * m.total_bytes as f64 / b.max(1) as f64
                )
            });
            writeln!(
                f,
                "Memory per device: weights {} + KV cache {} = {} B ({}){of_budget}",
                group_digits(m.weight_bytes),
                group_digits(m.kv_cache_bytes),
                group_digits(m.total_bytes),
                fmt_bytes(m.total_bytes)
            )?;
        }
        writeln!(f)?;

        let c = self.collectives();
        writeln!(f, "Collectives per token (bytes at batch {}):", o.batch)?;
        let rows: Vec<Vec<String>> = c
            .steps
            .iter()
            .map(|s| {
                vec![
                    match s.op {
                        CollectiveOp::AllReduce => "all_reduce".to_string(),
                        CollectiveOp::Gather => "gather (concat)".to_string(),
                    },
                    format!("after {}", s.after),
                    s.calls_per_token.to_string(),
                    s.values_per_token.to_string(),
                    group_digits(s.bytes_per_call),
                    group_digits(s.ring_bytes_per_device),
                ]
            })
            .collect();
        table(
            f,
            &[
                "op",
                "where",
                "calls",
                "values",
                "bytes/call",
                "ring bytes sent/device/call",
            ],
            &rows,
            &[2, 3, 4, 5],
        )?;
        writeln!(
            f,
            "  {} all_reduces per token, {} B per decode step{}",
            c.all_reduces_per_token,
            group_digits(c.all_reduce_bytes_per_step),
            if c.noop {
                " (single device: collectives are no-ops)"
            } else {
                ""
            }
        )
    }
}

impl Plan {
    /// The per-device head table of a padded plan.
    fn head_table(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let heads = self.heads();
        let count = |slots: usize, zero: usize| {
            if zero == 0 {
                slots.to_string()
            } else {
                format!("{slots} ({zero} padded)")
            }
        };
        let sources = |s: &[Option<usize>]| {
            let parts: Vec<_> = s
                .iter()
                .map(|x| x.map_or("-".to_string(), |h| h.to_string()))
                .collect();
            parts.join(" ")
        };
        writeln!(
            f,
            "Heads per device (`-` = a zero head: zero Q/K/V rows, zero o_proj columns; local q \
             head j uses local kv head j / {}):",
            heads.local_group()
        )?;
        let rows: Vec<Vec<String>> = heads
            .devices
            .iter()
            .zip(self.memory())
            .enumerate()
            .map(|(dev, (h, m))| {
                vec![
                    dev.to_string(),
                    count(heads.heads_per_device, h.q_padding()),
                    count(heads.kv_heads_per_device, h.kv_padding()),
                    sources(&h.q_sources),
                    sources(&h.kv_sources),
                    group_digits(m.head_padding_weight_bytes),
                    group_digits(m.kv_cache_padding_bytes),
                ]
            })
            .collect();
        table(
            f,
            &[
                "device",
                "q heads",
                "kv heads",
                "q sources",
                "kv sources",
                "zero-head weight B",
                "zero-head KV cache B",
            ],
            &rows,
            &[0, 5, 6],
        )?;
        writeln!(f)
    }
}

fn pad_note(padded: usize, logical: usize) -> String {
    if padded == logical {
        String::new()
    } else {
        format!(" (tile-padded to {padded})")
    }
}
