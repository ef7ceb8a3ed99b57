"""The ``halsr-hf`` command line.

Each sub-command lives in its own module, which defines ``main(argv: list[str]) -> int``
(parsing its own arguments with ``argparse`` or ``HfArgumentParser``, ``prog="halsr-hf NAME"``);
this file only dispatches, importing the module lazily so that ``halsr-hf --help`` stays fast
(no command module loads torch, transformers, datasets or gradio before its arguments are parsed:
``--help`` and argument errors answer in a fraction of a second; tests/test_cli_output.py checks it),
and turns :class:`halsr_hf.InputError` into a one-line message and exit status 2. While a
sub-command runs, error messages name command-line flags (``--frame``, ``--overwrite``), not the
Python keywords of the API (``frame=``, ``overwrite=True``), and the progress bars of weight
loading are off unless ``--verbose`` is given (a global option, accepted anywhere).
"""

import argparse
import contextlib
import importlib
import io
import os
import re
import sys

#: sub-command -> (module, one-line help)
COMMANDS = {
    "info": ("halsr_hf.commands.info", "print versions, presets and their parameter counts"),
    "segment": ("halsr_hf.commands.segment", "segment slices/volumes, write overlays, masks and measures"),
    "ef": ("halsr_hf.commands.ef", "EDV, ESV, stroke volume, EF and myocardial mass from an ED and an ES volume"),
    "predict": ("halsr_hf.commands.predict", "segment a cohort: a folder or CSV of subjects -> masks, cohort.csv with EF"),
    "prepare": ("halsr_hf.data.cli", "convert ACDC / Sunnybrook / LVQuan / MyoPS 2020 / EMIDEC to a datasets folder"),
    "train": ("halsr_hf.training.arguments:train_main", "train or fine-tune HALSR-Net with transformers.Trainer"),
    "train-roi": ("halsr_hf.training.arguments:train_roi_main", "train or fine-tune the LV ROI regressor"),
    "evaluate": ("halsr_hf.evaluation.run", "evaluate a model as in the paper (tables, boxplots, EF agreement)"),
    "push-to-hub": ("halsr_hf.hub_cli", "publish a model, a dataset or the Space to the Hugging Face Hub"),
    "benchmark": ("halsr_hf.commands.benchmark_cli", "model cost, pipeline and training throughput"),
    "export-onnx": ("halsr_hf.commands.export_onnx", "export the ROI and segmentation models to ONNX"),
}

#: The help of every --model option (``segment``, ``predict``, ``ef``, ``export-onnx``; ``train`` says the same).
MODEL_HELP = "model folder, Hub id, or 'bundled': the model shipped with halsr-hf (the default)"
#: The help of every --tta option: its cost is measured in one place, docs/performance.md
#: ("Test-time augmentation: its cost"), and quoted from there.
TTA_HELP = ("test-time augmentation: average the segmentation over the 8 rotations/flips (3 to 5x the time: the ROI "
            "stage runs once; measured in docs/performance.md)")
VERBOSE_HELP = "--verbose (any command, anywhere): show the progress bars of weight loading and Hub downloads"


def plain(text: str) -> str:
    """Help text without reStructuredText markup: ``literal`` -> literal."""
    return re.sub(r"``(.+?)``", r"\1", text)


def description(doc: str) -> str:
    """The first line of a module docstring, as a plain ``argparse`` description."""
    return plain((doc or "").strip().splitlines()[0])


def set_verbosity(verbose: bool) -> None:
    """Progress bars of weight loading/saving (transformers) and Hub downloads on or off, also for
    ``halsr_hf.load_pipeline`` (quiet by default).

    Imports nothing: where transformers and huggingface_hub are not loaded yet (the command line,
    which loads them only when a command needs them), the quiet setting is the environment variable
    ``HF_HUB_DISABLE_PROGRESS_BARS=1`` that both read when they load (one the user set is kept);
    where they are loaded, their switches."""
    import halsr_hf

    halsr_hf._show_loading_progress = verbose
    loaded = "huggingface_hub" in sys.modules or "transformers" in sys.modules
    if not loaded:
        if not verbose:
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        return
    import huggingface_hub.utils
    import transformers.utils.logging as hf_logging

    if verbose:
        hf_logging.enable_progress_bar()
        huggingface_hub.utils.enable_progress_bars()
    else:
        hf_logging.disable_progress_bar()
        huggingface_hub.utils.disable_progress_bars()


def entry_point(command: str):
    """The function that runs ``command``: ``main`` of its module, or the function named after a
    colon (``"halsr_hf.training.arguments:train_main"``). Importing it loads no heavy library: each
    command imports torch, transformers, datasets... only after its arguments are parsed."""
    module, _, function = COMMANDS[command][0].partition(":")
    return getattr(importlib.import_module(module), function or "main")


def _run(function, argv: list) -> int:
    """Run a sub-command; its ``--help`` is printed without reST markup (module docstrings use it)."""
    if not ("-h" in argv or "--help" in argv or "--help-all" in argv):
        return int(function(argv) or 0)
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            code = int(function(argv) or 0)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 2)
    sys.stdout.write(plain(buffer.getvalue()))
    return code


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv
    argv = [a for a in argv if a != "--verbose"]
    parser = argparse.ArgumentParser(prog="halsr-hf", description=description(__doc__), epilog=VERBOSE_HELP,
                                     usage="halsr-hf [-h] COMMAND [--verbose] ...")
    parser.add_argument("command", choices=sorted(COMMANDS), help="; ".join(f"{k}: {v[1]}" for k, v in COMMANDS.items()))
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        parser.parse_args([command])  # prints the usage error and exits 2
    from .errors import InputError, argument_names

    set_verbosity(verbose)
    function = entry_point(command)
    try:
        with argument_names():
            return _run(function, rest)
    except InputError as error:
        print(f"halsr-hf {command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
