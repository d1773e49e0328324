#!/usr/bin/env python3
"""Write the tiny Phi-3 test checkpoints and their HuggingFace reference outputs.

Run through `cargo xtask fixtures` (which makes the venv), or directly:

    ~/.cache/tt-phi3/venv/bin/python scripts/make_fixtures.py --out fixtures

For every model in MODELS this writes `<out>/<name>/` in the HuggingFace layout (config.json,
generation_config.json, bf16 weights over two safetensors shards plus model.safetensors.index.json)
and `<out>/<name>/reference/` with fp32 outputs computed by transformers from the written files.
fixtures/README.md documents every file. Everything is fixed by seeds: two runs give identical bytes.

Each model must pass a sanity gate: HF itself, loading the written checkpoint in bf16, must reach
logits PCC >= MIN_HF_BF16_PCC against the fp32 references on both sequences (recorded in
reference/meta.json as `hf_bf16_pcc`); otherwise the script stops with an error.

Then it reloads each checkpoint once more, recomputes every reference and stops with an error unless
the numbers are bit-identical to what it wrote. If scripts/op_fixtures.py exists, its
`write(out_dir / "ops")` is called for the op-level fixtures.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import importlib.metadata
import json
import math
import os
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import GenerationConfig, Phi3Config, Phi3ForCausalLM

SCRIPTS_DIR = Path(__file__).resolve().parent

# Sequence lengths of the references (original_max_position_embeddings is 64 for every model).
ORIGINAL_MAX = 64
MAX_POSITIONS = 1024
SHORT_LEN = 40  # one forward call with max(position) + 1 <= 64: short factors
LONG_LEN = 80  # one forward call with max(position) + 1 > 64: long factors
PROMPT_LEN = 48
NEW_TOKENS = 32  # 48 + 32 = 80 > 64: generate recomputes its cache when the length reaches 65
PROMPT_CANDIDATES = 128  # prompts tried per model; the one with the largest smallest margin is kept
MIN_DISTINCT_NEW = 24  # candidates whose 32 new tokens have fewer distinct ids are rejected
MIN_RELATIVE_MARGIN = 5e-3  # the script fails if no candidate reaches this (top1-top2 over max|logit|)
# Sanity gate: HF itself, loading the written checkpoint in bf16, must track the fp32 reference
# logits at least this well (PCC, both sequences). A model that bf16 cannot follow (flat logits,
# attention so peaked that bf16 rounding flips it) would make bf16 comparisons meaningless.
MIN_HF_BF16_PCC = 0.9985
COS_SIN_SHORT_LEN = ORIGINAL_MAX
COS_SIN_LONG_LEN = 128
ROPE_THETA = 10000.0
TOTAL_BUDGET_BYTES = 20 * 1000 * 1000
FILE_BUDGET_BYTES = 8 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One tiny Phi-3 checkpoint."""

    name: str
    seed: int
    heads: int
    kv_heads: int
    head_dim: int
    layers: int
    intermediate: int
    vocab: int
    sliding_window: int | None
    tied: bool
    # "hub": config.json as the published Phi-3 checkpoints have it (`rope_scaling` with `type`,
    # top-level `rope_theta`, `torch_dtype`); "transformers": as transformers 5.x save_pretrained
    # writes it (`rope_parameters` holding `rope_type`, `rope_theta`, ...; `dtype`).
    config_style: str
    # Init recipe (see init_weights): qkv std qkv_scale/sqrt(H), embedding std, model.norm.weight
    # drawn from U(final_norm_range).
    qkv_scale: float = 2.5
    embed_std: float = 1.0
    final_norm_range: tuple[float, float] = (0.6, 1.4)

    @property
    def hidden(self) -> int:
        return self.heads * self.head_dim

    @property
    def eos_ids(self) -> list[int]:
        # Three stop tokens near the end of the vocabulary, like Phi-3's 32000/32001/32007.
        return [self.vocab - 10, self.vocab - 9, self.vocab - 3]


