"""The canonical slice schema shared by every source, and the helpers that build it.

One row = one 2D short-axis slice:

=====================  ==========================================  ======================================
column                 feature                                     meaning
=====================  ==========================================  ======================================
image                  ``Image()``: float32 TIFF (mode ``F``,      the source intensities as they are
                       lossless LZW)                               (no 8-bit quantisation, bit-exact)
label                  ``Image()``: uint8 PNG (mode ``L``)         canonical ids, see :data:`LABEL_NAMES`
patient_id             string                                      the source's patient id
source                 string                                      acdc / acdc-ssl4mis / sunnybrook / lvquan /
                                                                   myops2020-cine / myops2020-lge / emidec-lge
phase                  string                                      ``ED``, ``ES``, ``frameNN`` or ``unknown``
slice_index            int32                                       0-based position in its stack
num_slices             int32                                       slices of that stack (in the source)
pixel_spacing          [float64, float64] or null                  (row, col) in mm; null when unknown
slice_thickness        float64 or null                             mm; null when unknown
roi                    [int32] * 4 or null                         LV box (x_min, y_min, x_max, y_max),
                                                                   inclusive pixel indices; null: no LV
has_lv                 bool                                        the label has LV cavity or myocardium
myocardium_annotated   bool                                        False: do not train/score myocardium
group                  string or null                              diagnosis group (ACDC; EMIDEC NOR/MINF)
height, weight         float32 or null                             ACDC height (cm) and weight (kg)
=====================  ==========================================  ======================================

Why ``Image()`` and not ``Array2D``: in ``datasets`` 5.2 ``Array2D`` supports a variable size on the
first axis only (``shape=(None, None)`` raises), and slices differ in both H and W. Nested lists
(``List(List(float32))``) are lossless too, but ``with_format("numpy")`` turns every integer
array into int64 and reads them 8x slower. With ``Image()``, ``ds.with_format("numpy")[i]``
gives ``image`` a float32 (H, W) array and ``label`` a uint8 (H, W) array, bit for bit what was
stored. ``with_format("torch")`` follows the ``datasets`` image convention and adds a channel axis:
float32 / uint8 tensors of shape (1, H, W) (``[0]`` gives (H, W)). Without a format, both are
PIL images (modes ``F`` and ``L``).
"""

from __future__ import annotations

import io
import json
from concurrent.futures import ProcessPoolExecutor
from typing import Iterable, Sequence

import numpy as np
from datasets import Dataset, DatasetDict, DatasetInfo, Features, Image, List, NamedSplit, Value
from PIL import Image as PILImage
from tqdm.auto import tqdm

from ..errors import InputError

#: Canonical label names, index = id in ``label``.
LABEL_NAMES = ["background", "lv_cavity", "myocardium"]
#: With ``keep_rv=True`` (sources that have it), id 3 is the RV cavity.
LABEL_NAMES_RV = LABEL_NAMES + ["rv_cavity"]
#: ACDC's label ids (original release and SSL4MIS layout): 1 RV, 2 myocardium, 3 LV cavity.
ACDC_LABELS = {0: "background", 1: "rv_cavity", 2: "myocardium", 3: "lv_cavity"}

#: Lossless TIFF compression of ``image`` (measured on ACDC slices: none 2.6 ms / 244 kB,
#: LZW 11 ms / 112 kB, deflate 29 ms / 79 kB per 256x256 slice).
TIFF_COMPRESSION = "tiff_lzw"

COLUMNS = [
    "image", "label", "patient_id", "source", "phase", "slice_index", "num_slices", "pixel_spacing",
    "slice_thickness", "roi", "has_lv", "myocardium_annotated", "group", "height", "weight",
]

#: ACDC training-set diagnosis groups by patient number (the release orders its 100 training
#: patients by group, 20 each).
ACDC_GROUPS = [(1, 20, "DCM"), (21, 40, "HCM"), (41, 60, "MINF"), (61, 80, "NOR"), (81, 100, "RV")]


def label_names(keep_rv: bool = False) -> list[str]:
    return list(LABEL_NAMES_RV if keep_rv else LABEL_NAMES)


def features(keep_rv: bool = False):
    """The :class:`datasets.Features` of every converted dataset (``keep_rv`` changes only the label
    names written to the dataset info, not the features)."""
    return Features(
        {
            "image": Image(),
            "label": Image(),
            "patient_id": Value("string"),
            "source": Value("string"),
            "phase": Value("string"),
            "slice_index": Value("int32"),
            "num_slices": Value("int32"),
            "pixel_spacing": List(Value("float64"), length=2),
            "slice_thickness": Value("float64"),
            "roi": List(Value("int32"), length=4),
            "has_lv": Value("bool"),
            "myocardium_annotated": Value("bool"),
            "group": Value("string"),
            "height": Value("float32"),
            "weight": Value("float32"),
        }
    )


