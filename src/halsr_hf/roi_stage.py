"""The pipeline's ROI stage and the checks around the segmentation: where to crop, when to crop
again, and what to tell the user about each slice.

**Two kinds of ROI model** (the ``roi/`` folder of a model folder, or ``roi_model=``):

* the paper's box regressor (:class:`~halsr_hf.modeling_roi.LvRoiRegressor`, model_type
  ``halsr_roi``, section 3.1): a box and a presence logit per slice (:func:`regressor_results`);
* a **coarse localiser** (the bundled default): a
  :class:`~halsr_hf.modeling_halsr.HalsrForSemanticSegmentation` whose config says
  ``stage="localization"``, with the labels background and LV (HALSR-Net ``small`` with its three
  modules off, i.e. a plain U-Net), which
  segments the whole LV (cavity + myocardium) on the whole slice, padded to a square and resized
  to ``roi_size``. Its connected components above ``localizer_threshold`` are the candidate
  boxes, the one of largest probability mass wins (:func:`localizer_results`); where none passes
  it, the components above a lower ``presence_threshold``. This is our choice
  where the paper's regressor could not reach the product's targets (see the README's ablation
  table): the regressor stays selectable.

**Volume consensus** (:func:`volume_consensus`, volumes and ``stack=True`` lists): the median
LV centre and size of the confident slices (probability >= ``consensus_confidence``) is the
stack's reference. A slice whose box centre is further than ``consensus_max_offset`` x the
median box side from it takes its candidate nearest to the reference, or the median box
there; a slice between confident slices on which the ROI stage found no LV gets the median
box (the LV does not vanish mid-stack); the first slice beyond each end of the found range
whose LV probability is at least ``consensus_extend_threshold`` (0.1) gets its neighbour's box,
since the localiser misses the apex's small LV more often than it imagines one. All three are
flagged ``box_corrected``; :attr:`RoiResult.correction` says which, and the slice's message says
when the box came from the consensus rather than from the ROI stage. The thresholds named here
are settings of the image processor
(:data:`~halsr_hf.image_processing_halsr.ROI_STAGE_SETTINGS`), overridable per call.

**Second look** (:func:`second_look_box`): after a crop is segmented, the box of its predicted LV
(cavity + myocardium, largest component) is compared with the crop. When that mask (the crop's
prediction restricted to the components in the output, :func:`crop_prediction_in_output`) touches
the crop's border, or its centre is further than ``second_look_offset`` x the crop side from the
crop's centre, or the crop made from the mask would differ in side by more than a factor
``second_look_scale``, the slice is cropped again around the mask's box and segmented again, at
most ``second_look`` times. The output's ``roi`` is the box of the final crop.

**One pass over a stack** (issue 24). The pipeline runs the ROI model on every slice, then
:func:`plan_stack` once per stack (the volume consensus, or a reference's slices and boxes for an
evaluation, :func:`apply_reference`; the confidence flag), segments what was located (the second
look keeps the better of its looks, :func:`look_quality`), then :func:`finish_stack` once per stack:
slices outside the stack's largest 3D LV component (setting ``stack_component``), slices past the
apex (:func:`apex_rule`, setting ``apex_growth``) and basal slices the base rule removes. Where ED and ES of one subject are segmented (cohorts, ``halsr-hf ef``, the
evaluation), :func:`es_within_ed` empties the ES slices without an LV at ED (setting
``es_within_ed``). Each slice's result says what happened: ``status`` (``segmented``,
``empty_segmentation``, ``not_located``, ``removed``, ``constant``), ``qc`` and ``message``.

**Quality flags** (:data:`QC_FLAGS`), the ``qc`` list of each slice, set by the pipeline, split into
warnings (:data:`WARNING_FLAGS`: a person should look) and information (:data:`INFO_FLAGS`: routine
steps and choices; :func:`split_flags`):
``no_roi_model`` (the whole slice was segmented, by choice), ``constant_slice`` (a constant slice
of a volume: not segmented), ``anisotropic_spacing`` (row and column spacing differ: the crop is
square in pixels, not in mm), ``low_roi_confidence`` (ROI probability below ``low_confidence``,
judged after the volume consensus, so a slice it filled in is flagged too), ``box_corrected``
(volume consensus), ``second_look`` (the crop was made again), ``mask_touches_crop_border`` (the
final mask, still after the last look: :func:`touches_border` of
:func:`crop_prediction_in_output`), ``several_components`` (the LV mask had more than one
component of at least ``min_pixels`` of :func:`keep_largest_component`; only the largest is kept),
``cavity_not_enclosed`` (more than ``tolerance`` of :func:`cavity_not_enclosed` of the cavity's
outline borders background rather than myocardium: normal at the base, a warning elsewhere),
``basal_slice_removed`` (the base rule), ``outside_lv_range`` (the slice's LV is not part of the
stack's largest 3D LV component, or the segmentation found no LV on a slice beyond which, on that
side of the stack, no slice has one: the segmenter placed the end of the ventricle there),
``empty_segmentation`` (a warning: the ROI stage located the LV, the segmentation found none, and
slices on both sides have an LV).
"""

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage

