//! A decoder model on a device mesh: load a checkpoint onto the mesh, then prefill and decode.
//!
//! The path of a token: the embedding row (replicated) -> every decoder layer
//! ([`crate::decoder`]) -> the final norm -> each device's `lm_head` vocab rows -> the logits
//! composed by concatenating the vocab shards in device order.
//!
//! Each kind of work of a step runs in a TRACE span (`tt_mesh::trace`): `embed`, `rope` (the
//! step's rotary rows), the layers' kinds ([`crate::decoder`]), `norm` (the final one),
//! `lm_head` and `all_gather` (the vocab shards composed).
//!
//! The rotary variant is chosen per forward call exactly as HF does (only LongRoPE has two: the
//! long factors for every position of the call iff its largest position + 1 exceeds
//! `original_max_position_embeddings`).

use tt_hf::Checkpoint;
use tt_hf::checkpoint::CheckpointWatch;
use tt_mesh::{Distribution, Mesh, MeshComposer, MeshTensor, op_span};
use tt_ops::{Fidelity, RopeTables, RopeVariant, Tensor, embedding, rms_norm};
use tt_shard::Plan;

use crate::config::DecoderConfig;
use crate::decoder::{AttentionStep, LayerContext, uniform_heads};
use crate::error::{Error, Result};
use crate::family::FamilyConfig;
use crate::kv_cache::KvCache;
use crate::precision::Numerics;
use crate::sharding::{RuntimeOptions, plan};
use crate::weights::ModelWeights;

/// Which positions of a forward call produce logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Every position (`[M, V]`).
    All,
    /// Only the last position (`[1, V]`): skips the LM head on the others.
    Last,
}

/// A decoder model whose weights live, sharded, on a mesh.
pub struct Model {
    config: DecoderConfig,
    plan: Plan,
    mesh: Mesh,
    numerics: Numerics,
    rope: RopeTables,
    weights: ModelWeights,
    heads: (usize, usize),
    /// The checkpoint's files, checked before every forward call: weights are read in place from
    /// the mapped files, so a file rewritten or truncated under the model is reported
    /// (`CheckpointError::FileChanged`) instead of read.
    watch: CheckpointWatch,
}

