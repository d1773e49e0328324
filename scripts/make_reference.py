#!/usr/bin/env python3
"""Make an HF reference for the teacher-forcing eval (format: docs/EVAL.md), or score HF against itself.

    ~/.cache/tt-phi3/venv/bin/python scripts/make_reference.py --model fixtures/phi3-tiny-en \\
        --prompt-file fixtures/prompts/eval_prompt.txt --max-new-tokens 100 \\
        --out fixtures/phi3-tiny-en/reference/eval_reference.json

Usually run through `cargo xtask reference`. The model is a directory in the HuggingFace layout or a
HuggingFace id (downloaded with huggingface_hub). The prompt is one of:
  --prompt-file F      UTF-8 text; trailing "\\r"/"\\n" characters are removed, then it is encoded with
                       the model's tokenizer.json (no special tokens are added by the Phi-3 tokenizer);
  --prompt-ids-file F  token ids: a JSON array, or integers separated by whitespace or commas;
  --prefill-len N      the synthetic prompt of the seed's run_eval.py: the token ids of "The quick
                       brown fox jumps over the lazy dog." repeated to exactly N tokens.

--mode reference (default) runs HF fp32 `generate(prompt, max_new_tokens=N, do_sample=False)` with the
model's generation_config (its stop tokens) and writes the prompt and generated tokens, HF's top 5 at
every step (ids, logits and probabilities; ties ranked by lowest id, as torch.argmax picks), the
transformers and torch versions, and the model and tokenizer hashes.

--mode hf makes the same reference in memory, then scores HF against it with the eval's own loop
(prefill the prompt, N-1 teacher-forced decode steps through the KV cache) and prints the seed's lines:
"Top-1 accuracy: 100.00% (1.0000)", "Top-5 accuracy: ...", and "YT_METRICS={...}" with mode "hf".
It also writes the reference if --out is given. With no prompt option it uses the default of the
seed's run_eval.py: --prefill-len 20 (and so 20 new tokens).

Deterministic: fp32 on CPU with a fixed thread count; two runs write identical bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

FORMAT = "tt-phi3-eval-reference"
VERSION = 1
TOP_K = 5
SYNTHETIC_SENTENCE = "The quick brown fox jumps over the lazy dog."
DEFAULT_SYNTHETIC_PREFILL_LEN = 20
DEFAULT_SYNTHETIC_DECODE_LEN = 20
THREADS = 2


def fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


# ---- hashes (crates/phi3-eval/src/fingerprint.rs computes the same) ----


def model_files(model_dir: Path) -> list[Path]:
    """config.json, then every regular *.safetensors file sorted by name (code point order)."""
    config = model_dir / "config.json"
    if not config.is_file():
        fail(f"{model_dir} has no config.json")
    weights = sorted((p for p in model_dir.iterdir() if p.name.endswith(".safetensors") and p.is_file()),
                     key=lambda p: p.name.encode("utf-8"))
    if not weights:
        fail(f"{model_dir} has no *.safetensors weights")
    return [config, *weights]


def model_sha256(model_dir: Path) -> str:
    """SHA-256 over, for each file: name (UTF-8), a 0 byte, the length as u64 little-endian, the bytes."""
    h = hashlib.sha256()
    for path in model_files(model_dir):
        size = path.stat().st_size
        h.update(path.name.encode("utf-8"))
        h.update(b"\0")
        h.update(size.to_bytes(8, "little"))
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# ---- inputs ----


def resolve_model(model: str) -> Path:
    path = Path(model)
    if path.is_dir():
        return path
    if path.exists() or model.startswith((".", "/")) or model.count("/") != 1:
        fail(f"{model} is neither a model directory nor a HuggingFace id (org/name)")
    from huggingface_hub import snapshot_download

    patterns = ["config.json", "generation_config.json", "*.safetensors", "*.json", "tokenizer.model"]
    return Path(snapshot_download(repo_id=model, allow_patterns=patterns))


def read_ids(path: Path) -> list[int]:
    text = path.read_text(encoding="utf-8").strip()
    try:
        ids = json.loads(text) if text.startswith("[") else [int(t) for t in text.replace(",", " ").split()]
    except ValueError as e:
        fail(f"{path}: not a list of token ids ({e})")
    if not ids or not all(isinstance(i, int) and i >= 0 for i in ids):
        fail(f"{path}: expected a non-empty list of non-negative integers")
    return ids


def synthetic_ids(tok: Tokenizer, prefill_len: int) -> list[int]:
    if prefill_len < 1:
        fail("--prefill-len must be at least 1")
    special = {i for i, t in tok.get_added_tokens_decoder().items() if t.special}
    sentence = [i for i in tok.encode(SYNTHETIC_SENTENCE, add_special_tokens=False).ids if i not in special]
    if not sentence:
        fail("the synthetic sentence encodes to no ordinary tokens")
    return [sentence[i % len(sentence)] for i in range(prefill_len)]


# ---- ranking (crates/phi3-eval/src/scoring.rs uses the same order) ----


def top_k(logits: np.ndarray, k: int) -> list[int]:
    """Larger logit first; equal logits by lowest id (a stable sort of -logits)."""
    return [int(i) for i in np.argsort(-logits, kind="stable")[:k]]


def f32_json(v: float) -> float:
    """The shortest decimal that reads back to the same float32 (a Rust f32 parses it exactly)."""
    return float(str(np.float32(v)))


# ---- HF ----


def load_model(model_dir: Path):
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, attn_implementation="eager")
    model.eval()
    if model.dtype != torch.float32:
        fail(f"model loaded as {model.dtype}, expected float32")
    return model


@torch.no_grad()
def generate(model, prompt: list[int], n: int) -> tuple[list[int], list[dict]]:
    input_ids = torch.tensor([prompt], dtype=torch.long)
    gc = model.generation_config
    pad = gc.pad_token_id if gc.pad_token_id is not None else 0
    out = model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=n,
        do_sample=False,
        pad_token_id=pad,
        output_logits=True,
        return_dict_in_generate=True,
    )
    generated = out.sequences[0, len(prompt) :].tolist()
    steps = []
    for i, step_logits in enumerate(out.logits):
        logits = step_logits[0].to(torch.float32).numpy()
        ids = top_k(logits, TOP_K)
        if ids[0] != generated[i]:
            fail(f"step {i}: generate picked {generated[i]} but the logits rank {ids[0]} first "
                 "(a logits processor in generation_config.json?)")
        lse = np.logaddexp.reduce(logits.astype(np.float64))
        steps.append({
            "ids": ids,
            "logits": [f32_json(logits[j]) for j in ids],
            "probs": [f32_json(np.exp(float(logits[j]) - lse)) for j in ids],
        })
    return generated, steps


@torch.no_grad()
def score_hf(model, prompt: list[int], generated: list[int]) -> tuple[int, int, int]:
    """The eval loop with HF as the model: prefill, then N-1 teacher-forced decode steps."""
    out = model(torch.tensor([prompt]), use_cache=True)
    cache, logits = out.cache, out.logits[0, -1]
    top1 = top5 = 0
    for step, ref in enumerate(generated):
        if step > 0:
            out = model(torch.tensor([[generated[step - 1]]]), cache=cache, use_cache=True)
            cache, logits = out.cache, out.logits[0, -1]
        ranked = top_k(logits.numpy(), TOP_K)
        top1 += int(ranked[0] == ref)
        top5 += int(ref in ranked)
    return top1, top5, len(generated)


# ---- output ----


def dump(ref: dict) -> str:
    """One key per line, HF steps one per line: compact but diffable."""
    lines = []
    for k, v in ref.items():
        if k == "hf_top5":
            rows = ",\n".join("    " + json.dumps(s, ensure_ascii=False) for s in v)
            lines.append(f'  "{k}": [\n{rows}\n  ]')
        else:
            lines.append(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def accuracy_line(label: str, x: float) -> str:
    return f"{label}: {x * 100:.2f}% ({x:.4f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="model directory or HuggingFace id")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--prompt-file", type=Path)
    src.add_argument("--prompt-ids-file", type=Path)
    src.add_argument("--prefill-len", type=int, help="synthetic prompt of this many tokens")
    ap.add_argument("--max-new-tokens", "--decode-len", dest="max_new_tokens", type=int)
    ap.add_argument("--out", type=Path, help="where to write the reference JSON")
    ap.add_argument("--mode", choices=["reference", "hf"], default="reference")
    args = ap.parse_args()

    if args.mode == "reference" and args.out is None:
        fail("--out is required in reference mode")
    if args.prompt_file is None and args.prompt_ids_file is None and args.prefill_len is None:
        if args.mode == "reference":
            fail("a reference needs a prompt: --prompt-file, --prompt-ids-file or --prefill-len")
        args.prefill_len = DEFAULT_SYNTHETIC_PREFILL_LEN
    n = args.max_new_tokens
    if n is None:
        n = DEFAULT_SYNTHETIC_DECODE_LEN if args.prefill_len is not None else 100
    if n < 1:
        fail("--max-new-tokens must be at least 1")

    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    model_dir = resolve_model(args.model)
    tokenizer_json = model_dir / "tokenizer.json"
    if not tokenizer_json.is_file():
        fail(f"{model_dir} has no tokenizer.json")
    tok = Tokenizer.from_file(str(tokenizer_json))

    prompt_info: dict = {}
    if args.prompt_file is not None:
        text = args.prompt_file.read_text(encoding="utf-8").rstrip("\r\n")
        prompt = tok.encode(text).ids
        prompt_info = {"source": "text", "file": str(args.prompt_file), "text": text}
    elif args.prompt_ids_file is not None:
        prompt = read_ids(args.prompt_ids_file)
        prompt_info = {"source": "ids", "file": str(args.prompt_ids_file)}
    else:
        prompt = synthetic_ids(tok, args.prefill_len)
        prompt_info = {"source": "synthetic"}
    if not prompt:
        fail("the prompt is empty")

    model = load_model(model_dir)
    vocab = int(model.config.vocab_size)
    if max(prompt) >= vocab:
        fail(f"prompt token {max(prompt)} is outside the vocabulary of {vocab}")
    generated, steps = generate(model, prompt, n)

    ref = {
        "format": FORMAT,
        "version": VERSION,
        "model": {"id": args.model, "sha256": model_sha256(model_dir), "vocab_size": vocab},
        "tokenizer": {"sha256": file_sha256(tokenizer_json)},
        "generator": {
            "transformers": importlib.metadata.version("transformers"),
            "torch": torch.__version__.split("+")[0],
            "dtype": "float32",
            "attn_implementation": "eager",
        },
        "prompt": prompt_info,
        "prompt_len": len(prompt),
        "prompt_tokens": prompt,
        "max_new_tokens": n,
        "generated_tokens": generated,
        "hf_top5": steps,
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(dump(ref), encoding="utf-8")
        print(f"wrote {args.out}: {len(prompt)} prompt tokens, {len(generated)} generated", file=sys.stderr)

    if args.mode == "hf":
        top1, top5, total = score_hf(model, prompt, generated)
        t1, t5 = top1 / total, top5 / total
        print(accuracy_line("Top-1 accuracy", t1))
        print(accuracy_line("Top-5 accuracy", t5))
        metrics = {
            "mode": "hf",
            "trace": False,
            "top1": t1,
            "top5": t5,
            "prefill_len": len(prompt),
            "decode_len": n,
            "batch": 1,
            "total": total,
        }
        print(f"YT_METRICS={json.dumps(metrics)}")


if __name__ == "__main__":
    main()
