"""What the tiny-fixture scripts share: make_fixtures.py (Phi-3) and make_llama_fixtures.py (Llama).

The reference lengths and the gates, the environment checks (pinned versions, determinism), the
init recipe, writing a checkpoint as two bf16 shards, the HF reference computations (all-position
logits, the residual stream per layer, greedy paths with their margins), the bit-for-bit
reproduction check, and the command line both scripts take. Nothing here knows a model family;
each script passes its own model class, config and tensor names.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib.metadata
import json
import math
import sys
from pathlib import Path

import torch
from transformers import GenerationConfig

SCRIPTS_DIR = Path(__file__).resolve().parent

MAX_POSITIONS = 1024
SHORT_LEN = 40  # the short reference sequence (within Phi-3's original_max 64)
LONG_LEN = 80  # the long one (past it)
PROMPT_LEN = 48
NEW_TOKENS = 32  # 48 + 32 = 80 > 64: Phi-3's generate recomputes its cache when the length reaches 65
PROMPT_CANDIDATES = 128  # prompts tried per model; the one with the largest smallest margin is kept
MIN_DISTINCT_NEW = 24  # candidates whose 32 new tokens have fewer distinct ids are rejected
MIN_RELATIVE_MARGIN = 5e-3  # the script fails if no candidate reaches this (top1-top2 over max|logit|)
# Sanity gate: HF itself, loading the written checkpoint in bf16, must track the fp32 reference
# logits at least this well (PCC, both sequences). A model that bf16 cannot follow (flat logits,
# attention so peaked that bf16 rounding flips it) would make bf16 comparisons meaningless.
MIN_HF_BF16_PCC = 0.9985
FILE_BUDGET_BYTES = 8 * 1024 * 1024

class SpecSizes:
    """What a model spec (a frozen dataclass with heads, head_dim and vocab) derives."""

    @property
    def hidden(self) -> int:
        return self.heads * self.head_dim

    @property
    def eos_ids(self) -> list[int]:
        # Three stop tokens near the end of the vocabulary, like Phi-3's 32000/32001/32007.
        return [self.vocab - 10, self.vocab - 9, self.vocab - 3]


# The running script's name, which leads every message.
PROG = Path(sys.argv[0]).stem if sys.argv and sys.argv[0].endswith(".py") else "fixtures"


def fail(msg: str) -> None:
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    sys.exit(1)


def log(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


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


def init_weights(model, spec, qkv: tuple[str, ...], gate_up: tuple[str, ...]) -> None:
    """Random weights with peaked attention and logits, rounded to bf16 values (parameters only).

    `qkv` and `gate_up` are the name endings of the family's attention input and MLP input
    projections (fused or separate). Scales (defaults of the specs; the tied models override them):
    qkv std qkv_scale/sqrt(H) (2.5) so attention is far from uniform and RoPE matters; o_proj,
    gate/up and down std 1/sqrt(fan_in); layer norm weights U(0.6, 1.4) so a missing norm weight
    shows; model.norm.weight U(final_norm_range) (0.6, 1.4); lm_head std 3/sqrt(H) (max |logit|
    12-15); embedding std embed_std (1). A tied model uses embedding std 0.1 (a large tied embedding
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
            elif name.endswith(qkv):
                v = torch.randn(shape, generator=g) * (spec.qkv_scale / math.sqrt(h))
            elif name.endswith("o_proj.weight"):
                v = torch.randn(shape, generator=g) / math.sqrt(shape[1])
            elif name.endswith(gate_up):
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


def shard_size_for_two(model) -> int:
    """A max_shard_size (bytes) that makes save_pretrained write exactly two bf16 shards."""
    total = sum(p.numel() * 2 for p in model.parameters())
    return total * 6 // 10


def write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=False) + "\n")


def save_checkpoint(spec, model, model_dir: Path, hub_style_config) -> None:
    """`model` (bf16-valued f32 parameters) as a bf16 checkpoint in two shards; config.json in
    the spec's style (`hub_style_config(hf_dict, spec)` rewrites it for "hub"); the generation
    config with the spec's stop tokens."""
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


def load(model_cls, model_dir: Path, dtype=torch.float32):
    """The checkpoint as transformers loads it, eager attention, in eval mode."""
    return model_cls.from_pretrained(model_dir, dtype=dtype, attn_implementation="eager").eval()


