#!/usr/bin/env python
"""Choose the default model's inference settings on validation only, end to end through the
pipeline: test-time augmentation, the largest-component connectivity and the base-of-the-ventricle
rule (``image_processing_halsr.ROI_STAGE_SETTINGS``), on the validation splits of ACDC and of
MyoPS 2020 cine (another centre and scanner). Test splits are never read here.

    python scripts/choose_inference_settings.py --model bundled=src/halsr_hf/default_model \\
        new=runs/candidate --acdc work_data/acdc --myops work_data/myops2020 --out evaluation/validation_choices

``--model`` takes one model folder or several ``NAME=FOLDER`` candidates (other networks: a new
segmenter with the old or the new localiser, ...): every candidate runs with every variant, so
networks and settings are chosen together. Runs ``halsr-hf evaluate`` once per (dataset,
candidate, variant) and writes ``<out>/<dataset>_<candidate>_<variant>.json`` (each run's summary,
with its wall time and load average), ``<out>/README.md`` (the table: 3D Dice per volume, LV Dice
at ED and at ES, EF mean absolute error) and ``<out>/scores.png``. The rule for choosing is in the
table's header: the mean of the two datasets' LV + MYO 3D Dice, with EF error as the tie-break.
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
    # issue 24: where the ventricle begins and ends
    "nobasal": (["--setting", "basal_enclosure_threshold=0"], "base rule off"),
    "stack3d": (["--setting", "stack_component=1"], "the stack's largest 3D LV component (with the model's base rule)"),
    "stack3d+nobasal": (["--setting", "stack_component=1", "--setting", "basal_enclosure_threshold=0"],
                        "the stack's largest 3D LV component, base rule off"),
    "esed": (["--setting", "es_within_ed=1"], "ES slices within ED's (with the model's base rule)"),
    "esed+nobasal": (["--setting", "es_within_ed=1", "--setting", "basal_enclosure_threshold=0"],
                     "ES slices within ED's, base rule off"),
    "esed+stack3d": (["--setting", "es_within_ed=1", "--setting", "stack_component=1"],
                     "ES slices within ED's and the largest 3D component (with the model's base rule)"),
    "esed+apex1.5": (["--setting", "es_within_ed=1", "--setting", "apex_growth=1.5"], "ES within ED, apex rule 1.5"),
    "esed+apex2": (["--setting", "es_within_ed=1", "--setting", "apex_growth=2"], "ES within ED, apex rule 2"),
    "esed+apex3": (["--setting", "es_within_ed=1", "--setting", "apex_growth=3"], "ES within ED, apex rule 3"),
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
    with open(out_dir / "slices.csv", newline="") as handle:
        complete = {(row["patient_id"], row["phase"], row["source"]) for row in volumes}
        presence = {}  # phase -> [tp, fp, fn]: LV cavity on a slice of a complete stack, predicted vs reference
        for row in csv.DictReader(handle):
            if (row["patient_id"], row["phase"], row["source"]) not in complete:
                continue
            ref, pred = int(row["ref_lv_cavity_px"]) > 0, int(row["pred_lv_cavity_px"]) > 0
            counts = presence.setdefault(row["phase"].upper(), [0, 0, 0])
            counts[0] += ref and pred
            counts[1] += pred and not ref
            counts[2] += ref and not pred
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
        "es_precision": _ratio(presence.get("ES"), 1), "es_recall": _ratio(presence.get("ES"), 2),
        "es_too_many": (presence.get("ES") or [None, None])[1],
    }


def _ratio(counts, other: int):
    """tp / (tp + counts[other]): precision (other = 1, false positives) or recall (2, misses)."""
    if not counts or counts[0] + counts[other] == 0:
        return None
    return counts[0] / (counts[0] + counts[other])


def score(results: dict, datasets: list, candidate: str, variant: str):
    values = [results.get((d, candidate, variant)) for d in datasets]
    if any(n is None or n["lv_3d"] is None or n["myo_3d"] is None for n in values):
        return None
    return sum((n["lv_3d"] + n["myo_3d"]) / 2 for n in values) / len(values)


def render(results: dict, datasets: list, candidates: dict) -> str:
    def fmt(value, digits=3):
        return "–" if value is None else f"{value:.{digits}f}"

    lines = ["# Inference settings chosen on validation", "",
             "Written by `python scripts/choose_inference_settings.py`. End to end through the pipeline on the",
             "validation splits only; 3D Dice per volume (mean), LV Dice at ED and at ES, EF mean absolute error",
             "(points). Score = mean over datasets of (LV 3D + MYO 3D) / 2; the best score wins, EF error breaks ties.", "",
             "Candidates: " + "; ".join(f"`{name}` = `{folder}`" for name, folder in candidates.items()) + ".", "",
             "ES presence: precision / recall of 'this slice has LV cavity' over the slices of the ES stacks (ACDC only: "
             "MyoPS has one frame).", "",
             "| candidate | variant | " + " | ".join(f"{d} LV / MYO | {d} LV ED / ES | {d} EF MAE" for d in datasets)
             + " | ACDC ES presence P / R | score |",
             "|---|---|" + "---:|" * (3 * len(datasets) + 2)]
    best = None
    for candidate in candidates:
        for variant in VARIANTS:
            cells = []
            if not any((d, candidate, variant) in results for d in datasets):
                continue
            for dataset in datasets:
                n = results.get((dataset, candidate, variant))
                if n is None:
                    cells += ["–", "–", "–"]
                    continue
                cells += [f"{fmt(n['lv_3d'])} / {fmt(n['myo_3d'])}", f"{fmt(n['lv_ed'])} / {fmt(n['lv_es'])}", fmt(n["ef_mae"], 2)]
            first = results.get((datasets[0], candidate, variant)) or {}
            cells.append(f"{fmt(first.get('es_precision'))} / {fmt(first.get('es_recall'))}")
            value = score(results, datasets, candidate, variant)
            ef = [results[(d, candidate, variant)]["ef_mae"] for d in datasets
                  if (d, candidate, variant) in results and results[(d, candidate, variant)]["ef_mae"] is not None]
            key = (round(value, 4), -(sum(ef) / len(ef)) if ef else 0.0) if value is not None else None
            if key is not None and (best is None or key > best[0]):
                best = (key, candidate, variant)
            lines.append(f"| {candidate} | {variant}: {VARIANTS[variant][1]} | " + " | ".join(cells) + f" | {fmt(value, 4)} |")
    if best is not None:
        lines += ["", f"Best on validation: **{best[1]}**, variant **{best[2]}** (score {best[0][0]:.4f})."]
    return "\n".join(lines) + "\n"


def plot(results: dict, datasets: list, candidates: dict, path: Path) -> None:
    """A bar per (candidate, variant): its score and each dataset's (LV + MYO) / 2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(c, v) for c in candidates for v in VARIANTS if score(results, datasets, c, v) is not None]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(rows) + 1.5))
    y = range(len(rows))
    height = 0.8 / (len(datasets) + 1)
    for i, dataset in enumerate(datasets):
        values = [(results[(dataset, c, v)]["lv_3d"] + results[(dataset, c, v)]["myo_3d"]) / 2 for c, v in rows]
        ax.barh([k + i * height for k in y], values, height=height, label=f"{dataset}: (LV + MYO) / 2")
    ax.barh([k + len(datasets) * height for k in y], [score(results, datasets, c, v) for c, v in rows], height=height,
            color="black", label="score (mean over datasets)")
    ax.set_yticks([k + height * len(datasets) / 2 for k in y], [f"{c}: {v}" for c, v in rows])
    ax.invert_yaxis()
    low = min(min((results[(d, c, v)]["lv_3d"] + results[(d, c, v)]["myo_3d"]) / 2 for d in datasets) for c, v in rows)
    ax.set_xlim(max(0.0, low - 0.02), 1.0)
    ax.set_xlabel("3D Dice, validation, end to end through the pipeline")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Inference settings and networks chosen on validation")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="*", default=None,
                        help="model folder, or NAME=FOLDER candidates (default: the bundled model)")
    parser.add_argument("--acdc", type=Path, required=True, help="halsr-hf prepare acdc-ssl4mis folder")
    parser.add_argument("--myops", type=Path, required=True, help="halsr-hf prepare myops2020 folder (its cine rows are used)")
    parser.add_argument("--out", type=Path, default=REPO / "evaluation" / "validation_choices")
    parser.add_argument("--only", nargs="*", default=None, help="run only these variants")
    parser.add_argument("--only-candidates", nargs="*", default=None,
                        help="run only these candidates (the table still shows every candidate's earlier runs)")
    args = parser.parse_args(argv)

    candidates = {}
    for item in args.model or ["bundled"]:
        name, sep, folder = item.partition("=")
        if not sep:
            name, folder = ("bundled", None) if item == "bundled" else (Path(item).name, item)
        if "_" in name:
            parser.error(f"--model {item!r}: a candidate's name cannot contain '_' (it separates the file names' parts)")
        candidates[name] = folder or None
    args.out.mkdir(parents=True, exist_ok=True)
    datasets = {"acdc": (args.acdc, None), "myops-cine": (args.myops, "myops2020-cine")}
    print(f"load average before: {os.getloadavg()}", flush=True)
    results = {}
    for candidate, model in candidates.items():
        if args.only_candidates and candidate not in args.only_candidates:
            continue
        for variant, (flags, _) in VARIANTS.items():
            if args.only and variant not in args.only:
                continue
            for name, (folder, source) in datasets.items():
                with tempfile.TemporaryDirectory(prefix="halsr-choose-") as tmp:
                    out_dir = Path(tmp) / "out"
                    wall = evaluate(model, folder, source, flags, out_dir)
                    result = numbers(out_dir)
                    summary = json.loads((out_dir / "summary.json").read_text())
                    summary.update(wall_s=round(wall, 1), load_average=os.getloadavg(), numbers=result,
                                   candidate={"name": candidate, "model": model})
                    (args.out / f"{name}_{candidate}_{variant}.json").write_text(json.dumps(summary, indent=2) + "\n")
                results[(name, candidate, variant)] = result
                print(f"{name} {candidate} {variant}: {result} in {wall:.0f} s (load {os.getloadavg()[0]:.2f})", flush=True)
    for path in args.out.glob("*_*_*.json"):  # earlier runs of these candidates, for the whole table
        name, candidate, variant = path.stem.split("_", 2)
        if (name, candidate, variant) not in results and candidate in candidates and variant in VARIANTS:
            results[(name, candidate, variant)] = json.loads(path.read_text())["numbers"]
    table = render(results, list(datasets), candidates)
    (args.out / "README.md").write_text(table)
    plot(results, list(datasets), candidates, args.out / "scores.png")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
