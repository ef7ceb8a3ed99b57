"""Cohorts (issue 19): ``halsr-hf predict`` / ``halsr_hf.cohort.predict_cohort`` on small cohorts built
from the real data: ACDC test volumes written as NIfTI (the SSL4MIS copy has no spacing: 1.5 x 1.5 x
10 mm is assumed here), a 4D NIfTI made by stacking frames, a Sunnybrook patient's DICOM files as one
series folder, and a corrupt file. The tiny random models check the plumbing (outputs, resume after
kill -9, parts, two processes); the bundled model checks that the cohort's EF is ``halsr-hf ef``'s."""

import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest

from halsr_hf import InputError
from halsr_hf.cohort import COLUMNS, find_subjects, predict_cohort
from halsr_hf.roi_stage import INFO_FLAGS, WARNING_FLAGS

from .conftest import DATA_DIR, REPO_ROOT

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # Sunnybrook's UIDs have a leading zero

AFFINE = np.diag([1.5, 1.5, 10.0, 1.0])  # assumed: the ACDC SSL4MIS copy lost the spacing
PAIRS = (11, 13)
CINE = 19
SERIES = "SCD0000101"


def acdc_volume(patient: int, frame: int) -> np.ndarray:
    """An ACDC test volume as NIfTI data (X, Y, Z): the pipeline reads slices as ``data[:, :, k].T``."""
    with h5py.File(DATA_DIR / "acdc-ssl4mis" / "data" / f"patient{patient:03d}_frame{frame:02d}.h5", "r") as f:
        return np.ascontiguousarray(f["image"][()].astype(np.float32).transpose(2, 1, 0))


def build_cohort(root: Path, pairs=PAIRS, cine=CINE, series=SERIES, corrupt=True) -> Path:
    """Subject folders with ED.nii.gz/ES.nii.gz, a 3-frame 4D NIfTI (ES, ED, ES), a DICOM series
    folder and a corrupt NIfTI, as a user's cohort folder."""
    root.mkdir(parents=True)
    for patient in pairs:
        folder = root / f"patient{patient:03d}"
        folder.mkdir()
        for frame, name in ((1, "ED"), (2, "ES")):
            nib.save(nib.Nifti1Image(acdc_volume(patient, frame), AFFINE), folder / f"{name}.nii.gz")
    if cine:
        frames = [acdc_volume(cine, 2), acdc_volume(cine, 1), acdc_volume(cine, 2)]
        nib.save(nib.Nifti1Image(np.stack(frames, axis=-1), AFFINE), root / f"patient{cine:03d}_cine.nii.gz")
    if series:
        shutil.copytree(DATA_DIR / "sunnybrook" / "dicoms" / series, root / series)
    if corrupt:
        (root / "broken.nii.gz").write_bytes(b"\x1f\x8b" + b"not a NIfTI" * 20)
    (root / "README.txt").write_text("notes, not an image")
    return root


def read_csv(path: Path) -> list:
    return list(csv.DictReader(io.StringIO(path.read_text())))


@pytest.fixture(scope="module")
def cohort(acdc_dir, sunnybrook_dir, tmp_path_factory) -> Path:
    return build_cohort(tmp_path_factory.mktemp("cohort") / "in")


@pytest.fixture(scope="module")
def reference(cohort, tiny_pipe, tmp_path_factory) -> tuple:
    """One uninterrupted one-process run of the cohort with the tiny model: (OUT, summary)."""
    out = tmp_path_factory.mktemp("reference") / "out"
    summary = predict_cohort(cohort, out, pipe=tiny_pipe, num_workers=1, progress=False, log=io.StringIO())
    return out, summary


def hidden_leftovers(out: Path) -> list:
    return [p for p in out.rglob(".*")]


# ---- finding subjects ------------------------------------------------------------------------


