"""Reading an evaluation split written by ``halsr-hf prepare`` (a ``datasets.save_to_disk`` folder)
and rebuilding short-axis stacks from its 2D slice rows.

Rows are 2D slices (schema: ``halsr_hf.data.schema``). Columns used (only ``image``, ``label`` and ``patient_id`` are required):
``image`` (2D float; an ``Image()`` feature or nested lists), ``label`` (2D uint8, 0 background / 1 lv_cavity / 2 myocardium),
``patient_id``, ``phase`` (ED/ES/...), ``slice_index``, ``num_slices``, ``pixel_spacing``
([row_mm, col_mm] or None), ``slice_thickness`` (mm or None), ``roi``, ``myocardium_annotated``
(False: myocardium is not scored), ``group``, ``source``.

A group is the rows of one ``(patient_id, phase, source)`` sorted by ``slice_index`` (the source
matters where a patient has several sequences, e.g. MyoPS cine and LGE, both with phase ``unknown``;
such groups' keys end with the source). It is a complete
volume (scored in 3D, usable for EDV/ESV/EF) when it has ``num_slices`` rows with distinct
consecutive slice indices and equal slice shapes, and its source is not in
:data:`PARTIAL_STACK_SOURCES`; otherwise (e.g. Sunnybrook, where only the contoured slices exist)
its slices are scored in 2D only.

``source`` (:func:`load_eval_dataset`, ``halsr-hf evaluate --source``) keeps only the rows of one
source, e.g. ``myops2020-lge``, so that each sequence of a multi-sequence dataset is scored alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np

from ..data.card import load_split
from ..data.schema import label_names_from_info
from ..errors import InputError

#: Sources whose (patient, phase) groups hold only the annotated slices of a stack (Sunnybrook:
#: ``num_slices`` counts the contoured slices, see ``halsr_hf.data.sunnybrook``): never scored in 3D.
#: Not partial: MyoPS (``myops2020-cine``/``-lge``: every slice of each volume is labelled) and the
#: EMIDEC PNG copy (``emidec-lge``: each patient's slices are numbered 0..n-1 without gaps, all with LV).
PARTIAL_STACK_SOURCES = frozenset({"sunnybrook"})
REQUIRED_COLUMNS = ("image", "label", "patient_id")
OPTIONAL_COLUMNS = ("phase", "slice_index", "num_slices", "pixel_spacing", "slice_thickness", "roi",
                    "myocardium_annotated", "group", "source")


@dataclass
class SliceRecord:
    image: np.ndarray
    label: np.ndarray
    patient_id: str
    phase: str
    slice_index: int
    row: int
    pixel_spacing: Optional[tuple] = None
    slice_thickness: Optional[float] = None
    roi: Optional[list] = None
    myocardium_annotated: bool = True
    group: Optional[str] = None
    source: Optional[str] = None
    num_slices: Optional[int] = None


@dataclass
class SliceGroup:
    """The slices of one (patient_id, phase, source), sorted by slice index. ``sequence``: the source,
    when the patient's phase has rows of more than one source (MyoPS cine and LGE), else None."""

    patient_id: str
    phase: str
    slices: List[SliceRecord] = field(default_factory=list)
    complete: bool = False
    sequence: Optional[str] = None

    @property
    def key(self) -> str:
        return f"{self.patient_id}_{self.phase}" + (f"_{self.sequence}" if self.sequence else "")

    @property
    def source(self) -> Optional[str]:
        return self.slices[0].source

    @property
    def group(self) -> Optional[str]:
        return self.slices[0].group

    @property
    def myocardium_annotated(self) -> bool:
        return all(s.myocardium_annotated for s in self.slices)

    @property
    def spacing_3d(self) -> Optional[tuple]:
        """(slice_thickness, row_mm, col_mm) when all are known and equal over the stack, else None."""
        first = self.slices[0]
        if first.pixel_spacing is None or first.slice_thickness is None:
            return None
        for s in self.slices[1:]:
            if s.pixel_spacing != first.pixel_spacing or s.slice_thickness != first.slice_thickness:
                return None
        return (first.slice_thickness, *first.pixel_spacing)


@dataclass
class EvalDataset:
    name: str
    split: str
    path: str
    source: str
    hf_id: Optional[str]
    groups: List[SliceGroup]

    @property
    def slices(self) -> List[SliceRecord]:
        return [s for g in self.groups for s in g.slices]

    @property
    def volumes(self) -> List[SliceGroup]:
        return [g for g in self.groups if g.complete]


def _spacing(value) -> Optional[tuple]:
    if value is None:
        return None
    try:
        values = tuple(float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1))
    except (TypeError, ValueError):
        return None
    if len(values) != 2 or not all(math.isfinite(v) and v > 0 for v in values):
        return None
    return values


def _positive_or_none(value) -> Optional[float]:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def _roi(value) -> Optional[list]:
    if value is None:
        return None
    try:
        box = [float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1)]
    except (TypeError, ValueError):
        return None
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        return None
    return box


def _rv_label(ds) -> Optional[int]:
    """The id of ``rv_cavity`` in a dataset prepared with ``--keep-rv`` (scored as background), else None."""
    try:
        names = label_names_from_info(ds.info)
    except (ImportError, InputError, AttributeError, TypeError, ValueError):
        return None
    return names.index("rv_cavity") if "rv_cavity" in names else None


