"""Evaluation of a HALSR-Net model as in the paper (``halsr-hf evaluate``, ``scripts/evaluate.py``).

* :mod:`.data`: read a ``halsr-hf prepare`` split and rebuild (patient, phase, source) stacks;
* :mod:`.core`: run the two-stage pipeline and score slices, volumes, the ROI stage and the
  clinical volumes (EDV, ESV, EF);
* :mod:`.report`: CSVs, ``summary.json`` (contract with the model card), ``summary.md``, plots;
* :mod:`.run`: the command line (``main(argv)``).

Definitions: docs/evaluation.md.
"""

from .core import OUTLIER_DEFINITION, agreement, box_iou, corner_rmse, describe, predict, score
from .data import EvalDataset, SliceGroup, build_groups, load_eval_dataset
from .run import evaluate, main

__all__ = [
    "OUTLIER_DEFINITION",
    "EvalDataset",
    "SliceGroup",
    "agreement",
    "box_iou",
    "build_groups",
    "corner_rmse",
    "describe",
    "evaluate",
    "load_eval_dataset",
    "main",
    "predict",
    "score",
]
