#!/usr/bin/env python3
"""Train the bundled default model, fixtures/phi3-tiny-en: a tiny Phi-3 that writes English.

    ~/.cache/tt-phi3/venv/bin/python scripts/train_bundled.py [--out fixtures/phi3-tiny-en]

The model is a Phi3ForCausalLM with the real Phi-3 tokenizer and vocabulary (32064 rows), 8 attention
heads and 8 KV heads (so a 2x4 mesh gives every device one head), hidden size 128, 4 layers, tied
embeddings and a LongRoPE config shaped like Phi-3-mini-128k's (original_max_position_embeddings 4096,
max_position_embeddings 131072, so the same 1.190238 attention factor; 8 short and 8 long factors
taken from the published lists). It is trained on CPU with 2 threads for a few minutes on the prose of
"The Rust Programming Language" (the HTML book shipped with the Rust toolchain; code blocks dropped),
then its final norm weight is multiplied by SHARPEN (3), which multiplies every logit: (nearly) the
same rankings, but distributions as peaked as a real model's.

Everything is fixed by seeds and by the step count (never by wall time): two runs on the same machine
and toolchain docs give the same weights. The parameters are rounded to bf16 once, after training; the
bf16 values are saved over two safetensors shards (no file over 8 MiB) with an index. The script then
reloads the saved directory in fp32 with transformers and checks that its logits are bit-identical to
the rounded in-memory model's (the RoPE buffers are never cast), and writes README.md with the
figures of this run. Make the eval reference afterwards with scripts/make_reference.py.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

# Sleep rather than spin while waiting for the other thread: the 2 cores are shared with other jobs,
# and spinning OpenMP threads made each step 5x more expensive here. (No effect on the numbers.)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import Phi3Config, Phi3ForCausalLM  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TOKENIZER_DIR = REPO / "fixtures" / "phi3-tokenizer"
EVAL_PROMPT = REPO / "fixtures" / "prompts" / "eval_prompt.txt"

SEED = 20240611
THREADS = 2

# Architecture.
VOCAB = 32064
HIDDEN = 128
HEADS = 8
KV_HEADS = 8
LAYERS = 4
INTERMEDIATE = 512
# Every sixth entry (starting at index 3) of Phi-3-mini-128k-instruct's 48 LongRoPE factors.
SHORT_FACTOR = [
    1.0299999713897705,
    1.0699999332427979,
    1.2899998426437378,
    1.8799997568130493,
    2.0199997425079346,
    2.0299997329711914,
    2.0299997329711914,
    2.729999542236328,
]
LONG_FACTOR = [
    1.340000033378601,
    4.789999961853027,
    17.670000076293945,
    32.93000411987305,
    57.93000411987305,
    63.1400032043457,
    64.02999877929688,
    64.51000213623047,
]

# Training.
SEQ_LEN = 256
BATCH = 8
STEPS = 600
FULL_SOFTMAX_STEPS = 80  # the last steps; the earlier ones normalise over the corpus's token ids only
PEAK_LR = 4e-3
FINAL_LR = 4e-4
WARMUP = 20
GRAD_CLIP = 1.0
PAGES = r"(ch\d\d|appendix)-"  # every chapter and appendix page of the book
VAL_TOKENS = 12_288  # the last tokens of the text, held out
# After training the final RMSNorm weight is multiplied by this, and so is every logit (a sampling
# temperature of 1/3 built into the weights): rankings and greedy text are unchanged (up to the bf16
# rounding of the scaled weight), but the
# distributions become as peaked as a real model's on its own greedy text (a tiny model trained for
# minutes is unsure: its mean top-1 probability there is about 0.17; a real model's is far higher).
SHARPEN = 3.0
LOG_EVERY = 20

SAMPLE_PROMPT = "The borrow checker"
SAMPLE_NEW_TOKENS = 48


def fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


def book_dir() -> Path:
    """The HTML book of the active Rust toolchain."""
    sysroot = subprocess.run(
        ["rustc", "--print", "sysroot"], check=True, capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    path = Path(sysroot) / "share" / "doc" / "rust" / "html" / "book"
    if not path.is_dir():
        fail(f"no Rust book at {path} (install the rust-docs component)")
    return path


def page_text(raw: str) -> str:
    """Plain prose of one book page: the <main> element without code blocks, one paragraph a line."""
    m = re.search(r"<main>(.*)</main>", raw, re.S)
    s = m.group(1) if m else ""
    s = re.sub(r"<pre\b.*?</pre>", " ", s, flags=re.S)
    s = re.sub(r"<(script|style|table)\b.*?</\1>", " ", s, flags=re.S)
    s = " ".join(s.split())
    s = re.sub(r"</(p|h[1-6]|li|div|blockquote|section|dt|dd)>", "\n", s)
    s = re.sub(r"<[^>]+>", "", s)
    s = html.unescape(s)
    lines = [" ".join(line.split()) for line in s.split("\n")]
    return "\n".join(line for line in lines if len(line) >= 2)


def corpus(book: Path, pattern: str) -> tuple[str, list[str]]:
    """The prose of the pages whose names match `pattern`, in name order, one blank line between."""
    pages = sorted(p for p in book.glob("*.html") if re.match(pattern, p.name))
    if not pages:
        fail(f"no pages matching {pattern} in {book}")
    text = "\n\n".join(page_text(p.read_text(encoding="utf-8")) for p in pages)
    return text, [p.name for p in pages]


def make_config() -> Phi3Config:
    return Phi3Config(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=131072,
        original_max_position_embeddings=4096,
        rope_scaling={"type": "longrope", "short_factor": SHORT_FACTOR, "long_factor": LONG_FACTOR},
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        sliding_window=262144,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=32000,
        pad_token_id=32000,
        attn_implementation="sdpa",
    )


def hub_config() -> dict:
    """config.json in the layout of the published Phi-3 checkpoints (`rope_scaling` with `type`)."""
    return {
        "architectures": ["Phi3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "embd_pdrop": 0.0,
        "eos_token_id": 32000,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": 131072,
        "model_type": "phi3",
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "num_key_value_heads": KV_HEADS,
        "original_max_position_embeddings": 4096,
        "pad_token_id": 32000,
        "resid_pdrop": 0.0,
        "rms_norm_eps": 1e-05,
        "rope_scaling": {"long_factor": LONG_FACTOR, "short_factor": SHORT_FACTOR, "type": "longrope"},
        "rope_theta": 10000.0,
        "sliding_window": 262144,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "vocab_size": VOCAB,
    }


def lr_at(step: int, steps: int) -> float:
    if step < WARMUP:
        return PEAK_LR * (step + 1) / WARMUP
    t = (step - WARMUP) / max(1, steps - WARMUP - 1)
    return FINAL_LR + 0.5 * (PEAK_LR - FINAL_LR) * (1.0 + math.cos(math.pi * t))


@torch.no_grad()
def val_loss(model: Phi3ForCausalLM, val: torch.Tensor) -> float:
    model.eval()
    n = (val.numel() - 1) // SEQ_LEN
    total = 0.0
    for i in range(n):
        chunk = val[i * SEQ_LEN : (i + 1) * SEQ_LEN + 1]
        logits = model(input_ids=chunk[None, :-1]).logits[0]
        total += float(F.cross_entropy(logits, chunk[1:], reduction="sum"))
    model.train()
    return total / (n * SEQ_LEN)


def write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def save(model: Phi3ForCausalLM, out: Path) -> dict[str, int]:
    """bf16 weights over two shards (the embedding alone, then the rest) plus the index."""
    state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    names = sorted(state)
    shards = {
        "model-00001-of-00002.safetensors": ["model.embed_tokens.weight"],
        "model-00002-of-00002.safetensors": [n for n in names if n != "model.embed_tokens.weight"],
    }
    weight_map = {}
    total = 0
    sizes = {}
    for file, keys in shards.items():
        tensors = {k: state[k].detach().to(torch.bfloat16).contiguous() for k in keys}
        save_file(tensors, str(out / file), metadata={"format": "pt"})
        for k, t in tensors.items():
            weight_map[k] = file
            total += t.numel() * t.element_size()
        sizes[file] = (out / file).stat().st_size
    write_json(
        out / "model.safetensors.index.json",
        {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
    )
    return sizes


@torch.no_grad()
def greedy(model: Phi3ForCausalLM, ids: list[int], n: int) -> list[int]:
    out = model.generate(
        torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        max_new_tokens=n,
        do_sample=False,
        pad_token_id=32000,
    )
    return out[0, len(ids) :].tolist()


@torch.no_grad()
def peakedness(model: Phi3ForCausalLM, prompt: list[int], generated: list[int], scale: float = 1.0) -> dict[str, float]:
    """Top-1 probability and top-1 minus top-2 logit at each greedy step (logits times `scale`)."""
    logits = model(input_ids=torch.tensor([prompt + generated])).logits[0, len(prompt) - 1 : -1] * scale
    top1 = logits.softmax(-1).max(-1).values
    two = logits.topk(2, dim=-1).values
    margin = two[:, 0] - two[:, 1]
    return {
        "mean_p": float(top1.mean()),
        "median_p": float(top1.median()),
        "share_p50": float((top1 > 0.5).float().mean()),
        "median_margin": float(margin.median()),
        "min_margin": float(margin.min()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "fixtures" / "phi3-tiny-en")
    ap.add_argument("--steps", type=int, default=STEPS, help="training steps (README figures use the default)")
    args = ap.parse_args()
    steps = args.steps

    torch.set_num_threads(THREADS)
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)

    tok = Tokenizer.from_file(str(TOKENIZER_DIR / "tokenizer.json"))
    book = book_dir()
    text, pages = corpus(book, PAGES)
    ids = torch.tensor(tok.encode(text).ids, dtype=torch.long)
    if int(ids.max()) >= 32000:
        fail("the corpus encodes to a special token")
    train, val = ids[:-VAL_TOKENS], ids[-VAL_TOKENS:]
    corpus_sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    print(f"corpus: {len(pages)} pages, {len(text)} chars, {ids.numel()} tokens (sha256 {corpus_sha[:16]})")

    model = Phi3ForCausalLM(make_config())
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=PEAK_LR, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    gen = torch.Generator().manual_seed(SEED)
    used = torch.unique(train)
    remap = torch.full((VOCAB,), -1, dtype=torch.long)
    remap[used] = torch.arange(used.numel())
    full_steps = max(1, steps * FULL_SOFTMAX_STEPS // STEPS)

    log = []
    t0 = time.time()
    recent = []
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps)
        starts = torch.randint(0, train.numel() - SEQ_LEN - 1, (BATCH,), generator=gen)
        batch = torch.stack([train[s : s + SEQ_LEN + 1] for s in starts.tolist()])
        if step < steps - full_steps:
            # Softmax over the token ids that occur in the training text (a small part of the vocabulary):
            # the same gradients for those rows at a fraction of the cost.
            hidden = model.model(input_ids=batch[:, :-1]).last_hidden_state
            logits = hidden @ model.lm_head.weight.index_select(0, used).T
            loss = F.cross_entropy(logits.reshape(-1, used.numel()), remap[batch[:, 1:]].reshape(-1))
        else:
            # Full softmax: also pushes down the ids the text never uses.
            logits = model(input_ids=batch[:, :-1]).logits
            loss = F.cross_entropy(logits.reshape(-1, VOCAB), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        recent.append(float(loss.detach()))
        if (step + 1) % LOG_EVERY == 0 or step + 1 == steps:
            mean = sum(recent) / len(recent)
            recent = []
            log.append((step + 1, mean))
            print(f"step {step + 1:4d}  loss {mean:.3f}  lr {lr_at(step, steps):.2e}  {time.time() - t0:6.0f} s", flush=True)
    train_seconds = time.time() - t0

    # Round the parameters (never the RoPE buffers) to bf16, once.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))
    model.eval()
    trained_val = val_loss(model, val)
    print(f"val loss (bf16-rounded weights): {trained_val:.3f}")
    with torch.no_grad():
        norm = model.model.norm.weight
        norm.copy_((norm * SHARPEN).to(torch.bfloat16).to(torch.float32))
    final_val = val_loss(model, val)
    print(f"val loss after sharpening x{SHARPEN}: {final_val:.3f}")

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.safetensors"):
        stale.unlink()
    sizes = save(model, out)
    write_json(out / "config.json", hub_config())
    for name in ("generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(TOKENIZER_DIR / name, out / name)
    if sum(sizes.values()) > 16 * 1000 * 1000 or max(sizes.values()) > 8 * 1024 * 1024:
        fail(f"weights too large: {sizes}")

    # Reload in fp32 from the files and check bit-identical logits.
    reloaded = Phi3ForCausalLM.from_pretrained(str(out), dtype=torch.float32, attn_implementation="sdpa")
    reloaded.eval()
    rp = reloaded.config.rope_parameters
    if rp.get("rope_type") != "longrope" or rp.get("short_factor") != SHORT_FACTOR:
        fail(f"reloaded rope parameters differ: {rp}")
    probe = val[:SEQ_LEN][None, :]
    with torch.no_grad():
        a = model(input_ids=probe).logits
        b = reloaded(input_ids=probe).logits
    if not torch.equal(a, b):
        fail(f"reloaded logits differ: max |diff| {float((a - b).abs().max())}")

    sample_ids = tok.encode(SAMPLE_PROMPT).ids
    sample = tok.decode(sample_ids + greedy(reloaded, sample_ids, SAMPLE_NEW_TOKENS))
    print(f"sample: {sample}")
    prompt_text = EVAL_PROMPT.read_text(encoding="utf-8").rstrip("\r\n")
    eval_ids = tok.encode(prompt_text).ids
    eval_generated = greedy(reloaded, eval_ids, 100)
    eval_sample = tok.decode(eval_generated)
    peaks = peakedness(reloaded, eval_ids, eval_generated)
    peaks_before = peakedness(reloaded, eval_ids, eval_generated, 1.0 / SHARPEN)
    print(f"eval prompt continuation: {eval_sample}")
    print(f"peakedness: {peaks}; before sharpening: {peaks_before}")

    readme = render_readme(
        n_pages=len(pages),
        chars=len(text),
        tokens=ids.numel(),
        train_tokens=train.numel(),
        corpus_sha=corpus_sha,
        n_params=n_params,
        steps=steps,
        log=log,
        trained_val=trained_val,
        final_val=final_val,
        train_seconds=train_seconds,
        sizes=sizes,
        sample=sample,
        eval_sample=eval_sample,
        peaks=peaks,
        peaks_before=peaks_before,
        full_steps=full_steps,
        used=used.numel(),
    )
    (out / "README.md").write_text(readme)
    print(f"wrote {out}")


def render_readme(**f) -> str:
    log_rows = "\n".join(f"| {s} | {l:.3f} |" for s, l in f["log"])
    files = "\n".join(f"| `{k}` | {v:,} |" for k, v in f["sizes"].items())
    tokens_seen = f["steps"] * BATCH * SEQ_LEN
    return f"""# phi3-tiny-en: the bundled default model

