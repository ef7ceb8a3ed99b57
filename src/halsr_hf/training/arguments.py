"""The arguments of ``halsr-hf train`` and ``halsr-hf train-roi``, and their help, without torch
or transformers.

``--help``, ``--help-all`` and the errors in the project's own options answer at once: they are
built here from the argument dataclasses with plain ``argparse``. Training itself parses the same
command line with ``HfArgumentParser(ModelArguments, DataArguments, TrainingArguments)``
(:func:`halsr_hf.training.train.parse`), which adds every option of ``transformers.TrainingArguments``.

Presentation choices:

- every option is shown once, spelt with hyphens (``--dataset-dir``); the underscore spelling of
  the transformers examples (``--dataset_dir``) is accepted too, and not listed twice;
- every option has a description; its default is this command's (``TRAINING_DEFAULTS``), not the
  Trainer's, where the two differ;
- ``--help`` shows what most runs set: the model and data options, and the common Trainer options
  (:data:`TRAINER_OPTIONS`). The fine augmentation and crop knobs (:data:`EXPERT_OPTIONS`) and
  every other Trainer option are under ``--help-all`` (which loads transformers to list its options).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .augment_config import AugmentConfig

#: TrainingArguments defaults of these scripts (prepended to argv, so the command line wins).
TRAINING_DEFAULTS = {
    "output_dir": "runs/halsr",
    "learning_rate": "1e-3",
    "adam_beta1": "0.9",
    "adam_beta2": "0.999",
    "adam_epsilon": "1e-8",
    "weight_decay": "0.0",
    "optim": "adamw_torch",
    "lr_scheduler_type": "cosine",
    "per_device_train_batch_size": "16",
    "per_device_eval_batch_size": "32",
    "num_train_epochs": "100",
    "logging_steps": "10",
    "save_total_limit": "2",
    "remove_unused_columns": "False",
    "report_to": "none",
    "batch_eval_metrics": "True",
    "greater_is_better": "True",
    # one plain log line per logging step (training.callbacks.LogLinesCallback); --disable-tqdm False: a progress bar
    "disable_tqdm": "True",
}

def _help(text: str) -> dict:
    return {"help": text}


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(default=None, metadata=_help(
        "checkpoint folder or Hub id to fine-tune from; 'bundled': the model bundled with halsr-hf"))
    preset: str = field(default="small", metadata=_help("width preset when starting fresh: tiny, small, base, large"))
    config_name: str | None = field(default=None, metadata=_help("config folder/Hub id/JSON file when starting fresh"))
    architecture: str = field(default="halsr", metadata=_help(
        "halsr, or unet: the plain U-Net baseline = HALSR-Net with HAPM, attention gates, reconstruction and dropout "
        "off (HalsrConfig.plain_unet)"))
    ignore_mismatched_sizes: bool = field(default=False, metadata=_help("fine-tune to another label set (new head)"))
    dropout_rate: float | None = field(default=None, metadata=_help("override the config's dropout rate"))
    channels_last: bool = field(default=True, metadata=_help(
        "channels_last memory format (CPU and CUDA: faster convolutions, the same function)"))
    early_stopping_patience: int = field(default=10, metadata=_help(
        "evaluations without improvement before stopping (0: off)"))
    max_shard_size: str | None = field(default=None, metadata=_help(
        "re-save the final model in shards of this size (e.g. 15MB)"))
    trust_remote_code: bool = field(default=False, metadata=_help("for Hub checkpoints with custom code"))


@dataclass
class RoiModelArguments:
    model_name_or_path: str | None = field(default=None, metadata=_help(
        "checkpoint folder or Hub id of a box regressor to fine-tune from"))
    config_name: str | None = field(default=None, metadata=_help(
        "config folder/JSON when starting fresh (default: LvRoiConfig())"))
    roi_size: int = field(default=128, metadata=_help("input side of a fresh model"))
    ignore_mismatched_sizes: bool = field(default=False, metadata=_help("load a checkpoint whose heads differ (new heads)"))
    dropout_rate: float | None = field(default=None, metadata=_help("override the config's dropout rate"))
    channels_last: bool = field(default=True, metadata=_help("channels_last memory format"))
    early_stopping_patience: int = field(default=10, metadata=_help(
        "evaluations without improvement before stopping (0: off)"))
    max_shard_size: str | None = field(default=None, metadata=_help(
        "re-save the final model in shards of this size (e.g. 15MB)"))
    trust_remote_code: bool = field(default=False, metadata=_help("for Hub checkpoints with custom code"))


A = AugmentConfig


@dataclass
class DataArguments:
    dataset_name: str | None = field(default=None, metadata=_help("a datasets Hub id"))
    dataset_config_name: str | None = field(default=None, metadata=_help("its configuration"))
    dataset_dir: str | None = field(default=None, metadata=_help(
        "a save_to_disk folder (halsr-hf prepare), or several separated by commas: the training mix "
        "(data/acdc,data/myops2020,data/emidec)"))
    dataset_weights: str | None = field(default=None, metadata=_help(
        "sampling weight per source of the mix, by the rows' source column: 'myops2020-cine=3,emidec-lge=0.5' (a "
        "source not named: 1; 0 leaves it out of training; validation keeps every source)"))
    arrays_file: str | None = field(default=None, metadata=_help(".npz from scripts/export_arrays.py (no datasets needed)"))
    train_split: str = field(default="train", metadata=_help("the split to train on"))
    eval_split: str = field(default="validation", metadata=_help("the split to evaluate on (and choose the best checkpoint)"))
    max_train_samples: int | None = field(default=None, metadata=_help(
        "train on a seeded random subset of N rows an epoch, after the mix's weights (a quick try)"))
    max_eval_samples: int | None = field(default=None, metadata=_help("use only the first N validation slices"))
    labels: str = field(default="background,lv_cavity,myocardium", metadata=_help(
        "label set (comma separated, background first); missing classes become background"))
    image_size: int = field(default=128, metadata=_help("side of the HALSR-Net crop"))
    eval_margin: float = field(default=0.25, metadata=_help("crop margin at evaluation (= inference), fraction of the box side"))
    train_margin_min: float = field(default=0.10, metadata=_help("smallest random crop margin in training"))
    train_margin_max: float = field(default=0.45, metadata=_help("largest random crop margin in training"))
    train_jitter: float = field(default=0.10, metadata=_help("random crop-centre shift, fraction of the side"))
    side_scale_min: float = field(default=0.9, metadata=_help("smallest random scale of the crop side in training"))
    side_scale_max: float = field(default=1.1, metadata=_help("largest random scale of the crop side in training"))
    augment: bool = field(default=True, metadata=_help("on-the-fly augmentation (training only)"))
    # augmentation knobs (training/augment.py documents each; defaults are AugmentConfig's)
    rotation_degrees: float = field(default=A.rotation_degrees, metadata=_help("free rotation on top of the 8 dihedral transforms"))
    rotation_prob: float = field(default=A.rotation_prob, metadata=_help("probability of the free rotation"))
    scale_min: float = field(default=A.scale_range[0], metadata=_help("smallest zoom factor"))
    scale_max: float = field(default=A.scale_range[1], metadata=_help("largest zoom factor"))
    scale_prob: float = field(default=A.scale_prob, metadata=_help("probability of a zoom"))
    anisotropy: float = field(default=A.anisotropy, metadata=_help("max x/y scale ratio - 1"))
    anisotropy_prob: float = field(default=A.anisotropy_prob, metadata=_help("probability of an anisotropic zoom"))
    elastic_prob: float = field(default=A.elastic_prob, metadata=_help("probability of an elastic deformation"))
    bias_prob: float = field(default=A.bias_prob, metadata=_help("probability of a smooth intensity bias field"))
    remap_prob: float = field(default=A.remap_prob, metadata=_help("probability of a random intensity curve (vendor contrast)"))
    gamma_prob: float = field(default=A.gamma_prob, metadata=_help("probability of a gamma change"))
    inverted_gamma_prob: float = field(default=A.inverted_gamma_prob, metadata=_help("probability of a gamma change of the inverted image"))
    brightness_prob: float = field(default=A.brightness_prob, metadata=_help("probability of a brightness change"))
    contrast_prob: float = field(default=A.contrast_prob, metadata=_help("probability of a contrast change"))
    lowres_prob: float = field(default=A.lowres_prob, metadata=_help("probability of a simulated low resolution"))
    lowres_zoom_min: float = field(default=A.lowres_zoom_range[0], metadata=_help("0.5: down to half the resolution"))
    blur_prob: float = field(default=A.blur_prob, metadata=_help("probability of a Gaussian blur"))
    noise_prob: float = field(default=A.noise_prob, metadata=_help("probability of Gaussian noise"))
    noise_std: float = field(default=A.noise_std, metadata=_help("noise level, in units of the slice's standard deviation"))
    time_limit_minutes: float | None = field(default=None, metadata=_help(
        "stop (after an evaluation and a checkpoint) once training has run this long, summed over every resumed session"))
    resume: bool = field(default=False, metadata=_help(
        "continue from the last checkpoint-N of --output-dir (model, optimiser, scheduler, data order, early-stopping "
        "counter, elapsed time); start fresh if there is none. command.txt and run_args.json keep the first command "
        "and add each session"))
    best_model_sources: str | None = field(default=None, metadata=_help(
        "with several validation sources: the comma-separated sources whose mean dice_mean chooses the best checkpoint "
        "(default: all)"))
    empty_crop_weight: float = field(default=0.0, metadata=_help(
        "segmentation: also train on empty crops, the slices an annotated stack leaves without LV next to an LV slice "
        "(above the base, below the apex), cropped around the neighbour's box with an empty target; each drawn this "
        "many times an epoch (0: off; training/data.py)"))
    task: str = field(default="segmentation", metadata=_help(
        "segmentation (LV crops, the label set of --labels) or localization (whole slices, background/lv: the coarse "
        "localiser of the ROI stage)"))


del A

#: Options that ``--help`` leaves to ``--help-all``: the fine crop and augmentation knobs, and the
#: rarely changed model settings.
EXPERT_OPTIONS = frozenset({
    'config_name', 'ignore_mismatched_sizes', 'dropout_rate', 'channels_last', 'max_shard_size',
    'trust_remote_code', 'dataset_config_name', 'train_split', 'eval_split', 'labels', 'eval_margin',
    'train_margin_min', 'train_margin_max', 'train_jitter', 'side_scale_min', 'side_scale_max',
    'rotation_degrees', 'rotation_prob', 'scale_min', 'scale_max', 'scale_prob', 'anisotropy',
    'anisotropy_prob', 'elastic_prob', 'bias_prob', 'remap_prob', 'gamma_prob', 'inverted_gamma_prob',
    'brightness_prob', 'contrast_prob', 'lowres_prob', 'lowres_zoom_min', 'blur_prob', 'noise_prob',
    'noise_std',
})

#: The ``TrainingArguments`` options that ``--help`` lists (``--help-all``: all of them): name ->
#: (type, default of transformers, help). This command's own defaults (``TRAINING_DEFAULTS``) are
#: shown instead where it sets one; tests/test_cli_output.py checks the types and defaults against
#: ``TrainingArguments``.
TRAINER_OPTIONS = {
    "output_dir": (str, None, "where the model, checkpoints and logs are written"),
    "num_train_epochs": (float, 3.0, "number of epochs"),
    "max_steps": (int, -1, "stop after this many optimisation steps (overrides --num-train-epochs; -1: off)"),
    "learning_rate": (float, 5e-5, "initial learning rate (cosine decay)"),
    "per_device_train_batch_size": (int, 8, "training batch size per device"),
    "per_device_eval_batch_size": (int, 8, "evaluation batch size per device"),
    "gradient_accumulation_steps": (int, 1, "batches added up per optimisation step"),
    "eval_strategy": (str, "no", "when to evaluate and checkpoint: no, steps, epoch"),
    "eval_steps": (float, None, "with --eval-strategy steps: evaluate every N steps (a fraction < 1: of the run)"),
    "save_total_limit": (int, None, "keep at most this many checkpoints (the best one is kept too)"),
    "logging_steps": (float, 500, "print a log line every N steps"),
    "seed": (int, 42, "random seed (model initialisation, data order, augmentation)"),
    "bf16": (bool, False, "bfloat16 mixed precision (on by default on a CUDA GPU that supports it)"),
    "use_cpu": (bool, False, "train on the CPU even when a GPU is available"),
    "dataloader_num_workers": (int, 0, "processes preparing batches (0: the main process)"),
    "resume_from_checkpoint": (str, None, "a checkpoint-N folder to continue from (--resume finds the last one)"),
    "disable_tqdm": (bool, None, "no progress bar: one plain log line per logging step (false: a progress bar, the log lines above it)"),
}
#: ``halsr-hf train-roi``'s defaults: the same, another output folder, and the presence flag passed to the metric.
ROI_DEFAULTS = dict(TRAINING_DEFAULTS)
ROI_DEFAULTS["output_dir"] = "runs/roi"
ROI_DEFAULTS["label_names"] = ["labels", "has_lv"]  # has_lv reaches the metrics
#: For older code that imported the names only.
COMMON_TRAINER_OPTIONS = tuple(TRAINER_OPTIONS)


def _bool(text) -> bool:
    """``HfArgumentParser``'s reading of a boolean: yes/true/t/y/1 or no/false/f/n/0."""
    if isinstance(text, bool):
        return text
    value = str(text).lower()
    if value in ("yes", "true", "t", "y", "1"):
        return True
    if value in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _field_type(annotation) -> type:
    """bool, int, float or str from a field's annotation: a string (``from __future__ import
    annotations``), or the class itself (``HfArgumentParser`` replaces the dataclass fields' string
    types by the resolved ones when it parses, so a second parse in one process sees classes)."""
    if isinstance(annotation, type):
        return annotation if annotation in (bool, int, float) else str
    text = str(annotation).replace("typing.", "").replace(" ", "")
    for name, kind in (("bool", bool), ("int", int), ("float", float)):
        if text in (name, f"{name}|None", f"Optional[{name}]", f"None|{name}"):
            return kind
    return str