def pcc(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two tensors, flattened, in f64."""
    a = a.double().flatten()
    b = b.double().flatten()
    a = a - a.mean()
    b = b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()))


def hf_bf16_pcc(model_cls, model_dir: Path, logits: dict[str, torch.Tensor]) -> dict[str, float]:
    """PCC of HF's own logits with the checkpoint loaded in bf16 against the fp32 references."""
    model = load(model_cls, model_dir, torch.bfloat16)
    return {
        seq: pcc(forward_logits(model, logits[f"{seq}.input_ids"]), logits[f"{seq}.logits"])
        for seq in ("short", "long")
    }


def check_bf16_gate(spec, bf16_pcc: dict[str, float]) -> None:
    for seq, value in bf16_pcc.items():
        if not value >= MIN_HF_BF16_PCC:
            fail(f"{spec.name}: HF in bf16 reaches logits PCC {value:.5f} < {MIN_HF_BF16_PCC} on the "
                 f"{seq} sequence: bf16 cannot follow this model, change its init recipe")


def weight_names(model_dir: Path) -> list[str]:
    index = json.loads((model_dir / "model.safetensors.index.json").read_text())
    return sorted(index["weight_map"])


def check_lm_head(spec, model) -> None:
    """A tied checkpoint has no lm_head tensor; an untied one has it."""
    has_lm_head = any("lm_head" in k for k in weight_names(Path(model.name_or_path)))
    if has_lm_head == spec.tied:
        fail(f"{spec.name}: lm_head present={has_lm_head} but tied={spec.tied}")


# ---------------------------------------------------------------------------------------------
# References


def token_ids(spec, stream: int, length: int) -> torch.Tensor:
    return torch.randint(0, spec.vocab, (length,), generator=generator(spec.seed * 1000 + stream))


def forward_logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids[None], use_cache=False).logits[0].contiguous()


def hidden_states(model, ids: torch.Tensor) -> dict[str, torch.Tensor]:
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


def logits_and_hidden(spec, model) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """All-position logits of the short and the long sequence; the short one's residual stream."""
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
    return logits, hidden


def greedy(model, prompt: torch.Tensor) -> dict:
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


def greedy_cached_no_recompute(model, prompt: torch.Tensor) -> dict:
    """Greedy with plain cached forward calls (an eval loop): the cache is never recomputed.

    Past Phi-3's original_max the new positions use long factors while the cached keys keep their
    short ones; recorded so a model's plain cached path can be told apart from HF generate.
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


def generate_json(spec, prompt: torch.Tensor, gen: dict, candidate: int | None, original_max) -> dict:
    """generate.json: the prompt, HF's greedy tokens, its forward calls (a call after the first
    with more than one token is a cache recompute), the margins, and the plain cached path."""
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
        "original_max_position_embeddings": original_max,
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


def check_reproduced(spec, what: str, got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    """`got` must hold exactly `want`'s tensors, bit for bit."""
    if sorted(got) != sorted(want):
        fail(f"{spec.name}: {what} tensors {sorted(got)} != written {sorted(want)}")
    for name in got:
        if got[name].dtype != want[name].dtype or not torch.equal(got[name], want[name]):
            diff = (got[name].double() - want[name].double()).abs().max()
            fail(f"{spec.name}: {what}/{name} not reproduced (max diff {diff})")


def sha256_listing(out: Path, names: list[str]) -> list[str]:
    lines = []
    for name in names:
        for path in sorted((out / name).rglob("*")):
            if path.is_file():
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                lines.append(f"{digest}  {path.relative_to(out)}")
    return lines


# ---------------------------------------------------------------------------------------------
# Command line


def arg_parser(doc: str) -> argparse.ArgumentParser:
    """--out, --only, --allow-version-mismatch, --sha256 (a script adds its own options)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("fixtures"), help="fixtures directory")
    parser.add_argument("--only", action="append", help="write only this model (repeatable)")
    parser.add_argument("--allow-version-mismatch", action="store_true")
    parser.add_argument("--sha256", action="store_true", help="print sha256 of every written file")
    return parser


def selected(models: list, only: list[str] | None) -> list:
    """The specs `--only` names (all when absent); fails on an unknown name."""
    specs = [s for s in models if not only or s.name in only]
    if only and len(specs) != len(only):
        fail(f"unknown model in --only {only}; known: {[s.name for s in models]}")
    return specs
