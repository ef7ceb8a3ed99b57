"""Train or fine-tune HALSR-Net (or the plain U-Net baseline) with ``transformers.Trainer``.

``halsr-hf train`` / ``python scripts/train.py`` / ``torchrun --nproc_per_node=N scripts/train.py`` /
``accelerate launch scripts/train.py``, all with the same arguments
(``HfArgumentParser(ModelArguments, DataArguments, TrainingArguments)``). Example (CPU)::

    halsr-hf train --dataset-dir data/acdc --preset small --output-dir runs/small

Flags are spelt with hyphens like every other ``halsr-hf`` command; the underscore spelling of
``transformers`` examples (``--dataset_dir``, ``--output_dir``) is accepted too.

Defaults differ from ``TrainingArguments``' own where the paper or this task says so (Adam with
lr 1e-3, betas 0.9/0.999, eps 1e-8, weight decay 0, cosine decay, batch 16, evaluation and
checkpoint every epoch, best model on validation ``dice_mean``, early stopping); any of them can be
overridden on the command line. On a CUDA GPU with bf16 support ``--bf16`` is on by default and the
model runs channels_last; on the CPU too (``--channels_last``, default on: a HALSR-Net ``small``
training step at 128x128, batch 16, one thread took 1.59 s instead of 2.22 s, the plain U-Net 0.78 s
instead of 0.99 s; same numbers, another memory layout).

HALSR-Net trains on LV crops made as at inference (see :mod:`halsr_hf.training.data`); the output
folder holds the model (safetensors + config), the image processor, ``train_results.json``,
``eval_results.json``, ``all_results.json`` and ``command.txt`` (command line, seed, versions).
"""

import json
import math
import os
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import transformers
from torch.utils.data import default_collate
from transformers import EarlyStoppingCallback, HfArgumentParser, Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from .. import resolve_model
from ..configuration_halsr import PLAIN_UNET, HalsrConfig
from ..data.card import load_split
from ..errors import InputError
from ..image_processing_halsr import HalsrImageProcessor
from ..modeling_halsr import HalsrForSemanticSegmentation
from .arguments import (TRAINING_DEFAULTS, DataArguments, ModelArguments,  # noqa: F401 (re-exported: scripts import them from here)
                        check_arguments)
from .augment import AugmentConfig
from .callbacks import RunProgressCallback, TimeLimitCallback, plain_log_lines
from .carry_roi import carry_roi_stage
from .data import ArraySource, ConcatSource, DatasetSource, HalsrCropDataset, LocalizerDataset, source_names

# -- shared helpers (also used by train_roi.py) -----------------------------------------------


def _flag_value(argv, name):
    """The last value of ``--name`` in ``argv``, spelt with underscores or hyphens (HfArgumentParser
    accepts both: ``--eval_strategy`` = ``--eval-strategy``)."""
    spellings = {f"--{name}", f"--{name.replace('_', '-')}"}
    value = None
    for i, arg in enumerate(argv):
        flag, equals, inline = arg.partition("=")
        if flag in spellings:
            value = inline if equals else (argv[i + 1] if i + 1 < len(argv) else None)
    return value


def build_argv(argv, defaults: dict, metric: str) -> list:
    """Prepend the scripts' defaults to ``argv`` (argparse keeps the last value, so the user's win)."""
    argv = list(argv)
    defaults = dict(defaults)
    defaults["metric_for_best_model"] = metric
    eval_strategy = _flag_value(argv, "eval_strategy") or "epoch"
    defaults["eval_strategy"] = eval_strategy
    defaults["save_strategy"] = _flag_value(argv, "save_strategy") or eval_strategy
    if _flag_value(argv, "eval_steps") and not _flag_value(argv, "save_steps"):
        defaults["save_steps"] = _flag_value(argv, "eval_steps")
    defaults["load_best_model_at_end"] = "False" if eval_strategy == "no" else "True"
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported() and "--fp16" not in argv:
        defaults["bf16"] = "True"
    if not torch.cuda.is_available():
        defaults["dataloader_pin_memory"] = "False"
    prefix = []
    for key, value in defaults.items():
        prefix += [f"--{key}"] + ([str(v) for v in value] if isinstance(value, list) else [str(value)])
    return prefix + argv