#: ``qc`` flags, in the order they are reported.
QC_FLAGS = (
    "no_roi_model",
    "constant_slice",
    "anisotropic_spacing",
    "low_roi_confidence",
    "box_corrected",
    "second_look",
    "mask_touches_crop_border",
    "several_components",
    "cavity_not_enclosed",
    "basal_slice_removed",
    "outside_lv_range",
    "empty_segmentation",
)

#: Flags that say something may be wrong with a slice's result: a person should look. Only these
#: make a slice (or a cohort subject) "flagged".
WARNING_FLAGS = (
    "anisotropic_spacing",
    "low_roi_confidence",
    "mask_touches_crop_border",
    "several_components",
    "cavity_not_enclosed",
    "empty_segmentation",
)

#: Flags that record a routine step or a choice (information, not a warning): whole slices by
#: choice, a constant slice, a box moved by the volume consensus, a second look, a basal slice
#: removed by the base rule, a slice left out by the stack's LV range.
INFO_FLAGS = tuple(flag for flag in QC_FLAGS if flag not in WARNING_FLAGS)


#: How the volume consensus changed a slice's box (:attr:`RoiResult.correction`).
CORRECTIONS = {
    "candidate": "box moved by the volume consensus to another LV candidate nearer the stack's LV centre",
    "median": "box replaced by the volume consensus with the stack's median LV box",
    "filled": "box taken from the volume consensus (the stack's median LV box: the LV was found on slices above and below)",
    "extended": "box taken from the neighbouring slice by the volume consensus (the end of the found range)",
}


@dataclass
class RoiResult:
    """The ROI stage's answer for one slice: ``box`` an inclusive pixel box (x_min, y_min, x_max,
    y_max) or None, ``probability`` that the LV is visible, ``candidates`` other boxes (localiser
    components, best first, as ``(box, mass)``), ``flags`` quality flags set so far, ``found``
    whether the slice is segmented, ``degenerate`` whether the box has no area (under one pixel
    wide or high), ``correction`` how the volume consensus changed the box (a key of
    :data:`CORRECTIONS`: ``"filled"`` and ``"extended"`` are slices on which the ROI stage itself
    found no LV), ``constant`` a constant slice (nothing to segment)."""

    box: list | None
    probability: float
    candidates: list = field(default_factory=list)
    flags: list = field(default_factory=list)
    found: bool = False
    degenerate: bool = False
    correction: str | None = None
    constant: bool = False
    #: where the slice's decision came from when not from the ROI model: ``"reference slices"`` /
    #: ``"reference box"`` (:func:`apply_reference`, an evaluation of the ROI stage), else None
    reference: str | None = None


