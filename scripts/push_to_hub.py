#!/usr/bin/env python
"""Publish a HALSR-Net model, a dataset or the Gradio Space to the Hugging Face Hub.

The same as ``halsr-hf push-to-hub``; see ``python scripts/push_to_hub.py --help`` and docs/hub.md.

    python scripts/push_to_hub.py model --model-dir runs/halsr-small --repo-id me/halsr-net-small-acdc \\
        --eval-results runs/eval/summary.json --dry-run out/repo
"""

import sys

from halsr_hf.hub import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
