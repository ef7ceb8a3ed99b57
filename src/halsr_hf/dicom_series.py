"""DICOM geometry: the images of one series (files, or the frames of one multi-frame file)
arranged into volumes, one per cardiac phase, and the NIfTI affine of those volumes.

The rules (issue 19; :func:`halsr_hf.image_io.read_dicom_series` applies them to files):

- **One series is one volume per phase.** Files are grouped by SeriesInstanceUID by the reader.
  Several scanners export short-axis cine as **one series per slice position**: several series
  whose images each lie at a single slice position, all of one study (StudyInstanceUID), one frame of
  reference (FrameOfReferenceUID) and one orientation, each at its own position, are one stack
  (:func:`series_per_position`). Any other folder holding several series is refused, naming them.
- **Space:** the images are sorted by their position along the slice normal, the cross product of
  the two ImageOrientationPatient direction cosines (``ImagePositionPatient . normal``); images
  closer than :data:`SAME_POSITION_MM` along the normal are one slice position. Every image must
  share the first image's orientation (a localiser or long-axis image in the series is refused), and
  the positions must be evenly spaced (a missing slice would make every volume wrong).
- **Time:** the images at one slice position are its phases, sorted by trigger time (TriggerTime,
  or NominalCardiacTriggerDelayTime of a multi-frame file), else by InstanceNumber (or
  TemporalPositionIndex), else in file order; the k-th image of every position forms phase k.
  Positions with different numbers of images are refused (a missing file, or a partial export).
- **Multi-frame files** are split the same way from their per-frame functional groups
  (PlanePositionSequence, PlaneOrientationSequence, CardiacSynchronizationSequence,
  FrameContentSequence; the shared group fills what a frame lacks). A multi-frame file without
  functional groups is a stack in space, unless its FrameIncrementPointer names FrameTime or
  FrameTimeVector: then its frames are the phases of one slice.
- **Affine:** the NIfTI (RAS) voxel-to-world matrix of the mask layout
  :func:`halsr_hf.image_io.save_mask` writes (voxel i = column, j = row, k = slice in the sorted
  order), from ImageOrientationPatient, PixelSpacing and the positions of the first and last slice.

Pure geometry: numpy and :class:`InputError` only (pydicom is used by the reader in ``image_io``).
A code file of saved model folders (the pipeline reads DICOM series with it): relative imports only.
"""

from dataclasses import dataclass, field

import numpy as np

from .errors import InputError

#: Images closer than this along the slice normal (mm) are at the same slice position.
SAME_POSITION_MM = 0.05
#: Slice positions whose steps differ from the median step by more than this fraction are refused.
UNEVEN_STEP_TOLERANCE = 0.1
#: DICOM tags of FrameIncrementPointer that make a multi-frame file a time series.
TIME_POINTERS = (0x00181063, 0x00181065)  # FrameTime, FrameTimeVector


@dataclass
class ImageInfo:
    """What the arrangement needs of one image (a file, or a frame of a multi-frame file)."""

    name: str
    position: tuple | None = None  # ImagePositionPatient (mm, LPS)
    orientation: tuple | None = None  # ImageOrientationPatient (row and column direction cosines)
    time: float | None = None  # trigger time, ms
    order: int | None = None  # InstanceNumber / TemporalPositionIndex


@dataclass
class Arrangement:
    """``phases[t][z]``: the index (into the caller's list) of the image of phase ``t`` at slice
    position ``z`` (positions in ascending order along the normal)."""

    phases: list
    slice_step: float | None = None  # mm between slice centres (None for one position)
    affine: np.ndarray | None = None  # 4x4 NIfTI (RAS) affine of the (column, row, slice) grid
    trigger_times: list = field(default_factory=list)  # per phase, the median trigger time (ms) or None
    normal: tuple | None = None


def _float_tuple(value, length: int):
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return values if len(values) == length and all(np.isfinite(values)) else None


def number_or_none(value, cast=float):
    """``cast(value)``, or None when the value is absent, empty or malformed."""
    if value in (None, ""):
        return None
    try:
        return cast(value)
    except (TypeError, ValueError):
        return None


def image_info(dataset, name: str) -> ImageInfo:
    """The geometry and timing of a single-frame DICOM dataset."""
    return ImageInfo(
        name=name,
        position=_float_tuple(getattr(dataset, "ImagePositionPatient", None), 3),
        orientation=_float_tuple(getattr(dataset, "ImageOrientationPatient", None), 6),
        time=number_or_none(getattr(dataset, "TriggerTime", None)),
        order=number_or_none(getattr(dataset, "InstanceNumber", None), int),
    )


