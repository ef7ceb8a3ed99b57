"""Cardiac MRI sources as Hugging Face ``datasets`` in one canonical slice schema.

Every ``prepare_*`` function returns a :class:`datasets.DatasetDict` (train/validation/test where
the source has them, always split by patient) whose rows follow :mod:`halsr_hf.data.schema`;
:func:`save_dataset` writes it (atomically, with a dataset card) and ``datasets.load_from_disk``
reads it back. ``halsr-hf prepare`` is the command-line form.
"""

import importlib

#: Public name -> submodule. Imported on first access (PEP 562), so that ``halsr-hf prepare --help``
#: and the package's other light paths do not load ``datasets``.
_LAZY = {
    "prepare_acdc": "acdc", "read_info_cfg": "acdc",
    "prepare_acdc_ssl4mis": "acdc_ssl4mis", "read_acdc_volume": "acdc_ssl4mis",
    "dataset_card": "card", "push_dataset": "card", "save_dataset": "card", "split_counts": "card",
    "emidec_splits": "emidec", "prepare_emidec": "emidec",
    "prepare_lvquan": "lvquan",
    "myops_splits": "myops2020", "prepare_myops2020": "myops2020", "read_myops_case": "myops2020",
    "COLUMNS": "schema", "LABEL_NAMES": "schema", "LABEL_NAMES_RV": "schema", "bbox_from_label": "schema",
    "features": "schema", "label_names": "schema", "label_names_from_info": "schema", "split_patients": "schema",
    "prepare_sunnybrook": "sunnybrook",
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "COLUMNS",
    "LABEL_NAMES",
    "LABEL_NAMES_RV",
    "bbox_from_label",
    "dataset_card",
    "emidec_splits",
    "features",
    "label_names",
    "label_names_from_info",
    "myops_splits",
    "prepare_acdc",
    "prepare_acdc_ssl4mis",
    "prepare_emidec",
    "prepare_lvquan",
    "prepare_myops2020",
    "prepare_sunnybrook",
    "push_dataset",
    "read_acdc_volume",
    "read_info_cfg",
    "read_myops_case",
    "save_dataset",
    "split_counts",
    "split_patients",
]
