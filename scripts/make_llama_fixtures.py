#!/usr/bin/env python3
"""Write the tiny Llama test checkpoints (`LlamaForCausalLM`) and their HuggingFace references.

Run through `cargo xtask fixtures --llama` (which makes the venv), or directly:

    ~/.cache/tt-phi3/venv/bin/python scripts/make_llama_fixtures.py --out fixtures

The layout, the reference formats and the checks are those of scripts/make_fixtures.py (the tiny
Phi-3 fixtures), whose helpers this script imports: HF layout with bf16 weights in two safetensors
shards plus the index, `reference/` with fp32 all-position logits of two sequences, the residual
stream per layer, RoPE tables and HF greedy `generate` (32 new tokens); the bf16 sanity gate; a
reload that must reproduce every reference bit for bit; two runs give identical bytes.
fixtures/README.md documents the models and the few keys that differ from Phi-3's.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

SCRIPTS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS_DIR))
import make_fixtures as mf  # noqa: E402  (helpers shared with the Phi-3 fixtures)

SHORT_LEN, LONG_LEN = mf.SHORT_LEN, mf.LONG_LEN  # 40, 80
PROMPT_LEN, NEW_TOKENS = mf.PROMPT_LEN, mf.NEW_TOKENS  # 48 + 32 = 80
COS_SIN_LEN = 128
MAX_POSITIONS = 1024
LLAMA_TOTAL_BUDGET_BYTES = 8 * 1000 * 1000  # the Llama fixtures together


@dataclasses.dataclass(frozen=True)
class LlamaSpec:
    """One tiny Llama checkpoint."""

    name: str
    seed: int
    heads: int
    kv_heads: int
    head_dim: int
    layers: int
    intermediate: int
    vocab: int
    tied: bool
    rope_theta: float
    # None: plain RoPE; else the llama3 `rope_scaling` values.
    llama3: dict | None
    # "hub": config.json as published Llama checkpoints have it (`rope_scaling`, top-level
    # `rope_theta`, `torch_dtype`); "transformers": as transformers 5.x writes it (`rope_parameters`).
    config_style: str
    qkv_scale: float = 2.5
    embed_std: float = 1.0
    final_norm_range: tuple[float, float] = (0.6, 1.4)

    @property
    def hidden(self) -> int:
        return self.heads * self.head_dim

    @property
    def eos_ids(self) -> list[int]:
        return [self.vocab - 10, self.vocab - 9, self.vocab - 3]


# Tied recipe (as phi3-tiny-tied): a small embedding, the logit scale restored by a larger final
# norm weight, less peaked attention so bf16 can follow it.
TIED = dict(qkv_scale=1.5, embed_std=0.1, final_norm_range=(1.8, 4.2))
# llama3 scaling with original_max_position_embeddings 32: at head_dim 32 and theta 10000 the
# two fastest frequencies (wavelength < 8) are kept, the next two are interpolated, and the
# other twelve are divided by 8; the references run to position 127.
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 32}

MODELS = [
    LlamaSpec("llama-tiny-gqa", 2001, 8, 2, 16, 2, 256, 600, False, 10000.0, None, "transformers"),
    LlamaSpec("llama-tiny-tied", 2002, 8, 8, 16, 3, 256, 600, True, 10000.0, None, "transformers", **TIED),
    # MQA (8 query heads, one KV head: every mesh up to 8 devices), head_dim 32, hub-style config
    # like Llama 3.2's.
    LlamaSpec("llama-tiny-llama3", 2003, 8, 1, 32, 2, 256, 600, False, 10000.0, LLAMA3, "hub"),
    # SmolLM2's head counts (9 query, 3 KV heads: a 2x4 mesh must pad), tied, theta 1e5, hub style.
    LlamaSpec("llama-tiny-odd", 2004, 9, 3, 16, 2, 288, 600, True, 100000.0, None, "hub", **TIED),
]


def make_config(spec: LlamaSpec) -> LlamaConfig:
    eos = spec.eos_ids
    rope = {"rope_type": "default", "rope_theta": spec.rope_theta}
    if spec.llama3 is not None:
        rope = {**spec.llama3, "rope_theta": spec.rope_theta}
    return LlamaConfig(
        vocab_size=spec.vocab,
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=MAX_POSITIONS,
        rope_parameters=rope,
        rms_norm_eps=1e-5,
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=spec.tied,
        bos_token_id=1,
        eos_token_id=eos[0],
        pad_token_id=eos[0],
    )


def init_weights(model: LlamaForCausalLM, spec: LlamaSpec) -> None:
    """make_fixtures.init_weights' recipe with Llama's separate projections."""
    g = mf.generator(spec.seed)
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
            elif name.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight")):
                v = torch.randn(shape, generator=g) * (spec.qkv_scale / math.sqrt(h))
            elif name.endswith("o_proj.weight"):
                v = torch.randn(shape, generator=g) / math.sqrt(shape[1])
            elif name.endswith(("gate_proj.weight", "up_proj.weight")):
                v = torch.randn(shape, generator=g) / math.sqrt(h)
            elif name.endswith("down_proj.weight"):
                v = torch.randn(shape, generator=g) / math.sqrt(inter)
            elif name == "lm_head.weight":
                v = torch.randn(shape, generator=g) * (3.0 / math.sqrt(h))
            else:
                raise RuntimeError(f"no init rule for {name}")
            p.data = v.to(torch.bfloat16).to(torch.float32)


def hub_style_config(hf: dict, spec: LlamaSpec) -> dict:
    """transformers 5.x config.json keys rewritten as published Llama checkpoints have them."""
    rope = hf.pop("rope_parameters")
    out = {("torch_dtype" if k == "dtype" else k): v for k, v in hf.items()}
    out["rope_theta"] = rope["rope_theta"]
    scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
    out["rope_scaling"] = None if scaling.get("rope_type") == "default" else scaling
    return dict(sorted(out.items()))


def write_checkpoint(spec: LlamaSpec, model_dir: Path) -> None:
    model = LlamaForCausalLM(make_config(spec)).eval()
    init_weights(model, spec)
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    bf16.save_pretrained(model_dir, max_shard_size=mf.shard_size_for_two(model))
    shards = sorted(p.name for p in model_dir.glob("*.safetensors"))
    if len(shards) != 2:
        mf.fail(f"{spec.name}: expected two shards, save_pretrained wrote {shards}")
    if spec.config_style == "hub":
        hf = json.loads((model_dir / "config.json").read_text())
        mf.write_json(model_dir / "config.json", hub_style_config(hf, spec))
    GenerationConfig(bos_token_id=1, eos_token_id=spec.eos_ids, pad_token_id=spec.eos_ids[0]).save_pretrained(model_dir)


def load(model_dir: Path, dtype=torch.float32) -> LlamaForCausalLM:
    return LlamaForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="eager").eval()


def check_loaded_config(spec: LlamaSpec, model: LlamaForCausalLM) -> None:
    c = model.config
    rp = dict(c.rope_parameters)
    want_rope = {"rope_type": "default", "rope_theta": spec.rope_theta}
    if spec.llama3 is not None:
        want_rope = {**spec.llama3, "rope_theta": spec.rope_theta}
    got = (c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.num_hidden_layers,
           c.intermediate_size, c.vocab_size, c.tie_word_embeddings, c.attention_bias, c.mlp_bias, rp)
    want = (spec.hidden, spec.heads, spec.kv_heads, spec.head_dim, spec.layers, spec.intermediate,
            spec.vocab, spec.tied, False, False, want_rope)
    if got != want:
        mf.fail(f"{spec.name}: reloaded config differs from the spec:\n got {got}\nwant {want}")
    has_lm_head = any("lm_head" in k for k in mf.weight_names(Path(model.name_or_path)))
    if has_lm_head == spec.tied:
        mf.fail(f"{spec.name}: lm_head present={has_lm_head} but tied={spec.tied}")


def rope_tables(spec: LlamaSpec, model: LlamaForCausalLM) -> tuple[dict[str, torch.Tensor], float]:
    """inv_freq (as the module uses it), the unscaled one, and cos/sin for positions 0..127."""
    rot = model.model.rotary_emb
    with torch.no_grad():
        cos, sin = rot(torch.zeros(1), torch.arange(COS_SIN_LEN)[None])
    dh = spec.head_dim
    plain = 1.0 / (spec.rope_theta ** (torch.arange(0, dh, 2, dtype=torch.int64).to(torch.float32) / dh))
    inv = rot.inv_freq.detach().clone()
    if spec.llama3 is None and not torch.equal(inv, plain):
        raise RuntimeError(f"{spec.name}: plain RoPE inv_freq is not 1/theta^(2i/d)")
    if spec.llama3 is not None and torch.equal(inv, plain):
        raise RuntimeError(f"{spec.name}: llama3 scaling left inv_freq unchanged")
    tensors = {"inv_freq": inv, "inv_freq_unscaled": plain, "cos": cos[0], "sin": sin[0]}
    return {k: v.clone().contiguous() for k, v in tensors.items()}, float(rot.attention_scaling)


def greedy_plain(model: LlamaForCausalLM, prompt: torch.Tensor) -> dict:
    """make_fixtures.greedy_cached_no_recompute (plain cached forward calls); for Llama it must equal generate."""
    return mf.greedy_cached_no_recompute(model, prompt)


def choose_prompt(spec: LlamaSpec, model: LlamaForCausalLM) -> tuple[torch.Tensor, dict, int]:
    """Seeded candidate prompts; keep the varied greedy path with the largest smallest relative margin."""
    best = None
    for k in range(mf.PROMPT_CANDIDATES):
        prompt = token_ids(spec, 100 + k, PROMPT_LEN)
        res = mf.greedy(model, prompt)
        new = res["output_ids"][PROMPT_LEN:]
        if len(new) != NEW_TOKENS or len(set(new)) < mf.MIN_DISTINCT_NEW:
            continue
        score = min(res["step_relative_margins"])
        if best is None or score > best[0]:
            best = (score, k, prompt, res)
    if best is None:
        mf.fail(f"{spec.name}: no candidate prompt qualifies (stop token or repeats)")
    score, k, prompt, res = best
    if score < mf.MIN_RELATIVE_MARGIN:
        mf.fail(f"{spec.name}: best prompt has relative margin {score:.2e} < {mf.MIN_RELATIVE_MARGIN}")
    return prompt, res, k


def token_ids(spec: LlamaSpec, stream: int, length: int) -> torch.Tensor:
    return torch.randint(0, spec.vocab, (length,), generator=mf.generator(spec.seed * 1000 + stream))


def compute_references(spec: LlamaSpec, model: LlamaForCausalLM, prompt: torch.Tensor | None):
    short_ids, long_ids = token_ids(spec, 1, SHORT_LEN), token_ids(spec, 2, LONG_LEN)
    logits = {
        "short.input_ids": short_ids,
        "short.logits": mf.forward_logits(model, short_ids),
        "long.input_ids": long_ids,
        "long.logits": mf.forward_logits(model, long_ids),
    }
    hidden = mf.hidden_states(model, short_ids)
    if not torch.equal(hidden.pop("logits"), logits["short.logits"]):
        raise RuntimeError(f"{spec.name}: hooked forward changed the logits")
    hidden["input_ids"] = short_ids
    rope, attention_factor = rope_tables(spec, model)
    if prompt is None:
        prompt, gen, candidate = choose_prompt(spec, model)
    else:
        gen, candidate = mf.greedy(model, prompt), None
    gen["no_recompute"] = greedy_plain(model, prompt)
    if gen["no_recompute"]["output_ids"] != gen["output_ids"]:
        mf.fail(f"{spec.name}: plain cached greedy differs from HF generate (Llama never recomputes)")
    return logits, hidden, rope, attention_factor, prompt, gen, candidate


def generate_json(spec: LlamaSpec, prompt: torch.Tensor, gen: dict, candidate: int | None) -> dict:
    """make_fixtures.generate_json's keys; no recompute for Llama (the two greedy paths are equal)."""
    out = mf.generate_json(spec, prompt, gen, candidate)
    out["original_max_position_embeddings"] = (
        spec.llama3["original_max_position_embeddings"] if spec.llama3 is not None else None)
    if out["recompute_at_call"]:
        mf.fail(f"{spec.name}: HF generate recomputed its cache at calls {out['recompute_at_call']}")
    return out


