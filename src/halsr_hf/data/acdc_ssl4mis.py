"""ACDC in the SSL4MIS HDF5 layout (``data/patientNNN_frameFF[_slice_K].h5`` + split lists).

- ``train.list`` / ``val.list`` / ``test.list`` name ``patientNNN_frameFF`` stacks (70/10/20
  patients): the official SSL4MIS patient-level split, used as train / validation / test.
- A stack is either a volume file ``patientNNN_frameFF.h5`` (``image`` float32 (Z, H, W),
  ``label`` uint8 (Z, H, W)) or slice files ``patientNNN_frameFF_slice_K.h5`` (K 1-based,
  ``image`` (H, W)); slice_index is 0-based (K - 1), num_slices = Z or the number of slice files.
- frame01 = ED, frame02 = ES. Intensities are per-volume min-max [0, 1] and stored as they are.
- **No spacing**: the preprocessing dropped it, so ``pixel_spacing`` and ``slice_thickness`` are null.
- ``group`` comes from the patient number (the ACDC training set is ordered by group, 20 each);
  height and weight are not in this layout (null).
- Labels: 1 RV, 2 MYO, 3 LV -> canonical by name (LV 1, MYO 2, RV 0 or 3 with ``keep_rv``).
"""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np

from ..errors import InputError
from .schema import ACDC_GROUPS, acdc_to_canonical, build_dataset_dict, make_row, parallel_map

SOURCE = "acdc-ssl4mis"
SPLIT_LISTS = {"train": "train.list", "validation": "val.list", "test": "test.list"}
_STACK = re.compile(r"^(patient\d+)_frame(\d+)$")
_SLICE = re.compile(r"^(patient\d+_frame\d+)_slice_(\d+)\.h5$")

LICENSE = "cc-by-nc-sa-4.0"
HOMEPAGE = "https://www.creatis.insa-lyon.fr/Challenge/acdc/"
CITATION = """@article{bernard2018acdc,
  title   = {Deep Learning Techniques for Automatic MRI Cardiac Multi-Structures Segmentation and Diagnosis: Is the Problem Solved?},
  author  = {Bernard, Olivier and Lalande, Alain and Zotti, Clement and others},
  journal = {IEEE Transactions on Medical Imaging},
  volume  = {37}, number = {11}, pages = {2514--2525}, year = {2018},
  doi     = {10.1109/TMI.2018.2837502}
}"""


def acdc_group(patient_id: str) -> str | None:
    """ACDC training-set group of ``patientNNN`` (1-100), None outside that range."""
    match = re.search(r"(\d+)$", patient_id)
    if match:
        number = int(match.group(1))
        for low, high, group in ACDC_GROUPS:
            if low <= number <= high:
                return group
    return None


def acdc_phase(frame: int) -> str:
    return {1: "ED", 2: "ES"}.get(frame, f"frame{frame:02d}")


def read_acdc_volume(h5_path) -> tuple[np.ndarray, np.ndarray]:
    """``(image float32, label uint8)`` of one SSL4MIS HDF5 file (volume (Z, H, W) or slice (H, W)),
    labels as stored (ACDC ids: 1 RV, 2 MYO, 3 LV). Raises :class:`InputError` naming the file."""
    path = Path(h5_path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("image", "label") if k not in f]
            if missing:
                raise InputError(f"{path}: HDF5 file has no {missing} dataset (found {sorted(f.keys())})")
            image = np.asarray(f["image"][()], dtype=np.float32)
            label = np.asarray(f["label"][()])
    except InputError:
        raise
    except Exception as error:  # h5py raises OSError, KeyError, ValueError...
        raise InputError(f"{path}: unreadable HDF5 file ({type(error).__name__}: {error})") from None
    if image.ndim not in (2, 3) or image.shape != label.shape:
        raise InputError(f"{path}: image shape {image.shape} and label shape {label.shape} differ or are not 2D/3D")
    if label.dtype.kind not in "iub":
        raise InputError(f"{path}: label dtype {label.dtype} is not an integer type")
    return image, label.astype(np.uint8) if label.dtype != np.uint8 else label


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise InputError(f"{path}: no such file (the SSL4MIS split list)")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    for name in names:
        if not _STACK.match(name):
            raise InputError(f"{path}: unexpected entry {name!r} (expected patientNNN_frameFF)")
    return names


