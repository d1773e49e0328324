#!/usr/bin/env python3
"""Write the tiny Llama test checkpoints (`LlamaForCausalLM`) and their HuggingFace references.

Run through `cargo xtask fixtures --llama` (which makes the venv), or directly:

    ~/.cache/tt-phi3/venv/bin/python scripts/make_llama_fixtures.py --out fixtures

The layout, the reference formats and the checks are those of scripts/make_fixtures.py (the tiny
Phi-3 fixtures), through the helpers both import from scripts/fixture_common.py: HF layout with bf16 weights in two safetensors
shards plus the index, `reference/` with fp32 all-position logits of two sequences, the residual
stream per layer, RoPE tables and HF greedy `generate` (32 new tokens); the bf16 sanity gate; a
reload that must reproduce every reference bit for bit; two runs give identical bytes.
fixtures/README.md documents the models and the few keys that differ from Phi-3's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixture_common as common  # noqa: E402  (helpers shared with the Phi-3 fixtures)

PROMPT_LEN, NEW_TOKENS = common.PROMPT_LEN, common.NEW_TOKENS  # 48 + 32 = 80
COS_SIN_LEN = 128
MAX_POSITIONS = common.MAX_POSITIONS
LLAMA_TOTAL_BUDGET_BYTES = 8 * 1000 * 1000  # the Llama fixtures together


@dataclasses.dataclass(frozen=True)
class LlamaSpec(common.SpecSizes):
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
    """fixture_common.init_weights with Llama's separate projections."""
    common.init_weights(model, spec, qkv=("q_proj.weight", "k_proj.weight", "v_proj.weight"),
                    gate_up=("gate_proj.weight", "up_proj.weight"))


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
    common.save_checkpoint(spec, model, model_dir, hub_style_config)


def load(model_dir: Path, dtype=torch.float32) -> LlamaForCausalLM:
    return common.load(LlamaForCausalLM, model_dir, dtype)


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
        common.fail(f"{spec.name}: reloaded config differs from the spec:\n got {got}\nwant {want}")
    common.check_lm_head(spec, model)


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
    return common.greedy_cached_no_recompute(model, prompt)


def choose_prompt(spec: LlamaSpec, model: LlamaForCausalLM) -> tuple[torch.Tensor, dict, int]:
    """Seeded candidate prompts; keep the varied greedy path with the largest smallest relative margin."""
    best = None
    for k in range(common.PROMPT_CANDIDATES):
        prompt = common.token_ids(spec, 100 + k, PROMPT_LEN)
        res = common.greedy(model, prompt)
        new = res["output_ids"][PROMPT_LEN:]
        if len(new) != NEW_TOKENS or len(set(new)) < common.MIN_DISTINCT_NEW:
            continue
        score = min(res["step_relative_margins"])
        if best is None or score > best[0]:
            best = (score, k, prompt, res)
    if best is None:
        common.fail(f"{spec.name}: no candidate prompt qualifies (stop token or repeats)")
    score, k, prompt, res = best
    if score < common.MIN_RELATIVE_MARGIN:
        common.fail(f"{spec.name}: best prompt has relative margin {score:.2e} < {common.MIN_RELATIVE_MARGIN}")
    return prompt, res, k


def compute_references(spec: LlamaSpec, model: LlamaForCausalLM, prompt: torch.Tensor | None):
    logits, hidden = common.logits_and_hidden(spec, model)
    rope, attention_factor = rope_tables(spec, model)
    if prompt is None:
        prompt, gen, candidate = choose_prompt(spec, model)
    else:
        gen, candidate = common.greedy(model, prompt), None
    gen["no_recompute"] = greedy_plain(model, prompt)
    if gen["no_recompute"]["output_ids"] != gen["output_ids"]:
        common.fail(f"{spec.name}: plain cached greedy differs from HF generate (Llama never recomputes)")
    return logits, hidden, rope, attention_factor, prompt, gen, candidate


def generate_json(spec: LlamaSpec, prompt: torch.Tensor, gen: dict, candidate: int | None) -> dict:
    """make_fixtures.py's generate.json keys; no recompute for Llama (the two greedy paths are equal)."""
    original_max = spec.llama3["original_max_position_embeddings"] if spec.llama3 is not None else None
    out = common.generate_json(spec, prompt, gen, candidate, original_max)
    if out["recompute_at_call"]:
        common.fail(f"{spec.name}: HF generate recomputed its cache at calls {out['recompute_at_call']}")
    return out