def test_find_subjects_folder_rules_and_manifest(tmp_path):
    root = tmp_path / "in"
    (root / "a").mkdir(parents=True)
    (root / "b b").mkdir()
    (root / ".hidden").mkdir()
    np.save(root / "c.npy", np.zeros((2, 8, 8), np.float32))
    (root / "c.nii.gz").write_bytes(b"")  # same name as c.npy
    (root / "notes.txt").write_text("x")
    (root / "out").mkdir()
    discovery = find_subjects(root, exclude=root / "out")
    assert [s.name for s in discovery.subjects] == ["a", "b_b", "c", "c"]
    assert discovery.ignored == ["notes.txt"]
    assert all("subject name 'c' is also used by" in s.error for s in discovery.subjects if s.name == "c")
    assert [s.name for s in find_subjects(root, include="*.npy", exclude=root / "out").subjects] == ["a", "b_b", "c"]

    manifest = tmp_path / "cohort.csv"
    manifest.write_text("subject,path,ed_frame,es_frame\nS1,in/c.npy,,\nS2,in/a,1,0\nS3,/abs/ed.nii.gz,0,\n"
                        "S3,/abs/es.nii.gz,,1\nS4,x.nii.gz,one,\n")
    subjects = {s.name: s for s in find_subjects(manifest).subjects}
    assert subjects["S1"].paths == [str(tmp_path / "in" / "c.npy")] and subjects["S1"].ed_frame is None
    assert (subjects["S2"].ed_frame, subjects["S2"].es_frame) == (1, 0)
    assert subjects["S3"].paths == ["/abs/ed.nii.gz", "/abs/es.nii.gz"] and (subjects["S3"].ed_frame, subjects["S3"].es_frame) == (0, 1)
    assert subjects["S3"].source == "/abs/ed.nii.gz;/abs/es.nii.gz"
    assert "ed_frame 'one' is not an integer" in subjects["S4"].error
    bad = tmp_path / "bad.csv"
    bad.write_text("name,file\nx,y\n")
    with pytest.raises(InputError, match="needs the columns subject and path"):
        find_subjects(bad)
    with pytest.raises(InputError, match="no such file or folder"):
        find_subjects(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no subjects there"):
        find_subjects(empty)


# ---- one run: the outputs -----------------------------------------------------------------------


def test_cohort_outputs(cohort, reference):
    out, summary = reference
    assert (summary["subjects"], summary["done"], summary["failed"], summary["done_now"]) == (5, 4, 1, 4)
    rows = read_csv(out / "cohort.csv")
    assert list(rows[0]) == list(COLUMNS)
    assert [r["subject"] for r in rows] == ["patient011", "patient013", "patient019_cine", SERIES]
    by_name = {r["subject"]: r for r in rows}
    pair, cine, series = by_name["patient011"], by_name["patient019_cine"], by_name[SERIES]
    # ED.nii.gz and ES.nii.gz are taken by their names, whatever the random model's volumes
    assert (pair["source"], pair["frames"], pair["ed_es_from"], pair["ed_frame"], pair["es_frame"]) == (
        "patient011", "2", "file_names", "0", "1")
    assert (cine["source"], cine["frames"], cine["ed_es_from"]) == ("patient019_cine.nii.gz", "3", "lv_volume")
    assert (series["source"], series["frames"], series["slices"]) == (SERIES, "2", "18")
    for row in rows:
        record = json.loads((out / "subjects" / row["subject"] / f"{row['subject']}.json").read_text())
        slices = [s for f in record["frames"] for s in f["slices"]]
        assert len(slices) == int(row["slices"]) and all("qc" in s and s["message"] for s in slices)
        # the warning / information counts, from each slice's full qc list and the flag tables
        assert int(row["slices_flagged"]) == sum(any(f in WARNING_FLAGS for f in s["qc"]) for s in slices)
        assert int(row["slices_info"]) == sum(any(f in INFO_FLAGS for f in s["qc"]) for s in slices)
        if row["edv_ml"]:
            edv, esv = float(row["edv_ml"]), float(row["esv_ml"])
            assert float(row["sv_ml"]) == pytest.approx(edv - esv, abs=0.011)
            assert float(row["ef_percent"]) == pytest.approx(100 * (edv - esv) / edv, abs=0.02)
    # masks: on the input's grid, with its affine; one per input file, 4D for a cine and a DICOM series
    mask = nib.load(out / "subjects" / "patient011" / "ED_mask.nii.gz")
    assert mask.shape == acdc_volume(11, 1).shape and np.allclose(mask.affine, AFFINE)
    cine_mask = nib.load(out / "subjects" / "patient019_cine" / "patient019_cine_mask.nii.gz")
    assert cine_mask.shape == acdc_volume(19, 1).shape + (3,) and np.allclose(cine_mask.affine, AFFINE)
    from halsr_hf.image_io import dicom_series_phases

    series_mask = nib.load(out / "subjects" / SERIES / f"{SERIES}_mask.nii.gz")
    assert series_mask.shape == (256, 256, 9, 2)
    assert np.allclose(series_mask.affine, dicom_series_phases(cohort / SERIES)[0].affine)
    record = json.loads((out / "subjects" / "patient019_cine" / "patient019_cine.json").read_text())
    labels = np.asarray(cine_mask.dataobj)
    assert [int((labels[..., t] == 1).sum()) for t in range(3)] == [f["lv_cavity_voxels"] for f in record["frames"]]
    curve = read_csv(out / "subjects" / "patient019_cine" / "volume_curve.csv")
    phases = ["/".join(p for p, t in (("ED", record["ed_frame"]), ("ES", record["es_frame"])) if t == f) for f in range(3)]
    assert [c["phase"] for c in curve] == phases and (out / "subjects" / "patient019_cine" / "volume_curve.png").is_file()
    # the corrupt study: in errors.csv, naming the file and what is wrong
    errors = read_csv(out / "errors.csv")
    assert [e["subject"] for e in errors] == ["broken"]
    assert "broken.nii.gz: unreadable or truncated NIfTI file" in errors[0]["error"]
    assert (out / "ef_histogram.png").stat().st_size > 1000 and not hidden_leftovers(out)


def test_rerun_skips_finished_subjects_and_refuses_other_settings(cohort, reference, tiny_pipe, tmp_path):
    out, _ = reference
    before = (out / "cohort.csv").read_text()
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "subjects").iterdir()}
    error_stamp = (out / "errors" / "broken.json").stat().st_mtime_ns
    summary = predict_cohort(cohort, out, pipe=tiny_pipe, num_workers=0, progress=False, log=io.StringIO())
    # the broken one failed before with the same file: not tried again (--retry-failed would)
    assert (summary["skipped"], summary["failed_before"], summary["done_now"], summary["failed"]) == (4, 1, 0, 1)
    assert (out / "errors" / "broken.json").stat().st_mtime_ns == error_stamp
    assert (out / "cohort.csv").read_text() == before
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (out / "subjects").iterdir()}
    with pytest.raises(InputError, match="written by a run with other settings \\(tta False -> True\\)"):
        predict_cohort(cohort, out, pipe=tiny_pipe, tta=True, progress=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep me")
    with pytest.raises(InputError, match="not empty and not the output of halsr-hf predict"):
        predict_cohort(cohort, foreign, pipe=tiny_pipe, progress=False)


def test_parts_write_one_table(cohort, reference, tiny_pipe, tmp_path):
    """--num-parts/--part-id: two parts into one folder give the one-run table."""
    out = tmp_path / "out"
    first = predict_cohort(cohort, out, pipe=tiny_pipe, num_parts=2, part_id=0, num_workers=0, progress=False, log=io.StringIO())
    assert first["pending"] > 0 and first["done"] + first["failed"] + first["pending"] == 5
    predict_cohort(cohort, out, pipe=tiny_pipe, num_parts=2, part_id=1, num_workers=0, progress=False, log=io.StringIO())
    assert (out / "cohort.csv").read_text() == (reference[0] / "cohort.csv").read_text()
    assert (out / "errors.csv").read_text() == (reference[0] / "errors.csv").read_text()
    with pytest.raises(InputError, match="part_id=2"):
        predict_cohort(cohort, out, pipe=tiny_pipe, num_parts=2, part_id=2)


def test_manifest_frames_and_subject_errors(cohort, tiny_pipe, tmp_path):
    manifest = tmp_path / "manifest.csv"
    cine = cohort / "patient019_cine.nii.gz"
    manifest.write_text(f"subject,path,ed_frame,es_frame\ncine,{cine},1,2\nbad_frame,{cine},7,\n"
                        f"pair,{cohort / 'patient011' / 'ED.nii.gz'},,\npair,{cohort / 'patient011' / 'ES.nii.gz'},,\n"
                        f"single,{cohort / 'patient011' / 'ED.nii.gz'},,\n")
    out = tmp_path / "out"
    summary = predict_cohort(manifest, out, pipe=tiny_pipe, num_workers=0, progress=False, log=io.StringIO())
    rows = {r["subject"]: r for r in read_csv(out / "cohort.csv")}
    assert (rows["cine"]["ed_frame"], rows["cine"]["es_frame"], rows["cine"]["ed_es_from"]) == ("1", "2", "manifest")
    assert rows["pair"]["frames"] == "2" and rows["pair"]["source"].endswith("ED.nii.gz;" + str(cohort / "patient011" / "ES.nii.gz"))
    assert rows["single"]["ef_percent"] == "" and "one frame" in rows["single"]["warnings"]
    errors = {e["subject"]: e["error"] for e in read_csv(out / "errors.csv")}
    assert summary["failed"] == 1 and "ed_frame 7 out of range for 3 frames" in errors["bad_frame"]


def test_acdc_style_folders_need_include_and_mixed_folders_are_refused(cohort, tiny_pipe, tmp_path):
    """An ACDC patient folder holds a 4D cine, its ED/ES frames and their labels: ambiguous unless
    --include chooses; DICOM beside NIfTI in one subject is refused."""
    root = tmp_path / "in"
    patient = root / "patient019"
    patient.mkdir(parents=True)
    shutil.copy(cohort / "patient019_cine.nii.gz", patient / "patient019_4d.nii.gz")
    nib.save(nib.Nifti1Image(acdc_volume(19, 1), AFFINE), patient / "patient019_frame01.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros(acdc_volume(19, 1).shape, np.uint8), AFFINE), patient / "patient019_frame01_gt.nii.gz")
    (patient / "Info.cfg").write_text("ED: 1\nES: 12\n")
    mixed = root / "mixed"
    shutil.copytree(cohort / SERIES, mixed)
    shutil.copy(cohort / "patient011" / "ED.nii.gz", mixed / "ED.nii.gz")
    predict_cohort(root, tmp_path / "a", pipe=tiny_pipe, num_workers=0, progress=False)
    errors = {e["subject"]: e["error"] for e in read_csv(tmp_path / "a" / "errors.csv")}
    # the label map (patient019_frame01_gt) is left out; the cine and the ED frame remain: ambiguous
    assert "a cine (3 frames) among 2 files" in errors["patient019"] and "--include" in errors["patient019"]
    assert "holds DICOM files and ED.nii.gz" in errors["mixed"]
    predict_cohort(root, tmp_path / "b", pipe=tiny_pipe, include="*_4d.nii.gz", num_workers=0, progress=False)
    (row,) = read_csv(tmp_path / "b" / "cohort.csv")
    assert (row["subject"], row["frames"]) == ("patient019", "3")
    record = json.loads((tmp_path / "b" / "subjects" / "patient019" / "patient019.json").read_text())
    assert record["ignored_files"] == ["Info.cfg", "patient019_frame01.nii.gz", "patient019_frame01_gt.nii.gz"]
    assert record["label_files_skipped"] == [] and row["label_files_skipped"] == "0"  # --include chose already


# ---- resume after kill -9, two processes ---------------------------------------------------------

SLOW_RUN = """
import sys, time
import halsr_hf.cohort as cohort
write = cohort.write_subject
def slow(folder, *args):  # each subject stays half-written (staged, not renamed) for a while
    write(folder, *args)
    time.sleep(float(sys.argv[1]))
cohort.write_subject = slow
from halsr_hf.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _env(tmp_path) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "HF_HOME": str(tmp_path / "hf-home"), "PYTHONWARNINGS": "ignore"}


def test_resume_after_kill_9_gives_the_same_table(cohort, reference, tiny_pipe, tiny_folder, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-c", SLOW_RUN, "1.0", "predict", "-i", str(cohort), "-o", str(out),
               "--model", str(tiny_folder), "--no-progress", "--num-workers", "1"]
    process = subprocess.Popen(command, env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    deadline = time.time() + 240
    finished, staged = [], []
    try:
        while time.time() < deadline and process.poll() is None:
            subjects = out / "subjects"
            finished = [p.name for p in subjects.iterdir() if not p.name.startswith(".")] if subjects.is_dir() else []
            staged = list(subjects.glob(".*.tmp-*")) if subjects.is_dir() else []
            if len(finished) >= 2 and staged:
                break
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)  # the run and its DataLoader worker
    finally:
        process.wait(30)
    assert len(finished) >= 2 and staged, process.stderr.read().decode()[-3000:]
    assert not (out / "cohort.csv").exists()  # the table is written at the end
    stamps = {name: (out / "subjects" / name).stat().st_mtime_ns for name in finished}
    summary = predict_cohort(cohort, out, pipe=tiny_pipe, num_workers=1, progress=False, log=io.StringIO())
    assert summary["skipped"] == len(finished) and summary["done_now"] == 4 - len(finished)  # none lost, none twice
    assert stamps == {name: (out / "subjects" / name).stat().st_mtime_ns for name in finished}
    assert (out / "cohort.csv").read_text() == (reference[0] / "cohort.csv").read_text()
    assert (out / "errors.csv").read_text() == (reference[0] / "errors.csv").read_text()
    assert not hidden_leftovers(out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_give_the_one_process_table(cohort, reference, tiny_folder, tmp_path):
    """Two CPU processes (torchrun: `accelerate launch --cpu --num_processes 2` starts one process
    without MPI, which this test ran before without noticing) share the subjects and write the table
    of one process."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
               "-m", "halsr_hf.cli", "predict", "-i", str(cohort), "-o", str(out), "--model", str(tiny_folder),
               "--no-progress", "--num-workers", "1"]
    result = subprocess.run(command, env=_env(tmp_path), capture_output=True, text=True, timeout=300,
                            stdin=subprocess.DEVNULL)
    assert (out / "cohort.csv").is_file(), result.stdout[-2000:] + result.stderr[-3000:]
    assert (out / "cohort.csv").read_text() == (reference[0] / "cohort.csv").read_text()
    assert (out / "errors.csv").read_text() == (reference[0] / "errors.csv").read_text()
    assert result.stdout.count("subjects: 5 | done: 4 (4 now, 0 already done)") == 1  # one summary, counts of both
    assert "time (2 processes, subjects 3 + 2)" in result.stdout, result.stdout  # the 5 subjects, split in order
    assert result.returncode == 1  # a subject failed (errors.csv)
    # Resume with two subjects to do, both from the first process's share above: the to-do list is made
    # after skipping the finished subjects, then split, so each process gets one (split first: 2 + 0).
    first_two = sorted(p.name for p in (out / "subjects").iterdir())[:2]
    for name in first_two:
        shutil.rmtree(out / "subjects" / name)
    result = subprocess.run(command, env=_env(tmp_path), capture_output=True, text=True, timeout=300,
                            stdin=subprocess.DEVNULL)
    assert "subjects: 5 | done: 4 (2 now, 2 already done)" in result.stdout, result.stdout[-2000:] + result.stderr[-3000:]
    assert "time (2 processes, subjects 1 + 1)" in result.stdout
    assert (out / "cohort.csv").read_text() == (reference[0] / "cohort.csv").read_text()


# ---- the bundled model: EF as halsr-hf ef ---------------------------------------------------------


@pytest.mark.slow
def test_cohort_ef_matches_halsr_hf_ef(acdc_dir, tmp_path, capsys):
    import halsr_hf
    from halsr_hf.cli import main

    cohort = build_cohort(tmp_path / "in", pairs=(11,), cine=None, series=None, corrupt=False)
    pipe = halsr_hf.load_pipeline()
    predict_cohort(cohort, tmp_path / "out", pipe=pipe, num_workers=0, progress=False, log=io.StringIO())
    (row,) = read_csv(tmp_path / "out" / "cohort.csv")
    capsys.readouterr()
    folder = cohort / "patient011"
    assert main(["ef", "--ed", str(folder / "ED.nii.gz"), "--es", str(folder / "ES.nii.gz"), "--json"]) == 0
    ef = json.loads(capsys.readouterr().out)
    assert (row["ed_frame"], row["es_frame"], row["ed_es_from"]) == ("0", "1", "file_names")
    for column, key in (("edv_ml", "edv_ml"), ("esv_ml", "esv_ml"), ("sv_ml", "sv_ml"), ("ef_percent", "ef_percent"),
                        ("myocardial_mass_g", "myocardial_mass_g")):
        assert row[column] == f"{ef[key]:.2f}", column
    # independently of clinical.cardiac_function: the volumes by hand from the masks written to disk
    # (voxels x 1.5 x 1.5 x 10 mm), and the EF of the experts' labels (ACDC label 3 = LV cavity)
    voxel_ml = 1.5 * 1.5 * 10.0 / 1000
    masks = {phase: np.asarray(nib.load(tmp_path / "out" / "subjects" / "patient011" / f"{phase}_mask.nii.gz").dataobj)
             for phase in ("ED", "ES")}
    edv, esv = ((masks[phase] == 1).sum() * voxel_ml for phase in ("ED", "ES"))
    assert float(row["edv_ml"]) == pytest.approx(edv, abs=0.006) and float(row["esv_ml"]) == pytest.approx(esv, abs=0.006)
    assert float(row["myocardial_mass_g"]) == pytest.approx((masks["ED"] == 2).sum() * voxel_ml * 1.05, abs=0.006)
    assert float(row["ef_percent"]) == pytest.approx(100 * (edv - esv) / edv, abs=0.006)
    reference = []
    for frame in (1, 2):
        with h5py.File(DATA_DIR / "acdc-ssl4mis" / "data" / f"patient011_frame{frame:02d}.h5", "r") as f:
            reference.append(int((f["label"][()] == 3).sum()))
    reference_ef = 100 * (reference[0] - reference[1]) / reference[0]
    assert abs(float(row["ef_percent"]) - reference_ef) < 5, (row["ef_percent"], reference_ef)


# ---- real study folders (issue 25): a synthetic cine whose volumes are known by construction --------
#
# ThresholdPipe stands in for the network: it labels the LV cavity where the image is bright (1.0) and
# the myocardium where it is mid-grey (0.5), so every volume below is the count of the discs that
# `disc_cine` drew, times the voxel volume, computed here by hand and not by the code under test.

SPACING = (1.25, 1.25, 8.0)  # mm: x, y, slice
VOXEL_ML = 1.25 * 1.25 * 8.0 / 1000


def disc_volume(radius: float, slices=range(1, 7), shape=(48, 48, 8), ring: float = 3.0) -> np.ndarray:
    """NIfTI data (X, Y, Z): on ``slices``, a bright disc (LV cavity, 1.0) of ``radius`` pixels inside a
    mid-grey ring (myocardium, 0.5) of width ``ring``; background 0.1 with a faint gradient (an image has
    many grey levels)."""
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    distance = np.hypot(x - 23.5, y - 23.5)
    volume = np.zeros(shape, np.float32) + 0.1 + 0.001 * (x + 48 * y)[..., None] / 48
    for z in slices:
        volume[..., z][distance <= radius + ring] = 0.5
        volume[..., z][distance <= radius] = 1.0
    return volume


def cavity_ml(radius: float, slices=range(1, 7)) -> float:
    """By hand: the disc's pixels (x, y integer points within ``radius`` of the centre) times slices."""
    pixels = sum(1 for x in range(48) for y in range(48) if (x - 23.5) ** 2 + (y - 23.5) ** 2 <= radius ** 2)
    return pixels * len(slices) * VOXEL_ML


class _Config:
    _name_or_path = ""


class ThresholdPipe:
    """A stand-in for the pipeline (the cohort's interface: a list of frames in, one output per
    frame): cavity where the image > 0.75, myocardium where 0.3-0.75. ``qc`` gives flags to chosen
    slices: {z: [flags]}."""

    backend = "torch"
    image_processor = None
    roi_model = None

    def __init__(self, qc=None, seed: float = 0.0):
        import torch

        self.model = torch.nn.Linear(1, 1)
        with torch.no_grad():
            self.model.weight.fill_(seed)
            self.model.bias.fill_(0.0)
        self.model.config = _Config()
        self.qc = qc or {}

    def one(self, loaded):
        from halsr_hf.image_io import load_input
        from halsr_hf.roi_stage import split_flags

        loaded = load_input(loaded)
        label_map = np.stack([np.where(s > 0.75, 1, np.where(s > 0.3, 2, 0)) for s in loaded.slices]).astype(np.uint8)
        slices = []
        for z in range(len(label_map)):
            qc = self.qc.get(z, [])
            slices.append({"lv_found": bool((label_map[z] == 1).any()), "lv_probability": 1.0, "roi": None, "qc": qc,
                           "qc_warnings": split_flags(qc)[0], "qc_info": split_flags(qc)[1], "message": "threshold",
                           "areas_px": None, "areas_mm2": None})
        return {"label_map": label_map, "pixel_spacing": loaded.pixel_spacing,
                "slice_thickness": loaded.slice_thickness, "slices": slices}

    def __call__(self, inputs, batch_size=16, tta=False, **kwargs):
        return [self.one(x) for x in inputs] if isinstance(inputs, list) else self.one(inputs)


def save(volume: np.ndarray, path: Path, spacing=SPACING, dtype=None) -> Path:
    image = nib.Nifti1Image(volume if dtype is None else volume.astype(dtype), np.diag(list(spacing) + [1.0]))
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, path)
    return path