def scaling_effect(spec: LlamaSpec, model_dir: Path, logits: dict[str, torch.Tensor]) -> float | None:
    """Max |logit change| on the long sequence when the llama3 scaling is removed (it must matter)."""
    if spec.llama3 is None:
        return None
    cfg = LlamaConfig.from_pretrained(model_dir)
    cfg.rope_parameters = {"rope_type": "default", "rope_theta": spec.rope_theta}
    plain = LlamaForCausalLM.from_pretrained(model_dir, config=cfg, dtype=torch.float32,
                                             attn_implementation="eager").eval()
    diff = (mf.forward_logits(plain, logits["long.input_ids"]) - logits["long.logits"]).abs().max()
    scale = logits["long.logits"].abs().max()
    if not diff > 0.1 * scale:
        mf.fail(f"{spec.name}: removing the llama3 scaling changes the logits by only {diff:.4f}")
    return float(diff)


def hf_bf16_pcc(model_dir: Path, logits: dict[str, torch.Tensor]) -> dict[str, float]:
    model = load(model_dir, torch.bfloat16)
    return {seq: mf.pcc(mf.forward_logits(model, logits[f"{seq}.input_ids"]), logits[f"{seq}.logits"])
            for seq in ("short", "long")}


def write_references(spec: LlamaSpec, model_dir: Path, versions: dict[str, str]) -> dict:
    model = load(model_dir)
    check_loaded_config(spec, model)
    logits, hidden, rope, attention_factor, prompt, gen, candidate = compute_references(spec, model, None)
    bf16_pcc = hf_bf16_pcc(model_dir, logits)
    for seq, value in bf16_pcc.items():
        if not value >= mf.MIN_HF_BF16_PCC:
            mf.fail(f"{spec.name}: HF in bf16 reaches logits PCC {value:.5f} < {mf.MIN_HF_BF16_PCC} on {seq}")
    effect = scaling_effect(spec, model_dir, logits)
    ref = model_dir / "reference"
    ref.mkdir()
    save_file(logits, ref / "logits.safetensors")
    save_file(hidden, ref / "hidden.safetensors")
    save_file(rope, ref / "rope.safetensors")
    rope_json = {"rope_type": "llama3" if spec.llama3 else "default", "rope_theta": spec.rope_theta,
                 "max_position_embeddings": MAX_POSITIONS, "attention_factor": attention_factor,
                 "cos_sin_positions": COS_SIN_LEN}
    if spec.llama3 is not None:
        rope_json.update({k: v for k, v in spec.llama3.items() if k != "rope_type"})
    mf.write_json(ref / "rope.json", rope_json)
    generation = generate_json(spec, prompt, gen, candidate)
    mf.write_json(ref / "generate.json", generation)
    meta = {"generator": "scripts/make_llama_fixtures.py", "versions": versions, "dtype": "float32",
            "attn_implementation": "eager", "token_id_dtype": "I64", "seed": spec.seed,
            "hf_bf16_pcc": bf16_pcc}
    if effect is not None:
        meta["llama3_scaling_max_logit_change"] = effect
    mf.write_json(ref / "meta.json", meta)
    generation["hf_bf16_pcc"] = bf16_pcc
    generation["max_abs_logit"] = {s: float(logits[f"{s}.logits"].abs().max()) for s in ("short", "long")}
    generation["scaling_effect"] = effect
    return generation


