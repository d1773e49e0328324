//! `cargo xtask bench`: load time, peak RSS, prefill and decode speed of the mesh model per mesh
//! shape and fidelity, beside what this machine can do right now.
//!
//! In one run:
//! 1. the plain-sum read bandwidth and the register-only FMA peak (`tt_ops::kernels::probe`);
//! 2. the checkpoint made resident once, untimed by the loads (a file cached on small pages is
//!    read again into 2 MiB pages, as a first load does; `phi3_model::checkpoint` explains),
//!    then `cat`: every checkpoint file read once, in order, into one buffer (the yardstick of
//!    the bf16/f32 loads; [`cat`]);
//! 3. per mesh x fidelity: open + load (seconds and peak RSS, the kernel's high-water mark reset
//!    first), one first decode step (timed apart: with memory-mapped weights it is where the
//!    pages are faulted in, so load + first step is the time to a ready model), prefill of each
//!    prompt length, decode steps at each context with batch 1 and at one context with a batch
//!    of users, then the model is dropped; in a packed preset, a `cat` of the packed-weight cache
//!    files the load mapped (its own yardstick). The kernel-path counters are read around the
//!    prefills and the decode steps ([`paths`]);
//! 4. the read bandwidth again (the machine's state drifts within seconds);
//! 5. with `--peer-hf`, HF transformers on the same checkpoint (scripts/hf_bench.py);
//! 6. with `--peer-llama-cpp`, llama.cpp's llama-bench on the checkpoint converted to GGUF bf16
//!    and Q8_0 (built and converted once, before anything is timed: `llama_cpp`).
//!
//! The peers prefill every prompt length of `--prefill-lens`, as ours do (the report shows their
//! prefill tok/s in the same columns); their decode runs at one context.
//!
//! Prompts are synthetic ids (`counts::synthetic_ids`). Decode at context C does not compute C
//! rows: the cache is marked as holding them ([`KvCache::assume_filled`]); a step attends over C
//! rows whatever their values, so its cost is that of a real context of C. Effective figures
//! divide what the model must move or compute ([`counts::Counts`]) by the measured time.
//!
//! Prints a Markdown table (stdout; stderr with `--json`, which prints the JSON on stdout).
//! Progress lines go through `tracing`.

mod cat;
pub(crate) mod counts;
mod cpu;
mod llama_bench;
mod llama_cpp;
mod paths;
mod peer;
mod report;
mod rounds;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use phi3_model::{Checkpoint, KvCache, Logits, Phi3Model, RuntimeOptions, bundled};
use tt_decoder::{Preset, parse_preset, preset_of_fidelity};
use tt_mesh::MeshShape;
use tt_mesh::memory::host_profile_within_memory;
use tt_ops::Fidelity;
use tt_ops::kernels::probe;

use cat::{Cat, CatSource, cat_files};
use counts::{Counts, median, synthetic_ids};
use paths::{KernelNames, RunPaths, Snapshot, attention_kernel, prefill_attention_kernel};
use report::{BatchDecode, Decode, Pages, Prefill, Probes, Report, RssScope, Run};

/// Activation fidelity (the KV cache is f32 under f32, bf16 under bf16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FidelityArg {
    /// Activations rounded to bf16 between ops (device-like).
    Bf16,
    /// f32 activations (reference).
    F32,
}

impl FidelityArg {
    fn fidelity(self) -> Fidelity {
        match self {
            Self::Bf16 => Fidelity::Bf16,
            Self::F32 => Fidelity::F32,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Bf16 => "bf16",
            Self::F32 => "f32",
        }
    }
}

