#!/usr/bin/env python
"""Bundle trained networks as the package's default model (``src/halsr_hf/default_model``), with
their training provenance, replacing what is there.

    python scripts/bundle_default_model.py --segmenter runs/mix_small --localizer runs/mix_localizer \\
        [--settings component_connectivity=8 basal_enclosure_threshold=0.95]

* ``--segmenter``: a ``halsr-hf train`` output folder (or a ``checkpoint-N`` folder): the HALSR-Net
  weights, config and image processor go to the model folder's top level;
* ``--localizer`` (or a box regressor of ``halsr-hf train-roi``): goes to ``roi/``;
* each network's folder keeps its training command (``command.txt``: the first command and every
  resumed session), ``run_args.json`` (arguments, sessions, steps, summed wall time),
  ``training_args.json``, results, ``trainer_state.json`` and ``learning_curves.png``
  (``scripts/plot_learning_curves.py``), plus ``hardware.txt`` (where it was trained);
* ``--segmenter-stage1``: when the segmenter was trained in two stages (the second started from a
  checkpoint of the first, ``scripts/anneal_default_segmenter.sh``), that checkpoint: its record
  goes in as ``stage1_*`` files and the learning curves show both stages;
* ``--settings``: the inference settings chosen on validation
  (``scripts/choose_inference_settings.py``), written into ``preprocessor_config.json``.

Either network may be given alone (the other stays as bundled). The model folder is written beside
the old one and renamed into place (never half-written).
"""

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plot_learning_curves import draw  # noqa: E402

from halsr_hf.image_processing_halsr import ROI_STAGE_SETTINGS  # noqa: E402
from halsr_hf.model_card import portable_paths  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = ["config.json", "model.safetensors"]
PROVENANCE = ["command.txt", "run_args.json", "training_args.json", "all_results.json", "train_results.json",
              "eval_results.json", "trainer_state.json"]
#: a two-stage segmenter's first-stage record, copied in as ``stage1_<name>`` (--segmenter-stage1)
STAGE1_FILES = ["command.txt", "run_args.json", "training_args.json", "trainer_state.json"]


def hardware() -> str:
    threads = os.environ.get("OMP_NUM_THREADS", "?")
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    device = f"cuda {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else f"cpu: {cpu}, {os.cpu_count()} cores"
    return (f"bundled on: {device}; OMP_NUM_THREADS at bundling {threads}\n"
            "the device each session trained on is in command.txt (device:) and run_args.json (sessions)\n")


def copy_run(run_dir: Path, target: Path, extra: tuple = (), stage1: Path | None = None) -> None:
    if not all((run_dir / name).is_file() for name in WEIGHTS):
        raise SystemExit(f"{run_dir}: no config.json + model.safetensors (train it to the end, or give a checkpoint-N folder)")
    target.mkdir(parents=True, exist_ok=True)
    for name in WEIGHTS + PROVENANCE + list(extra):
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, target / name)
    # a checkpoint-N folder has no command.txt/run_args.json: take them from its run folder
    for name in ("command.txt", "run_args.json", "training_args.json"):
        if not (target / name).is_file() and (run_dir.parent / name).is_file():
            shutil.copy2(run_dir.parent / name, target / name)
    if stage1 is not None:
        for name in STAGE1_FILES:
            source = stage1 / name if (stage1 / name).is_file() else stage1.parent / name
            if source.is_file():
                shutil.copy2(source, target / f"stage1_{name}")
    draw(run_dir, target / "learning_curves.png", after=stage1)
    (target / "hardware.txt").write_text(hardware())
    make_portable(target)


def make_portable(folder: Path) -> None:
    """The text records published with the model (command.txt, run_args.json, stage1_*...) name the
    datasets and give project-relative paths, not the training machine's absolute folders
    (``halsr_hf.model_card.portable_paths``; weights and images are left alone)."""
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix in (".txt", ".json", ".md"):
            text = path.read_text(encoding="utf-8")
            portable = portable_paths(text, REPO)
            if portable != text:
                path.write_text(portable, encoding="utf-8")


def parse_settings(items) -> dict:
    settings = {}
    for item in items or []:
        name, _, value = item.partition("=")
        if name not in ROI_STAGE_SETTINGS:
            raise SystemExit(f"--settings {item!r}: not one of {', '.join(ROI_STAGE_SETTINGS)}")
        settings[name] = float(value)
    return settings


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segmenter", type=Path, default=None, help="halsr-hf train output (or checkpoint-N) folder")
    parser.add_argument("--segmenter-stage1", type=Path, default=None,
                        help="the checkpoint of the first stage the segmenter's run started from (two-stage training)")
    parser.add_argument("--localizer", type=Path, default=None, help="the ROI stage's training output (or checkpoint-N) folder")
    parser.add_argument("--settings", nargs="*", default=None, metavar="NAME=VALUE",
                        help="inference settings chosen on validation, written into preprocessor_config.json")
    parser.add_argument("--model-dir", type=Path, default=REPO / "src" / "halsr_hf" / "default_model")
    args = parser.parse_args(argv)
    if args.segmenter is None and args.localizer is None and not args.settings:
        parser.error("nothing to bundle: give --segmenter, --localizer and/or --settings")
    settings = parse_settings(args.settings)

    model_dir = args.model_dir
    tmp = Path(tempfile.mkdtemp(prefix=".default_model.tmp-", dir=model_dir.parent))
    try:
        if args.segmenter is not None:
            copy_run(args.segmenter, tmp, extra=("preprocessor_config.json",), stage1=args.segmenter_stage1)
            if not (tmp / "preprocessor_config.json").is_file():
                shutil.copy2(model_dir / "preprocessor_config.json", tmp / "preprocessor_config.json")
        else:
            for path in model_dir.iterdir():
                if path.is_file():
                    shutil.copy2(path, tmp / path.name)
        if args.localizer is not None:
            copy_run(args.localizer, tmp / "roi")
            config = json.loads((tmp / "roi" / "config.json").read_text())
            if config.get("model_type") == "halsr" and "stage" not in config:  # trained before configs said so
                config["stage"] = "localization"
                (tmp / "roi" / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        else:
            shutil.copytree(model_dir / "roi", tmp / "roi")
        for config_path in (tmp / "config.json", tmp / "roi" / "config.json"):
            # a Trainer's folder names its remote code (auto_map) beside the .py files; the bundle holds
            # weights and configs only (the package provides the classes), so the pointer would dangle
            config = json.loads(config_path.read_text())
            if "auto_map" in config and not any(config_path.parent.glob("*.py")):
                del config["auto_map"]
                config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        processor = json.loads((tmp / "preprocessor_config.json").read_text())
        old = json.loads((model_dir / "preprocessor_config.json").read_text())
        for key in ("roi_size", *ROI_STAGE_SETTINGS):  # the ROI stage's tuned values travel with the bundle
            if key not in processor and key in old:
                processor[key] = old[key]
        processor.update(settings)
        (tmp / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
        if (model_dir / "README.md").is_file() and not (tmp / "README.md").is_file():
            shutil.copy2(model_dir / "README.md", tmp / "README.md")  # the card is re-rendered from the evaluation
        make_portable(tmp)  # records kept from the previous bundle too
        previous = model_dir.parent / ".default_model.old"
        shutil.rmtree(previous, ignore_errors=True)
        model_dir.rename(previous)
        tmp.rename(model_dir)
        shutil.rmtree(previous, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"bundled -> {model_dir}: {sorted(p.name for p in model_dir.iterdir())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
