"""The ``halsr-hf`` command line.

Each sub-command lives in its own module, which defines ``main(argv: list[str]) -> int``
(parsing its own arguments with ``argparse`` or ``HfArgumentParser``, ``prog="halsr-hf NAME"``);
this file only dispatches, importing the module lazily so that ``halsr-hf --help`` stays fast,
and turns :class:`halsr_hf.InputError` into a one-line message and exit status 2.
"""

import argparse
import importlib
import sys

#: sub-command -> (module, one-line help)
COMMANDS = {
    "info": ("halsr_hf.commands.info", "print versions, presets and their parameter counts"),
    "segment": ("halsr_hf.commands.segment", "segment slices/volumes, write overlays, masks and measures"),
    "ef": ("halsr_hf.commands.ef", "EDV, ESV, stroke volume, EF and myocardial mass from an ED and an ES volume"),
    "prepare": ("halsr_hf.data.cli", "convert ACDC / Sunnybrook / LVQuan to a datasets folder"),
    "train": ("halsr_hf.training.train", "train or fine-tune HALSR-Net with transformers.Trainer"),
    "train-roi": ("halsr_hf.training.train_roi", "train or fine-tune the LV ROI regressor"),
    "evaluate": ("halsr_hf.evaluation.run", "evaluate a model as in the paper (tables, boxplots, EF agreement)"),
    "push-to-hub": ("halsr_hf.hub", "publish a model, a dataset or the Space to the Hugging Face Hub"),
    "benchmark": ("halsr_hf.commands.benchmark", "model cost, pipeline and training throughput"),
    "export-onnx": ("halsr_hf.commands.export_onnx", "export the ROI and segmentation models to ONNX"),
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="halsr-hf", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=sorted(COMMANDS), help="; ".join(f"{k}: {v[1]}" for k, v in COMMANDS.items()))
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        parser.parse_args([command])  # prints the usage error and exits 2
    module = importlib.import_module(COMMANDS[command][0])
    from .errors import InputError

    try:
        return int(module.main(rest) or 0)
    except InputError as error:
        print(f"halsr-hf {command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
