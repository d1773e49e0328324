//! Report tests on fixed inputs (insta snapshots).

use phi3_model::Phi3Config;
use tt_ops::DeviceKernel;

use super::super::cat::CatSource;
use super::super::paths::PhasePaths;
use super::*;

/// A report of fixed numbers for the full-size Phi-3-mini config.
fn fixed_report() -> Report {
    let path = crate::workspace_root().join("fixtures/configs/phi3-mini-128k.json");
    let config = Phi3Config::from_file(&path).unwrap();
    let counts = Counts::new(&config);
    let checkpoint_cat = Cat {
        source: CatSource::Checkpoint,
        files: 4,
        bytes: 7_642_159_104,
        seconds: 4.0,
        current_before_load: None,
    };
    let run = |mesh: &str, fidelity: &str, scale: f64| Run {
        mesh: mesh.to_string(),
        fidelity: fidelity.to_string(),
        load_s: 8.0 * scale,
        load_over_cat: 8.0 * scale / 4.0,
        cat: checkpoint_cat.clone(),
        first_step_s: 1.25 * scale,
        peak_rss_bytes: Some(8_100_000_000),
        peak_rss_scope: RssScope::Config,
        prefill: [155, 1024]
            .map(|tokens| Prefill {
                tokens,
                seconds: tokens as f64 / (20.0 / scale),
                tok_s: 20.0 / scale,
                matmul_gflops: 146.0 / scale,
                gflops_with_attention: 147.0 / scale,
            })
            .to_vec(),
        decode: [155, 4096]
            .map(|context| Decode {
                context,
                steps_s: vec![0.5 * scale; 3],
                ms_per_token: 500.0 * scale,
                weight_gbs: 14.89 / scale,
                kv_bytes: counts.kv_bytes_read(context as u64, 2),
                weight_and_kv_gbs: 15.0 / scale,
            })
            .to_vec(),
        batch: Some(BatchDecode {
            batch: 8,
            context: 155,
            steps_s: vec![0.6 * scale; 3],
            ms_per_step: 600.0 * scale,
            tok_s: 13.33 / scale,
            weight_gbs: 12.41 / scale,
        }),
        paths: fixed_paths(fidelity),
    };
    let mut packed = run("1x1", "accuracy", 0.5);
    packed.cat = Cat {
        source: CatSource::PackedCache,
        files: 1,
        bytes: 3_960_000_000,
        seconds: 2.5,
        current_before_load: Some(true),
    };
    packed.load_over_cat = packed.load_s / packed.cat.seconds;
    Report {
        model: "/work/synth-phi3".to_string(),
        cpu: Cpu {
            model: "AMD EPYC 7B13".to_string(),
            isa: vec!["avx2".to_string(), "fma".to_string()],
            isa_absent: ["avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]
                .map(String::from)
                .to_vec(),
        },
        kernels: KernelNames {
            gemv: "native avx2+fma gemv".to_string(),
            gemv_bf16: "not here (needs AVX-512 BF16 on an AMD CPU)".to_string(),
            gemm: "native avx2+fma gemm".to_string(),
            amx: "AMX tile kernel (tdpbf16ps, weights read in place)".to_string(),
            dnnl: "oneDNN 2.6.3 (brg:avx512_core_amx_bf16, isa avx512_core_amx)".to_string(),
            dnnl_rule: "TT_OPS_GEMM=auto: products of m >= 32 rows with bf16 weights and bf16-valued activations, when oneDNN runs on bf16 hardware".to_string(),
        },
        parameters: config.parameter_count(),
        counts,
        decode_weight_bytes: counts.decode_weight_bytes(),
        threads: 2,
        prefill_lens: vec![155, 1024],
        decode_contexts: vec![155, 4096],
        batch: 8,
        batch_context: 155,
        decode_steps: 3,
        probes: Probes {
            read_bandwidth_bytes: 1 << 30,
            read_bandwidth_gbs_before: 12.5,
            read_bandwidth_gbs_after: 11.75,
            fma_peak_gflops: 151.2,
        },
        pages: Pages {
            seconds: 5.0,
            bytes: 7_642_159_104,
            huge_bytes: 7_600_000_000,
            reread_files: 4,
        },
        cat: checkpoint_cat.clone(),
        runs: vec![run("1x1", "bf16", 1.0), run("2x4", "f32", 1.5), packed],
        peers: vec![
            serde_json::json!({
                "engine": "hf-transformers",
                "dtype": "bf16",
                "load_s": 6.0,
                "first_step_s": 0.75,
                "prefill": [
                    {"tokens": 155, "seconds": 3.875, "tok_s": 40.0},
                    {"tokens": 1024, "seconds": 32.0, "tok_s": 32.0},
                ],
                "decode_context": 155,
                "decode_ms_per_token": 400.0,
                "peak_rss_bytes": 7_900_000_000u64,
            }),
            llama_peer("bf16", &[(155, 13.8), (1024, 12.9)], 2.34),
            // A peer that measured only one of the lengths shows `-` in the other's columns.
            llama_peer("Q8_0", &[(155, 13.6)], 3.68),
        ],
        rounds: Vec::new(),
    }
}

/// Kernel paths as a run of `fidelity` on Phi-3-mini (32 layers, 4 products each, the LM head)
/// counts them: 2 prompts of >= 32 tokens, 2 contexts x 3 batch-1 steps, 3 batched steps.
fn fixed_paths(fidelity: &str) -> RunPaths {
    let sdpa = |op: &str, kv: &str| format!("{op} avx2+fma, {kv} KV");
    let (prefill, decode, batch) = match fidelity {
        "bf16" => (
            PhasePaths::fixed(
                [2, 0, 256],
                &[],
                &sdpa("scaled_dot_product_attention", "bf16"),
            ),
            PhasePaths::fixed([774, 0, 0], &[], &sdpa("sdpa_decode", "bf16")),
            PhasePaths::fixed([387, 0, 0], &[], &sdpa("sdpa_decode", "bf16")),
        ),
        "f32" => (
            PhasePaths::fixed(
                [16, 2048, 0],
                &[],
                &sdpa("scaled_dot_product_attention", "f32"),
            ),
            PhasePaths::fixed([6192, 0, 0], &[], &sdpa("sdpa_decode", "f32")),
            PhasePaths::fixed([3096, 0, 0], &[], &sdpa("sdpa_decode", "f32")),
        ),
        _ => (
            PhasePaths::fixed(
                [2, 0, 0],
                &[
                    (DeviceKernel::PackedAvx512, 250),
                    (DeviceKernel::Reference, 6),
                ],
                &sdpa("scaled_dot_product_attention", "bf16"),
            ),
            PhasePaths::fixed(
                [6, 0, 0],
                &[(DeviceKernel::PackedAvx512, 768)],
                &sdpa("sdpa_decode", "bf16"),
            ),
            PhasePaths::fixed(
                [3, 0, 0],
                &[(DeviceKernel::PackedAvx512, 384)],
                &sdpa("sdpa_decode", "bf16"),
            ),
        ),
    };
    RunPaths {
        prefill,
        decode,
        batch: Some(batch),
    }
}

/// llama.cpp figures as `llama_bench::peer_value` makes them from the recorded outputs, with a
/// prefill test per (prompt length, tok/s).
fn llama_peer(dtype: &str, prefill: &[(u64, f64)], decode_tok_s: f64) -> serde_json::Value {
    let test = |n_prompt: u64, n_gen: u64, n_depth: u64, avg_ts: f64| llama_bench::Test {
        build_commit: "0c1e570".to_string(),
        cpu_info: "AMD EPYC 7B13".to_string(),
        model_type: format!("phi3 3B {dtype}"),
        model_size: 7_642_159_104,
        n_threads: 2,
        n_prompt,
        n_gen,
        n_depth,
        avg_ts,
        stddev_ts: 0.1,
        samples_ns: vec![1, 2, 3],
    };
    let prefill: Vec<llama_bench::Test> = prefill
        .iter()
        .map(|&(tokens, tok_s)| test(tokens, 0, 0, tok_s))
        .collect();
    let decode = test(0, 32, 155, decode_tok_s);
    let mut v = llama_bench::peer_value(dtype, "/c/synth-phi3.gguf", &prefill, &decode).unwrap();
    // As llama_bench::run records it (Q8_0 fell back to --repack 0, as on an AMX VM).
    v["repack"] = (dtype != "Q8_0").into();
    v
}

#[test]
fn table_of_fixed_numbers() {
    insta::assert_snapshot!(fixed_report().table());
}

/// A packed-preset run: its own `cat` (of the packed cache) and block-float kernel counts.
#[test]
fn json_of_a_packed_run() {
    let report = fixed_report();
    let run = &report.runs[2];
    insta::assert_json_snapshot!(serde_json::to_value(run).unwrap());
    let table = report.table();
    assert!(table.contains(
        "cat for 1x1 accuracy (packed cache, 1 file, 3.96 GB, warm: current before the load"
    ));
    assert!(table.contains("| 1x1  | accuracy  | decode  | gemv x6"));
}

#[test]
fn json_of_one_run() {
    let report = fixed_report();
    let json = serde_json::to_value(&report.runs[0]).unwrap();
    insta::assert_json_snapshot!(json);
    let whole = serde_json::to_value(&report).unwrap();
    assert_eq!(whole["decode_weight_bytes"], 7_444_758_528u64);
    assert_eq!(whole["probes"]["read_bandwidth_gbs_after"], 11.75);
    assert_eq!(whole["peers"][0]["dtype"], "bf16");
    assert_eq!(whole["peers"][2]["dtype"], "Q8_0");
    assert_eq!(whole["cpu"]["isa"][1], "fma");
    assert_eq!(whole["cat"]["source"], "checkpoint");
    assert_eq!(whole["kernels"]["gemv"], "native avx2+fma gemv");
    assert_eq!(whole["runs"][0]["paths"]["prefill"]["linear"]["dnnl"], 256);
    assert!(whole["runs"][1]["paths"]["batch"]["device_linear"][0]["calls"] == 0);
}

/// The peers' figures: a `prefill` entry per prompt length, as the runs have.
#[test]
fn json_of_the_peers() {
    let report = fixed_report();
    let whole = serde_json::to_value(&report).unwrap();
    insta::assert_json_snapshot!(whole["peers"]);
    let table = report.table();
    let row = |label: &str| {
        table
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap()
            .split('|')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect::<Vec<_>>()
    };
    // Columns 6..10: prefill 155 tok/s, GFLOP/s, prefill 1024 tok/s, GFLOP/s; HF's 1024 tokens
    // took 32 s.
    let gflops_1024 = num(report.counts.prefill_matmul_flops(1024) / 32.0 / 1e9);
    assert_eq!(
        row("| HF CPU")[6..10],
        ["40.00", "290.0", "32.00", &gflops_1024]
    );
    assert_eq!(
        row("| llama.cpp | bf16")[6..10],
        ["13.80", "-", "12.90", "-"]
    );
    assert_eq!(row("| llama.cpp | Q8_0")[6..10], ["13.60", "-", "-", "-"]);
    assert!(table.contains("prefill = pp155, pp1024 into an empty cache (one run, -p 155,1024)"));
}

#[test]
fn numbers_keep_three_figures() {
    let got: Vec<String> = [1234.5, 123.45, 12.345, 1.2345, 0.12345, 0.0, f64::NAN]
        .map(num)
        .to_vec();
    assert_eq!(
        got,
        ["1234", "123.5", "12.35", "1.23", "0.123", "0.00", "-"]
    );
}

/// `--rounds`: a later round's faster prefill, decode and load replace the first round's, its
/// slower ones do not; the peers likewise, per prompt length; the larger peak RSS stays.
#[test]
fn rounds_keep_each_figure_at_its_best() {
    use super::super::rounds::{keep_best_peers, keep_best_runs, lines, peer_figures, run_figures};
    let first = fixed_report();
    let mut second = fixed_report();
    for r in &mut second.runs {
        r.prefill[0].tok_s *= 2.0; // faster prefill 155
        r.prefill[1].tok_s /= 2.0; // slower prefill 1024
        r.decode[0].ms_per_token /= 2.0; // faster decode@155
        r.decode[1].ms_per_token *= 2.0;
        r.load_s *= 2.0;
        r.peak_rss_bytes = r.peak_rss_bytes.map(|b| b + 1);
    }
    second.peers[0]["prefill"][1]["tok_s"] = serde_json::json!(64.0);
    second.peers[0]["decode_ms_per_token"] = serde_json::json!(800.0);
    second.peers[1]["decode_ms_per_token"] = serde_json::json!(1.0);
    let rounds = vec![
        [run_figures(&first.runs), peer_figures(&first.peers)].concat(),
        [run_figures(&second.runs), peer_figures(&second.peers)].concat(),
    ];
    let (mut runs, mut peers) = (first.runs.clone(), first.peers.clone());
    keep_best_runs(&mut runs, second.runs.clone());
    keep_best_peers(&mut peers, second.peers.clone());
    for ((best, a), b) in runs.iter().zip(&first.runs).zip(&second.runs) {
        assert_eq!(best.prefill[0].tok_s, b.prefill[0].tok_s);
        assert_eq!(best.prefill[1].tok_s, a.prefill[1].tok_s);
        assert_eq!(best.decode[0].ms_per_token, b.decode[0].ms_per_token);
        assert_eq!(best.decode[1].ms_per_token, a.decode[1].ms_per_token);
        assert_eq!(
            (best.load_s, best.load_over_cat),
            (a.load_s, a.load_over_cat)
        );
        assert_eq!(best.peak_rss_bytes, b.peak_rss_bytes);
    }
    assert_eq!(peers[0]["prefill"][0]["tok_s"], 40.0);
    assert_eq!(peers[0]["prefill"][1]["tok_s"], 64.0);
    assert_eq!(peers[0]["decode_ms_per_token"], 400.0);
    assert_eq!(peers[1]["decode_ms_per_token"], 1.0);
    let mut report = fixed_report();
    (report.runs, report.peers, report.rounds) = (runs, peers, rounds.clone());
    insta::assert_snapshot!(lines(&rounds));
    assert!(report.table().contains(&lines(&rounds)));
    assert_eq!(lines(&rounds[..1]), "");
}