MODELS = [
    # Phi-3-mini proportions scaled down: MHA, head_dim 48 (not a multiple of 64), I = 2H.
    ModelSpec("phi3-tiny", 1001, 8, 8, 48, 2, 768, 1000, 2048, False, "hub"),
    ModelSpec("phi3-tiny-gqa", 1002, 8, 2, 16, 2, 256, 600, None, False, "transformers"),
    ModelSpec("phi3-tiny-window", 1003, 8, 8, 16, 2, 256, 600, 16, False, "hub"),
    # Tied: a small embedding (a large tied one makes every token predict itself), the logit scale
    # restored by a larger final norm weight, and less peaked attention so bf16 can follow it
    # through three layers (see MIN_HF_BF16_PCC).
    ModelSpec("phi3-tiny-tied", 1004, 8, 8, 16, 3, 256, 600, None, True, "transformers",
              qkv_scale=1.5, embed_std=0.1, final_norm_range=(1.8, 4.2)),
]


def fail(msg: str) -> None:
    print(f"make_fixtures: error: {msg}", file=sys.stderr)
    sys.exit(1)


def log(msg: str) -> None:
    print(f"make_fixtures: {msg}", file=sys.stderr, flush=True)


def check_versions(allow_mismatch: bool) -> dict[str, str]:
    """Compare installed packages with the pins in scripts/requirements.txt."""
    pins = {}
    for line in (SCRIPTS_DIR / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip()] = version.strip()
    found = {}
    for name, want in pins.items():
        have = importlib.metadata.version(name)
        found[name] = have
        if have.split("+", 1)[0] != want:
            msg = f"{name} {have} is installed but scripts/requirements.txt pins {want}"
            if allow_mismatch:
                log(f"warning: {msg}")
            else:
                fail(msg + " (pass --allow-version-mismatch to go on anyway)")
    return found


def set_deterministic() -> None:
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rope_factors(spec: ModelSpec) -> tuple[list[float], list[float]]:
    """Distinct short (about 1.0-1.5) and long (about 1.25-8) factors, exact in f32 (multiples of 1/256)."""
    n = spec.head_dim // 2
    g = generator(spec.seed * 10 + 1)
    jitter = (torch.rand(2, n, generator=g, dtype=torch.float64) - 0.5) * 0.1
    short, long = [], []
    for i in range(n):
        t = i / (n - 1)
        s = 1.0 + 0.5 * t * t + float(jitter[0, i])
        lf = 1.25 + 6.75 * t**1.5 + float(jitter[1, i])
        short.append(round(max(s, 1.0) * 256) / 256)
        long.append(round(lf * 256) / 256)
    assert all(abs(a - b) > 0.1 for a, b in zip(short, long))
    return short, long


def make_config(spec: ModelSpec) -> Phi3Config:
    short, long = rope_factors(spec)
    eos = spec.eos_ids
    return Phi3Config(
        vocab_size=spec.vocab,
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        max_position_embeddings=MAX_POSITIONS,
        original_max_position_embeddings=ORIGINAL_MAX,
        rope_scaling={"type": "longrope", "short_factor": short, "long_factor": long},
        rope_theta=ROPE_THETA,
        rms_norm_eps=1e-5,
        sliding_window=spec.sliding_window,
        tie_word_embeddings=spec.tied,
        bos_token_id=1,
        eos_token_id=eos[0],
        pad_token_id=eos[0],
    )


