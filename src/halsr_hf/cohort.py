"""Cohorts: a folder (or a CSV manifest) of subjects in; per-subject masks, JSON and LV volume
curves, one cohort CSV, ``errors.csv`` and an EF histogram out. Resumable, and parallel over
machines (``num_parts``/``part_id``) and processes (``accelerate launch``).

The command line is ``halsr-hf predict -i IN -o OUT`` (:mod:`halsr_hf.commands.predict`); the
Python API is :func:`predict_cohort` (and :func:`find_subjects` to see what a folder holds).

**What a subject is** (:func:`find_subjects`):

- ``IN`` a folder: each sub-folder is one subject (named after it), holding NIfTI files (one 3D file
  per phase, frames in natural name order, e.g. ``ED.nii.gz``, ``ES.nii.gz``; or one 4D cine),
  ``.npy`` volumes (Z, H, W), or one DICOM series (files at any depth; rules in
  :mod:`halsr_hf.dicom_series`). Each file directly in ``IN`` (NIfTI 3D/4D, ``.npy``, multi-frame
  DICOM) is one subject, named after the file. Hidden entries, other files and the output folder
  are left out (the files left out are listed in the summary and each subject's JSON);
  ``include`` (a glob on file names, e.g. ``"*_4d.nii.gz"``) keeps only matching files.
- ``IN`` a ``.csv`` manifest: columns ``subject``, ``path`` (a file or a folder as above, relative to
  the manifest's folder), optional ``ed_frame``, ``es_frame`` (0-based). Several rows of one subject
  are its phases, in row order.

**Per subject** every frame (phase) is segmented, each volume its own stack (the pipeline's
rules); the LV cavity volume of each frame gives the volume curve; ED is the frame of largest and ES
of smallest LV volume (first one on ties) unless the manifest gives them; EDV, ESV, SV, EF and the
ED myocardial mass come from :func:`halsr_hf.clinical.cardiac_function` on those two frames, as in
``halsr-hf ef``. (No DICOM attribute names the ED or ES image, so DICOM series follow the curve too.)

**Output folder** (``OUT``)::

    run.json                  the settings of the run (a rerun with other settings is refused)
    cohort.csv                one row per finished subject, sorted by subject (COLUMNS)
    errors.csv                subject, source, error: one row per failed subject
    ef_histogram.png          the cohort overview: EF histogram, median, the subjects with warnings
    subjects/SUBJECT/         written atomically (built under a hidden name, then renamed):
        SUBJECT.json          every frame's volumes, every slice's lv_found, roi, qc and message, ED/ES, EF
        volume_curve.csv      LV cavity and myocardium volume per frame (PNG too with 3 frames or more)
        SUBJECT_montage.png   ED and ES over the slices, masks overlaid, slices with a warning marked
        STEM_mask.nii.gz      the masks on the input's grid with its affine: one per input file
                              (4D for a 4D input or a cine DICOM series)
        row.json              the subject's cohort.csv row
    errors/SUBJECT.json       why a subject failed (removed when it succeeds later)

**Resume**: a subject whose folder exists is finished and skipped; a half-written one (a hidden
temporary folder left by a killed run) is deleted and redone; failed subjects are tried again. The
tables are rebuilt at the end of every run from the finished subjects, so a run killed with
``kill -9`` and run again gives the same ``cohort.csv`` as a run that was never stopped.

**Parallel**: ``num_parts``/``part_id`` take every ``num_parts``-th subject from ``part_id`` (as
nnU-Net's ``-num_parts``/``-part_id``) for separate machines writing into one ``OUT``; within a
part, the processes of ``accelerate launch`` share the subjects with
``PartialState().split_between_processes``, one model per process on its device. Each subject is
segmented alone (its frames batched together, never with another subject's slices), so results do
not depend on the split: the merged CSV equals a one-process run's. A torch ``DataLoader`` reads the
next subjects in ``num_workers`` worker processes while the current one is segmented.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import math
import re
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
from accelerate import PartialState
from accelerate.utils import gather_object
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import __version__, load_pipeline
from .atomic import atomic_file, atomic_folder
from .clinical import cardiac_function
from .errors import InputError
from .image_io import ARRAY_EXTENSIONS, NIFTI_EXTENSIONS, dicom_series_phases, is_dicom_file, load_frames, save_mask
from .roi_stage import QC_FLAGS, WARNING_FLAGS, split_flags
from .visualize import ef_histogram, montage, volume_curve

#: cohort.csv columns, in order. Volumes in mL and mass in g (empty when the spacing is unknown;
#: the EF is still given), frames 0-based.
COLUMNS = (
    "subject", "source", "frames", "ed_frame", "es_frame", "ed_es_from", "edv_ml", "esv_ml", "sv_ml",
    "ef_percent", "myocardial_mass_g", "slices", "slices_segmented", "slices_flagged", "qc_summary", "warnings",
)
ERROR_COLUMNS = ("subject", "source", "error")
SUBJECTS = "subjects"
ERRORS = "errors"
#: Settings that must match between a run and the run it resumes.
RESUME_SETTINGS = ("model", "roi_model", "tta", "include")
#: How long the processes of one run wait for each other at the end (a resumed run may give one
#: process much more to do than another).
BARRIER_TIMEOUT_S = 7 * 24 * 3600
_NAME = re.compile(r"[^A-Za-z0-9._+-]")


@dataclass
class Subject:
    """One subject of the cohort: ``paths`` are its files (phases) or one folder; ``error`` is set
    when discovery already knows it cannot be read."""

    name: str
    source: str
    paths: list
    ed_frame: int | None = None
    es_frame: int | None = None
    error: str | None = None


@dataclass
class Discovery:
    subjects: list
    ignored: list = field(default_factory=list)  # entries of IN that are not images


# ---- finding subjects ------------------------------------------------------------------------


def _natural_key(text: str):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def _is_image_file(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(NIFTI_EXTENSIONS + ARRAY_EXTENSIONS) or is_dicom_file(path)


def _stem(name: str) -> str:
    lowered = name.lower()
    for suffix in (".nii.gz", ".nii", ".npy", ".dcm", ".dicom", ".ima"):
        if lowered.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _safe_name(name: str) -> str:
    """A subject name usable as a folder name: other characters become ``_``; no leading dot."""
    safe = _NAME.sub("_", name.strip()) or "_"
    return "_" + safe[1:] if safe.startswith(".") else safe


def find_subjects(source, include: str | None = None, exclude=None) -> Discovery:
    """The subjects of a folder or a CSV manifest (the module docstring's rules), sorted by name.
    Two subjects with one name both get an ``error``; ``exclude`` (the output folder) is skipped."""
    source = Path(source)
    if not source.exists():
        raise InputError(f"{source}: no such file or folder")
    if source.is_file():
        if source.suffix.lower() != ".csv":
            raise InputError(f"{source}: expected a folder of subjects or a .csv manifest (subject, path[, ed_frame, es_frame])")
        discovery = _read_manifest(source)
    else:
        discovery = _scan_folder(source, include, None if exclude is None else Path(exclude).resolve())
    by_name = {}
    for subject in discovery.subjects:
        by_name.setdefault(subject.name, []).append(subject)
    for name, same in by_name.items():
        if len(same) > 1:
            for subject in same:
                others = ", ".join(s.source for s in same if s is not subject)
                subject.error = f"{subject.source}: subject name {name!r} is also used by {others}; rename one"
    discovery.subjects.sort(key=lambda s: (_natural_key(s.name), s.source))
    return discovery


def _scan_folder(folder: Path, include, exclude) -> Discovery:
    subjects, ignored = [], []
    for entry in sorted(folder.iterdir(), key=lambda p: _natural_key(p.name)):
        if entry.name.startswith(".") or (exclude is not None and entry.resolve() == exclude):
            continue
        if entry.is_dir():
            subjects.append(Subject(_safe_name(entry.name), entry.name, [str(entry)]))
        elif _is_image_file(entry) and (include is None or fnmatch.fnmatch(entry.name, include)):
            subjects.append(Subject(_safe_name(_stem(entry.name)), entry.name, [str(entry)]))
        else:
            ignored.append(entry.name)
    if not subjects:
        raise InputError(f"{folder}: no subjects there (expected sub-folders, one per subject, or NIfTI/.npy/DICOM "
                         "files, one per subject)")
    return Discovery(subjects, ignored)


def _manifest_frame(row: dict, column: str, where: str):
    value = (row.get(column) or "").strip()
    if not value:
        return None
    try:
        frame = int(value)
    except ValueError:
        raise InputError(f"{where}: {column} {value!r} is not an integer (0-based frame)") from None
    if frame < 0:
        raise InputError(f"{where}: {column} {frame} is negative (0-based frame)")
    return frame


def _read_manifest(path: Path) -> Discovery:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: unreadable manifest ({error})") from None
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip() for c in reader.fieldnames or []]
    if not {"subject", "path"} <= set(columns):
        raise InputError(f"{path}: a manifest needs the columns subject and path (optional: ed_frame, es_frame); "
                         f"found {', '.join(columns) or 'none'}")
    subjects = {}
    for number, raw in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "") for k, v in raw.items()}
        where = f"{path} line {number}"
        name, item = row["subject"].strip(), row["path"].strip()
        if not name or not item:
            raise InputError(f"{where}: empty subject or path")
        target = Path(item) if Path(item).is_absolute() else path.parent / item
        subject = subjects.setdefault(name, Subject(_safe_name(name), item, []))
        if subject.paths:
            subject.source += ";" + item
        subject.paths.append(str(target))
        try:
            for column in ("ed_frame", "es_frame"):
                frame = _manifest_frame(row, column, where)
                if frame is not None:
                    if getattr(subject, column) not in (None, frame):
                        raise InputError(f"{where}: {column} {frame} differs from an earlier row of {name!r}")
                    setattr(subject, column, frame)
        except InputError as error:
            subject.error = str(error)
    if not subjects:
        raise InputError(f"{path}: the manifest lists no subjects")
    return Discovery(list(subjects.values()))


# ---- reading a subject (in DataLoader workers) -------------------------------------------------


def _subject_files(folder: Path, include) -> tuple[list, list]:
    """(image files in natural order, names of the other files) of a subject folder, at any depth."""
    images, ignored = [], []
    for path in sorted(folder.rglob("*"), key=lambda p: _natural_key(p.relative_to(folder).as_posix())):
        relative = path.relative_to(folder).as_posix()
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        if _is_image_file(path) and (include is None or fnmatch.fnmatch(path.name, include)):
            images.append(path)
        else:
            ignored.append(relative)
    return images, ignored


def read_subject(subject: Subject, include=None) -> tuple[list, list]:
    """(frames, ignored): every frame of the subject as an ``image_io.LoadedInput``, in order, and
    the files of its folder that were left out. InputError for what cannot be a subject."""
    if subject.error:
        raise InputError(subject.error)
    ignored, files = [], []
    for item in map(Path, subject.paths):
        if item.is_dir():
            if len(subject.paths) > 1:
                raise InputError(f"{item}: a folder among several manifest rows; give a subject's phases as files, "
                                 "or its folder alone")
            images, ignored = _subject_files(item, include)
            if not images:
                raise InputError(f"{item}: no NIfTI, .npy or DICOM files there" + (f" matching {include!r}" if include else ""))
            dicom = [p for p in images if is_dicom_file(p)]
            if dicom and len(dicom) < len(images):
                other = next(p for p in images if not is_dicom_file(p))
                raise InputError(f"{item}: holds DICOM files and {other.name}; a subject is one DICOM series or NIfTI/.npy files")
            if dicom:
                return dicom_series_phases(item if include is None else dicom), ignored
            files = images
        elif not item.exists():
            raise InputError(f"{item}: no such file or folder")
        else:
            files.append(item)
    frames = []
    for path in files:
        loaded = load_frames(path)
        if len(loaded) > 1 and len(files) > 1:
            raise InputError(f"{path}: a cine ({len(loaded)} frames) among {len(files)} files; a subject is one 4D "
                             "file or 3D files, one per phase (choose with include=/--include or a manifest)")
        frames += loaded
    return frames, ignored


class _SubjectReader:
    """A map-style dataset for ``torch.utils.data.DataLoader``: item i is (i, frames, ignored,
    error message); reading errors are returned, not raised, so the workers go on."""

    def __init__(self, subjects: list, include):
        self.subjects, self.include = subjects, include

    def __len__(self):
        return len(self.subjects)

    def __getitem__(self, index):
        try:
            frames, ignored = read_subject(self.subjects[index], self.include)
            return index, frames, ignored, None
        except Exception as error:  # noqa: BLE001 - every failure is reported in errors.csv
            return index, None, [], _describe(error)


def _describe(error: BaseException) -> str:
    return str(error) if isinstance(error, InputError) else f"{type(error).__name__}: {error}"


def _keep(item):
    return item


# ---- one subject: segment, measure, write -------------------------------------------------------


def measure_subject(pipe, subject: Subject, frames: list, batch_size: int = 16, tta: bool = False) -> dict:
    """Segment every frame of a subject (one pipeline call; each frame its own stack) and measure it.
    Returns the subject's record (the JSON written beside its masks) with ``label_maps`` (one
    (Z, H, W) map per frame) and ``row`` (its cohort.csv row)."""
    for loaded in frames:
        if not loaded.is_volume:
            raise InputError(f"{loaded.name}: a single slice, not a short-axis stack (Z, H, W); a subject needs "
                             "volumes (a DICOM series belongs in its own folder)")
    shape = np.asarray(frames[0].slices[0]).shape, len(frames[0].slices)
    for loaded in frames[1:]:
        if (np.asarray(loaded.slices[0]).shape, len(loaded.slices)) != shape:
            raise InputError(f"{loaded.name}: {len(loaded.slices)} slices of {loaded.slices[0].shape}, but "
                             f"{frames[0].name} has {shape[1]} of {shape[0]}; the frames of a subject must share a grid")
    outputs = pipe(list(frames), batch_size=batch_size, tta=tta)
    spacing, thickness = outputs[0]["pixel_spacing"], outputs[0]["slice_thickness"]
    if spacing is None or thickness is None:
        spacing = thickness = None
    records, cavity = [], []
    for t, (loaded, out) in enumerate(zip(frames, outputs)):
        label_map = out["label_map"]
        voxels = {"lv_cavity": int(np.count_nonzero(label_map == 1)), "myocardium": int(np.count_nonzero(label_map == 2))}
        voxel_ml = None if spacing is None else spacing[0] * spacing[1] * thickness / 1000.0
        cavity.append(voxels["lv_cavity"])
        records.append({
            "frame": t, "input": loaded.name, "input_frame": loaded.frame,
            "trigger_time_ms": loaded.extra.get("trigger_time_ms"),
            "lv_cavity_voxels": voxels["lv_cavity"], "myocardium_voxels": voxels["myocardium"],
            "lv_cavity_ml": None if voxel_ml is None else voxels["lv_cavity"] * voxel_ml,
            "myocardium_ml": None if voxel_ml is None else voxels["myocardium"] * voxel_ml,
            "slices": [{"slice": z, **{k: s[k] for k in ("lv_found", "lv_probability", "roi", "qc", "message",
                                                           "areas_px", "areas_mm2")}}
                       for z, s in enumerate(out["slices"])],
        })
    count = len(frames)
    for which, value in (("ed_frame", subject.ed_frame), ("es_frame", subject.es_frame)):
        if value is not None and value >= count:
            raise InputError(f"{subject.source}: {which} {value} out of range for {count} frames (0-based)")
    warnings = []
    if count >= 2:
        ed = subject.ed_frame if subject.ed_frame is not None else int(np.argmax(cavity))
        es = subject.es_frame if subject.es_frame is not None else int(np.argmin(cavity))
        given = (subject.ed_frame is not None, subject.es_frame is not None)
        origin = "manifest" if all(given) else "lv_volume" if not any(given) else "manifest+lv_volume"
        function = cardiac_function(outputs[ed]["label_map"], outputs[es]["label_map"], spacing, thickness)
        warnings += function["warnings"]
    else:
        ed = es = origin = function = None
        warnings.append("one frame: no ED/ES, no EF (volumes in the subject's JSON)")
    if spacing is None:
        warnings.append("spacing unknown: volumes in voxels in the subject's JSON, EF only")
    slices = [s for record in records for s in record["slices"]]
    flags = Counter(flag for s in slices for flag in s["qc"])
    row = {
        "subject": subject.name, "source": subject.source, "frames": count,
        "ed_frame": ed, "es_frame": es, "ed_es_from": origin,
        "edv_ml": None if function is None else function["edv_ml"],
        "esv_ml": None if function is None else function["esv_ml"],
        "sv_ml": None if function is None else function["sv_ml"],
        "ef_percent": None if function is None else function["ef_percent"],
        "myocardial_mass_g": None if function is None else function["myocardial_mass_g"],
        "slices": len(slices), "slices_segmented": sum(bool(s["lv_found"]) for s in slices),
        "slices_flagged": sum(bool(s["qc"]) for s in slices),
        "qc_summary": "; ".join(f"{flag} {flags[flag]}" for flag in QC_FLAGS if flags[flag]),
        "warnings": "; ".join(warnings),
    }
    return {"subject": subject.name, "source": subject.source, "pixel_spacing": spacing, "slice_thickness": thickness,
            "frames": records, "ed_frame": ed, "es_frame": es, "ed_es_from": origin,
            "function": None if function is None else _finite(function), "warnings": warnings,
            "row": format_row(row), "label_maps": [out["label_map"] for out in outputs]}


def _finite(values: dict) -> dict:
    """JSON-safe: NaN becomes None."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}


