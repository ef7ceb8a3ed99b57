"""Guards on the bundled default model, end to end through the pipeline a user calls, on real data
it never saw (ACDC test patients, Sunnybrook DICOM). A model that regresses fails here.

The thresholds sit a little below what the committed evaluation measured on these subsets
(``evaluation/`` holds the full runs; the numbers are in the README and the model card). The
subsets are fixed so the suite stays under a minute.
"""

import numpy as np
import pytest

import halsr_hf
from halsr_hf.evaluation.core import crop_contains
from halsr_hf.pipeline_halsr import dihedral, dihedral_inverse

#: ACDC test patients used here: 5 of the 20, 10 volumes (011 and 075 were the old model's worst).
ACDC_PATIENTS = ["patient011", "patient033", "patient059", "patient075", "patient083"]
#: Measured on these 10 volumes with the committed model (issue 17's networks, trained on the ACDC +
#: MyoPS + EMIDEC mix, with issue 24's apex rule and ES within ED; ``python scripts/guard_numbers.py``):
#: LV 0.909 (worst volume 0.645, patient033 ES: an unlabelled basal slice segmented), MYO 0.886,
#: LV-in-crop 97.8 % of 92 slices, EF error 6.4 points (patient033 20.0); the thresholds sit a little
#: below. (Before issue 24: LV 0.899, worst 0.575, MYO 0.882, in crop 98.9 %, EF 7.3. All 40 test
#: volumes: README.)
MIN_LV_DICE, MIN_MYO_DICE, MIN_WORST_LV_DICE = 0.90, 0.875, 0.62
MIN_IN_CROP = 0.97
#: Where the ventricle ends (issue 24), on the same 10 volumes (ED and ES of a patient together, with
#: the model's es_within_ed): measured ES slice presence precision 0.956 (2 slices too many, patient033's
#: basal slice among them; 0.935 and 3 before issue 24), recall 0.956 (2 missed), LV Dice ED - ES
#: 0.057 (0.064 before); the issue's targets (0.97 / 0.97, gap 0.02 over all 40 test volumes) are not
#: met (README). Thresholds a little below.
MIN_ES_PRESENCE_PRECISION, MIN_ES_PRESENCE_RECALL, MAX_ED_ES_GAP = 0.94, 0.94, 0.065
MAX_EF_ERROR = 7.0
#: Sunnybrook, every 3rd annotated slice (32; myocardium on the 12 reliable ones, not SCD0000501):
#: measured LV 0.923, MYO 0.794 (the model before: 0.937, 0.767)
MIN_SB_LV_DICE, MIN_SB_MYO_DICE = 0.91, 0.77
#: Orientation: the worst of the 8 rotations/flips may differ from the original by this much mean
#: Dice. Measured: patient033 ED 0.007, patient083 ES 0.028 (the model before: 0.017 there; over all
#: 40 test volumes 25 of 40 are within 0.02, the model before 26: evaluation/orientation_acdc_test.txt).
MAX_ORIENTATION_DEVIATION = 0.03

ACDC_TO_CANONICAL = np.array([0, 0, 2, 1], dtype=np.uint8)


def dice(pred, ref, label):
    p, r = pred == label, ref == label
    total = p.sum() + r.sum()
    return 1.0 if total == 0 else 2.0 * (p & r).sum() / total


def lv_box(label):
    rows, cols = np.nonzero(label > 0)
    if rows.size == 0:
        return None
    return [cols.min(), rows.min(), cols.max(), rows.max()]


@pytest.fixture(scope="module")
def pipe():
    return halsr_hf.load_pipeline()


# ---- the measurements (plain functions: scripts/guard_numbers.py prints them for a model) ----------


def acdc_results(acdc_dir, pipe) -> dict:
    """{(patient, frame): (reference label map, pipeline output)} of the ACDC guard volumes."""
    import h5py

    volumes = {}
    for patient in ACDC_PATIENTS:
        for frame in ("01", "02"):
            with h5py.File(acdc_dir / "data" / f"{patient}_frame{frame}.h5", "r") as f:
                image, label = f["image"][()], ACDC_TO_CANONICAL[f["label"][()]]
            volumes[(patient, frame)] = (image, label)
    keys = list(volumes)
    outputs = pipe([volumes[k][0] for k in keys])
    results = {k: (volumes[k][1], out) for k, out in zip(keys, outputs)}
    if pipe.image_processor.roi_stage_settings()["es_within_ed"] >= 0.5:
        # ED and ES of one patient together, as halsr-hf predict and ef use them
        from halsr_hf.roi_stage import es_within_ed

        for patient in ACDC_PATIENTS:
            ed, es = results[(patient, "01")][1], results[(patient, "02")][1]
            for k in es_within_ed(ed["label_map"], es["label_map"]):
                es["label_map"][k] = 0
    return results


