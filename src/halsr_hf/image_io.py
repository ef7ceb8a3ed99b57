"""Reading pipeline inputs (files, PIL images, arrays, tensors) and writing masks.

Every reader returns a :class:`LoadedInput`: the slices as float32 (H, W) arrays in the model's
in-plane convention, physical spacing when the source knows it, and what is needed to write a
mask back onto the input's own voxel grid (NIfTI affine and header).

What is one volume (issue 19): a 3D NIfTI, one frame of a 4D NIfTI, a ``.npy`` array (Z, H, W), a
multi-frame DICOM file (one phase of it when its frames are also in time), and a **DICOM series**:
a folder (or a list of files, :func:`read_dicom_series`) of one SeriesInstanceUID (or one series per
slice position of one study), sorted along the slice normal and split into phases by trigger time (the rules are in :mod:`halsr_hf.dicom_series`).
Inputs with several phases (4D NIfTI, cine series, cine multi-frame DICOM) need ``frame=``, or
:func:`load_frames` reads every phase at once.

In-plane convention: a NIfTI volume of shape (X, Y, Z) gives slices ``data[:, :, k].T`` of shape
(Y, X) (rows = the second voxel axis), the convention of the ACDC arrays the model was trained on
(SSL4MIS arrays are ``sitk.GetArrayFromImage`` of the ACDC NIfTI files). The slice axis is the third
voxel axis unless the affine makes another one clearly the thick one (:func:`nifti_slice_axis`: a
volume saved slices-first); spacings are read in the header's ``xyzt_units`` (metres, microns) and
given in mm. Other scanners/converters
store the short-axis plane transposed, mirrored or rotated: the models are trained with all eight
90-degree rotations/flips/transposes as augmentation, so no header-based reorientation is applied;
the mask is written back with exactly the inverse of the transpose above.

Dependencies (pydicom, nibabel, PIL) are imported lazily so the module also works, file-less,
from a Hub folder loaded with ``trust_remote_code=True``; a file type whose reader is not installed
raises :class:`InputError` naming the package to install.

Images larger than PIL's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, about 89
megapixels) are refused with :class:`InputError` before they are decoded. Masks are written to a
temporary file and renamed, with the permissions of a normally created file (umask applied).
"""

import contextlib
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .atomic import atomic_file
from .dicom_series import arrange, frame_infos, functional_pixel_spacing, image_info, number_or_none, series_per_position
from .errors import InputError, argument

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DICOM_EXTENSIONS = (".dcm", ".dicom", ".ima")
NIFTI_EXTENSIONS = (".nii", ".nii.gz")
ARRAY_EXTENSIONS = (".npy",)
SUPPORTED = IMAGE_EXTENSIONS + DICOM_EXTENSIONS + NIFTI_EXTENSIONS + ARRAY_EXTENSIONS
#: What a path may be, for messages.
SUPPORTED_TEXT = f"{', '.join(SUPPORTED)} files (DICOM also without extension), or a folder holding one DICOM series"


@dataclass
class LoadedInput:
    """One pipeline input, read.

    Attributes:
        name: file name or a short description (``array (10, 256, 216)``), used in messages.
        slices: list of float32 (H, W) arrays (one for a 2D input, Z for a volume).
        is_volume: whether the input was a 3D (or 4D at ``frame``) stack.
        pixel_spacing: (row_mm, col_mm), or None when unknown.
        slice_thickness: distance between slice centres in mm (volumes), or None.
        kind: ``png``/``dicom``/``nifti``/``array``/``pil``/...
        affine: the NIfTI (RAS) affine of the input's voxel grid (NIfTI files; DICOM series and
            multi-frame files with their geometry), to write masks aligned with the input.
        header: the NIfTI header (NIfTI files).
        frame: the frame (phase) used, if any.
        extra: source details (DICOM: SeriesInstanceUID, the files in slice order, trigger time...).
    """

    name: str
    slices: list
    is_volume: bool = False
    pixel_spacing: tuple | None = None
    slice_thickness: float | None = None
    kind: str = "array"
    affine: np.ndarray | None = None
    header: object = None
    frame: int | None = None
    native_shape: tuple | None = None
    extra: dict = field(default_factory=dict)