def run(root: Path, out: Path, pipe=None, **kwargs) -> tuple:
    summary = predict_cohort(root, out, pipe=pipe or ThresholdPipe(), num_workers=0, progress=False,
                             log=kwargs.pop("log", io.StringIO()), **kwargs)
    return summary, {r["subject"]: r for r in read_csv(out / "cohort.csv")}


def test_ef_of_a_synthetic_cine_is_the_hand_computed_one(tmp_path):
    """A 5-frame 4D cine (radii 9, 6, 7, 11, 10: ED frame 3, ES frame 1) and the same heart as ED/ES
    files named in the opposite order on disk (ES.nii.gz sorts after ED.nii.gz, but e_s_... first)."""
    radii = (9, 6, 7, 11, 10)
    root = tmp_path / "in"
    root.mkdir()
    save(np.stack([disc_volume(r) for r in radii], axis=-1), root / "cine.nii.gz")
    pair = root / "pair"
    pair.mkdir()
    save(disc_volume(6), pair / "a_ES.nii.gz")  # sorts first: the names, not the order, make it ES
    save(disc_volume(11), pair / "b_ED.nii.gz")
    summary, rows = run(root, tmp_path / "out")
    edv, esv = cavity_ml(11), cavity_ml(6)
    for name, origin, ed, es in (("cine", "lv_volume", "3", "1"), ("pair", "file_names", "1", "0")):
        row = rows[name]
        assert (row["ed_frame"], row["es_frame"], row["ed_es_from"]) == (ed, es, origin), name
        assert float(row["edv_ml"]) == pytest.approx(edv, abs=0.006) and float(row["esv_ml"]) == pytest.approx(esv, abs=0.006)
        assert float(row["ef_percent"]) == pytest.approx(100 * (edv - esv) / edv, abs=0.006)
        assert row["warnings"] == "", row["warnings"]
    # the myocardial mass by hand: the ring of ED (radius 11 to 14) on 6 slices, 1.05 g/mL
    ring_ml = cavity_ml(14) - cavity_ml(11)
    assert float(rows["pair"]["myocardial_mass_g"]) == pytest.approx(1.05 * ring_ml, abs=0.006)