A tiny Phi-3 (`Phi3ForCausalLM`, {f["n_params"]:,} parameters) trained briefly on CPU ({f["steps"]} steps)
and sharpened so that its next-token predictions are peaked like a real model's and its greedy text
is recognisably English. It is what `cargo xtask eval` and `phi3` use when no `--model` is given. Made by
`scripts/train_bundled.py` (all figures below are from that run); its eval reference is
`reference/eval_reference.json`, made by `scripts/make_reference.py` (see docs/EVAL.md).

## Architecture
Real Phi-3 tokenizer and vocabulary (files copied from `fixtures/phi3-tokenizer`, vocab_size
{VOCAB}); hidden {HIDDEN}, {HEADS} attention heads and {KV_HEADS} KV heads of dim {HIDDEN // HEADS},
{LAYERS} layers, MLP {INTERMEDIATE}, RMSNorm eps 1e-5, `tie_word_embeddings: true` (no `lm_head.weight`
in the files). LongRoPE as in Phi-3-mini-128k: theta 10000, original_max_position_embeddings 4096,
max_position_embeddings 131072 (attention factor 1.190238); the 8 short and 8 long factors are every
sixth entry (from index 3) of Phi-3-mini-128k's 48. sliding_window 262144 (no effect). Stop tokens
32000, 32001, 32007 (`generation_config.json`).

## Data
The prose of "The Rust Programming Language" as shipped with the Rust toolchain
(`$(rustc --print sysroot)/share/doc/rust/html/book/ch*.html` and `appendix-*.html`, {f["n_pages"]} pages
in name order): the `<main>` element with `<pre>` code blocks and tables removed, tags stripped,
entities unescaped, one paragraph per line. {f["chars"]:,} characters, {f["tokens"]:,} tokens; sha256 of
the text `{f["corpus_sha"]}`. The last {VAL_TOKENS:,} tokens (the end of chapter 21) are held out
for validation.

## Training
torch on CPU, {THREADS} threads, seed {SEED}, deterministic algorithms. {f["steps"]} steps of
{BATCH} random windows of {SEQ_LEN} tokens ({tokens_seen:,} tokens, about
{tokens_seen / f["train_tokens"]:.1f} passes over the training text); AdamW (betas 0.9/0.95, no
weight decay), lr {PEAK_LR} after {WARMUP} warm-up steps, cosine decay to {FINAL_LR}, gradient clip
{GRAD_CLIP}. To save time, all but the last {f["full_steps"]} steps normalise the softmax over the
{f["used"]:,} token ids that occur in the training text (a cheaper objective that ranks those ids
among themselves); the last {f["full_steps"]} use the full {VOCAB}-way softmax, which also pushes
down the ids the text never uses. Wall time here: {f["train_seconds"] / 60:.1f} min (2 cores shared
with other jobs).
After training the parameters (not the RoPE buffers) are rounded to bf16 once; the saved bf16 files
reloaded in fp32 give bit-identical logits to the rounded model (checked by the script).

Validation loss with the bf16-rounded weights: **{f["trained_val"]:.3f}** nats/token.

Then the final RMSNorm weight (`model.norm.weight`) is multiplied by {SHARPEN} (and rounded to bf16
again): every logit is multiplied by {SHARPEN}, a sampling temperature of 1/{SHARPEN:g} built into the
weights. Rankings, argmaxes and greedy text are unchanged (up to the bf16 rounding of the scaled
weight); the distributions become as peaked as a
real model's (figures under "Samples"). The validation loss after it is {f["final_val"]:.3f} (sharper but
over-confident on held-out text).

