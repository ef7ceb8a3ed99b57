#!/usr/bin/env python
"""Evaluate the bundled default model end to end and write what the repository commits under
``evaluation/``: the full ``halsr-hf evaluate`` output on ACDC test + Sunnybrook
(``evaluation/acdc_test/``), and an ablation of the ROI stage's parts on the validation split
(where the defaults were chosen) and on the test split (reported, never used for choosing):
``evaluation/ablation/<split>_<run>.json`` (each run's summary.json) and
``evaluation/ablation.md`` (the table, also in the README).

    halsr-hf prepare acdc-ssl4mis --source ../shared/data/acdc-ssl4mis --out work_data/acdc
    halsr-hf prepare sunnybrook --source ../shared/data/sunnybrook --out work_data/sunnybrook
    python scripts/evaluate_default_model.py --acdc work_data/acdc --sunnybrook work_data/sunnybrook \\
        [--regressor runs/roi_regressor]

Runs ``halsr-hf evaluate`` once per (split, configuration); prints and records each run's wall
time and the load average.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: configuration name -> (extra evaluate flags, description); ``{regressor}`` is --regressor's folder
RUNS = {
    "default": ([], "localiser + volume consensus + second look (the pipeline's defaults)"),
    "no_second_look": (["--second-look", "0"], "localiser + volume consensus"),
    "no_consensus": (["--no-consensus"], "localiser + second look"),
    "localiser_only": (["--second-look", "0", "--no-consensus"], "localiser alone"),
    "regressor": (["--roi-model", "{regressor}"], "the paper's box regressor + volume consensus + second look"),
    "regressor_only": (["--roi-model", "{regressor}", "--second-look", "0", "--no-consensus"],
                       "the paper's box regressor alone"),
    "no_roi": (["--no-roi"], "no ROI stage: the whole slice, padded to a square"),
}
VALIDATION_RUNS = ["default", "no_second_look", "no_consensus", "localiser_only"]


def evaluate(args, split: str, flags: list, out_dir: Path, extra: bool) -> float:
    command = [sys.executable, "-m", "halsr_hf.cli", "evaluate", "--dataset-dir", str(args.acdc), "--split", split,
               "--out-dir", str(out_dir), "--overwrite", "--quiet", "--batch-size", "16"] + flags
    if extra:
        command += ["--extra-dataset-dir", str(args.sunnybrook), "--extra-split", "test"]
    start = time.time()
    print("$", " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True)
    return time.time() - start


def bundle_evaluation(summary_path: Path) -> None:
    """The bundled model carries its evaluation (``default_model/evaluation/summary.json``, which
    ``halsr-hf push-to-hub model`` publishes) and its card is rendered from it."""
    sys.path.insert(0, str(REPO / "src"))
    from halsr_hf.model_card import write_model_card

    model_dir = REPO / "src" / "halsr_hf" / "default_model"
    (model_dir / "evaluation").mkdir(exist_ok=True)
    shutil.copy2(summary_path, model_dir / "evaluation" / "summary.json")
    write_model_card(model_dir, [model_dir / "evaluation" / "summary.json"], repo_id="halsr-hf/halsr-net")


def row(summary: dict) -> dict:
    """The numbers of the ablation table from one summary.json."""
    def mean(block, key):
        value = (block or {}).get(key) or {}
        return value.get("mean") if isinstance(value, dict) else None

    roi = summary.get("roi") or {}
    if roi and "final_crop_iou_mean" not in roi:  # an older summary: its ROI numbers are the final crop's
        roi = {"final_crop_iou_mean": roi.get("iou_mean"), "final_crop_in_crop_percent": roi.get("in_crop_percent")}
    out = {
        "lv_3d": mean(summary.get("volume_metrics"), "dice_lv_cavity"),
        "myo_3d": mean(summary.get("volume_metrics"), "dice_myocardium"),
        "stage_iou": roi.get("iou_mean"),
        "stage_in_crop": roi.get("in_crop_percent"),
        "final_iou": roi.get("final_crop_iou_mean"),
        "final_in_crop": roi.get("final_crop_in_crop_percent"),
        "ef_mae": (summary.get("clinical") or {}).get("ef_mae"),
    }
    for extra in summary.get("extra_evaluations") or []:
        out["sb_lv"] = mean(extra.get("slice_metrics"), "dice_lv_cavity")
        out["sb_myo"] = mean(extra.get("slice_metrics"), "dice_myocardium")
    return out


def render(results: dict) -> str:
    def fmt(value, digits=3):
        return "–" if value is None else f"{value:.{digits}f}"

    lines = [
        "# ROI-stage ablation of the bundled model (end to end, through the pipeline)",
        "",
        "Written by `python scripts/evaluate_default_model.py`. ACDC: 3D Dice per volume (mean over",
        "volumes); box IoU and 'reference LV box inside the crop' over the slices that show the LV (a",
        "missed LV counts as IoU 0, outside), for the ROI stage's own box (before any second look) and",
        "for the box of the final crop (after the second look: partly the segmentation network's); EF",
        "mean absolute error in points (voxel counts: ACDC has no spacing, which cancels in EF).",
        "Sunnybrook: 2D Dice per annotated slice (myocardium without SCD0000501). Defaults were chosen",
        "on validation; test is reported only.",
        "",
        "| split | configuration | LV 3D | MYO 3D | ROI stage IoU | LV in ROI-stage crop % | final-crop box IoU | "
        "LV in final crop % | EF MAE | SB LV | SB MYO | wall s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (split, name), (numbers, wall) in results.items():
        lines.append(
            f"| {split} | {name}: {RUNS[name][1]} | {fmt(numbers.get('lv_3d'))} | {fmt(numbers.get('myo_3d'))} | "
            f"{fmt(numbers.get('stage_iou'))} | {fmt(numbers.get('stage_in_crop'), 1)} | {fmt(numbers.get('final_iou'))} | "
            f"{fmt(numbers.get('final_in_crop'), 1)} | {fmt(numbers.get('ef_mae'), 2)} | "
            f"{fmt(numbers.get('sb_lv'))} | {fmt(numbers.get('sb_myo'))} | {wall:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--acdc", type=Path, required=True, help="halsr-hf prepare acdc-ssl4mis folder")
    parser.add_argument("--sunnybrook", type=Path, required=True, help="halsr-hf prepare sunnybrook folder")
    parser.add_argument("--regressor", type=Path, default=None, help="a trained box regressor (halsr-hf train-roi) for the ablation")
    parser.add_argument("--out", type=Path, default=REPO / "evaluation")
    parser.add_argument("--only", nargs="*", default=None, help="run only these configurations")
    args = parser.parse_args(argv)

    ablation = args.out / "ablation"
    ablation.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {os.getloadavg()}", flush=True)
    results = {}
    plan = [("validation", name) for name in VALIDATION_RUNS] + [("test", name) for name in RUNS]
    for split, name in plan:
        flags = RUNS[name][0]
        if (args.only and name not in args.only) or ("{regressor}" in flags and not args.regressor):
            continue
        flags = [str(args.regressor) if flag == "{regressor}" else flag for flag in flags]
        with tempfile.TemporaryDirectory(prefix="halsr-eval-") as tmp:
            out_dir = Path(tmp) / "out"
            wall = evaluate(args, split, flags, out_dir, extra=split == "test")
            summary = json.loads((out_dir / "summary.json").read_text())
            summary["wall_s"] = round(wall, 1)
            summary["load_average"] = os.getloadavg()
            (ablation / f"{split}_{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
            if split == "test" and name == "default":
                target = args.out / "acdc_test"
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(out_dir, target)
                bundle_evaluation(out_dir / "summary.json")
        results[(split, name)] = (row(summary), wall)
        print(f"{split} {name}: {row(summary)} in {wall:.0f} s (load {os.getloadavg()[0]:.2f})", flush=True)
    if not args.only:
        (args.out / "ablation.md").write_text(render(results))
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
