"""Tests of halsr_hf.clinical: hand-computed volumes on synthetic boxes, warnings, errors, and
ejection fractions from real ACDC ground-truth ED/ES masks."""

import math

import numpy as np
import pytest

from halsr_hf.clinical import (
    areas,
    cardiac_function,
    ejection_fraction_percent,
    myocardial_mass_g,
    stroke_volume,
    volumes_ml,
)
from halsr_hf.errors import InputError


def _heart(cavity: int, wall: int = 2, slices: int = 8, size: int = 40) -> np.ndarray:
    """(slices, size, size) map: a cavity x cavity square of label 1 on `slices` slices, wrapped in
    a `wall`-pixel ring of label 2, plus two empty slices (above/below) that must not count."""
    out = np.zeros((slices + 2, size, size), np.uint8)
    lo = (size - cavity) // 2
    out[1:-1, lo - wall : lo + cavity + wall, lo - wall : lo + cavity + wall] = 2
    out[1:-1, lo : lo + cavity, lo : lo + cavity] = 1
    return out


def test_areas_by_hand():
    m = _heart(10)[1]
    a = areas(m, pixel_spacing=(1.5, 0.8))
    assert a["lv_cavity_pixels"] == 100 and a["myocardium_pixels"] == 14 * 14 - 100
    assert a["lv_cavity_mm2"] == pytest.approx(100 * 1.2)
    assert a["myocardium_mm2"] == pytest.approx(96 * 1.2)
    assert areas(m)["lv_cavity_mm2"] is None and areas(m)["lv_cavity_pixels"] == 100


def test_volumes_by_hand():
    m = _heart(20)  # 8 slices of 400 cavity pixels, 24*24-400 = 176 myocardium pixels
    v = volumes_ml(m, pixel_spacing=(1.25, 1.25), slice_thickness=8.0, slice_gap=2.0)
    # voxel = 1.25 * 1.25 * (8 + 2) mm^3 = 15.625 mm^3
    assert v["lv_cavity_voxels"] == 3200
    assert v["lv_cavity_ml"] == pytest.approx(3200 * 15.625 / 1000)  # 50 ml
    assert v["myocardium_ml"] == pytest.approx(8 * 176 * 15.625 / 1000)  # 22 ml
    v0 = volumes_ml(m, pixel_spacing=(1.25, 1.25), slice_thickness=10.0)
    assert v0["lv_cavity_ml"] == pytest.approx(50.0)


def test_scalar_functions():
    assert ejection_fraction_percent(120.0, 50.0) == pytest.approx(100 * 70 / 120)
    assert stroke_volume(120.0, 50.0) == 70.0
    assert myocardial_mass_g(100.0) == pytest.approx(105.0)
    assert myocardial_mass_g(100.0, density=1.0) == 100.0
    with pytest.raises(InputError, match="edv"):
        ejection_fraction_percent(0, 10)
    with pytest.raises(InputError, match="esv"):
        ejection_fraction_percent(10, float("nan"))
    with pytest.raises(InputError, match="myo_volume_ml"):
        myocardial_mass_g(-1.0)


def test_cardiac_function_physical_units():
    ed, es = _heart(20), _heart(12)
    r = cardiac_function(ed, es, pixel_spacing=(1.25, 1.25), slice_thickness=10.0)
    voxel_ml = 1.25 * 1.25 * 10 / 1000
    assert r["volume_unit"] == "ml"
    assert r["edv_ml"] == pytest.approx(3200 * voxel_ml)  # 50 ml
    assert r["esv_ml"] == pytest.approx(8 * 144 * voxel_ml)  # 18 ml
    assert r["sv_ml"] == pytest.approx(32.0)
    assert r["ef_percent"] == pytest.approx(100 * (400 - 144) / 400)  # 64 %
    assert r["ed_myocardium_ml"] == pytest.approx(8 * 176 * voxel_ml)
    assert r["myocardial_mass_g"] == pytest.approx(8 * 176 * voxel_ml * 1.05)
    assert r["warnings"] == []


def test_cardiac_function_without_spacing_gives_ef_in_voxel_units():
    r = cardiac_function(_heart(20), _heart(12))
    assert r["volume_unit"] == "voxels"
    assert r["edv_voxels"] == 3200 and r["esv_voxels"] == 1152 and r["sv_voxels"] == 2048
    assert r["ef_percent"] == pytest.approx(64.0)
    assert r["edv_ml"] is None and r["myocardial_mass_g"] is None


