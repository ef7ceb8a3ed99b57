"""Writing the evaluation outputs: CSV tables, summary.json (the contract with the model card),
summary.md (tables as in the paper's Tables 3-8), boxplots and Bland-Altman plots."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import List, Optional

import numpy as np

from ..json_output import json_safe
from .core import (
    CLASSES,
    DISTANCE_METRICS,
    METRICS,
    SUMMARY_METRICS,
    DatasetResult,
    agreement,
    clinical_summary,
    describe,
    metric_summary,
    roi_details,
    roi_summary,
)

CLASS_TITLES = {"lv_cavity": "LV cavity", "myocardium": "Myocardium"}
METRIC_TITLES = {"dice": "Dice", "iou": "IoU", "hd": "HD", "hd95": "HD95", "assd": "ASSD"}


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-") or "dataset"


def write_csv(path: Path, rows: List[dict], columns: Optional[List[str]] = None) -> None:
    columns = columns or (list(rows[0]) if rows else [])
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in row.items()})


# ---- summary.json ------------------------------------------------------------------------------


def dataset_block(res: DatasetResult) -> dict:
    d = res.dataset
    return {"name": d.name, "hf_id": d.hf_id, "split": d.split, "source": d.source}


def evaluation_block(res: DatasetResult, with_clinical: bool = True) -> dict:
    block = {"dataset": dataset_block(res), "distance_unit": res.distance_unit}
    if res.volume_rows:  # no 3D distance without the slice spacing (core's docstring)
        block["volume_metrics"] = metric_summary(res.volume_rows, volume_metrics(res.distance_unit))
    block["slice_metrics"] = metric_summary(res.slice_rows)
    block["roi"] = roi_summary(res.roi_rows, res.distance_unit) if res.roi_evaluated else None
    if with_clinical:
        block["clinical"] = clinical_summary(res.clinical_rows, res.volume_unit)
    return block


def model_summary(model: str, main: DatasetResult, extras: List[DatasetResult]) -> dict:
    block = evaluation_block(main)
    out = {"model": model, "dataset": block["dataset"], "distance_unit": block["distance_unit"],
           "volume_metrics": block.get("volume_metrics"), "slice_metrics": block["slice_metrics"],
           "roi": block["roi"], "clinical": block["clinical"],
           "extra_evaluations": [evaluation_block(r, with_clinical=False) for r in extras]}
    return out


def summary_json(model: str, main: DatasetResult, extras: List[DatasetResult],
                 baseline: Optional[tuple] = None) -> dict:
    out = model_summary(model, main, extras)
    if baseline is not None:
        name, b_main, b_extras = baseline
        out["baseline"] = model_summary(name, b_main, b_extras)
    return json_safe(out)


# ---- summary.md --------------------------------------------------------------------------------


def _fmt(x, digits=3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}"


def _fmt_count(n) -> str:
    return "–" if n is None else str(n)


def _digits(metric: str) -> int:
    return 3 if metric in ("dice", "iou") else 2


def volume_metrics(distance_unit: str, metrics=SUMMARY_METRICS) -> tuple:
    """The metrics scored per volume: the distances only in mm (in pixels a slice step would count
    as one pixel)."""
    return tuple(m for m in metrics if distance_unit == "mm" or m not in DISTANCE_METRICS)


def _metric_table(results: List[tuple], metrics=METRICS) -> List[str]:
    """results: [(column title, rows)] side by side."""
    header = "| Metric | Class | " + " | ".join(f"{t}: mean ± sd | median | n" for t, _ in results) + " |"
    lines = [header, "|---|---|" + "---:|---:|---:|" * len(results)]
    for m in metrics:
        for c in CLASSES:
            cells = []
            for _, rows in results:
                s = describe([r[f"{m}_{c}"] for r in rows])
                cells.append(f"{_fmt(s['mean'], _digits(m))} ± {_fmt(s['sd'], _digits(m))} | {_fmt(s['median'], _digits(m))} | {s['n']}")
            lines.append(f"| {METRIC_TITLES[m]} | {CLASS_TITLES[c]} | " + " | ".join(cells) + " |")
    return lines


def _missing_counts(rows: List[dict]) -> str:
    parts = []
    for c in CLASSES:
        dice = sum(1 for r in rows if r[f"dice_{c}"] is not None and not math.isnan(r[f"dice_{c}"]))
        dist = sum(1 for r in rows if r[f"hd_{c}"] is not None and not math.isnan(r[f"hd_{c}"]))
        if dice != dist:
            parts.append(f"{CLASS_TITLES[c]}: {dice - dist}")
    return ", ".join(parts)


def _dataset_section(title: str, named: List[tuple], both_empty: str, heading: str = "##") -> List[str]:
    """named: [(model title, DatasetResult)] for the same dataset."""
    main = named[0][1]
    d = main.dataset
    unit = main.distance_unit
    lines = [f"{heading} {title}", ""]
    lines.append(f"Dataset `{d.name}` (split `{d.split}`; source: {d.source}{'; Hub: ' + d.hf_id if d.hf_id else ''}): "
                 f"{len(d.slices)} slices in {len(d.groups)} (patient, phase, source) stacks, "
                 f"{len(d.volumes)} complete volumes. Distances in **{unit}**"
                 + (" (in-plane pixels, per slice: no spacing is known, so no 3D distance is computed; it would "
                    "count a slice step as one pixel)." if unit == "px" else ".")
                 )
    lines.append("")
    for level, attr in (("Per volume (3D)", "volume_rows"), ("Per slice (2D)", "slice_rows")):
        if not getattr(main, attr):
            continue
        lines += [f"{heading}# {level}", ""]
        metrics = volume_metrics(unit, METRICS) if attr == "volume_rows" else METRICS
        lines += _metric_table([(t, getattr(r, attr)) for t, r in named], metrics)
        missing = [f"{t}: {_missing_counts(getattr(r, attr))}" for t, r in named
                   if "hd" in metrics and _missing_counts(getattr(r, attr))]
        lines.append("")
        if missing:
            lines.append("Distances undefined (class present in only one of prediction/reference; Dice 0, "
                         "excluded from the distance statistics): " + "; ".join(missing) + ".")
            lines.append("")
    if main.roi_evaluated and main.roi_rows:
        s = roi_summary(main.roi_rows, unit)
        det = roi_details(main.roi_rows)
        lines += [f"{heading}# ROI stage (Table 3)", ""]
        if s is None:
            lines += ["No slice with a scorable reference box.", ""]
        else:
            lines += [
                "The ROI stage's own box (after the volume consensus, before any second look)"
                + ("" if s["iou_mean"] is not None else
                   ": not reported by this pipeline (no `roi_stage_box` in its output), so not scored") + ":",
                "",
                f"| RMSE ± SD ({unit}) | Outlier rate (%) | mean box IoU | reference box inside its crop (%) | "
                "scored LV slices | missed (LV not located) | IoU < 0.5 | median box IoU |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|",
                f"| {_fmt(s['rmse'], 2)} ± {_fmt(s['rmse_sd'], 2)} | {_fmt(s['outlier_rate_percent'], 1)} | "
                f"{_fmt(s['iou_mean'], 3)} | {_fmt(s['in_crop_percent'], 1)} | {det['scored_slices']} | "
                f"{_fmt_count(det['missed'])} | {_fmt_count(det['low_iou'])} | {_fmt(det['iou_median'], 3)} |",
                "",
                f"The final crop (after the second look: {s['final_crop_definition']}): mean IoU of its box "
                f"{_fmt(s['final_crop_iou_mean'], 3)}; reference box inside it on "
                f"{_fmt(s['final_crop_in_crop_percent'], 1)} % of the scored slices.",
                "",
                f"Outlier: {s['outlier_definition']}. RMSE per slice over the four corner coordinates "
                "(x_min, y_min, x_max, y_max), mean ± SD over the slices where both boxes exist. In crop: "
                f"{s['in_crop_definition']}.",
                f"Slices without LV in the reference: {det['no_lv_slices']}, of which the ROI stage claimed an LV on "
                f"{_fmt_count(det['false_detections'])}. LV slices not scored (myocardium not annotated: cavity-only "
                f"box): {det['lv_slices_not_scored']}.",
                "",
            ]
    elif not main.roi_evaluated:
        lines += ["ROI stage not evaluated (`--no-roi` or no ROI model): whole-slice segmentation.", ""]
    if any(r.clinical_rows for _, r in named):
        vu = main.volume_unit
        lines += [f"{heading}# Clinical agreement (predicted vs reference masks)", "",
                  "| Model | Quantity | bias (pred − ref) | SD of differences | 95% limits of agreement | MAE | Pearson r | n |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for t, r in named:
            for q, u in (("ef", "%"), ("edv", vu), ("esv", vu)):
                a = agreement([x[f"{q}_ref"] for x in r.clinical_rows], [x[f"{q}_pred"] for x in r.clinical_rows])
                lines.append(f"| {t} | {q.upper()} ({u}) | {_fmt(a['bias'], 2)} | {_fmt(a['sd'], 2)} | "
                             f"{_fmt(a['loa_low'], 2)} to {_fmt(a['loa_high'], 2)} | {_fmt(a['mae'], 2)} | {_fmt(a['r'], 3)} | {a['n']} |")
        lines.append("")
        if vu == "voxels":
            lines += ["Volumes in voxels (no spacing known); the EF is unit-free (spacing cancels).", ""]
    return lines


def summary_markdown(model: str, main: DatasetResult, extras: List[DatasetResult], baseline: Optional[tuple],
                     options: dict) -> str:
    b_name = baseline[0] if baseline else None
    lines = ["# HALSR-Net evaluation", "", f"- Model: `{model}`"]
    if baseline:
        lines.append(f"- Baseline: `{b_name}` (same ROI model as the main model)")
    lines += [f"- {k}: `{v}`" for k, v in options.items()]
    lines += [
        "",
        "Per-class statistics: mean ± sample SD, median and n over the scored slices/volumes. "
        + ("A class absent from both reference and prediction is not scored (excluded)."
           if options.get("both_empty", "nan") == "nan" else
           "A class absent from both reference and prediction scores Dice 1 and distances 0."),
        "Myocardium is not scored where the dataset marks it as not annotated.",
        "",
    ]
    named = [("main", main)] + ([("baseline", baseline[1])] if baseline else [])
    lines += _dataset_section(f"{main.dataset.name} ({main.dataset.split})", named, options.get("both_empty", "nan"))
    for i, extra in enumerate(extras):
        named = [("main", extra)] + ([("baseline", baseline[2][i])] if baseline else [])
        lines += _dataset_section(f"Cross-dataset: {extra.dataset.name} ({extra.dataset.split})", named,
                                  options.get("both_empty", "nan"))
    return "\n".join(lines) + "\n"


# ---- plots -------------------------------------------------------------------------------------


def _pyplot():
    """matplotlib, imported only when plots are drawn (slow to import; --no-plots skips it)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def boxplots(out_dir: Path, named: List[tuple], suffix: str = "") -> List[Path]:
    """One PNG per metric: a box per class (and per model), volume level and slice level side by side.

    named: [(model title, DatasetResult)] for one dataset."""
    plt = _pyplot()
    written = []
    unit = named[0][1].distance_unit
    for m in METRICS:
        levels = [(lvl, attr) for lvl, attr in (("per volume (3D)", "volume_rows"), ("per slice (2D)", "slice_rows"))
                  if getattr(named[0][1], attr) and (attr == "slice_rows" or m in volume_metrics(unit, METRICS))]
        fig, axes = plt.subplots(1, len(levels), figsize=(4.2 * len(levels) + 0.6 * len(named), 4.2), squeeze=False)
        for ax, (lvl, attr) in zip(axes[0], levels):
            data, labels = [], []
            for c in CLASSES:
                for t, r in named:
                    vals = [x[f"{m}_{c}"] for x in getattr(r, attr)]
                    vals = [v for v in vals if v is not None and math.isfinite(v)]
                    data.append(vals if vals else [np.nan])
                    labels.append(CLASS_TITLES[c] + (f"\n{t}" if len(named) > 1 else ""))
            ax.boxplot(data, showfliers=True)
            ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
            ax.set_title(lvl, fontsize=10)
            ax.set_ylabel(METRIC_TITLES[m] + ("" if m in ("dice", "iou") else f" ({unit})"))
            ax.grid(axis="y", alpha=0.3)
        d = named[0][1].dataset
        fig.suptitle(f"{METRIC_TITLES[m]} — {d.name} ({d.split})", fontsize=11)
        fig.subplots_adjust(left=0.1, right=0.98, bottom=0.2, top=0.84, wspace=0.3)
        path = out_dir / f"boxplot_{m}{suffix}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def bland_altman(out_dir: Path, res: DatasetResult, suffix: str = "") -> List[Path]:
    """bland_altman_ef.png, bland_altman_edv.png, bland_altman_esv.png (pred − ref against their mean)."""
    plt = _pyplot()
    written = []
    if not res.clinical_rows:
        return written
    for q, unit in (("ef", "%"), ("edv", res.volume_unit), ("esv", res.volume_unit)):
        ref = np.array([r[f"{q}_ref"] for r in res.clinical_rows], dtype=np.float64)
        pred = np.array([r[f"{q}_pred"] for r in res.clinical_rows], dtype=np.float64)
        ok = np.isfinite(ref) & np.isfinite(pred)
        a = agreement(ref, pred)
        fig, ax = plt.subplots(figsize=(5.5, 4.2))
        ax.scatter((ref[ok] + pred[ok]) / 2, pred[ok] - ref[ok], s=18, alpha=0.8)
        if a["n"]:
            ax.axhline(a["bias"], color="k", lw=1, label=f"bias {a['bias']:.2f}")
            ax.axhline(a["loa_low"], color="r", ls="--", lw=1, label=f"95% LoA {a['loa_low']:.2f} to {a['loa_high']:.2f}")
            ax.axhline(a["loa_high"], color="r", ls="--", lw=1)
            ax.legend(fontsize=8)
        ax.set_xlabel(f"mean of predicted and reference {q.upper()} ({unit})")
        ax.set_ylabel(f"predicted − reference {q.upper()} ({unit})")
        ax.set_title(f"Bland-Altman {q.upper()} — {res.dataset.name} ({res.dataset.split}), n = {a['n']}", fontsize=10)
        ax.grid(alpha=0.3)
        fig.subplots_adjust(left=0.16, right=0.97, bottom=0.13, top=0.9)
        path = out_dir / f"bland_altman_{q}{suffix}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
