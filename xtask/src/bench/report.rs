//! The benchmark's figures: one [`Run`] per mesh x fidelity (with the kernel paths it took), the
//! machine probes, the `cat` times and the peers' figures (HF transformers, llama.cpp),
//! serialised as JSON (`--json`) or printed as Markdown tables.

use serde::Serialize;

use super::cat::Cat;
use super::counts::Counts;
use super::cpu::Cpu;
use super::llama_bench;
use super::paths::{KernelNames, RunPaths};
use super::peer;

/// Everything one `cargo xtask bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The checkpoint directory.
    pub model: String,
    /// The CPU of the run.
    pub cpu: Cpu,
    /// What the kernel paths of [`Run::paths`] stand for on this machine.
    pub kernels: KernelNames,
    /// Parameters of the model (the LM head counted unless tied).
    pub parameters: u64,
    /// Sizes the effective figures divide by.
    pub counts: Counts,
    /// Weight bytes one decode step reads (every matrix once, bf16).
    pub decode_weight_bytes: u64,
    /// Rayon threads (the kernels and the probes use all of them).
    pub threads: usize,
    /// Prompt lengths prefilled (table columns).
    pub prefill_lens: Vec<usize>,
    /// Contexts decoded at with batch 1 (table columns).
    pub decode_contexts: Vec<usize>,
    /// Users of the batched decode (0: not run).
    pub batch: usize,
    /// Tokens in each user's cache before the batched decode.
    pub batch_context: usize,
    /// Decode steps per measurement (the median is reported).
    pub decode_steps: usize,
    /// Machine probes sampled in the same run.
    pub probes: Probes,
    /// The checkpoint files made resident before anything is timed (what a first load does).
    pub pages: Pages,
    /// Sequential read of the checkpoint files, the yardstick of the bf16/f32 loads.
    pub cat: Cat,
    /// One entry per mesh x fidelity.
    pub runs: Vec<Run>,
    /// HF transformers on the same checkpoint (`--peer-hf`), as scripts/hf_bench.py printed it,
    /// and llama.cpp (`--peer-llama-cpp`, `llama_bench::peer_value`); each has a `prefill` array
    /// of `{tokens, tok_s, ..}`, one per prompt length, as [`Run::prefill`].
    pub peers: Vec<serde_json::Value>,
    /// Every round's own figures (`--rounds`): ours, then the peers', per round.
    pub rounds: Vec<Vec<super::rounds::RoundFigures>>,
}

/// Machine probes (tt_ops::kernels::probe).
#[derive(Debug, Clone, Serialize)]
pub struct Probes {
    /// Buffer size of the bandwidth probe.
    pub read_bandwidth_bytes: usize,
    /// Plain-sum read bandwidth before the first configuration, GB/s.
    pub read_bandwidth_gbs_before: f64,
    /// The same after the last configuration, GB/s.
    pub read_bandwidth_gbs_after: f64,
    /// Register-only FMA peak, GFLOP/s.
    pub fma_peak_gflops: f64,
}

/// The checkpoint files made resident once before the timed loads
/// (`phi3_model::Checkpoint::make_resident`): a file cached on small pages is read again from
/// disk into 2 MiB pages there, as the first load of a model does.
#[derive(Debug, Clone, Serialize)]
pub struct Pages {
    /// Wall seconds.
    pub seconds: f64,
    /// Bytes of the files.
    pub bytes: u64,
    /// Bytes mapped on 2 MiB pages afterwards.
    pub huge_bytes: u64,
    /// Files read again into 2 MiB pages.
    pub reread_files: usize,
}

/// Where a peak RSS figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RssScope {
    /// VmHWM reset before the load (`/proc/self/clear_refs`): this configuration's peak.
    Config,
    /// VmHWM could not be reset: the process's peak so far.
    Process,
}

