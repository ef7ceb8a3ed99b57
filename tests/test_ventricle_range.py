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

from .test_evaluation import datasets_dirs  # noqa: F401  (a fixture: two real ACDC patients, ED and ES)
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
    assert [r.reference for r in results] == ["reference slices", "reference slices and box", "reference slices", "reference slices"]


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


# ---- training: empty crops, per-epoch draws, label resizing ----------------------------------------------

EMPTY_STACK = [f"patient049_frame02_slice_{k}" for k in (1, 2, 3)]  # slice 1: above the base at ES, no LV


@pytest.fixture(scope="module")
def empty_crop_dir(acdc_dir, tmp_path_factory):
    from halsr_hf.data import save_dataset
    from halsr_hf.data.schema import build_dataset_dict

    from .test_training import _rows

    rows = _rows(acdc_dir, EMPTY_STACK)
    assert not rows[0]["has_lv"] and rows[1]["has_lv"]
    validation = _rows(acdc_dir, ["patient005_frame01_slice_3"])
    return save_dataset(build_dataset_dict({"train": rows, "validation": validation}, "acdc-ssl4mis"),
                        tmp_path_factory.mktemp("data") / "empty_crops")


def test_empty_crops_are_cropped_at_the_neighbours_box_with_an_empty_target(empty_crop_dir):
    from halsr_hf.data.card import load_split
    from halsr_hf.training.data import DatasetSource, HalsrCropDataset

    source = DatasetSource(load_split(str(empty_crop_dir), "train"))
    neighbour = source.dataset[1]["roi"]
    assert [None if b is None else [int(v) for v in b] for b in source.neighbour_boxes] == [[int(v) for v in neighbour], None, None]
    without = HalsrCropDataset(source, train=True, size=64)
    assert sorted(without.indices.tolist()) == [1, 2]  # no empty crop by default
    with_empty = HalsrCropDataset(source, train=True, size=64, empty_weight=2.5, seed=0)
    assert sorted(with_empty.indices.tolist()).count(0) in (2, 3) and len(with_empty) == len(with_empty.epoch_rows.rows(7))
    assert HalsrCropDataset(source, train=False, size=64, empty_weight=2).indices.tolist() == [1, 2]  # validation: none
    torch.manual_seed(0)
    position = with_empty.indices.tolist().index(0)
    item = with_empty[position]
    assert item["pixel_values"].shape == (1, 64, 64) and not item["labels"].any()
    # without augmentation, the crop is the neighbour's box with the margin: the same pixels as the
    # neighbour's own crop (its box, its margin), on the empty slice
    plain = HalsrCropDataset(source, train=True, size=64, empty_weight=1, augment=None, jitter=0.0,
                             margin_range=(0.25, 0.25), side_scale_range=(1.0, 1.0))
    plain.train = False  # crop exactly: no augmentation, no jitter (the empty row stays in the draw)
    row = int(plain.indices.tolist().index(0))
    empty_crop = plain[row]["pixel_values"][0].numpy()
    image, _ = source.get(0)
    x0, y0, x1, y1 = neighbour
    centre = (int(round((y0 + y1) / 2)), int(round((x0 + x1) / 2)))
    assert abs(empty_crop[32, 32] - image[centre]) < 0.5 * float(image.std())


def test_fractional_weights_and_empty_crops_are_drawn_anew_each_epoch():
    from halsr_hf.training.data import EpochRows

    names = np.array(["a"] * 10 + ["b"] * 20, dtype=object)
    rows = EpochRows(names, np.arange(30), {"b": 0.5}, seed=3, extra=[100, 101, 102, 103], extra_weight=0.5)
    draws = [rows.rows(epoch) for epoch in range(4)]
    assert len({len(d) for d in draws}) == 1 and len(draws[0]) == 10 + 10 + 2
    b_parts = [frozenset(d[(d >= 10) & (d < 30)].tolist()) for d in draws]
    assert len(set(b_parts)) > 1  # a new half of b each epoch (it was one half for the whole run)
    assert all(len(p) == 10 for p in b_parts)
    assert np.array_equal(EpochRows(names, np.arange(30), {"b": 0.5}, seed=3).rows(2), rows.rows(2)[rows.rows(2) < 100])
    assert np.array_equal(rows.rows(2), EpochRows(names, np.arange(30), {"b": 0.5}, seed=3, extra=[100, 101, 102, 103],
                                                  extra_weight=0.5).rows(2))  # seeded: a resume draws the same


def test_max_train_samples_is_a_seeded_random_subset_of_every_source():
    from halsr_hf.training.data import EpochRows

    names = np.array(["acdc"] * 50 + ["myops"] * 50, dtype=object)
    picked = EpochRows(names, np.arange(100), seed=1, max_samples=20).rows(0)
    assert len(picked) == 20 and set(names[picked]) == {"acdc", "myops"}  # the first 20 rows were all ACDC
    assert np.array_equal(picked, EpochRows(names, np.arange(100), seed=1, max_samples=20).rows(5))


