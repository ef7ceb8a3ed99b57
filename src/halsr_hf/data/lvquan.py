"""LVQuan19 / LVQuan18 MATLAB files (per-frame mid-ventricular short-axis images + masks).

Published layouts (no real copy in this project; the field names are configurable):

- LVQuan19 training data: one ``patientN.mat`` per subject with ``image`` (H, W, 20 frames),
  ``endo`` and ``epi`` masks of the same shape and ``pix_spacing`` (mm, isotropic, scalar).
- LVQuan18 ``cardiac-dig.mat``: all 145 subjects in one file, ``images_LV`` (80, 80, 2900 =
  145 x 20 frames), ``endo_LV``, ``epi_LV``, ``pix_spa`` (145) and ``ratio_resize_inverse`` (145).
  The 80x80 images were resized from the original grid, so their spacing is taken as
  ``pix_spa * ratio_resize_inverse`` (pass ``fields={"resize_ratio": None}`` to use ``pix_spa``
  alone).

Both MATLAB v5 (``scipy.io.loadmat``) and v7.3 (HDF5, read with ``h5py``; axes are reversed
there and transposed back) are read. Arrays are MATLAB (H, W, N): frame t is ``[:, :, t]``.
Subjects are ``N / len(pixel_spacing)`` consecutive frames (a file with one spacing is one subject,
named after the file). ``endo`` = LV cavity, ``epi`` = the region inside the epicardium (or the
myocardium ring; both give the same labels): lv_cavity = endo, myocardium = epi and not endo.
Masks must be binary (0/1 or False/True). One slice per frame: ``phase`` = ``frameFF`` (1-based),
``slice_index`` 0, ``num_slices`` 1, ``slice_thickness`` null.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import scipy.io

from ..errors import InputError
from .schema import build_dataset_dict, make_row, parallel_map, split_patients

SOURCE = "lvquan"
#: canonical role -> candidate field names, first match wins; override with ``fields=``.
DEFAULT_FIELDS = {
    "image": ("image", "images_LV", "images"),
    "endo": ("endo", "endo_LV"),
    "epi": ("epi", "epi_LV"),
    "pixel_spacing": ("pix_spacing", "pix_spa", "pixel_spacing"),
    "resize_ratio": ("ratio_resize_inverse",),
}
OPTIONAL = ("resize_ratio",)
LICENSE = "other"
HOMEPAGE = "https://lvquan19.github.io/"
CITATION = """@article{xue2018full,
  title   = {Full left ventricle quantification via deep multitask relationships learning},
  author  = {Xue, Wufeng and Brahm, Gary and Pandey, Sachin and Leung, Stephanie and Li, Shuo},
  journal = {Medical Image Analysis},
  volume  = {43}, pages = {54--65}, year = {2018}
}
% LVQuan19 challenge (MICCAI 2019 STACOM): https://lvquan19.github.io/"""


def _resolve_fields(fields: dict | None) -> dict:
    resolved = {role: tuple(names) for role, names in DEFAULT_FIELDS.items()}
    for role, names in (fields or {}).items():
        if role not in DEFAULT_FIELDS:
            raise InputError(f"fields: unknown role {role!r} (roles: {sorted(DEFAULT_FIELDS)})")
        resolved[role] = () if names is None else ((names,) if isinstance(names, str) else tuple(names))
    return resolved