/// Arguments of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoint directory or HF id [default: the bundled tiny model, a smoke run].
    #[arg(long)]
    model: Option<String>,
    /// Mesh shapes, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1x1,2x4")]
    meshes: Vec<MeshShape>,
    /// Fidelities, comma separated (aliases of the presets `bf16` and `f32`).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "bf16,f32")]
    fidelities: Vec<FidelityArg>,
    /// Precision presets to run instead of --fidelities, one per flag (repeat it):
    /// `--precision accuracy --precision bf16`. Overrides as in `cargo xtask eval`.
    #[arg(long, value_parser = parse_preset)]
    precision: Vec<Preset>,
    /// Prompt lengths to prefill, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "155,1024")]
    prefill_lens: Vec<usize>,
    /// Contexts to decode at with batch 1, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "155,4096")]
    decode_contexts: Vec<usize>,
    /// Users of the batched decode (0 skips it).
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Context of every user in the batched decode.
    #[arg(long, default_value_t = 155)]
    batch_context: usize,
    /// Decode steps per measurement (the median is reported).
    #[arg(long, default_value_t = 8)]
    decode_steps: usize,
    /// Buffer of the read-bandwidth probe, MiB.
    #[arg(long, default_value_t = 1024)]
    probe_mib: usize,
    /// How a block-float prefill sums each K-tile: in-order (the emulation's bits) or
    /// matrix-unit (the AMX tile unit where the CPU has one; see tt_ops::k_tile_sums).
    #[arg(long, default_value = "in-order")]
    k_tile_sums: tt_ops::KTileSums,
    /// Print the figures as JSON on stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,
    /// Also time HF transformers on the checkpoint (scripts/hf_bench.py, in the Python venv), once
    /// per fidelity: prefill of every prefill length, then decode after the first one.
    #[arg(long)]
    peer_hf: bool,
    /// Decode steps of the HF and llama.cpp peers (greedy for HF).
    #[arg(long, default_value_t = 32)]
    peer_decode_steps: usize,
    /// Python venv for --peer-hf and --peer-llama-cpp [default: $TT_PHI3_VENV or
    /// ~/.cache/tt-phi3/venv].
    #[arg(long)]
    venv: Option<PathBuf>,
    /// Also time llama.cpp (llama-bench of llama-cpp-python 0.3.36's sources, built once) on the
    /// checkpoint converted to GGUF bf16 and Q8_0: prefill of every prefill length, then
    /// --peer-decode-steps tokens after the first decode context.
    #[arg(long)]
    peer_llama_cpp: bool,
    /// Repetitions of each llama-bench test (it reports their mean).
    #[arg(long, default_value_t = 3)]
    peer_llama_reps: usize,
    /// Rounds of the whole measurement (ours, then the peers, in turn); the table keeps each
    /// figure's best and lists every round's (for machines whose memory speed drifts).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Cache of the llama.cpp sources, build and GGUF conversions
    /// [default: ~/.cache/tt-phi3/llama-cpp-0.3.36].
    #[arg(long)]
    llama_cpp_cache: Option<PathBuf>,
}

impl Args {
    fn check(&self) -> Result<()> {
        if self.meshes.is_empty() || self.fidelities.is_empty() || self.prefill_lens.is_empty() {
            bail!("--meshes, --fidelities and --prefill-lens need at least one value each");
        }
        if self.prefill_lens.contains(&0) {
            bail!("--prefill-lens must be at least 1 token each");
        }
        if [
            self.decode_steps,
            self.peer_decode_steps,
            self.peer_llama_reps,
            self.rounds,
        ]
        .contains(&0)
        {
            bail!(
                "--decode-steps, --peer-decode-steps, --peer-llama-reps and --rounds must be at least 1"
            );
        }
        Ok(())
    }

    /// `--prefill-lens` with each length once, in order (what the peers measure).
    fn distinct_prefill_lens(&self) -> Vec<usize> {
        let mut lens = Vec::new();
        for &len in &self.prefill_lens {
            if !lens.contains(&len) {
                lens.push(len);
            }
        }
        lens
    }

    /// Cache positions one user needs: the longest prompt, or the longest context plus the steps.
    fn max_seq_len(&self) -> usize {
        let decode = self
            .decode_contexts
            .iter()
            .max()
            .map_or(0, |c| c + self.decode_steps);
        let prompt = self.prefill_lens.iter().max().copied().unwrap_or(1);
        prompt.max(decode)
    }
}

