"""What the ROI stage costs: the pipeline end to end beside the same segmenter given the
reference's slices and/or boxes (``halsr-hf evaluate --roi-variants``, issue 24).

Four runs over the same dataset (complete stacks as volumes):

* ``end_to_end``: the pipeline as called (its settings, consensus and second look as given);
* ``reference_slices``: the reference's slices (those whose reference label has the LV, cavity or
  myocardium; every other slice is left empty), the ROI stage's own boxes (the reference's where the
  ROI stage found none);
* ``reference_boxes``: the ROI stage's own slices (and the stack's decisions after segmentation: the
  base rule, the 3D component, ES within ED), the reference's box wherever the reference has one;
* ``reference_slices_and_boxes``: both from the reference: what the segmenter scores when the ROI
  stage is perfect.

In the three reference runs the volume consensus and the second look are off (they are part of the
ROI stage being replaced); the reference box is the bounding box of the reference LV (cavity and
myocardium), cropped with the model's margin like any box. The pipeline receives them through its
``reference_roi=`` argument (:func:`halsr_hf.roi_stage.apply_reference`).

Per run: 3D Dice (LV cavity, myocardium) per volume, LV Dice at ED and at ES, EF mean absolute
error, and *slice presence* per phase: a slice is positive when it has LV cavity; precision, recall,
slices too many (predicted cavity, none in the reference) and slices missed.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np

from ..data.schema import bbox_from_label
from ..image_processing_halsr import ROI_STAGE_SETTINGS
from . import core

VARIANTS = {
    "end_to_end": "the pipeline end to end",
    "reference_slices": "reference slices, own boxes",
    "reference_boxes": "own slices, reference boxes",
    "reference_slices_and_boxes": "reference slices and boxes",
}


def group_reference(group, variant: str):
    """The ``reference_roi`` of one stack for ``variant`` (None for ``end_to_end``)."""
    if variant == "end_to_end":
        return None
    boxes = [bbox_from_label(s.label) for s in group.slices]
    present = [b is not None for b in boxes]
    return {
        "reference_slices": {"slices": present, "fallback_boxes": boxes},
        "reference_boxes": {"boxes": boxes},
        "reference_slices_and_boxes": {"slices": present, "boxes": boxes},
    }[variant]


def presence(dataset, predictions: dict) -> dict:
    """Slice presence of the LV cavity per phase (``ED``, ``ES``, ``all``) over complete stacks:
    ``precision``, ``recall``, ``too_many`` (predicted cavity where the reference has none),
    ``missed``, ``slices``."""
    counts = {}
    for g in dataset.volumes:
        pred = predictions[g.key]
        for i, s in enumerate(g.slices):
            ref_has, pred_has = bool((s.label == 1).any()), bool((pred.label_maps[i] == 1).any())
            for phase in (g.phase.upper(), "all"):
                c = counts.setdefault(phase, {"tp": 0, "fp": 0, "fn": 0, "slices": 0})
                c["slices"] += 1
                c["tp"] += ref_has and pred_has
                c["fp"] += pred_has and not ref_has
                c["fn"] += ref_has and not pred_has
    out = {}
    for phase, c in counts.items():
        out[phase] = {
            "precision": c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else None,
            "recall": c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else None,
            "too_many": c["fp"], "missed": c["fn"], "slices": c["slices"],
        }
    return out


def variant_row(res: core.DatasetResult, variant: str) -> dict:
    """One variant's numbers from its scored :class:`~halsr_hf.evaluation.core.DatasetResult`."""
    volumes = res.volume_rows

    def mean(rows, key):
        values = core._finite([r[key] for r in rows])
        return float(values.mean()) if values.size else None

    clinical = core.clinical_summary(res.clinical_rows, res.volume_unit) or {}
    return {
        "variant": variant,
        "description": VARIANTS[variant],
        "volumes": len(volumes),
        "lv_dice_3d": mean(volumes, "dice_lv_cavity"),
        "myo_dice_3d": mean(volumes, "dice_myocardium"),
        "lv_dice_ed": mean([r for r in volumes if str(r["phase"]).upper() == "ED"], "dice_lv_cavity"),
        "lv_dice_es": mean([r for r in volumes if str(r["phase"]).upper() == "ES"], "dice_lv_cavity"),
        "ef_mae": clinical.get("ef_mae"),
        "presence": presence(res.dataset, res.predictions),
    }