def _add(group, name: str, kind: type, default, help_text: str, show: bool) -> None:
    flags = [f"--{name.replace('_', '-')}"]
    if "_" in name:
        flags.append(f"--{name}")  # accepted, not listed (the help shows the first spelling only)
    kwargs = {"dest": name, "default": default, "help": help_text if show else argparse.SUPPRESS}
    if kind is bool:  # --flag alone is true, as with HfArgumentParser
        kwargs.update(type=_bool, nargs="?", const=True, metavar="{true,false}")
    else:
        path = name.endswith(("_dir", "_path", "_file", "_checkpoint")) or name == "model_name_or_path"
        kwargs.update(type=kind, metavar={int: "N", float: "X"}.get(kind, "PATH" if path else "TEXT"))
    group.add_argument(*flags, **kwargs)


class _OneSpelling(argparse.HelpFormatter):
    """Lists an option by its first spelling (``--dataset-dir``), not by every alias."""

    def _format_action_invocation(self, action):
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        return f"{action.option_strings[0]} {self._format_args(action, self._get_default_metavar_for_optional(action))}"

    def _get_help_string(self, action):
        text = action.help or ""
        if ("%(default)" not in text and action.default not in (None, False, argparse.SUPPRESS) and action.option_strings
                and action.dest not in ("help", "help_all")):
            text += " (default: %(default)s)"
        return text


