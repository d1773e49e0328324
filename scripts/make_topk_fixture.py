#!/usr/bin/env python3
"""Record torch's CPU `topk` order on bf16 vectors with ties: the fixture of phi3-eval's
`torch_topk` (crates/phi3-eval/tests/fixtures/torch_topk.json).

    ~/.cache/tt-phi3/venv/bin/python scripts/make_topk_fixture.py

torch's CPU topk does not break ties by lowest index (its order comes from libstdc++'s
`partial_sort` / `nth_element`), so the fixture is mostly vectors with many equal values: a few
distinct levels, realistic logits rounded to bf16, signed zeros, NaN and -inf. Every case runs
`torch.topk(t, k)` on a 1-D bfloat16 tensor and on the same data as a [1, n] tensor with dim=-1;
the script checks that both agree and records the indices and values.

Vectors are stored once (`vectors`); each case names its vector by position. A vector is stored as `default` (the value of every entry not listed) plus `sparse`, a list of
[index, value] pairs, or, for dense vectors, `hex`: the bf16 bit patterns of all entries, 4 hex
digits each, in index order. Values are JSON numbers when finite (bf16 values, exact in f32) and
the strings "nan", "inf", "-inf" otherwise.
"""

import json
import random
import sys
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parent.parent / "crates/phi3-eval/tests/fixtures/torch_topk.json"
LENGTHS = [6, 100, 320, 321, 1000, 32064, 49152]
SEED = 20240611