def verify(spec: LlamaSpec, model_dir: Path) -> None:
    """Reload from the files and recompute every reference; all must be bit-identical."""
    model = load(model_dir)
    check_loaded_config(spec, model)
    ref = model_dir / "reference"
    want_gen = json.loads((ref / "generate.json").read_text())
    prompt = torch.tensor(want_gen["prompt_ids"], dtype=torch.int64)
    logits, hidden, rope, factor, _, gen, _ = compute_references(spec, model, prompt)
    for what, got in (("logits", logits), ("hidden", hidden), ("rope", rope)):
        want = load_file(ref / f"{what}.safetensors")
        if sorted(got) != sorted(want):
            mf.fail(f"{spec.name}: {what} tensors {sorted(got)} != written {sorted(want)}")
        for name in got:
            if got[name].dtype != want[name].dtype or not torch.equal(got[name], want[name]):
                mf.fail(f"{spec.name}: {what}/{name} not reproduced")
    if factor != json.loads((ref / "rope.json").read_text())["attention_factor"]:
        mf.fail(f"{spec.name}: attention factor not reproduced")
    if hf_bf16_pcc(model_dir, logits) != json.loads((ref / "meta.json").read_text())["hf_bf16_pcc"]:
        mf.fail(f"{spec.name}: HF bf16 PCC not reproduced")
    if gen["output_ids"] != want_gen["output_ids"]:
        mf.fail(f"{spec.name}: greedy tokens not reproduced")
    cfg = make_config(spec)
    cfg._attn_implementation = "eager"  # as `load` asks from_pretrained for
    fresh = LlamaForCausalLM(cfg).eval()
    init_weights(fresh, spec)
    for seq in ("short", "long"):
        if not torch.equal(mf.forward_logits(fresh, logits[f"{seq}.input_ids"]), logits[f"{seq}.logits"]):
            mf.fail(f"{spec.name}: in-memory model and reloaded checkpoint differ on {seq} logits")


