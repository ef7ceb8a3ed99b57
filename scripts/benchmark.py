"""Thin wrapper: ``python scripts/benchmark.py [--quick] [--device cpu|cuda] [--out DIR]`` runs
``halsr-hf benchmark`` (see ``halsr_hf.commands.benchmark``)."""

import sys
from pathlib import Path

try:
    import halsr_hf  # noqa: F401
except ImportError:  # a plain checkout: use src/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from halsr_hf.cli import main  # noqa: E402  (the entry point of `halsr-hf benchmark`: flags in messages, --verbose)

if __name__ == "__main__":
    sys.exit(main(["benchmark", *sys.argv[1:]]))