def _grid_box_to_pixels(cols, rows, side: float, grid: int, height: int, width: int) -> list:
    """Inclusive box of grid cells (c0..c1, r0..r1) of a ``grid`` x ``grid`` resampling of a padded
    ``side`` x ``side`` square -> inclusive pixel box of the slice (clipped)."""
    scale = side / grid
    x0, x1 = cols[0] * scale, (cols[1] + 1) * scale - 1
    y0, y1 = rows[0] * scale, (rows[1] + 1) * scale - 1
    return [float(np.clip(x0, 0, width - 1)), float(np.clip(y0, 0, height - 1)),
            float(np.clip(x1, 0, width - 1)), float(np.clip(y1, 0, height - 1))]


def regressor_results(pred_boxes: torch.Tensor, presence_logits, sides: list, sizes: list) -> list:
    """:class:`RoiResult` per slice from the box regressor's normalised boxes (of the padded square)."""
    results = []
    boxes = pred_boxes.float().cpu()
    for i, (height, width) in enumerate(sizes):
        side = float(sides[i])
        x_a, y_a, x_b, y_b = (float(v) for v in boxes[i])
        # corners sorted: a box can never be inverted, whatever the regressor outputs
        x0, x1 = sorted((x_a * side, x_b * side - 1))
        y0, y1 = sorted((y_a * side, y_b * side - 1))
        box = [float(np.clip(x0, 0, width - 1)), float(np.clip(y0, 0, height - 1)),
               float(np.clip(x1, 0, width - 1)), float(np.clip(y1, 0, height - 1))]
        probability = 1.0 if presence_logits is None else float(torch.sigmoid(presence_logits[i].float()))
        results.append(RoiResult(box=box, probability=probability))
    return results


def _localizer_candidates(prob: np.ndarray, threshold: float, min_pixels: int, side: float, height: int, width: int) -> list:
    """(box, mass, peak) of each component of ``prob > threshold`` with at least ``min_pixels`` cells."""
    grid = prob.shape[-1]
    components, count = ndimage.label(prob > threshold)
    candidates = []
    if count:
        indices = np.arange(1, count + 1)
        areas = ndimage.sum_labels(np.ones_like(prob), components, indices)
        masses = ndimage.sum_labels(prob, components, indices)
        peaks = ndimage.maximum(prob, components, indices)
        for index, slices in enumerate(ndimage.find_objects(components)):
            if areas[index] < min_pixels:
                continue
            rows, cols = slices
            box = _grid_box_to_pixels((cols.start, cols.stop - 1), (rows.start, rows.stop - 1), side, grid, height, width)
            candidates.append((box, float(masses[index]), float(peaks[index])))
    candidates.sort(key=lambda c: -c[1])
    return candidates


def localizer_results(lv_probability: np.ndarray, sides: list, sizes: list, threshold: float = 0.5,
                      min_pixels: int = 8, presence_threshold: float | None = None) -> list:
    """:class:`RoiResult` per slice from the localiser's LV probability maps (B, S, S) on the ROI
    grid. Components of ``probability > threshold`` with at least ``min_pixels`` cells are the
    candidates, ranked by probability mass; ``probability`` is the best component's peak. Where no
    component passes ``threshold`` and ``presence_threshold`` is lower, the components of
    ``probability > presence_threshold`` are the candidates (so that a presence threshold below
    ``threshold`` acts: a slice whose LV peaks at 0.3 is found with ``presence_threshold=0.2``)."""
    results = []
    for i, (height, width) in enumerate(sizes):
        prob = lv_probability[i]
        candidates = _localizer_candidates(prob, threshold, min_pixels, float(sides[i]), height, width)
        if not candidates and presence_threshold is not None and presence_threshold < threshold:
            candidates = _localizer_candidates(prob, presence_threshold, min_pixels, float(sides[i]), height, width)
        if candidates:
            best = candidates[0]
            results.append(RoiResult(box=best[0], probability=best[2], candidates=[(c[0], c[1]) for c in candidates]))
        else:
            results.append(RoiResult(box=None, probability=float(prob.max()) if prob.size else 0.0))
    return results


