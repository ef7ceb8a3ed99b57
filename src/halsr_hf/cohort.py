"""Cohorts: a folder (or a CSV manifest) of subjects in; per-subject masks, JSON and LV volume
curves, one cohort CSV, ``errors.csv`` and an EF histogram out. Resumable, and parallel over
machines (``num_parts``/``part_id``) and processes (``torchrun`` on CPUs, ``accelerate launch`` on GPUs).

The command line is ``halsr-hf predict -i IN -o OUT`` (:mod:`halsr_hf.commands.predict`); the
Python API is :func:`predict_cohort` (and :func:`find_subjects` to see what a folder holds).

**What a subject is** (:func:`find_subjects`):

- ``IN`` a folder: each sub-folder is one subject (named after it), holding NIfTI files (one 3D file
  per phase, frames in natural name order, e.g. ``ED.nii.gz``, ``ES.nii.gz``; or one 4D cine),
  ``.npy`` volumes (Z, H, W), or one DICOM series (files at any depth, also one series per slice
  position of one study; rules in :mod:`halsr_hf.dicom_series`). Each file directly in ``IN`` (NIfTI
  3D/4D, ``.npy``, multi-frame DICOM) is one subject, named after the file. Hidden entries, other
  files and the output folder are left out (the files left out are listed in the summary and each
  subject's JSON); ``include`` (a glob on file names, e.g. ``"*_4d.nii.gz"``) keeps only matching files.
- **Frames are images only**: label maps are skipped (not segmented, not refused), by name
  (:data:`LABEL_NAME`: ``*_gt``, ``*_seg``, ``*_label(s)``, ``*_mask``..., so also the masks this
  command writes) or by content (:func:`label_content`: integers, at most :data:`LABEL_MAX_VALUES`
  distinct values); the subject's JSON lists them (``label_files_skipped``, with why) and its row
  counts them. Skipping was chosen over refusing so that study folders with their reference labels
  beside the images run as they are; a subject of label maps only fails, naming them.
- ``IN`` a ``.csv`` manifest: columns ``subject``, ``path`` (a file or a folder as above, relative to
  the manifest's folder), optional ``ed_frame``, ``es_frame`` (0-based). Several rows of one subject
  are its phases, in row order.

**Per subject** every frame (phase) is segmented, each volume its own stack (the pipeline's
rules); frames must share slice count, slice size, pixel and slice spacing; the LV cavity volume of
each frame gives the volume curve. ED and ES (:func:`choose_ed_es`): the manifest's, else the files
named ED and ES, else the frames of largest and smallest LV volume (first one on ties; no DICOM
attribute names the ED or ES image, so DICOM series and 4D files follow the curve). EDV, ESV, SV, EF
and the ED myocardial mass come from :func:`halsr_hf.clinical.cardiac_function` on those two frames,
as in ``halsr-hf ef``, and ``warnings`` adds :func:`halsr_hf.clinical.function_warnings` (what
``halsr-hf ef`` says too: ED = ES, EF outside 10-90 %, ES segmented on fewer slices than ED, a gap),
names that disagree with the volumes, and the readers' notes (a DICOM slice spacing from SliceThickness).

**Output folder** (``OUT``)::

    run.json                  what produced the outputs (RESUME_SETTINGS: version, weights digests,
                              processor, backend, tta, include); a rerun with others is refused
    cohort.csv                one row per finished subject, sorted by subject (COLUMNS)
    errors.csv                subject, source, error: one row per failed subject
    ef_histogram.png          the cohort overview: EF histogram, median, the subjects with warnings
    subjects/SUBJECT/         written atomically (built under a hidden name, then renamed):
        SUBJECT.json          every frame's volumes, every slice's lv_found, roi, qc and message, ED/ES, EF
        volume_curve.csv      LV cavity and myocardium volume per frame (PNG too with 3 frames or more)
        SUBJECT_montage.png   ED and ES over the slices, masks overlaid, slices with a warning marked
        STEM_mask.nii.gz      the masks on the input's grid with its affine: one per input file
                              (4D for a 4D input or a cine DICOM series)
        inputs.json           the input files' paths, sizes and modification times
        row.json              the subject's cohort.csv row (written last)
    errors/SUBJECT.json       why a subject failed, and its inputs (removed when it succeeds later)

**Resume** (:func:`plan`): a subject that finished with the same input files (``inputs.json``:
names, sizes, modification times) is skipped, one whose files changed is redone; a half-written one
(a hidden temporary folder left by a killed run) is deleted and redone; a subject that failed with
the same files is skipped unless ``retry_failed`` (``--retry-failed``). A resume with other weights,
processor settings, backend or settings is refused naming what changed; ``overwrite``
(``--overwrite``) deletes the earlier run's outputs (only those) first. The tables are rebuilt at the
end of every run from the finished subjects, so a run killed with ``kill -9`` and run again gives the
same ``cohort.csv`` as a run that was never stopped.

**Parallel**: ``num_parts``/``part_id`` take every ``num_parts``-th subject from ``part_id`` (as
nnU-Net's ``-num_parts``/``-part_id``) for separate machines writing into one ``OUT``. A machine's
part is fixed by the sorted subject list, not by what is finished: machines start at different
times, and a split of "what is left" computed at different moments would give a subject to two
machines or to none. Within a part, the main process prepares ``OUT`` (``run.json`` is created once,
through a hard link that fails if another run made it first), every process plans the same to-do
list (finished subjects skipped), and only then do the processes share it
(``PartialState().split_between_processes``), one model per process on its device, so a resume
gives every process its share of what is left. Each subject is segmented alone (its frames batched
together, never with another subject's slices), so results do not depend on the split: the merged
CSV equals a one-process run's. The processes come from ``accelerate launch --num_processes N`` on
GPUs (one per GPU) or ``torchrun --nproc_per_node N`` on CPUs (they meet over gloo; ``accelerate
launch --cpu`` starts a single process unless MPI is configured). The tables are merged by one
process at a time (a lock on ``run.json``): of parts finishing together, the last merge sees every
subject; ``halsr-hf predict --merge`` (:func:`merge_only`) rebuilds them alone. A torch
``DataLoader`` reads the next subjects in ``num_workers`` worker processes while the current one is
segmented; a subject whose reading kills its worker fails alone (:func:`_read_subjects`); with
``num_workers=0`` reading happens in the main process, where a crash ends the run.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import io
import json
import math
import os
import pickle
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import __version__, load_pipeline
from .atomic import atomic_file, atomic_folder, default_file_mode
from .clinical import cardiac_function, function_warnings
from .errors import InputError
from .image_io import ARRAY_EXTENSIONS, NIFTI_EXTENSIONS, dicom_series_phases, is_dicom_file, load_frames, save_mask
from .roi_stage import WARNING_FLAGS, restrict_es_result, split_flags, uses_es_within_ed
from .visualize import ef_histogram, montage, volume_curve

#: cohort.csv columns, in order. Volumes in mL and mass in g (empty when the spacing is unknown;
#: the EF is still given), frames 0-based. ``slices_flagged``/``qc_warnings``: slices with a warning
#: flag (:data:`halsr_hf.roi_stage.WARNING_FLAGS`, a person should look) and their counts per flag;
#: ``slices_info``/``qc_info``: the same for information flags (routine steps such as a basal slice
#: removed); ``label_files_skipped``: label maps in the subject's folder that were not segmented.
COLUMNS = (
    "subject", "source", "frames", "ed_frame", "es_frame", "ed_es_from", "edv_ml", "esv_ml", "sv_ml",
    "ef_percent", "myocardial_mass_g", "slices", "slices_segmented", "slices_flagged", "qc_warnings", "slices_info",
    "qc_info", "label_files_skipped", "warnings",
)
ERROR_COLUMNS = ("subject", "source", "error")
SUBJECTS = "subjects"
ERRORS = "errors"
INPUTS = "inputs.json"
#: What a run writes into OUT (``overwrite=True`` / ``--overwrite`` deletes these, nothing else).
RUN_OUTPUTS = ("run.json", "cohort.csv", "errors.csv", "ef_histogram.png", SUBJECTS, ERRORS)
#: Entries of run.json that must match between a run and the run it resumes: the package version,
#: both networks' weights (a digest of their tensors, so new weights under the same folder name are
#: caught), the image processor's settings, the inference backend and the run's own settings. The model
#: folder's name is recorded but may differ (a moved folder holds the same weights).
RESUME_SETTINGS = ("halsr_hf_version", "model_weights", "roi_model_weights", "processor", "backend", "tta", "include")
#: How long the processes of one run wait for each other at the end (a resumed run may give one
#: process much more to do than another).
BARRIER_TIMEOUT_S = 7 * 24 * 3600
_NAME = re.compile(r"[^A-Za-z0-9._+-]")
#: File names (without extension) of label maps, not images: ``*_gt``, ``*_seg``, ``*_segmentation``,
#: ``*_label``, ``*_labels``, ``*_mask``, ``*_masks`` (the masks this tool writes are ``STEM_mask``) and
#: ``*_gd`` (MyoPS), after ``_``, ``-`` or ``.``, any case.
LABEL_NAME = re.compile(r"(?:^|[_.-])(?:gt|seg|segmentation|labels?|masks?|gd)$", re.IGNORECASE)
#: A volume whose values are all integers, with at most this many distinct values, is a label map
#: (an image has hundreds of grey levels; a label map a handful, an empty one a single value).
LABEL_MAX_VALUES = 8
#: File names (without extension) that name the phase: ``ED``/``ES`` as a whole name or a part
#: between ``_``, ``-``, ``.`` or spaces (``ED.nii.gz``, ``patient1_ES.nii.gz``), or the words.
PHASE_NAMES = {"ED": re.compile(r"(?:^|[_.\s-])(?:ed|end[_-]?diastole|diastole)(?:$|[_.\s-])", re.IGNORECASE),
               "ES": re.compile(r"(?:^|[_.\s-])(?:es|end[_-]?systole|systole)(?:$|[_.\s-])", re.IGNORECASE)}
#: A frame given as ED (ES) by its name or the manifest whose LV volume is smaller (larger) than
#: another frame's by more than this fraction of the largest volume: the names and the volumes
#: disagree, a warning.
DISAGREEMENT_FRACTION = 0.05


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
    label_files: list = field(default_factory=list)  # files of IN named as label maps (LABEL_NAME), left out


class SubjectFiles(NamedTuple):
    """What :func:`read_subject` read: ``frames`` (``image_io.LoadedInput``, in order), ``ignored``
    (files of the subject's folder that are not images) and ``label_files`` (``{"file", "why"}`` of the
    label maps left out, by name or by content)."""

    frames: list
    ignored: list
    label_files: list


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


def is_label_name(name: str) -> bool:
    """Whether a file name says "label map" (:data:`LABEL_NAME`), e.g. ``ED_gt.nii.gz``, ``ED_mask.nii.gz``."""
    return bool(LABEL_NAME.search(_stem(name)))


def label_content(frames: list) -> str | None:
    """Why these frames (one file's) hold a label map rather than an image, or None: every value an
    integer and at most :data:`LABEL_MAX_VALUES` distinct values. A sample of the voxels is looked at
    first, so an image costs a few thousand values, not a pass over the volume."""
    slices = [s for loaded in frames for s in loaded.slices]
    step = max(1, sum(s.size for s in slices) // 4096)
    sample = np.concatenate([np.asarray(s).ravel()[::step] for s in slices])
    if len(np.unique(sample)) > LABEL_MAX_VALUES or not np.all(sample == np.round(sample)):
        return None
    values = np.unique(np.concatenate([np.unique(np.asarray(s)) for s in slices]))
    if len(values) > LABEL_MAX_VALUES or not np.all(values == np.round(values)):
        return None
    shown = ", ".join(f"{v:g}" for v in values)
    return f"a label map by its content: integer values, {len(values)} distinct ({shown})"


def _phase_name(loaded) -> str | None:
    """"ED" or "ES" when a frame is a whole file named so (:data:`PHASE_NAMES`), else None."""
    if loaded.frame is not None or loaded.kind not in ("nifti", "array"):
        return None
    stem = _stem(Path(loaded.name).name)
    found = [phase for phase, pattern in PHASE_NAMES.items() if pattern.search(stem)]
    return found[0] if len(found) == 1 else None


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
    subjects, ignored, labels = [], [], []
    for entry in sorted(folder.iterdir(), key=lambda p: _natural_key(p.name)):
        if entry.name.startswith(".") or (exclude is not None and entry.resolve() == exclude):
            continue
        if entry.is_dir():
            subjects.append(Subject(_safe_name(entry.name), entry.name, [str(entry)]))
        elif _is_image_file(entry) and (include is None or fnmatch.fnmatch(entry.name, include)):
            if is_label_name(entry.name):
                labels.append(entry.name)
            else:
                subjects.append(Subject(_safe_name(_stem(entry.name)), entry.name, [str(entry)]))
        else:
            ignored.append(entry.name)
    if not subjects:
        raise InputError(f"{folder}: no subjects there (expected sub-folders, one per subject, or NIfTI/.npy/DICOM "
                         "files, one per subject)" + (f"; label maps left out: {', '.join(labels)}" if labels else ""))
    return Discovery(subjects, ignored, labels)


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


def _subject_files(folder: Path, include) -> tuple[list, list, list]:
    """(image files in natural order, names of the other files, label maps by name) of a subject
    folder, at any depth."""
    images, ignored, labels = [], [], []
    for path in sorted(folder.rglob("*"), key=lambda p: _natural_key(p.relative_to(folder).as_posix())):
        relative = path.relative_to(folder).as_posix()
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        if _is_image_file(path) and (include is None or fnmatch.fnmatch(path.name, include)):
            if is_label_name(path.name) and not is_dicom_file(path):
                labels.append({"file": relative, "why": "a label map by its name"})
            else:
                images.append(path)
        else:
            ignored.append(relative)
    return images, ignored, labels


def read_subject(subject: Subject, include=None) -> SubjectFiles:
    """Every frame of the subject as an ``image_io.LoadedInput``, in order, the files of its folder
    that were left out, and the label maps skipped (:class:`SubjectFiles`). InputError for what
    cannot be a subject.

    **Frames are images only**: a NIfTI or ``.npy`` file whose name marks a label map
    (:data:`LABEL_NAME`: ``*_gt``, ``*_seg``, ``*_label(s)``, ``*_mask``...) or whose content is one
    (:func:`label_content`) is skipped, not segmented, and listed in ``label_files`` (the subject's
    JSON and the ``label_files_skipped`` column say so). Skipping rather than refusing lets a study
    folder with its reference labels beside the images run as it is; a subject holding only label
    maps is refused, naming them."""
    if subject.error:
        raise InputError(subject.error)
    ignored, files, labels = [], [], []
    for item in map(Path, subject.paths):
        if item.is_dir():
            if len(subject.paths) > 1:
                raise InputError(f"{item}: a folder among several manifest rows; give a subject's phases as files, "
                                 "or its folder alone")
            images, ignored, labels = _subject_files(item, include)
            if not images:
                raise InputError(f"{item}: no NIfTI, .npy or DICOM files there" + (f" matching {include!r}" if include else "")
                                 + (f" (label maps left out: {', '.join(l['file'] for l in labels)})" if labels else ""))
            dicom = [p for p in images if is_dicom_file(p)]
            if dicom and len(dicom) < len(images):
                other = next(p for p in images if not is_dicom_file(p))
                raise InputError(f"{item}: holds DICOM files and {other.name}; a subject is one DICOM series or NIfTI/.npy files")
            if dicom:
                return SubjectFiles(dicom_series_phases(item if include is None else dicom), ignored, labels)
            files = images
        elif not item.exists():
            raise InputError(f"{item}: no such file or folder")
        else:
            files.append(item)
    by_file = []
    for path in files:
        loaded = load_frames(path)
        why = None if is_dicom_file(path) else label_content(loaded)
        if why is None:
            by_file.append((path, loaded))
        else:
            labels.append({"file": path.name if len(subject.paths) > 1 or not Path(subject.paths[0]).is_dir()
                           else path.relative_to(subject.paths[0]).as_posix(), "why": why})
    if not by_file:
        listed = "; ".join(f"{l['file']} ({l['why']})" for l in labels)
        raise InputError(f"{subject.source}: only label maps, no image to segment: {listed}")
    frames = []
    for path, loaded in by_file:
        if len(loaded) > 1 and len(by_file) > 1:
            raise InputError(f"{path}: a cine ({len(loaded)} frames) among {len(by_file)} files; a subject is one 4D "
                             "file or 3D files, one per phase (choose with include=/--include or a manifest)")
        frames += loaded
    return SubjectFiles(frames, ignored, labels)


class _SubjectReader:
    """A map-style dataset for ``torch.utils.data.DataLoader``: item i is (i, SubjectFiles, error
    message); reading errors are returned, not raised, so the workers go on.

    With ``handoff`` (a folder; used whenever workers read), the worker pickles (SubjectFiles, error)
    into a file there and the loader carries only (i, that file's path): a message of a few dozen
    bytes, which a pipe takes in one atomic write. A subject's arrays (megabytes) sent through the
    loader's pipe are written in many pieces by the worker's feeder thread; a worker killed between
    two pieces (its next subject crashing, the OOM killer) leaves half a message that the main
    process waits on forever, since the other workers keep the pipe open (measured: 2 runs in 14 of
    ``test_a_reading_that_kills_its_worker_fails_that_subject_only`` hung so before this, and CI
    stalled on it).
    :func:`_received` reads the file back and deletes it."""

    def __init__(self, subjects: list, include, handoff: str | None = None):
        self.subjects, self.include, self.handoff = subjects, include, handoff

    def __len__(self):
        return len(self.subjects)

    def __getitem__(self, index):
        try:
            read = read_subject(self.subjects[index], self.include), None
        except Exception as error:  # noqa: BLE001 - every failure is reported in errors.csv
            read = None, _describe(error)
        if self.handoff is None:
            return (index, *read)
        path = os.path.join(self.handoff, f"{index}-{os.getpid()}.pickle")
        with open(path, "wb") as stream:  # a worker killed while writing sends no message: the file is never read
            pickle.dump(read, stream, protocol=pickle.HIGHEST_PROTOCOL)
        return index, path


def _received(item) -> tuple:
    """(i, SubjectFiles or None, error or None) from what the loader carried (see :class:`_SubjectReader`)."""
    if len(item) == 3:
        return item
    index, path = item
    try:
        with open(path, "rb") as stream:
            files, error = pickle.load(stream)
    finally:
        os.unlink(path)
    return index, files, error


def _worker_died(error: BaseException) -> bool:
    """Whether a DataLoader error is the death of a worker process (a crash, a signal, the OOM killer)."""
    return isinstance(error, RuntimeError) and "DataLoader worker" in str(error)


def _read_subjects(subjects: list, include, num_workers: int, before_restart=None):
    """Yield (index, SubjectFiles or None, error or None) for each subject in order, read ahead by
    ``num_workers`` DataLoader worker processes (0: in this process).

    A reading that kills its worker (a segfault in a decoder, the OOM killer) stays that subject's
    failure: the loader is restarted after the last subject received, the next subject is read alone
    in a fresh worker (if that worker dies too, the subject gets the error and the run goes on), and
    reading ahead resumes after it. (torch's SIGCHLD handler, which would raise the death of a worker
    in whatever code runs at that moment, e.g. while another subject is segmented, is held off meanwhile:
    the loader notices the death itself, within seconds, when the next subject is asked for.) Subjects
    travel from the workers through files in a temporary folder (:class:`_SubjectReader`), so a worker
    dying mid-send cannot leave the main process waiting on half a message. ``before_restart`` is
    called before a restarted loader forks its workers: the cohort waits there for its writer thread,
    so no worker is forked while another thread of this process is busy (it might hold a lock that the
    child would wait on forever)."""
    if not num_workers:
        yield from _read_subjects_ahead(subjects, include, 0, None, before_restart)
        return
    handoff = tempfile.mkdtemp(prefix="halsr-cohort-read-")
    try:
        with _worker_deaths_noticed_by_the_loader():
            yield from _read_subjects_ahead(subjects, include, num_workers, handoff, before_restart)
    finally:
        shutil.rmtree(handoff, ignore_errors=True)


@contextmanager
def _worker_deaths_noticed_by_the_loader():
    """Hold off torch's SIGCHLD handler (see :func:`_read_subjects`); restore what was there after."""
    from torch.utils.data._utils import signal_handling

    try:
        previous = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    except (ValueError, AttributeError):  # not the main thread, or no SIGCHLD (Windows): leave things as they are
        yield
        return
    installed = signal_handling._SIGCHLD_handler_set
    signal_handling._SIGCHLD_handler_set = True  # a DataLoader made meanwhile does not install its handler
    try:
        yield
    finally:
        signal_handling._SIGCHLD_handler_set = installed
        signal.signal(signal.SIGCHLD, previous)


def _read_subjects_ahead(subjects: list, include, num_workers: int, handoff, before_restart):
    start = 0
    while start < len(subjects):
        if start and before_restart is not None:
            before_restart()
        loader = DataLoader(_SubjectReader(subjects[start:], include, handoff), batch_size=None, shuffle=False,
                            num_workers=num_workers, collate_fn=_keep, prefetch_factor=2 if num_workers else None)
        received = start
        try:
            for item in loader:
                offset, files, error = _received(item)
                yield start + offset, files, error
                received = start + offset + 1
            return
        except RuntimeError as crash:
            if not _worker_died(crash) or num_workers == 0:
                raise
        del loader
        if before_restart is not None:
            before_restart()
        alone = DataLoader(_SubjectReader([subjects[received]], include, handoff), batch_size=None, num_workers=1,
                           collate_fn=_keep)
        try:
            (item,) = list(alone)
            _, files, error = _received(item)
        except RuntimeError as again:
            if not _worker_died(again):
                raise
            files, error = None, f"reading this subject killed the reader process ({again}); the run went on"
        del alone
        yield received, files, error
        start = received + 1


def _describe(error: BaseException) -> str:
    return str(error) if isinstance(error, InputError) else f"{type(error).__name__}: {error}"


def _keep(item):
    return item


# ---- one subject: segment, measure, write -------------------------------------------------------


def _same_spacing(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return bool(np.allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=1e-3))


def check_frames(frames: list) -> None:
    """Refuse frames that cannot be one subject's: a single slice, or frames on different grids
    (slice count, slice size, pixel spacing or slice spacing differ from the first frame's)."""
    for loaded in frames:
        if not loaded.is_volume:
            raise InputError(f"{loaded.name}: a single slice, not a short-axis stack (Z, H, W); a subject needs "
                             "volumes (a DICOM series belongs in its own folder)")
    first = frames[0]
    shape = np.asarray(first.slices[0]).shape, len(first.slices)
    for loaded in frames[1:]:
        if (np.asarray(loaded.slices[0]).shape, len(loaded.slices)) != shape:
            raise InputError(f"{loaded.name}: {len(loaded.slices)} slices of {loaded.slices[0].shape}, but "
                             f"{first.name} has {shape[1]} of {shape[0]}; the frames of a subject must share a grid")
        for what, mine, theirs in (("pixel spacing", loaded.pixel_spacing, first.pixel_spacing),
                                   ("slice spacing", loaded.slice_thickness, first.slice_thickness)):
            if not _same_spacing(mine, theirs):
                raise InputError(f"{loaded.name}: {what} {mine} mm, but {first.name} has {theirs} mm; the frames "
                                 "of a subject must share a grid (volumes would not be comparable)")


def choose_ed_es(subject: Subject, frames: list, cavity: list) -> tuple:
    """(ed, es, origin, warnings): the ED and ES frames of a subject with two frames or more.

    Each phase comes from the manifest (``ed_frame``/``es_frame``), else from the file names (one
    file named ED, one named ES, :data:`PHASE_NAMES`), else from the LV volume curve (ED the frame of
    largest, ES of smallest LV cavity volume, the first one on ties). ``origin`` says which, e.g.
    ``file_names`` or ``manifest+lv_volume`` (ED's, then ES's when they differ). A given frame whose
    volume disagrees with the curve by more than :data:`DISAGREEMENT_FRACTION` of the largest volume
    is a warning (the frames may be mislabelled or the segmentation wrong)."""
    count, warnings = len(frames), []
    for which, value in (("ed_frame", subject.ed_frame), ("es_frame", subject.es_frame)):
        if value is not None and value >= count:
            raise InputError(f"{subject.source}: {which} {value} out of range for {count} frames (0-based)")
    names = [_phase_name(loaded) for loaded in frames]
    chosen = {}
    for phase, given, extreme in (("ED", subject.ed_frame, int(np.argmax(cavity))),
                                  ("ES", subject.es_frame, int(np.argmin(cavity)))):
        named = [t for t, name in enumerate(names) if name == phase]
        if given is not None:
            chosen[phase] = (given, "manifest")
        elif len(named) == 1:
            chosen[phase] = (named[0], "file_names")
        else:
            if len(named) > 1:
                listed = ", ".join(Path(frames[t].name).name for t in named)
                warnings.append(f"several files are named {phase} ({listed}): {phase} taken from the LV volumes")
            chosen[phase] = (extreme, "lv_volume")
        t, origin = chosen[phase]
        tolerance = DISAGREEMENT_FRACTION * max(cavity)
        if origin != "lv_volume" and abs(cavity[t] - cavity[extreme]) > tolerance:
            bigger = "larger" if phase == "ED" else "smaller"
            warnings.append(f"{phase} is frame {t} by the {origin.replace('_', ' ')}, but frame {extreme} has a {bigger} "
                            f"LV volume ({cavity[extreme]} vs {cavity[t]} voxels): the names and the volumes disagree")
    (ed, ed_from), (es, es_from) = chosen["ED"], chosen["ES"]
    return ed, es, ed_from if ed_from == es_from else f"{ed_from}+{es_from}", warnings


def measure_subject(pipe, subject: Subject, frames: list, batch_size: int = 16, tta: bool = False) -> dict:
    """Segment every frame of a subject (one pipeline call; each frame its own stack) and measure it.
    Returns the subject's record (the JSON written beside its masks) with ``label_maps`` (one
    (Z, H, W) map per frame) and ``row`` (its cohort.csv row).

    ED/ES: :func:`choose_ed_es`; EF and volumes: :func:`halsr_hf.clinical.cardiac_function`, with the
    warnings of :func:`halsr_hf.clinical.function_warnings` (what ``halsr-hf ef`` says too) and the
    readers' own (e.g. a slice spacing taken from SliceThickness)."""
    check_frames(frames)
    outputs = pipe(list(frames), batch_size=batch_size, tta=tta)
    spacing, thickness = outputs[0]["pixel_spacing"], outputs[0]["slice_thickness"]
    if spacing is None or thickness is None:
        spacing = thickness = None
    voxel_ml = None if spacing is None else spacing[0] * spacing[1] * thickness / 1000.0
    cavity = [int(np.count_nonzero(out["label_map"] == 1)) for out in outputs]
    count = len(frames)
    warnings = list(dict.fromkeys(loaded.extra["slice_spacing_warning"] for loaded in frames
                                  if loaded.extra.get("slice_spacing_warning")))
    if count >= 2:
        ed, es, origin, chosen_warnings = choose_ed_es(subject, frames, cavity)
        if ed != es and uses_es_within_ed(pipe):
            # the model's es_within_ed: ES slices without an LV at ED are emptied (mask, JSON and volumes)
            restrict_es_result(outputs[ed], outputs[es])
        ed_map, es_map = outputs[ed]["label_map"], outputs[es]["label_map"]
        function = cardiac_function(ed_map, es_map, spacing, thickness)
        warnings += chosen_warnings + function["warnings"] + function_warnings(ed_map, es_map, function, ed == es)
        function["warnings"] = warnings
    else:
        ed = es = origin = function = None
        warnings.append("one frame: no ED/ES, no EF (volumes in the subject's JSON)")
    records = [_frame_record(t, loaded, out, voxel_ml) for t, (loaded, out) in enumerate(zip(frames, outputs))]
    if spacing is None:
        warnings.append("spacing unknown: volumes in voxels in the subject's JSON, EF only")
    slices = [s for record in records for s in record["slices"]]
    flags = Counter(flag for s in slices for flag in s["qc"])
    counts = lambda names: "; ".join(f"{flag} {flags[flag]}" for flag in names if flags[flag])  # noqa: E731
    warning_flags, info_flags = split_flags(flags)
    row = {
        "subject": subject.name, "source": subject.source, "frames": count,
        "ed_frame": ed, "es_frame": es, "ed_es_from": origin,
        "edv_ml": None if function is None else function["edv_ml"],
        "esv_ml": None if function is None else function["esv_ml"],
        "sv_ml": None if function is None else function["sv_ml"],
        "ef_percent": None if function is None else function["ef_percent"],
        "myocardial_mass_g": None if function is None else function["myocardial_mass_g"],
        "slices": len(slices), "slices_segmented": sum(bool(s["lv_found"]) for s in slices),
        "slices_flagged": sum(bool(s["qc_warnings"]) for s in slices), "qc_warnings": counts(warning_flags),
        "slices_info": sum(bool(s["qc_info"]) for s in slices), "qc_info": counts(info_flags),
        "label_files_skipped": 0,
        "warnings": "; ".join(warnings),
    }
    return {"subject": subject.name, "source": subject.source, "pixel_spacing": spacing, "slice_thickness": thickness,
            "frames": records, "ed_frame": ed, "es_frame": es, "ed_es_from": origin,
            "function": None if function is None else _finite(function), "warnings": warnings,
            "row": format_row(row), "label_maps": [out["label_map"] for out in outputs]}


def _frame_record(t: int, loaded, out: dict, voxel_ml) -> dict:
    """One frame's entry in the subject's JSON: its input, voxel counts and volumes, and every slice's
    result (``voxel_ml``: the volume of a voxel in ml, None without spacing)."""
    voxels = {name: int(np.count_nonzero(out["label_map"] == value)) for name, value in (("lv_cavity", 1), ("myocardium", 2))}
    return {
        "frame": t, "input": loaded.name, "input_frame": loaded.frame, "phase_name": _phase_name(loaded),
        "trigger_time_ms": loaded.extra.get("trigger_time_ms"),
        "lv_cavity_voxels": voxels["lv_cavity"], "myocardium_voxels": voxels["myocardium"],
        "lv_cavity_ml": None if voxel_ml is None else voxels["lv_cavity"] * voxel_ml,
        "myocardium_ml": None if voxel_ml is None else voxels["myocardium"] * voxel_ml,
        "slices": [{"slice": z, **{k: s[k] for k in ("lv_found", "lv_probability", "roi", "qc", "qc_warnings",
                                                       "qc_info", "message", "areas_px", "areas_mm2")}}
                   for z, s in enumerate(out["slices"])],
    }


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


def write_subject(folder: Path, record: dict, frames: list, ignored: list, label_files: list = (),
                  inputs: list | None = None) -> None:
    """Fill a (staged, empty) subject folder: masks, the JSON record (with the files left out and the
    label maps skipped), the volume curve, ``inputs.json`` (the input files' names, sizes and times,
    to notice a change on resume) and, last, row.json."""
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
    record["label_files_skipped"] = list(label_files)
    record["row"]["label_files_skipped"] = str(len(label_files))
    name = record["subject"]
    _write_text(folder / f"{name}.json", json.dumps(record, indent=1, default=_json_default))
    _write_text(folder / "volume_curve.csv", _curve_csv(record))
    if len(record["frames"]) >= 3:
        _curve_png(folder / "volume_curve.png", record)
    if inputs is not None:
        _write_text(folder / INPUTS, json.dumps(inputs))
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
                     "myocardium_voxels", "slices_flagged", "slices_info", "input"])
    for frame in record["frames"]:
        phase = "/".join(p for p, t in (("ED", record["ed_frame"]), ("ES", record["es_frame"])) if t == frame["frame"])
        fmt = lambda v: "" if v is None else f"{v:.2f}"  # noqa: E731
        writer.writerow([frame["frame"], phase, fmt(frame["trigger_time_ms"]), fmt(frame["lv_cavity_ml"]),
                         fmt(frame["myocardium_ml"]), frame["lv_cavity_voxels"], frame["myocardium_voxels"],
                         sum(bool(s["qc_warnings"]) for s in frame["slices"]),
                         sum(bool(s["qc_info"]) for s in frame["slices"]), Path(frame["input"]).name])
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
    picture.save(path, format="PNG", compress_level=1)  # 3x faster than the default level, and no larger here


