"""Torch fixtures for the tt-ops op tests (fixtures/ops/*.safetensors).

Usage: python scripts/op_fixtures.py --out fixtures/ops
Importable: op_fixtures.write(out_dir: pathlib.Path).

Every file is made with fixed seeds on CPU. Inputs are float32 (weights bf16 where noted). References:
- rms_norm, rotary, linear, mlp_gate: the HF formulas evaluated by torch in float32, as HF runs them.
- attention (sdpa_*): torch.nn.functional.scaled_dot_product_attention evaluated in float64 on the
  float32 inputs (explicit boolean masks for causal / sliding-window / per-user decode lengths,
  enable_gqa for grouped heads), then cast to float32, so the reference carries no f32 rounding of its own.
Scalars (eps, offsets, positions, windows) are stored as small tensors. See fixtures/ops/README.md.
"""

import argparse
import math
import pathlib

import torch
import torch.nn.functional as F
from safetensors.torch import save_file


def _gen(seed: int) -> torch.Generator:
    g = torch.Generator().manual_seed(seed)
    return g


def _randn(g: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float32) * scale


def rms_norm() -> dict:
    g = _gen(1)
    x = _randn(g, 5, 256, scale=2.0)
    w = 1.0 + _randn(g, 256, scale=0.1)
    eps = 1e-5
    # HF Phi3RMSNorm in float32
    var = x.pow(2).mean(-1, keepdim=True)
    out = w * (x * torch.rsqrt(var + eps))
    return {"x": x, "weight": w, "eps": torch.tensor([eps], dtype=torch.float32), "out": out}


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rotary() -> dict:
    g = _gen(2)
    dh, theta, table_len = 96, 10000.0, 64
    # LongRoPE-style inverse frequencies: 1 / (ext * theta^(2i/dh)) with ext in [1, 4)
    ext = 1.0 + 3.0 * torch.rand(dh // 2, generator=g, dtype=torch.float32)
    inv_freq = 1.0 / (ext * theta ** (torch.arange(0, dh, 2, dtype=torch.float32) / dh))
    factor = math.sqrt(1 + math.log(32) / math.log(4096))  # 1.190238...
    # HF rotary tables (float32): freqs = pos * inv_freq, emb = [f, f], cos/sin * attention factor
    pos = torch.arange(table_len, dtype=torch.int64)
    freqs = pos[:, None].float() * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos() * factor, emb.sin() * factor
    # prefill: x [1, 4, 16, dh] at positions offset .. offset + 16
    offset = 5
    x = _randn(g, 1, 4, 16, dh)
    c, s = cos[offset : offset + 16], sin[offset : offset + 16]
    out_prefill = (x * c) + (_rotate_half(x) * s)
    # decode: x [1, 3, 4, dh], user b at positions[b]
    positions = torch.tensor([0, 17, 63], dtype=torch.int64)
    xd = _randn(g, 1, 3, 4, dh)
    cd, sd = cos[positions][None, :, None, :], sin[positions][None, :, None, :]
    out_decode = (xd * cd) + (_rotate_half(xd) * sd)
    return {
        "inv_freq": inv_freq,
        "attention_factor": torch.tensor([factor], dtype=torch.float32),
        "cos": cos,
        "sin": sin,
        "x_prefill": x,
        "offset": torch.tensor([offset], dtype=torch.int64),
        "out_prefill": out_prefill,
        "x_decode": xd,
        "positions": positions,
        "out_decode": out_decode,
    }


def _sdpa64(q, k, v, mask, gqa=False) -> torch.Tensor:
    out = F.scaled_dot_product_attention(
        q.double(), k.double(), v.double(), attn_mask=mask, enable_gqa=gqa
    )
    return out.float()


def _causal_mask(sq: int, sk: int, offset: int, window: int | None) -> torch.Tensor:
    p = torch.arange(sq)[:, None] + offset
    j = torch.arange(sk)[None, :]
    keep = j <= p
    if window is not None:
        keep &= j > p - window
    return keep


def sdpa_causal() -> dict:
    g = _gen(3)
    q, k, v = (_randn(g, 1, 4, 40, 32) for _ in range(3))
    return {"q": q, "k": k, "v": v, "out": _sdpa64(q, k, v, _causal_mask(40, 40, 0, None))}


def sdpa_sliding() -> dict:
    g = _gen(4)
    q, k, v = (_randn(g, 1, 2, 70, 32) for _ in range(3))
    window = 16
    out = _sdpa64(q, k, v, _causal_mask(70, 70, 0, window))
    return {"q": q, "k": k, "v": v, "window": torch.tensor([window], dtype=torch.int64), "out": out}


def sdpa_gqa() -> dict:
    g = _gen(5)
    q = _randn(g, 2, 8, 24, 48, scale=2.0)
    k, v = _randn(g, 2, 2, 24, 48), _randn(g, 2, 2, 24, 48)
    out = _sdpa64(q, k, v, _causal_mask(24, 24, 0, None), gqa=True)
    return {"q": q, "k": k, "v": v, "out": out}


def sdpa_decode() -> dict:
    g = _gen(6)
    b, nh, nkv, length, dh = 3, 4, 2, 64, 32
    q = _randn(g, 1, b, nh, dh, scale=2.0)
    k_cache, v_cache = _randn(g, b, nkv, length, dh), _randn(g, b, nkv, length, dh)
    cur_pos = torch.tensor([63, 10, -1], dtype=torch.int64)
    out = torch.zeros(1, b, nh, dh)
    for u in range(b):
        p = int(cur_pos[u])
        if p < 0:
            continue
        qu = q[0, u][None, :, None, :]  # [1, nh, 1, dh]
        ku, vu = k_cache[u : u + 1, :, : p + 1], v_cache[u : u + 1, :, : p + 1]
        out[0, u] = _sdpa64(qu, ku, vu, None, gqa=True)[0, :, 0]
    return {"q": q, "k_cache": k_cache, "v_cache": v_cache, "cur_pos": cur_pos, "out": out}


def linear() -> dict:
    g = _gen(7)
    x = _randn(g, 3, 64)
    w = _randn(g, 48, 64, scale=0.2).to(torch.bfloat16)
    out = x @ w.float().T  # HF nn.Linear on bf16-valued weights in float32
    return {"x": x, "weight_bf16": w, "out": out}


def mlp_gate() -> dict:
    g = _gen(8)
    gate, up = _randn(g, 4, 80, scale=3.0), _randn(g, 4, 80)
    return {"gate": gate, "up": up, "out": up * F.silu(gate)}


FIXTURES = {
    "rms_norm": rms_norm,
    "rotary": rotary,
    "sdpa_causal": sdpa_causal,
    "sdpa_sliding": sdpa_sliding,
    "sdpa_gqa": sdpa_gqa,
    "sdpa_decode": sdpa_decode,
    "linear": linear,
    "mlp_gate": mlp_gate,
}


def write(out_dir: pathlib.Path) -> None:
    """Write every fixture as out_dir/<name>.safetensors."""
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    for name, make in FIXTURES.items():
        tensors = {k: t.contiguous() for k, t in make().items()}
        save_file(tensors, str(out_dir / f"{name}.safetensors"), metadata={"torch": torch.__version__})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=pathlib.Path, default=pathlib.Path("fixtures/ops"))
    write(ap.parse_args().out)


if __name__ == "__main__":
    main()
