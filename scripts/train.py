#!/usr/bin/env python
"""Train or fine-tune HALSR-Net: a thin wrapper of ``halsr_hf.training.train`` (= ``halsr-hf train``).

Works unchanged with ``torchrun --nproc_per_node=N scripts/train.py ...`` and ``accelerate launch``.
Without the package installed, run it with ``PYTHONPATH=src``.
"""

import sys
from pathlib import Path

try:
    import halsr_hf  # noqa: F401
except ImportError:  # a plain checkout: use src/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from halsr_hf.cli import main  # noqa: E402  (the entry point of `halsr-hf train`: flags in messages, --verbose)

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