def es_presence(results) -> tuple:
    """Slice presence of the LV cavity at ES over the guard volumes: (precision, recall, slices too
    many, slices missed)."""
    tp = fp = fn = 0
    for (patient, frame), (ref, out) in results.items():
        if frame != "02":
            continue
        for z in range(len(ref)):
            has_ref, has_pred = bool((ref[z] == 1).any()), bool((out["label_map"][z] == 1).any())
            tp, fp, fn = tp + (has_ref and has_pred), fp + (has_pred and not has_ref), fn + (has_ref and not has_pred)
    return tp / max(tp + fp, 1), tp / max(tp + fn, 1), fp, fn


def ed_es_gap(results) -> float:
    """Mean 3D LV Dice at ED minus at ES over the guard patients."""
    ed = [dice(out["label_map"], ref, 1) for (patient, frame), (ref, out) in results.items() if frame == "01"]
    es = [dice(out["label_map"], ref, 1) for (patient, frame), (ref, out) in results.items() if frame == "02"]
    return float(np.mean(ed) - np.mean(es))


def volume_dice(results) -> tuple[list, list]:
    """3D Dice per volume: (LV cavity, myocardium)."""
    return ([dice(out["label_map"], ref, 1) for ref, out in results.values()],
            [dice(out["label_map"], ref, 2) for ref, out in results.values()])


def lv_inside_crop(results, margin: float) -> list:
    """Per slice with a reference LV (and myocardium): whether its box lies inside the final crop."""
    inside = []
    for ref, out in results.values():
        for z, result in enumerate(out["slices"]):
            box = lv_box(ref[z])
            if box is None or not (ref[z] == 2).any():
                continue
            inside.append(result["lv_found"] and result["roi"] is not None and crop_contains(result["roi"], box, margin))
    return inside


def ef_errors(results) -> list:
    """|EF predicted - EF reference| per patient, in points (voxel counts: spacing cancels)."""
    def ef(edv, esv):
        return 100.0 * (edv - esv) / edv

    errors = []
    for patient in ACDC_PATIENTS:
        (ed_ref, ed), (es_ref, es) = results[(patient, "01")], results[(patient, "02")]
        ef_ref = ef((ed_ref == 1).sum(), (es_ref == 1).sum())
        ef_pred = ef((ed["label_map"] == 1).sum(), (es["label_map"] == 1).sum())
        errors.append(abs(ef_pred - ef_ref))
    return errors


def sunnybrook_slices(root):
    """(DICOM path, label map, myocardium reliable) of every annotated Sunnybrook slice."""
    import csv

    out = []
    with open(root / "link.csv", newline="") as f:
        links = [row for row in csv.reader(f)][1:]
    for patient, contours in sorted(links):
        folder = root / "contourfiles" / contours
        for endo in sorted((folder / "i-contours").glob("IM-0001-*-icontour-manual.txt")):
            number = int(endo.name.split("-")[2])
            dicom = root / "dicoms" / patient / f"{number}.dcm"
            epi = folder / "o-contours" / endo.name.replace("icontour", "ocontour")
            if not dicom.is_file():
                continue
            out.append((dicom, endo, epi if epi.is_file() else None, patient != "SCD0000501"))
    return out


def sunnybrook_dice(root, pipe) -> tuple[list, list]:
    """2D Dice on every third annotated Sunnybrook slice: (LV cavity, myocardium on reliable slices)."""
    from halsr_hf.data.sunnybrook import read_contour, rasterize

    slices = sunnybrook_slices(root)[::3]
    results = pipe([str(s[0]) for s in slices])
    lv, myo = [], []
    for (dicom, endo, epi, reliable), result in zip(slices, results):
        shape = result["label_map"].shape
        label = np.zeros(shape, dtype=np.uint8)
        inside = rasterize(read_contour(endo), shape)
        if epi is not None:
            label[rasterize(read_contour(epi), shape) & ~inside] = 2
        label[inside] = 1
        lv.append(dice(result["label_map"], label, 1))
        if epi is not None and reliable:
            myo.append(dice(result["label_map"], label, 2))
    return lv, myo