/// The figures of one mesh x fidelity.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Mesh shape (`2x4`).
    pub mesh: String,
    /// `bf16` or `f32`.
    pub fidelity: String,
    /// Seconds to open the checkpoint and load it onto the mesh.
    pub load_s: f64,
    /// `load_s` over the seconds of [`Run::cat`] (the issue asks for at most 2).
    pub load_over_cat: f64,
    /// The `cat` of the files this load reads: the checkpoint's, or the packed cache's in a
    /// packed preset.
    pub cat: Cat,
    /// Seconds of the first decode step after the load (memory-mapped weights fault in here).
    pub first_step_s: f64,
    /// Peak resident set (VmHWM), if the OS reports it.
    pub peak_rss_bytes: Option<u64>,
    /// What the peak covers.
    pub peak_rss_scope: RssScope,
    /// One entry per prompt length.
    pub prefill: Vec<Prefill>,
    /// One entry per context, batch 1.
    pub decode: Vec<Decode>,
    /// The batched decode, if run.
    pub batch: Option<BatchDecode>,
    /// The kernels each kind of op took, per phase, with the calls counted in this run.
    pub paths: RunPaths,
}

/// One timed prefill.
#[derive(Debug, Clone, Serialize)]
pub struct Prefill {
    /// Prompt tokens.
    pub tokens: usize,
    /// Wall seconds of the call.
    pub seconds: f64,
    /// Tokens per second.
    pub tok_s: f64,
    /// Matmul GFLOP/s (every layer matrix for every token, the LM head once).
    pub matmul_gflops: f64,
    /// The same with the attention FLOPs added.
    pub gflops_with_attention: f64,
}

/// Decode steps at one context, batch 1.
#[derive(Debug, Clone, Serialize)]
pub struct Decode {
    /// Tokens in the cache before the first step.
    pub context: usize,
    /// Seconds of every step.
    pub steps_s: Vec<f64>,
    /// Median milliseconds per token.
    pub ms_per_token: f64,
    /// Decode weight bytes over the median step, GB/s.
    pub weight_gbs: f64,
    /// KV cache bytes one step reads at this context.
    pub kv_bytes: u64,
    /// Weights plus KV cache bytes over the median step, GB/s.
    pub weight_and_kv_gbs: f64,
}

/// Decode steps of several users together.
#[derive(Debug, Clone, Serialize)]
pub struct BatchDecode {
    /// Users.
    pub batch: usize,
    /// Tokens in each user's cache before the first step.
    pub context: usize,
    /// Seconds of every step.
    pub steps_s: Vec<f64>,
    /// Median milliseconds per step (one token for every user).
    pub ms_per_step: f64,
    /// Tokens per second over all users.
    pub tok_s: f64,
    /// Decode weight bytes over the median step, GB/s.
    pub weight_gbs: f64,
}

impl Report {
    /// The Markdown table (one row per run, then the peers) and the probe and method lines.
    pub fn table(&self) -> String {
        let mut header: Vec<String> = [
            "mesh",
            "fidelity",
            "load s",
            "load/cat",
            "1st step s",
            "peak RSS GB",
        ]
        .map(String::from)
        .to_vec();
        for len in &self.prefill_lens {
            header.push(format!("prefill {len} tok/s"));
            header.push("GFLOP/s".to_string());
        }
        for ctx in &self.decode_contexts {
            header.push(format!("decode@{ctx} ms/tok"));
            header.push("GB/s".to_string());
        }
        if self.batch > 0 {
            header.push(format!(
                "batch {}@{} ms/step",
                self.batch, self.batch_context
            ));
            header.push("tok/s".to_string());
        }
        let mut rows: Vec<Vec<String>> = self.runs.iter().map(|r| self.run_row(r)).collect();
        rows.extend(self.peers.iter().map(|p| self.peer_row(p)));

        let mut out = markdown(&header, &rows, 2);
        let gb = |b: u64| b as f64 / 1e9;
        out.push('\n');
        out.push_str(&self.cpu.line());
        let p = &self.probes;
        out.push_str(&format!(
            "read bandwidth (plain parallel sum over {} GB, {} threads): {} GB/s before, {} GB/s after\n",
            num(gb(p.read_bandwidth_bytes as u64)),
            self.threads,
            num(p.read_bandwidth_gbs_before),
            num(p.read_bandwidth_gbs_after),
        ));
        out.push_str(&format!(
            "FMA peak (f32 on registers, {} threads): {} GFLOP/s\n",
            self.threads,
            num(p.fma_peak_gflops)
        ));
        let pg = &self.pages;
        out.push_str(&format!(
            "before the loads: checkpoint made resident in {} s ({} files re-read into 2 MiB pages; {} of {} GB on 2 MiB pages)\n",
            num(pg.seconds),
            pg.reread_files,
            num(gb(pg.huge_bytes)),
            num(gb(pg.bytes)),
        ));
        out.push_str(&self.cat_lines());
        out.push_str(
            "1st step s: the first decode step after the load, before any timed call (memory-mapped weights are faulted in there)\n",
        );
        out.push_str(&format!(
            "decode GB/s = {} GB of bf16 weights read per step / median step ({} steps); the KV cache read is in the JSON\n",
            num(gb(self.decode_weight_bytes)),
            self.decode_steps,
        ));
        out.push_str(
            "prefill GFLOP/s = 2 x matmul params x tokens (+ the LM head once) / s; attention FLOPs are not counted here (JSON: gflops_with_attention)\n",
        );
        out.push_str(
            "decode@C: the cache is marked as holding C rows without computing them (KvCache::assume_filled); a step attends over C rows whatever their values (never written, those rows may stay out of the peak RSS)\n",
        );
        let scope = match self.runs.first().map(|r| r.peak_rss_scope) {
            Some(RssScope::Process) => "the process's VmHWM so far (it could not be reset)",
            _ => {
                "VmHWM of each configuration (reset through /proc/self/clear_refs before its load)"
            }
        };
        out.push_str(&format!("peak RSS: {scope}\n"));
        if let Some(line) = self.llama_line() {
            out.push_str(&line);
        }
        out.push_str(&super::rounds::lines(&self.rounds));
        out.push('\n');
        out.push_str(&super::paths::table(
            self.runs
                .iter()
                .map(|r| (r.mesh.as_str(), r.fidelity.as_str(), &r.paths)),
        ));
        out.push_str(&self.kernels.legend());
        out
    }

