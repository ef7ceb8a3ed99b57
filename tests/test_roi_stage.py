"""The ROI stage's rules (halsr_hf.roi_stage) on small hand-made inputs, and their wiring into the
pipeline (ROI folder errors, unknown arguments, qc flags and messages)."""

import json

import numpy as np
import pytest
import torch

import halsr_hf
from halsr_hf import InputError
from halsr_hf.roi_stage import (
    RoiResult,
    cavity_not_enclosed,
    keep_largest_component,
    localizer_results,
    regressor_results,
    second_look_box,
    volume_consensus,
)


def test_regressor_boxes_are_never_inverted():
    # x_max < x_min and y_max < y_min as raw outputs (what the old regressor returned on a real slice)
    pred = torch.tensor([[0.7, 0.6, 0.3, 0.2]])
    (result,) = regressor_results(pred, torch.tensor([3.0]), sides=[100], sizes=[(100, 100)])
    x0, y0, x1, y1 = result.box
    assert x0 <= x1 and y0 <= y1
    assert result.box == pytest.approx([29.0, 19.0, 70.0, 60.0])
    assert result.probability == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())


def test_center_size_regressor_cannot_invert_boxes():
    config = halsr_hf.LvRoiConfig(image_size=32, encoder_sizes=[4, 4], fc_sizes=[8], reduce_sizes=[8], global_channels=8, head_sizes=[8, 8])
    model = halsr_hf.LvRoiRegressor(config).eval()
    with torch.no_grad():
        model.box.bias.copy_(torch.tensor([5.0, -5.0, 3.0, 3.0]))  # extreme centre and size
        boxes = model(torch.randn(3, 1, 32, 32)).pred_boxes
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    assert boxes.min() >= 0 and boxes.max() <= 1


def test_regressor_starts_at_the_initial_box_not_in_the_sigmoid_tails():
    model = halsr_hf.LvRoiRegressor(halsr_hf.LvRoiConfig()).eval()
    with torch.no_grad():
        boxes = model(torch.randn(4, 1, 128, 128)).pred_boxes
    expected = torch.tensor([0.35, 0.35, 0.65, 0.65])
    assert torch.allclose(boxes, expected.expand_as(boxes), atol=0.02)


def test_localizer_picks_the_component_of_largest_mass_and_maps_to_pixels():
    prob = np.zeros((1, 16, 16), dtype=np.float32)
    prob[0, 2:4, 2:4] = 0.99  # small, confident
    prob[0, 8:14, 6:12] = 0.8  # large: more mass
    (result,) = localizer_results(prob, sides=[64], sizes=[(48, 64)], min_pixels=2)
    # grid cells 6..11 (columns), 8..13 (rows) of a 16-cell grid over 64 px: 4 px per cell
    assert result.box == [24.0, 32.0, 47.0, 47.0]  # rows clipped to the 48-pixel-high slice
    assert result.probability == pytest.approx(0.8)
    assert len(result.candidates) == 2 and result.candidates[1][0] == [8.0, 8.0, 15.0, 15.0]


def test_localizer_without_component_reports_no_box():
    prob = np.full((1, 8, 8), 0.2, dtype=np.float32)
    (result,) = localizer_results(prob, sides=[8], sizes=[(8, 8)])
    assert result.box is None and result.probability == pytest.approx(0.2)


def _found(box, probability=0.99, candidates=None):
    return RoiResult(box=box, probability=probability, candidates=candidates or [(box, 1.0)], found=True)


def test_volume_consensus_moves_an_outlier_to_its_candidate_near_the_stack_centre():
    good = [10.0, 10.0, 29.0, 29.0]
    far = [70.0, 70.0, 89.0, 89.0]
    near = [12.0, 11.0, 30.0, 28.0]
    results = [_found(good), _found(good), _found(far, 0.95, [(far, 5.0), (near, 2.0)]), _found(good)]
    volume_consensus(results, [(100, 100)] * 4)
    assert results[2].box == near and results[2].flags == ["box_corrected"]
    assert all(r.flags == [] for i, r in enumerate(results) if i != 2)


def test_volume_consensus_fills_a_missed_slice_between_confident_ones():
    good = [10.0, 10.0, 29.0, 29.0]
    missed = RoiResult(box=None, probability=0.1)
    results = [_found(good), missed, _found(good)]
    volume_consensus(results, [(100, 100)] * 3)
    assert missed.found and missed.box == good and missed.flags == ["box_corrected"]
    # outside the confident range (above the base, below the apex) nothing is invented
    results = [RoiResult(box=None, probability=0.1), _found(good), _found(good)]
    volume_consensus(results, [(100, 100)] * 3)
    assert not results[0].found