def test_cardiac_function_warnings():
    swapped = cardiac_function(_heart(12), _heart(20))
    assert swapped["ef_percent"] < 0
    assert any("ESV > EDV" in w for w in swapped["warnings"])
    assert any("outside 0-100" in w for w in swapped["warnings"])

    empty_ed = np.zeros_like(_heart(20))
    r = cardiac_function(empty_ed, _heart(12))
    assert math.isnan(r["ef_percent"])
    assert any("ED label map has no lv_cavity" in w for w in r["warnings"])
    assert any("no myocardium" in w for w in r["warnings"])

    r = cardiac_function(_heart(20), np.zeros_like(_heart(20)))
    assert r["ef_percent"] == 100.0
    assert any("ES label map has no lv_cavity" in w for w in r["warnings"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(pixel_spacing=(1.0, 0.0), slice_thickness=8.0), "pixel_spacing"),
        (dict(pixel_spacing=(1.0, -1.0), slice_thickness=8.0), "pixel_spacing"),
        (dict(pixel_spacing=(1.0, float("nan")), slice_thickness=8.0), "pixel_spacing"),
        (dict(pixel_spacing=(1.0,), slice_thickness=8.0), "pixel_spacing"),
        (dict(pixel_spacing=(1.0, 1.0), slice_thickness=0.0), "slice_thickness"),
        (dict(pixel_spacing=(1.0, 1.0), slice_thickness=8.0, slice_gap=-1.0), "slice_gap"),
        (dict(pixel_spacing=(1.0, 1.0)), "slice_thickness"),
        (dict(pixel_spacing=(1.0, 1.0), slice_thickness=8.0, density=0), "density"),
    ],
)
def test_cardiac_function_invalid_spacing(kwargs, match):
    with pytest.raises(InputError, match=match):
        cardiac_function(_heart(20), _heart(12), **kwargs)


def test_cardiac_function_invalid_label_maps():
    ed = _heart(20)
    with pytest.raises(InputError, match="shape mismatch"):
        cardiac_function(ed, ed[:-1])
    with pytest.raises(InputError, match="3D"):
        cardiac_function(ed[1], ed[1])
    with pytest.raises(InputError, match="non-integer"):
        cardiac_function(ed + 0.5, ed)
    raw_acdc = ed.copy()
    raw_acdc[raw_acdc == 1] = 3  # ACDC's own LV label, not mapped to the canonical 1
    with pytest.raises(InputError, match=r"es_label_map: unexpected label values \[3\]"):
        cardiac_function(ed, raw_acdc)
    with pytest.raises(InputError, match="label_map"):
        areas(np.full((4, 4), np.nan))


# ACDC patients 001-020 have dilated cardiomyopathy (ACDC's criterion: LV EF < 40 %, so a
# 20-85 % band would wrongly fail them: patient011's ground truth gives EF 12 %), 021-040
# hypertrophic cardiomyopathy (normal or high EF), 081-100 an abnormal right ventricle (normal LV).
@pytest.mark.parametrize(
    "patient, ef_range",
    [("patient011", (5.0, 40.0)), ("patient022", (40.0, 85.0)), ("patient084", (40.0, 85.0))],
)
def test_ejection_fraction_of_acdc_ground_truth_is_plausible(acdc_dir, patient, ef_range):
    import h5py

    from halsr_hf.data.schema import acdc_to_canonical

    maps = {}
    for phase, frame in (("ed", "frame01"), ("es", "frame02")):
        with h5py.File(acdc_dir / "data" / f"{patient}_{frame}.h5", "r") as f:
            maps[phase] = acdc_to_canonical(f["label"][()])
    r = cardiac_function(maps["ed"], maps["es"])  # the SSL4MIS copy has no spacing
    print(
        f"{patient}: EF {r['ef_percent']:.1f} %, EDV {r['edv_voxels']} voxels, "
        f"ESV {r['esv_voxels']} voxels, warnings {r['warnings']}"
    )
    assert r["volume_unit"] == "voxels"
    assert ef_range[0] <= r["ef_percent"] <= ef_range[1]
    assert r["esv_voxels"] < r["edv_voxels"]
    assert r["warnings"] == []