def _centre_side(box) -> tuple:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, max(box[2] - box[0] + 1, box[3] - box[1] + 1)


def volume_consensus(results: list, sizes: list, confidence: float = 0.9, max_offset: float = 0.5,
                     extend_threshold: float | None = None) -> None:
    """Correct outlier slices of one stack in place (see the module docstring). Needs at least two
    confident slices; slices are in stack order. With ``extend_threshold``, the slice just beyond
    each end of the found range whose LV probability is at least that gets its found neighbour's
    box (the small LV of the apex is easy to miss on the whole slice; the segmentation decides)."""
    confident = [i for i, r in enumerate(results) if r.found and r.box is not None and r.probability >= confidence]
    if len(confident) < 2:
        return
    centres = np.array([_centre_side(results[i].box) for i in confident])
    cx, cy = float(np.median(centres[:, 0])), float(np.median(centres[:, 1]))
    widths = np.median([results[i].box[2] - results[i].box[0] + 1 for i in confident])
    heights = np.median([results[i].box[3] - results[i].box[1] + 1 for i in confident])
    limit = max_offset * float(np.median(centres[:, 2]))

    def median_box(height, width):
        return [float(np.clip(cx - (widths - 1) / 2, 0, width - 1)), float(np.clip(cy - (heights - 1) / 2, 0, height - 1)),
                float(np.clip(cx + (widths - 1) / 2, 0, width - 1)), float(np.clip(cy + (heights - 1) / 2, 0, height - 1))]

    for i, result in enumerate(results):
        height, width = sizes[i]
        if result.found and result.box is not None:
            x, y, _ = _centre_side(result.box)
            if np.hypot(x - cx, y - cy) <= limit:
                continue
            near = [box for box, _ in result.candidates if np.hypot(*np.subtract(_centre_side(box)[:2], (cx, cy))) <= limit]
            result.box = near[0] if near else median_box(height, width)
            result.correction = "candidate" if near else "median"
            result.flags.append("box_corrected")
        elif confident[0] < i < confident[-1]:
            result.box = median_box(height, width)
            result.found = True
            result.correction = "filled"
            result.flags.append("box_corrected")
    if extend_threshold is not None:
        found = [i for i, r in enumerate(results) if r.found]
        for i, neighbour in ((found[0] - 1, found[0]), (found[-1] + 1, found[-1])):
            if 0 <= i < len(results) and not results[i].found and results[i].probability >= extend_threshold:
                results[i].box = list(results[neighbour].box)
                results[i].found = True
                results[i].correction = "extended"
                results[i].flags.append("box_corrected")


def mask_box(mask: np.ndarray) -> list | None:
    """Inclusive pixel box (x_min, y_min, x_max, y_max) of a predicted boolean mask, or None. (The
    LV box of *reference* labels is ``data.schema.bbox_from_label``; this module travels with model
    repositories as remote code and cannot import the data package.)"""
    if not mask.any():
        return None
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return [float(cols[0]), float(rows[0]), float(cols[-1]), float(rows[-1])]


def touches_border(crop_prediction: np.ndarray, border: int = 1) -> bool:
    """Whether the LV (any non-zero label) of a crop's label map reaches its outer ``border`` pixels."""
    lv = crop_prediction > 0
    return bool(lv[:border].any() or lv[-border:].any() or lv[:, :border].any() or lv[:, -border:].any())


