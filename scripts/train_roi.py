#!/usr/bin/env python
"""Train or fine-tune the LV ROI regressor: a thin wrapper of ``halsr_hf.training.train_roi`` (= ``halsr-hf train-roi``).

Works unchanged with ``torchrun --nproc_per_node=N scripts/train_roi.py ...`` and ``accelerate launch``.
Without the package installed, run it with ``PYTHONPATH=src``.
"""

import sys
from pathlib import Path

try:
    import halsr_hf  # noqa: F401
except ImportError:  # a plain checkout: use src/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from halsr_hf.cli import main  # noqa: E402  (the entry point of `halsr-hf train-roi`: flags in messages, --verbose)

if __name__ == "__main__":
    sys.exit(main(["train-roi", *sys.argv[1:]]))