def init_weights(model: Phi3ForCausalLM, spec: ModelSpec) -> None:
    """Random weights with peaked attention and logits, rounded to bf16 values (parameters only).

    Scales (defaults of ModelSpec; the tied model overrides them): qkv std 2.5/sqrt(H) so attention
    is far from uniform and RoPE matters; o_proj, gate_up and down std 1/sqrt(fan_in); layer norm
    weights U(0.6, 1.4) so a missing norm weight shows; model.norm.weight U(0.6, 1.4); lm_head std
    3/sqrt(H) (max |logit| 12-15). Embedding std 1; the tied model uses 0.1 (a large tied embedding
    makes every token predict itself: the residual carries its own row straight to the logits), a
    final norm weight U(1.8, 4.2) for the same logit scale, and qkv std 1.5/sqrt(H).
    """
    g = generator(spec.seed)
    h, inter = spec.hidden, spec.intermediate
    with torch.no_grad():
        for name, p in model.named_parameters():
            shape = tuple(p.shape)
            if name.endswith("layernorm.weight"):
                v = torch.empty(shape).uniform_(0.6, 1.4, generator=g)
            elif name == "model.norm.weight":
                v = torch.empty(shape).uniform_(*spec.final_norm_range, generator=g)
            elif name == "model.embed_tokens.weight":
                v = torch.randn(shape, generator=g) * spec.embed_std
            elif name.endswith("qkv_proj.weight"):
                v = torch.randn(shape, generator=g) * (spec.qkv_scale / math.sqrt(h))
            elif name.endswith("o_proj.weight"):
                v = torch.randn(shape, generator=g) / math.sqrt(shape[1])
            elif name.endswith("gate_up_proj.weight"):
                v = torch.randn(shape, generator=g) / math.sqrt(h)
            elif name.endswith("down_proj.weight"):
                v = torch.randn(shape, generator=g) / math.sqrt(inter)
            elif name == "lm_head.weight":
                v = torch.randn(shape, generator=g) * (3.0 / math.sqrt(h))
            else:
                raise RuntimeError(f"no init rule for {name}")
            # Round the parameter values to bf16 and keep them in f32. The model itself is never
            # cast: that would also round the RoPE inv_freq buffers.
            p.data = v.to(torch.bfloat16).to(torch.float32)


def shard_size_for_two(model: Phi3ForCausalLM) -> int:
    """A max_shard_size (bytes) that makes save_pretrained write exactly two bf16 shards."""
    total = sum(p.numel() * 2 for p in model.parameters())
    return total * 6 // 10


def hub_style_config(hf: dict, spec: ModelSpec) -> dict:
    """Rewrite HF 5.x config.json keys into the layout of the published Phi-3 checkpoints."""
    rope = hf.pop("rope_parameters")
    out = {}
    for key, value in hf.items():
        if key == "dtype":
            out["torch_dtype"] = value
        else:
            out[key] = value
    out["attention_bias"] = False
    out["rope_scaling"] = {
        "long_factor": rope["long_factor"],
        "short_factor": rope["short_factor"],
        "type": "longrope",
    }
    out["rope_theta"] = rope["rope_theta"]
    return dict(sorted(out.items()))


def write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=False) + "\n")


def write_checkpoint(spec: ModelSpec, model_dir: Path) -> None:
    cfg = make_config(spec)
    model = Phi3ForCausalLM(cfg).eval()
    init_weights(model, spec)
    # Save a bf16 copy; the f32 model with bf16-valued parameters is left untouched.
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    bf16.save_pretrained(model_dir, max_shard_size=shard_size_for_two(model))
    shards = sorted(p.name for p in model_dir.glob("*.safetensors"))
    if len(shards) != 2:
        fail(f"{spec.name}: expected two shards, save_pretrained wrote {shards}")
    if spec.config_style == "hub":
        hf = json.loads((model_dir / "config.json").read_text())
        write_json(model_dir / "config.json", hub_style_config(hf, spec))
    gen = GenerationConfig(bos_token_id=1, eos_token_id=spec.eos_ids, pad_token_id=spec.eos_ids[0])
    gen.save_pretrained(model_dir)


def load(model_dir: Path) -> Phi3ForCausalLM:
    model = Phi3ForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    return model.eval()