# ---- the run -----------------------------------------------------------------------------------


def _model_name(model) -> str:
    """A model's folder (absolute, so ``runs/x`` and ``./runs/x`` match) or Hub id, else its class."""
    name = str(getattr(model.config, "_name_or_path", "") or "")
    if not name:
        return type(model).__name__
    return str(Path(name).resolve()) if Path(name).exists() else name


def weights_digest(model) -> str | None:
    """SHA-256 of a model's tensors (names, dtypes, shapes and values of its state dict), the first
    16 hex digits: the same weights give the same digest in any process, on any machine, whatever
    the folder is called. None for no model. (``halsr_hf.weight_init.weights_signature`` is the cheap
    in-process identity; this one is written to run.json and compared across runs.)"""
    if model is None:
        return None
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        array = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{array.dtype}|{tuple(array.shape)}|".encode())
        digest.update(array.view(-1).view(torch.uint8).numpy().tobytes() if array.numel() else b"")
    return digest.hexdigest()[:16]


def _processor_digest(processor) -> str | None:
    if processor is None:
        return None
    text = json.dumps(processor.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _settings(pipe, include, tta) -> dict:
    """run.json: what produced the outputs (:data:`RESUME_SETTINGS` must match on resume)."""
    roi = getattr(pipe, "roi_model", None)
    return {"halsr_hf_version": __version__, "model": _model_name(pipe.model),
            "roi_model": None if roi is None else _model_name(roi),
            "model_weights": weights_digest(pipe.model), "roi_model_weights": weights_digest(roi),
            "processor": _processor_digest(getattr(pipe, "image_processor", None)),
            "backend": getattr(pipe, "backend", "torch"), "tta": bool(tta), "include": include}


def _is_run_output(out: Path) -> bool:
    return (out / "run.json").is_file()


def clear_output(out: Path) -> None:
    """``--overwrite``: delete what a predict run wrote into ``out`` (:data:`RUN_OUTPUTS`, and their
    hidden temporary names), nothing else; refused for a folder without run.json."""
    if not out.exists():
        return
    if not _is_run_output(out):
        if out.is_dir() and any(not entry.name.startswith(".") for entry in out.iterdir()):
            raise InputError(f"{out}: not the output of halsr-hf predict (no run.json); --overwrite deletes only a "
                             "predict run's outputs: choose another output folder")
        return
    for name in RUN_OUTPUTS[1:] + RUN_OUTPUTS[:1]:  # run.json last: a crash halfway leaves a folder still known as ours
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    for leftover in out.glob(".*.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)


def check_output(out: Path, settings: dict) -> None:
    """Refuse an ``OUT`` that is a file, a non-empty folder that no predict run wrote, or the output
    of a run with other settings (:data:`RESUME_SETTINGS`, named in the message); write ``run.json``
    (first, before anything else) when absent. The file is created with a hard link from a temporary
    file, which fails when it exists: two machines starting at once cannot both write it."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    record = out / "run.json"
    if not record.is_file():
        # hidden entries do not count: another process of this run may be writing run.json (a hidden temp file)
        if out.is_dir() and any(not entry.name.startswith(".") for entry in out.iterdir()):
            raise InputError(f"{out}: not empty and not the output of halsr-hf predict (no run.json); choose another "
                             "output folder")
        out.mkdir(parents=True, exist_ok=True)
        descriptor, staged = tempfile.mkstemp(prefix=".run.json.tmp-", dir=out)  # a name of this process's own
        try:
            with os.fdopen(descriptor, "w") as handle:
                handle.write(json.dumps(settings, indent=1))
            os.chmod(staged, default_file_mode())
            os.link(staged, record)
            return
        except FileExistsError:
            pass  # another machine or process wrote it first: compare with it
        finally:
            os.unlink(staged)
    try:
        previous = json.loads(record.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"{record}: unreadable ({error}); not resuming") from None
    changed = [f"{key} {previous.get(key)!r} -> {settings.get(key)!r}" for key in RESUME_SETTINGS
               if previous.get(key) != settings.get(key)]
    if changed:
        raise InputError(f"{out}: written by a run with other settings ({'; '.join(changed)}); resuming would mix "
                         "them in one table: pass --overwrite (overwrite=True) to start again, or choose another "
                         "output folder")


def input_files(subject: Subject) -> list:
    """``[path, size, mtime_ns]`` of every file a subject is read from (every non-hidden file of its
    folder, or its files), sorted: a resume redoes a subject whose list changed."""
    found = []
    for item in map(Path, subject.paths):
        if item.is_dir():
            for path in item.rglob("*"):
                relative = path.relative_to(item)
                if not any(part.startswith(".") for part in relative.parts) and path.is_file():
                    found.append((item / relative, path.stat()))
        elif item.is_file():
            found.append((item, item.stat()))
    return sorted([str(path), stat.st_size, stat.st_mtime_ns] for path, stat in found)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _state(out: Path, subject: Subject, inputs: list) -> str:
    """``done``, ``failed`` (an error record for these same inputs), ``changed`` (finished or failed,
    but the inputs changed since), or ``todo``."""
    folder = out / SUBJECTS / subject.name
    if (folder / "row.json").is_file():
        return "done" if _read_json(folder / INPUTS) == inputs else "changed"
    error = _read_json(out / ERRORS / f"{subject.name}.json")
    if error is not None:
        return "failed" if error.get("inputs") == inputs else "changed"
    return "todo"


def _remove_stale(out: Path, name: str) -> None:
    """Delete what a killed run left of a subject: its hidden staging folder(s) and temp files."""
    for leftover in list((out / SUBJECTS).glob(f".{name}.tmp-*")) + list((out / ERRORS).glob(f".{name}.json.tmp-*")):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def _write_error(out: Path, subject: Subject, message: str, inputs: list) -> None:
    payload = {"subject": subject.name, "source": subject.source, "error": message, "inputs": inputs}
    atomic_file(out / ERRORS / f"{subject.name}.json", lambda tmp: Path(tmp).write_text(json.dumps(payload)))


def plan(out: Path, subjects: list, retry_failed: bool = False) -> tuple:
    """(to do, counts): which of ``subjects`` this run segments, and how many were ``skipped``
    (finished, same inputs), ``failed_before`` (failed with the same inputs: skipped unless
    ``retry_failed``) and ``changed`` (inputs changed since: redone). Removes what killed runs left;
    a subject folder without row.json that no run wrote is this subject's error."""
    todo, counts = [], Counter()
    for subject in subjects:
        inputs = input_files(subject)
        state = _state(out, subject, inputs)
        if state == "done" or (state == "failed" and not retry_failed):
            counts["skipped" if state == "done" else "failed_before"] += 1
            continue
        if state == "changed":
            counts["changed"] += 1
        _remove_stale(out, subject.name)
        folder = out / SUBJECTS / subject.name
        if folder.exists() and not (folder / "row.json").is_file():  # row.json is written last, in the staged folder
            subject.error = (f"{folder}: exists but is not a finished subject folder (no row.json); move it away "
                             "to segment this subject")
        todo.append((subject, inputs))
    return todo, counts


@contextmanager
def _merge_lock(out: Path):
    """One merge at a time in ``out``: an exclusive ``flock`` on run.json (parts on other machines
    sharing ``out`` over a network file system need one that supports locks, as NFSv4 does)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: parts there merge with `predict --merge` at the end
        yield
        return
    with open(out / "run.json", "rb") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def predict_cohort(source, out_dir, pipe=None, *, model=None, roi_model=None, device=None, include: str | None = None,
                   num_parts: int = 1, part_id: int = 0, num_workers: int = 1, batch_size: int = 16, tta: bool = False,
                   overwrite: bool = False, retry_failed: bool = False, progress: bool = True, log=None) -> dict:
    """Segment a cohort (see the module docstring) and return the run's summary: ``done_now``,
    ``failed_now``, ``skipped`` (finished before, same inputs), ``failed_before`` (failed before with
    the same inputs, not retried), ``changed`` (inputs changed since the last run: redone),
    ``slices_now``, ``seconds`` (the slowest process's loop), ``subjects_per_second``,
    ``slices_per_second``, summed over the processes of this run; on the main process also the
    table's counts (``subjects``, ``done``, ``failed``, ``pending`` in other parts, ``flagged``:
    subjects with a slice flagged as a warning, ``with_info``: with an information flag), ``ef`` and
    the output paths.

    Args:
        source: a folder of subjects or a ``.csv`` manifest.
        out_dir: the output folder (new, empty, or the output of an earlier run to resume).
        pipe: a ``cardiac-lv-segmentation`` pipeline; default: ``load_pipeline(model, roi_model)``
            on ``device`` (default: this process's ``accelerate`` device).
        include: glob on file names inside subject folders (and of files directly in ``source``).
        num_parts, part_id: this machine's share, every ``num_parts``-th subject from ``part_id``.
        num_workers: ``DataLoader`` worker processes reading subjects ahead (0: read in this process,
            where a crashing reader ends the run). Default 1: reading a subject takes a few percent of
            segmenting it, so one worker keeps ahead; a second one adds a process's memory and no
            measurable speed (``benchmarks/cohort``, one run on 2 cores: 1 worker 92-94 % of the
            pipeline's own slices/s over 4 rounds, 2 workers 92-94 %, 0 workers 89-93 %: within the
            rounds' noise).
        batch_size, tta: passed to the pipeline.
        overwrite: delete an earlier run's outputs in ``out_dir`` first (only a predict run's).
        retry_failed: segment again the subjects that failed before with the same inputs.
        progress: show a progress bar (subjects/s and ETA; main process only).
        log: a stream to print the summary to (main process only; the CLI passes stdout), or None.
    """
    if not (isinstance(num_parts, int) and num_parts >= 1 and isinstance(part_id, int) and 0 <= part_id < num_parts):
        raise InputError(f"num_parts={num_parts}, part_id={part_id}: need num_parts >= 1 and 0 <= part_id < num_parts")
    if num_workers < 0:
        raise InputError(f"num_workers={num_workers}: must be 0 or more")
    # Without an accelerator (or with device="cpu") the processes meet over gloo: PartialState needs
    # cpu=True to see a torchrun launch on CPUs as distributed (otherwise each process thinks it is alone
    # and all of them segment every subject). `accelerate launch --cpu --num_processes N` starts only one
    # process unless MPI is set up; on CPUs, launch the processes with torchrun.
    on_cpu = str(device).startswith("cpu") if device is not None else not torch.accelerator.is_available()
    state = PartialState(cpu=on_cpu, timeout=timedelta(seconds=BARRIER_TIMEOUT_S))
    out = Path(out_dir)
    discovery = find_subjects(source, include, exclude=out)
    if pipe is None:
        pipe = load_pipeline(model, roi_model=roi_model, device=device if device is not None else state.device)
    settings = _settings(pipe, include, tta)
    main = state.is_main_process
    # the main process prepares OUT and plans; the others wait, then read the same plan from the files
    if main:
        if overwrite:
            clear_output(out)
        check_output(out, settings)
        (out / SUBJECTS).mkdir(exist_ok=True)
        (out / ERRORS).mkdir(exist_ok=True)
    state.wait_for_everyone()
    if not main:
        check_output(out, settings)
    # a machine's part is fixed by the sorted subject list (never by what other machines have done: they
    # may start later); within the part, the subjects left to do are split between the processes
    part = discovery.subjects[part_id::num_parts]
    todo, counts = plan(out, part, retry_failed)
    state.wait_for_everyone()  # every process has planned before any writes
    with state.split_between_processes(todo) as share:
        share = list(share)
    started = time.perf_counter()
    done_now = failed_now = slices_now = 0
    bar = None
    if progress and main and share:
        bar = tqdm(total=len(share), unit="subject", desc="subjects" if state.num_processes == 1 else "subjects (process 0)",
                   dynamic_ncols=True)
    subjects = [subject for subject, _ in share]

    def write(subject, files, record, inputs) -> int:
        """The subject's folder, staged and renamed into place (run on the writer thread)."""
        with atomic_folder(out / SUBJECTS / subject.name) as staged:
            write_subject(staged, record, files.frames, files.ignored, files.label_files, inputs)
        (out / ERRORS / f"{subject.name}.json").unlink(missing_ok=True)
        return sum(len(f.slices) for f in files.frames)

    def failed(subject, inputs, failure) -> None:
        message = _describe(failure)
        if (out / SUBJECTS / subject.name / "row.json").is_file():  # its inputs changed, now it fails: no stale row
            shutil.rmtree(out / SUBJECTS / subject.name, ignore_errors=True)
        _write_error(out, subject, message, inputs)
        (bar or tqdm).write(f"{subject.name}: failed: {message}", file=sys.stderr)  # above the bar, if any

    # The files of a subject (masks, JSON, montage PNG) are written on one writer thread while the next
    # subject is segmented: the compression of NIfTI and PNG runs on the other core, outside the GIL. At
    # most one subject waits to be written; a writing error fails that subject only.
    pending = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="halsr-cohort-writer") as writer:
        def collect():
            nonlocal done_now, failed_now, slices_now
            subject, inputs, future = pending
            try:
                slices_now += future.result()
                done_now += 1
            except Exception as failure:  # noqa: BLE001 - one subject's failure never stops the cohort
                failed(subject, inputs, failure)
                failed_now += 1
            if bar:
                bar.update(1)
                bar.set_postfix(failed=failed_now, refresh=False)

        def writer_idle():  # before a reader worker is forked again (see _read_subjects)
            if pending is not None:
                pending[2].exception()  # waits; the outcome is collected in order below

        for index, files, error in _read_subjects(subjects, include, num_workers, writer_idle) if share else ():
            subject, inputs = share[index]
            try:
                if error is not None:
                    raise InputError(error)
                record = measure_subject(pipe, subject, files.frames, batch_size=batch_size, tta=tta)
            except Exception as failure:  # noqa: BLE001 - one subject's failure never stops the cohort
                if pending is not None:
                    collect()
                    pending = None
                failed(subject, inputs, failure)
                failed_now += 1
                if bar:
                    bar.update(1)
                    bar.set_postfix(failed=failed_now, refresh=False)
                continue
            if pending is not None:
                collect()
            pending = (subject, inputs, writer.submit(write, subject, files, record, inputs))
        if pending is not None:
            collect()
    if bar:
        bar.close()
    # every process's counts (the list of one process when not distributed); waits for all of them
    gathered = gather_object([(time.perf_counter() - started, done_now, failed_now, slices_now)])
    seconds = max(c[0] for c in gathered)
    done_now, failed_now, slices_now = (sum(c[i] for c in gathered) for i in range(1, 4))
    summary = {"seconds": seconds, "done_now": done_now, "failed_now": failed_now, "slices_now": slices_now,
               "subjects_by_process": [c[1] + c[2] for c in gathered],
               "skipped": counts["skipped"], "failed_before": counts["failed_before"], "changed": counts["changed"],
               "subjects_per_second": (done_now + failed_now) / seconds if seconds > 0 else None,
               "slices_per_second": slices_now / seconds if seconds > 0 else None}
    if main:
        summary.update(merge_outputs(out, discovery))
        if log is not None:
            print_summary(summary, discovery, log, state.num_processes)
    state.wait_for_everyone()
    return summary


def merge_outputs(out: Path, discovery: Discovery) -> dict:
    """Write cohort.csv, errors.csv and ef_histogram.png from the finished subjects and the error
    records of the discovered subjects (sorted by subject); return the counts and paths. One merge at
    a time (:func:`_merge_lock`): parts finishing together cannot leave a table that misses one's rows,
    since the merge that runs last reads every subject folder written before it. ``halsr-hf predict
    --merge`` runs only this step."""
    if not _is_run_output(out):
        raise InputError(f"{out}: not the output of halsr-hf predict (no run.json); nothing to merge")
    with _merge_lock(out):
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
        ef = [float(r["ef_percent"]) for r in rows if r.get("ef_percent")]
        histogram = out / "ef_histogram.png"
        if ef:
            flagged = subjects_with_warnings(rows)
            atomic_file(histogram, lambda tmp: ef_histogram(tmp, ef, flagged))
    return {"subjects": len(discovery.subjects), "done": len(rows), "failed": len(errors), "pending": pending,
            "flagged": sum(int(r.get("slices_flagged") or 0) > 0 for r in rows),
            "with_info": sum(int(r.get("slices_info") or 0) > 0 for r in rows), "ef": ef,
            "cohort_csv": str(out / "cohort.csv"), "errors_csv": str(out / "errors.csv"),
            "ef_histogram": str(histogram) if ef else None}


def merge_only(source, out_dir, include: str | None = None, log=None) -> dict:
    """``halsr-hf predict --merge``: rebuild the tables of ``out_dir`` from its subject folders (after
    parts that ran with other settings of their own, or to be sure after a crash), segmenting nothing."""
    out = Path(out_dir)
    discovery = find_subjects(source, include, exclude=out)
    summary = merge_outputs(out, discovery)
    if log is not None:
        write = lambda text: print(text, file=log)  # noqa: E731
        write(f"subjects: {summary['subjects']} | done: {summary['done']} | failed: {summary['failed']} | with flagged "
              f"slices: {summary['flagged']}" + (f" | pending: {summary['pending']}" if summary["pending"] else ""))
    return summary


def subjects_with_warnings(rows) -> dict:
    """{subject: what to check} for the cohort overview: its slices' warning flags (the ``qc_warnings``
    column; information flags such as ``basal_slice_removed`` are not warnings) and its subject-level
    warnings (``warnings``)."""
    flagged = {}
    for row in rows:
        counts = [item.rsplit(" ", 1) for item in (row.get("qc_warnings") or "").split("; ") if item.strip()]
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
          f"{summary['flagged']} | with information flags: {summary['with_info']}"
          + (f" | pending (other parts): {summary['pending']}" if summary["pending"] else ""))
    if summary["changed"]:
        write(f"inputs changed since the last run: {summary['changed']} subject(s) segmented again")
    if summary["failed_before"]:
        write(f"failed before with the same inputs, not tried again: {summary['failed_before']} (--retry-failed "
              "retries them; errors.csv says why)")
    if summary["done_now"] and summary["seconds"] > 0:
        scope = (f"{processes} processes, subjects {' + '.join(map(str, summary['subjects_by_process']))}"
                 if processes > 1 else "this run")
        write(f"time ({scope}): {summary['seconds']:.1f} s, {summary['subjects_per_second']:.2f} subjects/s, "
              f"{summary['slices_per_second']:.1f} slices/s")
    if summary["ef"]:
        ef = np.asarray(summary["ef"])
        write(f"EF: median {np.median(ef):.1f} %, range {ef.min():.1f}-{ef.max():.1f} %")
    if discovery.ignored:
        shown = ", ".join(discovery.ignored[:5]) + (" ..." if len(discovery.ignored) > 5 else "")
        write(f"not images, left out: {shown}")
    if discovery.label_files:
        shown = ", ".join(discovery.label_files[:5]) + (" ..." if len(discovery.label_files) > 5 else "")
        write(f"label maps by their names, left out: {shown}")
    outputs = [Path(summary["cohort_csv"]).name, Path(summary["errors_csv"]).name]
    if summary["ef_histogram"]:
        outputs.append(Path(summary["ef_histogram"]).name)
    write(f"written: {', '.join(outputs)} and subjects/ in {Path(summary['cohort_csv']).parent}/")
