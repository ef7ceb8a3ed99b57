"""Running a model over an evaluation dataset and scoring it: per-slice and per-volume
segmentation metrics, ROI-stage localisation, clinical agreement (EDV, ESV, EF).

Conventions (also in docs/evaluation.md):

* Distance unit: mm when every slice of the dataset has a pixel spacing (and every complete
  volume a slice thickness); otherwise pixels for the whole dataset, per slice only: without the
  slice spacing a 3D distance would count a slice step (5-10 mm on cine MRI) as one pixel, so 3D
  HD, HD95 and ASSD are not computed (NaN; Dice and IoU are).
* A class absent from both the reference and the prediction is not scored (NaN, excluded from
  the statistics; ``both_empty="nan"``) unless ``both_empty="perfect"`` (Dice 1, distances 0).
  A class present in only one of them scores Dice 0 and undefined distances (NaN, excluded and
  counted: ``n`` of a distance metric can be smaller than ``n`` of Dice).
* Myocardium is not scored on slices/volumes whose ``myocardium_annotated`` is False.
* ROI: reference box = bounding box of the reference label (cavity + myocardium), inclusive
  pixels ``[x_min, y_min, x_max, y_max]`` (``roi_reference="column"`` uses the dataset's ``roi``
  column instead); scored on slices whose reference has the LV and whose myocardium is annotated.
  Two boxes are scored separately:

  - the ROI stage's own box (the pipeline's ``roi_stage_box``: localiser or regressor, after the
    volume consensus, before any second look): per-slice RMSE over the four corner coordinates
    (the two corners of the paper), in mm (x scaled by the column spacing, y by the row spacing)
    when the spacing is known; IoU; outlier (the ROI stage found no LV, or IoU below 0.5); whether
    the reference box lies inside the first crop, made from that box. A pipeline that does not
    report ``roi_stage_box`` leaves these undefined (None), never filled in from another box;
  - the final crop (the pipeline's ``roi``: after the second look, the box of the predicted LV
    that the last crop was made around, so it depends on the segmentation network too): the IoU
    of that box and whether the reference box lies inside the final crop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
from tqdm.auto import tqdm

from ..clinical import cardiac_function
from ..data.schema import bbox_from_label
from ..metrics import DEFAULT_LABELS, DISTANCE_METRICS, segmentation_metrics
from .data import EvalDataset, SliceGroup

CLASSES = tuple(DEFAULT_LABELS.values())  # ("lv_cavity", "myocardium")
METRICS = ("dice", "iou", "hd", "hd95", "assd")
#: The per-class metrics of the summary.json contract.
SUMMARY_METRICS = ("dice", "hd95", "assd", "hd")
ROI_IOU_THRESHOLD = 0.5
OUTLIER_DEFINITION = (
    "an LV slice (reference box from the reference label, cavity + myocardium) on which the ROI "
    "stage found no LV, or whose predicted box has IoU < 0.5 with the reference box"
)


@dataclass
class Prediction:
    """The pipeline's output for one group, per slice: label map, the box of the final crop
    (``roi``), presence, and the ROI stage's own box (``roi_stage_boxes`` is None when the pipeline
    does not report ``roi_stage_box``)."""

    label_maps: List[np.ndarray]
    rois: List[Optional[list]]
    lv_found: List[bool]
    lv_probability: List[Optional[float]]
    roi_stage_boxes: Optional[List[Optional[list]]] = None

    def stage_box(self, i: int) -> tuple:
        """(reported, box) of slice ``i``: whether the pipeline reported the ROI stage's box, and
        the box (None where the ROI stage found no LV)."""
        if self.roi_stage_boxes is None:
            return False, None
        return True, self.roi_stage_boxes[i]


@dataclass
class DatasetResult:
    dataset: EvalDataset
    model: str
    distance_unit: str
    slice_rows: List[dict] = field(default_factory=list)
    volume_rows: List[dict] = field(default_factory=list)
    roi_rows: List[dict] = field(default_factory=list)
    clinical_rows: List[dict] = field(default_factory=list)
    roi_evaluated: bool = True
    volume_unit: str = "voxels"
    predictions: dict = field(default_factory=dict)


# ---- prediction ----------------------------------------------------------------------------------


def predict(pipe, dataset: EvalDataset, batch_size: int = 16, use_roi: bool = True, tta: bool = False,
            progress: bool = True, desc: str = "", reference: Optional[str] = None, **pipeline_kwargs) -> dict:
    """Run the pipeline on every group (complete stacks as volumes, so ROI + segmentation are
    evaluated end to end) and return ``{group.key: Prediction}``. Groups are sent in chunks of
    at least ``4 * batch_size`` slices so the pipeline fills its batches across volumes.
    ``reference``: a variant of :mod:`~halsr_hf.evaluation.roi_variants` (the reference's slices
    and/or boxes instead of the ROI stage's), None for the pipeline as it is."""
    from .roi_variants import group_reference
    out = {}
    bar = tqdm(total=len(dataset.slices), desc=desc or f"predict {dataset.name}", unit="slice", disable=not progress)
    chunk: List[SliceGroup] = []

    def flush():
        inputs, owners, references = [], [], []
        for g in chunk:
            shapes = {s.image.shape for s in g.slices}
            ref = None if reference in (None, "end_to_end") else group_reference(g, reference)
            if len(shapes) == 1 and len(g.slices) > 1:
                inputs.append(np.stack([s.image for s in g.slices]))
                owners.append((g, None))
                references.append(ref)
            else:
                for i, s in enumerate(g.slices):
                    inputs.append(s.image)
                    owners.append((g, i))
                    references.append(None if ref is None else {k: [v[i]] for k, v in ref.items()})
        extra = {} if reference in (None, "end_to_end") else {"reference_roi": references}
        results = pipe(inputs, batch_size=batch_size, use_roi=use_roi, tta=tta, **pipeline_kwargs, **extra)
        for (g, i), result in zip(owners, results):
            if i is None:
                maps = [np.asarray(m, dtype=np.uint8) for m in result["label_map"]]
                per = result["slices"]
                stage = [p["roi_stage_box"] for p in per] if all("roi_stage_box" in p for p in per) else None
                out[g.key] = Prediction(maps, [p["roi"] for p in per], [bool(p["lv_found"]) for p in per],
                                        [p.get("lv_probability") for p in per], stage)
            else:
                n = len(g.slices)
                p = out.setdefault(g.key, Prediction([None] * n, [None] * n, [False] * n, [None] * n,
                                                     [None] * n if "roi_stage_box" in result else None))
                p.label_maps[i] = np.asarray(result["label_map"], dtype=np.uint8)
                p.rois[i] = result["roi"]
                p.lv_found[i] = bool(result["lv_found"])
                p.lv_probability[i] = result.get("lv_probability")
                if p.roi_stage_boxes is not None:
                    p.roi_stage_boxes[i] = result.get("roi_stage_box")
        bar.update(sum(len(g.slices) for g in chunk))
        chunk.clear()

    pending = 0
    for group in dataset.groups:
        chunk.append(group)
        pending += len(group.slices)
        if pending >= 4 * batch_size:
            flush()
            pending = 0
    if chunk:
        flush()
    bar.close()
    return out


def restrict_es_to_ed(dataset: EvalDataset, predictions: dict) -> int:
    """Where a patient has a complete ED and ES stack of one shape, empty the predicted ES slices
    whose ED slice has no LV (:func:`halsr_hf.roi_stage.es_within_ed`, the model's setting
    ``es_within_ed``: what ``halsr-hf predict`` and ``halsr-hf ef`` do with the two phases), in
    place. Returns the number of ES slices emptied."""
    from ..roi_stage import es_within_ed

    by_patient: dict = {}
    for g in dataset.volumes:
        by_patient.setdefault((g.patient_id, g.sequence), {})[g.phase.upper()] = g
    emptied = 0
    for phases in by_patient.values():
        if "ED" not in phases or "ES" not in phases:
            continue
        ed, es = predictions[phases["ED"].key], predictions[phases["ES"].key]
        if len({m.shape for m in ed.label_maps + es.label_maps}) != 1 or len(ed.label_maps) != len(es.label_maps):
            continue
        for k in es_within_ed(np.stack(ed.label_maps), np.stack(es.label_maps)):
            es.label_maps[k] = np.zeros_like(es.label_maps[k])
            es.lv_found[k] = False
            emptied += 1
    return emptied


# ---- helpers -------------------------------------------------------------------------------------


def distance_unit(dataset: EvalDataset, force_pixels: bool = False) -> str:
    if force_pixels:
        return "px"
    if any(s.pixel_spacing is None for s in dataset.slices):
        return "px"
    if any(g.spacing_3d is None for g in dataset.volumes):
        return "px"
    return "mm"


def box_iou(a, b) -> float:
    """IoU of two inclusive pixel boxes."""
    ix = min(a[2], b[2]) - max(a[0], b[0]) + 1
    iy = min(a[3], b[3]) - max(a[1], b[1]) + 1
    inter = max(0.0, ix) * max(0.0, iy)
    area = lambda r: max(0.0, r[2] - r[0] + 1) * max(0.0, r[3] - r[1] + 1)  # noqa: E731
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def corner_rmse(pred, ref, pixel_spacing=None) -> float:
    """RMSE over the four corner coordinates (x_min, y_min, x_max, y_max); x scaled by the column
    spacing and y by the row spacing when ``pixel_spacing`` = (row_mm, col_mm) is given."""
    d = np.asarray(pred, dtype=np.float64) - np.asarray(ref, dtype=np.float64)
    if pixel_spacing is not None:
        row_mm, col_mm = pixel_spacing
        d = d * np.array([col_mm, row_mm, col_mm, row_mm])
    return float(np.sqrt(np.mean(d ** 2)))


def _metric_columns(result: dict) -> dict:
    return {f"{m}_{c}": result[f"{m}_{c}"] for m in METRICS for c in CLASSES} | {"accuracy": result["accuracy"]}


# ---- scoring -------------------------------------------------------------------------------------


def score(dataset: EvalDataset, predictions: dict, model: str, force_pixels: bool = False,
          both_empty: str = "nan", roi_evaluated: bool = True, roi_reference: str = "label",
          progress: bool = True, crop_margin: float = 0.25) -> DatasetResult:
    """Per-slice, per-volume, ROI and clinical rows for one dataset and one model's predictions."""
    unit = distance_unit(dataset, force_pixels)
    res = DatasetResult(dataset=dataset, model=model, distance_unit=unit, roi_evaluated=roi_evaluated,
                        predictions=predictions)
    common = lambda g: {"dataset": dataset.name, "split": dataset.split, "model": model,  # noqa: E731
                        "patient_id": g.patient_id, "phase": g.phase, "source": g.source, "group": g.group}
    for g in tqdm(dataset.groups, desc=f"score {dataset.name}", unit="group", disable=not progress):
        pred = predictions[g.key]
        for i, s in enumerate(g.slices):
            p = pred.label_maps[i]
            spacing = s.pixel_spacing if unit == "mm" else None
            skip = () if s.myocardium_annotated else ("myocardium",)
            m = segmentation_metrics(p, s.label, spacing=spacing, skip=skip, both_empty=both_empty)
            res.slice_rows.append(common(g) | {
                "slice_index": s.slice_index, "num_slices": s.num_slices, "row": s.row,
                "height": s.label.shape[0], "width": s.label.shape[1],
                "pixel_spacing_row": None if s.pixel_spacing is None else s.pixel_spacing[0],
                "pixel_spacing_col": None if s.pixel_spacing is None else s.pixel_spacing[1],
                "myocardium_scored": s.myocardium_annotated,
                "ref_lv_cavity_px": int(np.count_nonzero(s.label == 1)), "pred_lv_cavity_px": int(np.count_nonzero(p == 1)),
                "ref_myocardium_px": int(np.count_nonzero(s.label == 2)), "pred_myocardium_px": int(np.count_nonzero(p == 2)),
                "lv_found": pred.lv_found[i], "lv_probability": pred.lv_probability[i],
            } | _metric_columns(m) | {"distance_unit": m["distance_unit"]})
            if roi_evaluated:
                res.roi_rows.append(_roi_row(common(g), s, pred, i, unit, roi_reference, crop_margin))
        if g.complete:
            volume = np.stack(pred.label_maps)
            ref = np.stack([s.label for s in g.slices])
            sp3 = g.spacing_3d if unit == "mm" else None
            skip = () if g.myocardium_annotated else ("myocardium",)
            # no 3D distance without the slice spacing (see the module docstring)
            m = segmentation_metrics(volume, ref, spacing=sp3, skip=skip, both_empty=both_empty, distances=sp3 is not None)
            res.volume_rows.append(common(g) | {
                "num_slices": len(g.slices), "height": ref.shape[1], "width": ref.shape[2],
                "slice_thickness": None if g.spacing_3d is None else g.spacing_3d[0],
                "pixel_spacing_row": None if g.spacing_3d is None else g.spacing_3d[1],
                "pixel_spacing_col": None if g.spacing_3d is None else g.spacing_3d[2],
                "myocardium_scored": g.myocardium_annotated,
                "ref_lv_cavity_voxels": int(np.count_nonzero(ref == 1)), "pred_lv_cavity_voxels": int(np.count_nonzero(volume == 1)),
                "ref_myocardium_voxels": int(np.count_nonzero(ref == 2)), "pred_myocardium_voxels": int(np.count_nonzero(volume == 2)),
            } | _metric_columns(m) | {"distance_unit": m["distance_unit"]})
    res.clinical_rows, res.volume_unit = _clinical_rows(dataset, predictions, model)
    return res


def crop_contains(pred_box, ref_box, margin: float) -> bool:
    """Whether the reference box lies inside the crop the pipeline makes from ``pred_box`` (squared
    and widened by ``margin`` on each side, as ``image_processing_halsr.square_boxes``)."""
    side = max(pred_box[2] - pred_box[0] + 1, pred_box[3] - pred_box[1] + 1) * (1 + 2 * margin)
    cx, cy = (pred_box[0] + pred_box[2] + 1) / 2, (pred_box[1] + pred_box[3] + 1) / 2
    return bool(ref_box[0] >= cx - side / 2 and ref_box[1] >= cy - side / 2
                and ref_box[2] + 1 <= cx + side / 2 and ref_box[3] + 1 <= cy + side / 2)


BOX_KEYS = ("x_min", "y_min", "x_max", "y_max")


def _roi_row(common: dict, s, pred: Prediction, i: int, unit: str, roi_reference: str, crop_margin: float = 0.25) -> dict:
    """One slice's ROI row: the ROI stage's own box (``stage_*``, ``iou``, ``rmse*``, ``outlier``,
    ``in_crop``) and the box of the final crop (``final_*``, ``final_iou``, ``final_in_crop``)."""
    ref_box = s.roi if roi_reference == "column" else bbox_from_label(s.label)
    has_lv = bool(np.any(s.label == 1))
    scored = has_lv and ref_box is not None and (roi_reference == "column" or s.myocardium_annotated)
    reported, stage_box = pred.stage_box(i)
    final_box = pred.rois[i] if pred.lv_found[i] else None
    row = common | {
        "slice_index": s.slice_index, "ref_has_lv": has_lv, "scored": scored, "stage_reported": reported,
        **{f"ref_{k}": None for k in BOX_KEYS}, **{f"stage_{k}": None for k in BOX_KEYS},
        **{f"final_{k}": None for k in BOX_KEYS},
        "lv_found": pred.lv_found[i], "lv_probability": pred.lv_probability[i],
        "iou": math.nan, "rmse_px": math.nan, "rmse_mm": math.nan, "rmse": math.nan, "unit": unit,
        "outlier": None, "outlier_reason": "", "in_crop": None, "final_iou": math.nan, "final_in_crop": None,
    }
    for prefix, box in (("ref", ref_box), ("stage", stage_box), ("final", final_box)):
        if box is not None:
            row.update({f"{prefix}_{k}": float(v) for k, v in zip(BOX_KEYS, box)})
    if not has_lv and (stage_box if reported else final_box) is not None:
        row["outlier_reason"] = "false detection (no LV in the reference)"
    if not scored:
        return row
    row["final_iou"] = 0.0 if final_box is None else box_iou(final_box, ref_box)
    row["final_in_crop"] = final_box is not None and crop_contains(final_box, ref_box, crop_margin)
    if not reported:
        return row
    if stage_box is None:
        row["outlier"], row["outlier_reason"], row["iou"], row["in_crop"] = True, "ROI stage found no LV", 0.0, False
        return row
    row["iou"] = box_iou(stage_box, ref_box)
    row["in_crop"] = crop_contains(stage_box, ref_box, crop_margin)
    row["rmse_px"] = corner_rmse(stage_box, ref_box)
    if s.pixel_spacing is not None:
        row["rmse_mm"] = corner_rmse(stage_box, ref_box, s.pixel_spacing)
    row["rmse"] = row["rmse_mm"] if unit == "mm" else row["rmse_px"]
    row["outlier"] = row["iou"] < ROI_IOU_THRESHOLD
    row["outlier_reason"] = f"box IoU {row['iou']:.2f} < {ROI_IOU_THRESHOLD}" if row["outlier"] else ""
    return row


def _clinical_rows(dataset: EvalDataset, predictions: dict, model: str):
    """EDV/ESV/EF from predicted and reference stacks, one row per patient with a complete ED and
    ES volume of the same shape. Volumes in ml when every such pair has a 3D spacing, else voxels."""
    by_patient: dict = {}
    for g in dataset.volumes:
        by_patient.setdefault(g.patient_id, {})[g.phase.upper()] = g
    pairs = [(pid, p["ED"], p["ES"]) for pid, p in by_patient.items()
             if "ED" in p and "ES" in p and p["ED"].slices[0].image.shape == p["ES"].slices[0].image.shape
             and len(p["ED"].slices) == len(p["ES"].slices)]
    physical = bool(pairs) and all(ed.spacing_3d is not None for _, ed, _ in pairs)
    unit = "ml" if physical else "voxels"
    rows = []
    for pid, ed, es in pairs:
        spacing = thickness = None
        if physical:
            thickness, *spacing = ed.spacing_3d
        ref_ed = np.stack([s.label for s in ed.slices])
        ref_es = np.stack([s.label for s in es.slices])
        pred_ed = np.stack(predictions[ed.key].label_maps)
        pred_es = np.stack(predictions[es.key].label_maps)
        ref = cardiac_function(ref_ed, ref_es, spacing, thickness)
        prd = cardiac_function(pred_ed, pred_es, spacing, thickness)
        key = "ml" if physical else "voxels"
        rows.append({
            "dataset": dataset.name, "split": dataset.split, "model": model, "patient_id": pid, "group": ed.group,
            "edv_ref": ref[f"edv_{key}"], "edv_pred": prd[f"edv_{key}"],
            "esv_ref": ref[f"esv_{key}"], "esv_pred": prd[f"esv_{key}"],
            "ef_ref": ref["ef_percent"], "ef_pred": prd["ef_percent"],
            "volume_unit": unit, "warnings": "; ".join(prd["warnings"]),
        })
    return rows, unit


# ---- statistics ----------------------------------------------------------------------------------


def _finite(values) -> np.ndarray:
    a = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return a[np.isfinite(a)]


def describe(values) -> dict:
    """mean, sd (sample, ddof=1; 0 for n = 1), median, n over the finite values (None when n = 0)."""
    a = _finite(values)
    if a.size == 0:
        return {"mean": None, "sd": None, "median": None, "n": 0}
    return {"mean": float(a.mean()), "sd": float(a.std(ddof=1)) if a.size > 1 else 0.0,
            "median": float(np.median(a)), "n": int(a.size)}


def metric_summary(rows: List[dict], metrics=SUMMARY_METRICS) -> dict:
    return {f"{m}_{c}": describe([r[f"{m}_{c}"] for r in rows]) for m in metrics for c in CLASSES}


IN_CROP_DEFINITION = ("the reference LV box lies inside the crop made from the box (squared, widened by "
                      "crop_margin on each side, as the pipeline crops); a missed LV counts as outside, IoU 0")


def roi_summary(rows: List[dict], unit: str) -> Optional[dict]:
    """The ROI block of summary.json: the ROI stage's own box (``rmse``, ``outlier_rate_percent``,
    ``iou_mean``, ``in_crop_percent``: None when the pipeline does not report it) and the final
    crop (``final_crop_iou_mean``, ``final_crop_in_crop_percent``)."""
    scored = [r for r in rows if r["scored"]]
    if not scored:
        return None
    reported = all(r["stage_reported"] for r in scored)
    rmse = _finite([r["rmse"] for r in scored]) if reported else np.array([])
    percent = lambda key: 100.0 * sum(bool(r[key]) for r in scored) / len(scored)  # noqa: E731
    return {
        "box": "the ROI stage's own box (after the volume consensus, before any second look)",
        "rmse": float(rmse.mean()) if rmse.size else None,
        "rmse_sd": (float(rmse.std(ddof=1)) if rmse.size > 1 else 0.0) if rmse.size else None,
        "unit": unit,
        "outlier_rate_percent": percent("outlier") if reported else None,
        "outlier_definition": OUTLIER_DEFINITION,
        "iou_mean": float(np.mean([r["iou"] for r in scored])) if reported else None,
        "in_crop_percent": percent("in_crop") if reported else None,
        "in_crop_definition": IN_CROP_DEFINITION,
        "final_crop_iou_mean": float(np.mean([r["final_iou"] for r in scored])),
        "final_crop_in_crop_percent": percent("final_in_crop"),
        "final_crop_definition": "the box the pipeline's last crop was made around (its output roi: after the "
                                 "second look, the box of the predicted LV), so it depends on the segmentation "
                                 "network too",
        "n": len(scored),
    }


def roi_details(rows: List[dict]) -> dict:
    """Counts for the markdown report (not part of summary.json); about the ROI stage's own box
    (None where the pipeline does not report it)."""
    scored = [r for r in rows if r["scored"]]
    no_lv = [r for r in rows if not r["ref_has_lv"]]
    reported = all(r["stage_reported"] for r in rows)
    iou = _finite([r["iou"] for r in scored])
    return {
        "scored_slices": len(scored),
        "missed": sum(r["outlier_reason"] == "ROI stage found no LV" for r in scored) if reported else None,
        "low_iou": sum(bool(r["outlier"]) and r["outlier_reason"].startswith("box IoU") for r in scored) if reported else None,
        "iou_median": float(np.median(iou)) if iou.size else None,
        "no_lv_slices": len(no_lv),
        "false_detections": sum(r["stage_x_min"] is not None for r in no_lv) if reported else None,
        "lv_slices_not_scored": sum(r["ref_has_lv"] and not r["scored"] for r in rows),
    }


def agreement(ref, pred) -> dict:
    """Bias (mean of pred - ref), SD of the differences, limits of agreement, MAE, Pearson r, n."""
    ref = np.asarray(ref, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    ok = np.isfinite(ref) & np.isfinite(pred)
    ref, pred = ref[ok], pred[ok]
    n = int(ref.size)
    if n == 0:
        return {"bias": None, "sd": None, "loa_low": None, "loa_high": None, "mae": None, "r": None, "n": 0}
    d = pred - ref
    sd = float(d.std(ddof=1)) if n > 1 else 0.0
    r = None
    if n > 2 and ref.std() > 0 and pred.std() > 0:
        r = float(np.corrcoef(ref, pred)[0, 1])
    return {"bias": float(d.mean()), "sd": sd, "loa_low": float(d.mean() - 1.96 * sd),
            "loa_high": float(d.mean() + 1.96 * sd), "mae": float(np.abs(d).mean()), "r": r, "n": n}


def clinical_summary(rows: List[dict], unit: str) -> Optional[dict]:
    if not rows:
        return None
    out = {}
    for q in ("ef", "edv", "esv"):
        a = agreement([r[f"{q}_ref"] for r in rows], [r[f"{q}_pred"] for r in rows])
        out[f"{q}_bias"], out[f"{q}_mae"], out[f"{q}_r"] = a["bias"], a["mae"], a["r"]
    out["unit_volume"] = unit
    return out