def crop_prediction_in_output(crop_prediction: np.ndarray, crop_box, label_map: np.ndarray) -> np.ndarray:
    """The crop's label map (network grid) restricted to its LV components that are in the output
    ``label_map`` (the slice's map after :func:`keep_largest_component`): a component the clean-up
    removed, or one that lies outside the image, is dropped. ``crop_box``: the crop's continuous
    pixel box (x0, y0, x1, y1). A component is kept when one of its cells, at its centre, falls on an
    LV pixel of ``label_map``. The second look and the ``mask_touches_crop_border`` flag look at this."""
    lv = crop_prediction > 0
    if not label_map.any():
        return np.zeros_like(crop_prediction)
    components, count = ndimage.label(lv)
    if count <= 1:
        return crop_prediction
    rows_n, cols_n = crop_prediction.shape
    height, width = label_map.shape
    x0, y0, x1, y1 = (float(v) for v in crop_box)
    cols = np.floor(x0 + (np.arange(cols_n) + 0.5) * (x1 - x0) / cols_n).astype(np.int64)
    rows = np.floor(y0 + (np.arange(rows_n) + 0.5) * (y1 - y0) / rows_n).astype(np.int64)
    valid_cols, valid_rows = (cols >= 0) & (cols < width), (rows >= 0) & (rows < height)
    on_output = np.zeros(crop_prediction.shape, dtype=bool)
    on_output[np.ix_(valid_rows, valid_cols)] = label_map[np.ix_(rows[valid_rows], cols[valid_cols])] > 0
    kept = np.unique(components[on_output & lv])
    return np.where(np.isin(components, kept[kept > 0]), crop_prediction, 0).astype(crop_prediction.dtype)


def second_look_box(crop_prediction: np.ndarray, crop_box, label_map: np.ndarray, margin: float,
                    max_offset: float = 0.1, max_scale: float = 1.25, border: int = 1):
    """The box to crop again around, or None when the crop is good (see the module docstring).
    ``crop_prediction`` is the crop's label map on the network grid (the pipeline passes it through
    :func:`crop_prediction_in_output`), ``crop_box`` the crop's
    continuous pixel coordinates (x0, y0, x1, y1), ``label_map`` the prediction on the slice."""
    box = mask_box(label_map > 0)
    if box is None:
        return None
    touches = touches_border(crop_prediction, border)
    x0, y0, x1, y1 = (float(v) for v in crop_box)
    side = x1 - x0
    mx, my, mside = _centre_side(box)
    offset = np.hypot(mx + 0.5 - (x0 + x1) / 2, my + 0.5 - (y0 + y1) / 2) / side
    ratio = mside * (1 + 2 * margin) / side
    if touches or offset > max_offset or not (1 / max_scale <= ratio <= max_scale):
        return box
    return None


def keep_largest_component(label_map: np.ndarray, min_pixels: int = 10, connectivity: int = 4) -> tuple:
    """Keep the largest connected LV component (cavity + myocardium) of a label map. Returns the
    cleaned map and whether other components of at least ``min_pixels`` were removed.
    ``connectivity`` 4 (pixels sharing an edge) or 8 (edges or corners: a myocardium joined to the
    rest only diagonally is kept)."""
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    structure = np.ones((3, 3), dtype=bool) if connectivity == 8 else None
    components, count = ndimage.label(label_map > 0, structure=structure)
    if count <= 1:
        return label_map, False
    areas = ndimage.sum_labels(np.ones_like(components), components, np.arange(1, count + 1))
    largest = int(np.argmax(areas)) + 1
    several = int((areas >= min_pixels).sum()) > 1
    return np.where(components == largest, label_map, 0).astype(label_map.dtype), several


def _outer_ring(label_map: np.ndarray, cavity: int) -> np.ndarray | None:
    """The pixels just outside the cavity (4-neighbourhood); None without cavity or ring."""
    inside = label_map == cavity
    if not inside.any():
        return None
    ring = ndimage.binary_dilation(inside) & ~inside
    return ring if ring.any() else None


def cavity_not_enclosed(label_map: np.ndarray, tolerance: float = 0.25, cavity: int = 1) -> bool:
    """Whether more than ``tolerance`` of the cavity's outer outline touches background."""
    ring = _outer_ring(label_map, cavity)
    return ring is not None and float((label_map[ring] == 0).mean()) > tolerance