def test_second_look_rule():
    label_map = np.zeros((100, 100), dtype=np.uint8)
    label_map[40:60, 40:60] = 1
    centred_crop = [25.0, 25.0, 75.0, 75.0]  # side 50 = 20 * (1 + 2 * 0.75)
    crop_prediction = np.zeros((32, 32), dtype=np.uint8)
    crop_prediction[10:22, 10:22] = 1
    assert second_look_box(crop_prediction, centred_crop, label_map, margin=0.75) is None
    # the mask touches the crop's border
    touching = crop_prediction.copy()
    touching[0, 12] = 1
    assert second_look_box(touching, centred_crop, label_map, margin=0.75) == [40.0, 40.0, 59.0, 59.0]
    # the crop is off-centre by 10 px of 50 (> 0.1)
    assert second_look_box(crop_prediction, [35.0, 25.0, 85.0, 75.0], label_map, margin=0.75) is not None
    # the crop is twice too large
    assert second_look_box(crop_prediction, [0.0, 0.0, 100.0, 100.0], label_map, margin=0.75) is not None
    # nothing segmented: nothing to look at again
    assert second_look_box(crop_prediction, centred_crop, np.zeros_like(label_map), margin=0.75) is None


def test_keep_largest_component_and_flags():
    label_map = np.zeros((20, 20), dtype=np.uint8)
    label_map[2:10, 2:10] = 2
    label_map[4:8, 4:8] = 1
    label_map[15:19, 15:19] = 1  # a second, 16-pixel component
    cleaned, several = keep_largest_component(label_map)
    assert several and cleaned[15:19, 15:19].sum() == 0 and (cleaned[2:10, 2:10] == label_map[2:10, 2:10]).all()
    assert not cavity_not_enclosed(cleaned)
    open_ring = cleaned.copy()
    open_ring[2:10, 8:10] = 0  # cut the ring on one side: the cavity meets background
    assert cavity_not_enclosed(open_ring, tolerance=0.1)


@pytest.fixture(scope="module")
def pipe():
    return halsr_hf.load_pipeline()


def test_pipeline_reports_qc_flags_and_a_true_message(pipe):
    out = pipe("space/examples/SCD0000301_40.dcm")
    assert out["lv_found"] and out["roi"] is not None
    # a clean mid-ventricular slice: no flag at all (a spurious flag fails here)
    assert (out["qc"], out["qc_warnings"], out["qc_info"]) == ([], [], [])
    assert out["message"].startswith("LV located by the ROI stage")
    # flags that must appear, and on which side: rows twice the columns' spacing is a warning (the crop
    # is square in pixels, not in mm); the whole slice by choice is information
    with pytest.warns(UserWarning, match="anisotropic"):
        skewed = pipe("space/examples/SCD0000301_40.dcm", pixel_spacing=(1.0, 2.0))
    assert (skewed["qc"], skewed["qc_warnings"], skewed["qc_info"]) == (["anisotropic_spacing"], ["anisotropic_spacing"], [])
    whole = pipe("space/examples/SCD0000301_40.dcm", use_roi=False)
    assert (whole["qc"], whole["qc_warnings"], whole["qc_info"]) == (["no_roi_model"], [], ["no_roi_model"])
    noise = pipe(np.random.default_rng(0).normal(size=(96, 96)).astype(np.float32))
    assert not noise["lv_found"] and noise["roi"] is None and not noise["label_map"].any()
    assert noise["message"].startswith("LV not located: the ROI stage's LV probability")
    assert noise["status"] == "not_located" and noise["message"].endswith("nothing segmented")


def test_pipeline_unknown_argument_is_an_input_error(pipe):
    with pytest.raises(InputError, match="presense_threshold"):
        pipe("space/examples/SCD0000101_48.dcm", presense_threshold=0.5)


def test_broken_roi_folder_is_an_error_not_a_silent_switch(tmp_path):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(halsr_hf.default_model_dir(), folder)
    (folder / "roi" / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="roi"):
        halsr_hf.load_pipeline(folder)
    # no roi/ folder at all (a training output): the model loads, but segmenting whole slices is an
    # explicit choice (issue 20: it used to happen silently, flagged no_roi_model only)
    shutil.rmtree(folder / "roi")
    pipe = halsr_hf.load_pipeline(folder)
    assert pipe.roi_model is None
    with pytest.raises(InputError, match="no ROI stage: .*has no roi/ folder.*roi_model=.*use_roi=False"):
        pipe("space/examples/SCD0000101_48.dcm")
    out = pipe("space/examples/SCD0000101_48.dcm", use_roi=False)
    assert out["qc"][0] == "no_roi_model" and out["message"].startswith("whole slice segmented (no ROI stage: use_roi=False)")
    out = halsr_hf.load_pipeline(folder, roi_model=False)("space/examples/SCD0000101_48.dcm")
    assert out["qc"][0] == "no_roi_model" and "roi_model=False" in out["message"]


