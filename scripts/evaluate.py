#!/usr/bin/env python
"""Evaluate a HALSR-Net model as in the paper; same as ``halsr-hf evaluate`` (see --help and
docs/evaluation.md)."""

import sys
from pathlib import Path

try:
    import halsr_hf  # noqa: F401
except ImportError:  # a plain checkout: use src/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from halsr_hf.cli import main  # noqa: E402  (the entry point of `halsr-hf evaluate`: flags in messages, --verbose)

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
