"""Reading pipeline inputs (files, PIL images, arrays, tensors) and writing masks.

Every reader returns a :class:`LoadedInput`: the slices as float32 (H, W) arrays in the model's
in-plane convention, physical spacing when the source knows it, and what is needed to write a
mask back onto the input's own voxel grid (NIfTI affine and header).

In-plane convention: a NIfTI volume of shape (X, Y, Z) gives slices ``data[:, :, k].T`` of shape
(Y, X) (rows = the second voxel axis), the convention of the ACDC arrays the model was trained on
(SSL4MIS arrays are ``sitk.GetArrayFromImage`` of the ACDC NIfTI files). Other scanners/converters
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

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_file
from .errors import InputError, argument

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DICOM_EXTENSIONS = (".dcm", ".dicom", ".ima")
NIFTI_EXTENSIONS = (".nii", ".nii.gz")
SUPPORTED = IMAGE_EXTENSIONS + DICOM_EXTENSIONS + NIFTI_EXTENSIONS


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
        affine, header: the NIfTI affine/header (to write masks aligned with the input).
        frame: the 4D frame used, if any.
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
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected an image file ({', '.join(SUPPORTED)})")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")


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
    value = getattr(dataset, name, None)
    if value in (None, ""):
        return None
    try:
        return cast(value)
    except (TypeError, ValueError):
        return None


def read_dicom_file(path: Path) -> LoadedInput:
    """One DICOM file (single- or multi-frame); rescale slope/intercept applied. ``pixel_spacing``
    from PixelSpacing; ``slice_thickness`` (the distance between slice centres) from
    SpacingBetweenSlices, else SliceThickness. ``extra`` keeps ImageOrientationPatient,
    InstanceNumber and CardiacNumberOfImages (None when absent). The one DICOM reader: the
    pipeline and the dataset converters (``halsr_hf.data.sunnybrook``) use it."""
    pydicom = _require("pydicom", "pydicom", path, "DICOM files")
    from pydicom.errors import InvalidDicomError

    try:
        dataset = pydicom.dcmread(str(path))
        array = dataset.pixel_array.astype(np.float32)
    except (InvalidDicomError, AttributeError, OSError, ValueError, KeyError, TypeError, EOFError,
            NotImplementedError, RuntimeError) as error:  # the last two: unsupported transfer syntax / no decoder
        raise InputError(f"{path}: unreadable or truncated DICOM file ({type(error).__name__}: {error})") from None
    slope = float(getattr(dataset, "RescaleSlope", 1) or 1)
    intercept = float(getattr(dataset, "RescaleIntercept", 0) or 0)
    array = array * slope + intercept
    spacing = _valid_spacing(getattr(dataset, "PixelSpacing", None))
    thickness = getattr(dataset, "SpacingBetweenSlices", None) or getattr(dataset, "SliceThickness", None)
    thickness = float(thickness) if thickness not in (None, "") and float(thickness) > 0 else None
    if array.ndim == 2:
        slices, is_volume = [array], False
    elif array.ndim == 3 and getattr(dataset, "SamplesPerPixel", 1) == 1:
        slices, is_volume = list(array), True
    else:
        raise InputError(f"{path}: unsupported DICOM pixel data of shape {array.shape} (expected grayscale)")
    return LoadedInput(
        name=str(path), slices=slices, is_volume=is_volume, pixel_spacing=spacing, slice_thickness=thickness,
        kind="dicom", native_shape=array.shape,
        extra={"ImageOrientationPatient": [float(v) for v in getattr(dataset, "ImageOrientationPatient", [])],
               "InstanceNumber": _dicom_tag(dataset, "InstanceNumber", int),
               "CardiacNumberOfImages": _dicom_tag(dataset, "CardiacNumberOfImages", int)},
    )


def read_nifti_file(path: Path, frame: int | None = None) -> LoadedInput:
    """NIfTI 2D, 3D or 4D (then ``frame`` is required). Spacing from the header zooms."""
    nib = _require("nibabel", "nibabel", path, "NIfTI files")

    try:
        image = nib.load(str(path))
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as error:  # nibabel raises many types (ImageFileError, EOFError, zlib.error...)
        raise InputError(f"{path}: unreadable or truncated NIfTI file ({type(error).__name__}: {error})") from None
    zooms = tuple(float(z) for z in image.header.get_zooms())
    if data.ndim == 4:
        if data.shape[3] == 1:
            data = data[..., 0]
        elif frame is None:
            raise InputError(f"{path}: 4D NIfTI with {data.shape[3]} frames; pass {argument('frame')} (0-based) to choose one")
        elif not -data.shape[3] <= frame < data.shape[3]:
            raise InputError(f"{path}: {argument('frame', frame)} out of range for {data.shape[3]} frames (0-based)")
        else:
            data = data[..., frame]
    elif frame is not None and frame != 0:
        raise InputError(f"{path}: {argument('frame', frame)} given but the NIfTI has no time axis (shape {data.shape})")
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise InputError(f"{path}: unsupported NIfTI shape {data.shape} (expected 2D, 3D or 4D)")
    slices = [np.ascontiguousarray(data[:, :, k].T) for k in range(data.shape[2])]
    spacing = _valid_spacing((zooms[1], zooms[0])) if len(zooms) >= 2 else None
    thickness = zooms[2] if len(zooms) >= 3 and data.shape[2] > 1 and zooms[2] > 0 else None
    return LoadedInput(
        name=str(path), slices=slices, is_volume=data.shape[2] > 1, pixel_spacing=spacing, slice_thickness=thickness,
        kind="nifti", affine=image.affine, header=image.header, frame=frame, native_shape=data.shape,
    )


def load_input(item, frame: int | None = None, pixel_spacing=None, slice_thickness=None) -> LoadedInput:
    """Read one pipeline input: a path, a PIL image, a numpy array or torch tensor (H, W) or (Z, H, W).
    A path is read by its extension; a file without a known one is read as DICOM when it has the
    DICOM preamble.

    ``pixel_spacing``/``slice_thickness`` override (or supply) what the source says.
    """
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        extension = _extension(path)
        if extension not in SUPPORTED and not _has_dicom_preamble(path):
            raise InputError(f"{path}: unsupported file type {extension or '(no extension)'!r}; supported: {', '.join(SUPPORTED)}")
        _check_file(path)
        if extension in NIFTI_EXTENSIONS:
            loaded = read_nifti_file(path, frame)
        elif extension in IMAGE_EXTENSIONS:
            loaded = read_image_file(path)
        else:  # a DICOM extension, or none but the DICOM preamble
            loaded = read_dicom_file(path)
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
    return loaded


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
    voxel grid with its affine and header when ``loaded`` came from a NIfTI file (so it overlays
    exactly in ITK-SNAP / 3D Slicer), else with an affine built from the known spacing. The file
    is written to a temporary name and renamed; an existing file is refused unless ``overwrite``.
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
        data = np.ascontiguousarray(np.transpose(volume, (2, 1, 0)))  # (Z, H, W) -> (X, Y, Z)
        if loaded is not None and loaded.kind == "nifti" and loaded.affine is not None:
            header = loaded.header.copy()
            header.set_data_dtype(np.uint8)
            if len(loaded.native_shape) == 2:
                data = data[:, :, 0]
            image = nib.Nifti1Image(data, loaded.affine, header)
        else:
            spacing = (loaded.pixel_spacing if loaded is not None else None) or (1.0, 1.0)
            thickness = (loaded.slice_thickness if loaded is not None else None) or 1.0
            image = nib.Nifti1Image(data, np.diag([spacing[1], spacing[0], thickness, 1.0]))
        image.header.set_intent("label")
        return atomic_write(path, lambda tmp: nib.save(image, tmp), overwrite=overwrite)
    raise InputError(f"{path}: masks are written as .png or .nii/.nii.gz, not {extension!r}")
