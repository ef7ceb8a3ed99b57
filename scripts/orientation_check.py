#!/usr/bin/env python
"""Orientation invariance of the bundled model on whole ACDC volumes: each volume is segmented in
its 8 rotations/flips through the pipeline, the label maps are transformed back and scored (mean
of LV cavity and myocardium 3D Dice); per volume, the largest deviation from the original
orientation. Writes one line per volume and a summary line.

    python scripts/orientation_check.py --acdc ../shared/data/acdc-ssl4mis --split test > evaluation/orientation_acdc_test.txt
"""

import argparse
import sys
from pathlib import Path

import h5py
import numpy as np

import halsr_hf
from halsr_hf.data.schema import acdc_to_canonical
from halsr_hf.pipeline_halsr import dihedral, dihedral_inverse


def dice(pred, ref, label):
    p, r = pred == label, ref == label
    total = p.sum() + r.sum()
    return np.nan if total == 0 else 2 * (p & r).sum() / total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--acdc", type=Path, required=True, help="the acdc-ssl4mis folder")
    parser.add_argument("--split", default="test", help="test or val (a .list file of the folder)")
    parser.add_argument("--model", default=None, help="model folder (default: the bundled model)")
    args = parser.parse_args(argv)
    pipe = halsr_hf.load_pipeline(args.model)
    deviations = []
    for name in (args.acdc / f"{args.split}.list").read_text().split():
        with h5py.File(args.acdc / "data" / f"{name}.h5", "r") as f:
            image, label = f["image"][()], acdc_to_canonical(f["label"][()])
        scores = []
        for k in range(8):
            out = pipe(dihedral(image, k))["label_map"]
            back = dihedral_inverse(out, k)
            scores.append(float(np.nanmean([dice(back, label, c) for c in (1, 2)])))
        deviation = max(abs(s - scores[0]) for s in scores)
        deviations.append(deviation)
        print(name, np.round(scores, 4).tolist(), round(deviation, 4), flush=True)
    d = np.array(deviations)
    print(f"volumes {d.size}; worst orientation vs original, mean Dice deviation: mean {d.mean():.4f}, "
          f"median {np.median(d):.4f}, max {d.max():.4f}; within 0.02: {int((d <= 0.02).sum())} of {d.size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
