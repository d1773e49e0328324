//! Bad input to the model: typed errors that name the problem (kind and message).

use phi3_model::{Checkpoint, Error, Logits, Phi3Model, RuntimeOptions};
use tt_mesh::{DeviceProfile, MeshError, MeshShape};
use tt_shard::PlanError;

use crate::support::{fill_bf16, poke_bf16, tiny, write_tile_aligned};

fn options(mesh: (usize, usize), max_seq_len: usize) -> RuntimeOptions {
    let mut opts = RuntimeOptions::new(MeshShape::new(mesh.0, mesh.1).unwrap());
    opts.max_seq_len = max_seq_len;
    opts
}

fn model(mesh: (usize, usize), max_seq_len: usize) -> Result<Phi3Model, Error> {
    let ckpt = Checkpoint::open_dir(&tiny()).unwrap();
    Phi3Model::load(&ckpt, &options(mesh, max_seq_len))
}

#[test]
fn token_ids_past_the_vocab_are_refused() {
    let m = model((1, 2), 64).unwrap();
    let mut cache = m.new_cache().unwrap();
    let err = m
        .prefill(&mut cache, 0, &[1, 2, 1000], Logits::Last)
        .unwrap_err();
    assert!(matches!(
        err,
        Error::TokenOutOfRange {
            index: 2,
            token: 1000,
            vocab_size: 1000
        }
    ));
    assert_eq!(
        err.to_string(),
        "token 1000 at index 2 is out of range: the model's vocab_size is 1000; check that the \
         tokenizer belongs to this model"
    );
    // Decode checks its tokens too.
    m.prefill(&mut cache, 0, &[1, 2], Logits::Last).unwrap();
    let err = m.decode(&mut cache, &[Some(u32::MAX)]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TokenOutOfRange {
                token: u32::MAX,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn sequences_longer_than_the_cache_are_refused() {
    let m = model((1, 1), 32).unwrap();
    let mut cache = m.new_cache().unwrap();
    let tokens: Vec<u32> = (0..33).collect();
    let err = m.prefill(&mut cache, 0, &tokens, Logits::Last).unwrap_err();
    assert!(
        matches!(
            err,
            Error::SequenceTooLong {
                needed: 33,
                capacity: 32
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().starts_with(
            "the sequence needs 33 positions but the KV cache holds 32; raise --max-seq-len"
        ),
        "{err}"
    );
    // Decoding past the end is refused too, and the cache is left as it was.
    let full: Vec<u32> = (0..32).collect();
    m.prefill(&mut cache, 0, &full, Logits::Last).unwrap();
    let err = m.decode(&mut cache, &[Some(1)]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::SequenceTooLong {
                needed: 33,
                capacity: 32
            }
        ),
        "{err}"
    );
    assert_eq!(cache.len(0), 32);
}

#[test]
fn empty_prompts_are_refused() {
    let m = model((1, 1), 32).unwrap();
    let mut cache = m.new_cache().unwrap();
    let err = m.prefill(&mut cache, 0, &[], Logits::Last).unwrap_err();
    assert!(matches!(err, Error::EmptyPrompt), "{err}");
    assert_eq!(
        err.to_string(),
        "the prompt is empty: give at least one token"
    );
    let err = m.decode(&mut cache, &[None]).unwrap_err();
    assert!(matches!(err, Error::EmptyPrompt), "{err}");
}

#[test]
fn a_mesh_no_head_padding_can_serve_is_refused_before_loading() {
    // 8 heads on 3 devices are padded (see tt-lm's tests); 16 devices cannot each get a real head.
    let err = model((2, 8), 32).err().expect("2x8 cannot hold 8 heads");
    assert!(
        matches!(
            err,
            Error::Plan(PlanError::MoreDevicesThanHeads {
                heads: 8,
                devices: 16,
                ..
            })
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("a mesh of 16 devices cannot serve a model with 8 query heads"),
        "{err}"
    );
}

/// NaN or infinity in one layer's weights is reported naming that layer, whatever the mesh.
#[test]
fn non_finite_weights_are_reported_with_their_layer() {
    for (layer, tensor, value, mesh) in [
        (1, "mlp.down_proj.weight", f32::NAN, (1, 2)),
        (0, "self_attn.qkv_proj.weight", f32::INFINITY, (2, 4)),
        (1, "input_layernorm.weight", f32::NEG_INFINITY, (1, 1)),
    ] {
        let dir = crate::support::copy_of("phi3-tiny");
        poke_bf16(
            dir.path(),
            &format!("model.layers.{layer}.{tensor}"),
            5,
            value,
        );
        let ckpt = Checkpoint::open_dir(dir.path()).unwrap();
        let m = Phi3Model::load(&ckpt, &options(mesh, 16)).unwrap();
        let mut cache = m.new_cache().unwrap();
        let err = m
            .prefill(&mut cache, 0, &[1, 2, 3, 4], Logits::Last)
            .unwrap_err();
        match &err {
            Error::NonFinite { what, value, .. } => {
                assert_eq!(what, &format!("the output of layer {layer}"));
                assert!(!value.is_finite());
            }
            other => panic!("{tensor}: {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.starts_with("non-finite value")
                && msg.contains(&format!("in the output of layer {layer} (element"))
                && msg.ends_with("the checkpoint or the input is corrupt"),
            "{msg}"
        );
    }
}

/// Finite weights whose products overflow f32 give infinite activations: reported with the
/// layer where they first appear.
#[test]
fn overflowing_activations_are_reported_with_their_layer() {
    let dir = crate::support::copy_of("phi3-tiny");
    fill_bf16(dir.path(), "model.layers.1.mlp.down_proj.weight", 3.0e38);
    let ckpt = Checkpoint::open_dir(dir.path()).unwrap();
    let m = Phi3Model::load(&ckpt, &options((1, 2), 16)).unwrap();
    let mut cache = m.new_cache().unwrap();
    let err = m
        .prefill(&mut cache, 0, &[5, 6, 7], Logits::All)
        .unwrap_err();
    assert!(
        matches!(&err, Error::NonFinite { what, .. } if what == "the output of layer 1"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("in the output of layer 1"),
        "{err}"
    );
}

/// A KV cache beyond a Wormhole chip's DRAM is refused by the plan, before any weight or cache
/// byte exists, with the bytes needed and available.
#[test]
fn a_kv_cache_over_the_device_budget_is_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    write_tile_aligned(dir.path());
    let ckpt = Checkpoint::open_dir(dir.path()).unwrap();
    for (seq, batch) in [(100_000_000, 1), (4096, 200_000)] {
        let mut opts = options((1, 2), seq);
        opts.max_batch = batch;
        opts.profile = DeviceProfile::wormhole_b0();
        // The plan alone refuses it: no mesh, no tensor, no allocation.
        let err = phi3_model::plan(ckpt.config(), &opts).unwrap_err();
        let Error::Plan(PlanError::OutOfMemory {
            device: 0,
            needed,
            available,
            kv_cache,
            seq_len,
            batch: b,
            ..
        }) = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!((*available, *seq_len, *b), (12_000_000_000, seq, batch));
        assert!(*needed > *available && *kv_cache > *available, "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("KV cache for {seq} tokens x batch {batch})"))
                && msg.contains("but profile wormhole_b0 has 12.000 GB"),
            "{msg}"
        );
        let err = Phi3Model::load(&ckpt, &opts).err().expect("refused");
        assert_eq!(err.to_string(), msg);
    }
    // A cache that fits loads.
    let mut opts = options((1, 2), 4096);
    opts.profile = DeviceProfile::wormhole_b0();
    let m = Phi3Model::load(&ckpt, &opts).unwrap();
    m.new_cache().unwrap();
}

/// Under f32 fidelity the cache holds f32 keys, twice the bytes the plan counts: the mesh
/// refuses the cache's reservation before allocating it, and nothing stays reserved.
#[test]
fn a_kv_cache_over_the_mesh_budget_is_refused_by_the_mesh() {
    let ckpt = Checkpoint::open_dir(&tiny()).unwrap();
    let unbounded = Phi3Model::load(&ckpt, &options((1, 2), 1024)).unwrap();
    let weights_used = unbounded.mesh().memory(0).unwrap().used;
    let kv_planned = unbounded.plan().kv_cache().bytes;
    let budget = weights_used + kv_planned * 3 / 2;
    let mut opts = options((1, 2), 1024);
    opts.profile = DeviceProfile::host_with_budget(budget);
    let m = Phi3Model::load(&ckpt, &opts).unwrap();
    let used = |d| m.mesh().memory(d).unwrap().used;
    let before = [used(0), used(1)];
    let err = m.new_cache().err().expect("an f32 cache does not fit");
    let Error::Mesh(MeshError::OutOfMemory {
        device: 0,
        needed,
        available,
        budget: b,
        ..
    }) = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(
        (*needed, *available, *b),
        (2 * kv_planned, budget - before[0], budget)
    );
    assert_eq!(
        err.to_string(),
        format!(
            "mesh: device 0 is out of memory: {needed} bytes needed, {available} available \
             ({} of {budget} in use)",
            before[0]
        )
    );
    assert_eq!(
        [used(0), used(1)],
        before,
        "the refused cache left bytes reserved"
    );
}