def test_the_localiser_targets_are_resized_without_a_shift():
    """Legacy ``nearest`` samples source pixel ``floor(i * scale)``: the left edge of each output
    pixel, a third of an output pixel off at scale 3; ``nearest-exact`` samples its centre."""
    from halsr_hf.training.data import LocalizerDataset

    class One:
        has_lv = np.array([True])
        myocardium_annotated = np.array([True])
        source_names = np.array(["x"], dtype=object)

        def __len__(self):
            return 1

        def get(self, index):
            label = np.zeros((384, 384), np.uint8)
            label[151:233, 151:233] = 1  # centred on source pixel 191.5: output pixel 63.5 at scale 3
            return label.astype(np.float32), label

    item = LocalizerDataset(One(), roi_size=128)[0]
    rows = np.nonzero(item["labels"].numpy().any(axis=1))[0]
    cols = np.nonzero(item["labels"].numpy().any(axis=0))[0]
    assert (rows[0] + rows[-1]) / 2 == pytest.approx(63.5) and (cols[0] + cols[-1]) / 2 == pytest.approx(63.5)


# ---- ES within ED ---------------------------------------------------------------------------------------


def test_es_slices_must_have_an_lv_at_ed():
    from halsr_hf.roi_stage import es_within_ed

    disk = _disk((32, 32), (16, 16), 6)
    ed = np.stack([np.zeros((32, 32), np.uint8), disk, disk, disk])
    es = np.stack([disk, disk, np.zeros((32, 32), np.uint8), disk])  # slice 0: an LV above ED's base
    assert es_within_ed(ed, es) == [0]
    assert es_within_ed(ed, ed) == []
    assert es_within_ed(ed[:3], es) == []  # not one grid: not applied


def test_the_evaluation_applies_es_within_ed_to_each_patients_pair():
    from halsr_hf.evaluation.core import Prediction, restrict_es_to_ed
    from halsr_hf.evaluation.data import EvalDataset, SliceGroup, SliceRecord

    disk = _disk((32, 32), (16, 16), 6)
    empty = np.zeros((32, 32), np.uint8)

    def group(phase):
        slices = [SliceRecord(image=np.zeros((32, 32), np.float32), label=empty, patient_id="p", phase=phase, slice_index=k,
                              row=k) for k in range(3)]
        return SliceGroup("p", phase, slices, complete=True)

    dataset = EvalDataset("d", "validation", "", "x", None, [group("ED"), group("ES")])
    predictions = {"p_ED": Prediction([empty, disk, disk], [None] * 3, [False, True, True], [None] * 3),
                   "p_ES": Prediction([disk, disk, disk], [None] * 3, [True] * 3, [None] * 3)}
    assert restrict_es_to_ed(dataset, predictions) == 1
    assert not predictions["p_ES"].label_maps[0].any() and predictions["p_ES"].lv_found == [False, True, True]
    assert predictions["p_ED"].label_maps[0].sum() == 0 and predictions["p_ED"].label_maps[1].any()  # ED unchanged


# ---- the evaluation of the ROI stage against the reference ----------------------------------------------


def test_slice_presence_counts_per_phase():
    from halsr_hf.evaluation.core import Prediction
    from halsr_hf.evaluation.data import EvalDataset, SliceGroup, SliceRecord
    from halsr_hf.evaluation.roi_variants import presence

    disk = _disk((16, 16), (8, 8), 3)
    empty = np.zeros((16, 16), np.uint8)
    refs = {"ED": [disk, disk, empty], "ES": [empty, disk, disk]}
    preds = {"ED": [disk, disk, disk], "ES": [disk, empty, disk]}  # ED: one too many; ES: one too many, one missed
    groups = [SliceGroup("p", phase, [SliceRecord(np.zeros((16, 16), np.float32), label, "p", phase, k, k)
                                      for k, label in enumerate(refs[phase])], complete=True) for phase in ("ED", "ES")]
    dataset = EvalDataset("d", "test", "", "x", None, groups)
    predictions = {f"p_{phase}": Prediction(preds[phase], [None] * 3, [m.any() for m in preds[phase]], [None] * 3)
                   for phase in ("ED", "ES")}
    counts = presence(dataset, predictions)
    assert counts["ED"] == {"precision": 2 / 3, "recall": 1.0, "too_many": 1, "missed": 0, "slices": 3}
    assert counts["ES"] == {"precision": 0.5, "recall": 0.5, "too_many": 1, "missed": 1, "slices": 3}
    assert counts["all"]["too_many"] == 2 and counts["all"]["slices"] == 6


