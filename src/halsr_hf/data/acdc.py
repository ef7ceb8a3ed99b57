"""ACDC in its original release layout.

``patientNNN/Info.cfg`` (``ED: 1``, ``ES: 12``, ``Group: DCM``, ``Height: 184.0``, ``Weight: 95.0``,
``NbFrame: 30``), ``patientNNN/patientNNN_frameFF.nii.gz`` and ``patientNNN_frameFF_gt.nii.gz``
(``.nii`` accepted too); ``patientNNN_4d.nii.gz`` is not needed (only the ED and ES frames
have labels). The patient folders may sit directly under ``source`` or one level deeper
(``training/``, ``testing/``).

- ED and ES frames come from Info.cfg; ``phase`` is ``ED``/``ES``.
- A NIfTI volume (X, Y, Z) gives slices ``data[:, :, k].T`` of shape (Y, X) (the orientation of the
  SSL4MIS arrays and of the inference pipeline); ``pixel_spacing`` = (zoom_y, zoom_x) mm,
  ``slice_thickness`` = zoom_z mm, from the header.
- Labels 1 RV, 2 MYO, 3 LV -> canonical by name (LV 1, MYO 2, RV 0 or 3 with ``keep_rv``).
- ``group``, ``height``, ``weight`` from Info.cfg.
- Split: seeded patient-level split with ``ratios`` (train, validation, test); ED and ES of a patient
  always share a split.
"""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import InputError
from .acdc_ssl4mis import CITATION, HOMEPAGE, LICENSE
from .schema import acdc_to_canonical, build_dataset_dict, make_row, parallel_map, split_patients

SOURCE = "acdc"
_PATIENT = re.compile(r"^patient\d+$")


def read_info_cfg(path) -> dict:
    """``Info.cfg`` -> ``{"ED": int, "ES": int, "Group": str, "Height": float, "Weight": float,
    "NbFrame": int}`` (the keys present); :class:`InputError` naming the file when ED/ES are
    missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    info: dict = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        if ":" not in line:
            raise InputError(f"{path}: line {number} is not 'Key: value': {line!r}")
        key, value = (part.strip() for part in line.split(":", 1))
        try:
            if key in ("ED", "ES", "NbFrame"):
                info[key] = int(float(value))
            elif key in ("Height", "Weight"):
                info[key] = float(value)
            else:
                info[key] = value
        except ValueError:
            raise InputError(f"{path}: line {number}: {key} is not a number: {value!r}") from None
    for key in ("ED", "ES"):
        if key not in info:
            raise InputError(f"{path}: no '{key}:' line (found keys {sorted(info)})")
        if info[key] < 1 or ("NbFrame" in info and info[key] > info["NbFrame"]):
            raise InputError(f"{path}: {key} frame {info[key]} outside 1..{info.get('NbFrame', '?')}")
    return info


def read_nifti(path) -> tuple[np.ndarray, tuple]:
    """(data, zooms) of a NIfTI file; :class:`InputError` naming the file when missing/unreadable."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        image = nib.load(str(path))
        data = np.asarray(image.dataobj)
    except Exception as error:  # nibabel raises ImageFileError, EOFError, zlib.error, OSError...
        raise InputError(f"{path}: unreadable NIfTI file ({type(error).__name__}: {error})") from None
    return data, tuple(float(z) for z in image.header.get_zooms())


def _find(folder: Path, stem: str) -> Path:
    for extension in (".nii.gz", ".nii"):
        if (folder / f"{stem}{extension}").is_file():
            return folder / f"{stem}{extension}"
    return folder / f"{stem}.nii.gz"


def _convert_patient(job: tuple) -> list[dict]:
    folder, keep_rv = job
    patient = folder.name
    info = read_info_cfg(folder / "Info.cfg")
    rows = []
    for phase in ("ED", "ES"):
        stem = f"{patient}_frame{info[phase]:02d}"
        image_path, label_path = _find(folder, stem), _find(folder, f"{stem}_gt")
        image, zooms = read_nifti(image_path)
        label, _ = read_nifti(label_path)
        if image.ndim == 4 and image.shape[3] == 1:
            image = image[..., 0]
        if label.ndim == 4 and label.shape[3] == 1:
            label = label[..., 0]
        if image.ndim != 3:
            raise InputError(f"{image_path}: expected a 3D (X, Y, Z) volume, got shape {image.shape}")
        if image.shape != label.shape:
            raise InputError(f"{label_path}: label shape {label.shape} differs from image shape {image.shape} ({image_path.name})")
        mapped = acdc_to_canonical(label, keep_rv, str(label_path))
        image = image.astype(np.float32)
        spacing = (zooms[1], zooms[0]) if len(zooms) >= 2 else None
        thickness = zooms[2] if len(zooms) >= 3 else None
        for k in range(image.shape[2]):
            rows.append(make_row(
                image[:, :, k].T, mapped[:, :, k].T, name=f"{image_path} slice {k}", patient_id=patient,
                source=SOURCE, phase=phase, slice_index=k, num_slices=image.shape[2], pixel_spacing=spacing,
                slice_thickness=thickness, group=info.get("Group"), height=info.get("Height"), weight=info.get("Weight"),
            ))
    return rows


def find_patients(source) -> list[Path]:
    """Patient folders (``patientNNN`` with an Info.cfg) under ``source`` or one level below."""
    source = Path(source)
    if not source.is_dir():
        raise InputError(f"{source}: no such folder")
    folders = [p.parent for p in list(source.glob("patient*/Info.cfg")) + list(source.glob("*/patient*/Info.cfg"))]
    folders = sorted({f for f in folders if _PATIENT.match(f.name)}, key=lambda f: f.name)
    names = [f.name for f in folders]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"{source}: patient folders found twice: {duplicates}")
    if not folders:
        raise InputError(f"{source}: no patientNNN/Info.cfg found (expected the ACDC release layout)")
    return folders


def prepare_acdc(source, *, keep_rv: bool = False, split_seed: int = 0, ratios=(0.7, 0.1, 0.2),
                 num_proc: int | None = None):
    """Convert ACDC in its original layout to a ``DatasetDict`` (seeded patient-level split)."""
    folders = find_patients(source)
    splits = split_patients([f.name for f in folders], ratios, split_seed)
    by_name = {f.name: f for f in folders}
    rows_by_split = {}
    for split, patients in splits.items():
        rows = parallel_map(_convert_patient, [(by_name[p], keep_rv) for p in patients], num_proc, desc=f"acdc {split}")
        rows_by_split[split] = [row for patient_rows in rows for row in patient_rows]
    return build_dataset_dict(
        rows_by_split, SOURCE, keep_rv,
        description="ACDC (Bernard et al. 2018) in its original NIfTI release layout, ED and ES frames as 2D "
        "short-axis slices; spacing from the NIfTI header.",
        citation=CITATION, homepage=HOMEPAGE, license=LICENSE,
    )