    /// The `cat` yardsticks: the checkpoint's, then each run's own when it read other files.
    fn cat_lines(&self) -> String {
        let line = |label: &str, c: &Cat| {
            format!(
                "cat{label} ({}, sequential File::read): {} s ({} GB/s)",
                c.what(),
                num(c.seconds),
                num(c.bytes as f64 / 1e9 / c.seconds.max(f64::MIN_POSITIVE)),
            )
        };
        let mut out = line("", &self.cat);
        out.push_str("; load/cat = load s / the cat of the files that run's load reads: this one for bf16/f32, the packed cache's for packed presets\n");
        for r in &self.runs {
            if r.cat.source != self.cat.source {
                out.push_str(&line(&format!(" for {} {}", r.mesh, r.fidelity), &r.cat));
                out.push('\n');
            }
        }
        out
    }

    /// How the llama.cpp rows were measured, if there are any.
    fn llama_line(&self) -> Option<String> {
        let p = self.peers.iter().find(|p| {
            p.get("engine").and_then(serde_json::Value::as_str) == Some(llama_bench::ENGINE)
        })?;
        let u = |key: &str| p.get(key).and_then(serde_json::Value::as_u64).unwrap_or(0);
        let s = |key: &str| {
            p.get(key)
                .and_then(serde_json::Value::as_str)
                .unwrap_or("?")
        };
        let (depth, steps) = (u("decode_context"), u("decode_steps"));
        let prompts: Vec<String> = peer::prefill_lens(p)
            .iter()
            .map(ToString::to_string)
            .collect();
        let pp: Vec<String> = prompts.iter().map(|n| format!("pp{n}")).collect();
        // Rows whose --repack 1 run failed (llama_bench::run fell back to --repack 0).
        let unpacked: Vec<&str> = self
            .peers
            .iter()
            .filter(|q| q.get("engine") == p.get("engine"))
            .filter(|q| q.get("repack").and_then(serde_json::Value::as_bool) == Some(false))
            .map(|q| {
                q.get("dtype")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("?")
            })
            .collect();
        let repack = match unpacked.is_empty() {
            true => "--repack 1".to_string(),
            false => format!(
                "--repack 1 except {}: --repack 0 (--repack 1, llama.cpp's AMX / repacked kernels, failed here)",
                unpacked.join(", ")
            ),
        };
        Some(format!(
            "llama.cpp rows: llama-bench (build {}, {} threads, {repack}), mean of {} runs each: prefill = {} into an empty cache (one run, -p {}); decode = tg{steps} after {depth} tokens of context (-d {depth}), i.e. at contexts {depth}..{}; GGUF converted from this checkpoint (placeholder vocabulary)\n",
            s("build_commit"),
            u("threads"),
            u("repetitions"),
            pp.join(", "),
            prompts.join(","),
            depth + steps,
        ))
    }

