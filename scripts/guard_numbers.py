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

    results = guards.acdc_results(ACDC_DIR, pipe)
    lv, myo = guards.volume_dice(results)
    worst = min(zip(lv, results), key=lambda item: item[0])
    print(f"ACDC guard volumes ({len(lv)}): LV {np.mean(lv):.4f}, MYO {np.mean(myo):.4f}, worst LV {worst[0]:.4f} {worst[1]}")
    inside = guards.lv_inside_crop(results, pipe.image_processor.crop_margin)
    print(f"LV box inside the crop: {np.mean(inside):.2%} of {len(inside)} slices")
    precision, recall, too_many, missed = guards.es_presence(results)
    print(f"ES slice presence: precision {precision:.4f} ({too_many} too many), recall {recall:.4f} ({missed} missed); "
          f"LV Dice ED - ES {guards.ed_es_gap(results):.4f}")
    errors = guards.ef_errors(results)
    print(f"EF mean absolute error {np.mean(errors):.2f} points, per patient {np.round(errors, 1).tolist()}")
    sb_lv, sb_myo = guards.sunnybrook_dice(SUNNYBROOK_DIR, pipe)
    print(f"Sunnybrook ({len(sb_lv)} slices, MYO on {len(sb_myo)}): LV {np.mean(sb_lv):.4f}, MYO {np.mean(sb_myo):.4f}")
    for name in guards.ORIENTATION_VOLUMES:
        scores = guards.orientation_scores(ACDC_DIR, pipe, name)
        print(f"orientations {name}: worst deviation {max(abs(s - scores[0]) for s in scores):.4f}, min {min(scores):.4f}")
    out = pipe(str(guards._example()))
    print(f"README example: roi {out['roi']}, areas_px {out['areas_px']}, qc {out['qc']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