def dataset_info(source: str, keep_rv: bool = False, description: str = "", citation: str = "",
                 homepage: str = "", license: str = ""):
    """A :class:`datasets.DatasetInfo` whose description ends with the label names as JSON
    (``label_names: [...]``, read back by :func:`label_names_from_info`)."""
    names = label_names(keep_rv)
    text = (description.strip() + "\n\n" if description else "") + "label_names: " + json.dumps(names)
    return DatasetInfo(
        description=text, citation=citation, homepage=homepage, license=license,
        features=features(keep_rv), dataset_name=f"halsr-{source}",
    )


def label_names_from_info(info) -> list[str]:
    """The label names stored in a converted dataset's info (``ds.info``)."""
    for line in (info.description or "").splitlines()[::-1]:
        if line.startswith("label_names: "):
            return json.loads(line[len("label_names: "):])
    raise InputError("dataset info has no 'label_names:' line: not a halsr-hf converted dataset")


def bbox_from_label(label) -> list[int] | None:
    """``[x_min, y_min, x_max, y_max]`` (inclusive pixel indices, x = column) of the LV (ids 1 and 2)
    in a 2D label (numpy array or CPU tensor), or None when it has no LV. The one definition of
    the LV box: the dataset's ``roi`` column, the training crops and targets, the evaluation's
    reference box."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise InputError(f"bbox_from_label: expected a 2D label, got shape {label.shape}")
    mask = (label == 1) | (label == 2)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])]


def remap_labels(label: np.ndarray, source_names: dict, keep_rv: bool, name: str) -> np.ndarray:
    """Map a source label array to canonical ids by *name*.

    ``source_names`` maps each source value to a canonical name (``lv_cavity``, ``myocardium``,
    ``rv_cavity`` or ``background``); ``rv_cavity`` becomes 3 with ``keep_rv`` and 0 otherwise.
    A value not in ``source_names`` raises :class:`InputError` naming ``name`` (the file).
    """
    canonical = {n: i for i, n in enumerate(LABEL_NAMES_RV)}
    label = np.asarray(label)
    if label.dtype.kind == "f":
        if not np.all(np.isfinite(label)) or not np.all(label == np.round(label)):
            raise InputError(f"{name}: label mask has non-integer values")
    values = np.unique(label)
    unexpected = [v.item() for v in values if v.item() not in source_names]
    if unexpected:
        raise InputError(
            f"{name}: unexpected label values {unexpected} (expected {sorted(source_names)}: "
            + ", ".join(f"{k} {v}" for k, v in sorted(source_names.items())) + ")"
        )
    lut_in, lut_out = [], []
    for value, target in source_names.items():
        if target == "rv_cavity" and not keep_rv:
            target = "background"
        lut_in.append(value)
        lut_out.append(canonical[target])
    out = np.zeros(label.shape, dtype=np.uint8)
    for value, target in zip(lut_in, lut_out):
        if target:
            out[label == value] = target
    return out


def acdc_to_canonical(label, keep_rv: bool = False, name: str = "ACDC label") -> np.ndarray:
    """ACDC ids (1 RV, 2 myocardium, 3 LV cavity) to canonical ids (1 lv_cavity, 2 myocardium; RV
    becomes background, or 3 with ``keep_rv``), by name (:func:`remap_labels`)."""
    return remap_labels(label, ACDC_LABELS, keep_rv, name)


def encode_image(image: np.ndarray) -> dict:
    """float32 (H, W) -> ``{"bytes": TIFF, "path": None}`` (mode F, lossless LZW: on ACDC slices
    about 2.2x smaller than raw, 3x faster to write than deflate)."""
    image = np.ascontiguousarray(image, dtype=np.float32)
    buffer = io.BytesIO()
    try:
        PILImage.fromarray(image).save(buffer, format="TIFF", compression=TIFF_COMPRESSION)
    except (OSError, TypeError, ValueError):  # Pillow built without libtiff: uncompressed, still exact
        buffer = io.BytesIO()
        PILImage.fromarray(image).save(buffer, format="TIFF")
    return {"bytes": buffer.getvalue(), "path": None}


def encode_label(label: np.ndarray) -> dict:
    """uint8 (H, W) -> ``{"bytes": PNG, "path": None}`` (mode L)."""
    buffer = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(label, dtype=np.uint8)).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def make_row(image, label, *, name: str, patient_id: str, source: str, phase: str, slice_index: int,
             num_slices: int, pixel_spacing=None, slice_thickness=None, myocardium_annotated: bool = True,
             roi_label=None, group=None, height=None, weight=None) -> dict:
    """One canonical row (image/label encoded). ``label`` must already hold canonical ids.
    ``roi_label``: the label the ROI is derived from when it differs from ``label`` (a slice whose
    myocardium is unreliable: the box comes from its reliable part)."""
    image = np.asarray(image)
    label = np.asarray(label)
    if image.ndim != 2:
        raise InputError(f"{name}: expected a 2D image slice, got shape {image.shape}")
    if image.shape != label.shape:
        raise InputError(f"{name}: image shape {image.shape} and label shape {label.shape} differ")
    if not np.all(np.isfinite(image)):
        raise InputError(f"{name}: image has NaN or infinite values")
    roi = bbox_from_label(label if roi_label is None else roi_label)
    spacing = None
    if pixel_spacing is not None:
        spacing = [float(v) for v in pixel_spacing]
        if len(spacing) != 2 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
            raise InputError(f"{name}: invalid pixel spacing {pixel_spacing}")
    if slice_thickness is not None:
        slice_thickness = float(slice_thickness)
        if not np.isfinite(slice_thickness) or slice_thickness <= 0:
            slice_thickness = None
    return {
        "image": encode_image(image),
        "label": encode_label(label),
        "patient_id": str(patient_id),
        "source": source,
        "phase": phase,
        "slice_index": int(slice_index),
        "num_slices": int(num_slices),
        "pixel_spacing": spacing,
        "slice_thickness": slice_thickness,
        "roi": roi,
        "has_lv": bool(np.any((label == 1) | (label == 2))),
        "myocardium_annotated": bool(myocardium_annotated),
        "group": group,
        "height": None if height is None else float(height),
        "weight": None if weight is None else float(weight),
    }


def check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    try:
        values = tuple(float(r) for r in ratios)
    except (TypeError, ValueError):
        raise InputError(f"ratios: expected three numbers (train, validation, test), got {ratios!r}") from None
    if len(values) != 3 or min(values) < 0 or not np.isclose(sum(values), 1.0, atol=1e-6):
        raise InputError(f"ratios: expected three non-negative numbers summing to 1 (train, validation, test), got {ratios!r}")
    return values


def split_patients(patient_ids: Iterable[str], ratios=(0.7, 0.1, 0.2), seed: int = 0) -> dict[str, list[str]]:
    """Patient-level split: sorted unique ids shuffled with ``seed``, then cut by ``ratios``
    (train, validation, test; rounded, test gets the rest). Empty splits are left out."""
    ratios = check_ratios(ratios)
    ids = sorted(set(patient_ids))
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    n_train = int(round(ratios[0] * len(ids)))
    n_val = min(int(round(ratios[1] * len(ids))), len(ids) - n_train)
    if ratios[2] == 0:
        n_val = len(ids) - n_train
    parts = {"train": order[:n_train], "validation": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
    return {k: sorted(v) for k, v in parts.items() if v}


def describe_split(assignment: dict, seed: int, ratios, note: str = "over every patient found") -> str:
    """How a seeded patient split was made and the patients of each split, one line per split (for a
    dataset's description, hence its card): enough to check or recompute it."""
    ratios = tuple(round(float(r), 6) for r in ratios)
    lines = [f"Patient-level split: split_patients(seed={seed}, ratios={ratios}) {note}."]
    lines += [f"{split} ({len(ids)} patients): {', '.join(ids)}" for split, ids in assignment.items() if ids]
    return "\n".join(lines)


def build_dataset_dict(rows_by_split: dict, source: str, keep_rv: bool = False, description: str = "",
                       citation: str = "", homepage: str = "", license: str = ""):
    """``{"train": [row, ...], ...}`` -> :class:`datasets.DatasetDict` with the canonical features.
    Rows are sorted by (patient_id, phase, source, slice_index) for a deterministic order (a source
    with several sequences per patient, such as MyoPS, keeps each sequence's stack together)."""
    # a patient in two splits would leak: refuse, whatever the caller did
    seen: dict[str, str] = {}
    for split, rows in rows_by_split.items():
        for row in rows:
            other = seen.setdefault(row["patient_id"], split)
            if other != split:
                raise InputError(f"patient {row['patient_id']} is in both {other} and {split}")
    out = DatasetDict()
    feats = features(keep_rv)
    for split, rows in rows_by_split.items():
        if not rows:
            continue
        rows = sorted(rows, key=lambda r: (r["patient_id"], r["phase"], r["source"], r["slice_index"]))
        info = dataset_info(source, keep_rv, description, citation, homepage, license)
        columns = {name: [row[name] for row in rows] for name in COLUMNS}
        out[split] = Dataset.from_dict(columns, features=feats, info=info, split=NamedSplit(split))
    return out


def decode_row(row: dict) -> tuple[np.ndarray, np.ndarray]:
    """(image float32 (H, W), label uint8 (H, W)) of a row read without a format (PIL images)."""
    return np.asarray(row["image"], dtype=np.float32), np.asarray(row["label"], dtype=np.uint8)


def parallel_map(function, items: list, num_proc: int | None = None, desc: str = "") -> list:
    """``[function(item) for item in items]`` with a progress bar, in ``num_proc`` processes when
    ``num_proc > 1`` (``function`` must be a module-level function). Order is kept."""
    if not num_proc or num_proc <= 1 or len(items) < 2:
        return [function(item) for item in tqdm(items, desc=desc, unit="file")]
    chunksize = max(1, len(items) // (num_proc * 8))
    with ProcessPoolExecutor(max_workers=num_proc) as pool:
        return list(tqdm(pool.map(function, items, chunksize=chunksize), total=len(items), desc=desc, unit="file"))
