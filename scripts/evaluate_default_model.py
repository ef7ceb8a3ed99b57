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
        [--regressor runs/roi_regressor] [--myops work_data/myops2020] [--emidec work_data/emidec]

With ``--myops`` / ``--emidec``, the default configuration also runs on their test patients
(``evaluation/other_centres/<source>/``: MyoPS 2020 cine and LGE, EMIDEC LGE; 3D Dice in mm for
MyoPS, 2D per slice in px for EMIDEC, which has no spacing); the MyoPS cine summary goes into the
model card beside ACDC's. ``evaluation/orientation_acdc_test.json`` (``scripts/orientation_check.py
--json``), when present, is copied into the model folder for the card: run the orientation check first.

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
    if split == "test" and not flags:  # the default configuration: also against the reference's slices and boxes
        command += ["--roi-variants"]
    start = time.time()
    print("$", " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True)
    return time.time() - start


#: source -> (the option that gives its prepared folder, description) of the other centres' test runs
OTHER_CENTRES = {
    "myops2020-cine": ("myops", "MyoPS 2020 cine (bSSFP), another centre, test patients"),
    "myops2020-lge": ("myops", "MyoPS 2020 late enhancement (outside the cine product's scope)"),
    "emidec-lge": ("emidec", "EMIDEC late enhancement, 8-bit PNG without spacing (outside scope)"),
}


def bundle_evaluation(summary_paths: list, orientation: Path | None) -> None:
    """The bundled model carries its evaluation (``default_model/evaluation/summary.json`` and
    ``summary_2.json``..., which ``halsr-hf push-to-hub model`` publishes, and ``orientation.json``)
    and its card is rendered from them."""
    sys.path.insert(0, str(REPO / "src"))
    from halsr_hf.model_card import write_model_card

    model_dir = REPO / "src" / "halsr_hf" / "default_model"
    evaluation = model_dir / "evaluation"
    shutil.rmtree(evaluation, ignore_errors=True)
    evaluation.mkdir()
    copies = []
    for index, path in enumerate(summary_paths):
        copies.append(evaluation / ("summary.json" if index == 0 else f"summary_{index + 1}.json"))
        shutil.copy2(path, copies[-1])
    if orientation is not None and orientation.is_file():
        shutil.copy2(orientation, evaluation / "orientation.json")
    write_model_card(model_dir, copies, repo_id="halsr-hf/halsr-net")


def mean(block, key):
    """The mean of metric ``key`` in a summary's metrics block, or None."""
    value = (block or {}).get(key) or {}
    return value.get("mean") if isinstance(value, dict) else None


def row(summary: dict) -> dict:
    """The numbers of the ablation table from one summary.json."""
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
    parser.add_argument("--myops", type=Path, default=None, help="halsr-hf prepare myops2020 folder: its test patients too")
    parser.add_argument("--emidec", type=Path, default=None, help="halsr-hf prepare emidec folder: its test patients too")
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
        results[(split, name)] = (row(summary), wall)
        print(f"{split} {name}: {row(summary)} in {wall:.0f} s (load {os.getloadavg()[0]:.2f})", flush=True)
    other = {}
    for source, (option, description) in OTHER_CENTRES.items():
        folder = getattr(args, option)
        if folder is None:
            continue
        target = args.out / "other_centres" / source
        command = [sys.executable, "-m", "halsr_hf.cli", "evaluate", "--dataset-dir", str(folder), "--split", "test",
                   "--source", source, "--out-dir", str(target), "--overwrite", "--quiet", "--batch-size", "16"]
        if source == "myops2020-cine":
            command += ["--roi-variants"]
        print("$", " ".join(command[2:]), flush=True)
        start = time.time()
        subprocess.run(command, check=True)
        summary = json.loads((target / "summary.json").read_text())
        summary.update(wall_s=round(time.time() - start, 1), load_average=os.getloadavg())
        (target / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        other[source] = (summary, description)
    if other:
        (args.out / "other_centres" / "README.md").write_text(render_other(other))
        print(render_other(other))
    write_roi_stage_report(args.out)
    if (args.out / "acdc_test" / "summary.json").is_file() and (not args.only or "default" in args.only):
        summaries = [args.out / "acdc_test" / "summary.json"]
        if "myops2020-cine" in other:
            summaries.append(args.out / "other_centres" / "myops2020-cine" / "summary.json")
        bundle_evaluation(summaries, args.out / "orientation_acdc_test.json")
    for split, name in plan:  # rows of earlier runs (--only), so the table stays whole
        path = ablation / f"{split}_{name}.json"
        if (split, name) not in results and path.is_file():
            summary = json.loads(path.read_text())
            results[(split, name)] = (row(summary), summary.get("wall_s", 0.0))
    results = {key: results[key] for key in plan if key in results}
    (args.out / "ablation.md").write_text(render(results))
    print(render(results))
    return 0


def write_roi_stage_report(out: Path) -> None:
    """``evaluation/roi_stage.md``: the ROI stage against the reference on ACDC test and MyoPS cine
    test (the ``--roi-variants`` tables of their runs), for whoever changes the ROI stage next."""
    sys.path.insert(0, str(REPO / "src"))
    from halsr_hf.evaluation.roi_variants import markdown_table

    lines = ["# The ROI stage against the reference (test patients, end to end through the pipeline)", "",
             "Written by `python scripts/evaluate_default_model.py` (`halsr-hf evaluate --roi-variants`, definitions in",
             "docs/evaluation.md). Each row runs the bundled segmenter; the reference rows replace the ROI stage's slice",
             "choice, its boxes, or both, by the reference's. The gap between the first and the last row is what the ROI",
             "stage costs. Never used for choosing.", ""]
    for folder in (out / "acdc_test", out / "other_centres" / "myops2020-cine"):
        path = folder / "roi_variants.json"
        if not path.is_file():
            continue
        for name, rows in json.loads(path.read_text()).items():
            lines += markdown_table(f"{name} (`{folder.relative_to(out)}/`)", rows)
            plot = folder / f"roi_variants_{name}.png"
            if plot.is_file():
                lines += [f"![LV cavity area per slice, the worst volumes]({plot.relative_to(out)})", ""]
    (out / "roi_stage.md").write_text("\n".join(lines) + "\n")


def render_other(other: dict) -> str:
    """The other centres' test table: Dice per volume (3D, MyoPS) or per slice (2D, EMIDEC)."""
    def cell(block, key):
        value = mean(block, key)
        return "–" if value is None else f"{value:.3f}"

    lines = ["# The default model on other centres' test patients (end to end, through the pipeline)", "",
             "Written by `python scripts/evaluate_default_model.py --myops ... --emidec ...`; never used to choose anything.",
             "", "| source | what | level | LV | MYO | volumes / slices | wall s |", "|---|---|---|---:|---:|---:|---:|"]
    for source, (summary, description) in other.items():
        level, block = ("3D per volume", summary.get("volume_metrics")) if summary.get("volume_metrics") else \
            ("2D per slice", summary.get("slice_metrics"))
        n = ((block or {}).get("dice_lv_cavity") or {}).get("n", "–")
        lines.append(f"| {source} | {description} | {level} | {cell(block, 'dice_lv_cavity')} | "
                     f"{cell(block, 'dice_myocardium')} | {n} | {summary.get('wall_s', 0):.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