    fn run_row(&self, r: &Run) -> Vec<String> {
        let mut row = vec![
            r.mesh.clone(),
            r.fidelity.clone(),
            num(r.load_s),
            format!("{}x", num(r.load_over_cat)),
            num(r.first_step_s),
            r.peak_rss_bytes
                .map_or("-".to_string(), |b| num(b as f64 / 1e9)),
        ];
        for len in &self.prefill_lens {
            match r.prefill.iter().find(|p| p.tokens == *len) {
                Some(p) => row.extend([num(p.tok_s), num(p.matmul_gflops)]),
                None => row.extend(dashes(2)),
            }
        }
        for ctx in &self.decode_contexts {
            match r.decode.iter().find(|d| d.context == *ctx) {
                Some(d) => row.extend([num(d.ms_per_token), num(d.weight_gbs)]),
                None => row.extend(dashes(2)),
            }
        }
        if self.batch > 0 {
            match &r.batch {
                Some(b) => row.extend([num(b.ms_per_step), num(b.tok_s)]),
                None => row.extend(dashes(2)),
            }
        }
        row
    }

    /// A row of a peer's figures (one prefill column pair per prompt length, as ours), its
    /// effective rates counted as ours are.
    fn peer_row(&self, peer: &serde_json::Value) -> Vec<String> {
        let f = |key: &str| peer.get(key).and_then(serde_json::Value::as_f64);
        let context = f("decode_context").unwrap_or(0.0) as usize;
        // llama.cpp rows give tokens per second only (its bytes and FLOPs are not ours).
        let llama =
            peer.get("engine").and_then(serde_json::Value::as_str) == Some(llama_bench::ENGINE);
        let rate = |x: f64| if llama { "-".to_string() } else { num(x) };
        let mut row = vec![
            match llama {
                true => llama_bench::ENGINE.to_string(),
                false => "HF CPU".to_string(),
            },
            peer.get("dtype")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("?")
                .to_string(),
            f("load_s").map_or("-".to_string(), num),
            f("load_s").map_or("-".to_string(), |s| {
                format!("{}x", num(s / self.cat.seconds.max(f64::MIN_POSITIVE)))
            }),
            f("first_step_s").map_or("-".to_string(), num),
            f("peak_rss_bytes").map_or("-".to_string(), |b| num(b / 1e9)),
        ];
        for &len in &self.prefill_lens {
            match peer::prefill_tok_s(peer, len) {
                Some(tok_s) => {
                    let flops = self.counts.prefill_matmul_flops(len as u64);
                    let seconds = len as f64 / tok_s;
                    row.extend([num(tok_s), rate(flops / seconds / 1e9)]);
                }
                None => row.extend(dashes(2)),
            }
        }
        for ctx in &self.decode_contexts {
            match f("decode_ms_per_token") {
                Some(ms) if context == *ctx => {
                    let gbs = self.decode_weight_bytes as f64 / (ms / 1e3) / 1e9;
                    row.extend([num(ms), rate(gbs)]);
                }
                _ => row.extend(dashes(2)),
            }
        }
        if self.batch > 0 {
            row.extend(dashes(2));
        }
        row
    }
}

fn dashes(n: usize) -> Vec<String> {
    vec!["-".to_string(); n]
}

/// Three significant figures or so: 1234, 123.4, 12.34, 1.23, 0.123.
pub(super) fn num(x: f64) -> String {
    let a = x.abs();
    if !x.is_finite() {
        "-".to_string()
    } else if a >= 1000.0 {
        format!("{x:.0}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else if a >= 1.0 || a == 0.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// A Markdown table with padded columns (the first `left` left-aligned, the rest right-aligned).
pub(super) fn markdown(header: &[String], rows: &[Vec<String>], left: usize) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count().max(3)).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String], left_cells: usize| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, &w))| {
                if i < left_cells {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(header, header.len());
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            if i < left {
                "-".repeat(w)
            } else {
                format!("{}:", "-".repeat(w - 1))
            }
        })
        .collect();
    out.push_str(&format!("| {} |\n", rule.join(" | ")));
    for row in rows {
        out.push_str(&line(row, left));
    }
    out
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
