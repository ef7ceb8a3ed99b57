#!/usr/bin/env python
"""Orientation invariance of the bundled model on whole ACDC volumes: each volume is segmented in
its 8 rotations/flips through the pipeline, the label maps are transformed back and scored (mean
of LV cavity and myocardium 3D Dice); per volume, the largest deviation from the original
orientation. Writes one line per volume and a summary line.

    python scripts/orientation_check.py --acdc ../shared/data/acdc-ssl4mis --split test \
        --json evaluation/orientation_acdc_test.json > evaluation/orientation_acdc_test.txt

``--json`` also writes the numbers (per volume and the summary) for the model card:
``scripts/evaluate_default_model.py`` copies that file into the bundled model's ``evaluation/``.
"""

import argparse
import json
import os
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
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    parser.add_argument("--tolerance", type=float, default=0.02, help="a volume is orientation-stable when its worst deviation is at most this")
    args = parser.parse_args(argv)
    pipe = halsr_hf.load_pipeline(args.model)
    deviations, per_volume = [], {}
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
        per_volume[name] = {"dice_per_orientation": np.round(scores, 4).tolist(), "worst_deviation": round(deviation, 4)}
        print(name, np.round(scores, 4).tolist(), round(deviation, 4), flush=True)
    d = np.array(deviations)
    within = int((d <= args.tolerance).sum())
    print(f"volumes {d.size}; worst orientation vs original, mean Dice deviation: mean {d.mean():.4f}, "
          f"median {np.median(d):.4f}, max {d.max():.4f}; within {args.tolerance:g}: {within} of {d.size}")
    if args.json:
        result = {"dataset": "ACDC (SSL4MIS split)", "split": args.split, "model": args.model or "bundled",
                  "measure": "per volume, the largest |mean 3D Dice (LV cavity, myocardium) of an orientation - "
                             "that of the original|, over the 8 rotations/flips",
                  "volumes": int(d.size), "mean": round(float(d.mean()), 4), "median": round(float(np.median(d)), 4),
                  "max": round(float(d.max()), 4), "tolerance": args.tolerance, "within_tolerance": within,
                  "per_volume": per_volume}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(f".{args.json.name}.tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