def test_label_maps_beside_the_images_are_skipped_and_counted(tmp_path):
    """Issue 25, measured: reference labels left beside the images became frames (EF 93 % instead of
    59 %), an empty label map became ES. Here: ED/ES images, their labels by name (_gt, _seg) and an
    unnamed label map found by its content; the EF is the images' alone."""
    folder = tmp_path / "in" / "subject"
    folder.mkdir(parents=True)
    save(disc_volume(11), folder / "ED.nii.gz")
    save(disc_volume(7), folder / "ES.nii.gz")
    labels = (disc_volume(11) > 0.75).astype(np.uint8) + (disc_volume(11) == 0.5).astype(np.uint8) * 2
    save(labels, folder / "ED_gt.nii.gz", dtype=np.uint8)
    save(np.zeros_like(labels), folder / "ES_seg.nii.gz", dtype=np.uint8)  # an empty label map
    save(labels * 100, folder / "reference.nii.gz", dtype=np.int16)  # no telling name: 0, 100, 200
    summary, rows = run(tmp_path / "in", tmp_path / "out")
    row = rows["subject"]
    edv, esv = cavity_ml(11), cavity_ml(7)
    assert row["frames"] == "2" and float(row["ef_percent"]) == pytest.approx(100 * (edv - esv) / edv, abs=0.006)
    assert (row["label_files_skipped"], row["ed_es_from"]) == ("3", "file_names")
    record = json.loads((tmp_path / "out" / "subjects" / "subject" / "subject.json").read_text())
    skipped = {item["file"]: item["why"] for item in record["label_files_skipped"]}
    assert skipped["ED_gt.nii.gz"] == skipped["ES_seg.nii.gz"] == "a label map by its name"
    assert skipped["reference.nii.gz"].startswith("a label map by its content: integer values, 3 distinct (0, 100, 200)")
    assert [Path(f["input"]).name for f in record["frames"]] == ["ED.nii.gz", "ES.nii.gz"]
    # a subject of label maps only is refused, naming them; a label file directly in IN is left out by name
    only = tmp_path / "only" / "labels"
    only.mkdir(parents=True)
    save(labels, only / "heart.nii.gz", dtype=np.uint8)
    save(disc_volume(9), tmp_path / "only" / "p2.nii.gz")
    save(labels, tmp_path / "only" / "p2_gt.nii.gz", dtype=np.uint8)
    log = io.StringIO()
    summary, rows = run(tmp_path / "only", tmp_path / "out2", log=log)
    assert list(rows) == ["p2"] and summary["subjects"] == 2
    (error,) = read_csv(tmp_path / "out2" / "errors.csv")
    assert "only label maps, no image to segment: heart.nii.gz (a label map by its content" in error["error"]
    assert "label maps by their names, left out: p2_gt.nii.gz" in log.getvalue()


