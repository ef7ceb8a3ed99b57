#!/usr/bin/env python
"""Publish a HALSR-Net model, a dataset or the Gradio Space to the Hugging Face Hub.

The same as ``halsr-hf push-to-hub``; see ``python scripts/push_to_hub.py --help`` and docs/hub.md.

    python scripts/push_to_hub.py model --model-dir runs/halsr-small --repo-id me/halsr-net-small-acdc \\
        --eval-results runs/eval/summary.json --dry-run out/repo
"""

import sys
from pathlib import Path

try:
    import halsr_hf  # noqa: F401
except ImportError:  # a plain checkout: use src/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from halsr_hf.cli import main  # noqa: E402  (the entry point of `halsr-hf push-to-hub`: flags in messages, --verbose)

if __name__ == "__main__":
    sys.exit(main(["push-to-hub", *sys.argv[1:]]))