impl Model {
    /// Plans, checks memory, and loads `ckpt` onto a new mesh as `options` says.
    pub fn load<C: FamilyConfig + Sync>(
        ckpt: &Checkpoint<C>,
        options: &RuntimeOptions,
    ) -> Result<Self> {
        let config = ckpt.config().decoder_config();
        let plan = plan(&config, options)?;
        let mut mesh = Mesh::new(options.mesh, options.profile.clone(), options.topology);
        if let Some(transport) = &options.transport {
            mesh = mesh.with_transport(transport.clone())?;
        }
        let numerics = options.numerics()?;
        let weights = ModelWeights::load_with_cache(
            ckpt,
            &config,
            &plan,
            &mesh,
            &numerics,
            &options.packed_cache,
        )?;
        let per_device = (0..plan.num_devices())
            .map(|d| {
                plan.device_heads(d)
                    .map(|h| (h.q_sources.len(), h.kv_sources.len()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let heads = uniform_heads(&per_device)?;
        Ok(Self {
            rope: RopeTables::new(&config.rope),
            config,
            plan,
            mesh,
            numerics,
            weights,
            heads,
            watch: ckpt.watch(),
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// The tensor-parallel plan in use.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The mesh the model lives on.
    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    /// Activation fidelity.
    pub fn fidelity(&self) -> Fidelity {
        self.numerics.activations()
    }

    /// The precision the model computes in.
    pub fn numerics(&self) -> &Numerics {
        &self.numerics
    }

    /// The RoPE tables (both variants for LongRoPE).
    pub fn rope(&self) -> &RopeTables {
        &self.rope
    }

    /// A new, empty KV cache of the planned size, reserved on every device.
    pub fn new_cache(&self) -> Result<KvCache> {
        KvCache::with_dtype(&self.plan, &self.mesh, self.numerics.kv_dtype())
    }

    fn context(&self) -> LayerContext<'_> {
        LayerContext {
            mesh: &self.mesh,
            fidelity: self.numerics.activations(),
            kv_format: self.numerics.kv_block_format(),
            eps: self.config.rms_norm_eps as f32,
            sliding_window: self.config.sliding_window,
            heads: self.heads,
        }
    }

    fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        let vocab = self.config.vocab_size;
        match tokens.iter().position(|&t| t as usize >= vocab) {
            Some(i) => Err(Error::TokenOutOfRange {
                index: i,
                token: tokens[i],
                vocab_size: vocab,
            }),
            None => Ok(()),
        }
    }

    fn cos_sin(&self, variant: RopeVariant, positions: &[usize]) -> Result<(Tensor, Tensor)> {
        let dh = self.config.head_dim;
        let t = self.rope.cos_sin(variant, positions);
        let n = positions.len();
        Ok((
            Tensor::from_f32(t.cos, &[n, dh])?,
            Tensor::from_f32(t.sin, &[n, dh])?,
        ))
    }

    /// The embedding rows of `ids` (replicated), rounded to the activations' fidelity.
    fn embed(&self, ids: &[u32]) -> Result<Tensor> {
        let _span = op_span!("embed").entered();
        let table = self.weights.embed.replica()?;
        let rows = embedding(ids, table)?;
        // A table read on demand (packed presets) gives the pages of these rows back: a long
        // prompt would otherwise keep most of it resident (`Checkpoint::bf16_tensor_on_demand`).
        table.release_pages();
        Ok(self.fidelity().round(rows)?)
    }

    /// Runs `x` through every layer, the final norm and the LM head; returns `[rows, V]` logits.
    fn run(
        &self,
        cache: &mut KvCache,
        mut x: Tensor,
        step: &AttentionStep<'_>,
        logits: Logits,
        mut trace: Option<&mut Vec<(String, Tensor)>>,
    ) -> Result<Tensor> {
        let ctx = self.context();
        if let Some(t) = trace.as_deref_mut() {
            t.push(("embed".to_string(), x.clone()));
        }
        for (i, (w, layer_cache)) in self
            .weights
            .layers
            .iter()
            .zip(cache.layers.iter_mut())
            .enumerate()
        {
            ctx.forward(w, layer_cache, &mut x, step)?;
            check_finite(&x, &format!("the output of layer {i}"))?;
            if let Some(t) = trace.as_deref_mut() {
                t.push((format!("layer.{i}"), x.clone()));
            }
        }
        let m = x.dim(0)?;
        let x = match logits {
            Logits::All => x,
            Logits::Last => x.narrow(0, m.saturating_sub(1), m.min(1))?,
        };
        let x = op_span!("norm").in_scope(|| -> Result<Tensor> {
            Ok(self
                .fidelity()
                .round(rms_norm(&x, self.weights.final_norm.replica()?, ctx.eps)?)?)
        })?;
        if let Some(t) = trace {
            t.push(("final_norm".to_string(), x.clone()));
        }
        // Column-parallel LM head: each device's vocab rows, written in the preset's logits
        // format, composed in device order (gathered from every rank when the mesh spans
        // several: every rank gets the whole logits, so all of them pick the same next token).
        let shards = op_span!("lm_head")
            .in_scope(|| self.weights.lm_head.forward(&x))?
            .into_iter()
            .flatten()
            .collect::<Vec<_>>();
        let out = op_span!("all_gather").in_scope(|| -> Result<Tensor> {
            let sharded =
                MeshTensor::from_shards(&self.mesh, shards, Distribution::Sharded { dim: 1 })?;
            Ok(self
                .mesh
                .compose(&sharded, MeshComposer::Concat { dim: 1 })?)
        })?;
        check_finite(&out, "the logits")?;
        Ok(out)
    }

    /// Prefills `tokens` for `user` at positions `0 ..`, replacing whatever the user held.
    /// Returns logits for every position or only the last.
    pub fn prefill(
        &self,
        cache: &mut KvCache,
        user: usize,
        tokens: &[u32],
        logits: Logits,
    ) -> Result<Tensor> {
        self.prefill_traced(cache, user, tokens, logits, None)
    }

    /// [`Model::prefill`] that also records the residual stream: `embed`, the output of
    /// every layer (`layer.{i}`) and `final_norm`, each `[M, H]` (or `[1, H]` for the final
    /// norm with [`Logits::Last`]), for layer-by-layer comparison with a reference.
    pub fn prefill_traced(
        &self,
        cache: &mut KvCache,
        user: usize,
        tokens: &[u32],
        logits: Logits,
        trace: Option<&mut Vec<(String, Tensor)>>,
    ) -> Result<Tensor> {
        if tokens.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        self.watch.check()?;
        self.check_tokens(tokens)?;
        cache.check_room(user, 0, tokens.len())?;
        cache.reset(user);
        let positions: Vec<usize> = (0..tokens.len()).collect();
        let variant = self.rope.choose(tokens.len());
        let (cos, sin) = op_span!("rope").in_scope(|| self.cos_sin(variant, &positions))?;
        let x = self.embed(tokens)?;
        let step = AttentionStep::Prefill {
            user,
            cos: &cos,
            sin: &sin,
        };
        let out = self.run(cache, x, &step, logits, trace)?;
        cache.set(user, tokens.len(), variant);
        Ok(out)
    }

    /// Decodes one token per user (`None` skips a user) at each user's next position.
    /// Returns `[B, V]` logits (rows of skipped users are meaningless).
    ///
    /// The step runs as one [`tt_ops::team`] burst: its few hundred short parallel passes share
    /// spinning threads instead of waking pool workers for each.
    pub fn decode(&self, cache: &mut KvCache, tokens: &[Option<u32>]) -> Result<Tensor> {
        tt_ops::team::with_team(|| self.decode_step(cache, tokens))
    }

    fn decode_step(&self, cache: &mut KvCache, tokens: &[Option<u32>]) -> Result<Tensor> {
        if tokens.len() != cache.batch() {
            return Err(Error::BatchMismatch {
                given: tokens.len(),
                batch: cache.batch(),
            });
        }
        let active: Vec<u32> = tokens.iter().flatten().copied().collect();
        if active.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        self.watch.check()?;
        self.check_tokens(&active)?;
        let mut positions = Vec::with_capacity(tokens.len());
        let mut rows = Vec::with_capacity(tokens.len());
        for (user, token) in tokens.iter().enumerate() {
            match token {
                Some(_) => {
                    let pos = cache.len(user);
                    cache.check_room(user, pos, 1)?;
                    positions.push(pos as i32);
                    rows.push(pos);
                }
                None => {
                    positions.push(-1);
                    rows.push(0);
                }
            }
        }
        let longest = rows.iter().zip(tokens).filter(|(_, t)| t.is_some());
        let max_len = longest.map(|(&p, _)| p + 1).max().unwrap_or(1);
        let variant = self.rope.choose(max_len);
        let (cos, sin) = op_span!("rope").in_scope(|| self.cos_sin(variant, &rows))?;
        let ids: Vec<u32> = tokens.iter().map(|t| t.unwrap_or(0)).collect();
        let x = self.embed(&ids)?;
        let step = AttentionStep::Decode {
            positions: &positions,
            cos: &cos,
            sin: &sin,
        };
        let out = self.run(cache, x, &step, Logits::All, None)?;
        for (user, &p) in positions.iter().enumerate() {
            if p >= 0 {
                cache.set(user, p as usize + 1, variant);
            }
        }
        Ok(out)
    }
}

/// A typed error naming `what` when `t` holds NaN or infinity.
fn check_finite(t: &Tensor, what: &str) -> Result<()> {
    let values = t.f32_values();
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(Error::NonFinite {
            what: what.to_string(),
            index: i,
            value: values[i],
        }),
        None => Ok(()),
    }
}
