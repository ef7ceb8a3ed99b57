#!/usr/bin/env python
"""Evaluate a HALSR-Net model as in the paper; same as ``halsr-hf evaluate`` (see --help and
docs/evaluation.md)."""

import sys

from halsr_hf.errors import InputError
from halsr_hf.evaluation.run import main

if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except InputError as error:
        print(f"evaluate.py: error: {error}", file=sys.stderr)
        sys.exit(2)