def test_identical_ed_and_es_and_implausible_frames_are_warnings(tmp_path):
    """Issue 25, measured: ED copied as ES gave EF 0.00 % with empty warnings. Also: ES with a slice
    missed, a gap, names that disagree with the volumes (swapped files), EF outside 10-90 %."""
    root = tmp_path / "in"
    for name, ed, es in (("copied", disc_volume(10), disc_volume(10)),
                         ("missed", disc_volume(11), disc_volume(6, slices=range(1, 6))),
                         ("gap", disc_volume(11), disc_volume(6, slices=(1, 2, 4, 5, 6))),
                         ("swapped", disc_volume(6), disc_volume(11)),
                         ("hyper", disc_volume(11), disc_volume(3))):
        (root / name).mkdir(parents=True)
        save(ed, root / name / "ED.nii.gz")
        save(es, root / name / "ES.nii.gz")
    cine = np.stack([disc_volume(r) for r in (8, 6, 11, 9)], axis=-1)
    save(cine, root / "cine4d.nii.gz")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"subject,path,ed_frame,es_frame\nnamed_wrong,{root / 'cine4d.nii.gz'},0,2\n")
    _, rows = run(root, tmp_path / "out")
    warnings = {name: row["warnings"] for name, row in rows.items()}
    assert "ED and ES are identical label maps" in warnings["copied"] and "0.0 % is outside 10-90 %" in warnings["copied"]
    assert rows["copied"]["ef_percent"] == "0.00"
    assert "ES has LV cavity on fewer slices than ED (5 < 6)" in warnings["missed"]
    assert "ES has slices without LV cavity between slices with it (slice(s) 3)" in warnings["gap"]
    assert "ESV > EDV" in warnings["swapped"] and "the names and the volumes disagree" in warnings["swapped"]
    assert "is outside 10-90 %" in warnings["hyper"] and float(rows["hyper"]["ef_percent"]) > 90
    assert warnings["cine4d"] == ""
    _, named = run(manifest, tmp_path / "out-manifest")
    row = named["named_wrong"]
    assert (row["ed_frame"], row["es_frame"], row["ed_es_from"]) == ("0", "2", "manifest")
    assert "ED is frame 0 by the manifest, but frame 2 has a larger LV volume" in row["warnings"]
    assert "ES is frame 2 by the manifest, but frame 1 has a smaller LV volume" in row["warnings"]


