//! A mesh spread over ranks computes exactly what one process computes.
//!
//! Every tiny fixture model runs on a 2x4 mesh in one process, and on the same mesh spread over
//! 2 and 4 ranks ([`ThreadRanks`]: ranks as threads, each loading only its own devices' shards,
//! collectives exchanging messages between ranks). All-position logits must be bit-identical
//! on every rank, in f32, bf16 and a packed device preset, and greedy generation must give the
//! same tokens, across the LongRoPE re-prefill of the Phi-3 fixtures. The same check over real
//! MPI processes is `cargo xtask mpi-test`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::fixture_dir;
use tt_decoder::{
    GenerateOptions, Logits, Model, RuntimeOptions, Sampler, generate, open_checkpoint_dir,
    parse_preset,
};
use tt_mesh::{MeshShape, ThreadRanks, Transport};

const FIXTURES: &[&str] = &[
    "phi3-tiny",
    "phi3-tiny-gqa",
    "phi3-tiny-tied",
    "phi3-tiny-window",
    "llama-tiny-gqa",
    "llama-tiny-llama3",
    "llama-tiny-odd",
    "llama-tiny-tied",
];

/// What one run (one process, or one rank) produced.
#[derive(Debug, PartialEq)]
struct Outcome {
    /// All-position logits, as bits.
    logits: Vec<u32>,
    /// Greedy tokens (prompt included).
    tokens: Vec<u32>,
}

fn options(precision: &str, transport: Option<Arc<dyn Transport>>) -> RuntimeOptions {
    let mut opts = RuntimeOptions::new(MeshShape::new(2, 4).unwrap());
    opts.precision = Some(parse_preset(precision).unwrap());
    opts.max_seq_len = 96;
    opts.transport = transport;
    opts
}

/// Prompt ids below `vocab`: a fixed pseudo-random sequence.
fn prompt(len: usize, vocab: usize) -> Vec<u32> {
    (0..len)
        .map(|i| ((i * 7919 + 13) % (vocab - 1) + 1) as u32)
        .collect()
}

fn run(name: &str, precision: &str, transport: Option<Arc<dyn Transport>>) -> Outcome {
    let ckpt = open_checkpoint_dir(&fixture_dir(name), &tt_lm::families()).unwrap();
    let model = Model::load(&ckpt, &options(precision, transport))
        .unwrap_or_else(|e| panic!("{name} {precision}: {e}"));
    let vocab = model.config().vocab_size;
    let mut cache = model.new_cache().unwrap();
    let logits = model
        .prefill(&mut cache, 0, &prompt(24, vocab), Logits::All)
        .unwrap();
    // 40 prompt tokens + 40 generated cross the Phi-3 fixtures' original 64 positions, so the
    // LongRoPE re-prefill runs mid-generation.
    let opts = GenerateOptions {
        max_new_tokens: 40,
        min_new_tokens: 40,
        stop_tokens: vec![],
    };
    let mut cache = model.new_cache().unwrap();
    let (out, _) = generate(
        &model,
        &mut cache,
        &[prompt(40, vocab)],
        &mut [Sampler::greedy()],
        &opts,
        &mut |_, _| {},
    )
    .unwrap();
    Outcome {
        logits: logits.to_f32_vec().iter().map(|v| v.to_bits()).collect(),
        tokens: out[0].tokens.clone(),
    }
}

/// Runs every rank of `ranks` on its own thread, each with a one-thread pool (a rank is one
/// process's worth of work; a shared pool would let one rank's step wait on another's).
fn run_ranks(name: &str, precision: &str, ranks: usize) -> Vec<Outcome> {
    let transports = ThreadRanks::new(ranks);
    std::thread::scope(|s| {
        let handles: Vec<_> = transports
            .into_iter()
            .map(|t| {
                s.spawn(move || {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(1)
                        .build()
                        .unwrap();
                    pool.install(|| run(name, precision, Some(Arc::new(t))))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn ranks_match_one_process_bit_for_bit() {
    for name in FIXTURES {
        for precision in ["f32", "bf16", "accuracy"] {
            let single = run(name, precision, None);
            for ranks in [2, 4] {
                for (rank, got) in run_ranks(name, precision, ranks).iter().enumerate() {
                    assert!(
                        got.logits == single.logits,
                        "{name} {precision}: rank {rank} of {ranks}: logits differ"
                    );
                    assert_eq!(
                        got.tokens, single.tokens,
                        "{name} {precision}: rank {rank} of {ranks}: tokens differ"
                    );
                }
            }
        }
    }
}

#[test]
fn a_mesh_that_does_not_split_over_the_ranks_is_a_typed_error() {
    let transports = ThreadRanks::new(3);
    let ckpt = open_checkpoint_dir(&fixture_dir("phi3-tiny"), &tt_lm::families()).unwrap();
    let t: Arc<dyn Transport> = Arc::new(transports.into_iter().next().unwrap());
    let err = Model::load(&ckpt, &options("f32", Some(t)))
        .err()
        .expect("8 devices over 3 ranks must be refused");
    assert!(
        err.to_string()
            .contains("8 devices do not split into equal blocks over 3 ranks"),
        "{err}"
    );
}