def scaling_effect(spec: LlamaSpec, model_dir: Path, logits: dict[str, torch.Tensor]) -> float | None:
    """Max |logit change| on the long sequence when the llama3 scaling is removed (it must matter)."""
    if spec.llama3 is None:
        return None
    cfg = LlamaConfig.from_pretrained(model_dir)
    cfg.rope_parameters = {"rope_type": "default", "rope_theta": spec.rope_theta}
    plain = LlamaForCausalLM.from_pretrained(model_dir, config=cfg, dtype=torch.float32,
                                             attn_implementation="eager").eval()
    diff = (common.forward_logits(plain, logits["long.input_ids"]) - logits["long.logits"]).abs().max()
    scale = logits["long.logits"].abs().max()
    if not diff > 0.1 * scale:
        common.fail(f"{spec.name}: removing the llama3 scaling changes the logits by only {diff:.4f}")
    return float(diff)


def hf_bf16_pcc(model_dir: Path, logits: dict[str, torch.Tensor]) -> dict[str, float]:
    return common.hf_bf16_pcc(LlamaForCausalLM, model_dir, logits)


def write_references(spec: LlamaSpec, model_dir: Path, versions: dict[str, str]) -> dict:
    model = load(model_dir)
    check_loaded_config(spec, model)
    logits, hidden, rope, attention_factor, prompt, gen, candidate = compute_references(spec, model, None)
    bf16_pcc = hf_bf16_pcc(model_dir, logits)
    common.check_bf16_gate(spec, bf16_pcc)
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
    common.write_json(ref / "rope.json", rope_json)
    generation = generate_json(spec, prompt, gen, candidate)
    common.write_json(ref / "generate.json", generation)
    meta = {"generator": "scripts/make_llama_fixtures.py", "versions": versions, "dtype": "float32",
            "attn_implementation": "eager", "token_id_dtype": "I64", "seed": spec.seed,
            "hf_bf16_pcc": bf16_pcc}
    if effect is not None:
        meta["llama3_scaling_max_logit_change"] = effect
    common.write_json(ref / "meta.json", meta)
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
        common.check_reproduced(spec, what, got, load_file(ref / f"{what}.safetensors"))
    if factor != json.loads((ref / "rope.json").read_text())["attention_factor"]:
        common.fail(f"{spec.name}: attention factor not reproduced")
    if hf_bf16_pcc(model_dir, logits) != json.loads((ref / "meta.json").read_text())["hf_bf16_pcc"]:
        common.fail(f"{spec.name}: HF bf16 PCC not reproduced")
    if gen["output_ids"] != want_gen["output_ids"]:
        common.fail(f"{spec.name}: greedy tokens not reproduced")
    cfg = make_config(spec)
    cfg._attn_implementation = "eager"  # as `load` asks from_pretrained for
    fresh = LlamaForCausalLM(cfg).eval()
    init_weights(fresh, spec)
    for seq in ("short", "long"):
        if not torch.equal(common.forward_logits(fresh, logits[f"{seq}.input_ids"]), logits[f"{seq}.logits"]):
            common.fail(f"{spec.name}: in-memory model and reloaded checkpoint differ on {seq} logits")


def check_budget(out: Path, names: list[str]) -> int:
    total = 0
    for name in names:
        for path in (out / name).rglob("*"):
            if path.is_file():
                total += path.stat().st_size
                if path.stat().st_size > common.FILE_BUDGET_BYTES:
                    common.fail(f"{path} is over the {common.FILE_BUDGET_BYTES}-byte file budget")
    if total > LLAMA_TOTAL_BUDGET_BYTES:
        common.fail(f"Llama fixtures total {total} bytes, over {LLAMA_TOTAL_BUDGET_BYTES}")
    return total


def main() -> None:
    args = common.arg_parser(__doc__).parse_args()

    versions = common.check_versions(args.allow_version_mismatch)
    common.set_deterministic()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    specs = common.selected(MODELS, args.only)
    for spec in specs:
        model_dir = out / spec.name
        if model_dir.exists():
            shutil.rmtree(model_dir)
        common.log(f"{spec.name}: writing checkpoint")
        write_checkpoint(spec, model_dir)
        common.log(f"{spec.name}: computing references")
        gen = write_references(spec, model_dir, versions)
        common.log(f"{spec.name}: verifying a fresh reload against the written references")
        verify(spec, model_dir)
        effect = "" if gen["scaling_effect"] is None else f"; llama3 scaling moves logits by {gen['scaling_effect']:.2f}"
        common.log(f"{spec.name}: ok; greedy min margin {gen['min_margin']:.4f} (relative "
               f"{gen['min_relative_margin']:.4f}); max |logit| short {gen['max_abs_logit']['short']:.2f} "
               f"long {gen['max_abs_logit']['long']:.2f}; HF bf16 PCC short {gen['hf_bf16_pcc']['short']:.5f} "
               f"long {gen['hf_bf16_pcc']['long']:.5f}{effect}")
    total = check_budget(out, [s.name for s in MODELS if (out / s.name).exists()])
    common.log(f"Llama fixtures: {total} bytes")
    if args.sha256:
        print("\n".join(common.sha256_listing(out, [s.name for s in specs])))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