def format_row(row: dict) -> dict:
    """The cohort.csv text of a row: floats with 2 decimals, None and NaN empty."""
    def text(value):
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return ""
        if isinstance(value, float):
            return f"{value:.2f}"
        return str(value)

    return {column: text(row.get(column)) for column in COLUMNS}


def write_subject(folder: Path, record: dict, frames: list, ignored: list) -> None:
    """Fill a (staged, empty) subject folder: masks, the JSON record, the volume curve, row.json."""
    label_maps = record.pop("label_maps")
    masks, by_input = [], {}
    for t, loaded in enumerate(frames):
        by_input.setdefault(loaded.name, []).append(t)
    stems = Counter(_stem(Path(name).name) for name in by_input)
    for name, indices in by_input.items():
        stem = _stem(Path(name).name)
        stem = stem if stems[stem] == 1 else f"{stem}_{len(masks)}"
        maps = np.stack([label_maps[t] for t in indices]) if len(indices) > 1 else label_maps[indices[0]]
        path = save_mask(maps, folder / f"{stem}_mask.nii.gz", frames[indices[0]])
        masks.append({"input": name, "frames": indices, "mask": path.name})
    record["masks"] = masks
    record["ignored_files"] = ignored
    name = record["subject"]
    _write_text(folder / f"{name}.json", json.dumps(record, indent=1, default=_json_default))
    _write_text(folder / "volume_curve.csv", _curve_csv(record))
    if len(record["frames"]) >= 3:
        _curve_png(folder / "volume_curve.png", record)
    _montage_png(folder / f"{name}_montage.png", record, frames, label_maps)
    _write_text(folder / "row.json", json.dumps(record["row"]))


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _curve_csv(record: dict) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["frame", "phase", "trigger_time_ms", "lv_cavity_ml", "myocardium_ml", "lv_cavity_voxels",
                     "myocardium_voxels", "slices_flagged", "input"])
    for frame in record["frames"]:
        phase = "/".join(p for p, t in (("ED", record["ed_frame"]), ("ES", record["es_frame"])) if t == frame["frame"])
        fmt = lambda v: "" if v is None else f"{v:.2f}"  # noqa: E731
        writer.writerow([frame["frame"], phase, fmt(frame["trigger_time_ms"]), fmt(frame["lv_cavity_ml"]),
                         fmt(frame["myocardium_ml"]), frame["lv_cavity_voxels"], frame["myocardium_voxels"],
                         sum(bool(s["qc"]) for s in frame["slices"]), Path(frame["input"]).name])
    return buffer.getvalue()


