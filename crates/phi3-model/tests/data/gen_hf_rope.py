"""Writes hf_rope_phi3_mini_128k.json: HF transformers' own Phi-3 rotary tables for the real
Phi-3-mini-128k config (fixtures/configs/phi3-mini-128k.json), the golden data of
tests/loader/rope.rs. Run from the repository root with the pinned venv:
    ~/.cache/tt-phi3/venv/bin/python crates/phi3-model/tests/data/gen_hf_rope.py
"""
import json

import torch
import transformers
from transformers import Phi3Config
from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding

CONFIG = "fixtures/configs/phi3-mini-128k.json"
OUT = "crates/phi3-model/tests/data/hf_rope_phi3_mini_128k.json"

cfg = Phi3Config.from_pretrained(CONFIG)
rope = Phi3RotaryEmbedding(cfg)
x = torch.zeros(1, dtype=torch.float32)
out = {
    "source": f"transformers {transformers.__version__} Phi3RotaryEmbedding, torch {torch.__version__}, {CONFIG}",
    "attention_factor": rope.attention_scaling,
    "calls": [],
}
# Each call is one forward: HF picks the factor list from max(positions) + 1.
for positions in ([0, 1, 2, 100, 4095], [0, 4096], [131071]):
    cos, sin = rope(x, torch.tensor([positions]))
    half = cos.shape[-1] // 2
    out["calls"].append({
        "positions": positions,
        "inv_freq": rope.inv_freq.tolist(),
        "cos_half": cos[0, :, :half].tolist(),
        "sin_half": sin[0, :, :half].tolist(),
        "second_half_equal": bool(torch.equal(cos[..., :half], cos[..., half:]) and torch.equal(sin[..., :half], sin[..., half:])),
    })
with open(OUT, "w") as f:
    json.dump(out, f)
