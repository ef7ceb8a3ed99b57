"""Tests of halsr_hf.metrics and the metrics/cardiac_segmentation evaluate module.

Values are checked against medpy (an independent implementation, test-only dependency) on real
ACDC masks with anisotropic spacing.
"""

import math

import numpy as np
import pytest
from scipy import ndimage

from halsr_hf.errors import InputError
from halsr_hf.metrics import mean_metrics, segmentation_metrics

from .conftest import REPO_ROOT, load_acdc_slices

medpy_binary = pytest.importorskip("medpy.metric.binary")

CLASSES = {1: "lv_cavity", 2: "myocardium"}
SLICES = [
    "patient003_frame01_slice_3",
    "patient003_frame01_slice_5",
    "patient003_frame01_slice_8",
    "patient005_frame02_slice_4",
]


def _perturb(label: np.ndarray, seed: int) -> np.ndarray:
    """A plausible wrong prediction: shifted, cavity eroded/dilated, a few stray pixels."""
    rng = np.random.default_rng(seed)
    pred = ndimage.shift(label, (int(rng.integers(-3, 4)), int(rng.integers(-3, 4))), order=0)
    cavity = pred == 1
    cavity = ndimage.binary_dilation(cavity, iterations=2) if seed % 2 else ndimage.binary_erosion(cavity)
    pred[(pred == 1) & ~cavity] = 2
    pred[cavity] = 1
    ys, xs = rng.integers(0, label.shape[0], 5), rng.integers(0, label.shape[1], 5)
    pred[ys, xs] = 2  # outliers far from the heart: HD and HD95 must see them
    return pred


def _medpy_values(pred, ref, spacing):
    out = {}
    for c, name in CLASSES.items():
        a, b = pred == c, ref == c
        out[f"dice_{name}"] = medpy_binary.dc(a, b)
        out[f"hd_{name}"] = medpy_binary.hd(a, b, voxelspacing=spacing)
        out[f"hd95_{name}"] = medpy_binary.hd95(a, b, voxelspacing=spacing)
        # Paper eq. 11: mean of the two mean surface distances.
        out[f"assd_{name}"] = (
            medpy_binary.asd(a, b, voxelspacing=spacing) + medpy_binary.asd(b, a, voxelspacing=spacing)
        ) / 2
        out[f"iou_{name}"] = np.logical_and(a, b).sum() / np.logical_or(a, b).sum()
    out["accuracy"] = np.mean(pred == ref)
    return out


@pytest.fixture(scope="module")
def acdc_pairs(acdc_dir):
    pairs = []
    for i, (_, label) in enumerate(load_acdc_slices(acdc_dir, SLICES)):
        assert (label == 1).any() and (label == 2).any()
        pairs.append((_perturb(label, i), label))
    return pairs