def build_groups(ds, name: str = "dataset", limit: Optional[int] = None) -> List[SliceGroup]:
    """Group the rows of a slice dataset per (patient_id, phase, source), sorted by slice index.

    ``limit``: keep only the first ``limit`` groups (quick checks)."""
    columns = set(ds.column_names)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise InputError(f"{name}: missing column(s) {missing}; found {sorted(columns)}")
    if len(ds) == 0:
        raise InputError(f"{name}: the split has no rows")
    meta_cols = [c for c in ("patient_id",) + OPTIONAL_COLUMNS if c in columns]
    rv_label = _rv_label(ds)
    meta = ds.select_columns(meta_cols).to_dict()
    order: dict = {}
    for row in range(len(ds)):
        key = (str(meta["patient_id"][row]), str(meta["phase"][row]) if "phase" in meta and meta["phase"][row] is not None else "NA",
               str(meta["source"][row]) if "source" in meta and meta["source"][row] is not None else None)
        order.setdefault(key, []).append(row)
    keys = list(order)
    stacks_per_phase: dict = {}
    for key in keys:
        stacks_per_phase[key[:2]] = stacks_per_phase.get(key[:2], 0) + 1
    if limit is not None:
        keys = keys[: max(0, int(limit))]
    wanted = sorted(r for k in keys for r in order[k])
    arrays = ds.select_columns(["image", "label"]).select(wanted).with_format("numpy")
    position = {r: i for i, r in enumerate(wanted)}

    groups = []
    for key in keys:
        group = SliceGroup(patient_id=key[0], phase=key[1], sequence=key[2] if stacks_per_phase[key[:2]] > 1 else None)
        for row in order[key]:
            item = arrays[position[row]]
            image = np.asarray(item["image"], dtype=np.float32)
            label = np.asarray(item["label"])
            if image.ndim != 2 or label.shape != image.shape:
                raise InputError(
                    f"{name}: row {row} ({key[0]} {key[1]}): expected a 2D image and a label of the same shape, "
                    f"got {image.shape} and {label.shape}"
                )
            if rv_label is not None:
                label = np.where(label == rv_label, 0, label)
            bad = np.setdiff1d(np.unique(label), [0, 1, 2])
            if bad.size:
                raise InputError(f"{name}: row {row} ({key[0]} {key[1]}): label values {bad.tolist()} outside 0/1/2")
            get = lambda c: meta[c][row] if c in meta else None  # noqa: E731
            index = get("slice_index")
            annotated = get("myocardium_annotated")
            num = get("num_slices")
            group.slices.append(SliceRecord(
                image=image, label=label.astype(np.uint8), patient_id=key[0], phase=key[1],
                slice_index=int(index) if index is not None else len(group.slices), row=row,
                pixel_spacing=_spacing(get("pixel_spacing")), slice_thickness=_positive_or_none(get("slice_thickness")),
                roi=_roi(get("roi")), myocardium_annotated=True if annotated is None else bool(annotated),
                group=None if get("group") is None else str(get("group")),
                source=None if get("source") is None else str(get("source")),
                num_slices=None if num is None else int(num),
            ))
        group.slices.sort(key=lambda s: s.slice_index)
        indices = [s.slice_index for s in group.slices]
        num = group.slices[0].num_slices
        group.complete = (
            group.slices[0].source not in PARTIAL_STACK_SOURCES
            and num is not None and len(indices) == num and len(set(indices)) == num
            and indices[-1] - indices[0] == num - 1
            and len({s.image.shape for s in group.slices}) == 1
        )
        groups.append(group)
    return groups


def select_source(ds, source: str, name: str = "dataset"):
    """The rows of ``ds`` whose ``source`` column is ``source``; :class:`InputError` listing the
    sources there are when none matches (or without a ``source`` column)."""
    if "source" not in ds.column_names:
        raise InputError(f"{name}: --source {source}: the dataset has no 'source' column")
    available = sorted(map(str, ds.unique("source")))
    if source not in available:
        raise InputError(f"{name}: --source {source}: no such source; the split has {available}")
    return ds.filter(lambda value: value == source, input_columns="source")


def load_eval_dataset(dataset_dir, split: str, name: Optional[str] = None, hf_id: Optional[str] = None,
                      limit: Optional[int] = None, source: Optional[str] = None) -> EvalDataset:
    """One split of a prepared dataset, grouped in stacks. ``source``: only its rows (default: all); it
    is then also the default ``name``."""
    ds = load_split(dataset_dir, split)
    if source is not None:
        ds = select_source(ds, source, f"--dataset-dir {dataset_dir} ({split})")
    label = name or source or getattr(ds.info, "dataset_name", None) or Path(dataset_dir).resolve().name
    groups = build_groups(ds, f"{label} ({split})", limit=limit)
    sources = sorted({s.source for g in groups for s in g.slices if s.source})
    return EvalDataset(name=label, split=split, path=str(Path(dataset_dir).resolve()),
                       source=", ".join(sources) if sources else str(Path(dataset_dir).resolve()),
                       hf_id=hf_id, groups=groups)
