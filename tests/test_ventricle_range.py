"""Issue 24: where the ventricle begins and ends. The ROI stage as one pass over a stack (reference
overrides for measuring it, consensus, flags), the second look that keeps the better look, the
stack's decisions after segmentation (3D component, base rule), warnings vs information, one
vocabulary of messages, the empty crops and per-epoch draws of training, and the evaluation of the
ROI stage against the reference. Tiny models and hand-made arrays; real ACDC data where it exists."""

import numpy as np
import pytest
import torch

from halsr_hf.image_processing_halsr import ROI_STAGE_SETTINGS
from halsr_hf.roi_stage import (
    INFO_FLAGS,
    QC_FLAGS,
    WARNING_FLAGS,
    RoiResult,
    apply_reference,
    better_look,
    finish_stack,
    largest_stack_component,
    look_quality,
    plan_stack,
    split_flags,
)

from .test_flags_and_fallbacks import _image, _lv_logits, _roi_outputs, _tiny_pipe

SETTINGS = {key: float(value) for key, value in ROI_STAGE_SETTINGS.items()}


# ---- flags: warnings and information -----------------------------------------------------------------


def test_flags_are_either_a_warning_or_information():
    assert set(WARNING_FLAGS) | set(INFO_FLAGS) == set(QC_FLAGS) and not set(WARNING_FLAGS) & set(INFO_FLAGS)
    assert "basal_slice_removed" in INFO_FLAGS and "second_look" in INFO_FLAGS and "box_corrected" in INFO_FLAGS
    assert "empty_segmentation" in WARNING_FLAGS and "mask_touches_crop_border" in WARNING_FLAGS
    assert split_flags(["basal_slice_removed", "empty_segmentation", "second_look"]) == (
        ["empty_segmentation"], ["second_look", "basal_slice_removed"])
    with pytest.raises(ValueError, match="unknown qc flag"):
        split_flags(["no_such_flag"])


# ---- the ROI stage over a stack ------------------------------------------------------------------------


def _results(boxes, probabilities):
    return [RoiResult(box=None if b is None else list(b), probability=p, found=b is not None and p >= 0.5)
            for b, p in zip(boxes, probabilities)]


def test_reference_slices_keep_own_boxes_and_fall_back_to_the_reference_box():
    own = [10, 10, 30, 30]
    results = _results([own, None, own, own], [0.99, 0.2, 0.99, 0.99])
    ref_boxes = [[11, 11, 29, 29], [12, 12, 28, 28], [13, 13, 27, 27], None]
    apply_reference(results, {"slices": [True, True, True, False], "fallback_boxes": ref_boxes})
    assert [r.found for r in results] == [True, True, True, False]
    assert results[0].box == own and results[2].box == own  # own boxes where the ROI stage has one
    assert results[1].box == [12.0, 12.0, 28.0, 28.0]  # the reference's where it found none
    assert all(r.reference == "reference slices" for r in results)


def test_reference_boxes_keep_own_slices():
    own = [10, 10, 30, 30]
    results = _results([own, None, own], [0.99, 0.1, 0.99])
    apply_reference(results, {"boxes": [[1, 1, 5, 5], [2, 2, 6, 6], None]})
    assert [r.found for r in results] == [True, False, True]  # the ROI stage's slices
    assert results[0].box == [1.0, 1.0, 5.0, 5.0] and results[0].reference == "reference box"
    assert results[2].box == own and results[2].reference is None  # no reference box: its own


def test_plan_stack_runs_the_consensus_and_flags_low_confidence_after_it():
    box = [20, 20, 40, 40]
    results = _results([box, box, None, box, box], [0.99, 0.99, 0.05, 0.99, 0.99])
    plan_stack(results, [(64, 64)] * 5, SETTINGS, consensus=True)
    assert results[2].found and results[2].correction == "filled"
    assert {"box_corrected", "low_roi_confidence"} <= set(results[2].flags)
    again = _results([box, box, None, box, box], [0.99, 0.99, 0.05, 0.99, 0.99])
    plan_stack(again, [(64, 64)] * 5, SETTINGS, consensus=False)
    assert not again[2].found and again[2].flags == []


# ---- the stack after segmentation ----------------------------------------------------------------------