def test_halsr_hf_ef_gives_the_same_warnings(tmp_path):
    from halsr_hf.clinical import ejection_fraction

    save(disc_volume(10), tmp_path / "ED.nii.gz")
    save(disc_volume(10), tmp_path / "ES.nii.gz")
    result = ejection_fraction(str(tmp_path / "ED.nii.gz"), str(tmp_path / "ES.nii.gz"), pipe=ThresholdPipe())
    assert result["ef_percent"] == 0.0
    assert any("ED and ES are identical label maps" in w for w in result["warnings"])
    assert any("outside 10-90 %" in w for w in result["warnings"])
    _, rows = run(tmp_path / "cohort-in" if False else _one_subject(tmp_path), tmp_path / "out")
    assert rows["s"]["warnings"] == "; ".join(result["warnings"])


def _one_subject(tmp_path) -> Path:
    root = tmp_path / "cohort-in"
    (root / "s").mkdir(parents=True)
    shutil.copy(tmp_path / "ED.nii.gz", root / "s" / "ED.nii.gz")
    shutil.copy(tmp_path / "ES.nii.gz", root / "s" / "ES.nii.gz")
    return root


def test_files_added_after_a_run_make_the_subject_run_again(tmp_path):
    """Issue 25, measured: after files were added, a rerun into the old output kept the stale results
    ("already done"). The inputs' names, sizes and times are recorded; a change redoes the subject."""
    folder = tmp_path / "in" / "s"
    folder.mkdir(parents=True)
    save(disc_volume(11), folder / "frame1.nii.gz")
    save(disc_volume(8), folder / "frame2.nii.gz")
    (tmp_path / "in" / "t").mkdir()
    save(disc_volume(9), tmp_path / "in" / "t" / "frame1.nii.gz")
    save(disc_volume(9), tmp_path / "in" / "t" / "frame2.nii.gz")
    run(tmp_path / "in", tmp_path / "out")
    stamp = (tmp_path / "out" / "subjects" / "t" / "row.json").stat().st_mtime_ns
    save(disc_volume(6), folder / "frame3.nii.gz")
    log = io.StringIO()
    summary, rows = run(tmp_path / "in", tmp_path / "out", log=log)
    assert rows["s"]["frames"] == "3" and rows["s"]["es_frame"] == "2"
    assert (summary["changed"], summary["done_now"], summary["skipped"]) == (1, 1, 1)
    assert "inputs changed since the last run: 1 subject(s) segmented again" in log.getvalue()
    assert (tmp_path / "out" / "subjects" / "t" / "row.json").stat().st_mtime_ns == stamp  # untouched


def test_resume_with_other_weights_or_backend_is_refused_and_overwrite_starts_again(tmp_path):
    """Issue 25, measured: new weights in the same model folder, then a resume: one table from two
    models. run.json holds a digest of both networks' weights, the backend and the settings."""
    from halsr_hf import CardiacLVSegmentationPipeline, HalsrImageProcessor

    from .conftest import tiny_models

    def pipe(seed):
        model, roi = tiny_models(seed)
        return CardiacLVSegmentationPipeline(model=model, image_processor=HalsrImageProcessor(size=64, roi_size=64),
                                             roi_model=roi, backend="torch")

    root = tmp_path / "in"
    (root / "s").mkdir(parents=True)
    save(disc_volume(11), root / "s" / "ED.nii.gz")
    save(disc_volume(7), root / "s" / "ES.nii.gz")
    run(root, tmp_path / "out", pipe=pipe(0))
    run(root, tmp_path / "out", pipe=pipe(0))  # the same weights again (another object): a resume
    with pytest.raises(InputError, match=r"other settings \(model_weights '[0-9a-f]{16}' -> '[0-9a-f]{16}'; "
                                         r"roi_model_weights .*pass --overwrite"):
        run(root, tmp_path / "out", pipe=pipe(1))
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert len(record["model_weights"]) == 16 and record["backend"] == "torch"
    second = pipe(0)
    second.backend = "onnx"  # only what run.json records: the backend's name
    with pytest.raises(InputError, match="backend 'torch' -> 'onnx'"):
        run(root, tmp_path / "out", pipe=second)
    summary, _ = run(root, tmp_path / "out", pipe=pipe(1), overwrite=True)
    assert (summary["done_now"], summary["skipped"]) == (1, 0)
    assert json.loads((tmp_path / "out" / "run.json").read_text())["model_weights"] != record["model_weights"]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="--overwrite deletes only a predict run's outputs"):
        run(root, foreign, overwrite=True)
    assert (foreign / "keep.txt").read_text() == "mine"