def parse(argv, model_arguments_class, defaults: dict, metric: str, prog: str):
    """The (model, data, training) arguments of ``argv``: ``--help``/``--help-all`` and errors in the
    project's own options are answered by :func:`~halsr_hf.training.arguments.check_arguments`
    (without loading transformers when the command line is the caller), then
    ``HfArgumentParser`` reads everything, with this command's defaults first."""
    check_arguments(argv, model_arguments_class, defaults, prog)
    parser = HfArgumentParser((model_arguments_class, DataArguments, TrainingArguments), prog=prog)
    return parser.parse_args_into_dataclasses(args=build_argv(argv, defaults, metric))


def load_source(data_args: DataArguments, split: str, kind: str):
    """The rows of ``split``: an arrays file, a Hub dataset, one ``--dataset-dir`` or, for a
    comma-separated list of folders, their concatenation (:class:`ConcatSource`)."""
    if data_args.arrays_file:
        return ArraySource(data_args.arrays_file, split, kind)
    if not (data_args.dataset_dir or data_args.dataset_name):
        raise InputError("no training data: give --dataset-dir, --dataset-name or --arrays-file")
    if data_args.dataset_name:
        return DatasetSource(load_split(data_args.dataset_dir, split, dataset_name=data_args.dataset_name,
                                        config_name=data_args.dataset_config_name))
    folders = [d.strip() for d in data_args.dataset_dir.split(",") if d.strip()]
    sources = [DatasetSource(load_split(folder, split)) for folder in folders]
    return sources[0] if len(sources) == 1 else ConcatSource(sources)


def parse_weights(text: str | None) -> dict:
    """``'myops2020-cine=3,emidec-lge=0.5'`` -> ``{'myops2020-cine': 3.0, 'emidec-lge': 0.5}``."""
    weights = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, equals, value = item.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            equals = ""
        if not equals:
            raise InputError(f"--dataset-weights: expected SOURCE=WEIGHT items separated by commas, got {item!r}")
    return weights


def epoch_options(data_args: DataArguments, seed: int) -> dict:
    """The training dataset's per-epoch row options (:class:`~halsr_hf.training.data.EpochRows`): the
    mix's weights, the seed, ``--max-train-samples``."""
    return {"weights": parse_weights(data_args.dataset_weights), "seed": seed, "max_samples": data_args.max_train_samples}


class EpochDrawCallback(TrainerCallback):
    """Draws each epoch's training rows (fractional mix weights, empty crops) as the epoch begins:
    ``train_dataset.set_epoch(epoch)``. A resumed run draws the epoch it resumes in as an
    uninterrupted one did (the draw is seeded by seed and epoch)."""

    def __init__(self, train_dataset):
        self.train_dataset = train_dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        if hasattr(self.train_dataset, "set_epoch"):
            self.train_dataset.set_epoch(int(math.floor(state.epoch + 1e-6)))


def per_source(source, make):
    """``make(source)``, or with several sources in the rows a dict ``{source name: make(its rows)}``:
    the Trainer then reports every metric per source (``eval_<source>_dice_mean``)."""
    names = source_names(source)
    unique = sorted(set(names.tolist()))
    if len(unique) <= 1:
        return make(source)
    whole = ConcatSource([source])
    return {name: make(whole.select(np.nonzero(names == name)[0])) for name in unique}


def limit(dataset, n):
    if n is not None and n < len(dataset.indices):
        dataset.indices = dataset.indices[:n]
    return dataset