def enclosure(label_map: np.ndarray, cavity: int = 1, myocardium: int = 2) -> float | None:
    """The fraction of the cavity's outer outline (the pixels just outside it, 4-neighbourhood) that
    is myocardium; None without cavity. 1.0: the myocardium surrounds the cavity."""
    ring = _outer_ring(label_map, cavity)
    return None if ring is None else float((label_map[ring] == myocardium).mean())


def basal_rule(label_maps: list, threshold: float, max_slices: int = 2) -> dict:
    """The base-of-the-ventricle rule of ACDC and M&Ms: a basal slice counts only while the
    myocardium surrounds the cavity. ``label_maps``: the final maps of one stack, in slice order.

    The base is the end of the stack's LV range whose end slice has the larger LV (cavity +
    myocardium) area (the apex is small). From that end inward, a slice whose cavity
    :func:`enclosure` is below ``threshold`` is removed (its whole LV: the experts leave such slices
    empty), at most ``max_slices``; the first enclosed slice stops it. Returns ``{position in
    label_maps: enclosure}`` of the slices to remove (the caller blanks and flags them)."""
    present = [i for i, m in enumerate(label_maps) if (m == 1).any()]
    if threshold <= 0 or len(present) < 3:
        return {}
    first, last = present[0], present[-1]
    area = [(label_maps[i] > 0).sum() for i in (first, last)]
    order = present if area[0] >= area[1] else present[::-1]
    removed = {}
    for i in order[:max_slices]:
        value = enclosure(label_maps[i])
        if value is None or value >= threshold:
            break
        removed[i] = value
    return removed


def order_flags(flags) -> list:
    """Unique flags in :data:`QC_FLAGS` order."""
    present = set(flags)
    return [flag for flag in QC_FLAGS if flag in present]


def split_flags(flags) -> tuple:
    """``(warnings, information)``: the flags of :data:`WARNING_FLAGS` and of :data:`INFO_FLAGS`,
    each unique and in :data:`QC_FLAGS` order. An unknown flag is a ``ValueError``."""
    unknown = sorted(set(flags) - set(QC_FLAGS))
    if unknown:
        raise ValueError(f"unknown qc flag(s) {unknown}; known: {list(QC_FLAGS)}")
    ordered = order_flags(flags)
    return [f for f in ordered if f in WARNING_FLAGS], [f for f in ordered if f in INFO_FLAGS]


# -- the ROI stage over one stack ------------------------------------------------------------------


def apply_reference(results: list, reference: dict) -> None:
    """Replace the ROI stage's decisions of one stack by a reference's, in place: for measuring what
    the ROI stage costs (``halsr-hf evaluate --roi-variants``), never for inference on new data.
    Keys (each optional, one value per slice):

    * ``slices`` (bool: the reference has the LV there): which slices are segmented;
    * ``boxes`` (a box or None): the box wherever the reference has one (the ROI stage's elsewhere);
    * ``fallback_boxes`` (a box or None): the box of a segmented slice on which the ROI stage found
      none (with ``slices``: the reference's slices, the ROI stage's own boxes where it has them)."""
    present, boxes, fallback = reference.get("slices"), reference.get("boxes"), reference.get("fallback_boxes")
    for i, result in enumerate(results):
        if result.constant:
            continue
        if present is not None:
            result.found = bool(present[i])
            result.reference = "reference slices"
        if boxes is not None and boxes[i] is not None:
            result.box = [float(v) for v in boxes[i]]
            result.degenerate = False
            result.reference = "reference box" if present is None else "reference slices and box"
        elif result.found and (result.box is None or result.degenerate) and fallback is not None and fallback[i] is not None:
            result.box = [float(v) for v in fallback[i]]
            result.degenerate = False
            result.reference = "reference slices and box"
        if result.found and result.box is None:
            result.found = False