def _functional(item, shared, sequence: str, attribute: str):
    """``item.sequence[0].attribute``, else the same in the shared functional group, else None."""
    for group in (item, shared):
        if group is None or sequence not in group:
            continue
        values = group[sequence].value
        if values and attribute in values[0]:
            return values[0][attribute].value
    return None


def frame_infos(dataset, name: str, count: int) -> list | None:
    """One :class:`ImageInfo` per frame of a multi-frame dataset, from its per-frame functional
    groups; for a legacy file without them, frames in time when FrameIncrementPointer names
    FrameTime/FrameTimeVector. None when the file says nothing (the caller reads a spatial stack)."""
    per_frame = getattr(dataset, "PerFrameFunctionalGroupsSequence", None)
    if per_frame:
        if len(per_frame) != count:
            raise InputError(f"{name}: {len(per_frame)} per-frame functional groups for {count} frames")
        shared_sequence = getattr(dataset, "SharedFunctionalGroupsSequence", None)
        shared = shared_sequence[0] if shared_sequence else None
        infos = []
        for index, item in enumerate(per_frame):
            infos.append(ImageInfo(
                name=f"{name} frame {index + 1}",
                position=_float_tuple(_functional(item, shared, "PlanePositionSequence", "ImagePositionPatient"), 3),
                orientation=_float_tuple(_functional(item, shared, "PlaneOrientationSequence", "ImageOrientationPatient"), 6),
                time=number_or_none(_functional(item, shared, "CardiacSynchronizationSequence", "NominalCardiacTriggerDelayTime")),
                order=number_or_none(_functional(item, shared, "FrameContentSequence", "TemporalPositionIndex"), int),
            ))
        return infos
    pointer = getattr(dataset, "FrameIncrementPointer", None)
    pointers = [] if pointer is None else [int(p) for p in (pointer if hasattr(pointer, "__iter__") else [pointer])]
    if any(p in TIME_POINTERS for p in pointers):
        step = number_or_none(getattr(dataset, "FrameTime", None)) or 1.0
        position = _float_tuple(getattr(dataset, "ImagePositionPatient", None), 3) or (0.0, 0.0, 0.0)
        orientation = _float_tuple(getattr(dataset, "ImageOrientationPatient", None), 6) or (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
        return [ImageInfo(name=f"{name} frame {i + 1}", position=position, orientation=orientation, time=i * step, order=i)
                for i in range(count)]
    return None


def functional_pixel_spacing(dataset):
    """PixelSpacing and SliceThickness of a multi-frame file's shared functional group (or its first
    frame's), as (spacing or None, thickness or None)."""
    shared_sequence = getattr(dataset, "SharedFunctionalGroupsSequence", None)
    shared = shared_sequence[0] if shared_sequence else None
    per_frame = getattr(dataset, "PerFrameFunctionalGroupsSequence", None)
    first = per_frame[0] if per_frame else None
    spacing = _float_tuple(_functional(first, shared, "PixelMeasuresSequence", "PixelSpacing"), 2)
    thickness = number_or_none(_functional(first, shared, "PixelMeasuresSequence", "SliceThickness"))
    return spacing, thickness


def arrange(infos: list, where: str, pixel_spacing=None, slice_thickness=None) -> Arrangement:
    """Sort images into slice positions along the normal and phases in time (the module's rules).
    ``where`` names the series in messages; ``pixel_spacing`` (row_mm, col_mm) and
    ``slice_thickness`` (for a single position) enter the affine (1 mm when unknown)."""
    if not infos:
        raise InputError(f"{where}: no DICOM images")
    for info in infos:
        if info.position is None or info.orientation is None:
            raise InputError(f"{where}: {info.name} has no ImagePositionPatient/ImageOrientationPatient, so the "
                             "slices cannot be ordered in space")
    reference = np.asarray(infos[0].orientation)
    for info in infos[1:]:
        if not np.allclose(info.orientation, reference, atol=1e-3):
            raise InputError(
                f"{where}: {info.name} has another orientation ({_cosines(info.orientation)}) than {infos[0].name} "
                f"({_cosines(reference)}); a series must be one stack of parallel slices (a localiser or long-axis "
                "image among them?)")
    row_cosine, column_cosine = reference[:3], reference[3:]
    normal = np.cross(row_cosine, column_cosine)
    if np.linalg.norm(normal) < 1e-6:
        raise InputError(f"{where}: ImageOrientationPatient {_cosines(reference)} has parallel row and column directions")
    normal = normal / np.linalg.norm(normal)
    distance = np.array([np.dot(info.position, normal) for info in infos])
    order = np.argsort(distance, kind="stable")
    positions, current = [], [int(order[0])]
    for index in order[1:]:
        if distance[index] - distance[current[0]] > SAME_POSITION_MM:
            positions.append(current)
            current = []
        current.append(int(index))
    positions.append(current)
    counts = [len(p) for p in positions]
    if len(set(counts)) > 1:
        listed = ", ".join(f"{distance[p[0]]:.1f} mm: {len(p)}" for p in positions)
        raise InputError(
            f"{where}: the slice positions hold different numbers of images ({listed}), so the series cannot be "
            "split into phases (a missing file, or a partial export?)")
    have_time = all(info.time is not None for info in infos)
    have_order = all(info.order is not None for info in infos)

    def in_time(index):
        info = infos[index]
        return (info.time if have_time else 0.0, info.order if have_order else 0, index)

    positions = [sorted(p, key=in_time) for p in positions]
    phases = [[p[t] for p in positions] for t in range(counts[0])]
    trigger_times = [float(np.median([infos[i].time for i in phase])) if have_time else None for phase in phases]
    centres = np.array([np.mean(distance[p]) for p in positions])
    step = None
    if len(positions) > 1:
        steps = np.diff(centres)
        step = float(np.median(steps))
        if np.any(np.abs(steps - step) > UNEVEN_STEP_TOLERANCE * step):
            listed = ", ".join(f"{s:.2f}" for s in steps)
            raise InputError(
                f"{where}: the slice positions are not evenly spaced (steps {listed} mm along the normal); a slice "
                "may be missing, and volumes by slice summation would be wrong")
    spacing = pixel_spacing or (1.0, 1.0)
    lps = np.eye(4)
    lps[:3, 0] = row_cosine * spacing[1]  # voxel i: along a row, i.e. the column index
    lps[:3, 1] = column_cosine * spacing[0]  # voxel j: the row index
    first = np.asarray(infos[phases[0][0]].position, dtype=float)
    if len(positions) > 1:
        last = np.asarray(infos[phases[0][-1]].position, dtype=float)
        lps[:3, 2] = (last - first) / (len(positions) - 1)
    else:
        lps[:3, 2] = normal * (slice_thickness or 1.0)
    lps[:3, 3] = first
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # DICOM LPS -> NIfTI RAS
    return Arrangement(phases=phases, slice_step=step, affine=affine, trigger_times=trigger_times,
                       normal=tuple(float(v) for v in normal))


def series_per_position(groups: dict) -> str | None:
    """Whether several series are one stack exported as one series per slice position: None if so,
    else why not (for the message refusing the folder). ``groups`` maps a SeriesInstanceUID to
    ``(infos, study_uid, frame_of_reference_uid)`` of its images."""
    studies = {study for _, study, _ in groups.values()}
    references = {reference for _, _, reference in groups.values()}
    if len(studies) > 1:
        return "they belong to different studies (StudyInstanceUID)"
    if len(references) > 1:
        return "they have different frames of reference (FrameOfReferenceUID)"
    infos = [info for group, _, _ in groups.values() for info in group]
    if any(info.position is None or info.orientation is None for info in infos):
        return "some images have no ImagePositionPatient/ImageOrientationPatient"
    reference = np.asarray(infos[0].orientation)
    if any(not np.allclose(info.orientation, reference, atol=1e-3) for info in infos):
        return "their orientations differ (ImageOrientationPatient)"
    normal = np.cross(reference[:3], reference[3:])
    if np.linalg.norm(normal) < 1e-6:
        return "ImageOrientationPatient has parallel row and column directions"
    normal = normal / np.linalg.norm(normal)
    centres = []
    for group, _, _ in groups.values():
        distance = np.array([np.dot(info.position, normal) for info in group])
        if np.ptp(distance) > SAME_POSITION_MM:
            return "a series holds several slice positions (not one series per position)"
        centres.append(float(np.mean(distance)))
    centres.sort()
    if any(b - a <= SAME_POSITION_MM for a, b in zip(centres, centres[1:])):
        return "two series lie at the same slice position (two acquisitions of one slice?)"
    return None


def _cosines(values) -> str:
    return "[" + ", ".join(f"{float(v):.3f}" for v in values) + "]"