def _curve_png(path: Path, record: dict) -> None:
    frames = record["frames"]
    in_ml = frames[0]["lv_cavity_ml"] is not None
    volume_curve(path, [f["frame"] for f in frames], [f["lv_cavity_ml"] if in_ml else f["lv_cavity_voxels"] for f in frames],
                 "mL" if in_ml else "voxels", f"{record['subject']}: LV volume curve",
                 {"ED": record["ed_frame"], "ES": record["es_frame"]})


def _montage_png(path: Path, record: dict, frames: list, label_maps: list) -> None:
    """``SUBJECT_montage.png``: ED and ES (or the one frame) over the slices, the masks overlaid,
    slices with a warning flag marked (:func:`halsr_hf.visualize.montage`)."""
    phases = [("ED", record["ed_frame"]), ("ES", record["es_frame"])] if record["ed_frame"] is not None else [
        (f"frame {t}", t) for t in range(min(len(frames), 2))]
    rows = []
    for label, t in phases:
        slices = record["frames"][t]["slices"]
        rows.append((label, frames[t].slices, list(label_maps[t]), [s["roi"] for s in slices],
                     [split_flags(s["qc"])[0] for s in slices]))
    title = f"{record['subject']}: LV cavity red, myocardium blue, ROI yellow; orange: a warning to check"
    picture = montage(rows, title=title)
    picture.save(path, format="PNG")


