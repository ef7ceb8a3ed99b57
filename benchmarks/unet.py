"""The plain U-Net baseline (same widths and loss as HALSR-Net), for comparisons.

The code lives in ``halsr_hf.training.unet_baseline`` (one copy, used by ``scripts/train.py
--architecture unet``); this file re-exports it. Not registered with the ``Auto*`` classes: load a
trained baseline with ``UnetForSemanticSegmentation.from_pretrained(folder)``.
"""

import sys
from pathlib import Path

try:
    import halsr_hf  # noqa: F401
except ImportError:  # a plain checkout: use src/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from halsr_hf.training.unet_baseline import UnetConfig, UnetForSemanticSegmentation  # noqa: E402

__all__ = ["UnetConfig", "UnetForSemanticSegmentation"]
