"""Segmentation metrics for cardiac label maps: Dice, IoU, pixel accuracy, HD, HD95, ASSD.

Pure numpy/scipy functions, used by the ``metrics/cardiac_segmentation`` evaluate module, the
evaluation script and the tests. They work on 2D slices and on 3D volumes alike.

Definitions (paper, equations 9-11), per class ``c`` with prediction mask ``A`` and reference
mask ``B``:

* Dice = 2|A∩B| / (|A| + |B|); IoU = |A∩B| / |A∪B|.
* ``accuracy_<class>`` = |A∩B| / |B| (per-class pixel accuracy, i.e. recall, as in the
  ``mean_iou`` metric); ``accuracy`` = fraction of all pixels whose label agrees.
* Surfaces: ``S(M) = M XOR binary_erosion(M)`` with the connectivity-1 structuring element
  (4-neighbourhood in 2D, 6 in 3D) and pixels outside the image counted as background. This is
  medpy's convention (``medpy.metric.binary``, ``connectivity=1``), so values agree with medpy.
* ``d(x, S)`` = Euclidean distance (exact distance transform, scaled by the spacing) from a
  surface pixel ``x`` to the nearest pixel of surface ``S``.
* HD = max(max_{a∈S(A)} d(a, S(B)), max_{b∈S(B)} d(b, S(A))).
* HD95 = 95th percentile of the pooled distances {d(a, S(B))} ∪ {d(b, S(A))} (medpy's ``hd95``).
* ASSD = (mean_{a∈S(A)} d(a, S(B)) + mean_{b∈S(B)} d(b, S(A))) / 2, the mean of the two mean
  surface distances (paper eq. 11; equals ``(medpy asd(A,B) + asd(B,A)) / 2``). Note that
  medpy 0.5's own ``assd`` pools the two distance lists instead (a |S|-weighted mean), which
  differs slightly when the two surfaces have different sizes.

Distances are in mm when ``spacing`` is given ((row_mm, col_mm) for 2D, (z_mm, row_mm, col_mm)
for 3D) and in pixels otherwise; each result carries ``distance_unit`` ("mm" or "px"). A 3D
distance in pixels counts one slice step as one pixel (on cine MRI, 5-10 mm against 1-2 mm in
plane): :mod:`halsr_hf.evaluation` therefore computes 3D distances only with a spacing
(``distances=False`` otherwise: NaN, ``distance_unit`` None).

Empty-mask conventions, per class:

* reference and prediction both empty (e.g. a slice above the apex, correctly left empty):
  ``both_empty="perfect"`` (default) gives Dice = IoU = 1 and HD = HD95 = ASSD = 0;
  ``both_empty="nan"`` gives NaN for all of them (excluded from means). ``accuracy_<class>`` is
  NaN either way (no reference pixels).
* exactly one of them empty: Dice = IoU = 0, distances NaN (undefined/infinite), so they are
  excluded from means; :func:`mean_metrics` reports how many were excluded
  (``<key>_nan_count``).
* a class listed in ``skip`` (e.g. myocardium on Sunnybrook endocardium-only slices): every
  metric of that class is NaN, and for ``accuracy`` that label is merged into the background of
  both maps.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np
from scipy import ndimage

from .errors import InputError

DEFAULT_LABELS: dict = {1: "lv_cavity", 2: "myocardium"}
PER_CLASS_METRICS = ("dice", "iou", "accuracy", "hd", "hd95", "assd")
DISTANCE_METRICS = ("hd", "hd95", "assd")
BOTH_EMPTY_POLICIES = ("perfect", "nan")

__all__ = [
    "DEFAULT_LABELS",
    "PER_CLASS_METRICS",
    "mean_metrics",
    "segmentation_metrics",
    "surface_distances",
]


def _as_label_map(arr, name: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype == bool:
        return a.astype(np.uint8)
    if a.dtype.kind in "iu":
        return a
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)):
            raise InputError(f"{name}: label map contains NaN or infinite values")
        if not np.all(a == np.round(a)):
            raise InputError(f"{name}: label map has non-integer values (dtype {a.dtype})")
        return a.astype(np.int64)
    raise InputError(f"{name}: label map must hold integer labels, got dtype {a.dtype}")


def _check_spacing(spacing, ndim: int, name: str = "spacing") -> Optional[np.ndarray]:
    if spacing is None:
        return None
    try:
        s = np.asarray(spacing, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"{name}: expected {ndim} numbers, got {spacing!r}") from None
    if s.size != ndim:
        raise InputError(
            f"{name}: expected {ndim} values for a {ndim}D label map "
            f"({'(row_mm, col_mm)' if ndim == 2 else '(z_mm, row_mm, col_mm)'}), got {spacing!r}"
        )
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise InputError(f"{name}: spacing must be positive and finite, got {spacing!r}")
    return s


def surface_distances(pred_mask, ref_mask, spacing=None):
    """Directed surface distances between two non-empty binary masks.

    Returns ``(d_pred_to_ref, d_ref_to_pred)``: for each surface pixel of ``pred_mask`` the
    distance to the nearest surface pixel of ``ref_mask``, and the other way round. Both masks
    must contain at least one pixel. The computation runs on the bounding box of the union of
    the two masks (padded by one background pixel), which gives the same values as the full
    image and is much faster for small objects in large images.
    """
    pred_mask = np.asarray(pred_mask, dtype=bool)
    ref_mask = np.asarray(ref_mask, dtype=bool)
    union = pred_mask | ref_mask
    if not pred_mask.any() or not ref_mask.any():
        raise InputError("surface_distances: both masks must be non-empty")
    # Crop to the union's bounding box, padded with one background pixel on each side (this also
    # reproduces binary_erosion's border_value=0 at the image edge).
    box = ndimage.find_objects(union.astype(np.uint8))[0]
    p = np.pad(pred_mask[box], 1)
    r = np.pad(ref_mask[box], 1)
    structure = ndimage.generate_binary_structure(p.ndim, 1)
    p_surf = p & ~ndimage.binary_erosion(p, structure=structure)
    r_surf = r & ~ndimage.binary_erosion(r, structure=structure)
    dt_r = ndimage.distance_transform_edt(~r_surf, sampling=spacing)
    dt_p = ndimage.distance_transform_edt(~p_surf, sampling=spacing)
    return dt_r[p_surf], dt_p[r_surf]


def segmentation_metrics(
    pred,
    ref,
    labels: Mapping[int, str] = DEFAULT_LABELS,
    spacing=None,
    skip: Iterable = (),
    both_empty: str = "perfect",
    distances: bool = True,
) -> dict:
    """Metrics for ONE prediction/reference pair of label maps (2D slice or 3D volume).

    Args:
        pred, ref: integer label maps of the same shape (2D ``(H, W)`` or 3D ``(Z, H, W)``).
        labels: ``{label_id: class_name}`` of the classes to score.
        spacing: ``(row_mm, col_mm)`` for 2D or ``(z_mm, row_mm, col_mm)`` for 3D; ``None`` gives
            distances in pixels.
        skip: class names (or label ids) not to score for this pair: their metrics are NaN, and
            for ``accuracy`` their label is merged into the background of both maps.
        both_empty: ``"perfect"`` or ``"nan"``, see the module docstring.
        distances: ``False``: HD, HD95 and ASSD are not computed (NaN) and ``distance_unit`` is None.

    Returns:
        ``{"dice_<class>", "iou_<class>", "accuracy_<class>", "hd_<class>", "hd95_<class>",
        "assd_<class>" for each class, "accuracy", "distance_unit"}`` (floats; NaN where undefined).
    """
    if both_empty not in BOTH_EMPTY_POLICIES:
        raise InputError(f"both_empty: expected one of {BOTH_EMPTY_POLICIES}, got {both_empty!r}")
    pred = _as_label_map(pred, "prediction")
    ref = _as_label_map(ref, "reference")
    if pred.shape != ref.shape:
        raise InputError(f"prediction/reference: shape mismatch {pred.shape} vs {ref.shape}")
    if pred.ndim not in (2, 3):
        raise InputError(f"prediction: expected a 2D or 3D label map, got shape {pred.shape}")
    if pred.size == 0:
        raise InputError(f"prediction: empty array of shape {pred.shape}")
    sp = _check_spacing(spacing, pred.ndim)
    skip = set(skip)

    out: dict = {}
    skipped_ids = []
    both_empty_value = 1.0 if both_empty == "perfect" else math.nan
    both_empty_dist = 0.0 if both_empty == "perfect" else math.nan
    for label_id, name in labels.items():
        keys = {m: f"{m}_{name}" for m in PER_CLASS_METRICS}
        if name in skip or label_id in skip:
            skipped_ids.append(label_id)
            for k in keys.values():
                out[k] = math.nan
            continue
        a = pred == label_id
        b = ref == label_id
        na, nb = int(np.count_nonzero(a)), int(np.count_nonzero(b))
        inter = int(np.count_nonzero(a & b))
        out[keys["accuracy"]] = inter / nb if nb else math.nan
        if na == 0 and nb == 0:
            out[keys["dice"]] = both_empty_value
            out[keys["iou"]] = both_empty_value
            for m in DISTANCE_METRICS:
                out[keys[m]] = both_empty_dist if distances else math.nan
            continue
        out[keys["dice"]] = 2.0 * inter / (na + nb)
        out[keys["iou"]] = inter / (na + nb - inter)
        if na == 0 or nb == 0 or not distances:
            for m in DISTANCE_METRICS:
                out[keys[m]] = math.nan
            continue
        d_ab, d_ba = surface_distances(a, b, sp)
        out[keys["hd"]] = float(max(d_ab.max(), d_ba.max()))
        out[keys["hd95"]] = float(np.percentile(np.concatenate([d_ab, d_ba]), 95))
        out[keys["assd"]] = float((d_ab.mean() + d_ba.mean()) / 2.0)

    if skipped_ids:
        p, r = pred.copy(), ref.copy()
        for lid in skipped_ids:
            p[p == lid] = 0
            r[r == lid] = 0
        out["accuracy"] = float(np.mean(p == r))
    else:
        out["accuracy"] = float(np.mean(pred == ref))
    out["distance_unit"] = None if not distances else "px" if sp is None else "mm"
    return out


def mean_metrics(per_pair: Sequence[Mapping]) -> dict:
    """Aggregate the results of :func:`segmentation_metrics` over pairs.

    Every numeric key becomes the mean over the pairs where it is not NaN (NaN if it is NaN
    everywhere), and ``<key>_nan_count`` says how many pairs were excluded. Also returns
    ``num_pairs`` and ``distance_unit`` (all pairs must share one unit).
    """
    per_pair = list(per_pair)
    if not per_pair:
        raise InputError("mean_metrics: no results to aggregate (empty list)")
    units = {r.get("distance_unit") for r in per_pair}
    if len(units) > 1:
        raise InputError(
            f"mean_metrics: pairs mix distance units {sorted(map(str, units))}; give a pixel "
            "spacing for every pair or for none"
        )
    keys = [k for k, v in per_pair[0].items() if k != "distance_unit" and not isinstance(v, str)]
    out: dict = {}
    for k in keys:
        vals = np.array([r[k] for r in per_pair], dtype=np.float64)
        finite = ~np.isnan(vals)
        out[k] = float(vals[finite].mean()) if finite.any() else math.nan
        out[f"{k}_nan_count"] = int((~finite).sum())
    out["num_pairs"] = len(per_pair)
    out["distance_unit"] = units.pop()
    return out