def plan_stack(results: list, sizes: list, settings: dict, consensus: bool = True, reference: dict | None = None) -> list:
    """The ROI stage's decisions over one stack (slices in stack order), in place, from the ROI
    model's per-slice :class:`RoiResult`: the :func:`volume_consensus` (``consensus`` and more than
    two slices), or a ``reference``'s slices and boxes instead (:func:`apply_reference`), then the
    ``low_roi_confidence`` flag (judged after the consensus: a slice it filled in is flagged too).
    ``settings``: the image processor's ROI stage settings. Returns ``results``."""
    if reference is not None:
        apply_reference(results, reference)
    elif consensus and len(results) > 2:
        volume_consensus(results, sizes, settings["consensus_confidence"], settings["consensus_max_offset"],
                         settings["consensus_extend_threshold"])
    for result in results:
        if result.found and result.probability < settings["low_confidence"] and result.reference is None:
            result.flags.append("low_roi_confidence")
    return results


def look_quality(label_map: np.ndarray, crop_prediction: np.ndarray, scores: dict) -> tuple:
    """How good one look (one crop's segmentation) is, for comparing a slice's looks: first an LV
    that does not touch the crop's border, then an LV at all, then the mean probability of the
    predicted classes over their pixels (``scores``). Larger is better; the second look keeps a new
    look only when it is strictly better (:func:`better_look`)."""
    has_lv = bool(label_map.any())
    return (has_lv and not touches_border(crop_prediction), has_lv,
            float(np.mean(list(scores.values()))) if scores else 0.0)


def better_look(new: tuple, old: tuple) -> bool:
    """Whether a new look's :func:`look_quality` beats the old one's."""
    return new > old


def largest_stack_component(label_maps: list) -> list:
    """Positions (in ``label_maps``, one stack in slice order, all of one shape) of the slices whose
    LV (cavity + myocardium) is not part of the stack's largest 3D connected LV component (voxels
    joined through a face: in plane, or the same pixel on the next slice). The kept slices form one
    contiguous run. Isensee et al.'s ACDC 2017 entry kept the largest 3D component too."""
    if len(label_maps) < 2 or len({m.shape for m in label_maps}) != 1:
        return []
    volume = np.stack([m > 0 for m in label_maps])
    components, count = ndimage.label(volume)
    if count <= 1:
        return []
    sizes = ndimage.sum_labels(np.ones_like(components), components, np.arange(1, count + 1))
    largest = int(np.argmax(sizes)) + 1
    return [k for k in range(len(label_maps)) if volume[k].any() and not (components[k] == largest).any()]


def apex_rule(label_maps: list, growth: float, max_slices: int = 2) -> list:
    """Positions of the slices past the apex. The LV narrows towards the apex, so at the apical end
    of the stack's LV range (the end whose end slice has the smaller LV, cavity + myocardium: the
    other end of :func:`basal_rule`'s) the LV area grows from slice to slice inward. When, among the
    last ``max_slices`` + 1 slices, a slice's LV is more than ``growth`` times the LV of the slice
    just inward of it, that slice is not the apex: it and the slices beyond it are removed (what is
    segmented there lies past the apex). ``growth`` 0 turns the rule off; needs 3 slices with an LV."""
    present = [i for i, m in enumerate(label_maps) if (m > 0).any()]
    if growth <= 0 or len(present) < 3:
        return []
    area = {i: int((label_maps[i] > 0).sum()) for i in present}
    order = present if area[present[0]] < area[present[-1]] else present[::-1]  # the apical end first
    for k in range(min(max_slices, len(order) - 2) - 1, -1, -1):  # the innermost candidate first
        if area[order[k]] > growth * area[order[k + 1]]:
            return sorted(order[: k + 1])
    return []


