#!/usr/bin/env python3
"""Time HuggingFace transformers on a Phi-3 checkpoint: the peer figures of `cargo xtask bench`.

    ~/.cache/tt-phi3/venv/bin/python scripts/hf_bench.py --model /work/synth-phi3 --dtype bf16 \
        --prefill-lens 155,1024

Usually run through `cargo xtask bench --peer-hf`. On CPU with a fixed thread count (default 2) it
measures, in one process:
  load     `AutoModelForCausalLM.from_pretrained(dir, dtype=...)` (wall seconds; the Phi-3 modeling
           code is imported before the timer starts, so this is reading and placing the weights);
  1st step one forward call of the first prompt token, timed apart and discarded (weights that the
           load left memory-mapped are faulted in here: load + first step is the time to ready);
  prefill  per length N of --prefill-lens (comma separated; --prefill-len N is one length), one
           forward call over the synthetic prompt, ids (i*7919+13) % (vocab-1) + 1 for i < N (the
           same ids as `cargo xtask bench`), into a fresh KV cache (tokens/s), in the order given;
  decode   --decode-steps greedy steps after the prompt of the FIRST length (so at context N of
           the first length), each one forward call of one token through its cache (the median,
           min and max ms/token; the argmax of each step feeds the next);
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


def parse_lens(text: str) -> list[int]:
    """`155,1024` -> [155, 1024] (argparse type of --prefill-lens)."""
    try:
        lens = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of token counts: {text!r}")
    if not lens:
        raise argparse.ArgumentTypeError("no length given")
    return lens


@torch.inference_mode()
def bench(model, prompts: list[list[int]], steps: int) -> dict:
    """Times the first step, one prefill per prompt (each into a fresh cache), then `steps`
    decode steps after the first prompt."""
    t = time.perf_counter()
    model(torch.tensor([prompts[0][:1]], dtype=torch.long), use_cache=True)
    first_step_s = time.perf_counter() - t
    prefill_s = []
    first = None
    for prompt in prompts:
        input_ids = torch.tensor([prompt], dtype=torch.long)
        t = time.perf_counter()
        out = model(input_ids, use_cache=True)
        prefill_s.append(time.perf_counter() - t)
        if first is None:
            first = out
        del out
    cache = first.cache
    token = int(first.logits[0, -1].argmax())
    del first
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
    lens = ap.add_mutually_exclusive_group()
    lens.add_argument(
        "--prefill-lens", type=parse_lens, help="prompt lengths, comma separated (default 155)"
    )
    lens.add_argument("--prefill-len", type=int, help="one prompt length (= --prefill-lens N)")
    ap.add_argument("--decode-steps", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--attn-implementation", default="sdpa", help="sdpa (default) or eager")
    args = ap.parse_args()

    if not (args.model / "config.json").is_file():
        fail(f"{args.model} is not a checkpoint directory (no config.json)")
    prefill_lens = args.prefill_lens or [155 if args.prefill_len is None else args.prefill_len]
    # Each length once, in the order given (the first is the decode's context).
    prefill_lens = list(dict.fromkeys(prefill_lens))
    if min(prefill_lens) < 1 or args.decode_steps < 1:
        fail("--prefill-lens/--prefill-len and --decode-steps must be at least 1")

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
    prompts = [synthetic_ids(vocab, n) for n in prefill_lens]

    log(
        f"loaded in {load_s:.2f} s; prefill {', '.join(map(str, prefill_lens))} tokens, "
        f"then {args.decode_steps} decode steps after {prefill_lens[0]}"
    )
    timed = bench(model, prompts, args.decode_steps)
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
        "prefill": [
            {"tokens": n, "seconds": s, "tok_s": n / s}
            for n, s in zip(prefill_lens, timed["prefill_s"])
        ],
        "decode_steps": len(steps),
        "decode_context": prefill_lens[0],
        "decode_ms_per_token": median_s * 1e3,
        "decode_ms_min": min(steps) * 1e3,
        "decode_ms_max": max(steps) * 1e3,
        "peak_rss_bytes": peak_rss_bytes(),
    }), flush=True)


if __name__ == "__main__":
    main()
