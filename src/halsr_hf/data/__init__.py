"""Cardiac MRI sources as Hugging Face ``datasets`` in one canonical slice schema.

Every ``prepare_*`` function returns a :class:`datasets.DatasetDict` (train/validation/test where
the source has them, always split by patient) whose rows follow :mod:`halsr_hf.data.schema`;
:func:`save_dataset` writes it (atomically, with a dataset card) and ``datasets.load_from_disk``
reads it back. ``halsr-hf prepare`` is the command-line form.
"""

from .acdc import prepare_acdc, read_info_cfg
from .acdc_ssl4mis import prepare_acdc_ssl4mis, read_acdc_volume
from .card import dataset_card, push_dataset, save_dataset, split_counts
from .emidec import emidec_splits, prepare_emidec
from .lvquan import prepare_lvquan
from .myops2020 import myops_splits, prepare_myops2020, read_myops_case
from .schema import (
    COLUMNS,
    LABEL_NAMES,
    LABEL_NAMES_RV,
    bbox_from_label,
    features,
    label_names,
    label_names_from_info,
    split_patients,
)
from .sunnybrook import prepare_sunnybrook

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