def light_parser(model_arguments_class, defaults: dict, prog: str, everything: bool = False,
                 trainer_options: dict | None = None) -> argparse.ArgumentParser:
    """The parser of ``--help`` (``everything=False``) and ``--help-all``: model and data options
    from the dataclasses, then the Trainer options (:data:`TRAINER_OPTIONS`, or ``trainer_options``:
    all of them), each with this command's default where it sets one."""
    description = (sys.modules[model_arguments_class.__module__].__doc__ or "").strip().splitlines()[0]
    parser = argparse.ArgumentParser(
        prog=prog, usage=f"{prog} [--help | --help-all] [OPTIONS]", add_help=False, formatter_class=_OneSpelling,
        allow_abbrev=False,
        description=None, epilog=None if everything else
        f"{prog} --help-all lists every option: the augmentation and crop settings, and every option of "
        "transformers.TrainingArguments (logging, checkpoints, precision, distributed training, Hub upload, ...).")
    parser.add_argument("-h", "--help", action="store_true", help="show the common options and exit")
    parser.add_argument("--help-all", action="store_true", help="show every option and exit")
    parser.description = _DESCRIPTIONS.get(prog, description)
    for cls, title in ((model_arguments_class, "model options"), (DataArguments, "data options")):
        group = parser.add_argument_group(title)
        for item in dataclasses.fields(cls):
            show = everything or item.name not in EXPERT_OPTIONS
            _add(group, item.name, _field_type(item.type), item.default, item.metadata.get("help", ""), show)
    title = ("Trainer options (transformers.TrainingArguments)" if everything else
             "common Trainer options (transformers.TrainingArguments; all of them: --help-all)")
    group = parser.add_argument_group(title)
    options = trainer_options if trainer_options is not None else TRAINER_OPTIONS
    for name, (kind, default, help_text) in options.items():
        if name in defaults:
            default = _bool(defaults[name]) if kind is bool else kind(defaults[name])
        if name == "eval_strategy":
            default = "epoch"
        _add(group, name, kind, default, help_text, True)
    return parser


