//! `phi3-fuzz <target>`: fuzz one parser for a while, single-threaded.
//!
//! ```text
//! cargo run --release -p phi3-fuzz -- config --seconds 600
//! cargo run --release -p phi3-fuzz -- safetensors-header --seconds 600 --seed 7
//! cargo run --release -p phi3-fuzz -- reference --replay fuzz/crashes/reference/crash-*.bin
//! ```
//!
//! Besides panics and broken promises (see the library docs), two process-level failures count
//! as crashes and save the input before the process ends: an execution that stalls for longer
//! than `--timeout` seconds (a watchdog thread) and a single allocation larger than
//! `--max-alloc-mb` (a guard in the global allocator: a parser sizing a buffer from a header
//! field rather than from the bytes it has).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use phi3_fuzz::campaign::save_crash;
use phi3_fuzz::targets::{Context, Verdict};
use phi3_fuzz::{
    Budget, Monitor, Options, Report, Target, builtin_seeds, default_corpus_dir, default_crash_dir,
    load_corpus, run_target,
};

/// Largest single allocation allowed (bytes); `usize::MAX` until `main` sets it.
static ALLOC_LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
/// Set once the guard has fired (the second firing aborts at once).
static ALLOC_TRIPPED: AtomicBool = AtomicBool::new(false);
/// The campaign's monitor and crash directory, for the guard and the watchdog.
static WATCHED: OnceLock<(Arc<Monitor>, PathBuf)> = OnceLock::new();

/// The system allocator with a ceiling on single allocations.
struct Guard;

impl Guard {
    fn check(size: usize) {
        if size > ALLOC_LIMIT.load(Ordering::Relaxed) {
            oversized(size);
        }
    }
}

// SAFETY: every method forwards to `System` with the caller's layout; `check` only reads
// atomics and, when it fires, ends the process without returning.
unsafe impl GlobalAlloc for Guard {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::check(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::check(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every path above forwards).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::check(new_size);
        // SAFETY: as for `dealloc`; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Guard = Guard;

/// Saves the input under execution and ends the process (from the allocator or the watchdog).
fn die_saving(kind: &str, message: &str, code: i32) -> ! {
    // Lift the ceiling so saving the input can allocate; a second trip aborts.
    if ALLOC_TRIPPED.swap(true, Ordering::SeqCst) {
        std::process::abort();
    }
    ALLOC_LIMIT.store(usize::MAX, Ordering::SeqCst);
    if let Some((monitor, dir)) = WATCHED.get() {
        let input = monitor
            .current
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        match save_crash(dir, kind, &input, message) {
            Ok(path) => eprintln!("{kind}: {message}; input saved to {}", path.display()),
            Err(e) => eprintln!("{kind}: {message}; could not save the input: {e}"),
        }
    } else {
        eprintln!("{kind}: {message}");
    }
    std::process::exit(code);
}

fn oversized(size: usize) -> ! {
    let message = format!(
        "a single allocation of {size} bytes exceeds the --max-alloc-mb limit of {} bytes",
        ALLOC_LIMIT.load(Ordering::SeqCst)
    );
    die_saving("oom", &message, 3)
}

#[derive(Debug, Parser)]
#[command(
    name = "phi3-fuzz",
    about = "Mutation fuzzer for the config, safetensors header, index and reference parsers"
)]
struct Cli {
    /// Target: config, safetensors-header, index or reference.
    target: String,
    /// Run for this many seconds.
    #[arg(long, conflicts_with = "iterations")]
    seconds: Option<f64>,
    /// Run this many mutated executions [default: --seconds 60].
    #[arg(long)]
    iterations: Option<u64>,
    /// RNG seed [default: from the clock; printed so a run can be repeated].
    #[arg(long)]
    seed: Option<u64>,
    /// Seed corpus directory [default: fuzz/corpus/<target>].
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Where crashing inputs are written [default: fuzz/crashes/<target>].
    #[arg(long)]
    crash_dir: Option<PathBuf>,
    /// Longest input, bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    max_len: usize,
    /// Largest single allocation, MiB.
    #[arg(long, default_value_t = 256)]
    max_alloc_mb: usize,
    /// Seconds one execution may take before it counts as a hang.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// Keep going after a crash.
    #[arg(long)]
    keep_going: bool,
    /// Seconds between status lines.
    #[arg(long, default_value_t = 60.0)]
    status_every: f64,
    /// Run these files once each (e.g. saved crashes) and print their outcomes.
    #[arg(long, num_args = 1.., conflicts_with_all = ["seconds", "iterations"])]
    replay: Vec<PathBuf>,
    /// Write the distinct outcome signatures to this file at the end.
    #[arg(long)]
    dump_outcomes: Option<PathBuf>,
    /// Write the built-in seeds of the target into this directory and exit.
    #[arg(long)]
    write_seeds: Option<PathBuf>,
}