CRASH_ON = "crasher"


def test_a_reading_that_kills_its_worker_fails_that_subject_only(tmp_path, monkeypatch):
    """A subject whose reading kills the DataLoader worker (here: SIGKILL, as the OOM killer does) goes
    into errors.csv and the run goes on; a resume skips it, --retry-failed tries it again."""
    import halsr_hf.cohort as cohort

    root = tmp_path / "in"
    for name in ("a", CRASH_ON, "c", "d"):
        (root / name).mkdir(parents=True)
        save(disc_volume(11), root / name / "ED.nii.gz")
        save(disc_volume(7), root / name / "ES.nii.gz")
    read = cohort.read_subject

    def crashing(subject, include=None):
        if subject.name == CRASH_ON:
            os.kill(os.getpid(), signal.SIGKILL)
        return read(subject, include)

    monkeypatch.setattr(cohort, "read_subject", crashing)  # the workers are forked: they see it
    out = tmp_path / "out"
    summary = predict_cohort(root, out, pipe=ThresholdPipe(), num_workers=2, progress=False)
    assert (summary["done"], summary["failed"]) == (3, 1)
    (error,) = read_csv(out / "errors.csv")
    assert error["subject"] == CRASH_ON and "killed the reader process" in error["error"]
    summary = predict_cohort(root, out, pipe=ThresholdPipe(), num_workers=1, progress=False)
    assert (summary["skipped"], summary["failed_before"], summary["done_now"], summary["failed_now"]) == (3, 1, 0, 0)
    monkeypatch.setattr(cohort, "read_subject", read)
    summary = predict_cohort(root, out, pipe=ThresholdPipe(), num_workers=1, retry_failed=True, progress=False)
    assert (summary["done_now"], summary["failed"]) == (1, 0) and not read_csv(out / "errors.csv")


KILLED_MID_SEND = """
import os, signal, time
import numpy as np
import halsr_hf.cohort as cohort

def read(subject, include=None):  # the workers are forked: they see it
    if subject == "crash":
        time.sleep(1.0)  # while this worker's feeder thread is stuck sending "big" (nobody reads the pipe)
        os.kill(os.getpid(), signal.SIGKILL)
    return np.zeros(4_000_000 if subject == "big" else 10, np.float32)

cohort.read_subject = read
# two workers, two subjects each ahead: worker 0 reads 0, 2 ("big"), then 4 ("crash") once item 0 is taken
subjects = ["s0", "s1", "big", "s3", "crash", "s5"]
reading = cohort._read_subjects(subjects, None, num_workers=2)
out = [next(reading)]
time.sleep(4.0)  # the main process segments subject 0 meanwhile
out += list(reading)
print([(i, None if files is None else files.size, error and error[:40]) for i, files, error in out])
"""


def test_a_worker_killed_while_sending_a_subject_does_not_hang_the_run(tmp_path):
    """A worker killed (by its next subject) while its previous, large subject is still half sent
    through the loader's pipe: before subjects travelled through files, the main process waited on the
    rest of that message forever (1 run in 7 of the test above hung so; this layout every time)."""
    script = tmp_path / "killed_mid_send.py"
    script.write_text(KILLED_MID_SEND)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == str([(0, 10, None), (1, 10, None), (2, 4_000_000, None), (3, 10, None),
                                       (4, None, "reading this subject killed the reader p"), (5, 10, None)])


def test_parts_merge_once_and_predict_merge_rebuilds_the_table(tmp_path, capsys):
    from halsr_hf.cli import main

    root = tmp_path / "in"
    for index, radius in enumerate((11, 10, 9)):
        (root / f"s{index}").mkdir(parents=True)
        save(disc_volume(radius), root / f"s{index}" / "ED.nii.gz")
        save(disc_volume(radius - 4), root / f"s{index}" / "ES.nii.gz")
    out = tmp_path / "out"
    run(root, out, num_parts=2, part_id=0)
    _, rows = run(root, out, num_parts=2, part_id=1)
    table = (out / "cohort.csv").read_text()
    assert list(rows) == ["s0", "s1", "s2"]
    (out / "cohort.csv").unlink()
    capsys.readouterr()
    assert main(["predict", "-i", str(root), "-o", str(out), "--merge"]) == 0
    assert (out / "cohort.csv").read_text() == table
    assert "subjects: 3 | done: 3 | failed: 0 | with flagged slices: 0" in capsys.readouterr().out
    assert main(["predict", "-i", str(root), "-o", str(tmp_path / "elsewhere"), "--merge"]) != 0
    assert "not the output of halsr-hf predict (no run.json); nothing to merge" in capsys.readouterr().err


def test_run_json_is_written_once_when_two_runs_start_together(tmp_path):
    """check_output creates run.json with a hard link: of two runs with other settings starting at
    once, exactly one writes it and the other is refused."""
    from concurrent.futures import ThreadPoolExecutor

    from halsr_hf.cohort import check_output

    out = tmp_path / "out"
    outcomes = []

    def start(tta):
        try:
            check_output(out, {"tta": tta, "include": None})
            outcomes.append("ok")
        except InputError as error:
            outcomes.append(str(error))

    for _ in range(5):
        shutil.rmtree(out, ignore_errors=True)
        outcomes.clear()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(start, (False, True)))
        assert sorted(o == "ok" for o in outcomes) == [False, True], outcomes
        assert not [p for p in out.iterdir() if p.name != "run.json"]


def test_warnings_and_information_flags_are_separate(tmp_path):
    """Issue 25: routine information (a basal slice removed, a second look) counted as "flagged"; only
    warning flags count now, information has its own columns."""
    root = tmp_path / "in"
    (root / "s").mkdir(parents=True)
    save(disc_volume(11), root / "s" / "ED.nii.gz")
    save(disc_volume(7), root / "s" / "ES.nii.gz")
    log = io.StringIO()
    summary, rows = run(root, tmp_path / "out", pipe=ThresholdPipe({0: ["basal_slice_removed"], 1: ["second_look"]}),
                        log=log)
    row = rows["s"]
    assert (row["slices_flagged"], row["qc_warnings"]) == ("0", "")
    assert (row["slices_info"], row["qc_info"]) == ("4", "second_look 2; basal_slice_removed 2")  # 2 frames
    assert summary["flagged"] == 0 and summary["with_info"] == 1
    assert "with flagged slices: 0 | with information flags: 1" in log.getvalue()
    summary, rows = run(root, tmp_path / "out2", pipe=ThresholdPipe({3: ["cavity_not_enclosed", "box_corrected"]}))
    assert (rows["s"]["slices_flagged"], rows["s"]["qc_warnings"], rows["s"]["qc_info"]) == (
        "2", "cavity_not_enclosed 2", "box_corrected 2")
    assert summary["flagged"] == 1


