"""Reading one DICOM slice (shared with the inference pipeline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError


def _float_or_none(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) and value > 0 else None


def read_dicom_slice(path) -> tuple[np.ndarray, dict]:
    """``(image, meta)`` of a single-frame grayscale DICOM file.

    ``image`` is float32 (rows, columns): the stored values with RescaleSlope/RescaleIntercept
    applied when present, nothing else. ``meta`` holds ``pixel_spacing`` ((row, col) mm or None),
    ``slice_thickness`` (mm or None), ``spacing_between_slices``, ``slice_location``,
    ``instance_number``, ``trigger_time``, ``cardiac_number_of_images``, ``image_position``,
    ``image_orientation``, ``patient_id`` and ``series_description`` (None when absent).
    Raises :class:`InputError` naming the file when it is missing, unreadable or not a 2D slice.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        dataset = pydicom.dcmread(str(path))
        array = dataset.pixel_array
    except (InvalidDicomError, AttributeError, OSError, ValueError, KeyError, TypeError, EOFError, RuntimeError) as error:
        raise InputError(f"{path}: unreadable DICOM file ({type(error).__name__}: {error})") from None
    if array.ndim != 2:
        raise InputError(f"{path}: expected a single-frame grayscale DICOM slice, got pixel data of shape {array.shape}")
    image = array.astype(np.float32)
    slope = getattr(dataset, "RescaleSlope", None)
    intercept = getattr(dataset, "RescaleIntercept", None)
    if slope not in (None, "") and float(slope) != 1.0:
        image = image * np.float32(float(slope))
    if intercept not in (None, "") and float(intercept) != 0.0:
        image = image + np.float32(float(intercept))
    spacing = getattr(dataset, "PixelSpacing", None)
    pixel_spacing = None
    if spacing is not None and len(spacing) == 2:
        values = [_float_or_none(v) for v in spacing]
        pixel_spacing = None if None in values else (values[0], values[1])

    def get(name, cast=float):
        value = getattr(dataset, name, None)
        if value in (None, ""):
            return None
        try:
            return cast(value)
        except (TypeError, ValueError):
            return None

    meta = {
        "pixel_spacing": pixel_spacing,
        "slice_thickness": _float_or_none(getattr(dataset, "SliceThickness", None)),
        "spacing_between_slices": _float_or_none(getattr(dataset, "SpacingBetweenSlices", None)),
        "slice_location": get("SliceLocation"),
        "instance_number": get("InstanceNumber", int),
        "trigger_time": get("TriggerTime"),
        "cardiac_number_of_images": get("CardiacNumberOfImages", int),
        "image_position": get("ImagePositionPatient", lambda v: [float(x) for x in v]),
        "image_orientation": get("ImageOrientationPatient", lambda v: [float(x) for x in v]),
        "patient_id": get("PatientID", str),
        "series_description": get("SeriesDescription", str),
    }
    return image.astype(np.float32, copy=False), meta