def _extension(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _has_dicom_preamble(path: Path) -> bool:
    """DICOM files often have no extension; they are recognised by 'DICM' after the 128-byte preamble."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")


def is_dicom_file(path: Path) -> bool:
    """A DICOM extension, or the 'DICM' preamble (DICOM files often have no extension)."""
    return _extension(path) in DICOM_EXTENSIONS or (_extension(path) not in SUPPORTED and _has_dicom_preamble(path))


def _frame_index(count: int, frame, name: str, what: str) -> int:
    """The index of ``frame`` among ``count`` frames, or InputError when it is needed or out of range.
    An input of one phase ignores ``frame`` (DICOM, as before; a 3D NIfTI refuses it, see
    :func:`read_nifti_file`)."""
    if count == 1:
        return 0
    if frame is None:
        raise InputError(f"{name}: {what} with {count} frames; pass {argument('frame')} (0-based) to choose one")
    if not -count <= frame < count:
        raise InputError(f"{name}: {argument('frame', frame)} out of range for {count} frames (0-based)")
    return frame % count


def _require(module: str, package: str, path, what: str):
    """Import an optional reader, or raise :class:`InputError` saying which package to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(
            f"{path}: reading {what} needs the Python package {package!r}, which is not installed; "
            f"install it with `pip install {package}`"
        ) from None


def _valid_spacing(values) -> tuple | None:
    try:
        spacing = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        return None
    if len(spacing) != 2 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
        return None
    return spacing


def read_image_file(path: Path) -> LoadedInput:
    """PNG/JPEG/TIFF/BMP, 8- or 16-bit, as one slice (no spacing: these formats carry none)."""
    _require("PIL", "pillow", path, "PNG/JPEG/TIFF/BMP images")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:  # reads the header only
            limit = Image.MAX_IMAGE_PIXELS
            if limit and image.size[0] * image.size[1] > limit:  # PIL only warns up to twice the limit
                raise Image.DecompressionBombError(
                    f"{image.size[0]}x{image.size[1]} = {image.size[0] * image.size[1]} pixels")
            image.load()
            if image.mode in ("RGB", "RGBA", "P", "LA", "CMYK", "YCbCr"):
                array = np.asarray(image.convert("L" if image.mode in ("P", "LA") else "RGB"), dtype=np.float32)
                if array.ndim == 3:
                    array = array @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            else:
                array = np.asarray(image).astype(np.float32)
    except Image.DecompressionBombError as error:
        raise InputError(
            f"{path}: image too large to decode safely ({error}); the limit is PIL.Image.MAX_IMAGE_PIXELS "
            f"= {Image.MAX_IMAGE_PIXELS} pixels"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise InputError(f"{path}: unreadable or truncated image file ({error})") from None
    if array.ndim != 2:
        raise InputError(f"{path}: expected a 2D grayscale image, got shape {array.shape}")
    return LoadedInput(name=str(path), slices=[array], kind=_extension(path).lstrip("."), native_shape=array.shape)


def _dicom_tag(dataset, name: str, cast=float):
    """A DICOM attribute cast with ``cast``, or None when absent, empty or malformed."""
    return number_or_none(getattr(dataset, name, None), cast)


#: What pydicom raises for broken files (the last two: unsupported transfer syntax / no decoder).
_DICOM_ERRORS = (AttributeError, OSError, ValueError, KeyError, TypeError, EOFError, NotImplementedError, RuntimeError)


#: pydicom's warning for a UID with a component that starts with 0 (``2.16.124.113543.6006.99.0587...``,
#: as in every Sunnybrook file, the bundled examples included). Such UIDs are common in older data;
#: this package only compares them as strings, so that one warning is silenced when the file is
#: read (every other pydicom warning stays).
_INVALID_UID_WARNING = r"Invalid value for VR UI"


def _dcmread(path: Path):
    """``pydicom.dcmread``, with the top-level UIDs read at once under a filter of
    :data:`_INVALID_UID_WARNING` (pydicom converts, and warns, on first access: later reads of
    SeriesInstanceUID then find the value converted)."""
    pydicom = _require("pydicom", "pydicom", path, "DICOM files")
    from pydicom.datadict import dictionary_VR
    from pydicom.errors import InvalidDicomError

    try:
        dataset = pydicom.dcmread(str(path))
    except (InvalidDicomError,) + _DICOM_ERRORS as error:
        raise InputError(f"{path}: unreadable or truncated DICOM file ({type(error).__name__}: {error})") from None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_INVALID_UID_WARNING, category=UserWarning)
        for tag in list(dataset.keys()):
            raw = dataset.get_item(tag)
            vr = getattr(raw, "VR", None)
            if vr is None:
                with contextlib.suppress(KeyError):
                    vr = dictionary_VR(tag)
            if vr == "UI":
                with contextlib.suppress(*_DICOM_ERRORS):
                    dataset[tag]  # noqa: B018 - converts the raw element now, its warning filtered
    return dataset


def _has_pixels(dataset) -> bool:
    return any(name in dataset for name in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


def _is_non_image(dataset) -> bool:
    """A DICOMDIR, report, presentation state...: its SOP class is known and not an image storage class."""
    meta = getattr(dataset, "file_meta", None)
    uid = getattr(meta, "MediaStorageSOPClassUID", None) or getattr(dataset, "SOPClassUID", None)
    name = getattr(uid, "name", "") or ""
    return bool(uid) and name != str(uid) and "Image Storage" not in name


def _read_dicom_dataset(path: Path, dataset=None):
    """(dataset, float32 pixels with rescale slope/intercept applied), or InputError naming the file."""
    dataset = _dcmread(path) if dataset is None else dataset
    try:
        array = dataset.pixel_array.astype(np.float32)
    except _DICOM_ERRORS as error:
        raise InputError(f"{path}: unreadable or truncated DICOM file ({type(error).__name__}: {error})") from None
    slope = float(getattr(dataset, "RescaleSlope", 1) or 1)
    intercept = float(getattr(dataset, "RescaleIntercept", 0) or 0)
    if getattr(dataset, "SamplesPerPixel", 1) != 1 or array.ndim not in (2, 3):
        raise InputError(f"{path}: unsupported DICOM pixel data of shape {array.shape} (expected grayscale)")
    return dataset, array * slope + intercept


def _dicom_extra(dataset) -> dict:
    return {"ImageOrientationPatient": [float(v) for v in getattr(dataset, "ImageOrientationPatient", [])],
            "InstanceNumber": _dicom_tag(dataset, "InstanceNumber", int),
            "CardiacNumberOfImages": _dicom_tag(dataset, "CardiacNumberOfImages", int),
            "SeriesInstanceUID": str(getattr(dataset, "SeriesInstanceUID", "")) or None,
            "ImagePositionPatient": [float(v) for v in getattr(dataset, "ImagePositionPatient", [])],
            "TriggerTime": _dicom_tag(dataset, "TriggerTime")}


def _thickness(dataset):
    thickness = _dicom_tag(dataset, "SpacingBetweenSlices") or _dicom_tag(dataset, "SliceThickness")
    return thickness if thickness is not None and thickness > 0 else None


def _thickness_warning(dataset, thickness) -> dict:
    """``extra`` for a stack whose slice spacing could not come from slice positions: a warning
    (``slice_spacing_warning``) when it is SliceThickness, which leaves out any gap between slices."""
    if thickness is None or _dicom_tag(dataset, "SpacingBetweenSlices"):
        return {}
    return {"slice_spacing_warning": f"slice spacing {thickness:g} mm taken from SliceThickness (no slice positions, "
                                     "no SpacingBetweenSlices): volumes are too small if the slices have gaps; pass the "
                                     "spacing (slice_thickness= / --slice-thickness) if you know it"}


def read_dicom_file(path: Path, frame: int | None = None) -> LoadedInput:
    """One DICOM file; rescale slope/intercept applied. ``pixel_spacing`` from PixelSpacing;
    ``slice_thickness`` (the distance between slice centres) from SpacingBetweenSlices, else
    SliceThickness. ``extra`` keeps ImageOrientationPatient, ImagePositionPatient, InstanceNumber,
    TriggerTime, SeriesInstanceUID and CardiacNumberOfImages (None when absent). The one DICOM
    reader: the pipeline and the dataset converters (``halsr_hf.data.sunnybrook``) use it.

    A multi-frame file is split into space and time by :mod:`halsr_hf.dicom_series` (from its
    per-frame functional groups); with several phases, ``frame`` chooses one."""
    phases = dicom_file_phases(Path(path))
    return phases[_frame_index(len(phases), frame, str(path), "multi-frame DICOM")]


def dicom_file_phases(path: Path, dataset=None) -> list:
    """Every phase of one DICOM file (one item unless a multi-frame file holds several phases)."""
    dataset, array = _read_dicom_dataset(path, dataset)
    spacing = _valid_spacing(getattr(dataset, "PixelSpacing", None))
    if array.ndim == 2:
        return [LoadedInput(name=str(path), slices=[array], pixel_spacing=spacing, slice_thickness=_thickness(dataset),
                            kind="dicom", native_shape=array.shape, extra=_dicom_extra(dataset))]
    infos = frame_infos(dataset, str(path), array.shape[0])
    if infos is None:  # no per-frame geometry: the frames are a stack in space, in file order
        thickness = _thickness(dataset)
        return [LoadedInput(name=str(path), slices=list(array), is_volume=True, pixel_spacing=spacing,
                            slice_thickness=thickness, kind="dicom", native_shape=array.shape,
                            extra={**_dicom_extra(dataset), **_thickness_warning(dataset, thickness)})]
    group_spacing, group_thickness = functional_pixel_spacing(dataset)
    spacing = _valid_spacing(group_spacing) or spacing
    return _phases_of(str(path), list(array), infos, spacing, group_thickness or _thickness(dataset),
                      {"SeriesInstanceUID": str(getattr(dataset, "SeriesInstanceUID", "")) or None})


def _phases_of(where: str, arrays: list, infos: list, spacing, thickness, extra: dict) -> list:
    """LoadedInputs, one per phase, of images arranged by :func:`dicom_series.arrange`."""
    arrangement = arrange(infos, where, spacing, thickness)
    shape = arrays[arrangement.phases[0][0]].shape
    for info, array in zip(infos, arrays):
        if array.shape != shape:
            raise InputError(f"{where}: {info.name} is {array.shape[1]}x{array.shape[0]} pixels, the series "
                             f"{shape[1]}x{shape[0]}")
    count = len(arrangement.phases)
    step = arrangement.slice_step if arrangement.slice_step is not None else thickness
    out = []
    for t, indices in enumerate(arrangement.phases):
        out.append(LoadedInput(
            name=where, slices=[np.asarray(arrays[i], dtype=np.float32) for i in indices], is_volume=len(indices) > 1,
            pixel_spacing=spacing, slice_thickness=step, kind="dicom", affine=arrangement.affine,
            frame=t if count > 1 else None, native_shape=(len(indices),) + tuple(shape),
            extra={**extra, "phases": count, "trigger_time_ms": arrangement.trigger_times[t],
                   "images": [infos[i].name for i in indices]}))
    return out


def dicom_series_files(source) -> tuple[str, list]:
    """(name for messages, DICOM files) of a folder (recursively; hidden files and files that are
    neither named nor marked as DICOM are left out) or of a list of files."""
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not any(
            part.startswith(".") for part in p.relative_to(folder).parts) and is_dicom_file(p))
        return str(folder), files
    files = [Path(p) for p in source]
    return (str(files[0].parent) if files else "DICOM series"), files


def dicom_series_phases(source) -> list:
    """Every phase of one DICOM series, a folder or a list of files: one :class:`LoadedInput` per
    phase, its slices sorted along the slice normal (rules: :mod:`halsr_hf.dicom_series`). Files
    without pixel data (DICOMDIR, reports) are skipped; several series are refused unless they are one
    series per slice position of one study, frame of reference and orientation
    (:func:`halsr_hf.dicom_series.series_per_position`), which are merged into one stack."""
    where, files = dicom_series_files(source)
    if not files:
        raise InputError(f"{where}: a folder without DICOM files; a folder input is one DICOM series (inputs are "
                         f"{SUPPORTED_TEXT}); a folder of subjects is a cohort: `halsr-hf predict -i FOLDER -o OUT`")
    datasets = []
    for path in files:
        _check_file(path)
        dataset = _dcmread(path)
        if _has_pixels(dataset):
            datasets.append((path,) + _read_dicom_dataset(path, dataset))
        elif not _is_non_image(dataset):  # a DICOMDIR, a report... are skipped; an image without pixels is not
            raise InputError(f"{path}: a DICOM image without pixel data (a truncated file?)")
    if not datasets:
        raise InputError(f"{where}: no DICOM images there ({len(files)} DICOM files without pixel data)")
    series = {}
    for path, dataset, array in datasets:
        series.setdefault(str(getattr(dataset, "SeriesInstanceUID", "")) or "(no SeriesInstanceUID)", []).append(path)
    merged = None
    if len(series) > 1:
        why = "a multi-frame file among them"
        if all(array.ndim == 2 for _, _, array in datasets):
            groups = {}
            for path, dataset, _ in datasets:
                uid = str(getattr(dataset, "SeriesInstanceUID", "")) or "(no SeriesInstanceUID)"
                group = groups.setdefault(uid, ([], str(getattr(dataset, "StudyInstanceUID", "")),
                                                str(getattr(dataset, "FrameOfReferenceUID", ""))))
                group[0].append(image_info(dataset, path.name))
            why = series_per_position(groups)
        if why is not None:
            def shown(path):
                return path.relative_to(where).as_posix() if path.is_relative_to(where) else str(path)

            listed = "; ".join(f"{uid}: {len(paths)} files, e.g. {shown(paths[0])}" for uid, paths in series.items())
            raise InputError(f"{where}: {len(series)} DICOM series ({listed}), not one stack exported as one series per "
                             f"slice position ({why}); pass one series (its own folder); a folder of subjects is a "
                             "cohort: `halsr-hf predict -i FOLDER -o OUT`")
        merged = len(series)
    if len(datasets) == 1 and datasets[0][2].ndim == 3:
        return dicom_file_phases(datasets[0][0], datasets[0][1])
    if any(array.ndim == 3 for _, _, array in datasets):
        name = next(path.name for path, _, array in datasets if array.ndim == 3)
        raise InputError(f"{where}: {name} is a multi-frame file among other files; pass it alone")
    first = datasets[0][1]
    spacing = _valid_spacing(getattr(first, "PixelSpacing", None))
    for path, dataset, _ in datasets:
        other = _valid_spacing(getattr(dataset, "PixelSpacing", None))
        if spacing is not None and (other is None or not np.allclose(other, spacing, rtol=1e-3)):
            raise InputError(f"{where}: {path.name} has PixelSpacing {other}, {datasets[0][0].name} {spacing}")
    infos = [image_info(dataset, path.name) for path, dataset, _ in datasets]
    extra = {"SeriesInstanceUID": next(iter(series))}
    if merged:
        extra["series_merged"] = merged  # one series per slice position, merged into one stack
    return _phases_of(where, [array for _, _, array in datasets], infos, spacing, _thickness(first), extra)


def read_dicom_series(source, frame: int | None = None) -> LoadedInput:
    """One DICOM series (a folder, or a list of files) as one volume; ``frame`` chooses the phase
    of a cine series. See :func:`dicom_series_phases`."""
    phases = dicom_series_phases(source)
    return phases[_frame_index(len(phases), frame, phases[0].name, "DICOM series")]


def read_nifti_file(path: Path, frame: int | None = None) -> LoadedInput:
    """NIfTI 2D, 3D or 4D (then ``frame`` is required). Spacing from the header zooms."""
    image, data = _read_nifti(path)
    if data.ndim == 3:
        if frame is not None and frame != 0:
            raise InputError(f"{path}: {argument('frame', frame)} given but the NIfTI has no time axis (shape {data.shape})")
        return _nifti_input(path, image, data, frame)
    _frame_index(data.shape[3], frame, str(path), "4D NIfTI")
    return _nifti_input(path, image, data[..., frame], frame)


def nifti_frames(path: Path) -> list:
    """Every frame of a NIfTI file (one item for 2D/3D), the file read once."""
    image, data = _read_nifti(path)
    if data.ndim == 3:
        return [_nifti_input(path, image, data, None)]
    return [_nifti_input(path, image, data[..., t], t) for t in range(data.shape[3])]


def _read_nifti(path: Path):
    """(image, data): data (X, Y, Z) or (X, Y, Z, T) with T > 1, float32."""
    nib = _require("nibabel", "nibabel", path, "NIfTI files")

    try:
        image = nib.load(str(path))
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as error:  # nibabel raises many types (ImageFileError, EOFError, zlib.error...)
        raise InputError(f"{path}: unreadable or truncated NIfTI file ({type(error).__name__}: {error})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim not in (3, 4):
        raise InputError(f"{path}: unsupported NIfTI shape {data.shape} (expected 2D, 3D or 4D)")
    return image, data


#: NIfTI ``xyzt_units`` (spatial part) to millimetres; "unknown" is read as mm, the usual writer default.
NIFTI_UNITS_MM = {"mm": 1.0, "meter": 1000.0, "micron": 0.001, "unknown": 1.0}
#: A voxel axis other than the third is the slice axis when its spacing (from the affine) is at least
#: this many times the other two: e.g. an array saved (Z, Y, X) with a (10, 1.5, 1.5) mm affine.
SLICE_AXIS_RATIO = 1.5


def nifti_slice_axis(affine, shape) -> int:
    """The voxel axis along which a NIfTI volume's slices are stacked: the third (2), unless the
    affine makes another axis clearly the thick one (its voxel size :data:`SLICE_AXIS_RATIO` times
    the other two's, and more than one voxel along it)."""
    sizes = np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0)
    if len(shape) < 3 or shape[2] <= 1:  # one slice (a 2D image): nothing to choose
        return 2
    for axis in (0, 1):
        others = [sizes[a] for a in range(3) if a != axis]
        if shape[axis] > 1 and sizes[axis] >= SLICE_AXIS_RATIO * max(others):
            return axis
    return 2


def _nifti_input(path: Path, image, volume: np.ndarray, frame) -> LoadedInput:
    """Slices ``volume[:, :, k].T`` of the (X, Y, Z) grid, after moving the slice axis
    (:func:`nifti_slice_axis`) to the third place; spacing in mm from the header's zooms and its
    ``xyzt_units`` (:data:`NIFTI_UNITS_MM`)."""
    zooms = [float(z) for z in image.header.get_zooms()[:3]] + [1.0] * (3 - len(image.header.get_zooms()[:3]))
    unit = image.header.get_xyzt_units()[0] or "unknown"
    scale = NIFTI_UNITS_MM.get(unit, 1.0)
    zooms = [z * scale for z in zooms]
    axis = nifti_slice_axis(image.affine, volume.shape)
    extra = {}
    if axis != 2:
        volume = np.moveaxis(volume, axis, 2)
        zooms = [z for a, z in enumerate(zooms) if a != axis] + [zooms[axis]]
        extra["slice_axis"] = axis
    spacing = _valid_spacing((zooms[1], zooms[0]))
    thickness = zooms[2] if volume.shape[2] > 1 and zooms[2] > 0 else None
    return LoadedInput(
        name=str(path), slices=[np.ascontiguousarray(volume[:, :, k].T) for k in range(volume.shape[2])],
        is_volume=volume.shape[2] > 1, pixel_spacing=spacing, slice_thickness=thickness, kind="nifti",
        affine=image.affine, header=image.header, frame=frame, native_shape=volume.shape, extra=extra,
    )


def read_array_file(path: Path) -> LoadedInput:
    """A ``.npy`` array (H, W) or (Z, H, W), read without pickles; no spacing."""
    try:
        array = np.load(str(path), allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise InputError(f"{path}: unreadable .npy file ({type(error).__name__}: {error})") from None
    loaded = _load_in_memory(array)
    loaded.name = str(path)
    return loaded


def load_input(item, frame: int | None = None, pixel_spacing=None, slice_thickness=None) -> LoadedInput:
    """Read one pipeline input: a path (a file, or a folder holding one DICOM series), a PIL image,
    a numpy array or torch tensor (H, W) or (Z, H, W), or a :class:`LoadedInput` already read
    (returned as is, so a caller can read once and pass it on). A file is read by its extension; a
    file without a known one is read as DICOM when it has the DICOM preamble.

    ``pixel_spacing``/``slice_thickness`` override (or supply) what the source says.
    """
    if isinstance(item, LoadedInput):
        loaded = replace(item)  # a copy: the overrides below never change the caller's object
    elif isinstance(item, (str, os.PathLike)):
        path = Path(item)
        if path.is_dir():
            loaded = read_dicom_series(path, frame)
        else:
            loaded = _read_file(path, frame)
    else:
        loaded = _load_in_memory(item)
    if pixel_spacing is not None:
        spacing = _valid_spacing(pixel_spacing)
        if spacing is None:
            raise InputError(f"{loaded.name}: {argument('pixel_spacing')} must be two positive numbers (row_mm, col_mm), got {pixel_spacing!r}")
        loaded.pixel_spacing = spacing
    if slice_thickness is not None:
        if not float(slice_thickness) > 0:
            raise InputError(f"{loaded.name}: {argument('slice_thickness')} must be positive, got {slice_thickness!r}")
        loaded.slice_thickness = float(slice_thickness)
        loaded.extra = {k: v for k, v in loaded.extra.items() if k != "slice_spacing_warning"}  # the caller's spacing
    return loaded


def _read_file(path: Path, frame) -> LoadedInput:
    extension = _extension(path)
    if extension not in SUPPORTED and not _has_dicom_preamble(path):
        raise InputError(f"{path}: unsupported file type {extension or '(no extension)'!r}; supported: {SUPPORTED_TEXT}")
    _check_file(path)
    if extension in NIFTI_EXTENSIONS:
        return read_nifti_file(path, frame)
    if extension in IMAGE_EXTENSIONS:
        return read_image_file(path)
    if extension in ARRAY_EXTENSIONS:
        return read_array_file(path)
    return read_dicom_file(path, frame)  # a DICOM extension, or none but the DICOM preamble


def load_frames(item) -> list:
    """Every frame (phase) of one input, each a :class:`LoadedInput`, the file read once: a 4D NIfTI
    gives its frames, a cine DICOM series or multi-frame file its phases, anything else one item."""
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        if path.is_dir():
            return dicom_series_phases(path)
        extension = _extension(path)
        if extension in NIFTI_EXTENSIONS and path.is_file():
            _check_file(path)
            return nifti_frames(path)
        if path.is_file() and extension not in IMAGE_EXTENSIONS + ARRAY_EXTENSIONS + NIFTI_EXTENSIONS and is_dicom_file(path):
            _check_file(path)
            return dicom_file_phases(path)
    return [load_input(item)]


def check_stack(inputs: list) -> None:
    """Refuse 2D DICOM inputs that cannot be the slices of one stack (``stack=True``): images of
    different series, or two images at one position (two phases of a slice)."""
    seen_series, seen_positions = {}, {}
    for loaded in inputs:
        if loaded.kind != "dicom" or loaded.is_volume:
            continue
        series = loaded.extra.get("SeriesInstanceUID")
        if series:
            seen_series.setdefault(series, loaded.name)
        position = tuple(round(v, 2) for v in loaded.extra.get("ImagePositionPatient") or ())
        if position and series:
            other = seen_positions.setdefault((series, position), loaded.name)
            if other != loaded.name:
                raise InputError(
                    f"{loaded.name}: same slice position as {other} (two phases of one slice); stack=True stacks the "
                    "slices of one phase: pass the series folder with frame=, or one phase's files")
    if len(seen_series) > 1:
        names = list(seen_series.values())
        raise InputError(f"{names[1]}: another DICOM series than {names[0]}; stack=True stacks the slices of one series")


def _load_in_memory(item) -> LoadedInput:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        Image = None
    if Image is not None and isinstance(item, Image.Image):
        from .image_processing_halsr import to_gray_float32

        array = to_gray_float32(item, "PIL image")
        return LoadedInput(name=f"PIL image {item.size[0]}x{item.size[1]} mode {item.mode}", slices=[array], kind="pil")
    try:
        import torch

        if isinstance(item, torch.Tensor):
            item = item.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    if not isinstance(item, np.ndarray):
        raise InputError(
            f"unsupported input of type {type(item).__name__}: pass a file path, a PIL image, a numpy array or a torch tensor"
        )
    name = f"array {tuple(item.shape)}"
    if item.dtype == bool or not np.issubdtype(item.dtype, np.number):
        raise InputError(f"{name}: expected numeric pixel values, got dtype {item.dtype}")
    if item.ndim == 2:
        return LoadedInput(name=name, slices=[item.astype(np.float32)], kind="array", native_shape=item.shape)
    if item.ndim == 3:
        if item.shape[-1] in (3, 4) and item.shape[0] > 4:
            from .image_processing_halsr import to_gray_float32

            return LoadedInput(name=name, slices=[to_gray_float32(item, name)], kind="array", native_shape=item.shape)
        return LoadedInput(name=name, slices=[s.astype(np.float32) for s in item], is_volume=True, kind="array",
                           native_shape=item.shape)
    raise InputError(f"{name}: expected (H, W) or (Z, H, W), got {item.ndim} dimensions")


def check_can_write(path, overwrite: bool = False) -> Path:
    """Raise :class:`InputError` when ``path`` exists and ``overwrite`` is not set."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"{path}: already exists; pass {argument('overwrite', True)} to replace it")
    return path


def atomic_write(path, write, overwrite: bool = False) -> Path:
    """:func:`atomic.atomic_file` after :func:`check_can_write` (refused if ``path`` exists, unless
    ``overwrite``)."""
    return atomic_file(check_can_write(path, overwrite), write)


def save_mask(label_map: np.ndarray, path, loaded: LoadedInput | None = None, overwrite: bool = False) -> Path:
    """Write a label map (H, W) or (Z, H, W) of ids 0/1/2 losslessly.

    ``.png``: an 8-bit PNG of the ids (2D only). ``.nii``/``.nii.gz``: a uint8 NIfTI on the input's
    voxel grid with its affine (and header, for a NIfTI input) when ``loaded`` knows it (NIfTI files,
    DICOM series and multi-frame files), so it overlays exactly in ITK-SNAP / 3D Slicer, else with an
    affine built from the known spacing. A (T, Z, H, W) label map (every frame of a cine) is written
    as a 4D NIfTI. The file is written to a temporary name and renamed; an existing file is refused
    unless ``overwrite``.
    """
    path = Path(path)
    label_map = np.asarray(label_map, dtype=np.uint8)
    extension = _extension(path)
    if extension == ".png":
        if label_map.ndim != 2:
            raise InputError(f"{path}: PNG masks hold one slice; got shape {label_map.shape} (use .nii.gz for volumes)")
        _require("PIL", "pillow", path, "PNG masks")
        from PIL import Image

        return atomic_write(path, lambda tmp: Image.fromarray(label_map, mode="L").save(tmp, format="PNG"), overwrite=overwrite)
    if extension in NIFTI_EXTENSIONS:
        nib = _require("nibabel", "nibabel", path, "NIfTI masks")
        volume = label_map[None] if label_map.ndim == 2 else label_map
        if volume.ndim == 4:  # (T, Z, H, W) -> (X, Y, Z, T)
            data = np.transpose(volume, (3, 2, 1, 0))
        else:
            data = np.transpose(volume, (2, 1, 0))  # (Z, H, W) -> (X, Y, Z)
        axis = loaded.extra.get("slice_axis", 2) if loaded is not None else 2
        data = np.ascontiguousarray(np.moveaxis(data, 2, axis))  # the slice axis back where the input had it
        if loaded is not None and loaded.kind == "nifti" and loaded.affine is not None:
            header = loaded.header.copy()
            header.set_data_dtype(np.uint8)
            if len(loaded.native_shape) == 2:
                data = data[:, :, 0]
            image = nib.Nifti1Image(data, loaded.affine, header)
        elif loaded is not None and loaded.affine is not None:
            image = nib.Nifti1Image(data, loaded.affine)
        else:
            spacing = (loaded.pixel_spacing if loaded is not None else None) or (1.0, 1.0)
            thickness = (loaded.slice_thickness if loaded is not None else None) or 1.0
            image = nib.Nifti1Image(data, np.diag([spacing[1], spacing[0], thickness, 1.0]))
        image.header.set_intent("label")
        return atomic_write(path, lambda tmp: nib.save(image, tmp), overwrite=overwrite)
    raise InputError(f"{path}: masks are written as .png or .nii/.nii.gz, not {extension!r}")
