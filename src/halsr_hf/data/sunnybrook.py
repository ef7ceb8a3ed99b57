"""Sunnybrook Cardiac Data (DICOM + manual contour polygons).

Layout (as in ``../shared/data/sunnybrook``): ``link.csv`` (``patient_id,original_id``: DICOM folder
``SCD0000x01`` -> contour folder ``SC-HF-I-x``), ``dicoms/SCD0000x01/N.dcm``,
``contourfiles/SC-HF-I-x/i-contours/IM-0001-NNNN-icontour-manual.txt`` (endocardium) and
``o-contours/...-ocontour-manual.txt`` (epicardium); one ``x y`` pixel pair per line
(x = column, y = row), NNNN = N zero-padded.

- Contour points are **one-based**: pixel (row r, column c) of the DICOM is the point (c + 1, r + 1).
  We subtract :data:`CONTOUR_ORIGIN` (1) when reading. Evidence, independent of any model: the
  smoothed image's gradient magnitude sampled along the 96 endocardial contours is highest with
  the points moved by (-1, -1) pixels (2.36x the image's mean gradient, against 2.10x unmoved;
  half-pixel moves score lower), and an ACDC-trained model's LV masks sit (-0.97, -1.06) pixels
  (row, column) from the unmoved contours' masks on Sunnybrook but (-0.20, -0.06) from the labels
  on ACDC.
- One row per endocardium contour (the annotated slices); its DICOM must exist.
- Polygons are rasterised with PIL ``ImageDraw.polygon`` (fill and outline):
  lv_cavity = inside endo; myocardium = inside epi and outside endo.
- Slices with only an endocardium contour get the cavity label and ``myocardium_annotated=False``
  (do not train/score myocardium on them). Patients in ``unreliable_epicardium`` (default
  SCD0000501, whose epicardium contours are shifted and do not enclose the endocardium) keep the
  myocardium label as drawn, but with ``myocardium_annotated=False``, and their ``roi`` comes from
  the cavity alone.
- ``image``, ``pixel_spacing``, ``slice_thickness``: as read by
  :func:`halsr_hf.image_io.read_dicom_file` (the pipeline's reader): the DICOM values as float32
  after RescaleSlope/Intercept, PixelSpacing, SpacingBetweenSlices else SliceThickness (equal in
  the Sunnybrook files).
- ``phase``: ``frameFF`` = (InstanceNumber - 1) mod CardiacNumberOfImages + 1 (the cine frame;
  Sunnybrook does not say which of its two contoured frames is ED), ``unknown`` without those tags.
  ``slice_index``/``num_slices`` count the *annotated* slices of that patient and frame, in
  InstanceNumber order.
- Split: by default every patient is in ``test`` (5 patients: a cross-dataset test set); pass
  ``ratios=(train, validation, test)`` for a seeded patient-level split.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..errors import InputError
from ..image_io import read_dicom_file
from .schema import build_dataset_dict, make_row, parallel_map, split_patients

SOURCE = "sunnybrook"
UNRELIABLE_EPICARDIUM = ("SCD0000501",)
LICENSE = "cc0-1.0"
HOMEPAGE = "https://www.cardiacatlas.org/sunnybrook-cardiac-data/"
CITATION = """@article{radau2009sunnybrook,
  title   = {Evaluation Framework for Algorithms Segmenting Short Axis Cardiac MRI},
  author  = {Radau, Perry and Lu, Yingli and Connelly, Kim and Paul, Gideon and Dick, Alexander J. and Wright, Graham A.},
  journal = {The MIDAS Journal - Cardiac MR Left Ventricle Segmentation Challenge},
  year    = {2009}
}"""
#: Origin of the contour files' pixel coordinates (one-based; see the module docstring).
CONTOUR_ORIGIN = 1.0
_CONTOUR = re.compile(r"^IM-\d+-(\d+)-([io])contour-manual\.txt$")


def read_contour(path) -> np.ndarray:
    """(N, 2) float array of ``x y`` points in zero-based pixel coordinates (the file's one-based
    values minus :data:`CONTOUR_ORIGIN`); :class:`InputError` naming the file when malformed."""
    path = Path(path)
    try:
        points = [tuple(float(v) for v in line.split()) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: unreadable contour file ({error})") from None
    if len(points) < 3 or any(len(p) != 2 for p in points):
        raise InputError(f"{path}: expected at least 3 lines of 'x y' pixel coordinates")
    return np.asarray(points, dtype=np.float64) - CONTOUR_ORIGIN


def rasterize(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean (H, W) mask of the polygon (x = column, y = row), filled with its outline."""
    canvas = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in points], fill=1, outline=1)
    return np.asarray(canvas, dtype=bool)


