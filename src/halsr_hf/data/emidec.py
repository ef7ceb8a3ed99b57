"""EMIDEC (the challenge's training set, late gadolinium enhancement) as 8-bit 256x256 PNG slices.

Layout (as in ``../shared/data/emidec``, the public PNG copy of the 100 EMIDEC training patients):
``train/Case_{N|P}NNN_sliceKKK.png`` (85 patients) with the mask of the same name in
``trainannot/``, and ``val/`` + ``valannot/`` (15 patients).

- ``image``: the PNG read by :func:`halsr_hf.image_io.read_image_file`, the pipeline's reader (8-bit
  values as float32). The mask PNG must be single-channel (mode ``L``/``P``/``I``) and of the image's
  shape (:class:`InputError` naming both files otherwise).
- Labels, by name (:data:`EMIDEC_LABELS` -> :data:`EMIDEC_TO_CANONICAL`, :func:`schema.remap_labels`):
  1 LV cavity -> 1; 2 normal myocardium, 3 infarct, 4 microvascular obstruction -> 2 (myocardium).
  Any other value is an :class:`InputError` naming the mask file.
- **No spacing**: the PNG conversion (resized to 256x256) lost it; ``pixel_spacing`` and
  ``slice_thickness`` are null, report distances in pixels.
- ``source`` is ``emidec-lge``; ``phase`` is ``unknown`` (one late-enhancement acquisition, no
  cine phase). The slices of one patient form one stack: ``slice_index`` = KKK and ``num_slices`` =
  the largest KKK + 1 (the copy numbers every patient's slices 0..n-1 without gaps, and each of its
  708 slices shows the LV: stacks are treated as complete, scored in 3D, in pixels).
- ``group``: ``NOR`` for ``Case_N...`` (normal) and ``MINF`` for ``Case_P...`` (myocardial infarction),
  from the case name as the EMIDEC release defines it; the ACDC group names.
- Splits, by patient: the copy's ``val/`` becomes ``test`` (15 patients, all ``Case_N`` in the copy
  at ``../shared/data``: a test of normal hearts only); from ``train/`` a seeded ``validation`` of ``num_validation`` patients
  (default 10, :func:`schema.split_patients`), the rest ``train``. The seed and the patients of each
  split are written to the dataset description (and so to its card).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import InputError
from ..image_io import read_image_file
from .schema import build_dataset_dict, describe_split, make_row, parallel_map, remap_labels, split_patients

SOURCE = "emidec"
ROW_SOURCE = "emidec-lge"
#: folder of images, folder of masks, split written
FOLDERS = {"train": ("train", "trainannot"), "test": ("val", "valannot")}
#: EMIDEC mask values and their names
EMIDEC_LABELS = {0: "background", 1: "lv_cavity", 2: "normal_myocardium", 3: "infarct",
                 4: "microvascular_obstruction"}
#: EMIDEC label name -> canonical name: the LV myocardium is normal myocardium + infarct + MVO
EMIDEC_TO_CANONICAL = {"background": "background", "lv_cavity": "lv_cavity", "normal_myocardium": "myocardium",
                       "infarct": "myocardium", "microvascular_obstruction": "myocardium"}
GROUPS = {"N": "NOR", "P": "MINF"}
NUM_VALIDATION = 10

LICENSE = "other"
HOMEPAGE = "http://emidec.com/"
CITATION = """@article{lalande2020emidec,
  title   = {Emidec: A Database Usable for the Automatic Evaluation of Myocardial Infarction from Delayed-Enhancement Cardiac MRI},
  author  = {Lalande, Alain and Chen, Zhihao and Decourselle, Thomas and Qayyum, Abdul and Pommier, Thibaut and others},
  journal = {Data},
  volume  = {5}, number = {4}, pages = {89}, year = {2020}
}"""
_SLICE = re.compile(r"^(Case_([NP])\d+)_slice(\d+)\.png$")


def emidec_to_canonical(label, name: str = "EMIDEC mask") -> np.ndarray:
    """EMIDEC mask values to canonical ids, by name: LV cavity 1; normal myocardium, infarct and
    microvascular obstruction 2. Unknown values raise :class:`InputError` naming ``name``."""
    values = {value: EMIDEC_TO_CANONICAL[label_name] for value, label_name in EMIDEC_LABELS.items()}
    return remap_labels(label, values, False, name)


def read_mask(path) -> np.ndarray:
    """A single-channel mask PNG as its integer values; :class:`InputError` naming the file when it is
    missing, unreadable or not single-channel."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file (the mask of {path.name})")
    try:
        with Image.open(path) as image:
            mode = image.mode
            array = np.asarray(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise InputError(f"{path}: unreadable or truncated mask PNG ({error})") from None
    if mode not in ("L", "P", "I", "I;16") or array.ndim != 2:
        raise InputError(f"{path}: expected a single-channel mask of label values, got mode {mode} shape {array.shape}")
    return array


def _convert_slice(job: tuple) -> dict:
    image_path, mask_path = job
    image = read_image_file(Path(image_path)).slices[0]
    mask = read_mask(mask_path)
    if mask.shape != image.shape:
        raise InputError(f"{mask_path}: mask shape {mask.shape} differs from the shape {image.shape} of its image {image_path}")
    return {"image": image, "label": emidec_to_canonical(mask, str(mask_path)), "name": str(image_path)}


def _slices(source: Path, images: str, masks: str) -> list[tuple]:
    """(patient, letter, k, image path, mask path) of one folder pair, sorted."""
    folder = source / images
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder (expected the EMIDEC PNG layout: train/, trainannot/, val/, valannot/)")
    found = []
    for path in sorted(folder.glob("*.png")):
        match = _SLICE.match(path.name)
        if not match:
            raise InputError(f"{path}: unexpected file name (expected Case_{{N|P}}NNN_sliceKKK.png)")
        found.append((match.group(1), match.group(2), int(match.group(3)), path, source / masks / path.name))
    if not found:
        raise InputError(f"{folder}: no Case_*_slice*.png files")
    return found


def _assign(found: dict, num_validation: int, split_seed: int) -> tuple[dict, tuple]:
    train_patients = sorted({item[0] for item in found["train"]})
    n = len(train_patients)
    if not 0 <= num_validation < n:
        raise InputError(f"num_validation: expected 0 to {n - 1} patients (train/ has {n}), got {num_validation}")
    ratios = ((n - num_validation) / n, num_validation / n, 0.0)
    parts = split_patients(train_patients, ratios, split_seed)
    test = sorted({item[0] for item in found["test"]})
    overlap = sorted(set(test) & set(train_patients))
    if overlap:
        raise InputError(f"{FOLDERS['train'][0]}/ and {FOLDERS['test'][0]}/ share patients {overlap}: not a patient-level split")
    return {"train": parts.get("train", []), "validation": parts.get("validation", []), "test": test}, ratios


def emidec_splits(source, num_validation: int = NUM_VALIDATION, split_seed: int = 0) -> dict[str, list[str]]:
    """``{split: [Case_XNNN, ...]}``: test = the patients of ``val/``; validation = a seeded draw of
    ``num_validation`` patients of ``train/``; train = the others (what :func:`prepare_emidec` uses;
    it lists files, reads no image)."""
    source = Path(source)
    return _assign({split: _slices(source, *folders) for split, folders in FOLDERS.items()}, num_validation, split_seed)[0]


def prepare_emidec(source, *, num_validation: int = NUM_VALIDATION, split_seed: int = 0, num_proc: int | None = None):
    """Convert the EMIDEC PNG layout to a ``DatasetDict`` (train/validation from ``train/``, test =
    ``val/``). See the module docstring for what each column holds."""
    source = Path(source)
    found = {split: _slices(source, *folders) for split, folders in FOLDERS.items()}
    assignment, ratios = _assign(found, num_validation, split_seed)
    split_of = {p: split for split, ids in assignment.items() for p in ids}
    items = [item for split in FOLDERS for item in found[split]]
    converted = parallel_map(_convert_slice, [(item[3], item[4]) for item in items], num_proc, desc="emidec")
    num_slices: dict[str, int] = {}
    for patient, _, k, _, _ in items:
        num_slices[patient] = max(num_slices.get(patient, 0), k + 1)
    rows_by_split: dict[str, list] = {split: [] for split in assignment if assignment[split]}
    for (patient, letter, k, _, _), item in zip(items, converted):
        rows_by_split[split_of[patient]].append(make_row(
            item["image"], item["label"], name=item["name"], patient_id=patient, source=ROW_SOURCE, phase="unknown",
            slice_index=k, num_slices=num_slices[patient], group=GROUPS[letter],
        ))
    letters = [_SLICE.match(f"{p}_slice0.png").group(2) for p in assignment["test"]]
    test_groups = ", ".join(f"{letters.count(letter)} {group}" for letter, group in GROUPS.items())
    return build_dataset_dict(
        rows_by_split, SOURCE,
        description="EMIDEC training set (Lalande et al. 2020), late gadolinium enhancement, as the public 8-bit "
        "256x256 PNG copy: 2D short-axis slices; pixel spacing lost (null); labels LV cavity, myocardium = normal "
        "+ infarct + microvascular obstruction. test = the copy's val/ folder "
        f"({test_groups}); "
        "validation = a seeded patient-level draw from its train/ folder.\n"
        + describe_split(assignment, split_seed, ratios, note="over the train/ patients; test is val/"),
        citation=CITATION, homepage=HOMEPAGE, license=LICENSE,
    )
