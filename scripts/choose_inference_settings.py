#!/usr/bin/env python
"""Choose the default model's inference settings on validation only, end to end through the
pipeline: test-time augmentation, the largest-component connectivity and the base-of-the-ventricle
rule (``image_processing_halsr.ROI_STAGE_SETTINGS``), on the validation splits of ACDC and of
MyoPS 2020 cine (another centre and scanner). Test splits are never read here.

    python scripts/choose_inference_settings.py --model runs/candidate \\
        --acdc work_data/acdc --myops work_data/myops2020 --out evaluation/validation_choices

Runs ``halsr-hf evaluate`` once per (dataset, variant) and writes ``<out>/<dataset>_<variant>.json``
(each run's summary, with its wall time and load average) and ``<out>/README.md`` (the table:
3D Dice per volume, LV Dice at ED and at ES, EF mean absolute error). The rule for choosing is in
the table's header: the mean of the two datasets' LV + MYO 3D Dice, with EF error as the tie-break.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: variant -> (extra evaluate flags, description)
VARIANTS = {
    "default": ([], "as saved in the model's preprocessor_config.json"),
    "tta": (["--tta"], "test-time augmentation (8 rotations/flips)"),
    "connectivity8": (["--setting", "component_connectivity=8"], "largest component, 8-connected"),
    "basal0.90": (["--setting", "basal_enclosure_threshold=0.90"], "base rule, enclosure >= 0.90"),
    "basal0.95": (["--setting", "basal_enclosure_threshold=0.95"], "base rule, enclosure >= 0.95"),
    "basal0.95+connectivity8": (["--setting", "basal_enclosure_threshold=0.95", "--setting", "component_connectivity=8"],
                                "base rule 0.95 and 8-connected"),
}


def evaluate(model, dataset_dir: Path, source, flags: list, out_dir: Path) -> float:
    command = [sys.executable, "-m", "halsr_hf.cli", "evaluate", "--dataset-dir", str(dataset_dir), "--split", "validation",
               "--out-dir", str(out_dir), "--overwrite", "--quiet", "--no-plots", "--batch-size", "16"] + flags
    if model:
        command += ["--model", str(model)]
    if source:
        command += ["--source", source]
    start = time.time()
    print("$", " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True)
    return time.time() - start


def numbers(out_dir: Path) -> dict:
    summary = json.loads((out_dir / "summary.json").read_text())

    def mean(block, key):
        value = (block or {}).get(key) or {}
        return value.get("mean") if isinstance(value, dict) else None

    with open(out_dir / "volumes.csv", newline="") as handle:
        volumes = list(csv.DictReader(handle))
    by_phase = {}
    for row in volumes:
        if row["dice_lv_cavity"] not in ("", "nan"):
            by_phase.setdefault(row["phase"], []).append(float(row["dice_lv_cavity"]))
    return {
        "lv_3d": mean(summary.get("volume_metrics"), "dice_lv_cavity"),
        "myo_3d": mean(summary.get("volume_metrics"), "dice_myocardium"),
        "lv_ed": sum(by_phase["ED"]) / len(by_phase["ED"]) if by_phase.get("ED") else None,
        "lv_es": sum(by_phase["ES"]) / len(by_phase["ES"]) if by_phase.get("ES") else None,
        "ef_mae": (summary.get("clinical") or {}).get("ef_mae"),
        "volumes": len(volumes),
    }


def render(results: dict, datasets: list) -> str:
    def fmt(value, digits=3):
        return "–" if value is None else f"{value:.{digits}f}"

    lines = ["# Inference settings chosen on validation", "",
             "Written by `python scripts/choose_inference_settings.py`. End to end through the pipeline on the",
             "validation splits only; 3D Dice per volume (mean), LV Dice at ED and at ES, EF mean absolute error",
             "(points). Score = mean over datasets of (LV 3D + MYO 3D) / 2; the best score wins, EF error breaks ties.", "",
             "| variant | " + " | ".join(f"{d} LV / MYO | {d} LV ED / ES | {d} EF MAE" for d in datasets) + " | score |",
             "|---|" + "---:|" * (3 * len(datasets) + 1)]
    for variant in VARIANTS:
        cells, scores = [], []
        for dataset in datasets:
            n = results.get((dataset, variant))
            if n is None:
                cells += ["–", "–", "–"]
                continue
            cells += [f"{fmt(n['lv_3d'])} / {fmt(n['myo_3d'])}", f"{fmt(n['lv_ed'])} / {fmt(n['lv_es'])}", fmt(n["ef_mae"], 2)]
            if n["lv_3d"] is not None and n["myo_3d"] is not None:
                scores.append((n["lv_3d"] + n["myo_3d"]) / 2)
        score = sum(scores) / len(scores) if len(scores) == len(datasets) else None
        lines.append(f"| {variant}: {VARIANTS[variant][1]} | " + " | ".join(cells) + f" | {fmt(score, 4)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: the bundled model)")
    parser.add_argument("--acdc", type=Path, required=True, help="halsr-hf prepare acdc-ssl4mis folder")
    parser.add_argument("--myops", type=Path, required=True, help="halsr-hf prepare myops2020 folder (its cine rows are used)")
    parser.add_argument("--out", type=Path, default=REPO / "evaluation" / "validation_choices")
    parser.add_argument("--only", nargs="*", default=None, help="run only these variants")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    datasets = {"acdc": (args.acdc, None), "myops-cine": (args.myops, "myops2020-cine")}
    print(f"load average before: {os.getloadavg()}", flush=True)
    results = {}
    for variant, (flags, _) in VARIANTS.items():
        if args.only and variant not in args.only:
            continue
        for name, (folder, source) in datasets.items():
            with tempfile.TemporaryDirectory(prefix="halsr-choose-") as tmp:
                out_dir = Path(tmp) / "out"
                wall = evaluate(args.model, folder, source, flags, out_dir)
                result = numbers(out_dir)
                summary = json.loads((out_dir / "summary.json").read_text())
                summary.update(wall_s=round(wall, 1), load_average=os.getloadavg(), numbers=result)
                (args.out / f"{name}_{variant}.json").write_text(json.dumps(summary, indent=2) + "\n")
            results[(name, variant)] = result
            print(f"{name} {variant}: {result} in {wall:.0f} s (load {os.getloadavg()[0]:.2f})", flush=True)
    for path in args.out.glob("*_*.json"):  # earlier runs of other variants, for the whole table
        name, _, variant = path.stem.partition("_")
        if (name, variant) not in results and variant in VARIANTS:
            results[(name, variant)] = json.loads(path.read_text())["numbers"]
    table = render(results, list(datasets))
    (args.out / "README.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
