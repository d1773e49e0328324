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

import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import Phi3Config, Phi3ForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
# Shared with make_llama_fixtures.py (scripts/make_smollm2.py reaches hidden_states and others
# through this module).
from fixture_common import (  # noqa: E402
    FILE_BUDGET_BYTES,
    MAX_POSITIONS,
    MIN_DISTINCT_NEW,
    MIN_RELATIVE_MARGIN,
    NEW_TOKENS,
    PROMPT_CANDIDATES,
    PROMPT_LEN,
    SCRIPTS_DIR,
    SpecSizes,
    arg_parser,
    check_bf16_gate,
    check_lm_head,
    check_reproduced,
    check_versions,
    fail,
    forward_logits,
    generator,
    greedy,
    greedy_cached_no_recompute,
    hidden_states,
    log,
    logits_and_hidden,
    save_checkpoint,
    selected,
    set_deterministic,
    sha256_listing,
    token_ids,
    write_json,
)
import fixture_common as common  # noqa: E402

# original_max_position_embeddings is 64 for every model: the short references (40 tokens)
# take the short factors, the long ones (80 tokens) the long factors, and generate (48 + 32 = 80)
# recomputes its cache when the length reaches 65.
ORIGINAL_MAX = 64
COS_SIN_SHORT_LEN = ORIGINAL_MAX
COS_SIN_LONG_LEN = 128
ROPE_THETA = 10000.0
TOTAL_BUDGET_BYTES = 20 * 1000 * 1000


@dataclasses.dataclass(frozen=True)
class ModelSpec(SpecSizes):
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


MODELS = [
    # Phi-3-mini proportions scaled down: MHA, head_dim 48 (not a multiple of 64), I = 2H.
    ModelSpec("phi3-tiny", 1001, 8, 8, 48, 2, 768, 1000, 2048, False, "hub"),
    ModelSpec("phi3-tiny-gqa", 1002, 8, 2, 16, 2, 256, 600, None, False, "transformers"),
    ModelSpec("phi3-tiny-window", 1003, 8, 8, 16, 2, 256, 600, 16, False, "hub"),
    # Tied: a small embedding (a large tied one makes every token predict itself), the logit scale
    # restored by a larger final norm weight, and less peaked attention so bf16 can follow it
    # through three layers (see fixture_common.MIN_HF_BF16_PCC).
    ModelSpec("phi3-tiny-tied", 1004, 8, 8, 16, 3, 256, 600, None, True, "transformers",
              qkv_scale=1.5, embed_std=0.1, final_norm_range=(1.8, 4.2)),
]


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
    """fixture_common.init_weights with Phi-3's fused projections."""
    common.init_weights(model, spec, qkv=("qkv_proj.weight",), gate_up=("gate_up_proj.weight",))


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


def write_checkpoint(spec: ModelSpec, model_dir: Path) -> None:
    model = Phi3ForCausalLM(make_config(spec)).eval()
    init_weights(model, spec)
    save_checkpoint(spec, model, model_dir, hub_style_config)


def load(model_dir: Path) -> Phi3ForCausalLM:
    return common.load(Phi3ForCausalLM, model_dir)


def hf_bf16_pcc(model_dir: Path, logits: dict[str, torch.Tensor]) -> dict[str, float]:
    return common.hf_bf16_pcc(Phi3ForCausalLM, model_dir, logits)


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
    check_lm_head(spec, model)


# ---------------------------------------------------------------------------------------------
# References


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
    logits, hidden = logits_and_hidden(spec, model)
    rope, attention_factor = rope_tables(model)
    if prompt is None:
        prompt, gen, candidate = choose_prompt(spec, model)
    else:
        gen, candidate = greedy(model, prompt), None
    gen["no_recompute"] = greedy_cached_no_recompute(model, prompt)
    return logits, hidden, rope, attention_factor, prompt, gen, candidate


def generate_json(spec: ModelSpec, prompt: torch.Tensor, gen: dict, candidate: int) -> dict:
    return common.generate_json(spec, prompt, gen, candidate, ORIGINAL_MAX)


def write_references(spec: ModelSpec, model_dir: Path, versions: dict[str, str]) -> dict:
    model = load(model_dir)
    check_loaded_config(spec, model)
    logits, hidden, rope, attention_factor, prompt, gen, candidate = compute_references(spec, model, None)
    bf16_pcc = hf_bf16_pcc(model_dir, logits)
    check_bf16_gate(spec, bf16_pcc)
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
        check_reproduced(spec, what, got, want)
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


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--skip-ops", action="store_true", help="do not call op_fixtures.write")
    args = parser.parse_args()

    versions = check_versions(args.allow_version_mismatch)
    set_deterministic()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    specs = selected(MODELS, args.only)

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