fn status_line(target: Target, r: &Report) -> String {
    format!(
        "{}: {} executions in {:.1} s ({:.0} exec/s), {} crashes, {} outcomes, corpus {}, {:.1}% accepted",
        target.name(),
        r.executions,
        r.elapsed.as_secs_f64(),
        r.execs_per_sec(),
        r.crashes.len(),
        r.outcomes,
        r.corpus,
        100.0 * r.accepted as f64 / (r.executions.max(1) as f64)
    )
}

fn replay(target: Target, files: &[PathBuf]) -> Result<bool> {
    let mut ctx = Context::new();
    let mut all_ok = true;
    for f in files {
        let input = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        let mut harness = |i: &[u8], c: &mut Context| target.run(i, c);
        match phi3_fuzz::campaign::execute(&mut harness, &input, &mut ctx) {
            Ok(Ok(Verdict::Accepted(s))) => println!("{}: accepted ({s})", f.display()),
            Ok(Ok(Verdict::Rejected(s))) => println!("{}: rejected ({s})", f.display()),
            Ok(Err(finding)) => {
                all_ok = false;
                println!("{}: {finding:?}", f.display());
            }
            Err(panic) => {
                all_ok = false;
                println!("{}: PANIC {panic}", f.display());
            }
        }
    }
    Ok(all_ok)
}

fn start_watchdog(monitor: Arc<Monitor>, timeout: Duration) {
    std::thread::spawn(move || {
        let mut last = monitor.executions.load(Ordering::Relaxed);
        let mut since = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(250));
            let now = monitor.executions.load(Ordering::Relaxed);
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() > timeout {
                let message = format!("one execution ran for more than {} s", timeout.as_secs());
                die_saving("timeout", &message, 4);
            }
        }
    });
}

fn run(cli: Cli) -> Result<bool> {
    let Some(target) = Target::from_name(&cli.target) else {
        let names: Vec<&str> = Target::ALL.iter().map(|t| t.name()).collect();
        bail!(
            "unknown target {:?}; use one of {}",
            cli.target,
            names.join(", ")
        );
    };
    if let Some(dir) = &cli.write_seeds {
        std::fs::create_dir_all(dir)?;
        for (name, bytes) in builtin_seeds(target) {
            std::fs::write(dir.join(&name), bytes)?;
            println!("wrote {}", dir.join(name).display());
        }
        return Ok(true);
    }
    if !cli.replay.is_empty() {
        return replay(target, &cli.replay);
    }
    let corpus_dir = cli
        .corpus
        .clone()
        .unwrap_or_else(|| default_corpus_dir(target));
    let crash_dir = cli
        .crash_dir
        .clone()
        .unwrap_or_else(|| default_crash_dir(target));
    let seeds: Vec<Vec<u8>> = load_corpus(&corpus_dir, cli.max_len)
        .with_context(|| format!("reading the corpus {}", corpus_dir.display()))?
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    let seeds = if seeds.is_empty() {
        builtin_seeds(target).into_iter().map(|(_, b)| b).collect()
    } else {
        seeds
    };
    let seed = cli.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let budget = match (cli.seconds, cli.iterations) {
        (_, Some(n)) => Budget::Iterations(n),
        (Some(s), None) => Budget::Seconds(s),
        (None, None) => Budget::Seconds(60.0),
    };
    let mut options = Options::new(seed, budget);
    options.crash_dir = Some(crash_dir.clone());
    options.max_len = cli.max_len;
    options.keep_going = cli.keep_going;
    options.status_every = cli.status_every;
    println!(
        "fuzzing {} with {} seeds from {}, seed {seed}, budget {budget:?}",
        target.name(),
        seeds.len(),
        corpus_dir.display()
    );
    let monitor = Arc::new(Monitor::default());
    let _ = WATCHED.set((Arc::clone(&monitor), crash_dir));
    start_watchdog(Arc::clone(&monitor), Duration::from_secs(cli.timeout));
    ALLOC_LIMIT.store(cli.max_alloc_mb.saturating_mul(1 << 20), Ordering::SeqCst);
    let report = run_target(target, seeds, &options, Some(&monitor), &mut |r| {
        println!("  {}", status_line(target, r));
    });
    ALLOC_LIMIT.store(usize::MAX, Ordering::SeqCst);
    let report = report?;
    for crash in &report.crashes {
        let saved = crash
            .saved
            .as_ref()
            .map_or_else(String::new, |p| format!(" (saved to {})", p.display()));
        println!("CRASH{saved}: {}", crash.message);
    }
    println!("{}", status_line(target, &report));
    if let Some(path) = &cli.dump_outcomes {
        std::fs::write(path, report.outcome_names.join("\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report.crashes.is_empty())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