# ---- the run -----------------------------------------------------------------------------------


def _model_name(model) -> str:
    """A model's folder (absolute, so ``runs/x`` and ``./runs/x`` match) or Hub id, else its class."""
    name = str(getattr(model.config, "_name_or_path", "") or "")
    if not name:
        return type(model).__name__
    return str(Path(name).resolve()) if Path(name).exists() else name


def _settings(pipe, include, tta) -> dict:
    roi = getattr(pipe, "roi_model", None)
    return {"halsr_hf_version": __version__, "model": _model_name(pipe.model),
            "roi_model": None if roi is None else _model_name(roi), "tta": bool(tta), "include": include}


def check_output(out: Path, settings: dict) -> None:
    """Refuse an ``OUT`` that is a file, a non-empty folder that no predict run wrote, or the output
    of a run with other settings; write ``run.json`` (first, before anything else) when absent."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    record = out / "run.json"
    if record.is_file():
        try:
            previous = json.loads(record.read_text())
        except (OSError, ValueError) as error:
            raise InputError(f"{record}: unreadable ({error}); not resuming") from None
        changed = [f"{key} {previous.get(key)!r} -> {settings.get(key)!r}" for key in RESUME_SETTINGS
                   if previous.get(key) != settings.get(key)]
        if changed:
            raise InputError(f"{out}: written by a run with other settings ({'; '.join(changed)}); resuming would mix "
                             "them: choose another output folder, or delete this one")
        return
    # hidden entries do not count: another process of this run may be writing run.json (a hidden temp file)
    if out.is_dir() and any(not entry.name.startswith(".") for entry in out.iterdir()):
        raise InputError(f"{out}: not empty and not the output of halsr-hf predict (no run.json); choose another "
                         "output folder")
    out.mkdir(parents=True, exist_ok=True)
    atomic_file(record, lambda tmp: Path(tmp).write_text(json.dumps(settings, indent=1)))


def _remove_stale(out: Path, name: str) -> None:
    """Delete what a killed run left of a subject: its hidden staging folder(s) and temp files."""
    for leftover in list((out / SUBJECTS).glob(f".{name}.tmp-*")) + list((out / ERRORS).glob(f".{name}.json.tmp-*")):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def _done(out: Path, name: str) -> bool:
    return (out / SUBJECTS / name / "row.json").is_file()


def _write_error(out: Path, subject: Subject, message: str) -> None:
    payload = {"subject": subject.name, "source": subject.source, "error": message}
    atomic_file(out / ERRORS / f"{subject.name}.json", lambda tmp: Path(tmp).write_text(json.dumps(payload)))


def predict_cohort(source, out_dir, pipe=None, *, model=None, roi_model=None, device=None, include: str | None = None,
                   num_parts: int = 1, part_id: int = 0, num_workers: int = 2, batch_size: int = 16, tta: bool = False,
                   progress: bool = True, log=None) -> dict:
    """Segment a cohort (see the module docstring) and return the run's summary: ``done_now``,
    ``failed_now``, ``skipped`` (finished before), ``slices_now``, ``seconds`` (the slowest process's
    loop), ``subjects_per_second``, ``slices_per_second``, summed over the processes of this run; on
    the main process also the table's counts (``subjects``, ``done``, ``failed``, ``pending`` in other
    parts, ``flagged``: subjects with a flagged slice), ``ef`` and the output paths.

    Args:
        source: a folder of subjects or a ``.csv`` manifest.
        out_dir: the output folder (new, empty, or the output of an earlier run to resume).
        pipe: a ``cardiac-lv-segmentation`` pipeline; default: ``load_pipeline(model, roi_model)``
            on ``device`` (default: this process's ``accelerate`` device).
        include: glob on file names inside subject folders (and of files directly in ``source``).
        num_parts, part_id: this machine's share, every ``num_parts``-th subject from ``part_id``.
        num_workers: ``DataLoader`` worker processes reading subjects ahead (0: read in this process).
        batch_size, tta: passed to the pipeline.
        progress: show a progress bar (subjects/s and ETA; main process only).
        log: a stream to print the summary to (main process only; the CLI passes stdout), or None.
    """
    if not (isinstance(num_parts, int) and num_parts >= 1 and isinstance(part_id, int) and 0 <= part_id < num_parts):
        raise InputError(f"num_parts={num_parts}, part_id={part_id}: need num_parts >= 1 and 0 <= part_id < num_parts")
    if num_workers < 0:
        raise InputError(f"num_workers={num_workers}: must be 0 or more")
    state = PartialState(timeout=timedelta(seconds=BARRIER_TIMEOUT_S))
    out = Path(out_dir)
    discovery = find_subjects(source, include, exclude=out)
    if pipe is None:
        pipe = load_pipeline(model, roi_model=roi_model, device=device if device is not None else state.device)
    check_output(out, _settings(pipe, include, tta))
    (out / SUBJECTS).mkdir(exist_ok=True)
    (out / ERRORS).mkdir(exist_ok=True)
    part = discovery.subjects[part_id::num_parts]
    with state.split_between_processes(part) as share:
        share = list(share)
    todo = []
    for subject in share:
        if not _done(out, subject.name):
            _remove_stale(out, subject.name)
            if (out / SUBJECTS / subject.name).exists():  # not written by a run (row.json is written last)
                subject.error = (f"{out / SUBJECTS / subject.name}: exists but is not a finished subject folder (no "
                                 "row.json); move it away to segment this subject")
            todo.append(subject)
    main = state.is_main_process
    started = time.perf_counter()
    done_now = failed_now = slices_now = 0
    bar = None
    if progress and main and todo:
        bar = tqdm(total=len(todo), unit="subject", desc="subjects" if state.num_processes == 1 else "subjects (process 0)",
                   dynamic_ncols=True)
    if todo:
        loader = DataLoader(_SubjectReader(todo, include), batch_size=None, shuffle=False, num_workers=num_workers,
                            collate_fn=_keep, prefetch_factor=2 if num_workers else None)
        for index, frames, ignored, error in loader:
            subject = todo[index]
            try:
                if error is not None:
                    raise InputError(error)
                record = measure_subject(pipe, subject, frames, batch_size=batch_size, tta=tta)
                with atomic_folder(out / SUBJECTS / subject.name) as staged:
                    write_subject(staged, record, frames, ignored)
                (out / ERRORS / f"{subject.name}.json").unlink(missing_ok=True)
                done_now += 1
                slices_now += sum(len(f.slices) for f in frames)
            except Exception as failure:  # noqa: BLE001 - one subject's failure never stops the cohort
                message = _describe(failure)
                _write_error(out, subject, message)
                failed_now += 1
                (bar or tqdm).write(f"{subject.name}: failed: {message}", file=sys.stderr)  # above the bar, if any
            if bar:
                bar.update(1)
                bar.set_postfix(failed=failed_now, refresh=False)
    if bar:
        bar.close()
    # every process's counts (the list of one process when not distributed); waits for all of them
    counts = gather_object([(time.perf_counter() - started, done_now, failed_now, slices_now, len(share) - len(todo))])
    seconds = max(c[0] for c in counts)
    done_now, failed_now, slices_now, skipped = (sum(c[i] for c in counts) for i in range(1, 5))
    summary = {"seconds": seconds, "done_now": done_now, "failed_now": failed_now, "slices_now": slices_now,
               "skipped": skipped, "subjects_per_second": (done_now + failed_now) / seconds if seconds > 0 else None,
               "slices_per_second": slices_now / seconds if seconds > 0 else None}
    if main:
        summary.update(merge_outputs(out, discovery))
        if log is not None:
            print_summary(summary, discovery, log, state.num_processes)
    state.wait_for_everyone()
    return summary


def merge_outputs(out: Path, discovery: Discovery) -> dict:
    """Write cohort.csv, errors.csv and ef_histogram.png from the finished subjects and the error
    records of the discovered subjects (sorted by subject); return the counts and paths."""
    rows, errors, pending = [], [], 0
    for subject in discovery.subjects:
        row_file = out / SUBJECTS / subject.name / "row.json"
        error_file = out / ERRORS / f"{subject.name}.json"
        if row_file.is_file():
            rows.append(json.loads(row_file.read_text()))
            error_file.unlink(missing_ok=True)  # left by a run killed between the two writes
        elif error_file.is_file():
            errors.append(json.loads(error_file.read_text()))
        else:
            pending += 1
    _write_csv(out / "cohort.csv", COLUMNS, rows)
    _write_csv(out / "errors.csv", ERROR_COLUMNS, errors)
    ef = [float(r["ef_percent"]) for r in rows if r["ef_percent"]]
    histogram = out / "ef_histogram.png"
    if ef:
        flagged = subjects_with_warnings(rows)
        atomic_file(histogram, lambda tmp: ef_histogram(tmp, ef, flagged))
    return {"subjects": len(discovery.subjects), "done": len(rows), "failed": len(errors), "pending": pending,
            "flagged": sum(int(r["slices_flagged"] or 0) > 0 for r in rows), "ef": ef,
            "cohort_csv": str(out / "cohort.csv"), "errors_csv": str(out / "errors.csv"),
            "ef_histogram": str(histogram) if ef else None}


def subjects_with_warnings(rows) -> dict:
    """{subject: what to check} for the cohort overview: its slices' warning flags (from
    ``qc_summary``; information flags such as ``basal_slice_removed`` are not warnings) and its
    subject-level warnings (``warnings``)."""
    flagged = {}
    for row in rows:
        counts = [item.rsplit(" ", 1) for item in (row.get("qc_summary") or "").split("; ") if item.strip()]
        parts = [f"{flag} {count}" for flag, count in counts if flag in WARNING_FLAGS]
        parts += [text for text in (row.get("warnings") or "").split("; ") if text.strip()]
        if parts:
            flagged[row["subject"]] = "; ".join(parts)
    return flagged


def _write_csv(path: Path, columns, rows) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    text = buffer.getvalue()
    atomic_file(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def print_summary(summary: dict, discovery: Discovery, stream, processes: int = 1) -> None:
    write = lambda text: print(text, file=stream)  # noqa: E731
    write(f"subjects: {summary['subjects']} | done: {summary['done']} ({summary['done_now']} now, "
          f"{summary['skipped']} already done) | failed: {summary['failed']} | with flagged slices: "
          f"{summary['flagged']}" + (f" | pending (other parts): {summary['pending']}" if summary["pending"] else ""))
    if summary["done_now"] and summary["seconds"] > 0:
        scope = f"{processes} processes" if processes > 1 else "this run"
        write(f"time ({scope}): {summary['seconds']:.1f} s, {summary['subjects_per_second']:.2f} subjects/s, "
              f"{summary['slices_per_second']:.1f} slices/s")
    if summary["ef"]:
        ef = np.asarray(summary["ef"])
        write(f"EF: median {np.median(ef):.1f} %, range {ef.min():.1f}-{ef.max():.1f} %")
    if discovery.ignored:
        shown = ", ".join(discovery.ignored[:5]) + (" ..." if len(discovery.ignored) > 5 else "")
        write(f"not images, left out: {shown}")
    outputs = [Path(summary["cohort_csv"]).name, Path(summary["errors_csv"]).name]
    if summary["ef_histogram"]:
        outputs.append(Path(summary["ef_histogram"]).name)
    write(f"written: {', '.join(outputs)} and subjects/ in {Path(summary['cohort_csv']).parent}/")