def run_variants(pipe, dataset, model_name: str, batch_size: int = 16, progress: bool = True, end_to_end=None,
                 force_pixels: bool = False, **pipeline_kwargs) -> tuple:
    """``(rows, results)``: :func:`variant_row` per variant and the scored results by variant.
    ``end_to_end``: an already scored end-to-end result of this dataset (not run again);
    ``pipeline_kwargs``: the end-to-end run's call options (settings, consensus, second look)."""
    results = {}
    for variant in VARIANTS:
        if variant == "end_to_end" and end_to_end is not None:
            results[variant] = end_to_end
            continue
        kwargs = dict(pipeline_kwargs)
        if variant != "end_to_end":
            kwargs.update(consensus=False, second_look=0)
        predictions = core.predict(pipe, dataset, batch_size=batch_size, progress=progress,
                                   desc=f"{variant} on {dataset.name}", reference=variant, **kwargs)
        settings = pipe.image_processor.roi_stage_settings(**{k: v for k, v in kwargs.items() if k in ROI_STAGE_SETTINGS})
        if variant == "reference_boxes" and settings["es_within_ed"] >= 0.5:  # the pipeline's own slices
            core.restrict_es_to_ed(dataset, predictions)
        results[variant] = core.score(dataset, predictions, model_name, force_pixels=force_pixels, progress=False,
                                      crop_margin=pipe.image_processor.crop_margin)
    return [variant_row(res, variant) for variant, res in results.items()], results


def markdown_table(dataset_name: str, rows: List[dict]) -> List[str]:
    """The variants side by side (the issue's table), then slice presence at ED and ES."""
    def fmt(value, digits=3):
        return "–" if value is None else f"{value:.{digits}f}"

    lines = [f"### The ROI stage against the reference: {dataset_name}", "",
             "| run | LV / MYO 3D Dice | LV Dice ED / ES | EF MAE (points) | ES presence precision / recall | "
             "ES slices too many / missed | ED presence precision / recall | all slices: presence precision / recall |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        es, ed, every = (r["presence"].get(phase, {}) for phase in ("ES", "ED", "all"))
        lines.append(
            f"| {r['description']} | {fmt(r['lv_dice_3d'])} / {fmt(r['myo_dice_3d'])} | {fmt(r['lv_dice_ed'])} / "
            f"{fmt(r['lv_dice_es'])} | {fmt(r['ef_mae'], 2)} | {fmt(es.get('precision'))} / {fmt(es.get('recall'))} | "
            f"{es.get('too_many', '–')} / {es.get('missed', '–')} | {fmt(ed.get('precision'))} / {fmt(ed.get('recall'))} | "
            f"{fmt(every.get('precision'))} / {fmt(every.get('recall'))} |")
    return lines + [""]


def plot_worst_areas(path: Path, results: dict, worst: int = 6) -> Path | None:
    """LV cavity area per slice, predicted (end to end, and with the reference's slices and boxes)
    against the reference, for the ``worst`` volumes by end-to-end LV 3D Dice. One PNG."""
    from .report import _pyplot

    e2e = results["end_to_end"]
    rows = sorted((r for r in e2e.volume_rows if r["dice_lv_cavity"] is not None and np.isfinite(r["dice_lv_cavity"])),
                  key=lambda r: r["dice_lv_cavity"])[:worst]
    if not rows:
        return None
    groups = {g.key: g for g in e2e.dataset.volumes}
    plt = _pyplot()
    columns = min(3, len(rows))
    lines = int(np.ceil(len(rows) / columns))
    fig, axes = plt.subplots(lines, columns, figsize=(4.2 * columns, 3.2 * lines), squeeze=False)
    for ax, r in zip(axes.flat, rows):
        key = next(k for k, g in groups.items() if g.patient_id == r["patient_id"] and g.phase == r["phase"]
                   and (g.source == r["source"]))
        g = groups[key]
        index = np.arange(len(g.slices))
        ax.plot(index, [int((s.label == 1).sum()) for s in g.slices], "k-o", label="reference", lw=2)
        ax.plot(index, [int((m == 1).sum()) for m in e2e.predictions[key].label_maps], "r-s", label="end to end")
        ref_run = results.get("reference_slices_and_boxes")
        if ref_run is not None:
            ax.plot(index, [int((m == 1).sum()) for m in ref_run.predictions[key].label_maps], "b--^",
                    label="reference slices and boxes", alpha=0.7)
        ax.set_title(f"{r['patient_id']} {r['phase']}: LV Dice {r['dice_lv_cavity']:.3f}", fontsize=9)
        ax.set_xlabel("slice (stack order)")
        ax.set_ylabel("LV cavity area (pixels)")
        ax.set_xticks(index)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{e2e.dataset.name} ({e2e.dataset.split}): LV cavity area per slice, the {len(rows)} worst volumes",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