def pcc(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two tensors, flattened, in f64."""
    a = a.double().flatten()
    b = b.double().flatten()
    a = a - a.mean()
    b = b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()))


def hf_bf16_pcc(model_dir: Path, logits: dict[str, torch.Tensor]) -> dict[str, float]:
    """PCC of HF's own logits with the checkpoint loaded in bf16 against the fp32 references."""
    model = Phi3ForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, attn_implementation="eager")
    model.eval()
    return {
        seq: pcc(forward_logits(model, logits[f"{seq}.input_ids"]), logits[f"{seq}.logits"])
        for seq in ("short", "long")
    }


def check_loaded_config(spec: ModelSpec, model: Phi3ForCausalLM) -> None:
    """The reloaded config must mean exactly what the spec says (both config.json styles)."""
    c = model.config
    short, long = rope_factors(spec)
    rp = c.rope_parameters
    got = (
        c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.num_hidden_layers,
        c.intermediate_size, c.vocab_size, c.sliding_window, c.tie_word_embeddings,
        rp["rope_type"], rp["rope_theta"], rp["original_max_position_embeddings"],
        list(rp["short_factor"]), list(rp["long_factor"]), c.max_position_embeddings,
    )
    want = (
        spec.hidden, spec.heads, spec.kv_heads, spec.layers, spec.intermediate, spec.vocab,
        spec.sliding_window, spec.tied, "longrope", ROPE_THETA, ORIGINAL_MAX, short, long,
        MAX_POSITIONS,
    )
    if got != want:
        fail(f"{spec.name}: reloaded config differs from the spec:\n got {got}\nwant {want}")
    has_lm_head = any("lm_head" in k for k in weight_names(Path(model.name_or_path)))
    if has_lm_head == spec.tied:
        fail(f"{spec.name}: lm_head present={has_lm_head} but tied={spec.tied}")


def weight_names(model_dir: Path) -> list[str]:
    index = json.loads((model_dir / "model.safetensors.index.json").read_text())
    return sorted(index["weight_map"])


# ---------------------------------------------------------------------------------------------
# References


def token_ids(spec: ModelSpec, stream: int, length: int) -> torch.Tensor:
    return torch.randint(0, spec.vocab, (length,), generator=generator(spec.seed * 1000 + stream))


def forward_logits(model: Phi3ForCausalLM, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids[None], use_cache=False).logits[0].contiguous()