def _read_links(source: Path) -> list[tuple[str, str]]:
    path = source / "link.csv"
    if not path.is_file():
        raise InputError(f"{path}: no such file (maps DICOM folders to contour folders)")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    links = [(r[0].strip(), r[1].strip()) for r in rows[1:] if len(r) >= 2 and r[0].strip()]
    if not links:
        raise InputError(f"{path}: no 'patient_id,original_id' rows")
    return links


def _convert_slice(job: tuple) -> dict:
    patient, dicom_path, endo_path, epi_path, unreliable = job
    loaded = read_dicom_file(Path(dicom_path))
    if loaded.is_volume:
        raise InputError(f"{dicom_path}: expected a single-frame DICOM slice, got {len(loaded.slices)} frames")
    image = loaded.slices[0]
    endo = rasterize(read_contour(endo_path), image.shape)
    label = np.zeros(image.shape, dtype=np.uint8)
    annotated = epi_path is not None and not unreliable
    roi_label = None
    if epi_path is not None:
        epi = rasterize(read_contour(epi_path), image.shape)
        label[epi & ~endo] = 2
        if unreliable:
            roi_label = endo.astype(np.uint8)
    label[endo] = 1
    frames, number = loaded.extra["CardiacNumberOfImages"], loaded.extra["InstanceNumber"]
    phase = f"frame{(number - 1) % frames + 1:02d}" if frames and number else "unknown"
    return {
        "image": image, "label": label, "name": str(dicom_path), "patient_id": patient, "phase": phase,
        "pixel_spacing": loaded.pixel_spacing, "slice_thickness": loaded.slice_thickness,
        "myocardium_annotated": annotated, "roi_label": roi_label, "order": number or 0,
    }


def prepare_sunnybrook(source, *, split_seed: int = 0, ratios=None, unreliable_epicardium=UNRELIABLE_EPICARDIUM,
                       num_proc: int | None = None):
    """Convert the Sunnybrook layout to a ``DatasetDict`` (all patients in ``test`` unless
    ``ratios`` is given). See the module docstring."""
    source = Path(source)
    jobs = []
    for patient, original in _read_links(source):
        dicom_dir, contour_dir = source / "dicoms" / patient, source / "contourfiles" / original
        for folder in (dicom_dir, contour_dir / "i-contours"):
            if not folder.is_dir():
                raise InputError(f"{folder}: no such folder (link.csv lists {patient},{original})")
        epis = {}
        if (contour_dir / "o-contours").is_dir():
            for path in (contour_dir / "o-contours").glob("*.txt"):
                match = _CONTOUR.match(path.name)
                if match:
                    epis[int(match.group(1))] = path
        for endo in sorted((contour_dir / "i-contours").glob("*.txt")):
            match = _CONTOUR.match(endo.name)
            if not match:
                continue
            number = int(match.group(1))
            dicom = dicom_dir / f"{number}.dcm"
            if not dicom.is_file():
                raise InputError(f"{dicom}: no such file (contour {endo} refers to it)")
            jobs.append((patient, dicom, endo, epis.get(number), patient in tuple(unreliable_epicardium)))
    if not jobs:
        raise InputError(f"{source}: no contour files found under contourfiles/*/i-contours")
    slices = parallel_map(_convert_slice, jobs, num_proc, desc="sunnybrook")
    stacks: dict[tuple, list] = {}
    for item in slices:
        stacks.setdefault((item["patient_id"], item["phase"]), []).append(item)
    patients = sorted({item["patient_id"] for item in slices})
    if ratios is None:
        assignment = {p: "test" for p in patients}
    else:
        assignment = {p: split for split, ids in split_patients(patients, ratios, split_seed).items() for p in ids}
    rows_by_split: dict[str, list] = {"train": [], "validation": [], "test": []}
    for (_, _), items in sorted(stacks.items()):
        items.sort(key=lambda item: item["order"])
        for index, item in enumerate(items):
            item = dict(item)
            item.pop("order")
            rows_by_split[assignment[item["patient_id"]]].append(
                make_row(item.pop("image"), item.pop("label"), source=SOURCE, slice_index=index,
                         num_slices=len(items), **item)
            )
    return build_dataset_dict(
        rows_by_split, SOURCE,
        description="Sunnybrook Cardiac Data (Radau et al. 2009), 2D short-axis DICOM slices with manual "
        "endocardium/epicardium contours rasterised to masks; real pixel spacing.",
        citation=CITATION, homepage=HOMEPAGE, license=LICENSE,
    )
