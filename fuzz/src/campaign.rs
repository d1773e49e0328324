//! The fuzzing loop: pick a corpus entry, mutate it, run the target under `catch_unwind`, keep
//! inputs with a new outcome signature, save and report crashes.
//!
//! Stable Rust has no coverage instrumentation for a fuzzer to read, so the novelty signal is
//! the *outcome* of an input: accepted (with a summary of what it held) or the kind of typed
//! error it got. An input that reaches a new outcome joins the corpus, which steers mutation
//! toward the validation code behind each parser's first checks.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::mutate::{Format, mutate};
use crate::targets::{Context, Finding, Outcome, Target};

/// How long a campaign runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    /// This many mutated executions (the seeds are run once more, on top).
    Iterations(u64),
    /// Until this much wall time has passed.
    Seconds(f64),
}

/// What a campaign does.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seed of the mutation RNG (a campaign is deterministic given the seed and corpus).
    pub seed: u64,
    /// Iterations or seconds.
    pub budget: Budget,
    /// Where crashing inputs are written (`None`: kept in memory only).
    pub crash_dir: Option<PathBuf>,
    /// Longest input tried, in bytes.
    pub max_len: usize,
    /// Most corpus entries kept in memory.
    pub max_corpus: usize,
    /// Keep going after a crash instead of stopping at the first.
    pub keep_going: bool,
    /// Seconds between calls of the status callback.
    pub status_every: f64,
}

impl Options {
    /// Defaults: 64 KiB inputs, 4096 corpus entries, stop at the first crash, status every 60 s.
    pub fn new(seed: u64, budget: Budget) -> Self {
        Self {
            seed,
            budget,
            crash_dir: None,
            max_len: 64 * 1024,
            max_corpus: 4096,
            keep_going: false,
            status_every: 60.0,
        }
    }
}

/// A crashing input: a panic, or an accepted input that broke a promise.
#[derive(Debug, Clone)]
pub struct Crash {
    /// The panic message with its location, or the violated promise.
    pub message: String,
    /// The input.
    pub input: Vec<u8>,
    /// Where it was saved.
    pub saved: Option<PathBuf>,
}

/// Counters of a campaign, also passed to the status callback while it runs.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Executions, seeds included.
    pub executions: u64,
    /// Executions the parser accepted.
    pub accepted: u64,
    /// Wall time so far.
    pub elapsed: Duration,
    /// Distinct outcome signatures seen.
    pub outcomes: usize,
    /// Corpus entries (seeds plus inputs with a new outcome).
    pub corpus: usize,
    /// Crashes found.
    pub crashes: Vec<Crash>,
    /// The distinct outcome signatures, sorted (filled at the end of a campaign).
    pub outcome_names: Vec<String>,
}

impl Report {
    /// Executions per second.
    pub fn execs_per_sec(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.executions as f64 / s
        } else {
            0.0
        }
    }
}

/// Shared with a watchdog or an allocation guard: the input being executed and a counter that
/// moves on every execution.
#[derive(Debug, Default)]
pub struct Monitor {
    /// The input under execution.
    pub current: Mutex<Vec<u8>>,
    /// Executions started.
    pub executions: AtomicU64,
}

thread_local! {
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs (once) a panic hook that records panics of fuzzed code silently and passes every
/// other panic to the previous hook.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CAPTURING.with(Cell::get) {
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(info.to_string()));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `harness` on `input` under `catch_unwind`: `Err(message)` for a panic.
pub fn execute<F>(harness: &mut F, input: &[u8], ctx: &mut Context) -> Result<Outcome, String>
where
    F: FnMut(&[u8], &mut Context) -> Outcome,
{
    install_panic_hook();
    CAPTURING.with(|c| c.set(true));
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| harness(input, ctx)));
    CAPTURING.with(|c| c.set(false));
    result.map_err(|_| {
        LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_else(|| "panic without a message".to_string())
    })
}

/// FNV-1a of the input, for crash file names.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Writes a crashing input and its message as `<kind>-<hash>.bin` / `.txt` in `dir`.
pub fn save_crash(dir: &Path, kind: &str, input: &[u8], message: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{kind}-{:016x}.bin", fnv1a(input)));
    std::fs::write(&path, input)?;
    std::fs::write(path.with_extension("txt"), format!("{message}\n"))?;
    Ok(path)
}

/// Reads every regular file of `dir` (sorted by name) as a corpus entry; files longer than
/// `max_len` are skipped. A missing directory is an empty corpus.
pub fn load_corpus(dir: &Path, max_len: usize) -> std::io::Result<Vec<(PathBuf, Vec<u8>)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let bytes = std::fs::read(&p)?;
        if bytes.len() <= max_len {
            out.push((p, bytes));
        }
    }
    Ok(out)
}