def to_bf16(values: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(values.astype(np.float32)).to(torch.bfloat16)


def enc(v: float):
    if v != v:
        return "nan"
    if v == float("inf"):
        return "inf"
    if v == float("-inf"):
        return "-inf"
    if v == 0.0 and str(v).startswith("-"):
        return "-0"
    return v


def store(t: torch.Tensor, default: float | None):
    """The compact form of the bf16 vector `t`: sparse around `default`, or dense hex."""
    f = t.float().numpy()
    if default is not None:
        d = np.float32(default)
        if np.isnan(d):
            differs = ~np.isnan(f)
        else:
            # Bitwise, so that -0.0 differs from 0.0.
            differs = f.view(np.uint32) != d.view(np.uint32)
        idx = np.nonzero(differs)[0]
        return {"default": enc(float(d)), "sparse": [[int(i), enc(float(f[i]))] for i in idx]}
    bits = t.view(torch.int16).numpy().view(np.uint16)
    return {"hex": "".join(f"{b:04x}" for b in bits)}


def run(name: str, t: torch.Tensor, k: int, vector: int) -> dict:
    assert t.dtype == torch.bfloat16 and t.dim() == 1
    k = min(k, t.numel())
    r1 = torch.topk(t, k)
    r2 = torch.topk(t.unsqueeze(0), k, dim=-1)
    i1 = r1.indices.tolist()
    i2 = r2.indices[0].tolist()
    if i1 != i2:
        sys.exit(f"{name}: 1-D and [1, n] disagree: {i1} vs {i2}")
    v1 = r1.values.float().tolist()
    v2 = r2.values[0].float().tolist()
    if [enc(v) for v in v1] != [enc(v) for v in v2]:
        sys.exit(f"{name}: 1-D and [1, n] values disagree")
    case = {"name": name, "vector": vector, "k": k}
    case["indices"] = i1
    case["values"] = [enc(v) for v in v1]
    return case


def main() -> None:
    rng = np.random.default_rng(SEED)
    prng = random.Random(SEED)
    vectors = []
    cases = []

    def add(name, values, default, ks=(1, 5)):
        t = to_bf16(np.asarray(values, dtype=np.float32))
        vectors.append({"n": t.numel(), **store(t, default)})
        for k in ks:
            cases.append(run(f"{name} k={k}", t, k, len(vectors) - 1))

    # The brief's examples.
    x = np.zeros(32064, dtype=np.float32)
    x[[7, 100, 30000]] = 5
    add("three fives in zeros n=32064", x, 0.0)
    add("[1,3,2,3,3,0]", [1, 3, 2, 3, 3, 0], None)

    for n in LENGTHS:
        # A few distinct levels, the top one repeated at random positions: sparse around a base.
        for rep in range(4):
            base = float(prng.choice([0.0, -1.0, 2.5, -8.0]))
            x = np.full(n, base, dtype=np.float32)
            levels = sorted(prng.sample([1.0, 2.0, 3.0, 4.5, 6.0, 7.25], 3))
            levels = [base + lv for lv in levels]
            for lv in levels:
                count = prng.randint(1, min(12, n))
                x[rng.choice(n, size=count, replace=False)] = lv
            add(f"levels sparse n={n} #{rep}", x, base)
        # Dense few-level vectors (every entry one of 2-4 levels).
        if n <= 1000:
            for rep in range(3):
                nlev = prng.randint(2, 4)
                levels = np.array(prng.sample([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0], nlev), np.float32)
                add(f"levels dense n={n} #{rep}", rng.choice(levels, size=n), None)
        # Realistic logits rounded to bf16 (dense: two per short length, one per vocabulary size).
        for rep in range(2 if n <= 1000 else 1):
            x = rng.normal(0.0, 3.0, size=n).astype(np.float32)
            x[rng.choice(n, size=min(n, 4), replace=False)] += np.float32(12.0)
            add(f"logits dense n={n} #{rep}", x, None)
        # Realistic top with a flat tail (sparse): the head ties often in bf16.
        x = np.full(n, -30.0, dtype=np.float32)
        head = rng.choice(n, size=min(n, 60), replace=False)
        x[head] = np.round(rng.normal(14.0, 0.5, size=head.size) * 16) / 16
        add(f"logits head n={n}", x, -30.0)
        # -inf background, a few finite values tying.
        x = np.full(n, -np.inf, dtype=np.float32)
        x[rng.choice(n, size=min(n, 3), replace=False)] = 1.0
        add(f"-inf background n={n}", x, float("-inf"))
        # All -inf.
        add(f"all -inf n={n}", np.full(n, -np.inf, dtype=np.float32), float("-inf"))
        # NaN among ties (NaN ranks first in torch's comparator).
        for nn in (1, 3, 7):
            x = np.zeros(n, dtype=np.float32)
            x[rng.choice(n, size=min(n, 5), replace=False)] = 2.0
            x[rng.choice(n, size=min(n, nn), replace=False)] = np.nan
            add(f"nan x{nn} n={n}", x, 0.0)
        # Signed zeros tie with each other.
        x = np.where(rng.random(n) < 0.5, np.float32(-0.0), np.float32(0.0)).astype(np.float32)
        x[rng.choice(n, size=min(n, 2), replace=False)] = -1.0
        add(f"signed zeros n={n}", x, 0.0)
        # +inf ties.
        x = np.full(n, 3.0, dtype=np.float32)
        x[rng.choice(n, size=min(n, 4), replace=False)] = np.inf
        add(f"+inf ties n={n}", x, 3.0)

    # Extra k on the nth_element path (k * 64 > n), including k - 1 > 16 (introsort proper).
    for n, k in [(100, 3), (100, 20), (100, 40), (321, 6), (1000, 20), (1000, 33), (320, 100)]:
        levels = np.array([0.0, 1.0, 2.0, -1.0], np.float32)
        add(f"levels dense n={n}", rng.choice(levels, size=n), None, ks=(k,))
        x = rng.normal(0.0, 3.0, size=n).astype(np.float32)
        add(f"logits dense n={n}", x, None, ks=(k,))
    # The whole vector (k = n).
    add("levels dense k=n n=100", rng.choice(np.float32([0, 1, 2]), size=100), None, ks=(100,))

    doc = {
        "torch_version": torch.__version__,
        "generator": "scripts/make_topk_fixture.py",
        "seed": SEED,
        "vectors": vectors,
        "cases": cases,
    }
    text = json.dumps(doc, separators=(",", ":"))
    if len(text) > 2_000_000:
        sys.exit(f"fixture too large: {len(text)} bytes")
    OUT.write_text(text + "\n")
    print(f"{len(cases)} cases, {len(text)} bytes, torch {torch.__version__} -> {OUT}")


if __name__ == "__main__":
    main()
