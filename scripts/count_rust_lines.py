#!/usr/bin/env python3
"""Count non-test Rust lines of a crate: comments (`//`, `///`, `//!`) and blank lines excluded,
and everything from a file's first `#[cfg(test)]` on (its test module) excluded.

    python3 scripts/count_rust_lines.py crates/llama-model/src
"""

import sys
from pathlib import Path


def count(path: Path) -> int:
    text = path.read_text()
    cut = text.find("#[cfg(test)]")
    if cut >= 0:
        text = text[:cut]
    return sum(1 for line in text.splitlines() if line.strip() and not line.strip().startswith("//"))


def main() -> None:
    total = 0
    for root in sys.argv[1:] or ["."]:
        for path in sorted(Path(root).rglob("*.rs")):
            n = count(path)
            total += n
            print(f"{n:6d} {path}")
    print(f"{total:6d} total")


if __name__ == "__main__":
    main()