/// Adds `input` to `pool`; a full pool has a random entry replaced, so late finds still get
/// mutated.
fn keep(pool: &mut Vec<Vec<u8>>, input: Vec<u8>, max: usize, rng: &mut ChaCha8Rng) {
    if pool.len() < max {
        pool.push(input);
    } else if !pool.is_empty() {
        let i = rng.random_range(0..pool.len());
        pool[i] = input;
    }
}

/// Fuzzes `target` starting from `seeds`.
pub fn run_target(
    target: Target,
    seeds: Vec<Vec<u8>>,
    options: &Options,
    monitor: Option<&Monitor>,
    on_status: &mut dyn FnMut(&Report),
) -> anyhow::Result<Report> {
    let mut harness = |input: &[u8], ctx: &mut Context| target.run(input, ctx);
    run(
        &mut harness,
        target.format(),
        seeds,
        options,
        monitor,
        on_status,
    )
}

/// Fuzzes an arbitrary harness (the test suite uses this with harnesses that panic on purpose).
pub fn run<F>(
    harness: &mut F,
    format: Format,
    seeds: Vec<Vec<u8>>,
    options: &Options,
    monitor: Option<&Monitor>,
    on_status: &mut dyn FnMut(&Report),
) -> anyhow::Result<Report>
where
    F: FnMut(&[u8], &mut Context) -> Outcome,
{
    let start = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let mut ctx = Context::new();
    let mut report = Report::default();
    let mut seen: HashSet<String> = HashSet::new();
    // Three pools of parents: the seeds, inputs with a new outcome whose JSON is well-formed
    // (their mutants reach the checks behind the parser), and every input with a new outcome.
    let mut seed_pool: Vec<Vec<u8>> = Vec::new();
    let mut structured: Vec<Vec<u8>> = Vec::new();
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    let mut last_status = Instant::now();
    let mut seeds = seeds.into_iter();
    let mut mutated = 0u64;
    loop {
        let (input, from_seed) = match seeds.next() {
            Some(s) => (s, true),
            None => {
                let done = match options.budget {
                    Budget::Iterations(n) => mutated >= n,
                    Budget::Seconds(s) => start.elapsed().as_secs_f64() >= s,
                };
                if done {
                    break;
                }
                mutated += 1;
                let pool = match rng.random_range(0..10) {
                    0..=1 => &seed_pool,
                    2..=6 => &structured,
                    _ => &corpus,
                };
                let fallback: &[u8] = b"{}";
                let parent = pool
                    .choose(&mut rng)
                    .or_else(|| corpus.choose(&mut rng))
                    .map_or(fallback, Vec::as_slice)
                    .to_vec();
                (
                    mutate(&mut rng, &parent, &corpus, format, options.max_len),
                    false,
                )
            }
        };
        if let Some(m) = monitor {
            if let Ok(mut current) = m.current.lock() {
                current.clone_from(&input);
            }
            m.executions.fetch_add(1, Ordering::Relaxed);
        }
        report.executions += 1;
        let crash = match execute(harness, &input, &mut ctx) {
            Ok(Ok(verdict)) => {
                if matches!(verdict, crate::targets::Verdict::Accepted(_)) {
                    report.accepted += 1;
                }
                let novel = seen.insert(verdict.signature().to_string());
                if from_seed {
                    seed_pool.push(input.clone());
                }
                if novel || from_seed {
                    if crate::json::is_well_formed(&input, format) {
                        keep(&mut structured, input.clone(), options.max_corpus, &mut rng);
                    }
                    keep(&mut corpus, input, options.max_corpus, &mut rng);
                }
                None
            }
            Ok(Err(Finding::Harness(message))) => anyhow::bail!("the harness failed: {message}"),
            Ok(Err(Finding::Violation(message))) => Some(("violation", message, input)),
            Err(message) => Some(("crash", message, input)),
        };
        if let Some((kind, message, input)) = crash {
            let saved = match &options.crash_dir {
                Some(dir) => Some(save_crash(dir, kind, &input, &message)?),
                None => None,
            };
            report.crashes.push(Crash {
                message,
                input,
                saved,
            });
            if !options.keep_going {
                break;
            }
        }
        if last_status.elapsed().as_secs_f64() >= options.status_every {
            last_status = Instant::now();
            report.elapsed = start.elapsed();
            report.outcomes = seen.len();
            report.corpus = corpus.len();
            on_status(&report);
        }
    }
    report.elapsed = start.elapsed();
    report.outcomes = seen.len();
    report.corpus = corpus.len();
    report.outcome_names = seen.into_iter().collect();
    report.outcome_names.sort();
    Ok(report)
}
