#!/usr/bin/env python3
"""Time HuggingFace transformers on a Phi-3 checkpoint: the peer figures of `cargo xtask bench`.

    ~/.cache/tt-phi3/venv/bin/python scripts/hf_bench.py --model /work/synth-phi3 --dtype bf16

Usually run through `cargo xtask bench --peer-hf`. On CPU with a fixed thread count (default 2) it
measures, in one process:
  load     `AutoModelForCausalLM.from_pretrained(dir, dtype=...)` (wall seconds; the Phi-3 modeling
           code is imported before the timer starts, so this is reading and placing the weights);
  1st step one forward call of the first prompt token, timed apart and discarded (weights that the
           load left memory-mapped are faulted in here: load + first step is the time to ready);
  prefill  one forward call over the synthetic prompt, ids (i*7919+13) % (vocab-1) + 1 for
           i < --prefill-len (the same ids as `cargo xtask bench`), with a KV cache (tokens/s);
  decode   --decode-steps greedy steps, each one forward call of one token through the cache
           (the median, min and max ms/token; the argmax of each step feeds the next);
  peak RSS `resource.getrusage(RUSAGE_SELF).ru_maxrss` at the end (the whole process).
and prints one JSON line on stdout (progress goes to stderr). Nothing is written to disk.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402
from transformers.models.phi3 import modeling_phi3  # noqa: E402,F401  (imported before the load timer)
from transformers.utils import logging as hf_logging  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "f32": torch.float32}


def fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


def log(msg: str) -> None:
    print(f"hf_bench: {msg}", file=sys.stderr, flush=True)


def synthetic_ids(vocab: int, n: int) -> list[int]:
    """The benchmark prompt of `cargo xtask bench` (ids in 1 .. vocab-1)."""
    return [(i * 7919 + 13) % (vocab - 1) + 1 for i in range(n)]


def peak_rss_bytes() -> int:
    """Peak resident set of this process (ru_maxrss is in KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


@torch.inference_mode()
def bench(model, prompt: list[int], steps: int) -> dict:
    t = time.perf_counter()
    model(torch.tensor([prompt[:1]], dtype=torch.long), use_cache=True)
    first_step_s = time.perf_counter() - t
    input_ids = torch.tensor([prompt], dtype=torch.long)
    t = time.perf_counter()
    out = model(input_ids, use_cache=True)
    prefill_s = time.perf_counter() - t
    cache = out.cache
    token = int(out.logits[0, -1].argmax())
    step_s = []
    for _ in range(steps):
        t = time.perf_counter()
        out = model(torch.tensor([[token]], dtype=torch.long), cache=cache, use_cache=True)
        token = int(out.logits[0, -1].argmax())
        step_s.append(time.perf_counter() - t)
        cache = out.cache
    return {"first_step_s": first_step_s, "prefill_s": prefill_s, "step_s": step_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, type=Path, help="checkpoint directory (HF layout)")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    ap.add_argument("--prefill-len", type=int, default=155)
    ap.add_argument("--decode-steps", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--attn-implementation", default="sdpa", help="sdpa (default) or eager")
    args = ap.parse_args()

    if not (args.model / "config.json").is_file():
        fail(f"{args.model} is not a checkpoint directory (no config.json)")
    if args.prefill_len < 1 or args.decode_steps < 1:
        fail("--prefill-len and --decode-steps must be at least 1")

    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    log(f"loading {args.model} as {args.dtype}")
    t = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(
        str(args.model), dtype=DTYPES[args.dtype], attn_implementation=args.attn_implementation
    )
    model.eval()
    load_s = time.perf_counter() - t
    if model.dtype != DTYPES[args.dtype]:
        fail(f"model loaded as {model.dtype}, expected {DTYPES[args.dtype]}")
    vocab = int(model.config.vocab_size)
    prompt = synthetic_ids(vocab, args.prefill_len)

    log(f"loaded in {load_s:.2f} s; prefill {len(prompt)} tokens, then {args.decode_steps} decode steps")
    timed = bench(model, prompt, args.decode_steps)
    steps = timed["step_s"]
    median_s = statistics.median(steps)
    print(json.dumps({
        "engine": "hf-transformers",
        "transformers": importlib.metadata.version("transformers"),
        "torch": torch.__version__.split("+")[0],
        "model": str(args.model),
        "dtype": args.dtype,
        "attn_implementation": args.attn_implementation,
        "threads": args.threads,
        "load_s": load_s,
        "first_step_s": timed["first_step_s"],
        "prefill_tokens": len(prompt),
        "prefill_s": timed["prefill_s"],
        "prefill_tok_s": len(prompt) / timed["prefill_s"],
        "decode_steps": len(steps),
        "decode_context": len(prompt),
        "decode_ms_per_token": median_s * 1e3,
        "decode_ms_min": min(steps) * 1e3,
        "decode_ms_max": max(steps) * 1e3,
        "peak_rss_bytes": peak_rss_bytes(),
    }), flush=True)


if __name__ == "__main__":
    main()