def augment_config(data_args: DataArguments):
    a = data_args
    return AugmentConfig(
        rotation_degrees=a.rotation_degrees, rotation_prob=a.rotation_prob,
        scale_range=(a.scale_min, a.scale_max), scale_prob=a.scale_prob,
        anisotropy=a.anisotropy, anisotropy_prob=a.anisotropy_prob, elastic_prob=a.elastic_prob,
        bias_prob=a.bias_prob, remap_prob=a.remap_prob, gamma_prob=a.gamma_prob, inverted_gamma_prob=a.inverted_gamma_prob,
        brightness_prob=a.brightness_prob, contrast_prob=a.contrast_prob,
        lowres_prob=a.lowres_prob, lowres_zoom_range=(a.lowres_zoom_min, AugmentConfig.lowres_zoom_range[1]),
        blur_prob=a.blur_prob, noise_prob=a.noise_prob, noise_std=a.noise_std,
    )


class SelectionEarlyStoppingCallback(EarlyStoppingCallback):
    """``EarlyStoppingCallback`` that counts only the evaluations that carry the selection metric.

    With several validation sources the Trainer evaluates each source on its own (metrics
    ``eval_<source>_*``, no ``eval_dice_mean``) before :class:`SourceMeanTrainer` reports their mean;
    the stock callback logged "early stopping is disabled" after each of those, which it was not:
    the mean's evaluation then counted. Those per-source evaluations are skipped silently here."""

    def on_evaluate(self, args, state, control, metrics, **kwargs):
        key = args.metric_for_best_model
        if (key if key.startswith("eval_") else f"eval_{key}") not in metrics:
            return control
        return super().on_evaluate(args, state, control, metrics, **kwargs)


def make_callbacks(model_args, data_args, training_args, has_eval: bool, progress: RunProgressCallback,
                   train_dataset=None) -> list:
    callbacks = [progress, EpochDrawCallback(train_dataset)]
    if has_eval and model_args.early_stopping_patience > 0:
        callbacks.append(SelectionEarlyStoppingCallback(early_stopping_patience=model_args.early_stopping_patience))
    if data_args.time_limit_minutes:
        callbacks.append(TimeLimitCallback(60 * data_args.time_limit_minutes, elapsed_before=progress.elapsed_before))
    return callbacks