def finish_stack(label_maps: list, settings: dict) -> dict:
    """The stack's decisions after segmentation (``label_maps``: the final maps of one stack in
    slice order): which slices' LV is removed, and why. Returns ``{position: (flag, detail)}``:

    * ``stack_component`` (setting, 1 = on): a slice whose LV is outside the stack's largest 3D LV
      component (:func:`largest_stack_component`) -> ``outside_lv_range``;
    * ``apex_growth`` (setting, > 0 = on): slices past the apex (:func:`apex_rule`) ->
      ``outside_lv_range``, detail ``"apex"``;
    * ``basal_enclosure_threshold`` (> 0): the base rule (:func:`basal_rule`) on what is left ->
      ``basal_slice_removed``, the detail is the cavity's enclosure."""
    removed = {}
    maps = list(label_maps)
    if settings.get("stack_component", 0) >= 0.5:
        for k in largest_stack_component(maps):
            removed[k] = ("outside_lv_range", None)
            maps[k] = np.zeros_like(maps[k])
    if settings.get("apex_growth", 0) > 0:
        for k in apex_rule(maps, settings["apex_growth"]):
            removed[k] = ("outside_lv_range", "apex")
            maps[k] = np.zeros_like(maps[k])
    if settings.get("basal_enclosure_threshold", 0) > 0:
        for k, value in basal_rule(maps, settings["basal_enclosure_threshold"]).items():
            removed[k] = ("basal_slice_removed", value)
    return removed


def es_within_ed(ed_maps, es_maps) -> list:
    """Positions of the end-systolic slices whose LV must go because the end-diastolic slice at the
    same position has none: in systole the base descends towards the apex and the apex does not grow,
    so the slices with an LV at ES are a subset of those at ED (both stacks on one grid, slice by
    slice). ``ed_maps``, ``es_maps``: the label maps of the two phases (sequences of 2D maps, or 3D
    arrays), in the same slice order. Used by cohorts and ``halsr-hf ef`` (setting ``es_within_ed``);
    returns [] when the stacks do not have the same shape."""
    ed, es = np.asarray(ed_maps), np.asarray(es_maps)
    if ed.shape != es.shape or ed.ndim != 3:
        return []
    return [k for k in range(len(es)) if es[k].any() and not ed[k].any()]


def uses_es_within_ed(pipe) -> bool:
    """Whether a pipeline's model has the setting ``es_within_ed`` on (an object without an image
    processor, e.g. a test's stand-in, has not)."""
    processor = getattr(pipe, "image_processor", None)
    settings = getattr(processor, "roi_stage_settings", None)
    return bool(settings and settings().get("es_within_ed", 0) >= 0.5)


def restrict_es_result(ed_result: dict, es_result: dict) -> list:
    """:func:`es_within_ed` on two pipeline results of one subject (volumes), in place: each ES slice
    whose ED slice has no LV gets an empty map, ``lv_found`` False, ``status`` ``removed``, the
    ``outside_lv_range`` flag (information) and a message that says why; ``volumes_ml`` is recomputed.
    Returns the positions emptied (what ``halsr-hf predict`` and ``halsr-hf ef`` do with the setting on)."""
    removed = es_within_ed(ed_result["label_map"], es_result["label_map"])
    for k in removed:
        es_result["label_map"][k] = 0
        result = es_result["slices"][k]
        qc = order_flags(list(result["qc"]) + ["outside_lv_range"])
        qc_warnings, qc_info = split_flags(qc)
        result.update(
            lv_found=False, status="removed", qc=qc, qc_warnings=qc_warnings, qc_info=qc_info,
            areas_px={key: 0 for key in result["areas_px"]},
            areas_mm2=None if result.get("areas_mm2") is None else {key: 0.0 for key in result["areas_mm2"]},
            message=result["message"].removesuffix("; nothing segmented") + "; then removed: the ED slice at this position has "
                    "no LV (es_within_ed: at ES the LV occupies a subset of its ED slices); nothing segmented",
        )
    if removed and es_result.get("volumes_ml") is not None:
        from .clinical import volumes_ml  # lazily: clinical is light, but keep this module's imports minimal

        measured = volumes_ml(es_result["label_map"], es_result["pixel_spacing"], es_result["slice_thickness"])
        es_result["volumes_ml"] = {name: measured[f"{name}_ml"] for name in ("lv_cavity", "myocardium")}
    return removed