#: One-line descriptions of the commands (their module docstrings' first lines, in plain words).
_DESCRIPTIONS = {
    "halsr-hf train": "Train or fine-tune HALSR-Net (or the plain U-Net baseline, or the LV localiser) with "
                      "transformers.Trainer. Fine-tune the bundled model: --model-name-or-path bundled.",
    "halsr-hf train-roi": "Train or fine-tune the paper's LV ROI box regressor with transformers.Trainer.",
}


def all_trainer_options() -> dict:
    """Every ``TrainingArguments`` option as (type, default, help) (loads transformers)."""
    from transformers import TrainingArguments

    options = {}
    for item in dataclasses.fields(TrainingArguments):
        if not item.init or item.name.startswith("_"):
            continue
        default = item.default if item.default is not dataclasses.MISSING else None
        if isinstance(default, (list, dict)) or callable(default):
            default = None
        help_text = " ".join(str(item.metadata.get("help", "")).split()) or TRAINER_OPTIONS.get(item.name, (0, 0, ""))[2]
        if item.name in TRAINER_OPTIONS:
            help_text = TRAINER_OPTIONS[item.name][2]
        options[item.name] = (_field_type(item.type), default, help_text or "see transformers.TrainingArguments")
    return options


def check_arguments(argv, model_arguments_class, defaults: dict, prog: str) -> None:
    """Answer ``--help``/``--help-all`` (then exit 0), and refuse a bad value of a known option
    (exit 2, argparse's message) before torch and transformers are loaded. Options this parser does
    not know are left to the full parser (``HfArgumentParser``), which knows every Trainer option."""
    argv = list(argv)
    if "--help-all" in argv:
        light_parser(model_arguments_class, defaults, prog, everything=True,
                     trainer_options=all_trainer_options()).print_help()
        raise SystemExit(0)
    if "-h" in argv or "--help" in argv:
        light_parser(model_arguments_class, defaults, prog).print_help()
        raise SystemExit(0)
    parser = light_parser(model_arguments_class, defaults, prog)
    _, unknown = parser.parse_known_args(argv)
    known = trainer_field_names()
    for arg in unknown:
        if not arg.startswith("--") or known is None:
            continue
        name = arg[2:].split("=", 1)[0].replace("-", "_")
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known | {f.name for cls in (model_arguments_class, DataArguments)
                                                                     for f in dataclasses.fields(cls)}), n=1)
            hint = f" (did you mean --{close[0].replace('_', '-')}?)" if close else ""
            parser.error(f"unknown option {arg.split('=', 1)[0]}{hint}; {prog} --help-all lists every option")


def trainer_field_names() -> frozenset | None:
    """The names of ``transformers.TrainingArguments``' fields, read from its source file without
    importing it (importing it loads torch); None when the source cannot be read (the full parser
    then checks the names)."""
    try:
        package = importlib.util.find_spec("transformers")  # a top-level name: found, not imported
        tree = ast.parse((Path(package.origin).parent / "training_args.py").read_text(encoding="utf-8"))
    except (ImportError, AttributeError, OSError, SyntaxError, ValueError, TypeError):
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "TrainingArguments":
            return frozenset(item.target.id for item in node.body
                             if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name))
    return None


def train_main(argv) -> int:
    """``halsr-hf train``: help and argument errors here, then :func:`halsr_hf.training.train.main`."""
    check_arguments(argv, ModelArguments, TRAINING_DEFAULTS, "halsr-hf train")
    from .train import main

    return main(argv)


def train_roi_main(argv) -> int:
    """``halsr-hf train-roi``: help and argument errors here, then :func:`halsr_hf.training.train_roi.main`."""
    check_arguments(argv, RoiModelArguments, ROI_DEFAULTS, "halsr-hf train-roi")
    from .train_roi import main

    return main(argv)