def _convert_file(job: tuple) -> list[dict]:
    """One HDF5 file -> rows. job = (path, stack, slice_index or None, num_slices or None, keep_rv)."""
    path, stack, slice_index, num_slices, keep_rv = job
    patient, frame = _STACK.match(stack).groups()
    image, label = read_acdc_volume(path)
    common = dict(patient_id=patient, source=SOURCE, phase=acdc_phase(int(frame)), group=acdc_group(patient))
    if slice_index is not None:
        if image.ndim != 2:
            raise InputError(f"{path}: a slice file must hold a 2D image, got shape {image.shape}")
        images, labels, indices, total = [image], [label], [slice_index], num_slices
    else:
        if image.ndim != 3:
            raise InputError(f"{path}: a volume file must hold a 3D (Z, H, W) image, got shape {image.shape}")
        images, labels, indices, total = list(image), list(label), range(image.shape[0]), image.shape[0]
    mapped = acdc_to_canonical(np.stack(labels), keep_rv, str(path))
    return [
        make_row(img, lab, name=f"{path} slice {k}", slice_index=k, num_slices=total, **common)
        for img, lab, k in zip(images, mapped, indices)
    ]


def _jobs(source: Path, keep_rv: bool) -> dict[str, list[tuple]]:
    data = source / "data"
    if not data.is_dir():
        raise InputError(f"{data}: no such folder (expected the SSL4MIS layout: data/*.h5 and *.list)")
    slice_files: dict[str, list[tuple[int, Path]]] = {}
    for path in data.glob("*_slice_*.h5"):
        match = _SLICE.match(path.name)
        if match:
            slice_files.setdefault(match.group(1), []).append((int(match.group(2)), path))
    jobs: dict[str, list[tuple]] = {}
    for split, list_name in SPLIT_LISTS.items():
        jobs[split] = []
        for stack in _read_list(source / list_name):
            volume = data / f"{stack}.h5"
            if volume.is_file():
                jobs[split].append((volume, stack, None, None, keep_rv))
            elif stack in slice_files:
                files = sorted(slice_files[stack])
                numbers = [k for k, _ in files]
                if numbers != list(range(1, len(files) + 1)):
                    raise InputError(f"{data}: slice files of {stack} are not numbered 1..{len(files)} (found {numbers})")
                jobs[split] += [(path, stack, k - 1, len(files), keep_rv) for k, path in files]
            else:
                raise InputError(f"{volume}: no such file, and no {stack}_slice_K.h5 files ({list_name} lists {stack})")
    return jobs


def prepare_acdc_ssl4mis(source, *, keep_rv: bool = False, num_proc: int | None = None):
    """Convert ACDC in the SSL4MIS layout to a ``DatasetDict`` (train/validation/test from the
    layout's own lists). See the module docstring for what each column holds."""
    source = Path(source)
    jobs = _jobs(source, keep_rv)
    rows_by_split = {}
    for split, split_jobs in jobs.items():
        rows = parallel_map(_convert_file, split_jobs, num_proc, desc=f"acdc-ssl4mis {split}")
        rows_by_split[split] = [row for file_rows in rows for row in file_rows]
    return build_dataset_dict(
        rows_by_split, SOURCE, keep_rv,
        description="ACDC (Bernard et al. 2018) training set in the SSL4MIS HDF5 layout, as 2D short-axis "
        "slices; intensities min-max [0, 1] per volume; voxel spacing lost (null).",
        citation=CITATION, homepage=HOMEPAGE, license=LICENSE,
    )
