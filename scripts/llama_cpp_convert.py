#!/usr/bin/env python3
"""Converts a Phi-3 checkpoint to GGUF with llama.cpp's own convert_hf_to_gguf.py, for the
llama.cpp peer of `cargo xtask bench --peer-llama-cpp`.

The synthesized checkpoints have no sentencepiece model (tokenizer.model), which the converter's
Phi-3 class reads. llama-bench never tokenizes (it feeds random ids below the vocabulary size),
so the vocabulary written here is a placeholder of config.json's vocab_size, laid out as
Llama's sentencepiece vocabulary is: <unk>, <s>, </s>, the 256 byte tokens <0x00>..<0xFF>
(llama.cpp looks up <0x0A> for the newline), then numbered pieces, with <|endoftext|> at the
eos id (llama.cpp's Phi-3 vocabulary rules look it up by name).

After writing, the GGUF is read back and the LongRoPE factors of config.json (rope_scaling
long_factor / short_factor) are checked to be in it.

Usage: llama_cpp_convert.py --llama-cpp DIR --model DIR --outtype bf16|q8_0 --outfile FILE
(DIR of --llama-cpp: the llama.cpp source tree, holding convert_hf_to_gguf.py and gguf-py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--llama-cpp", type=Path, required=True, help="llama.cpp source tree")
    p.add_argument("--model", type=Path, required=True, help="HF checkpoint directory")
    p.add_argument("--outtype", choices=["bf16", "q8_0"], required=True)
    p.add_argument("--outfile", type=Path, required=True)
    return p.parse_args()


def placeholder_vocab(vocab_size: int, eos_id: int) -> tuple[list[bytes], list[int]]:
    """Token pieces and sentencepiece token types (gguf.TokenType values) of the placeholder."""
    import gguf

    if vocab_size < 260:
        raise ValueError(f"vocab_size {vocab_size} cannot hold the 259 fixed tokens and <|endoftext|>")
    if not 259 <= eos_id < vocab_size:
        eos_id = vocab_size - 1
    tokens = [f"\u2581placeholder{i}".encode() for i in range(vocab_size)]
    types = [gguf.TokenType.NORMAL] * vocab_size
    for i, (piece, kind) in enumerate(
        [("<unk>", gguf.TokenType.UNKNOWN), ("<s>", gguf.TokenType.CONTROL), ("</s>", gguf.TokenType.CONTROL)]
    ):
        tokens[i], types[i] = piece.encode(), kind
    for byte in range(256):
        tokens[3 + byte], types[3 + byte] = f"<0x{byte:02X}>".encode(), gguf.TokenType.BYTE
    tokens[eos_id], types[eos_id] = b"<|endoftext|>", gguf.TokenType.CONTROL
    return tokens, [int(t) for t in types]


def main() -> None:
    args = parse_args()
    root = args.llama_cpp.resolve()
    # llama.cpp's gguf-py first, before any installed gguf package.
    sys.path[:0] = [str(root / "gguf-py"), str(root)]
    import convert_hf_to_gguf  # noqa: E402  (registers the model classes)
    from conversion.phi import Phi3MiniModel  # noqa: E402

    config = json.loads((args.model / "config.json").read_text())
    vocab_size = int(config["vocab_size"])
    eos = config.get("eos_token_id", 32000)
    eos_id = int(eos[0] if isinstance(eos, list) else eos)

    def set_vocab(self) -> None:
        tokens, types = placeholder_vocab(vocab_size, eos_id)
        w = self.gguf_writer
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_scores([0.0] * len(tokens))
        w.add_token_types(types)
        w.add_unk_token_id(0)
        w.add_bos_token_id(1)
        w.add_eos_token_id(tokens.index(b"<|endoftext|>"))
        w.add_add_bos_token(False)

    Phi3MiniModel.set_vocab = set_vocab
    sys.argv = [
        "convert_hf_to_gguf.py",
        str(args.model),
        "--outtype",
        args.outtype,
        "--outfile",
        str(args.outfile),
    ]
    convert_hf_to_gguf.main()
    check_rope_factors(args.outfile, config)


def check_rope_factors(path: Path, config: dict) -> None:
    """Fails unless the GGUF carries config.json's LongRoPE factors."""
    import gguf
    import numpy as np

    scaling = config.get("rope_scaling") or {}
    if not scaling.get("long_factor"):
        print("no LongRoPE factors in config.json; nothing to check", file=sys.stderr)
        return
    reader = gguf.GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    for key, name in [("long_factor", "rope_factors_long.weight"), ("short_factor", "rope_factors_short.weight")]:
        if name not in tensors:
            raise SystemExit(f"{path} has no {name} (config.json rope_scaling.{key})")
        got = np.asarray(tensors[name].data, dtype=np.float32)
        want = np.asarray(scaling[key], dtype=np.float32)
        if got.shape != want.shape or not np.array_equal(got, want):
            raise SystemExit(f"{path}: {name} differs from config.json rope_scaling.{key}")
    print(f"LongRoPE factors carried: {len(scaling['long_factor'])} long, "
          f"{len(scaling['short_factor'])} short", file=sys.stderr)


if __name__ == "__main__":
    main()