| step | mean training loss (last {LOG_EVERY} steps) |
|---|---|
{log_rows}

## Reproduce
```
~/.cache/tt-phi3/venv/bin/python scripts/train_bundled.py   # this directory, README included
cargo xtask reference --model fixtures/phi3-tiny-en --prompt-file fixtures/prompts/eval_prompt.txt \\
    --max-new-tokens 100                                     # reference/eval_reference.json
```
Two runs of the script here gave bit-identical weights, and two runs of the reference script
byte-identical references.

## Files
| file | bytes |
|---|---|
{files}

`model.safetensors.index.json` maps every tensor to its shard; `config.json` uses the layout of the
published Phi-3 checkpoints (`rope_scaling` with `type: longrope`).

## Samples
Greedy continuation (HF, fp32) of "{SAMPLE_PROMPT}", {SAMPLE_NEW_TOKENS} new tokens:

> {f["sample"].replace(chr(10), chr(10) + "> ")}

Greedy continuation of the eval prompt (`fixtures/prompts/eval_prompt.txt`), 100 new tokens, which is
what `reference/eval_reference.json` holds:

> {f["eval_sample"].replace(chr(10), chr(10) + "> ")}

Over those 100 steps HF's top-1 probability has mean {f["peaks"]["mean_p"]:.3f} and median
{f["peaks"]["median_p"]:.3f} ({f["peaks"]["share_p50"] * 100:.0f}% of steps above 0.5); the logit margin
between the first and second choice has median {f["peaks"]["median_margin"]:.3f} and minimum
{f["peaks"]["min_margin"]:.4f}. Without the sharpening step the top-1 probability would have mean
{f["peaks_before"]["mean_p"]:.3f} and median {f["peaks_before"]["median_p"]:.3f} ({f["peaks_before"]["share_p50"] * 100:.0f}% of steps
above 0.5).
"""


if __name__ == "__main__":
    main()