/// Runs the benchmark.
pub fn run(args: Args) -> Result<()> {
    args.check()?;
    tt_ops::set_k_tile_sums(args.k_tile_sums);
    let model_name = match &args.model {
        Some(m) => m.clone(),
        None => bundled::bundled_model_dir().display().to_string(),
    };
    let ckpt = Checkpoint::open(&model_name)?;
    let config = ckpt.config().clone();
    let counts = Counts::new(&config);
    let model_dir = std::fs::canonicalize(ckpt.dir()).unwrap_or_else(|_| ckpt.dir().to_path_buf());
    let ids = synthetic_ids(config.vocab_size, args.max_seq_len() + args.batch);
    let python = match args.peer_hf || args.peer_llama_cpp {
        // Found before anything is timed, so a missing venv fails fast.
        true => Some(crate::reference::venv_python(args.venv.as_deref())?),
        false => None,
    };
    let llama = match (&python, args.peer_llama_cpp) {
        (Some(python), true) => {
            let cache = match &args.llama_cpp_cache {
                Some(c) => c.clone(),
                None => llama_cpp::default_cache()?,
            };
            Some(llama_cpp::prepare(python, &cache, &model_dir)?)
        }
        _ => None,
    };

    tracing::info!("probing read bandwidth and FMA peak");
    let probe_bytes = args.probe_mib << 20;
    let bandwidth_before = probe::read_bandwidth_gbs(probe_bytes, 5);
    let fma_peak = probe::fma_peak_gflops();

    tracing::info!("making the checkpoint resident (as a first load does)");
    let start = Instant::now();
    let residency = ckpt.make_resident()?;
    let pages = Pages {
        seconds: start.elapsed().as_secs_f64(),
        bytes: residency.bytes,
        huge_bytes: residency.huge_bytes,
        reread_files: residency.reread_files,
    };
    let files = ckpt.files();
    tracing::info!(files = files.len(), "reading the checkpoint files (cat)");
    let cat = cat_files(CatSource::Checkpoint, &files)?;
    drop(files);
    drop(ckpt);

    let presets = match args.precision.is_empty() {
        true => args
            .fidelities
            .iter()
            .map(|f| preset_of_fidelity(f.fidelity()))
            .collect(),
        false => args.precision.clone(),
    };
    let (mut runs, mut peers, mut rounds) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds {
        if args.rounds > 1 {
            tracing::info!(round = round + 1, of = args.rounds, "round");
        }
        let mut round_runs = Vec::new();
        for &mesh in &args.meshes {
            for preset in &presets {
                round_runs.push(bench_config(
                    &args,
                    &model_name,
                    &counts,
                    &ids,
                    mesh,
                    preset,
                    &cat,
                )?);
            }
        }
        let round_peers = peer::run_all(&args, python.as_deref(), llama.as_ref(), &model_dir)?;
        let mut figures = rounds::run_figures(&round_runs);
        figures.extend(rounds::peer_figures(&round_peers));
        rounds.push(figures);
        if round == 0 {
            (runs, peers) = (round_runs, round_peers);
        } else {
            rounds::keep_best_runs(&mut runs, round_runs);
            rounds::keep_best_peers(&mut peers, round_peers);
        }
    }
    tracing::info!("probing read bandwidth again");
    let bandwidth_after = probe::read_bandwidth_gbs(probe_bytes, 5);

    let report = Report {
        model: model_dir.display().to_string(),
        cpu: cpu::Cpu::this_machine(),
        kernels: KernelNames::this_machine(),
        parameters: config.parameter_count(),
        counts,
        decode_weight_bytes: counts.decode_weight_bytes(),
        threads: rayon::current_num_threads(),
        prefill_lens: args.prefill_lens.clone(),
        decode_contexts: args.decode_contexts.clone(),
        batch: args.batch,
        batch_context: args.batch_context,
        decode_steps: args.decode_steps,
        probes: Probes {
            read_bandwidth_bytes: probe_bytes,
            read_bandwidth_gbs_before: bandwidth_before,
            read_bandwidth_gbs_after: bandwidth_after,
            fma_peak_gflops: fma_peak,
        },
        pages,
        cat,
        runs,
        peers,
        rounds,
    };
    if args.json {
        eprint!("{}", report.table());
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// A preset's name in the report (`*` when overridden).
pub(crate) fn preset_label(preset: &Preset) -> String {
    match preset.is_overridden() {
        true => format!("{}*", preset.name()),
        false => preset.name().to_string(),
    }
}

/// Loads the model on `mesh` in `preset`, measures it, and drops it.
fn bench_config(
    args: &Args,
    model_name: &str,
    counts: &Counts,
    ids: &[u32],
    mesh: MeshShape,
    preset: &Preset,
    cat: &Cat,
) -> Result<Run> {
    let label = preset_label(preset);
    let span = tracing::info_span!("bench", %mesh, precision = %label);
    let _enter = span.enter();
    let scope = match reset_peak_rss() {
        true => RssScope::Config,
        false => RssScope::Process,
    };
    let mut options = RuntimeOptions::new(mesh);
    // Simulated devices live in host memory: a cache that cannot fit is refused, not attempted.
    options.profile = host_profile_within_memory(mesh.num_devices());
    options.precision = Some(preset.clone());
    options.max_seq_len = args.max_seq_len();
    // The packed-weight cache files this load maps (none outside the packed presets): whether
    // the load will map them (warm) or rebuild them (cold: missing, or stale, e.g. for a
    // checkpoint written again since), and then the `cat` yardstick of this load. The check
    // reads every file, untimed, as the checkpoint is made resident: a warm load then reads the
    // page cache, and so does the `cat` it is compared with.
    let ckpt = Checkpoint::open(model_name)?;
    let cache_files = tt_decoder::cache_files(&ckpt, &options)?;
    let cache_warm = !cache_files.is_empty() && {
        tracing::info!("checking the packed-cache files (and making them resident)");
        tt_decoder::cache_ready(&ckpt, &options)?
    };
    drop(ckpt);
    tracing::info!("loading");
    let start = Instant::now();
    let ckpt = Checkpoint::open(model_name)?;
    let model = Phi3Model::load(&ckpt, &options)?;
    drop(ckpt);
    let load_s = start.elapsed().as_secs_f64();

    let mut cache = model.new_cache()?;
    tracing::info!(load_s, "first decode step");
    let start = Instant::now();
    model.decode(&mut cache, &[Some(ids[0])])?;
    let first_step_s = start.elapsed().as_secs_f64();

    let kv_dtype = model.numerics().kv_dtype();
    let counters = Snapshot::now();
    let mut prefill = Vec::new();
    for &tokens in &args.prefill_lens {
        tracing::info!(tokens, "prefill");
        let start = Instant::now();
        model.prefill(&mut cache, 0, &ids[..tokens], Logits::Last)?;
        let seconds = start.elapsed().as_secs_f64();
        let attention = counts.prefill_attention_flops(tokens as u64);
        let flops = counts.prefill_matmul_flops(tokens as u64);
        prefill.push(Prefill {
            tokens,
            seconds,
            tok_s: tokens as f64 / seconds,
            matmul_gflops: flops / seconds / 1e9,
            gflops_with_attention: (flops + attention) / seconds / 1e9,
        });
    }

    let prefill_paths = Snapshot::phase_since(
        &counters,
        prefill_attention_kernel(kv_dtype, counters.attention_since()),
    );
    let decode_attention = attention_kernel("sdpa_decode", kv_dtype);

    let weight_bytes = counts.decode_weight_bytes() as f64;
    let mut decode = Vec::new();
    let counters = Snapshot::now();
    for &context in &args.decode_contexts {
        tracing::info!(context, steps = args.decode_steps, "decode, batch 1");
        cache.reset(0);
        let steps_s = decode_steps(&model, &mut cache, 1, context, args.decode_steps, ids)?;
        let median_s = median(&steps_s);
        let kv_value_bytes = kv_dtype.size_bytes() as u64;
        let kv_bytes = counts.kv_bytes_read(context as u64, kv_value_bytes);
        decode.push(Decode {
            context,
            steps_s,
            ms_per_token: median_s * 1e3,
            weight_gbs: weight_bytes / median_s / 1e9,
            kv_bytes,
            weight_and_kv_gbs: (weight_bytes + kv_bytes as f64) / median_s / 1e9,
        });
    }
    // Only decode steps ran products since `counters` (marking rows filled computes nothing).
    let decode_paths = Snapshot::phase_since(&counters, decode_attention.clone());
    drop(cache);

    let batch = match args.batch {
        0 => None,
        users => {
            tracing::info!(users, context = args.batch_context, "decode, batched");
            // A cache of its own: `users` rows of the batch context only (not of the longest).
            let mut batch_options = options.clone();
            batch_options.max_batch = users;
            batch_options.max_seq_len = args.batch_context + args.decode_steps;
            let plan = tt_decoder::plan(model.config(), &batch_options)?;
            let mut cache = KvCache::with_dtype(&plan, model.mesh(), kv_dtype)?;
            let counters = Snapshot::now();
            let steps_s = decode_steps(
                &model,
                &mut cache,
                users,
                args.batch_context,
                args.decode_steps,
                ids,
            )?;
            let median_s = median(&steps_s);
            let paths = Snapshot::phase_since(&counters, decode_attention);
            let batch = BatchDecode {
                batch: users,
                context: args.batch_context,
                steps_s,
                ms_per_step: median_s * 1e3,
                tok_s: users as f64 / median_s,
                weight_gbs: weight_bytes / median_s / 1e9,
            };
            Some((batch, paths))
        }
    };
    let (batch, batch_paths) = batch.unzip();
    let peak_rss_bytes = peak_rss_bytes();
    drop(model);
    let cat = if cache_files.is_empty() {
        cat.clone()
    } else if !cache_files.iter().all(|f| f.is_file()) {
        // Writing the cache is best effort: without its files the load read the checkpoint.
        tracing::warn!(
            "the packed cache files are missing after the load: load/cat uses the checkpoint's cat"
        );
        cat.clone()
    } else {
        tracing::info!(
            files = cache_files.len(),
            "reading the packed cache files (cat)"
        );
        Cat {
            current_before_load: Some(cache_warm),
            ..cat_files(CatSource::PackedCache, &cache_files)?
        }
    };
    let run = Run {
        mesh: mesh.to_string(),
        fidelity: label,
        load_s,
        load_over_cat: load_s / cat.seconds.max(f64::MIN_POSITIVE),
        cat,
        first_step_s,
        peak_rss_bytes,
        peak_rss_scope: scope,
        prefill,
        decode,
        batch,
        paths: RunPaths {
            prefill: prefill_paths,
            decode: decode_paths,
            batch: batch_paths,
        },
    };
    tracing::info!(
        load_s,
        peak_rss_gb = peak_rss_bytes.map(|b| b as f64 / 1e9),
        "done"
    );
    Ok(run)
}

/// Marks `users` cache rows as holding `context` tokens, then times `steps` decode calls of one
/// token per user; returns each call's seconds.
fn decode_steps(
    model: &Phi3Model,
    cache: &mut KvCache,
    users: usize,
    context: usize,
    steps: usize,
    ids: &[u32],
) -> Result<Vec<f64>> {
    let variant = model.rope().choose(context + steps);
    for user in 0..users {
        cache.assume_filled(user, context, variant)?;
    }
    let mut out = Vec::with_capacity(steps);
    for step in 0..steps {
        let tokens: Vec<Option<u32>> = (0..users)
            .map(|u| Some(ids[(context + step + u) % ids.len()]))
            .collect();
        let start = Instant::now();
        model.decode(cache, &tokens)?;
        out.push(start.elapsed().as_secs_f64());
    }
    Ok(out)
}

/// Resets the kernel's peak-RSS mark (VmHWM) to the current RSS; false where that is impossible.
/// The freed memory the allocator keeps (`tt_decoder::freed_memory`) is handed back first, so an
/// earlier configuration's buffers do not count in the next one's peak.
fn reset_peak_rss() -> bool {
    tt_decoder::freed_memory::release_freed_memory();
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Peak resident set size of this process (VmHWM), if the OS reports it.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct BenchCli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(args: &[&str]) -> Args {
        BenchCli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn defaults_follow_the_issue() {
        let args = parse(&[]);
        assert_eq!(
            args.meshes,
            ["1x1".parse().unwrap(), "2x4".parse().unwrap()]
        );
        assert_eq!(args.fidelities, [FidelityArg::Bf16, FidelityArg::F32]);
        assert_eq!(args.prefill_lens, [155, 1024]);
        assert_eq!(args.decode_contexts, [155, 4096]);
        assert_eq!(
            (args.batch, args.batch_context, args.decode_steps),
            (8, 155, 8)
        );
        assert_eq!(args.max_seq_len(), 4104);
        assert!(parse(&["--decode-steps", "0"]).check().is_err());
        assert!(!args.peer_llama_cpp && args.llama_cpp_cache.is_none());
        assert_eq!((args.peer_decode_steps, args.peer_llama_reps), (32, 3));
        assert!(parse(&["--peer-llama-reps", "0"]).check().is_err());
        assert!(parse(&["--peer-llama-cpp"]).peer_llama_cpp);
        assert!(parse(&["--prefill-lens", "0,3"]).check().is_err());
        assert_eq!(args.distinct_prefill_lens(), [155, 1024]);
        let repeated = parse(&["--prefill-lens", "1024,155,1024,16"]);
        assert_eq!(repeated.distinct_prefill_lens(), [1024, 155, 16]);
    }

    #[test]
    fn peak_rss_resets_and_reads() {
        if Path::new("/proc/self/status").is_file() {
            let _ = reset_peak_rss();
            assert!(peak_rss_bytes().is_some_and(|b| b > 0));
        }
    }

    /// The whole command on the bundled tiny model, one small configuration per mesh.
    #[test]
    fn bundled_model_smoke() {
        let args = parse(&[
            "--meshes",
            "1x1,2x4",
            "--fidelities",
            "bf16",
            "--prefill-lens",
            "20,40",
            "--decode-contexts",
            "20,100",
            "--batch",
            "2",
            "--batch-context",
            "10",
            "--decode-steps",
            "2",
            "--probe-mib",
            "8",
        ]);
        let ckpt = Checkpoint::open_dir(&bundled::bundled_model_dir()).unwrap();
        let counts = Counts::new(ckpt.config());
        let ids = synthetic_ids(ckpt.config().vocab_size, args.max_seq_len() + args.batch);
        let cat = cat_files(CatSource::Checkpoint, &ckpt.files()).unwrap();
        assert_eq!(
            cat.bytes,
            ckpt.files()
                .iter()
                .map(|f| f.metadata().unwrap().len())
                .sum::<u64>()
        );
        let name = bundled::bundled_model_dir().display().to_string();
        for mesh in &args.meshes {
            let bf16 = preset_of_fidelity(Fidelity::Bf16);
            let run = bench_config(&args, &name, &counts, &ids, *mesh, &bf16, &cat).unwrap();
            assert_eq!(run.prefill.len(), 2);
            assert_eq!(run.decode.len(), 2);
            assert!(
                run.decode
                    .iter()
                    .all(|d| d.steps_s.len() == 2 && d.ms_per_token > 0.0)
            );
            let batch = run.batch.unwrap();
            assert_eq!((batch.batch, batch.context), (2, 10));
            assert!(run.load_s > 0.0 && run.prefill[1].tok_s > 0.0);
        }
    }
}