def read_mat(path) -> dict:
    """All top-level arrays of a MATLAB v5 or v7.3 file, in MATLAB axis order."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        if h5py.is_hdf5(str(path)):
            with h5py.File(path, "r") as f:
                return {k: np.asarray(f[k][()]).T for k in f.keys()
                        if not k.startswith("#") and isinstance(f[k], h5py.Dataset)}
        data = scipy.io.loadmat(str(path))
    except Exception as error:  # scipy/h5py raise ValueError, OSError, TypeError, NotImplementedError...
        raise InputError(f"{path}: unreadable MATLAB file ({type(error).__name__}: {error})") from None
    return {k: v for k, v in data.items() if not k.startswith("__")}


def _pick(data: dict, role: str, names: tuple, path: Path):
    for name in names:
        if name in data:
            return np.asarray(data[name])
    if role in OPTIONAL:
        return None
    raise InputError(
        f"{path}: no {role} field (looked for {list(names)}; the file has {sorted(data)}); "
        f"pass fields={{'{role}': 'NAME'}} (CLI: --field {role}=NAME)"
    )


def _binary(mask: np.ndarray, path: Path, role: str) -> np.ndarray:
    values = np.unique(mask)
    if not np.all(np.isin(values, (0, 1))):
        raise InputError(f"{path}: {role} mask has unexpected values {values[:10].tolist()} (expected 0/1)")
    return mask.astype(bool)


def _convert_file(job: tuple) -> list[dict]:
    path, fields = job
    data = read_mat(path)
    image = _pick(data, "image", fields["image"], path)
    endo = _pick(data, "endo", fields["endo"], path)
    epi = _pick(data, "epi", fields["epi"], path)
    spacing = _pick(data, "pixel_spacing", fields["pixel_spacing"], path)
    ratio = _pick(data, "resize_ratio", fields["resize_ratio"], path) if fields["resize_ratio"] else None
    if image.ndim == 2:
        image, endo, epi = image[..., None], endo[..., None] if endo.ndim == 2 else endo, epi[..., None] if epi.ndim == 2 else epi
    if image.ndim != 3:
        raise InputError(f"{path}: image field has shape {image.shape}, expected (H, W, frames)")
    for role, mask in (("endo", endo), ("epi", epi)):
        if mask.shape != image.shape:
            raise InputError(f"{path}: {role} mask shape {mask.shape} differs from image shape {image.shape}")
    endo, epi = _binary(endo, path, "endo"), _binary(epi, path, "epi")
    spacing = np.asarray(spacing, dtype=np.float64).ravel()
    if ratio is not None:
        ratio = np.asarray(ratio, dtype=np.float64).ravel()
        if ratio.size != spacing.size:
            raise InputError(f"{path}: resize ratio has {ratio.size} values but pixel spacing has {spacing.size}")
        spacing = spacing * ratio
    frames = image.shape[2]
    if spacing.size == 0 or frames % spacing.size:
        raise InputError(f"{path}: {frames} frames cannot be split into {spacing.size} subjects (one pixel spacing each)")
    per_subject = frames // spacing.size
    rows = []
    for t in range(frames):
        subject = t // per_subject
        patient = path.stem if spacing.size == 1 else f"{path.stem}_subject{subject + 1:03d}"
        label = np.zeros(image.shape[:2], dtype=np.uint8)
        label[epi[:, :, t] & ~endo[:, :, t]] = 2
        label[endo[:, :, t]] = 1
        s = float(spacing[subject])
        rows.append(make_row(
            image[:, :, t].astype(np.float32), label, name=f"{path} frame {t + 1}", patient_id=patient, source=SOURCE,
            phase=f"frame{t % per_subject + 1:02d}", slice_index=0, num_slices=1, pixel_spacing=(s, s),
        ))
    return rows


def prepare_lvquan(source, *, fields: dict | None = None, split_seed: int = 0, ratios=(0.7, 0.1, 0.2),
                   num_proc: int | None = None):
    """Convert LVQuan19 (a folder of ``*.mat``) or LVQuan18 (``cardiac-dig.mat``) to a
    ``DatasetDict`` with a seeded patient-level split. ``fields`` maps a role (``image``, ``endo``,
    ``epi``, ``pixel_spacing``, ``resize_ratio``) to the field name (or names to try) in the files."""
    source = Path(source)
    resolved = _resolve_fields(fields)
    if source.is_dir():
        files = sorted(source.glob("*.mat"))
        if not files:
            raise InputError(f"{source}: no .mat files")
    elif source.exists():
        files = [source]
    else:
        raise InputError(f"{source}: no such file or folder")
    rows = [row for file_rows in parallel_map(_convert_file, [(f, resolved) for f in files], num_proc, desc="lvquan")
            for row in file_rows]
    splits = split_patients([row["patient_id"] for row in rows], ratios, split_seed)
    assignment = {p: split for split, ids in splits.items() for p in ids}
    rows_by_split = {split: [] for split in splits}
    for row in rows:
        rows_by_split[assignment[row["patient_id"]]].append(row)
    return build_dataset_dict(
        rows_by_split, SOURCE,
        description="LVQuan (Xue et al. 2018; LVQuan19 challenge) mid-ventricular short-axis cine frames "
        "with endocardium/epicardium masks and pixel spacing.",
        citation=CITATION, homepage=HOMEPAGE, license=LICENSE,
    )