@pytest.mark.parametrize("spacing", [(1.5, 0.8), None])
def test_matches_medpy_on_real_acdc_masks(acdc_pairs, spacing):
    for pred, ref in acdc_pairs:
        ours = segmentation_metrics(pred, ref, spacing=spacing)
        expected = _medpy_values(pred, ref, spacing)
        for key, value in expected.items():
            assert ours[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
        assert ours["distance_unit"] == ("px" if spacing is None else "mm")
        assert ours["hd_lv_cavity"] > 0 and ours["hd_myocardium"] > 0


def test_anisotropic_spacing_is_applied_per_axis():
    ref = np.zeros((20, 20), np.uint8)
    ref[5:10, 5:10] = 1
    down = np.roll(ref, 2, axis=0)  # 2 rows
    right = np.roll(ref, 2, axis=1)  # 2 columns
    assert segmentation_metrics(down, ref, spacing=(1.5, 0.8))["hd_lv_cavity"] == pytest.approx(3.0)
    assert segmentation_metrics(right, ref, spacing=(1.5, 0.8))["hd_lv_cavity"] == pytest.approx(1.6)
    assert segmentation_metrics(right, ref)["hd_lv_cavity"] == pytest.approx(2.0)


def test_3d_volume_matches_medpy(acdc_dir):
    import h5py

    from halsr_hf.data.schema import acdc_to_canonical

    with h5py.File(acdc_dir / "data" / "patient011_frame01.h5", "r") as f:
        ref = acdc_to_canonical(f["label"][()])
    pred = ref.copy()
    pred[2] = ndimage.shift(ref[2], (2, 1), order=0)
    pred[-1] = 0
    spacing = (10.0, 1.5, 0.8)
    ours = segmentation_metrics(pred, ref, spacing=spacing)
    expected = _medpy_values(pred, ref, spacing)
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key


def test_empty_mask_conventions():
    ref = np.zeros((16, 16), np.uint8)
    ref[4:10, 4:10] = 1  # no myocardium anywhere
    r = segmentation_metrics(ref, ref, spacing=(1.0, 1.0))
    assert r["dice_myocardium"] == 1.0 and r["iou_myocardium"] == 1.0
    assert r["hd_myocardium"] == 0.0 and r["assd_myocardium"] == 0.0
    assert math.isnan(r["accuracy_myocardium"])
    r = segmentation_metrics(ref, ref, both_empty="nan")
    assert math.isnan(r["dice_myocardium"]) and math.isnan(r["hd95_myocardium"])
    assert r["dice_lv_cavity"] == 1.0

    empty = np.zeros_like(ref)
    for pred, gt in [(empty, ref), (ref, empty)]:  # missed object / false positive object
        r = segmentation_metrics(pred, gt)
        assert r["dice_lv_cavity"] == 0.0 and r["iou_lv_cavity"] == 0.0
        for m in ("hd", "hd95", "assd"):
            assert math.isnan(r[f"{m}_lv_cavity"])

    agg = mean_metrics([segmentation_metrics(ref, ref), segmentation_metrics(empty, ref)])
    assert agg["dice_lv_cavity"] == 0.5
    assert agg["hd_lv_cavity"] == 0.0 and agg["hd_lv_cavity_nan_count"] == 1
    assert agg["dice_lv_cavity_nan_count"] == 0 and agg["num_pairs"] == 2


def test_skip_class_and_accuracy():
    ref = np.zeros((16, 16), np.uint8)
    ref[4:10, 4:10] = 1
    pred = ref.copy()
    pred[3, 4:10] = 2  # myocardium predicted, reference not annotated for it
    r = segmentation_metrics(pred, ref, skip=("myocardium",))
    assert all(math.isnan(r[f"{m}_myocardium"]) for m in ("dice", "iou", "hd", "hd95", "assd"))
    assert r["accuracy"] == 1.0 and r["dice_lv_cavity"] == 1.0
    assert segmentation_metrics(pred, ref)["accuracy"] == pytest.approx(1 - 6 / 256)


@pytest.mark.parametrize(
    "pred, ref, spacing, match",
    [
        (np.zeros((4, 4)), np.zeros((4, 5)), None, "shape mismatch"),
        (np.zeros(4), np.zeros(4), None, "2D or 3D"),
        (np.full((4, 4), 0.5), np.zeros((4, 4)), None, "non-integer"),
        (np.zeros((4, 4)), np.zeros((4, 4)), (1.0, 0.0), "positive"),
        (np.zeros((4, 4)), np.zeros((4, 4)), (1.0, float("nan")), "positive"),
        (np.zeros((4, 4)), np.zeros((4, 4)), (1.0, 1.0, 1.0), "expected 2 values"),
    ],
)
def test_invalid_input(pred, ref, spacing, match):
    with pytest.raises(InputError, match=match):
        segmentation_metrics(pred, ref, spacing=spacing)


def test_mean_metrics_refuses_mixed_units():
    ref = np.zeros((8, 8), np.uint8)
    ref[2:5, 2:5] = 1
    with pytest.raises(InputError, match="mix"):
        mean_metrics([segmentation_metrics(ref, ref), segmentation_metrics(ref, ref, spacing=(1, 1))])


# --- the evaluate module -------------------------------------------------------------------


@pytest.fixture(scope="module")
def metric():
    import evaluate

    return evaluate.load(str(REPO_ROOT / "metrics" / "cardiac_segmentation"))


def test_evaluate_module_offline_matches_library(metric, acdc_pairs):
    preds = [p for p, _ in acdc_pairs]
    refs = [r for _, r in acdc_pairs]
    spacing = [(1.5, 0.8)] * len(refs)
    result = metric.compute(
        predictions=preds, references=refs, pixel_spacing=spacing, return_per_pair=True
    )
    expected = mean_metrics(
        [segmentation_metrics(p, r, spacing=s) for p, r, s in zip(preds, refs, spacing)]
    )
    assert result["distance_unit"] == "mm" and result["num_pairs"] == len(refs)
    for key in ("dice", "iou", "hd", "hd95", "assd"):
        for name in CLASSES.values():
            assert result[f"{key}_{name}"] == pytest.approx(expected[f"{key}_{name}"], abs=1e-12)
            assert f"{key}_{name}_nan_count" in result
    assert result["accuracy"] == pytest.approx(expected["accuracy"])
    assert len(result["per_pair"]) == len(refs)
    # Each per-pair value agrees with medpy as well.
    first = _medpy_values(preds[0], refs[0], (1.5, 0.8))
    assert result["per_pair"][0]["hd95_myocardium"] == pytest.approx(first["hd95_myocardium"])


def test_evaluate_module_units_ignore_and_errors(metric):
    ref = np.zeros((12, 10), np.uint8)
    ref[3:8, 3:7] = 1
    pred = ref.copy()
    pred[2, 3:7] = 2
    r = metric.compute(predictions=[pred, ref], references=[ref, ref])
    assert r["distance_unit"] == "px"
    assert r["dice_myocardium"] == 0.5 and r["hd_myocardium_nan_count"] == 1
    r = metric.compute(
        predictions=[pred, ref], references=[ref, ref], score_myocardium=[False, True]
    )
    assert r["dice_myocardium"] == 1.0 and r["dice_myocardium_nan_count"] == 1
    assert r["accuracy"] == 1.0
    with pytest.raises(InputError, match="pixel_spacing"):
        metric.compute(predictions=[pred, ref], references=[ref, ref], pixel_spacing=[(1, 1), None])
    with pytest.raises(InputError, match="pixel_spacing"):
        metric.compute(predictions=[pred, ref], references=[ref, ref], pixel_spacing=[(1, 1)])


def test_evaluate_module_on_many_slices(metric):
    """200 slices in one call, anisotropic spacing: the distance is in mm along rows (1.5 mm x 2).
    (Measured ~3.5 s per 1000 slices of 256x256; no timing is asserted: CI machines are shared.)"""
    ref = np.zeros((256, 256), np.uint8)
    ref[100:140, 100:140] = 1
    ref[95:100, 100:140] = 2
    refs = [ref] * 200
    preds = [np.roll(ref, 2, axis=0)] * 200
    r = metric.compute(predictions=preds, references=refs, pixel_spacing=[(1.5, 0.8)] * 200)
    assert r["hd_lv_cavity"] == pytest.approx(3.0)