def check_budget(out: Path, names: list[str]) -> int:
    total = 0
    for name in names:
        for path in (out / name).rglob("*"):
            if path.is_file():
                total += path.stat().st_size
                if path.stat().st_size > mf.FILE_BUDGET_BYTES:
                    mf.fail(f"{path} is over the {mf.FILE_BUDGET_BYTES}-byte file budget")
    if total > LLAMA_TOTAL_BUDGET_BYTES:
        mf.fail(f"Llama fixtures total {total} bytes, over {LLAMA_TOTAL_BUDGET_BYTES}")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("fixtures"), help="fixtures directory")
    parser.add_argument("--only", action="append", help="write only this model (repeatable)")
    parser.add_argument("--allow-version-mismatch", action="store_true")
    parser.add_argument("--sha256", action="store_true", help="print sha256 of every written file")
    args = parser.parse_args()

    versions = mf.check_versions(args.allow_version_mismatch)
    mf.set_deterministic()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    specs = [s for s in MODELS if not args.only or s.name in args.only]
    if args.only and len(specs) != len(args.only):
        mf.fail(f"unknown model in --only {args.only}; known: {[s.name for s in MODELS]}")
    for spec in specs:
        model_dir = out / spec.name
        if model_dir.exists():
            shutil.rmtree(model_dir)
        mf.log(f"{spec.name}: writing checkpoint")
        write_checkpoint(spec, model_dir)
        mf.log(f"{spec.name}: computing references")
        gen = write_references(spec, model_dir, versions)
        mf.log(f"{spec.name}: verifying a fresh reload against the written references")
        verify(spec, model_dir)
        effect = "" if gen["scaling_effect"] is None else f"; llama3 scaling moves logits by {gen['scaling_effect']:.2f}"
        mf.log(f"{spec.name}: ok; greedy min margin {gen['min_margin']:.4f} (relative "
               f"{gen['min_relative_margin']:.4f}); max |logit| short {gen['max_abs_logit']['short']:.2f} "
               f"long {gen['max_abs_logit']['long']:.2f}; HF bf16 PCC short {gen['hf_bf16_pcc']['short']:.5f} "
               f"long {gen['hf_bf16_pcc']['long']:.5f}{effect}")
    total = check_budget(out, [s.name for s in MODELS if (out / s.name).exists()])
    mf.log(f"Llama fixtures: {total} bytes")
    if args.sha256:
        print("\n".join(mf.sha256_listing(out, [s.name for s in specs])))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