def test_frames_with_another_spacing_are_refused(tmp_path):
    """Issue 25: separate phase files were compared by shape only; ES at another slice spacing (or in
    metres, read through xyzt_units) would give volumes on two scales."""
    root = tmp_path / "in"
    (root / "s").mkdir(parents=True)
    save(disc_volume(11), root / "s" / "ED.nii.gz")
    save(disc_volume(7), root / "s" / "ES.nii.gz", spacing=(1.25, 1.25, 10.0))
    (root / "m").mkdir()
    save(disc_volume(11), root / "m" / "ED.nii.gz")
    image = nib.Nifti1Image(disc_volume(7), np.diag([0.00125, 0.00125, 0.008, 1.0]))
    image.header.set_xyzt_units("meter", "sec")
    nib.save(image, root / "m" / "ES.nii.gz")
    summary, rows = run(root, tmp_path / "out")
    errors = {e["subject"]: e["error"] for e in read_csv(tmp_path / "out" / "errors.csv")}
    assert "ES.nii.gz: slice spacing 10.0 mm, but" in errors["s"] and "must share a grid" in errors["s"]
    edv, esv = cavity_ml(11), cavity_ml(7)  # metres read as such: the same grid as ED
    assert float(rows["m"]["ef_percent"]) == pytest.approx(100 * (edv - esv) / edv, abs=0.006)


def test_each_subject_has_a_montage_with_its_warnings_marked(reference):
    """Issue 26: checking a subject meant opening its NIfTI masks in a viewer. Each subject now
    has ``SUBJECT_montage.png``: ED and ES over the slices with the masks overlaid (the overlay of
    the Space), a slice with a warning flag framed in orange, the others not."""
    from PIL import Image

    from halsr_hf.roi_stage import split_flags
    from halsr_hf.visualize import (MONTAGE_CAPTION, MONTAGE_HEADER, MONTAGE_LABEL_WIDTH, MONTAGE_TILE, WARNING_COLOR,
                                    montage)

    out, _ = reference
    framed = plain = 0
    for row in read_csv(out / "cohort.csv"):
        folder = out / "subjects" / row["subject"]
        record = json.loads((folder / f"{row['subject']}.json").read_text())
        picture = np.asarray(Image.open(folder / f"{row['subject']}_montage.png").convert("RGB"))
        phases = (record["ed_frame"], record["es_frame"])
        slices = len(record["frames"][0]["slices"])
        assert picture.shape[:2] == (MONTAGE_HEADER + 2 * (MONTAGE_TILE + MONTAGE_CAPTION + 4),
                                     MONTAGE_LABEL_WIDTH + slices * (MONTAGE_TILE + 4))
        for r, t in enumerate(phases):
            for z, item in enumerate(record["frames"][t]["slices"]):
                left = MONTAGE_LABEL_WIDTH + z * (MONTAGE_TILE + 4)
                top = MONTAGE_HEADER + r * (MONTAGE_TILE + MONTAGE_CAPTION + 4)
                edge = tuple(int(v) for v in picture[top + MONTAGE_TILE // 2, left - 2])
                warned = bool(split_flags(item["qc"])[0])
                assert (edge == WARNING_COLOR) == warned, (row["subject"], t, z, item["qc"])
                framed, plain = framed + warned, plain + (not warned)
    assert framed  # the tiny random model flags its slices; an unflagged tile: below
    rows = [("ED", [np.random.default_rng(0).random((40, 40))] * 2, [np.zeros((40, 40), np.uint8)] * 2, [None, None],
             [[], ["several_components"]])]
    picture = np.asarray(montage(rows, title="t"))
    lefts = [MONTAGE_LABEL_WIDTH + z * (MONTAGE_TILE + 4) - 2 for z in (0, 1)]
    assert [tuple(int(v) for v in picture[MONTAGE_HEADER + 50, x]) == WARNING_COLOR for x in lefts] == [False, True]


def test_cohort_overview_and_curve_have_whole_number_ticks_a_labelled_median_and_named_subjects(tmp_path):
    """Issue 26: ef_histogram.png had fractional count ticks, an unlabelled line at 50 % and no
    subject names; volume_curve.png had frame ticks at 0.5 and 1.5."""
    from halsr_hf.cohort import subjects_with_warnings
    from halsr_hf.visualize import ef_histogram, volume_curve

    rows = [{"subject": "a", "qc_warnings": "several_components 2", "qc_info": "basal_slice_removed 1", "warnings": ""},
            {"subject": "b", "qc_warnings": "", "qc_info": "basal_slice_removed 1", "warnings": ""},
            {"subject": "c", "qc_warnings": "", "qc_info": "", "warnings": "one frame: no ED/ES, no EF (volumes in the subject's JSON)"}]
    flagged = subjects_with_warnings(rows)
    assert list(flagged) == ["a", "c"] and flagged["a"] == "several_components 2"  # information flags are not warnings
    figure = ef_histogram(tmp_path / "ef.png", [20.0, 35.5, 36.0, 61.0], flagged)
    axes = figure.axes[0]
    assert all(float(tick).is_integer() for tick in axes.get_yticks())
    texts = [t.get_text() for t in axes.texts + figure.texts]
    assert "median 35.8 %" in texts and any("a: several_components 2" in t for t in texts)
    assert [line.get_xdata()[0] for line in axes.lines] == [35.75]  # the one line is the median
    curve = volume_curve(tmp_path / "curve.png", [0, 1, 2], [120.0, 80.0, 118.0], "mL", "s", {"ED": 0, "ES": 1})
    assert all(float(tick).is_integer() for tick in curve.axes[0].get_xticks())
    assert (tmp_path / "ef.png").stat().st_size > 1000 and (tmp_path / "curve.png").stat().st_size > 1000