def orientation_scores(acdc_dir, pipe, name: str) -> list:
    """Mean Dice (LV cavity, myocardium) of 3 real slices of ``name`` in each of the 8 rotations/flips,
    segmented and transformed back."""
    import h5py

    with h5py.File(acdc_dir / "data" / f"{name}.h5", "r") as f:
        image, label = f["image"][()], ACDC_TO_CANONICAL[f["label"][()]]
    keep = [z for z in range(len(label)) if (label[z] == 2).sum() > 200][:3]
    image, label = image[keep], label[keep]
    scores = []
    for k in range(8):
        back = dihedral_inverse(pipe(dihedral(image, k))["label_map"], k)
        scores.append(np.mean([dice(back, label, c) for c in (1, 2)]))
    return scores


ORIENTATION_VOLUMES = ["patient033_frame01", "patient083_frame02"]


# ---- the guards ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def acdc_guard_results(acdc_dir, pipe):
    return acdc_results(acdc_dir, pipe)


def test_bundled_model_acdc_test_volumes_3d_dice(acdc_guard_results):
    lv, myo = volume_dice(acdc_guard_results)
    assert np.mean(lv) >= MIN_LV_DICE, f"mean 3D LV Dice {np.mean(lv):.3f} on {len(lv)} ACDC test volumes"
    assert np.mean(myo) >= MIN_MYO_DICE, f"mean 3D MYO Dice {np.mean(myo):.3f} on {len(myo)} ACDC test volumes"
    assert min(lv) >= MIN_WORST_LV_DICE, f"worst volume LV Dice {min(lv):.3f}"


def test_bundled_model_roi_contains_the_lv(acdc_guard_results, pipe):
    inside = lv_inside_crop(acdc_guard_results, pipe.image_processor.crop_margin)
    assert np.mean(inside) >= MIN_IN_CROP, f"reference LV box inside the crop on {np.mean(inside):.1%} of {len(inside)} slices"


def test_bundled_model_finds_where_the_ventricle_ends(acdc_guard_results):
    """The slices with LV cavity at ES (the atrium above the base, beyond the apex) and the gap
    between ED and ES (issue 24)."""
    precision, recall, too_many, missed = es_presence(acdc_guard_results)
    assert precision >= MIN_ES_PRESENCE_PRECISION, f"ES slice presence precision {precision:.3f} ({too_many} slices too many)"
    assert recall >= MIN_ES_PRESENCE_RECALL, f"ES slice presence recall {recall:.3f} ({missed} slices missed)"
    gap = ed_es_gap(acdc_guard_results)
    assert gap <= MAX_ED_ES_GAP, f"LV Dice ED - ES {gap:.3f}"


def test_bundled_model_ejection_fraction(acdc_guard_results):
    errors = ef_errors(acdc_guard_results)
    assert np.mean(errors) <= MAX_EF_ERROR, f"EF mean absolute error {np.mean(errors):.1f} points ({np.round(errors, 1)})"


def test_bundled_model_sunnybrook_dicom(sunnybrook_dir, pipe):
    lv, myo = sunnybrook_dice(sunnybrook_dir, pipe)
    assert np.mean(lv) >= MIN_SB_LV_DICE, f"Sunnybrook LV Dice {np.mean(lv):.3f} on {len(lv)} slices"
    assert np.mean(myo) >= MIN_SB_MYO_DICE, f"Sunnybrook MYO Dice {np.mean(myo):.3f} on {len(myo)} slices"


@pytest.mark.parametrize("name", ORIENTATION_VOLUMES)
def test_bundled_model_is_orientation_invariant(acdc_dir, pipe, name):
    """Every rotation/flip of real slices, segmented and transformed back, scores within
    MAX_ORIENTATION_DEVIATION mean Dice of the original orientation (the scanner's voxel order must
    not matter)."""
    scores = orientation_scores(acdc_dir, pipe, name)
    assert max(abs(score - scores[0]) for score in scores) <= MAX_ORIENTATION_DEVIATION, f"mean Dice per orientation: {np.round(scores, 3)}"
    assert min(scores) >= 0.85, f"mean Dice per orientation: {np.round(scores, 3)}"


def test_bundled_model_pinned_output_on_the_readme_example(pipe):
    """The README's example slice: a pin that changes only when the bundled model is retrained."""
    out = pipe(str(_example()))
    assert out["lv_found"] and out["qc"] == PINNED_QC
    assert out["roi"] == PINNED_ROI
    assert out["areas_px"] == PINNED_AREAS_PX


def _example():
    from pathlib import Path

    return Path(__file__).resolve().parents[1] / "space" / "examples" / "SCD0000101_48.dcm"


#: Update when the bundled model is retrained (README's example shows the same numbers).
PINNED_ROI = [114, 116, 155, 157]
PINNED_AREAS_PX = {"lv_cavity": 650, "myocardium": 708}
PINNED_QC = []
