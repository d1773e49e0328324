//! Greedy and seeded sampling on hand-made logits.

use phi3_model::{Sampler, Sampling, SamplingError, SamplingParams};

fn params(temperature: f32, top_k: Option<usize>, top_p: Option<f32>, seed: u64) -> Sampling {
    Sampling::Random(SamplingParams {
        temperature,
        top_k,
        top_p,
        seed,
    })
}

/// Logits whose softmax is exactly `probs`.
fn logits_of(probs: &[f64]) -> Vec<f32> {
    probs.iter().map(|p| p.ln() as f32).collect()
}

fn frequencies(mode: Sampling, logits: &[f32], suppress: &[u32], draws: usize) -> Vec<f64> {
    let mut s = Sampler::new(mode).unwrap();
    let mut counts = vec![0usize; logits.len()];
    for _ in 0..draws {
        counts[s.sample(logits, suppress).unwrap() as usize] += 1;
    }
    counts.iter().map(|&c| c as f64 / draws as f64).collect()
}

#[test]
fn greedy_is_argmax_with_first_tie() {
    let mut s = Sampler::greedy();
    assert_eq!(s.sample(&[0.1, 3.0, -1.0, 3.0], &[]).unwrap(), 1);
    assert_eq!(s.sample(&[0.1, 3.0, -1.0, 3.0], &[1]).unwrap(), 3);
    assert_eq!(s.sample(&[0.1, 3.0, -1.0, 3.0], &[1, 3, 99]).unwrap(), 0);
    assert_eq!(s.sample(&[f32::NEG_INFINITY, -5.0], &[]).unwrap(), 1);
    assert_eq!(
        Sampler::new(Sampling::Greedy)
            .unwrap()
            .sample(&[1.0, 2.0], &[])
            .unwrap(),
        1
    );
}

#[test]
fn invalid_logits_and_settings() {
    let mut s = Sampler::greedy();
    assert!(matches!(
        s.sample(&[], &[]),
        Err(SamplingError::EmptyLogits)
    ));
    assert!(matches!(
        s.sample(&[0.0, f32::NAN], &[]),
        Err(SamplingError::NanLogit { index: 1 })
    ));
    assert!(matches!(
        s.sample(&[1.0, 2.0], &[0, 1]),
        Err(SamplingError::NoCandidates)
    ));
    assert!(matches!(
        s.sample(&[f32::NEG_INFINITY; 3], &[]),
        Err(SamplingError::NoCandidates)
    ));
    let mut r = Sampler::new(params(1.0, None, None, 1)).unwrap();
    assert!(matches!(
        r.sample(&[1.0, 2.0], &[0, 1]),
        Err(SamplingError::NoCandidates)
    ));
    assert!(matches!(
        r.sample(&[f32::NEG_INFINITY; 2], &[]),
        Err(SamplingError::NoCandidates)
    ));
    assert!(matches!(
        r.sample(&[f32::NAN], &[]),
        Err(SamplingError::NanLogit { index: 0 })
    ));
    for (t, k, p) in [
        (0.0, None, None),
        (-1.0, None, None),
        (f32::NAN, None, None),
    ] {
        assert!(matches!(
            Sampler::new(params(t, k, p, 0)),
            Err(SamplingError::BadTemperature(_))
        ));
    }
    for p in [0.0, 1.5, -0.1, f32::NAN] {
        assert!(matches!(
            Sampler::new(params(1.0, None, Some(p), 0)),
            Err(SamplingError::BadTopP(_))
        ));
    }
    assert!(matches!(
        Sampler::new(params(1.0, Some(0), None, 0)),
        Err(SamplingError::BadTopK)
    ));
}

#[test]
fn seeded_sampling_is_deterministic() {
    let logits = logits_of(&[0.1, 0.2, 0.3, 0.25, 0.15]);
    let run = |seed| {
        let mut s = Sampler::new(params(0.8, Some(4), Some(0.95), seed)).unwrap();
        (0..64)
            .map(|_| s.sample(&logits, &[]).unwrap())
            .collect::<Vec<u32>>()
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
}

#[test]
fn plain_sampling_follows_the_softmax() {
    let probs = [0.1, 0.2, 0.3, 0.4];
    let f = frequencies(params(1.0, None, None, 7), &logits_of(&probs), &[], 40_000);
    for (got, want) in f.iter().zip(probs) {
        // 40k draws: standard error <= 0.0025; allow 4 sigma.
        assert!((got - want).abs() < 0.01, "{f:?}");
    }
}

#[test]
fn temperature_sharpens_or_flattens() {
    let logits = logits_of(&[0.1, 0.2, 0.3, 0.4]);
    // T = 0.5 squares the probabilities: [1, 4, 9, 16] / 30.
    let f = frequencies(params(0.5, None, None, 3), &logits, &[], 40_000);
    for (got, want) in f.iter().zip([1.0, 4.0, 9.0, 16.0]) {
        assert!((got - want / 30.0).abs() < 0.01, "{f:?}");
    }
    let f = frequencies(params(1000.0, None, None, 3), &logits, &[], 40_000);
    assert!(f.iter().all(|&p| (p - 0.25).abs() < 0.015), "{f:?}");
}

#[test]
fn top_k_and_top_p_truncate() {
    let logits = logits_of(&[0.1, 0.2, 0.3, 0.4]);
    // top_k 2 keeps 0.4 and 0.3, renormalised to 4:3.
    let f = frequencies(params(1.0, Some(2), None, 5), &logits, &[], 20_000);
    assert_eq!((f[0], f[1]), (0.0, 0.0));
    assert!((f[3] - 4.0 / 7.0).abs() < 0.015, "{f:?}");
    // top_p 0.65 keeps 0.4 (0 before it) and 0.3 (0.4 before it), not 0.2 (0.7 before it).
    let f = frequencies(params(1.0, None, Some(0.65), 5), &logits, &[], 20_000);
    assert_eq!((f[0], f[1]), (0.0, 0.0));
    assert!((f[3] - 4.0 / 7.0).abs() < 0.015, "{f:?}");
    // top_p smaller than the largest probability keeps exactly one token; top_k 1 too.
    for mode in [
        params(1.0, None, Some(0.05), 9),
        params(3.0, Some(1), None, 9),
    ] {
        let f = frequencies(mode, &logits, &[], 500);
        assert_eq!(f, [0.0, 0.0, 0.0, 1.0]);
    }
    // top_k keeps every token tied with the k-th.
    let f = frequencies(
        params(1.0, Some(1), None, 1),
        &[1.0, 5.0, 5.0, 0.0],
        &[],
        4000,
    );
    assert!(
        f[1] > 0.4 && f[2] > 0.4 && f[0] == 0.0 && f[3] == 0.0,
        "{f:?}"
    );
}

#[test]
fn suppressed_tokens_are_never_sampled() {
    let logits = logits_of(&[0.05, 0.05, 0.8, 0.1]);
    let f = frequencies(params(1.0, None, None, 11), &logits, &[2], 20_000);
    assert_eq!(f[2], 0.0);
    // The rest renormalise: 0.05 : 0.05 : 0.1.
    assert!((f[3] - 0.5).abs() < 0.02, "{f:?}");
    // Suppression happens before top-k: top_k 1 picks the best unsuppressed token.
    let f = frequencies(params(1.0, Some(1), None, 11), &logits, &[2], 200);
    assert_eq!(f, [0.0, 0.0, 0.0, 1.0]);
}
