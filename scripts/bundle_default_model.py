#!/usr/bin/env python
"""Put a trained ROI model (the localiser of ``halsr-hf train --task localization``, or a box
regressor of ``halsr-hf train-roi``) into the bundled default model's ``roi/`` folder, with its
training provenance (command, arguments, results, trainer state), replacing what is there.

    python scripts/bundle_default_model.py runs/localizer

The folder is written beside the old one and renamed into place (never half-written).
"""

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

KEEP = ["config.json", "model.safetensors", "command.txt", "run_args.json", "training_args.json",
        "all_results.json", "train_results.json", "eval_results.json", "trainer_state.json"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="training output folder (or a checkpoint-N folder)")
    parser.add_argument("--previous-stage", type=Path, default=None,
                        help="the training run the ROI run started from (its command.txt, run_args.json and "
                             "training_args.json are kept with a stage1_ prefix)")
    parser.add_argument("--model-dir", type=Path, default=Path(__file__).resolve().parents[1] / "src" / "halsr_hf" / "default_model")
    args = parser.parse_args(argv)
    if not (args.run_dir / "config.json").is_file() or not (args.run_dir / "model.safetensors").is_file():
        parser.error(f"{args.run_dir}: no config.json + model.safetensors")
    target = args.model_dir / "roi"
    tmp = Path(tempfile.mkdtemp(prefix=".roi.tmp-", dir=args.model_dir))
    for name in KEEP:
        if (args.run_dir / name).is_file():
            shutil.copy2(args.run_dir / name, tmp / name)
    if args.previous_stage is not None:
        for name in ("command.txt", "run_args.json", "training_args.json"):
            if (args.previous_stage / name).is_file():
                shutil.copy2(args.previous_stage / name, tmp / f"stage1_{name}")
    old = args.model_dir / ".roi.old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    print(f"bundled {args.run_dir} -> {target}: {sorted(p.name for p in target.iterdir())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
