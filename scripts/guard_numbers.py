#!/usr/bin/env python
"""Measure what the guard tests (``tests/test_default_model.py``) measure, for a model folder, and
print it: the numbers to set the guards' thresholds from after the bundled model is retrained
(thresholds a little below these), and the new pinned output of the README's example.

    python scripts/guard_numbers.py [--model MODEL_DIR]     # default: the bundled model
"""

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import halsr_hf  # noqa: E402
from tests import test_default_model as guards  # noqa: E402
from tests.conftest import ACDC_DIR, SUNNYBROOK_DIR  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: the bundled model)")
    args = parser.parse_args(argv)
    pipe = halsr_hf.load_pipeline(args.model)

    results = guards.acdc_results.__wrapped__(ACDC_DIR, pipe)
    lv = [guards.dice(out["label_map"], ref, 1) for ref, out in results.values()]
    myo = [guards.dice(out["label_map"], ref, 2) for ref, out in results.values()]
    worst = min(zip(lv, results), key=lambda item: item[0])
    print(f"ACDC guard volumes ({len(lv)}): LV {np.mean(lv):.4f}, MYO {np.mean(myo):.4f}, worst LV {worst[0]:.4f} {worst[1]}")
    margin = pipe.image_processor.crop_margin
    inside = []
    for ref, out in results.values():
        for z, result in enumerate(out["slices"]):
            box = guards.lv_box(ref[z])
            if box is None or not (ref[z] == 2).any():
                continue
            inside.append(result["lv_found"] and result["roi"] is not None and guards.crop_contains(result["roi"], box, margin))
    print(f"LV box inside the crop: {np.mean(inside):.2%} of {len(inside)} slices")
    errors = []
    for patient in guards.ACDC_PATIENTS:
        (ed_ref, ed), (es_ref, es) = results[(patient, "01")], results[(patient, "02")]
        ef = lambda edv, esv: 100.0 * (edv - esv) / edv  # noqa: E731
        errors.append(abs(ef((ed["label_map"] == 1).sum(), (es["label_map"] == 1).sum()) - ef((ed_ref == 1).sum(), (es_ref == 1).sum())))
    print(f"EF mean absolute error {np.mean(errors):.2f} points, per patient {np.round(errors, 1).tolist()}")

    from halsr_hf.data.sunnybrook import read_contour, rasterize

    slices = guards.sunnybrook_slices(SUNNYBROOK_DIR)[::3]
    sb_lv, sb_myo = [], []
    for (dicom, endo, epi, reliable), result in zip(slices, pipe([str(s[0]) for s in slices])):
        shape = result["label_map"].shape
        label = np.zeros(shape, dtype=np.uint8)
        cavity = rasterize(read_contour(endo), shape)
        if epi is not None:
            label[rasterize(read_contour(epi), shape) & ~cavity] = 2
        label[cavity] = 1
        sb_lv.append(guards.dice(result["label_map"], label, 1))
        if epi is not None and reliable:
            sb_myo.append(guards.dice(result["label_map"], label, 2))
    print(f"Sunnybrook ({len(sb_lv)} slices, MYO on {len(sb_myo)}): LV {np.mean(sb_lv):.4f}, MYO {np.mean(sb_myo):.4f}")

    import h5py

    for name in ("patient033_frame01", "patient083_frame02"):
        with h5py.File(ACDC_DIR / "data" / f"{name}.h5", "r") as f:
            image, label = f["image"][()], guards.ACDC_TO_CANONICAL[f["label"][()]]
        keep = [z for z in range(len(label)) if (label[z] == 2).sum() > 200][:3]
        image, label = image[keep], label[keep]
        scores = [np.mean([guards.dice(guards.dihedral_inverse(pipe(guards.dihedral(image, k))["label_map"], k), label, c)
                           for c in (1, 2)]) for k in range(8)]
        print(f"orientations {name}: worst deviation {max(abs(s - scores[0]) for s in scores):.4f}, min {min(scores):.4f}")
    out = pipe(str(guards._example()))
    print(f"README example: roi {out['roi']}, areas_px {out['areas_px']}, qc {out['qc']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