class SourceMeanTrainer(Trainer):
    """A ``Trainer`` whose evaluation over several validation sources (a dict of eval datasets, metrics
    ``eval_<source>_<metric>``) also reports ``eval_<metric>``: the mean of ``eval_<source>_<metric>``
    over ``selection_sources`` (all sources by default). That mean is what ``metric_for_best_model``
    and early stopping read, so the best checkpoint is the best on average over the sources, not on
    the largest one."""

    def __init__(self, *args, selection_metric: str = "dice_mean", selection_sources=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.selection_metric = selection_metric
        self.selection_sources = list(selection_sources) if selection_sources else None

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        if eval_dataset is None and isinstance(self.eval_dataset, dict):
            names = self.selection_sources or list(self.eval_dataset)
            missing = [n for n in names if n not in self.eval_dataset]
            if missing:
                raise InputError(f"--best-model-sources names {missing}, which are not validation sources: {list(self.eval_dataset)}")
            key = f"{metric_key_prefix}_{self.selection_metric}"
            metrics[key] = float(np.mean([metrics[f"{metric_key_prefix}_{n}_{self.selection_metric}"] for n in names]))
            self.log({key: metrics[key]})
            # early stopping reads the mean: the per-source evaluations above did not have it
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


def make_collator(channels_last: bool):
    def collate(features):
        batch = default_collate(features)
        if channels_last:
            batch["pixel_values"] = batch["pixel_values"].contiguous(memory_format=torch.channels_last)
        return batch

    return collate


def write_run_info(output_dir, argv, prog, training_args, model_args, data_args, extra=None, resuming: bool = False):
    """``command.txt`` (the exact command, seed, versions), ``run_args.json`` (model and data
    arguments) and ``training_args.json`` (``TrainingArguments.to_json_string()``) for the model card.

    A resumed run (``resuming``) keeps the first command: ``command.txt`` gets a ``resumed:`` line,
    ``run_args.json`` its ``sessions`` list (kept up to date by :class:`RunProgressCallback`)."""
    os.makedirs(output_dir, exist_ok=True)
    if resuming and Path(output_dir, "command.txt").exists():
        with open(Path(output_dir, "command.txt"), "a") as handle:
            handle.write(f"resumed: {time.strftime('%Y-%m-%dT%H:%M:%S')} {prog} {shlex.join(list(argv))}\n")
        return
    world = int(os.environ.get("WORLD_SIZE", "1"))
    launcher = f"torchrun --nproc_per_node={world} " if world > 1 else ""
    lines = [
        f"command: {launcher}{prog} {shlex.join(list(argv))}",
        f"seed: {training_args.seed}",
        f"world_size: {world}",
        f"torch: {torch.__version__}",
        f"transformers: {transformers.__version__}",
        f"device: {'cuda ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'}",
    ]
    Path(output_dir, "command.txt").write_text("\n".join(lines) + "\n")
    payload = {"model_args": asdict(model_args), "data_args": asdict(data_args), "seed": training_args.seed, "argv": list(argv)}
    payload.update(extra or {})
    Path(output_dir, "run_args.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    Path(output_dir, "training_args.json").write_text(training_args.to_json_string())


def finish(trainer, training_args, model_args, train_result, start_time, num_train_samples, progress=None):
    """Save the final (best) model, processor, metrics and state as ``run_*.py`` examples do.
    ``train_wall_s`` is this session's wall time, ``train_wall_s_total`` that of every session."""
    trainer.save_model()
    metrics = dict(train_result.metrics)
    metrics["train_samples"] = num_train_samples
    elapsed = time.time() - start_time
    metrics["train_wall_s"] = round(elapsed, 2)
    if progress is not None:
        progress.record(trainer.state.global_step, final=True)
        metrics["train_wall_s_total"] = round(progress.elapsed(), 2)
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    if training_args.eval_strategy != "no":
        eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
    if model_args.max_shard_size and trainer.is_world_process_zero():
        out = Path(training_args.output_dir)
        for old in out.glob("model*.safetensors*"):
            old.unlink()
        trainer.model.save_pretrained(out, max_shard_size=model_args.max_shard_size)


def train_and_save(argv, prog: str, args: tuple, model, train_dataset, eval_dataset, processor, compute_metrics,
                   architecture: str, preprocess_logits_for_metrics=None) -> int:
    """The common end of ``halsr-hf train`` and ``train-roi``: channels_last, the Trainer
    (early stopping, time limit), the run information files, training, then :func:`finish`.
    ``args``: the parsed (model, data, training) arguments."""
    model_args, data_args, training_args = args
    channels_last = model_args.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    has_eval = eval_dataset is not None
    checkpoint = training_args.resume_from_checkpoint
    if data_args.resume and checkpoint is None:
        checkpoint = get_last_checkpoint(training_args.output_dir) if os.path.isdir(training_args.output_dir) else None
        print(f"--resume: continuing from {checkpoint}" if checkpoint else
              f"--resume: no checkpoint in {training_args.output_dir}: starting from the beginning", flush=True)
    if checkpoint:  # the early-stopping counter and the trainer's control state come back too
        training_args.restore_callback_states_from_checkpoint = True
    progress = RunProgressCallback(training_args.output_dir, argv, checkpoint)
    trainer = SourceMeanTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=make_collator(channels_last),
        processing_class=processor,
        compute_metrics=compute_metrics if has_eval else None,
        preprocess_logits_for_metrics=preprocess_logits_for_metrics,
        callbacks=make_callbacks(model_args, data_args, training_args, has_eval, progress, train_dataset),
        selection_metric=training_args.metric_for_best_model,
        selection_sources=[s.strip() for s in (data_args.best_model_sources or "").split(",") if s.strip()],
    )
    plain_log_lines(trainer)  # one plain line per logging step, numbers as numbers
    if trainer.is_world_process_zero():
        eval_slices = sum(len(d) for d in eval_dataset.values()) if isinstance(eval_dataset, dict) else len(eval_dataset) if has_eval else 0
        write_run_info(
            training_args.output_dir, argv, prog, training_args, model_args, data_args,
            {"architecture": architecture, "num_parameters": sum(p.numel() for p in model.parameters()),
             "train_slices": len(train_dataset), "eval_slices": eval_slices,
             "eval_slices_per_source": {k: len(d) for k, d in eval_dataset.items()} if isinstance(eval_dataset, dict) else None},
            resuming=checkpoint is not None,
        )
    start = time.time()
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    finish(trainer, training_args, model_args, train_result, start, len(train_dataset), progress)
    if trainer.is_world_process_zero():
        print(final_report(trainer.state, training_args), flush=True)
    return 0


def final_report(state, training_args) -> str:
    """The last line of a training run: where the model is and how good its checkpoint was,
    ``model saved to runs/x (best checkpoint runs/x/checkpoint-40: validation dice_mean 0.8731)``."""
    metric = training_args.metric_for_best_model or "metric"
    metric = metric[len("eval_"):] if metric.startswith("eval_") else metric
    if state.best_metric is None:
        return f"model saved to {training_args.output_dir} (the last step's weights: no validation was run)"
    where = f"best checkpoint {state.best_model_checkpoint}" if state.best_model_checkpoint else "best checkpoint"
    return f"model saved to {training_args.output_dir} ({where}: validation {metric} {state.best_metric:.4f})"


# -- segmentation metrics -----------------------------------------------------------------------


def argmax_logits(logits, labels):
    """``preprocess_logits_for_metrics``: keep the label map, not the logits."""
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    return logits.argmax(dim=1)


class DiceMetric:
    """Per-class Dice over all validation crops, accumulated batch by batch (``batch_eval_metrics``):
    ``dice_<label>`` for every non-background label and ``dice_mean``, their mean."""

    def __init__(self, label_names, ignore_index: int = 255):
        self.label_names = list(label_names)
        self.ignore_index = ignore_index
        self.reset()

    def reset(self):
        n = len(self.label_names)
        self.intersection, self.pred_sum, self.label_sum = np.zeros(n), np.zeros(n), np.zeros(n)

    def __call__(self, eval_pred, compute_result: bool = True):
        preds = torch.as_tensor(eval_pred.predictions)
        labels = torch.as_tensor(eval_pred.label_ids).to(preds.device)
        valid = (labels != self.ignore_index) & (labels >= 0)
        for c in range(1, len(self.label_names)):
            p, t = (preds == c) & valid, (labels == c) & valid
            self.intersection[c] += float((p & t).sum())
            self.pred_sum[c] += float(p.sum())
            self.label_sum[c] += float(t.sum())
        if not compute_result:
            return {}
        result = {}
        for c in range(1, len(self.label_names)):
            denominator = self.pred_sum[c] + self.label_sum[c]
            result[f"dice_{self.label_names[c]}"] = float(2 * self.intersection[c] / denominator) if denominator else 1.0
        result["dice_mean"] = float(np.mean(list(result.values())))
        self.reset()
        return result


# -- model ---------------------------------------------------------------------------------------


def build_model(model_args: ModelArguments, data_args: DataArguments, label_names):
    """A fresh model from ``--preset``/``--config_name``, or ``--model_name_or_path`` to fine-tune.
    ``--architecture unet`` is the same class with :data:`PLAIN_UNET` (HALSR-Net without its three
    modules and dropout): the baseline is a configuration, not another network."""
    if model_args.architecture not in ("halsr", "unet"):
        raise ValueError(f"--architecture must be halsr or unet, got {model_args.architecture!r}")
    id2label = {i: name for i, name in enumerate(label_names)}
    label2id = {name: i for i, name in id2label.items()}
    overrides = {"id2label": id2label, "label2id": label2id, "num_labels": len(id2label)}
    if model_args.architecture == "unet":
        overrides.update(PLAIN_UNET)
    if model_args.dropout_rate is not None:
        overrides["dropout_rate"] = model_args.dropout_rate
    overrides["stage"] = "localization" if data_args.task == "localization" else "segmentation"  # how the pipeline recognises a localiser
    if model_args.model_name_or_path:
        model = HalsrForSemanticSegmentation.from_pretrained(
            model_args.model_name_or_path, ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
            trust_remote_code=model_args.trust_remote_code, **overrides,
        )
    else:
        if model_args.config_name:
            config = HalsrConfig.from_pretrained(model_args.config_name, **overrides)
        else:
            config = HalsrConfig.from_preset(model_args.preset, **overrides)
        model = HalsrForSemanticSegmentation(config)
    model.config.image_size = data_args.image_size
    # forward(**kwargs) makes the Trainer think the model scales the loss for gradient accumulation.
    model.accepts_loss_kwargs = False
    return model


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = "halsr-hf train"
    model_args, data_args, training_args = parse(argv, ModelArguments, TRAINING_DEFAULTS, "dice_mean", prog)
    if model_args.model_name_or_path:  # "bundled": the model shipped with the package (halsr_hf.BUNDLED)
        model_args.model_name_or_path = resolve_model(model_args.model_name_or_path)
    if data_args.task not in ("segmentation", "localization"):
        raise ValueError(f"--task must be segmentation or localization, got {data_args.task!r}")
    localization = data_args.task == "localization"
    label_names = ["background", "lv"] if localization else [n.strip() for n in data_args.labels.split(",") if n.strip()]

    set_seed(training_args.seed)  # before the model is built
    model = build_model(model_args, data_args, label_names)
    epochs = epoch_options(data_args, training_args.seed)
    if localization:
        train_dataset = LocalizerDataset(load_source(data_args, data_args.train_split, "roi"), roi_size=data_args.image_size,
                                         train=data_args.augment, augment=augment_config(data_args), **epochs)
    else:
        common = {"label_names": label_names, "size": data_args.image_size, "eval_margin": data_args.eval_margin}
        train_dataset = HalsrCropDataset(
            load_source(data_args, data_args.train_split, "halsr"), train=data_args.augment, augment=augment_config(data_args),
            margin_range=(data_args.train_margin_min, data_args.train_margin_max), jitter=data_args.train_jitter,
            side_scale_range=(data_args.side_scale_min, data_args.side_scale_max),
            empty_weight=data_args.empty_crop_weight, **epochs, **common,
        )
    eval_dataset = None
    if training_args.eval_strategy != "no":
        if localization:
            make = lambda source: limit(LocalizerDataset(source, roi_size=data_args.image_size), data_args.max_eval_samples)  # noqa: E731
        else:
            make = lambda source: limit(HalsrCropDataset(source, train=False, **common), data_args.max_eval_samples)  # noqa: E731
        kind = "roi" if localization else "halsr"
        eval_dataset = per_source(load_source(data_args, data_args.eval_split, kind), make)
    code = train_and_save(
        argv, prog, (model_args, data_args, training_args), model, train_dataset, eval_dataset,
        HalsrImageProcessor(size=data_args.image_size, crop_margin=data_args.eval_margin),
        DiceMetric(label_names, model.config.semantic_loss_ignore_index), model_args.architecture,
        preprocess_logits_for_metrics=argmax_logits,
    )
    if not localization and training_args.should_save:  # a fine-tuned model keeps its ROI stage
        carry_roi_stage(model_args.model_name_or_path, training_args.output_dir, model.config.roi_subfolder)
    return code


if __name__ == "__main__":
    sys.exit(main())
