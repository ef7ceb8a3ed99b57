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
    assert (pair["source"], pair["frames"], pair["ed_es_from"]) == ("patient011", "2", "lv_volume")
    assert (cine["source"], cine["frames"]) == ("patient019_cine.nii.gz", "3")
    assert (series["source"], series["frames"], series["slices"]) == (SERIES, "2", "18")
    for row in rows:
        record = json.loads((out / "subjects" / row["subject"] / f"{row['subject']}.json").read_text())
        curve = [f["lv_cavity_voxels"] for f in record["frames"]]
        assert int(row["ed_frame"]) == int(np.argmax(curve)) and int(row["es_frame"]) == int(np.argmin(curve))
        slices = [s for f in record["frames"] for s in f["slices"]]
        assert len(slices) == int(row["slices"]) and all("qc" in s and s["message"] for s in slices)
        assert int(row["slices_flagged"]) == sum(bool(s["qc"]) for s in slices)
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
    summary = predict_cohort(cohort, out, pipe=tiny_pipe, num_workers=0, progress=False, log=io.StringIO())
    assert (summary["skipped"], summary["done_now"], summary["failed"]) == (4, 0, 1)  # the broken one is tried again
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
    assert "a cine (3 frames) among 3 files" in errors["patient019"] and "--include" in errors["patient019"]
    assert "holds DICOM files and ED.nii.gz" in errors["mixed"]
    predict_cohort(root, tmp_path / "b", pipe=tiny_pipe, include="*_4d.nii.gz", num_workers=0, progress=False)
    (row,) = read_csv(tmp_path / "b" / "cohort.csv")
    assert (row["subject"], row["frames"]) == ("patient019", "3")
    record = json.loads((tmp_path / "b" / "subjects" / "patient019" / "patient019.json").read_text())
    assert record["ignored_files"] == ["Info.cfg", "patient019_frame01.nii.gz", "patient019_frame01_gt.nii.gz"]


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


def test_two_processes_with_accelerate_give_the_one_process_table(cohort, reference, tiny_folder, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
               "--cpu", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
               "-m", "halsr_hf.cli", "predict", "-i", str(cohort), "-o", str(out), "--model", str(tiny_folder),
               "--no-progress", "--num-workers", "1"]
    result = subprocess.run(command, env=_env(tmp_path), capture_output=True, text=True, timeout=300,
                            stdin=subprocess.DEVNULL)
    assert (out / "cohort.csv").is_file(), result.stdout[-2000:] + result.stderr[-3000:]
    assert (out / "cohort.csv").read_text() == (reference[0] / "cohort.csv").read_text()
    assert (out / "errors.csv").read_text() == (reference[0] / "errors.csv").read_text()
    assert result.stdout.count("subjects: 5 | done: 4 (4 now, 0 already done)") == 1  # one summary, counts of both
    assert result.returncode == 1  # a subject failed (errors.csv)


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
    assert (row["ed_frame"], row["es_frame"]) == ("0", "1")
    for column, key in (("edv_ml", "edv_ml"), ("esv_ml", "esv_ml"), ("sv_ml", "sv_ml"), ("ef_percent", "ef_percent"),
                        ("myocardial_mass_g", "myocardial_mass_g")):
        assert row[column] == f"{ef[key]:.2f}", column
    assert 5 < float(row["ef_percent"]) < 60  # a dilated cardiomyopathy patient (ACDC 011)


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

    rows = [{"subject": "a", "qc_summary": "basal_slice_removed 1; several_components 2", "warnings": ""},
            {"subject": "b", "qc_summary": "basal_slice_removed 1", "warnings": ""},
            {"subject": "c", "qc_summary": "", "warnings": "one frame: no ED/ES, no EF (volumes in the subject's JSON)"}]
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
