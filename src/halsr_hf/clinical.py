"""Clinical measures from LV label maps: areas, volumes, stroke volume, ejection fraction, mass.

The ONE module for physical-unit computations. Label maps use the canonical labels
(0 background, 1 lv_cavity, 2 myocardium); any other label value is refused, which catches maps
that were not converted from a dataset's own label order (raw ACDC uses 3 for the LV cavity).

Units are in the names: ``_mm2``, ``_ml``, ``_g``, ``_percent``; ``_pixels``/``_voxels`` are counts.

Volumes use slice summation (Simpson's method on the short-axis stack)::

    volume_ml = voxels * row_mm * col_mm * (slice_thickness_mm + slice_gap_mm) / 1000

``slice_thickness + slice_gap`` is the centre-to-centre distance between slices; if you have that
distance directly (e.g. DICOM SpacingBetweenSlices or a NIfTI z spacing), pass it as
``slice_thickness`` with ``slice_gap=0``.

When the spacing is unknown (``pixel_spacing=None`` and ``slice_thickness=None``, as for the
SSL4MIS ACDC copy), :func:`cardiac_function` still gives the ejection fraction, because the voxel
volume cancels in (EDV - ESV) / EDV; volumes are then reported in voxels (``*_voxels`` keys,
``volume_unit == "voxels"``) and the ``*_ml`` / mass entries are ``None``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import List, Optional

import numpy as np

from .errors import InputError

LV_CAVITY = 1
MYOCARDIUM = 2
#: Myocardial tissue density used for the mass, g/ml.
MYOCARDIUM_DENSITY_G_PER_ML = 1.05

__all__ = [
    "CardiacFunction",
    "MYOCARDIUM_DENSITY_G_PER_ML",
    "areas",
    "cardiac_function",
    "ejection_fraction",
    "function_warnings",
    "ejection_fraction_percent",
    "myocardial_mass_g",
    "stroke_volume",
    "volumes_ml",
]


def _label_map(arr, name: str, ndim: int) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != ndim:
        what = "(H, W) slice" if ndim == 2 else "(Z, H, W) stack of short-axis slices"
        raise InputError(f"{name}: expected a {ndim}D label map, a {what}; got shape {a.shape}")
    if a.size == 0:
        raise InputError(f"{name}: empty array of shape {a.shape}")
    if a.dtype == bool:
        a = a.astype(np.uint8)
    elif a.dtype.kind == "f":
        if not np.all(np.isfinite(a)):
            raise InputError(f"{name}: label map contains NaN or infinite values")
        if not np.all(a == np.round(a)):
            raise InputError(f"{name}: label map has non-integer values (dtype {a.dtype})")
        a = a.astype(np.int64)
    elif a.dtype.kind not in "iu":
        raise InputError(f"{name}: label map must hold integer labels, got dtype {a.dtype}")
    # min/max first: np.unique sorts the whole map, and this check runs on every frame of a cohort
    unexpected = np.empty(0) if 0 <= a.min() and a.max() <= max(LV_CAVITY, MYOCARDIUM) else \
        np.setdiff1d(np.unique(a), [0, LV_CAVITY, MYOCARDIUM])
    if unexpected.size:
        raise InputError(
            f"{name}: unexpected label values {unexpected.tolist()}; expected the canonical labels "
            "0 background, 1 lv_cavity, 2 myocardium (map the dataset's labels first)"
        )
    return a


def _positive(value, name: str, allow_zero: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        need = "non-negative" if allow_zero else "positive"
        raise InputError(f"{name}: must be {need} and finite, got {value!r}")
    return v


def _pixel_spacing(pixel_spacing) -> tuple:
    try:
        values = [float(v) for v in pixel_spacing]
    except (TypeError, ValueError):
        raise InputError(
            f"pixel_spacing: expected (row_mm, col_mm), got {pixel_spacing!r}"
        ) from None
    if len(values) != 2:
        raise InputError(f"pixel_spacing: expected 2 values (row_mm, col_mm), got {pixel_spacing!r}")
    return tuple(_positive(v, "pixel_spacing") for v in values)


def areas(label_map, pixel_spacing=None) -> dict:
    """Pixel counts and areas of the LV cavity and myocardium on one 2D slice.

    Returns ``lv_cavity_pixels``, ``myocardium_pixels`` (ints) and ``lv_cavity_mm2``,
    ``myocardium_mm2`` (floats, ``None`` when ``pixel_spacing`` is None).
    """
    a = _label_map(label_map, "label_map", 2)
    px = None if pixel_spacing is None else _pixel_spacing(pixel_spacing)
    out = {}
    for label, name in ((LV_CAVITY, "lv_cavity"), (MYOCARDIUM, "myocardium")):
        n = int(np.count_nonzero(a == label))
        out[f"{name}_pixels"] = n
        out[f"{name}_mm2"] = None if px is None else n * px[0] * px[1]
    return out


def _voxel_counts(a: np.ndarray) -> dict:
    return {
        "lv_cavity_voxels": int(np.count_nonzero(a == LV_CAVITY)),
        "myocardium_voxels": int(np.count_nonzero(a == MYOCARDIUM)),
    }


def volumes_ml(label_map_3d, pixel_spacing, slice_thickness, slice_gap: float = 0.0) -> dict:
    """LV cavity and myocardium volumes of a (Z, H, W) short-axis stack by slice summation.

    Args:
        label_map_3d: (Z, H, W) canonical label map.
        pixel_spacing: (row_mm, col_mm) in-plane spacing.
        slice_thickness: slice thickness in mm.
        slice_gap: gap between slices in mm (the slice spacing is thickness + gap).

    Returns ``lv_cavity_voxels``, ``myocardium_voxels``, ``lv_cavity_ml``, ``myocardium_ml``.
    """
    a = _label_map(label_map_3d, "label_map_3d", 3)
    row, col = _pixel_spacing(pixel_spacing)
    step = _positive(slice_thickness, "slice_thickness") + _positive(
        slice_gap, "slice_gap", allow_zero=True
    )
    voxel_ml = row * col * step / 1000.0
    out = _voxel_counts(a)
    out["lv_cavity_ml"] = out["lv_cavity_voxels"] * voxel_ml
    out["myocardium_ml"] = out["myocardium_voxels"] * voxel_ml
    return out


def myocardial_mass_g(myo_volume_ml, density: float = MYOCARDIUM_DENSITY_G_PER_ML) -> float:
    """Myocardial mass in g: volume (ml) times tissue density (g/ml, default 1.05)."""
    return _positive(myo_volume_ml, "myo_volume_ml", allow_zero=True) * _positive(density, "density")


def stroke_volume(edv, esv) -> float:
    """Stroke volume EDV - ESV (same unit as the inputs; negative if ESV > EDV)."""
    return _positive(edv, "edv", allow_zero=True) - _positive(esv, "esv", allow_zero=True)


def ejection_fraction_percent(edv, esv) -> float:
    """Ejection fraction in percent, 100 * (EDV - ESV) / EDV (any common unit, even voxels).

    Raises InputError for negative/NaN volumes or EDV = 0; a result outside 0-100 % (ESV > EDV)
    is returned as is: :func:`cardiac_function` reports it as a warning.
    """
    edv_v = _positive(edv, "edv", allow_zero=True)
    esv_v = _positive(esv, "esv", allow_zero=True)
    if edv_v == 0:
        raise InputError("edv: end-diastolic volume is 0, the ejection fraction is undefined")
    return 100.0 * (edv_v - esv_v) / edv_v


@dataclasses.dataclass
class CardiacFunction:
    """LV function from an ED and an ES label stack. ``*_ml`` and mass are None when the spacing
    is unknown; ``ef_percent`` is NaN when the ED cavity is empty (see ``warnings``)."""

    ef_percent: float
    edv_voxels: int
    esv_voxels: int
    sv_voxels: int
    edv_ml: Optional[float] = None
    esv_ml: Optional[float] = None
    sv_ml: Optional[float] = None
    ed_myocardium_ml: Optional[float] = None
    myocardial_mass_g: Optional[float] = None
    volume_unit: str = "voxels"
    warnings: List[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def cardiac_function(
    ed_label_map,
    es_label_map,
    pixel_spacing=None,
    slice_thickness=None,
    slice_gap: float = 0.0,
    density: float = MYOCARDIUM_DENSITY_G_PER_ML,
) -> dict:
    """EDV, ESV, stroke volume, ejection fraction and ED myocardial mass from label stacks.

    Args:
        ed_label_map, es_label_map: (Z, H, W) canonical label maps of the end-diastolic and
            end-systolic frames, same shape (same slices).
        pixel_spacing: (row_mm, col_mm), or None together with ``slice_thickness=None`` for
            voxel units (EF only, volumes in voxels).
        slice_thickness, slice_gap: in mm, see :func:`volumes_ml`.
        density: myocardial density in g/ml.

    Returns the fields of :class:`CardiacFunction` as a dict. Implausible results are reported
    in ``warnings`` (never hidden): empty ED or ES cavity, ESV > EDV, EF outside 0-100 %.
    Invalid input (shapes, labels, spacing) raises :class:`~halsr_hf.errors.InputError`.
    """
    ed = _label_map(ed_label_map, "ed_label_map", 3)
    es = _label_map(es_label_map, "es_label_map", 3)
    if ed.shape != es.shape:
        raise InputError(
            f"ed_label_map/es_label_map: shape mismatch {ed.shape} vs {es.shape} "
            "(ED and ES must cover the same slices)"
        )
    if (pixel_spacing is None) != (slice_thickness is None):
        raise InputError(
            "pixel_spacing/slice_thickness: give both for volumes in ml, or neither for voxel "
            f"units (got pixel_spacing={pixel_spacing!r}, slice_thickness={slice_thickness!r})"
        )
    physical = pixel_spacing is not None
    if physical:
        ed_v = volumes_ml(ed, pixel_spacing, slice_thickness, slice_gap)
        es_v = volumes_ml(es, pixel_spacing, slice_thickness, slice_gap)
        _positive(density, "density")
    else:
        ed_v, es_v = _voxel_counts(ed), _voxel_counts(es)

    warnings: List[str] = []
    edv_n, esv_n = ed_v["lv_cavity_voxels"], es_v["lv_cavity_voxels"]
    if edv_n == 0:
        warnings.append("ED label map has no lv_cavity: EDV is 0 and the ejection fraction is undefined")
        ef = math.nan
    else:
        ef = ejection_fraction_percent(edv_n, esv_n)
    if esv_n == 0:
        warnings.append("ES label map has no lv_cavity: ESV is 0 and the EF is 100 % (a missed segmentation, or not an ES image?)")
    if esv_n > edv_n:
        warnings.append(
            f"ESV > EDV ({esv_n} > {edv_n} voxels): ED and ES frames may be swapped, or the "
            "segmentation is wrong"
        )
    if not math.isnan(ef) and not 0.0 <= ef <= 100.0:
        warnings.append(f"ejection fraction {ef:.1f} % is outside 0-100 %")
    if ed_v["myocardium_voxels"] == 0:
        warnings.append("ED label map has no myocardium: myocardial mass is 0")

    result = CardiacFunction(
        ef_percent=ef,
        edv_voxels=edv_n,
        esv_voxels=esv_n,
        sv_voxels=edv_n - esv_n,
        volume_unit="ml" if physical else "voxels",
        warnings=warnings,
    )
    if physical:
        result.edv_ml = ed_v["lv_cavity_ml"]
        result.esv_ml = es_v["lv_cavity_ml"]
        result.sv_ml = result.edv_ml - result.esv_ml
        result.ed_myocardium_ml = ed_v["myocardium_ml"]
        result.myocardial_mass_g = myocardial_mass_g(result.ed_myocardium_ml, density)
    return result.to_dict()


#: An ejection fraction outside this range (percent) is reported by :func:`function_warnings`:
#: possible (severe dysfunction, hyperdynamic heart), but more often a wrong frame or segmentation.
PLAUSIBLE_EF_PERCENT = (10.0, 90.0)


def _segmented_slices(label_map: np.ndarray) -> np.ndarray:
    """Indices of the slices of a (Z, H, W) map that hold LV cavity."""
    return np.flatnonzero((label_map == LV_CAVITY).reshape(label_map.shape[0], -1).any(axis=1))


def function_warnings(ed_label_map, es_label_map, function: dict, same_frame: bool = False) -> List[str]:
    """What makes an EF from these ED/ES label stacks doubtful, beyond :func:`cardiac_function`'s own
    ``warnings`` (empty cavity, ESV > EDV, EF outside 0-100 %). One function for ``halsr-hf ef``
    and the cohort (``halsr-hf predict``), so both say the same:

    - ED and ES are one frame (``same_frame``) or identical label stacks (a phase copied as the other);
    - the EF is outside :data:`PLAUSIBLE_EF_PERCENT` (10-90 %);
    - the ES stack has fewer slices with LV cavity than the ED stack (a slice missed at ES makes the
      ESV too small and the EF too high), or ED or ES has a gap (a slice without cavity between two
      with cavity).

    ESV > EDV (frames given as ED and ES that may be swapped) is :func:`cardiac_function`'s warning.

    Args:
        ed_label_map, es_label_map: (Z, H, W) canonical label stacks, as given to :func:`cardiac_function`.
        function: :func:`cardiac_function`'s result for them.
    """
    ed = _label_map(ed_label_map, "ed_label_map", 3)
    es = _label_map(es_label_map, "es_label_map", 3)
    warnings: List[str] = []
    if same_frame or (ed.shape == es.shape and np.array_equal(ed, es)):
        warnings.append("ED and ES are " + ("the same frame" if same_frame else "identical label maps (one phase "
                                            "copied as the other?)") + ": the EF is not a measurement")
    ef = function.get("ef_percent")
    low, high = PLAUSIBLE_EF_PERCENT
    if ef is not None and math.isfinite(ef) and not low <= ef <= high:
        warnings.append(f"ejection fraction {ef:.1f} % is outside {low:.0f}-{high:.0f} %: check the ED/ES frames "
                        "and the segmentation")
    ed_slices, es_slices = _segmented_slices(ed), _segmented_slices(es)
    if len(es_slices) < len(ed_slices):
        warnings.append(f"ES has LV cavity on fewer slices than ED ({len(es_slices)} < {len(ed_slices)}): a slice "
                        "missed at ES makes the ESV too small and the EF too high")
    for phase, found in (("ED", ed_slices), ("ES", es_slices)):
        gaps = sorted(set(range(found[0], found[-1] + 1)) - set(found.tolist())) if len(found) else []
        if gaps:
            warnings.append(f"{phase} has slices without LV cavity between slices with it (slice(s) "
                            f"{', '.join(map(str, gaps))}): a missed slice")
    return warnings


def ejection_fraction(
    ed,
    es,
    pipe=None,
    ed_frame: Optional[int] = None,
    es_frame: Optional[int] = None,
    pixel_spacing=None,
    slice_thickness=None,
    batch_size: int = 16,
) -> dict:
    """Segment an ED and an ES short-axis volume with the pipeline and return
    :func:`cardiac_function` of the two label stacks (EDV, ESV, SV, EF, mass, warnings), with the
    warnings of :func:`function_warnings` added (the cohort's ``warnings`` say the same). With the
    model's setting ``es_within_ed`` on (the bundled model), the ES slices whose ED slice has no LV
    are emptied first (:func:`halsr_hf.roi_stage.restrict_es_result`), as in cohorts.

    Args:
        ed, es: volumes as paths (NIfTI 3D/4D, multi-frame DICOM) or (Z, H, W) arrays/tensors.
            For one 4D NIfTI holding both phases pass the same path with ``ed_frame``/``es_frame``.
        pipe: a ``cardiac-lv-segmentation`` pipeline; default: the bundled model.
        pixel_spacing, slice_thickness: override (or supply) the files' spacing; without any,
            volumes are in voxels and only the EF is meaningful.
    """
    if pipe is None:  # by name, lazily: this file is also remote code, where the halsr_hf package may be absent
        import importlib

        pipe = importlib.import_module("halsr_hf").load_pipeline()
    from .image_io import load_input  # lazily, as above

    results, notes = {}, []
    for phase, item, frame in (("ed", ed, ed_frame), ("es", es, es_frame)):
        kwargs = {"batch_size": batch_size}
        for key, value in (("frame", frame), ("pixel_spacing", pixel_spacing), ("slice_thickness", slice_thickness)):
            if value is not None:
                kwargs[key] = value
        path = item if isinstance(item, (str, os.PathLike)) else None
        if path is not None:  # read here, once, to see the reader's notes (spacing fallback)
            item = load_input(item, **{k: v for k, v in kwargs.items() if k != "batch_size"})
            kwargs = {"batch_size": batch_size}
            note = item.extra.get("slice_spacing_warning")
            if note and note not in notes:
                notes.append(note)
        out = pipe(item, **kwargs)
        if np.asarray(out["label_map"]).ndim != 3:
            name = str(path) if path is not None else f"{phase.upper()} input"
            raise InputError(f"{name}: the {phase.upper()} input is a single slice; EF needs a short-axis volume (Z, H, W)")
        results[phase] = out
    ed_out, es_out = results["ed"], results["es"]
    from .roi_stage import restrict_es_result, uses_es_within_ed  # lazily: roi_stage imports torch

    if uses_es_within_ed(pipe):
        restrict_es_result(ed_out, es_out)
    spacing = ed_out["pixel_spacing"]
    thickness = ed_out["slice_thickness"]
    if spacing is None or thickness is None:
        spacing = thickness = None
    function = cardiac_function(ed_out["label_map"], es_out["label_map"], spacing, thickness)
    same = isinstance(ed, (str, os.PathLike)) and isinstance(es, (str, os.PathLike)) and \
        os.path.abspath(ed) == os.path.abspath(es) and (ed_frame or 0) == (es_frame or 0)
    function["warnings"] = notes + function["warnings"] + function_warnings(
        ed_out["label_map"], es_out["label_map"], function, same_frame=same)
    function["ed_label_map"] = ed_out["label_map"]
    function["es_label_map"] = es_out["label_map"]
    return function