def _disk(shape, centre, radius, value=1):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = np.zeros(shape, dtype=np.uint8)
    out[(yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2] = value
    return out


def test_the_largest_3d_component_drops_detached_slices():
    shape = (48, 48)
    maps = [_disk(shape, (24, 24), r) for r in (10, 9, 8, 6)]
    maps.append(np.zeros(shape, dtype=np.uint8))  # a gap: an empty slice
    maps.append(_disk(shape, (24, 24), 4))  # beyond the gap: a separate 3D component
    maps.append(_disk(shape, (5, 5), 3))  # touching nothing of the previous slice in plane
    assert largest_stack_component(maps) == [5, 6]
    assert largest_stack_component(maps[:4]) == []  # one component: nothing removed
    assert largest_stack_component([maps[0], np.zeros((10, 10), np.uint8)]) == []  # shapes differ: not applied


def test_finish_stack_applies_the_3d_component_then_the_base_rule():
    shape = (48, 48)
    ring = np.where(_disk(shape, (24, 24), 12) > 0, 2, 0).astype(np.uint8)
    enclosed = np.where(_disk(shape, (24, 24), 8) > 0, 1, ring).astype(np.uint8)  # cavity surrounded by myocardium
    open_base = _disk(shape, (24, 24), 12)  # cavity only: not enclosed, and the largest end slice: the base
    maps = [open_base, enclosed, enclosed, _disk(shape, (24, 24), 5), np.zeros(shape, np.uint8), _disk(shape, (24, 24), 3)]
    decided = finish_stack(maps, dict(SETTINGS, stack_component=1, basal_enclosure_threshold=0.9))
    assert decided[5] == ("outside_lv_range", None)
    assert decided[0][0] == "basal_slice_removed" and decided[0][1] == pytest.approx(0.0)
    assert set(decided) == {0, 5}
    assert finish_stack(maps, dict(SETTINGS, stack_component=0, basal_enclosure_threshold=0)) == {}


# ---- the second look keeps the better look ---------------------------------------------------------------


def test_look_quality_prefers_an_lv_away_from_the_border():
    inside = _disk((32, 32), (16, 16), 6)
    touching = _disk((32, 32), (16, 16), 20)
    assert better_look(look_quality(inside, inside, {1: 0.9}), look_quality(touching, touching, {1: 0.99}))
    assert not better_look(look_quality(touching, touching, {1: 0.99}), look_quality(inside, inside, {1: 0.9}))
    empty = np.zeros((32, 32), np.uint8)
    assert better_look(look_quality(touching, touching, {1: 0.5}), look_quality(empty, empty, {}))


def test_a_second_look_never_replaces_a_result_with_a_worse_one():
    """First look: an LV off the crop's centre (a re-crop is asked for); every later look: an LV that
    fills the crop and touches its border. The first look is kept."""
    calls = {"n": 0}

    def run(pixel_values):
        calls["n"] += 1
        size = pixel_values.shape[-1]
        if calls["n"] == 1:
            labels = _disk((size, size), (size * 0.3, size * 0.3), size * 0.15).astype(np.int64)
        else:
            labels = _disk((size, size), (size / 2, size / 2), size * 0.6).astype(np.int64)
        logits = torch.nn.functional.one_hot(torch.from_numpy(labels), 3).permute(2, 0, 1).float() * 10
        return logits[None].expand(len(pixel_values), -1, -1, -1).clone()

    pipe = _tiny_pipe(run_segmentation=run)
    out = pipe(_image((96, 96)))
    assert calls["n"] >= 2  # a second look was made ...
    assert "second_look" in out["qc"] and "cropped again" in out["message"]
    assert "mask_touches_crop_border" not in out["qc"]  # ... and the worse one was not kept
    first_area = int((out["label_map"] == 1).sum())
    assert 0 < first_area < 0.2 * 96 * 96


# ---- empty segmentations: a warning inside the ventricle, information at its ends ----------------------


def _per_slice_logits(empty_slices):
    """Crop logits per call: a centred cavity disk, except for the crops of the given slice numbers
    (in the order the pipeline sends them: one crop per slice, a single batch), which are empty."""

    def run(pixel_values):
        out = _lv_logits(pixel_values, radius=0.25, blob=False)
        for k in empty_slices:
            if k < len(out):
                out[k] = torch.nn.functional.one_hot(torch.zeros(out.shape[-2:], dtype=torch.int64), 3).permute(2, 0, 1).float() * 10
        return out

    return run


def test_an_empty_segmentation_is_a_warning_inside_the_stack_and_information_at_its_ends():
    box = [0.3, 0.3, 0.6, 0.6]
    pipe = _tiny_pipe(run_segmentation=_per_slice_logits({0, 2}), run_roi=_roi_outputs([box] * 5, [0.99] * 5))
    out = pipe(_image((5, 64, 64)), second_look=0, basal_enclosure_threshold=0)
    slices = out["slices"]
    assert [s["status"] for s in slices] == ["empty_segmentation", "segmented", "empty_segmentation", "segmented", "segmented"]
    assert "outside_lv_range" in slices[0]["qc_info"] and not slices[0]["qc_warnings"]
    assert slices[2]["qc_warnings"] == ["empty_segmentation"]
    for s in (slices[0], slices[2]):
        assert not s["lv_found"] and s["message"].endswith("nothing segmented: the segmentation found no LV in the crop")
        assert s["message"].startswith("LV located by the ROI stage")


# ---- one vocabulary: every message path, checked against the fields -------------------------------------


def _check_claims(result):
    """What a message says must match the slice's fields."""
    message, status = result["message"], result["status"]
    assert message.endswith("nothing segmented") or "nothing segmented:" in message or "; segmented" in message \
        or message.startswith("whole slice segmented"), message
    if "nothing segmented" in message:
        assert not result["lv_found"] and status != "segmented", (message, status)
    else:
        assert result["lv_found"] and status == "segmented", (message, status)
    if message.startswith("LV located by the ROI stage"):
        assert result["lv_probability"] is not None and result["lv_probability"] >= 0.5
    if message.startswith("LV not located"):
        assert status == "not_located" and result["roi"] is None
    if "myocardium only" in message:
        assert not (np.asarray(result.get("label_map", [])) == 1).any() if "label_map" in result else True
    if "check:" in message:
        assert result["qc_warnings"], message
    for flag in result["qc_warnings"]:
        if flag in ("mask_touches_crop_border", "several_components", "cavity_not_enclosed", "low_roi_confidence"):
            assert flag.replace("_", " ") in message, (flag, message)
    assert set(result["qc_warnings"]) <= set(WARNING_FLAGS) and set(result["qc_info"]) <= set(INFO_FLAGS)
    assert sorted(result["qc_warnings"] + result["qc_info"]) == sorted(result["qc"])


def test_every_message_path_agrees_with_the_fields():
    box = [0.3, 0.3, 0.6, 0.6]
    seen = set()

    def collect(out):
        for s in out.get("slices", [out]):
            _check_claims(s)
            seen.add(s["status"])

    # located and segmented; consensus-filled; extended; not located (low probability); constant
    volume = _image((6, 64, 64))
    volume[5] = 0.5
    probabilities = [0.05, 0.99, 0.99, 0.03, 0.99, 0.2]
    collect(_tiny_pipe(run_segmentation=lambda pv: _lv_logits(pv, blob=False),
                       run_roi=_roi_outputs([box] * 6, probabilities))(volume, second_look=0))
    # empty segmentations (inside and at the end), a removed slice (3D component)
    collect(_tiny_pipe(run_segmentation=_per_slice_logits({0, 2}), run_roi=_roi_outputs([box] * 5, [0.99] * 5))(
        _image((5, 64, 64)), second_look=0))
    # whole slice, the myocardium only, border flags
    collect(_tiny_pipe(run_segmentation=lambda pv: _lv_logits(pv, radius=0.55, blob=False))(_image((64, 64)), use_roi=False))
    myo = _tiny_pipe(run_segmentation=lambda pv: torch.nn.functional.one_hot(
        torch.from_numpy(np.where(_disk(pv.shape[-2:], (pv.shape[-1] / 2,) * 2, pv.shape[-1] / 4) > 0, 2, 0)), 3
    ).permute(2, 0, 1).float()[None].expand(len(pv), -1, -1, -1).clone() * 10)(_image((64, 64)))
    assert "myocardium only" in myo["message"] and not (myo["label_map"] == 1).any()
    collect(myo)
    # degenerate box; reference slices
    degenerate = _tiny_pipe(run_roi=_roi_outputs([[0.5, 0.3, 0.5 + 0.5 / 64, 0.6]], [0.95]))(_image((64, 64)))
    assert "degenerate" in degenerate["message"]
    collect(degenerate)
    reference = _tiny_pipe(run_segmentation=lambda pv: _lv_logits(pv, blob=False), run_roi=_roi_outputs([box] * 3, [0.99] * 3))(
        _image((3, 64, 64)), reference_roi={"slices": [False, True, True], "boxes": [None, [10, 10, 30, 30], [10, 10, 30, 30]]})
    assert reference["slices"][0]["message"].startswith("no LV on this slice in the reference")
    collect(reference)
    assert {"segmented", "not_located", "constant", "empty_segmentation"} <= seen


def test_reference_roi_is_checked_against_the_inputs():
    pipe = _tiny_pipe()
    from halsr_hf import InputError

    with pytest.raises(InputError, match="entries for 3 slices"):
        pipe(_image((3, 64, 64)), reference_roi={"slices": [True, True]})
    with pytest.raises(InputError, match="unknown key"):
        pipe(_image((3, 64, 64)), reference_roi={"slice": [True] * 3})
