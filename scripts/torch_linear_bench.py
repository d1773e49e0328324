"""GFLOP/s of torch's bf16 `linear` (HF's prefill products) on Phi-3-mini's prefill shapes.

HF transformers runs a bf16 prefill's projections through `torch.nn.functional.linear`, which on
a CPU with bf16 hardware calls torch's bundled oneDNN. This prints, per shape, the best of
`--reps` calls, so our own products (`cargo bench -p tt-ops --bench prefill_dnnl`) can be put
beside the peer's on the same machine. Shapes: the whole matrices (1x1) and one 2x4 device's
shard (`/8`).

    ~/.cache/tt-phi3/venv/bin/python scripts/torch_linear_bench.py [--threads 2] [--m 155]
"""

import argparse
import time

import torch

SHAPES = [
    ("qkv", 3072, 9216),
    ("o_proj", 3072, 3072),
    ("gate_up", 3072, 16384),
    ("down", 8192, 3072),
    ("qkv/8", 3072, 1152),
    ("o_proj/8", 384, 3072),
    ("gate_up/8", 3072, 2048),
    ("down/8", 1024, 3072),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--m", type=int, nargs="+", default=[155, 1024])
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for line in torch.__config__.show().splitlines():
        if "MKL-DNN" in line or "oneDNN" in line:
            print(line.strip())
    for m in args.m:
        for name, k, n in SHAPES:
            x = torch.randn(m, k).bfloat16()
            w = torch.randn(n, k).bfloat16()
            for _ in range(3):
                torch.nn.functional.linear(x, w)
            best = float("inf")
            for _ in range(args.reps):
                t = time.perf_counter()
                torch.nn.functional.linear(x, w)
                best = min(best, time.perf_counter() - t)
            print(f"m={m:5d} {name:10s} k={k:5d} n={n:5d}: {2 * m * k * n / best / 1e9:6.1f} GFLOP/s")


if __name__ == "__main__":
    main()