def test_evaluate_reports_the_roi_stage_against_the_reference(datasets_dirs, tmp_path):
    """Two real ACDC patients (ED and ES stacks, cropped around the heart) through the bundled
    model: the reference variants run, the reference's slices and boxes give perfect presence, and
    the table, JSON and plot are written."""
    import json

    from halsr_hf.cli import main as cli_main

    acdc = datasets_dirs[0]
    out = tmp_path / "eval"
    assert cli_main(["evaluate", "--dataset-dir", str(acdc), "--split", "test", "--roi-variants", "--out-dir", str(out),
                     "--quiet"]) == 0
    rows = json.loads((out / "roi_variants.json").read_text())
    (name, variants), = rows.items()
    assert [v["variant"] for v in variants] == ["end_to_end", "reference_slices", "reference_boxes", "reference_slices_and_boxes"]
    assert all(v["volumes"] == 4 for v in variants)
    for variant in variants[1], variants[3]:  # the reference's slices: never a slice too many
        assert variant["presence"]["all"]["too_many"] == 0, variant
    assert variants[3]["presence"]["all"]["missed"] == 0  # and with its boxes, nothing missed
    assert variants[3]["lv_dice_3d"] > 0.85
    summary = json.loads((out / "summary.json").read_text())
    assert summary["roi_stage_vs_reference"][name] == variants
    markdown = (out / "summary.md").read_text()
    assert "The ROI stage against the reference" in markdown and "| reference slices and boxes |" in markdown
    assert (out / f"roi_variants_{name}.png").stat().st_size > 10_000


def _volume_result(maps):
    maps = np.stack(maps)
    return {"label_map": maps, "pixel_spacing": (1.0, 1.0), "slice_thickness": 10.0,
            "volumes_ml": {"lv_cavity": float((maps == 1).sum()) / 100, "myocardium": 0.0},
            "slices": [{"lv_found": bool(m.any()), "status": "segmented" if m.any() else "not_located", "qc": [],
                        "qc_warnings": [], "qc_info": [], "message": "LV located by the ROI stage (probability 0.99); segmented",
                        "areas_px": {"lv_cavity": int((m == 1).sum()), "myocardium": 0},
                        "areas_mm2": {"lv_cavity": float((m == 1).sum()), "myocardium": 0.0}} for m in maps]}


def test_es_results_are_restricted_to_eds_slices_with_a_reason():
    from halsr_hf.roi_stage import restrict_es_result

    disk, empty = _disk((32, 32), (16, 16), 6), np.zeros((32, 32), np.uint8)
    ed, es = _volume_result([empty, disk, disk]), _volume_result([disk, disk, disk])
    assert restrict_es_result(ed, es) == [0]
    removed = es["slices"][0]
    assert not es["label_map"][0].any() and es["label_map"][1].any()
    assert removed["status"] == "removed" and not removed["lv_found"] and removed["qc_info"] == ["outside_lv_range"]
    assert removed["areas_px"]["lv_cavity"] == 0 and removed["message"].endswith("nothing segmented")
    assert "the ED slice at this position has no LV" in removed["message"]
    assert es["volumes_ml"]["lv_cavity"] == pytest.approx(2 * int((disk == 1).sum()) * 10 / 1000)
    _check_claims(dict(removed, roi=None, lv_probability=0.99))


def test_halsr_hf_ef_applies_es_within_ed_when_the_model_says_so():
    """Slice 0 has no LV at ED (its crop is segmented empty at ED, by hand) and one at ES: with the
    setting the ES slice is emptied and the ESV drops by that slice."""
    from halsr_hf.clinical import ejection_fraction

    calls = {"n": 0}
    box = [0.3, 0.3, 0.6, 0.6]

    def run(pixel_values):
        calls["n"] += 1
        out = _lv_logits(pixel_values, radius=0.25, blob=False)
        if calls["n"] == 1:  # the ED volume's first crop batch: slice 0 empty
            out[0] = torch.nn.functional.one_hot(torch.zeros(out.shape[-2:], dtype=torch.int64), 3).permute(2, 0, 1).float() * 10
        return out

    volume = _image((4, 64, 64))
    results = {}
    for setting in (0, 1):
        calls["n"] = 0
        pipe = _tiny_pipe(run_segmentation=run, run_roi=_roi_outputs([box] * 4, [0.99] * 4))
        pipe.image_processor.es_within_ed = setting
        results[setting] = ejection_fraction(volume, volume.copy(), pipe=pipe, pixel_spacing=(1.0, 1.0), slice_thickness=10.0)
    off, on = results[0], results[1]
    assert on["es_label_map"][0].sum() == 0 and off["es_label_map"][0].sum() > 0
    per_slice_ml = (off["es_label_map"][0] == 1).sum() * 10 / 1000
    assert on["esv_ml"] == pytest.approx(off["esv_ml"] - per_slice_ml)
    assert on["edv_ml"] == pytest.approx(off["edv_ml"])


def test_the_apex_rule_removes_what_lies_past_the_apex():
    from halsr_hf.roi_stage import apex_rule

    shape = (48, 48)
    maps = [_disk(shape, (24, 24), r) for r in (14, 12, 10, 8, 4)] + [_disk(shape, (24, 24), 12)]  # slice 5: past the apex
    assert apex_rule(maps, 2.0) == [5]
    assert apex_rule(maps, 0) == []
    assert apex_rule(maps[:5], 2.0) == []  # narrowing to the apex: nothing
    two = maps[:5] + [_disk(shape, (24, 24), 11), _disk(shape, (24, 24), 12)]  # two slices past it
    assert apex_rule(two, 2.0) == [5, 6]
    decided = finish_stack(maps, dict(SETTINGS, apex_growth=2.0))
    assert decided == {5: ("outside_lv_range", "apex")}
