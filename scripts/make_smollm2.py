#!/usr/bin/env python3
"""SmolLM2-135M-Instruct: HF's own GGUF conversion, its comparison with `cargo xtask smollm2`, and
the HF fp32 references committed under fixtures/smollm2-135m-instruct/.

    PY=~/.cache/tt-phi3/venv/bin/python
    $PY scripts/make_smollm2.py hf-convert --gguf F.gguf --out DIR     # HF's conversion (oracle)
    $PY scripts/make_smollm2.py compare --hf DIR --rust DIR            # bit-exact comparison
    $PY scripts/make_smollm2.py references --model DIR                 # fixtures/.../reference/

`hf-convert` loads the GGUF with `AutoModelForCausalLM.from_pretrained(dir, gguf_file=...,
dtype=float32)` (transformers dequantizes it with gguf-py and undoes llama.cpp's q/k row
permutation), copies its state dict into a plain `LlamaForCausalLM` built from the same config with
`quantization_config` removed, and saves it in float32 (the dequantized values are mostly not bf16
numbers; the command counts them) with the tokenizer (chat template in tokenizer_config.json) and
generation_config.json.

`compare` checks that two converted directories hold the same tensors bit for bit, the same
config.json and generation_config.json (as JSON values), and tokenizers that give the same ids on
the reference texts. `references` runs HF fp32 (eager attention) on a converted checkpoint and
writes the reference files (format: fixtures/smollm2-135m-instruct/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

SCRIPTS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS_DIR))
import make_fixtures as mf  # noqa: E402  (shared helpers: versions, pcc, hooks, json)

FIXTURE = SCRIPTS_DIR.parent / "fixtures" / "smollm2-135m-instruct"
EVAL_PROMPT = SCRIPTS_DIR.parent / "fixtures" / "prompts" / "smollm2_eval_prompt.txt"
NEW_TOKENS = 32
LOGIT_POSITIONS = 12  # stored logit rows per sequence (49152 f32 = 192 KiB each)
ROPE_POSITIONS = 64
# Texts for the logits references (real English; cut to an exact token count).
SHORT_TEXT = (
    "The lighthouse keeper climbed the narrow stairs every evening, carrying a can of oil and a "
    "cloth for the great lens, while the wind pushed against the windows."
)
LONG_TEXT = (
    "Rivers have shaped the history of nearly every civilisation. Early farmers settled along their "
    "banks because the floods left behind rich soil, and the water itself carried boats, goods and "
    "news from one town to the next. Over centuries people learned to build dams, canals and mills, "
    "turning the steady flow into power for grinding grain and sawing wood. Today many rivers are "
    "protected again, as cities discover that clean water and green banks make better neighbours "
    "than concrete channels."
)
SHORT_LEN = 24
LONG_LEN = 64
CHATS = {
    "generate.json": "What is the capital of France?",
    "generate_chat2.json": "Give me three tips for staying focused while studying.",
}
TEXT_PROMPT = ("generate_text.json", "The old map showed a path through the forest that led to")
# Texts the tokenizers of two conversions must encode identically.
TOKENIZER_TEXTS = [SHORT_TEXT, LONG_TEXT, "What is the capital of France?",
                   "naïve café – 東京 🚀 <|im_start|>user\nhi<|im_end|>\n  two  spaces\tand\ttabs 12345"]


def log(msg: str) -> None:
    print(f"make_smollm2: {msg}", file=sys.stderr, flush=True)


def fail(msg: str) -> None:
    print(f"make_smollm2: error: {msg}", file=sys.stderr)
    sys.exit(1)


# ---------------------------------------------------------------------------------------------
# hf-convert


def hf_convert(gguf: Path, out: Path) -> None:
    gguf = gguf.resolve()
    quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    cfg_dict = quantized.config.to_dict()
    cfg_dict.pop("quantization_config", None)
    cfg = LlamaConfig.from_dict(cfg_dict)
    plain = LlamaForCausalLM(cfg).eval()
    state = quantized.state_dict()
    missing, unexpected = plain.load_state_dict(state, strict=False)
    # Tied: lm_head.weight is the embedding; load_state_dict reports nothing else.
    if unexpected or any(m != "lm_head.weight" for m in missing):
        fail(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    for name, p in plain.state_dict().items():
        if not torch.equal(p, state[name]):
            fail(f"{name} differs after load_state_dict")
    not_bf16 = total = 0
    for p in plain.parameters():
        total += p.numel()
        not_bf16 += int((p.to(torch.bfloat16).to(torch.float32) != p).sum())
    log(f"{not_bf16} of {total} parameter values ({100 * not_bf16 / total:.1f}%) are not bf16 numbers: "
        "saving float32")
    if out.exists():
        shutil.rmtree(out)
    plain.save_pretrained(out)
    quantized.generation_config.save_pretrained(out)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok.save_pretrained(out)
    tc_path = out / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text())
    if "chat_template" not in tc:
        # transformers 5 writes the template to chat_template.jinja; keep it in tokenizer_config.json too.
        tc["chat_template"] = tok.chat_template
        tc_path.write_text(json.dumps(tc, indent=2, ensure_ascii=False) + "\n")
    log(f"wrote {out}: {sorted(p.name for p in out.iterdir())}")


# ---------------------------------------------------------------------------------------------
# compare


def tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def compare(hf: Path, rust: Path) -> None:
    a, b = tensors(hf), tensors(rust)
    if sorted(a) != sorted(b):
        fail(f"tensor names differ: only HF {sorted(set(a) - set(b))}, only Rust {sorted(set(b) - set(a))}")
    for name in sorted(a):
        x, y = a[name], b[name]
        if x.dtype != y.dtype or x.shape != y.shape:
            fail(f"{name}: HF {x.dtype} {tuple(x.shape)} vs Rust {y.dtype} {tuple(y.shape)}")
        # Bitwise: compare the raw bits (equal also for -0.0 vs 0.0 would not be enough).
        if not torch.equal(x.view(torch.int32), y.view(torch.int32)):
            n = int((x.view(torch.int32) != y.view(torch.int32)).sum())
            fail(f"{name}: {n} values differ in their bits")
    log(f"tensors: {len(a)} tensors, {sum(t.numel() for t in a.values())} values, all bit-identical")
    for f in ("config.json", "generation_config.json"):
        ja, jb = json.loads((hf / f).read_text()), json.loads((rust / f).read_text())
        if ja != jb:
            keys = sorted(k for k in set(ja) | set(jb) if ja.get(k) != jb.get(k))
            fail(f"{f} differs at {keys}: HF {[ja.get(k) for k in keys]} Rust {[jb.get(k) for k in keys]}")
        same_bytes = (hf / f).read_bytes() == (rust / f).read_bytes()
        log(f"{f}: equal as JSON ({'and byte-identical' if same_bytes else 'bytes differ'})")
    ta = AutoTokenizer.from_pretrained(str(hf))
    tb = AutoTokenizer.from_pretrained(str(rust))
    texts = TOKENIZER_TEXTS + [EVAL_PROMPT.read_text(encoding="utf-8").rstrip("\r\n")]
    for text in texts:
        ia, ib = ta(text)["input_ids"], tb(text)["input_ids"]
        if ia != ib:
            fail(f"tokenizers differ on {text!r}: {ia} vs {ib}")
    msgs = [{"role": "user", "content": CHATS["generate.json"]}]
    ca = ta.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    cb = tb.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    if ca != cb:
        fail(f"chat templates render differently: {ca!r} vs {cb!r}")
    log(f"tokenizer: same ids on {len(texts)} texts, same chat rendering")
    for f in sorted({p.name for p in hf.iterdir()} | {p.name for p in rust.iterdir()}):
        a_file, b_file = hf / f, rust / f
        if a_file.is_file() and b_file.is_file():
            same = a_file.read_bytes() == b_file.read_bytes()
            log(f"{f}: {'byte-identical' if same else 'bytes differ'}")
        else:
            log(f"{f}: only in {'HF' if a_file.is_file() else 'Rust'}")
    print("compare: identical")


# ---------------------------------------------------------------------------------------------
# references


def load(model_dir: Path) -> LlamaForCausalLM:
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, attn_implementation="eager")
    if not isinstance(model, LlamaForCausalLM) or model.dtype != torch.float32:
        fail(f"{model_dir} loaded as {type(model).__name__} {model.dtype}")
    return model.eval()


def exact_ids(tok, text: str, n: int) -> torch.Tensor:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if len(ids) < n:
        fail(f"text has {len(ids)} tokens, fewer than {n}: {text!r}")
    return torch.tensor(ids[:n], dtype=torch.int64)


def positions(n: int) -> torch.Tensor:
    """LOGIT_POSITIONS positions spread over 0..n-1, first and last included."""
    return torch.linspace(0, n - 1, LOGIT_POSITIONS).round().to(torch.int64)


def greedy_case(model, tok, prompt_ids: list[int], prompt_text: str, chat: bool) -> dict:
    prompt = torch.tensor(prompt_ids, dtype=torch.int64)
    gen = mf.greedy(model, prompt)  # HF generate, do_sample False, max_new_tokens 32, stop tokens
    new = gen["output_ids"][len(prompt_ids):]
    margins = gen["step_margins"]
    relative = gen["step_relative_margins"]
    return {
        "chat": chat,
        "prompt_text": prompt_text,
        "prompt_ids": prompt_ids,
        "max_new_tokens": NEW_TOKENS,
        "do_sample": False,
        "eos_token_id": model.generation_config.eos_token_id,
        "output_ids": gen["output_ids"],
        "new_ids": new,
        "new_text": tok.decode(new, skip_special_tokens=True),
        "stopped_on_eos": len(new) < NEW_TOKENS,
        "forward_input_lengths": gen["forward_input_lengths"],
        "step_margins": margins,
        "step_relative_margins": relative,
        "min_margin": min(margins),
        "min_relative_margin": min(relative),
    }


def references(model_dir: Path, out: Path, versions: dict[str, str]) -> None:
    model = load(model_dir)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    out.mkdir(parents=True, exist_ok=True)
    short_ids, long_ids = exact_ids(tok, SHORT_TEXT, SHORT_LEN), exact_ids(tok, LONG_TEXT, LONG_LEN)
    logits = {}
    for seq, ids in (("short", short_ids), ("long", long_ids)):
        full = mf.forward_logits(model, ids)
        pos = positions(ids.numel())
        logits[f"{seq}.input_ids"] = ids
        logits[f"{seq}.positions"] = pos
        logits[f"{seq}.logits"] = full[pos].contiguous()
        log(f"{seq}: {ids.numel()} tokens, max |logit| {float(full.abs().max()):.2f}")
    hidden = mf.hidden_states(model, short_ids)
    if not torch.equal(hidden.pop("logits")[positions(SHORT_LEN)], logits["short.logits"]):
        fail("hooked forward changed the logits")
    hidden["input_ids"] = short_ids
    rot = model.model.rotary_emb
    with torch.no_grad():
        cos, sin = rot(torch.zeros(1), torch.arange(ROPE_POSITIONS)[None])
    rope = {"inv_freq": rot.inv_freq.detach().clone(), "cos": cos[0].contiguous(), "sin": sin[0].contiguous()}
    save_file(logits, out / "logits.safetensors")
    save_file(hidden, out / "hidden.safetensors")
    save_file(rope, out / "rope.safetensors")
    mf.write_json(out / "rope.json", {
        "rope_type": model.config.rope_parameters["rope_type"],
        "rope_theta": model.config.rope_parameters["rope_theta"],
        "attention_factor": float(rot.attention_scaling),
        "cos_sin_positions": ROPE_POSITIONS,
    })
    for fname, question in CHATS.items():
        msgs = [{"role": "user", "content": question}]
        text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        case = greedy_case(model, tok, ids, text, True)
        case["question"] = question
        mf.write_json(out / fname, case)
        log(f"{fname}: {question!r} -> {case['new_text']!r} ({len(case['new_ids'])} new tokens, "
            f"min margin {case['min_margin']:.3f})")
    fname, text = TEXT_PROMPT
    ids = tok(text, add_special_tokens=False)["input_ids"]
    case = greedy_case(model, tok, ids, text, False)
    mf.write_json(out / fname, case)
    log(f"{fname}: {text!r} -> {case['new_text']!r} ({len(case['new_ids'])} new tokens, "
        f"min margin {case['min_margin']:.3f})")
    mf.write_json(out / "meta.json", {
        "generator": "scripts/make_smollm2.py references",
        "versions": versions,
        "dtype": "float32",
        "attn_implementation": "eager",
        "token_id_dtype": "I64",
        "short_text": SHORT_TEXT,
        "long_text": LONG_TEXT,
        "logit_positions": LOGIT_POSITIONS,
    })


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("hf-convert", help="HF's conversion of the GGUF into a float32 checkpoint")
    c.add_argument("--gguf", type=Path, required=True)
    c.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("compare", help="compare two converted checkpoints (bit-exact)")
    c.add_argument("--hf", type=Path, required=True)
    c.add_argument("--rust", type=Path, required=True)
    c = sub.add_parser("references", help="HF fp32 references of a converted checkpoint")
    c.add_argument("--model", type=Path, required=True)
    c.add_argument("--out", type=Path, default=FIXTURE / "reference")
    ap.add_argument("--allow-version-mismatch", action="store_true")
    args = ap.parse_args()

    versions = mf.check_versions(args.allow_version_mismatch)
    mf.set_deterministic()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if args.cmd == "hf-convert":
        hf_convert(args.gguf, args.out)
    elif args.cmd == "compare":
        compare(args.hf, args.rust)
    else:
        references(args.model, args.out, versions)


if __name__ == "__main__":
    main()
