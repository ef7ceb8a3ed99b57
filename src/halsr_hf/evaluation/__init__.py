"""Evaluation of a HALSR-Net model as in the paper (``halsr-hf evaluate``, ``scripts/evaluate.py``).

* :mod:`.data`: read a ``halsr-hf prepare`` split and rebuild (patient, phase, source) stacks;
* :mod:`.core`: run the two-stage pipeline and score slices, volumes, the ROI stage and the
  clinical volumes (EDV, ESV, EF);
* :mod:`.report`: CSVs, ``summary.json`` (contract with the model card), ``summary.md``, plots;
* :mod:`.run`: the command line (``main(argv)``).

Definitions: docs/evaluation.md.
"""

import importlib

#: name -> the submodule that defines it; imported on first use (``from halsr_hf.evaluation import
#: score``), so that ``halsr-hf evaluate --help`` loads neither numpy's stack nor torch (issue 26).
_EXPORTS = {
    "OUTLIER_DEFINITION": "core", "agreement": "core", "box_iou": "core", "corner_rmse": "core", "describe": "core",
    "predict": "core", "score": "core",
    "EvalDataset": "data", "SliceGroup": "data", "build_groups": "data", "load_eval_dataset": "data",
    "evaluate": "run", "main": "run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