def hidden_states(model: Phi3ForCausalLM, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Residual stream captured with forward hooks: embed, layer.<i> outputs, final_norm."""
    captured: dict[str, torch.Tensor] = {}

    def hook(name):
        def f(_module, _inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            captured[name] = out[0].detach().clone().contiguous()

        return f

    inner = model.model
    handles = [inner.embed_tokens.register_forward_hook(hook("embed"))]
    for i, layer in enumerate(inner.layers):
        handles.append(layer.register_forward_hook(hook(f"layer.{i}")))
    handles.append(inner.norm.register_forward_hook(hook("final_norm")))
    try:
        logits = forward_logits(model, ids)
    finally:
        for h in handles:
            h.remove()
    expected = ["embed"] + [f"layer.{i}" for i in range(len(inner.layers))] + ["final_norm"]
    if sorted(captured) != sorted(expected):
        raise RuntimeError(f"hooks captured {sorted(captured)}, expected {expected}")
    captured["logits"] = logits
    return captured


def rope_tables(model: Phi3ForCausalLM) -> tuple[dict[str, torch.Tensor], float]:
    """inv_freq and cos/sin exactly as the model's rotary module produces them."""
    rot = model.model.rotary_emb
    x = torch.zeros(1, dtype=torch.float32)
    with torch.no_grad():
        cos_s, sin_s = rot(x, torch.arange(COS_SIN_SHORT_LEN)[None])
        inv_short = rot.inv_freq.detach().clone()
        cos_l, sin_l = rot(x, torch.arange(COS_SIN_LONG_LEN)[None])
        inv_long = rot.inv_freq.detach().clone()
    if not torch.equal(inv_short, rot.original_inv_freq):
        raise RuntimeError("short-call inv_freq is not the module's original (short) table")
    if not torch.equal(inv_long, rot.long_inv_freq):
        raise RuntimeError("long-call inv_freq is not the module's long table")
    tensors = {
        "inv_freq_short": inv_short,
        "inv_freq_long": inv_long,
        "cos_short": cos_s[0].contiguous(),
        "sin_short": sin_s[0].contiguous(),
        "cos_long": cos_l[0].contiguous(),
        "sin_long": sin_l[0].contiguous(),
    }
    return {k: v.clone().contiguous() for k, v in tensors.items()}, float(rot.attention_scaling)


def greedy(model: Phi3ForCausalLM, prompt: torch.Tensor) -> dict:
    """HF greedy generate; records tokens, per-step margins and the lengths of each forward call."""
    calls: list[int] = []

    def pre_hook(_module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        calls.append(int(ids.shape[1]))

    handle = model.model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        with torch.no_grad():
            out = model.generate(
                input_ids=prompt[None],
                attention_mask=torch.ones(1, prompt.numel(), dtype=torch.long),
                do_sample=False,
                max_new_tokens=NEW_TOKENS,
                output_logits=True,
                return_dict_in_generate=True,
            )
    finally:
        handle.remove()
    margins, relative = [], []
    for step in out.logits:
        row = step[0].double()
        top = torch.topk(row, 2).values
        margins.append(float(top[0] - top[1]))
        relative.append(float((top[0] - top[1]) / row.abs().max()))
    return {
        "output_ids": [int(t) for t in out.sequences[0]],
        "step_margins": margins,
        "step_relative_margins": relative,
        "forward_input_lengths": calls,
    }


def greedy_cached_no_recompute(model: Phi3ForCausalLM, prompt: torch.Tensor) -> dict:
    """Greedy with plain cached forward calls (an eval loop): the cache is never recomputed.

    Past original_max the new positions use long factors while the cached keys keep their short
    ones; recorded so a model's plain cached path can be told apart from HF generate.
    """
    from transformers import DynamicCache

    ids = [int(t) for t in prompt]
    cache = DynamicCache(config=model.config)
    step_input = prompt[None]
    margins, relative = [], []
    with torch.no_grad():
        for _ in range(NEW_TOKENS):
            out = model(input_ids=step_input, cache=cache, use_cache=True)
            cache = out.cache
            row = out.logits[0, -1].double()
            top = torch.topk(row, 2)
            margins.append(float(top.values[0] - top.values[1]))
            relative.append(margins[-1] / float(row.abs().max()))
            nxt = int(top.indices[0])
            ids.append(nxt)
            if nxt in model.generation_config.eos_token_id:
                break
            step_input = torch.tensor([[nxt]])
    return {"output_ids": ids, "min_margin": min(margins), "min_relative_margin": min(relative)}


def choose_prompt(spec: ModelSpec, model: Phi3ForCausalLM) -> tuple[torch.Tensor, dict, int]:
    """Try PROMPT_CANDIDATES seeded prompts; keep the varied greedy path with the widest margins.

    The margin of a step is top1 - top2 of its logits; relative margin divides by max |logit|. The
    score is the smallest relative margin over both greedy paths (HF generate, and plain cached
    calls without the recompute), and the two paths must differ.
    """
    best = None
    for k in range(PROMPT_CANDIDATES):
        prompt = token_ids(spec, 100 + k, PROMPT_LEN)
        res = greedy(model, prompt)
        new = res["output_ids"][PROMPT_LEN:]
        if len(new) != NEW_TOKENS:
            continue  # stopped early on a stop token
        if len(set(new)) < MIN_DISTINCT_NEW:
            continue  # a path stuck on a few tokens would let wrong models pass
        score = min(res["step_relative_margins"])
        if best is not None and score <= best[0]:
            continue  # cannot win: skip the second greedy path
        plain = greedy_cached_no_recompute(model, prompt)
        if plain["output_ids"] == res["output_ids"]:
            continue  # the recompute must change the tokens, or it goes untested
        score = min(score, plain["min_relative_margin"])
        if best is None or score > best[0]:
            best = (score, k, prompt, res)
    if best is None:
        fail(f"{spec.name}: no candidate prompt qualifies (stop token, repeats, or no recompute effect)")
    score, k, prompt, res = best
    if score < MIN_RELATIVE_MARGIN:
        fail(f"{spec.name}: best prompt has relative margin {score:.2e} < {MIN_RELATIVE_MARGIN}")
    return prompt, res, k


def compute_references(spec: ModelSpec, model: Phi3ForCausalLM, prompt: torch.Tensor | None):
    """All reference tensors and JSON for one loaded model (prompt None: search for one)."""
    short_ids = token_ids(spec, 1, SHORT_LEN)
    long_ids = token_ids(spec, 2, LONG_LEN)
    logits = {
        "short.input_ids": short_ids,
        "short.logits": forward_logits(model, short_ids),
        "long.input_ids": long_ids,
        "long.logits": forward_logits(model, long_ids),
    }
    hidden = hidden_states(model, short_ids)
    if not torch.equal(hidden.pop("logits"), logits["short.logits"]):
        raise RuntimeError(f"{spec.name}: hooked forward changed the logits")
    hidden["input_ids"] = short_ids
    rope, attention_factor = rope_tables(model)
    if prompt is None:
        prompt, gen, candidate = choose_prompt(spec, model)
    else:
        gen, candidate = greedy(model, prompt), None
    gen["no_recompute"] = greedy_cached_no_recompute(model, prompt)
    return logits, hidden, rope, attention_factor, prompt, gen, candidate


def generate_json(spec: ModelSpec, prompt: torch.Tensor, gen: dict, candidate: int) -> dict:
    lengths = gen["forward_input_lengths"]
    recompute = [i for i, n in enumerate(lengths) if i > 0 and n > 1]
    plain = gen["no_recompute"]
    pairs = list(zip(gen["output_ids"], plain["output_ids"]))
    first_diff = next((i for i, (a, b) in enumerate(pairs) if a != b), None)
    return {
        "prompt_ids": [int(t) for t in prompt],
        "max_new_tokens": NEW_TOKENS,
        "do_sample": False,
        "eos_token_id": spec.eos_ids,
        "output_ids": gen["output_ids"],
        "new_ids": gen["output_ids"][PROMPT_LEN:],
        "original_max_position_embeddings": ORIGINAL_MAX,
        "forward_input_lengths": lengths,
        "recompute_at_call": recompute,
        "recompute_total_length": [lengths[i] for i in recompute],
        "step_margins": gen["step_margins"],
        "step_relative_margins": gen["step_relative_margins"],
        "min_margin": min(gen["step_margins"]),
        "min_relative_margin": min(gen["step_relative_margins"]),
        "prompt_candidate": candidate,
        "no_recompute_output_ids": plain["output_ids"],
        "no_recompute_min_margin": plain["min_margin"],
        "no_recompute_min_relative_margin": plain["min_relative_margin"],
        "no_recompute_first_difference": first_diff,
    }


def write_references(spec: ModelSpec, model_dir: Path, versions: dict[str, str]) -> dict:
    model = load(model_dir)
    check_loaded_config(spec, model)
    logits, hidden, rope, attention_factor, prompt, gen, candidate = compute_references(spec, model, None)
    bf16_pcc = hf_bf16_pcc(model_dir, logits)
    for seq, value in bf16_pcc.items():
        if not value >= MIN_HF_BF16_PCC:
            fail(f"{spec.name}: HF in bf16 reaches logits PCC {value:.5f} < {MIN_HF_BF16_PCC} on the "
                 f"{seq} sequence: bf16 cannot follow this model, change its init recipe")
    ref = model_dir / "reference"
    ref.mkdir()
    save_file(logits, ref / "logits.safetensors")
    save_file(hidden, ref / "hidden.safetensors")
    save_file(rope, ref / "rope.safetensors")
    write_json(ref / "rope.json", {
        "rope_type": "longrope",
        "rope_theta": ROPE_THETA,
        "original_max_position_embeddings": ORIGINAL_MAX,
        "max_position_embeddings": MAX_POSITIONS,
        "attention_factor": attention_factor,
        "cos_sin_short_positions": COS_SIN_SHORT_LEN,
        "cos_sin_long_positions": COS_SIN_LONG_LEN,
    })
    generation = generate_json(spec, prompt, gen, candidate)
    write_json(ref / "generate.json", generation)
    write_json(ref / "meta.json", {
        "generator": "scripts/make_fixtures.py",
        "versions": versions,
        "dtype": "float32",
        "attn_implementation": "eager",
        "token_id_dtype": "I64",
        "seed": spec.seed,
        "hf_bf16_pcc": bf16_pcc,
    })
    generation["hf_bf16_pcc"] = bf16_pcc
    generation["max_abs_logit"] = {
        seq: float(logits[f"{seq}.logits"].abs().max()) for seq in ("short", "long")
    }
    return generation


def verify(spec: ModelSpec, model_dir: Path, reference_model: Phi3ForCausalLM) -> None:
    """Reload from the files and recompute every reference; all must be bit-identical."""
    model = load(model_dir)
    check_loaded_config(spec, model)
    ref = model_dir / "reference"
    want_logits = load_file(ref / "logits.safetensors")
    want_hidden = load_file(ref / "hidden.safetensors")
    want_rope = load_file(ref / "rope.safetensors")
    want_gen = json.loads((ref / "generate.json").read_text())
    want_factor = json.loads((ref / "rope.json").read_text())["attention_factor"]
    prompt = torch.tensor(want_gen["prompt_ids"], dtype=torch.int64)
    logits, hidden, rope, factor, _, gen, _ = compute_references(spec, model, prompt)
    for what, got, want in (("logits", logits, want_logits), ("hidden", hidden, want_hidden),
                            ("rope", rope, want_rope)):
        if sorted(got) != sorted(want):
            fail(f"{spec.name}: {what} tensors {sorted(got)} != written {sorted(want)}")
        for name in got:
            if got[name].dtype != want[name].dtype or not torch.equal(got[name], want[name]):
                diff = (got[name].double() - want[name].double()).abs().max()
                fail(f"{spec.name}: {what}/{name} not reproduced (max diff {diff})")
    if factor != want_factor:
        fail(f"{spec.name}: attention factor {factor} != written {want_factor}")
    want_bf16 = json.loads((ref / "meta.json").read_text())["hf_bf16_pcc"]
    if hf_bf16_pcc(model_dir, want_logits) != want_bf16:
        fail(f"{spec.name}: HF bf16 PCC not reproduced (written {want_bf16})")
    if gen["output_ids"] != want_gen["output_ids"]:
        fail(f"{spec.name}: greedy tokens not reproduced")
    if gen["no_recompute"]["output_ids"] != want_gen["no_recompute_output_ids"]:
        fail(f"{spec.name}: cached greedy tokens (no recompute) not reproduced")
    # The in-memory model (bf16-valued f32 parameters) must agree with the reloaded one too.
    for name in ("short", "long"):
        got = forward_logits(reference_model, want_logits[f"{name}.input_ids"])
        if not torch.equal(got, want_logits[f"{name}.logits"]):
            fail(f"{spec.name}: in-memory model and reloaded checkpoint differ on {name} logits")


def in_memory_model(spec: ModelSpec) -> Phi3ForCausalLM:
    cfg = make_config(spec)
    cfg._attn_implementation = "eager"  # as `load` asks from_pretrained for
    model = Phi3ForCausalLM(cfg).eval()
    if model.config._attn_implementation != "eager":
        fail(f"{spec.name}: in-memory model uses {model.config._attn_implementation} attention")
    init_weights(model, spec)
    return model


def write_ops(out: Path) -> None:
    if not (SCRIPTS_DIR / "op_fixtures.py").exists():
        log("scripts/op_fixtures.py not found: op fixtures skipped")
        return
    sys.path.insert(0, str(SCRIPTS_DIR))
    import op_fixtures  # noqa: E402  (written by the ops side of the project)

    ops = out / "ops"
    log(f"writing op fixtures to {ops}")
    op_fixtures.write(ops)


def check_budget(out: Path) -> tuple[int, int]:
    """No file under `out` over 8 MiB; the test fixtures (these models, ops/, phi3-tokenizer/)
    together within 20 MB. Returns (test fixture bytes, bytes of everything under `out`)."""
    counted = {s.name for s in MODELS} | {"ops", "phi3-tokenizer"}
    total = everything = 0
    for path in sorted(out.rglob("*")):
        if path.is_file():
            size = path.stat().st_size
            everything += size
            if path.relative_to(out).parts[0] in counted:
                total += size
            if size > FILE_BUDGET_BYTES:
                fail(f"{path} is {size} bytes, over the {FILE_BUDGET_BYTES}-byte file budget")
    if total > TOTAL_BUDGET_BYTES:
        fail(f"test fixtures total {total} bytes, over the {TOTAL_BUDGET_BYTES}-byte budget")
    return total, everything


def sha256_listing(out: Path, names: list[str]) -> list[str]:
    lines = []
    for name in names:
        for path in sorted((out / name).rglob("*")):
            if path.is_file():
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                lines.append(f"{digest}  {path.relative_to(out)}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("fixtures"), help="fixtures directory")
    parser.add_argument("--only", action="append", help="write only this model (repeatable)")
    parser.add_argument("--skip-ops", action="store_true", help="do not call op_fixtures.write")
    parser.add_argument("--allow-version-mismatch", action="store_true")
    parser.add_argument("--sha256", action="store_true", help="print sha256 of every written file")
    args = parser.parse_args()

    versions = check_versions(args.allow_version_mismatch)
    set_deterministic()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    specs = [s for s in MODELS if not args.only or s.name in args.only]
    if args.only and len(specs) != len(args.only):
        fail(f"unknown model in --only {args.only}; known: {[s.name for s in MODELS]}")

    for spec in specs:
        model_dir = out / spec.name
        if model_dir.exists():
            shutil.rmtree(model_dir)
        log(f"{spec.name}: writing checkpoint")
        write_checkpoint(spec, model_dir)
        log(f"{spec.name}: computing references")
        gen = write_references(spec, model_dir, versions)
        log(f"{spec.name}: verifying a fresh reload against the written references")
        verify(spec, model_dir, in_memory_model(spec))
        log(
            f"{spec.name}: ok; greedy min margin {gen['min_margin']:.4f} "
            f"(relative {gen['min_relative_margin']:.4f}); without recompute "
            f"{gen['no_recompute_min_margin']:.4f} (relative {gen['no_recompute_min_relative_margin']:.4f}); "
            f"cache recomputed at total length {gen['recompute_total_length']}; paths differ from "
            f"index {gen['no_recompute_first_difference']}; max |logit| short "
            f"{gen['max_abs_logit']['short']:.2f} long {gen['max_abs_logit']['long']:.2f}; HF bf16 PCC "
            f"short {gen['hf_bf16_pcc']['short']:.5f} long {gen['hf_bf16_pcc']['long']:.5f}"
        )

    if not args.skip_ops:
        write_ops(out)
    total, everything = check_budget(out)
    log(f"test fixtures (models, ops, tokenizer): {total} bytes; everything in {out}: {everything} bytes")
    if args.sha256:
        print("\n".join(sha256_listing(out, [s.name for s in specs] + (["ops"] if (out / "ops").exists() else []))))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