def test_second_look_and_consensus_can_be_switched_off(pipe, acdc_dir):
    import h5py

    # a validation volume on which both act with the bundled model (not a test volume)
    with h5py.File(acdc_dir / "data" / "patient085_frame02.h5", "r") as f:
        volume = f["image"][()]
    full = pipe(volume)
    flags = {flag for s in full["slices"] for flag in s["qc"]}
    assert {"second_look", "box_corrected"} <= flags, flags
    assert any("cropped again" in s["message"] and "volume consensus" in s["message"] for s in full["slices"])
    json.dumps([s["qc"] for s in full["slices"]])  # serialisable
    plain = pipe(volume, second_look=0, consensus=False)
    assert not any({"second_look", "box_corrected"} & set(s["qc"]) for s in plain["slices"])


# -- the clean-up after segmentation: connectivity and the basal rule ------------------------------


def _ring(size=40, centre=(20, 20), inner=6, outer=9, gap=None):
    """A label map: cavity disc (1) inside a myocardium ring (2); ``gap``: (start, stop) angles in
    degrees where the ring is missing (the cavity meets background there)."""
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - centre[0], xx - centre[1])
    label = np.zeros((size, size), dtype=np.uint8)
    label[r <= outer] = 2
    label[r <= inner] = 1
    if gap is not None:
        angle = np.degrees(np.arctan2(yy - centre[0], xx - centre[1])) % 360
        label[(r > inner) & (r <= outer) & (angle >= gap[0]) & (angle < gap[1])] = 0
    return label


def test_keep_largest_component_connectivity():
    from halsr_hf.roi_stage import keep_largest_component

    label = np.zeros((12, 12), dtype=np.uint8)
    label[2:6, 2:6] = 1
    label[6:9, 6:9] = 2  # touches the first block only at a corner
    four, several = keep_largest_component(label, min_pixels=1)
    assert several and (four == 2).sum() == 0  # 4-connected: the diagonal piece is a separate, smaller component
    eight, several = keep_largest_component(label, min_pixels=1, connectivity=8)
    assert not several and np.array_equal(eight, label)
    with pytest.raises(ValueError, match="4 or 8"):
        keep_largest_component(label, connectivity=6)


def test_enclosure_and_the_basal_rule_remove_only_unenclosed_basal_slices():
    from halsr_hf.roi_stage import basal_rule, enclosure

    closed = _ring()
    assert enclosure(closed) == 1.0 and enclosure(np.zeros((5, 5), np.uint8)) is None
    open_quarter = _ring(gap=(0, 90))
    assert 0.6 < enclosure(open_quarter) < 0.85
    # base (larger LV) at index 0: an open basal slice is removed, the first enclosed one stops the rule
    stack = [_ring(gap=(0, 90), outer=12, inner=9), _ring(outer=11, inner=8, gap=(0, 20)), _ring(), _ring(gap=(0, 90), outer=5, inner=3)]
    removed = basal_rule(stack, threshold=0.95)
    assert list(removed) == [0, 1] and all(v < 0.95 for v in removed.values())
    assert list(basal_rule(stack, threshold=0.95, max_slices=1)) == [0]
    assert basal_rule(stack, threshold=0.0) == {}  # off
    # the same stack upside down: the base is now the last slice; the open apex (index 0) is never touched
    assert list(basal_rule(stack[::-1], threshold=0.95)) == [3, 2]
    assert basal_rule([closed, open_quarter], threshold=0.95) == {}  # fewer than 3 slices with cavity: no stack to judge


def test_the_basal_rule_through_the_pipeline_on_a_real_volume(acdc_dir):
    """ACDC validation patient030 ED: the experts leave the most basal slice empty; the bundled model
    segments an LV there whose cavity the myocardium does not surround. With the rule on, that
    slice is removed and says why; with it off (0; the bundled model has it on at 0.90), nothing
    changes."""
    import h5py

    with h5py.File(acdc_dir / "data" / "patient030_frame01.h5", "r") as f:
        volume, reference = f["image"][()], f["label"][()]
    assert not (reference[0] > 0).any()
    pipe = halsr_hf.load_pipeline()
    off = pipe(volume, basal_enclosure_threshold=0)
    on = pipe(volume, basal_enclosure_threshold=0.95)
    assert np.array_equal(pipe(volume)["label_map"], on["label_map"])  # the bundled 0.90 removes it too
    base = on["slices"][0]
    assert "basal_slice_removed" in base["qc"] and "surrounds only" in base["message"] and not base["lv_found"]
    assert not on["label_map"][0].any() and off["label_map"][0].any()
    assert np.array_equal(on["label_map"][1:], off["label_map"][1:])
    assert all("basal_slice_removed" not in s["qc"] for s in off["slices"])
