"""MyoPS 2020 (the challenge's training set): cine bSSFP (C0) and late gadolinium enhancement (LGE)
NIfTI volumes of 45 patients, with one label volume on the same grid.

Layout (as in ``../shared/data/myops2020``): ``CaseNNNN/CaseNNNN_C0.nii.gz``,
``CaseNNNN_LGE.nii.gz`` and ``CaseNNNN_gd.nii.gz`` (``.nii`` accepted too); the challenge's T2
sequence, if present, is not read. All three of a case share one voxel grid (about 480x480 pixels
at 0.73-0.76 mm, 2-6 slices 12-23 mm apart, int16, real affines); the images were registered to the
LGE and are zero outside a body region (kept as they are).

- Every volume is read with :func:`halsr_hf.image_io.read_nifti_file`, the pipeline's NIfTI reader:
  a slice of a training row is oriented exactly as the pipeline sees that slice of the same file at
  inference (``data[:, :, k].T``, no header-based reorientation; the files come in several voxel
  orientations, e.g. LSP and PSR). ``image`` is the int16 value as float32; ``pixel_spacing`` =
  (zoom_y, zoom_x) and ``slice_thickness`` = zoom_z (the distance between slice centres), in mm,
  from the header, as that reader reports them.
- The three volumes of a case must have the same shape and affine (:class:`InputError` otherwise).
- Labels (gd), by name (:data:`MYOPS_LABELS` -> :data:`MYOPS_TO_CANONICAL`, :func:`schema.remap_labels`):
  500 LV cavity -> 1; 200 normal myocardium, 1220 oedema, 2221 scar -> 2 (myocardium); 600 RV
  cavity -> 0, or 3 with ``keep_rv``. Any other value is an :class:`InputError` naming the file.
- One row per slice per sequence: ``source`` is ``myops2020-cine`` (C0) or ``myops2020-lge`` (LGE),
  so that results can be reported per sequence; both rows of a slice share the label.
  ``patient_id`` is the case (``Case3001``) for both sequences, so a patient's two sequences always
  share a split. ``phase`` is ``unknown``: MyoPS gives one cine frame and does not say which (it is
  usually, not certainly, end-diastole). ``slice_index``/``num_slices`` count the volume's slices
  (every slice is labelled: complete stacks, scored in 3D by ``halsr-hf evaluate``).
- ``sequences`` chooses what to convert (default both); the split does not depend on it.
- No official split: a seeded patient-level split (:func:`schema.split_patients`) over every case
  found, by default :data:`DEFAULT_RATIOS` (31/6/8 of the 45 patients). The seed, the ratios and the
  patients of each split are written to the dataset description (and so to its card).
- ``group``, ``height``, ``weight``: null (not in the release).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..image_io import read_nifti_file
from .schema import build_dataset_dict, describe_split, make_row, parallel_map, remap_labels, split_patients

SOURCE = "myops2020"
#: sequence (file suffix) -> ``source`` of its rows
SEQUENCES = {"C0": "myops2020-cine", "LGE": "myops2020-lge"}
#: MyoPS label values and their names (the challenge's definitions)
MYOPS_LABELS = {0: "background", 500: "lv_cavity", 200: "normal_myocardium", 1220: "edema", 2221: "scar",
                600: "rv_cavity"}
#: MyoPS label name -> canonical name: the LV myocardium is normal myocardium + oedema + scar
MYOPS_TO_CANONICAL = {"background": "background", "lv_cavity": "lv_cavity", "normal_myocardium": "myocardium",
                      "edema": "myocardium", "scar": "myocardium", "rv_cavity": "rv_cavity"}
#: train, validation, test: 31 / 6 / 8 of 45 patients
DEFAULT_RATIOS = (0.69, 0.13, 0.18)

LICENSE = "other"
HOMEPAGE = "https://zmiclab.github.io/zxh/0/myops20/"
CITATION = """@article{zhuang2019mvmm,
  title   = {Multivariate Mixture Model for Myocardial Segmentation Combining Multi-Source Images},
  author  = {Zhuang, Xiahai},
  journal = {IEEE Transactions on Pattern Analysis and Machine Intelligence},
  volume  = {41}, number = {12}, pages = {2933--2946}, year = {2019}
}
@article{li2023myops,
  title   = {MyoPS: A Benchmark of Myocardial Pathology Segmentation Combining Three-Sequence Cardiac Magnetic Resonance Images},
  author  = {Li, Lei and Wu, Fuping and Wang, Sihan and Luo, Xinzhe and Mart{\\'\\i}n-Isla, Carlos and Zhai, Shuwei and others},
  journal = {Medical Image Analysis},
  volume  = {87}, pages = {102808}, year = {2023}
}"""
_CASE = re.compile(r"^Case\d+$")


def myops_to_canonical(label, keep_rv: bool = False, name: str = "MyoPS label") -> np.ndarray:
    """MyoPS gd values to canonical ids, by name: LV cavity 1; normal myocardium, oedema and scar 2;
    RV cavity 0 (3 with ``keep_rv``). Unknown values raise :class:`InputError` naming ``name``."""
    values = {value: MYOPS_TO_CANONICAL[label_name] for value, label_name in MYOPS_LABELS.items()}
    return remap_labels(label, values, keep_rv, name)


def _volume_path(folder: Path, case: str, suffix: str) -> Path:
    for extension in (".nii.gz", ".nii"):
        path = folder / f"{case}_{suffix}{extension}"
        if path.is_file():
            return path
    raise InputError(f"{folder / f'{case}_{suffix}.nii.gz'}: no such file")


def read_myops_case(folder, sequences=tuple(SEQUENCES)) -> dict:
    """``{"gd": LoadedInput, "C0": LoadedInput, "LGE": LoadedInput}`` (the sequences asked for) of
    one ``CaseNNNN`` folder, each read by :func:`halsr_hf.image_io.read_nifti_file`; checks that they
    share one grid (shape and affine)."""
    folder = Path(folder)
    case = folder.name
    loaded = {"gd": read_nifti_file(_volume_path(folder, case, "gd"))}
    for sequence in sequences:
        loaded[sequence] = read_nifti_file(_volume_path(folder, case, sequence))
    gd = loaded["gd"]
    for sequence in sequences:
        image = loaded[sequence]
        if image.native_shape != gd.native_shape:
            raise InputError(f"{gd.name}: label shape {gd.native_shape} differs from the shape {image.native_shape} "
                             f"of its image {image.name}")
        if not np.allclose(image.affine, gd.affine, atol=1e-3):
            raise InputError(f"{gd.name}: label affine differs from the affine of its image {image.name} "
                             "(not on the same voxel grid)")
    return loaded


def _convert_case(job: tuple) -> list[dict]:
    folder, sequences, keep_rv = job
    loaded = read_myops_case(folder, sequences)
    gd = loaded["gd"]
    labels = np.stack(gd.slices)  # float32, as image_io reads every NIfTI: back to the integers of the file
    if np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)):
        labels = labels.astype(np.int64)
    labels = myops_to_canonical(labels, keep_rv, gd.name)
    rows = []
    for sequence in sequences:
        image = loaded[sequence]
        for k, (slice_image, label) in enumerate(zip(image.slices, labels)):
            rows.append(make_row(
                slice_image, label, name=f"{image.name} slice {k}", patient_id=folder.name, source=SEQUENCES[sequence],
                phase="unknown", slice_index=k, num_slices=len(image.slices), pixel_spacing=image.pixel_spacing,
                slice_thickness=image.slice_thickness,
            ))
    return rows


def find_cases(source) -> list[Path]:
    """The ``CaseNNNN`` folders under ``source``, sorted; :class:`InputError` when there is none."""
    source = Path(source)
    if not source.is_dir():
        raise InputError(f"{source}: no such folder (expected the MyoPS 2020 layout: CaseNNNN/CaseNNNN_{{C0,LGE,gd}}.nii.gz)")
    cases = sorted(p for p in source.iterdir() if p.is_dir() and _CASE.match(p.name))
    if not cases:
        raise InputError(f"{source}: no CaseNNNN folders (expected the MyoPS 2020 layout: CaseNNNN/CaseNNNN_{{C0,LGE,gd}}.nii.gz)")
    return cases


def check_sequences(sequences) -> tuple:
    sequences = tuple(dict.fromkeys(str(s) for s in sequences))  # unique, in the order given
    unknown = [s for s in sequences if s not in SEQUENCES]
    if unknown or not sequences:
        raise InputError(f"sequences: expected one or more of {list(SEQUENCES)}, got {list(sequences)}")
    return sequences


def myops_splits(source, ratios=DEFAULT_RATIOS, split_seed: int = 0) -> dict[str, list[str]]:
    """``{split: [CaseNNNN, ...]}``: the seeded patient-level split of every case under ``source``
    (what :func:`prepare_myops2020` uses; it reads no image)."""
    return split_patients([c.name for c in find_cases(source)], ratios, split_seed)


def prepare_myops2020(source, *, sequences=tuple(SEQUENCES), keep_rv: bool = False, split_seed: int = 0,
                      ratios=DEFAULT_RATIOS, num_proc: int | None = None):
    """Convert the MyoPS 2020 layout to a ``DatasetDict`` (seeded patient-level train/validation/test
    split). See the module docstring for what each column holds."""
    sequences = check_sequences(sequences)
    cases = find_cases(source)
    assignment = myops_splits(source, ratios, split_seed)
    split_of = {p: split for split, ids in assignment.items() for p in ids}
    rows = parallel_map(_convert_case, [(c, sequences, keep_rv) for c in cases], num_proc, desc="myops2020")
    rows_by_split: dict[str, list] = {split: [] for split in assignment}
    for case, case_rows in zip(cases, rows):
        rows_by_split[split_of[case.name]] += case_rows
    names = ", ".join(f"{s} ({SEQUENCES[s]})" for s in sequences)
    return build_dataset_dict(
        rows_by_split, SOURCE, keep_rv,
        description="MyoPS 2020 training set (Zhuang 2019; Li et al. 2023): 2D short-axis slices of the "
        f"sequences {names}, read as the halsr-hf pipeline reads a NIfTI; real spacing from the header; "
        "labels LV cavity, myocardium = normal + oedema + scar.\n" + describe_split(assignment, split_seed, ratios),
        citation=CITATION, homepage=HOMEPAGE, license=LICENSE,
    )
