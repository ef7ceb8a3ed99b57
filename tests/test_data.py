"""halsr_hf.data: real ACDC (SSL4MIS), Sunnybrook, MyoPS 2020 and EMIDEC conversions (the last two on
a few patients), generated original-layout ACDC and LVQuan files, the schema, round trips, atomic
saving, the CLI."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pydicom
import pytest
import scipy.io
import torch

import datasets
from halsr_hf.data import (
    LABEL_NAMES,
    bbox_from_label,
    features,
    label_names_from_info,
    prepare_acdc,
    prepare_acdc_ssl4mis,
    prepare_emidec,
    prepare_lvquan,
    prepare_myops2020,
    prepare_sunnybrook,
    read_acdc_volume,
    save_dataset,
    split_counts,
)
from halsr_hf.data.cli import main as prepare_main
from halsr_hf.data.schema import COLUMNS, acdc_to_canonical, split_patients
from halsr_hf.errors import InputError


def _patients(ds):
    return set(ds["patient_id"])


def _assert_no_patient_overlap(dsdict):
    splits = list(dsdict)
    for i, a in enumerate(splits):
        for b in splits[i + 1:]:
            assert not (_patients(dsdict[a]) & _patients(dsdict[b])), (a, b)


# ---------------------------------------------------------------- real ACDC (SSL4MIS layout)

@pytest.fixture(scope="session")
def acdc_saved(acdc_dir, tmp_path_factory):
    """The real ACDC copy converted once per session and saved; (path, seconds, in-memory dict)."""
    out = tmp_path_factory.mktemp("acdc") / "acdc-ssl4mis"
    start = time.perf_counter()
    dsdict = prepare_acdc_ssl4mis(acdc_dir, num_proc=2)
    save_dataset(dsdict, out)
    return out, time.perf_counter() - start, dsdict


def test_acdc_real_counts_and_schema(acdc_saved):
    out, seconds, _ = acdc_saved
    loaded = datasets.load_from_disk(str(out))
    assert list(loaded) == ["train", "validation", "test"]
    counts = split_counts(loaded)
    print(f"\nACDC SSL4MIS conversion + save: {seconds:.1f} s; counts: {json.dumps(counts)}")
    assert {s: c["patients"] for s, c in counts.items()} == {"train": 70, "validation": 10, "test": 20}
    # 1312 training slice files; val/test: every slice of the 20 + 40 volumes
    assert counts["train"]["slices"] == 1312
    assert counts["validation"]["slices"] == 210 and counts["test"]["slices"] == 380
    _assert_no_patient_overlap(loaded)
    for split, ds in loaded.items():
        assert ds.column_names == COLUMNS
        assert ds.features == features()
        assert label_names_from_info(ds.info) == LABEL_NAMES
        assert set(ds["pixel_spacing"]) == {None} and set(ds["slice_thickness"]) == {None}
        assert set(ds["source"]) == {"acdc-ssl4mis"} and set(ds["phase"]) == {"ED", "ES"}
        # ED and ES of every patient in the same split
        pairs = {}
        for patient, phase in zip(ds["patient_id"], ds["phase"]):
            pairs.setdefault(patient, set()).add(phase)
        assert all(p == {"ED", "ES"} for p in pairs.values())
        assert all(g in {"NOR", "MINF", "DCM", "HCM", "RV"} for g in ds["group"])
    assert (out / "README.md").read_text().startswith("---\nlicense: cc-by-nc-sa-4.0")


def test_acdc_real_labels_roi_and_numpy_format(acdc_saved, acdc_dir):
    out, _, _ = acdc_saved
    ds = datasets.load_from_disk(str(out))["validation"].with_format("numpy")
    values = set()
    for row in ds:
        image, label = row["image"], row["label"]
        assert image.dtype == np.float32 and image.ndim == 2
        assert label.dtype == np.uint8 and label.shape == image.shape
        values |= set(np.unique(label).tolist())
        assert row["has_lv"] == bool(((label == 1) | (label == 2)).any())
        roi = row["roi"]
        if row["has_lv"]:
            x0, y0, x1, y1 = (int(v) for v in roi)
            lv = (label == 1) | (label == 2)
            assert lv[y0:y1 + 1, x0:x1 + 1].sum() == lv.sum()
            assert lv[y0].any() and lv[y1].any() and lv[:, x0].any() and lv[:, x1].any()
        else:
            assert roi is None
    assert values == {0, 1, 2}
    assert not all(ds["has_lv"])  # slices without LV are kept, flagged
    # bit-exact against the source file, canonical remapping (3 LV -> 1, 2 MYO -> 2, 1 RV -> 0)
    first = ds.filter(lambda r: r["patient_id"] == "patient028" and r["phase"] == "ED", with_indices=False)
    image, label = read_acdc_volume(acdc_dir / "data" / "patient028_frame01.h5")
    assert len(first) == image.shape[0] and first[0]["num_slices"] == image.shape[0]
    for row in first:
        k = int(row["slice_index"])
        assert row["image"].tobytes() == image[k].tobytes()
        expected = np.select([label[k] == 3, label[k] == 2], [1, 2], 0).astype(np.uint8)
        assert np.array_equal(row["label"], expected)


def test_acdc_real_train_slice_files(acdc_saved, acdc_dir):
    _, _, dsdict = acdc_saved
    train = dsdict["train"].with_format("numpy")
    names = (acdc_dir / "train_slices.list").read_text().split()
    stacks = {}
    for name in names:
        stack, k = name.rsplit("_slice_", 1)
        stacks.setdefault(stack, []).append(int(k))
    index = {(r["patient_id"], r["phase"], int(r["slice_index"])): i
             for i, r in enumerate(train.select_columns(["patient_id", "phase", "slice_index"]))}
    for name in names[:20]:
        stack, k = name.rsplit("_slice_", 1)
        patient, frame = stack.split("_frame")
        row = train[index[(patient, "ED" if frame == "01" else "ES", int(k) - 1)]]
        image, _ = read_acdc_volume(acdc_dir / "data" / f"{name}.h5")
        assert row["image"].tobytes() == image.tobytes()
        assert row["num_slices"] == len(stacks[stack])


def test_acdc_keep_rv_and_bad_files(tmp_path, acdc_dir):
    # a tiny SSL4MIS-layout copy: one volume per split, keep_rv gives id 3
    data = tmp_path / "src" / "data"
    data.mkdir(parents=True)
    for split, stack in (("train", "patient003_frame01"), ("val", "patient028_frame01"), ("test", "patient011_frame01")):
        (tmp_path / "src" / f"{split}.list").write_text(stack + "\n")
        os.symlink(acdc_dir / "data" / f"{stack}.h5" if (acdc_dir / "data" / f"{stack}.h5").exists()
                   else acdc_dir / "data" / "patient028_frame02.h5", data / f"{stack}.h5")
    dsdict = prepare_acdc_ssl4mis(tmp_path / "src", keep_rv=True)
    assert label_names_from_info(dsdict["train"].info)[3] == "rv_cavity"
    labels = set()
    for row in dsdict["validation"].with_format("numpy"):
        labels |= set(np.unique(row["label"]).tolist())
    assert labels == {0, 1, 2, 3}
    # unexpected label value, named with the file
    with h5py.File(data / "bad.h5", "w") as f:
        f["image"] = np.zeros((2, 8, 8), np.float32)
        f["label"] = np.full((2, 8, 8), 7, np.uint8)
    (data / "patient011_frame01.h5").unlink()
    os.replace(data / "bad.h5", data / "patient011_frame01.h5")
    with pytest.raises(InputError, match=r"patient011_frame01\.h5.*unexpected label values \[7\]"):
        prepare_acdc_ssl4mis(tmp_path / "src")
    (data / "patient011_frame01.h5").write_bytes(b"not hdf5")
    with pytest.raises(InputError, match=r"patient011_frame01\.h5: unreadable HDF5"):
        prepare_acdc_ssl4mis(tmp_path / "src")
    (data / "patient011_frame01.h5").unlink()
    with pytest.raises(InputError, match=r"patient011_frame01\.h5: no such file"):
        prepare_acdc_ssl4mis(tmp_path / "src")
    with h5py.File(data / "patient011_frame01.h5", "w") as f:
        f["image"] = np.zeros((2, 8, 8), np.float32)
        f["label"] = np.zeros((2, 8, 9), np.uint8)
    with pytest.raises(InputError, match=r"patient011_frame01\.h5: image shape .* label shape .* differ"):
        prepare_acdc_ssl4mis(tmp_path / "src")


# ---------------------------------------------------------------- real Sunnybrook

@pytest.fixture(scope="session")
def sunnybrook_ds(sunnybrook_dir):
    return prepare_sunnybrook(sunnybrook_dir)


def test_sunnybrook_real(sunnybrook_ds, sunnybrook_dir):
    assert list(sunnybrook_ds) == ["test"]
    ds = sunnybrook_ds["test"]
    assert len(ds) == 96 and len(_patients(ds)) == 5
    spacing = np.array(ds["pixel_spacing"])
    assert spacing.shape == (96, 2) and np.all((spacing > 1.0) & (spacing < 2.0))
    assert all(t is not None and t > 0 for t in ds["slice_thickness"])
    numpy_ds = ds.with_format("numpy")
    with_myo = [bool((row["label"] == 2).any()) for row in numpy_ds]
    assert sum(with_myo) == 46
    annotated = ds["myocardium_annotated"]
    assert sum(annotated) == 37
    for patient, has_myo, ok in zip(ds["patient_id"], with_myo, annotated):
        assert ok == (has_myo and patient != "SCD0000501")
    assert all(ds["has_lv"]) and all(r is not None for r in ds["roi"])
    # image = DICOM values exactly
    row = numpy_ds[0]
    path = sunnybrook_dir / "dicoms" / row["patient_id"]
    matches = [p for p in path.glob("*.dcm")
               if pydicom.dcmread(p).pixel_array.astype(np.float32).tobytes() == row["image"].tobytes()]
    assert len(matches) == 1
    dicom = pydicom.dcmread(matches[0])
    assert tuple(row["pixel_spacing"]) == tuple(float(v) for v in dicom.PixelSpacing)
    assert row["slice_thickness"] == float(dicom.SliceThickness)
    assert all(p.startswith("frame") for p in ds["phase"])


def test_sunnybrook_ratios_split(sunnybrook_dir):
    dsdict = prepare_sunnybrook(sunnybrook_dir, ratios=(0.6, 0.2, 0.2), split_seed=1)
    assert {s: len(_patients(d)) for s, d in dsdict.items()} == {"train": 3, "validation": 1, "test": 1}
    _assert_no_patient_overlap(dsdict)
    assert sum(len(d) for d in dsdict.values()) == 96


def test_sunnybrook_unreadable_dicom_names_the_file(sunnybrook_dir, tmp_path):
    """The converter reads DICOM with the pipeline's reader (image_io.read_dicom_file): a broken
    file is an InputError naming it."""
    import shutil

    source = tmp_path / "sunnybrook"
    shutil.copytree(sunnybrook_dir / "contourfiles" / "SC-HF-I-1", source / "contourfiles" / "SC-HF-I-1")
    shutil.copytree(sunnybrook_dir / "dicoms" / "SCD0000101", source / "dicoms" / "SCD0000101")
    (source / "link.csv").write_text("patient_id,original_id\nSCD0000101,SC-HF-I-1\n")
    assert len(prepare_sunnybrook(source, num_proc=1)["test"]) > 0
    broken = sorted((source / "dicoms" / "SCD0000101").glob("*.dcm"))[0]
    broken.write_bytes(b"garbage" * 10)
    with pytest.raises(InputError, match=f"{broken.name}: unreadable or truncated DICOM"):
        prepare_sunnybrook(source, num_proc=1)


# ---------------------------------------------------------------- real MyoPS 2020 (3 of 45 cases)

MYOPS_CASES = ("Case3001", "Case3002", "Case3011")  # 5, 3 and 2 slices; LSP, PSR and LSP voxel orientations


def _myops_subset(myops_dir, root, cases=MYOPS_CASES, copy=()):
    """A MyoPS layout of a few real cases (symlinked folders; the cases in ``copy`` as copied files
    that a test may break)."""
    import shutil

    root.mkdir(parents=True)
    for case in cases:
        if case in copy:
            shutil.copytree(myops_dir / case, root / case)
        else:
            os.symlink(myops_dir / case, root / case)
    return root


@pytest.fixture(scope="module")
def myops_subset(myops_dir, tmp_path_factory):
    """(source folder, DatasetDict): three real cases, one per split (ratios 1/3 each, seed 0)."""
    source = _myops_subset(myops_dir, tmp_path_factory.mktemp("myops") / "myops2020")
    return source, prepare_myops2020(source, ratios=(0.34, 0.33, 0.33), num_proc=1)


def test_myops_rows_orientation_spacing_and_labels_by_name(myops_subset, myops_dir):
    """Each row is the pipeline's reading of the same file (image_io.load_input: data[:, :, k].T),
    its spacing the header's, and its label the gd mapped by name (2221 scar -> myocardium...)."""
    import nibabel as nib

    from halsr_hf.image_io import load_input

    _, dsdict = myops_subset
    _assert_no_patient_overlap(dsdict)
    seen = {}
    for ds in dsdict.values():
        assert ds.features == features() and label_names_from_info(ds.info) == LABEL_NAMES
        for row in ds.with_format("numpy"):
            case, source, k = row["patient_id"], row["source"], int(row["slice_index"])
            seen.setdefault(case, set()).add(source)
            sequence = {"myops2020-cine": "C0", "myops2020-lge": "LGE"}[source]
            path = myops_dir / case / f"{case}_{sequence}.nii.gz"
            loaded = load_input(path)  # what the pipeline reads at inference
            assert row["num_slices"] == len(loaded.slices) and row["phase"] == "unknown"
            assert row["image"].tobytes() == loaded.slices[k].tobytes()
            volume = nib.load(str(path))
            assert np.array_equal(row["image"], np.asarray(volume.dataobj)[:, :, k].T.astype(np.float32))
            zooms = volume.header.get_zooms()
            assert tuple(row["pixel_spacing"]) == pytest.approx((zooms[1], zooms[0])) and 0.7 < zooms[0] < 0.8
            assert row["slice_thickness"] == pytest.approx(zooms[2]) and 11.9 < zooms[2] < 23.1
            gd = np.asarray(nib.load(str(myops_dir / case / f"{case}_gd.nii.gz")).dataobj)[:, :, k].T
            assert row["label"].shape == gd.shape == row["image"].shape
            for value, expected in ((500, 1), (200, 2), (1220, 2), (2221, 2), (600, 0), (0, 0)):
                assert set(np.unique(row["label"][gd == value]).tolist()) <= {expected}
            assert row["has_lv"] and row["myocardium_annotated"] and row["group"] is None
    # one row per slice per sequence; both sequences of a case in its one split
    assert seen == {case: {"myops2020-cine", "myops2020-lge"} for case in MYOPS_CASES}
    assert sum(len(ds) for ds in dsdict.values()) == 2 * (5 + 3 + 2)
    # a scar pixel (2221) becomes myocardium
    gd = np.asarray(nib.load(str(myops_dir / "Case3001" / "Case3001_gd.nii.gz")).dataobj)
    z = int(np.argmax((gd == 2221).sum(axis=(0, 1))))
    x, y = (int(v[0]) for v in np.nonzero(gd[:, :, z] == 2221))
    split = next(s for s, ds in dsdict.items() if "Case3001" in _patients(ds))
    row = next(r for r in dsdict[split].with_format("numpy") if r["patient_id"] == "Case3001" and r["slice_index"] == z)
    assert row["label"][y, x] == 2
    # with keep_rv the RV cavity (600) is 3
    rv = prepare_myops2020(myops_subset[0], sequences=("C0",), keep_rv=True, ratios=(0.34, 0.33, 0.33), num_proc=1)
    assert label_names_from_info(rv["train"].info)[3] == "rv_cavity"
    assert any((row["label"] == 3).any() for ds in rv.values() for row in ds.with_format("numpy"))


def test_myops_splits_by_patient_reproducible_and_independent_of_sequences(myops_subset, myops_dir):
    from halsr_hf.data import myops_splits

    source, dsdict = myops_subset
    # the default split of the 45 real cases: 31 / 6 / 8, disjoint, seeded
    full = myops_splits(myops_dir)
    assert {s: len(ids) for s, ids in full.items()} == {"train": 31, "validation": 6, "test": 8}
    assert sorted(sum(full.values(), [])) == sorted(p.name for p in myops_dir.iterdir() if p.name.startswith("Case"))
    assert myops_splits(myops_dir) == full and myops_splits(myops_dir, split_seed=1) != full
    # the conversion uses that split, records it, and one sequence alone is split the same way
    subset = myops_splits(source, (0.34, 0.33, 0.33))
    assert {s: sorted(_patients(ds)) for s, ds in dsdict.items()} == subset
    assert f"test (1 patients): {subset['test'][0]}" in dsdict["test"].info.description
    lge = prepare_myops2020(source, sequences=["LGE"], ratios=(0.34, 0.33, 0.33), num_proc=1)
    assert {s: sorted(_patients(ds)) for s, ds in lge.items()} == subset
    assert {source for ds in lge.values() for source in ds["source"]} == {"myops2020-lge"}
    with pytest.raises(InputError, match="sequences: expected one or more of"):
        prepare_myops2020(source, sequences=["T2"])


def test_myops_bad_files_name_the_file(myops_dir, tmp_path):
    import nibabel as nib

    source = _myops_subset(myops_dir, tmp_path / "m", cases=("Case3011",), copy=("Case3011",))
    assert len(prepare_myops2020(source, ratios=(1.0, 0.0, 0.0), num_proc=1)["train"]) == 4
    gd_path = source / "Case3011" / "Case3011_gd.nii.gz"
    gd = nib.load(str(gd_path))
    original = np.asarray(gd.dataobj).copy()  # read before the file is replaced below
    data = original.copy()
    data[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(data, gd.affine, gd.header), str(gd_path))
    with pytest.raises(InputError, match=r"Case3011_gd\.nii\.gz: unexpected label values \[7\]"):
        prepare_myops2020(source, num_proc=1)
    nib.save(nib.Nifti1Image(data[:-1], gd.affine, gd.header), str(gd_path))
    with pytest.raises(InputError, match=r"Case3011_gd\.nii\.gz: label shape .* differs .*Case3011_C0\.nii\.gz"):
        prepare_myops2020(source, num_proc=1)
    shifted = gd.affine.copy()
    shifted[0, 3] += 5
    nib.save(nib.Nifti1Image(original, shifted, gd.header), str(gd_path))
    with pytest.raises(InputError, match=r"Case3011_gd\.nii\.gz: label affine differs"):
        prepare_myops2020(source, num_proc=1)
    gd_path.write_bytes(b"not a nifti")
    with pytest.raises(InputError, match=r"Case3011_gd\.nii\.gz: unreadable or truncated NIfTI"):
        prepare_myops2020(source, num_proc=1)
    gd_path.unlink()
    with pytest.raises(InputError, match=r"Case3011_gd\.nii\.gz: no such file"):
        prepare_myops2020(source, num_proc=1)
    nib.save(nib.Nifti1Image(original, gd.affine, gd.header), str(gd_path))
    (source / "Case3011" / "Case3011_LGE.nii.gz").unlink()
    assert len(prepare_myops2020(source, sequences=["C0"], ratios=(1.0, 0.0, 0.0), num_proc=1)["train"]) == 2
    with pytest.raises(InputError, match=r"Case3011_LGE\.nii\.gz: no such file"):
        prepare_myops2020(source, sequences=["LGE"], num_proc=1)
    with pytest.raises(InputError, match="no CaseNNNN folders"):
        prepare_myops2020(tmp_path)


def test_cli_myops2020(myops_dir, tmp_path, capsys):
    source = _myops_subset(myops_dir, tmp_path / "src", cases=MYOPS_CASES[1:])
    out = tmp_path / "myops"
    assert prepare_main(["myops2020", "--source", str(source), "--out", str(out), "--ratios", "0.5,0,0.5",
                         "--sequence", "C0", "--sequence", "LGE", "--keep-rv", "--num-proc", "1"]) == 0
    printed = capsys.readouterr().out
    assert "myops2020-cine: 3, myops2020-lge: 3" in printed or "myops2020-cine: 2, myops2020-lge: 2" in printed
    loaded = datasets.load_from_disk(str(out))
    assert set(loaded) == {"train", "test"} and loaded["train"].features == features(keep_rv=True)
    assert sum(len(ds) for ds in loaded.values()) == 2 * (3 + 2)
    card = (out / "README.md").read_text()
    for text in ("license: other", "MyoPS 2020", "Zhuang", "Li, Lei", "myops2020-lge", "Patient-level split: split_patients(seed=0",
                 "challenge's terms", "prepare myops2020"):
        assert text in card, text
    with pytest.raises(InputError, match="--sequence applies to myops2020 only"):
        prepare_main(["emidec", "--source", str(source), "--out", str(tmp_path / "x"), "--sequence", "C0"])


# ---------------------------------------------------------------- real EMIDEC (4 of 100 patients)

EMIDEC_TRAIN = ("Case_N037", "Case_P001", "Case_P002")  # normal, infarct, infarct + MVO
EMIDEC_TEST = ("Case_N006",)


def _emidec_subset(emidec_dir, root, train=EMIDEC_TRAIN, test=EMIDEC_TEST, copy=False):
    import shutil

    for patients, (images, masks) in ((train, ("train", "trainannot")), (test, ("val", "valannot"))):
        for folder in (images, masks):
            (root / folder).mkdir(parents=True)
            for patient in patients:
                for path in sorted((emidec_dir / folder).glob(f"{patient}_slice*.png")):
                    (shutil.copy if copy else os.symlink)(path, root / folder / path.name)
    return root


def test_emidec_rows_labels_and_stacks(emidec_dir, tmp_path):
    from PIL import Image

    from halsr_hf.image_io import load_input

    source = _emidec_subset(emidec_dir, tmp_path / "emidec")
    dsdict = prepare_emidec(source, num_validation=1, split_seed=0, num_proc=1)
    _assert_no_patient_overlap(dsdict)
    assert _patients(dsdict["test"]) == set(EMIDEC_TEST)
    assert {s: len(_patients(ds)) for s, ds in dsdict.items()} == {"train": 2, "validation": 1, "test": 1}
    mapped_values = set()
    for split, ds in dsdict.items():
        assert ds.features == features() and label_names_from_info(ds.info) == LABEL_NAMES
        assert set(ds["source"]) == {"emidec-lge"} and set(ds["phase"]) == {"unknown"}
        assert set(ds["pixel_spacing"]) == {None} and set(ds["slice_thickness"]) == {None}
        for row in ds.with_format("numpy"):
            patient, k = row["patient_id"], int(row["slice_index"])
            folder = "val" if split == "test" else "train"
            name = f"{patient}_slice{k:03d}.png"
            assert row["num_slices"] == len(list((source / folder).glob(f"{patient}_slice*.png")))
            assert row["image"].tobytes() == load_input(source / folder / name).slices[0].tobytes()  # the pipeline's reading
            mask = np.asarray(Image.open(source / f"{folder}annot" / name))
            for value, expected in ((0, 0), (1, 1), (2, 2), (3, 2), (4, 2)):
                assert set(np.unique(row["label"][mask == value]).tolist()) <= {expected}
            mapped_values |= set(np.unique(mask).tolist())
            assert row["group"] == ("NOR" if patient.startswith("Case_N") else "MINF")
    assert mapped_values == {0, 1, 2, 3, 4}  # infarct (3) and MVO (4) seen, and mapped to myocardium


def test_emidec_splits_by_patient_and_reproducible(emidec_dir):
    from halsr_hf.data import emidec_splits

    splits = emidec_splits(emidec_dir)
    assert {s: len(ids) for s, ids in splits.items()} == {"train": 75, "validation": 10, "test": 15}
    assert sorted(sum(splits.values(), [])) == sorted(
        {p.name.split("_slice")[0] for folder in ("train", "val") for p in (emidec_dir / folder).glob("*.png")})
    assert emidec_splits(emidec_dir) == splits
    other = emidec_splits(emidec_dir, split_seed=1)
    assert other["test"] == splits["test"] and other["validation"] != splits["validation"]
    assert len(emidec_splits(emidec_dir, num_validation=0)["validation"]) == 0
    with pytest.raises(InputError, match="num_validation: expected 0 to 84"):
        emidec_splits(emidec_dir, num_validation=85)


def test_emidec_bad_files_name_the_file(emidec_dir, tmp_path):
    from PIL import Image

    source = _emidec_subset(emidec_dir, tmp_path / "e", train=("Case_N037", "Case_P001"), copy=True)
    assert len(prepare_emidec(source, num_validation=1, num_proc=1)["test"]) == 9
    mask = source / "trainannot" / "Case_P001_slice002.png"
    values = np.asarray(Image.open(mask)).copy()
    values[0, 0] = 9
    Image.fromarray(values).save(mask)
    with pytest.raises(InputError, match=r"Case_P001_slice002\.png: unexpected label values \[9\]"):
        prepare_emidec(source, num_validation=1, num_proc=1)
    Image.fromarray(values[:-2]).save(mask)
    with pytest.raises(InputError, match=r"trainannot/Case_P001_slice002\.png: mask shape \(254, 256\) differs .*train/Case_P001_slice002\.png"):
        prepare_emidec(source, num_validation=1, num_proc=1)
    Image.fromarray(np.stack([values] * 3, -1)).save(mask)
    with pytest.raises(InputError, match=r"Case_P001_slice002\.png: expected a single-channel mask"):
        prepare_emidec(source, num_validation=1, num_proc=1)
    mask.unlink()
    with pytest.raises(InputError, match=r"trainannot/Case_P001_slice002\.png: no such file"):
        prepare_emidec(source, num_validation=1, num_proc=1)
    (source / "train" / "Case_P001_slice002.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match=r"train/Case_P001_slice002\.png: unreadable or truncated image"):
        prepare_emidec(source, num_validation=1, num_proc=1)
    with pytest.raises(InputError, match=r"nothing/train: no such folder"):
        prepare_emidec(tmp_path / "nothing")


def test_cli_emidec(emidec_dir, tmp_path, capsys):
    source = _emidec_subset(emidec_dir, tmp_path / "src")
    out = tmp_path / "emidec"
    assert prepare_main(["emidec", "--source", str(source), "--out", str(out), "--num-validation", "1",
                         "--split-seed", "2", "--num-proc", "1"]) == 0
    assert "validation    1 patients" in capsys.readouterr().out
    loaded = datasets.load_from_disk(str(out))
    assert set(loaded) == {"train", "validation", "test"} and loaded["test"].features == features()
    assert _patients(loaded["test"]) == set(EMIDEC_TEST)
    card = (out / "README.md").read_text()
    for text in ("license: other", "EMIDEC", "Lalande", "emidec-lge", "`pixel_spacing` and `slice_thickness` are null",
                 "- test (1): Case_N006", "prepare emidec"):
        assert text in card, text
    with pytest.raises(InputError, match="--keep-rv: emidec has no RV label"):
        prepare_main(["emidec", "--source", str(source), "--out", str(tmp_path / "x"), "--keep-rv"])
    with pytest.raises(InputError, match="--ratios: emidec"):
        prepare_main(["emidec", "--source", str(source), "--out", str(tmp_path / "x"), "--ratios", "0.5,0.25,0.25"])


# ---------------------------------------------------------------- original-layout ACDC (generated)

def _write_acdc_patient(root, number, ed=1, es=3, frames=4, shape=(12, 10, 3), zooms=(1.5, 1.25, 10.0),
                        group="DCM", label_values=(0, 1, 2, 3)):
    import nibabel as nib

    folder = root / f"patient{number:03d}"
    folder.mkdir(parents=True)
    (folder / "Info.cfg").write_text(f"ED: {ed}\nES: {es}\nGroup: {group}\nHeight: 184.0\nNbFrame: {frames}\nWeight: 95.0\n")
    rng = np.random.default_rng(number)
    affine = np.diag(list(zooms) + [1.0])
    volumes = {}
    for frame in range(1, frames + 1):
        image = rng.normal(300, 50, shape).astype(np.float32)
        label = np.zeros(shape, np.uint8)
        label[2:6, 3:5, 1] = label_values[3]  # LV
        label[1:7, 2:3, 1] = label_values[2]  # MYO
        label[8:11, 1:4, 1] = label_values[1]  # RV
        for data, suffix in ((image, ""), (label, "_gt")):
            img = nib.Nifti1Image(data, affine)
            img.header.set_zooms(zooms)
            nib.save(img, str(folder / f"patient{number:03d}_frame{frame:02d}{suffix}.nii.gz"))
        volumes[frame] = (image, label)
    return folder, volumes


@pytest.fixture
def acdc_original(tmp_path):
    root = tmp_path / "ACDC" / "training"
    volumes = {n: _write_acdc_patient(root, n, ed=1 + n % 2, es=3, group="NOR" if n % 2 else "HCM")[1]
               for n in range(1, 11)}
    return tmp_path / "ACDC", volumes


def test_acdc_original_layout(acdc_original):
    source, volumes = acdc_original
    dsdict = prepare_acdc(source, split_seed=3)
    assert {s: len(_patients(d)) for s, d in dsdict.items()} == {"train": 7, "validation": 1, "test": 2}
    _assert_no_patient_overlap(dsdict)
    for ds in dsdict.values():
        phases = {}
        for row in ds.with_format("numpy"):
            patient = row["patient_id"]
            number = int(patient[-3:])
            phases.setdefault(patient, set()).add(row["phase"])
            frame = (1 + number % 2) if row["phase"] == "ED" else 3  # from Info.cfg
            image, label = volumes[number][frame]
            k = int(row["slice_index"])
            assert row["num_slices"] == 3
            assert row["image"].tobytes() == np.ascontiguousarray(image[:, :, k].T).tobytes()
            assert row["image"].shape == (10, 12)
            expected = np.select([label[:, :, k].T == 3, label[:, :, k].T == 2], [1, 2], 0)
            assert np.array_equal(row["label"], expected)
            assert tuple(row["pixel_spacing"]) == (1.25, 1.5) and row["slice_thickness"] == 10.0
            assert row["group"] == ("NOR" if number % 2 else "HCM")
            assert row["height"] == 184.0 and row["weight"] == 95.0
            assert row["has_lv"] == (k == 1)
            if k == 1:
                # LV+MYO at NIfTI x 1..6, y 2..4; slices are (y, x): columns 1..6, rows 2..4
                    assert list(row["roi"]) == [1, 2, 6, 4]
        assert all(p == {"ED", "ES"} for p in phases.values())
    other = prepare_acdc(source, split_seed=4)
    assert _patients(other["train"]) != _patients(dsdict["train"])  # the seed matters
    assert _patients(prepare_acdc(source, split_seed=3)["test"]) == _patients(dsdict["test"])  # and is reproducible
    rv = prepare_acdc(source, keep_rv=True, split_seed=3)["train"].with_format("numpy")
    assert any((row["label"] == 3).any() for row in rv)


def test_acdc_original_errors(tmp_path):
    root = tmp_path / "a"
    folder, _ = _write_acdc_patient(root, 1)
    (folder / "Info.cfg").write_text("ES: 3\nGroup: DCM\n")
    with pytest.raises(InputError, match=r"Info\.cfg: no 'ED:' line"):
        prepare_acdc(root)
    (folder / "Info.cfg").write_text("ED: 9\nES: 3\nNbFrame: 4\n")
    with pytest.raises(InputError, match=r"Info\.cfg: ED frame 9 outside 1..4"):
        prepare_acdc(root)
    (folder / "Info.cfg").write_text("ED: 2\nES: 3\nNbFrame: 4\n")
    (folder / "patient001_frame02_gt.nii.gz").unlink()
    with pytest.raises(InputError, match=r"patient001_frame02_gt\.nii\.gz: no such file"):
        prepare_acdc(root)
    (folder / "patient001_frame02_gt.nii.gz").write_bytes(b"\x1f\x8bcorrupt")
    with pytest.raises(InputError, match=r"patient001_frame02_gt\.nii\.gz: unreadable NIfTI"):
        prepare_acdc(root)
    root2 = tmp_path / "b"
    _write_acdc_patient(root2, 1, label_values=(0, 1, 2, 5))
    with pytest.raises(InputError, match=r"patient001_frame01_gt\.nii\.gz: unexpected label values \[5\]"):
        prepare_acdc(root2)
    import nibabel as nib

    folder3, _ = _write_acdc_patient(tmp_path / "c", 1)
    nib.save(nib.Nifti1Image(np.zeros((12, 11, 3), np.uint8), np.eye(4)), str(folder3 / "patient001_frame01_gt.nii.gz"))
    with pytest.raises(InputError, match=r"patient001_frame01_gt\.nii\.gz: label shape .* differs from image shape"):
        prepare_acdc(tmp_path / "c")
    with pytest.raises(InputError, match="patient folders found twice"):
        prepare_acdc(tmp_path)  # patient001 in a/, b/ and c/
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no patientNNN/Info.cfg"):
        prepare_acdc(tmp_path / "empty")
    with pytest.raises(InputError, match="ratios"):
        prepare_acdc(tmp_path / "c", ratios=(0.5, 0.5, 0.5))


# ---------------------------------------------------------------- LVQuan (generated)

def _lvquan_arrays(subjects, frames=20, size=16, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.random((size, size, subjects * frames)).astype(np.float64)
    endo = np.zeros(image.shape, np.uint8)
    epi = np.zeros(image.shape, np.uint8)
    epi[3:13, 4:12, :] = 1
    endo[5:11, 6:10, :] = 1
    epi[:, :, 5] = 0  # a frame without LV
    endo[:, :, 5] = 0
    return image, endo, epi


def test_lvquan19_v5_and_v73(tmp_path):
    folder = tmp_path / "lvquan19"
    folder.mkdir()
    arrays = {}
    for n in range(1, 6):  # v5, one subject per file, LVQuan19 field names
        image, endo, epi = _lvquan_arrays(1, seed=n)
        scipy.io.savemat(folder / f"patient{n}.mat", {"image": image, "endo": endo, "epi": epi, "pix_spacing": 1.5 + n / 10})
        arrays[f"patient{n}"] = (image, endo, epi, 1.5 + n / 10)
    for n in range(6, 11):  # v7.3 = HDF5 with MATLAB axes reversed
        image, endo, epi = _lvquan_arrays(1, seed=n)
        with h5py.File(folder / f"patient{n}.mat", "w") as f:
            f["image"], f["endo"], f["epi"] = image.T, endo.T, epi.T
            f["pix_spacing"] = np.array([[1.5 + n / 10]])
        arrays[f"patient{n}"] = (image, endo, epi, 1.5 + n / 10)
    dsdict = prepare_lvquan(folder, split_seed=0)
    assert set(dsdict["train"]["slice_thickness"]) == {None}
    assert {s: len(_patients(d)) for s, d in dsdict.items()} == {"train": 7, "validation": 1, "test": 2}
    _assert_no_patient_overlap(dsdict)
    for ds in dsdict.values():
        for row in ds.with_format("numpy"):
            image, endo, epi, spacing = arrays[row["patient_id"]]
            t = int(row["phase"][5:]) - 1
            assert row["image"].tobytes() == image[:, :, t].astype(np.float32).tobytes()
            expected = np.where(endo[:, :, t] == 1, 1, np.where(epi[:, :, t] == 1, 2, 0))
            assert np.array_equal(row["label"], expected)
            assert np.allclose(row["pixel_spacing"], [spacing, spacing])
            assert row["slice_index"] == 0 and row["num_slices"] == 1
            assert np.isnan(row["slice_thickness"])  # a null float reads as nan in numpy format
            assert row["has_lv"] == (t != 5)
            assert (row["roi"] is None) if t == 5 else (list(row["roi"]) == [4, 3, 11, 12])


def test_lvquan18_cardiac_dig(tmp_path):
    image, endo, epi = _lvquan_arrays(3)
    path = tmp_path / "cardiac-dig.mat"
    scipy.io.savemat(path, {"images_LV": image, "endo_LV": endo, "epi_LV": epi,
                            "pix_spa": np.array([[1.0, 1.5, 2.0]]), "ratio_resize_inverse": np.array([[2.0, 2.0, 3.0]])})
    dsdict = prepare_lvquan(path, ratios=(1 / 3, 1 / 3, 1 / 3))
    assert sorted(len(d) for d in dsdict.values()) == [20, 20, 20]
    spacing = {}
    for ds in dsdict.values():
        for patient, s, phase in zip(ds["patient_id"], ds["pixel_spacing"], ds["phase"]):
            spacing.setdefault(patient, set()).add(tuple(s))
            assert phase.startswith("frame") and 1 <= int(phase[5:]) <= 20
    assert spacing == {"cardiac-dig_subject001": {(2.0, 2.0)}, "cardiac-dig_subject002": {(3.0, 3.0)},
                       "cardiac-dig_subject003": {(6.0, 6.0)}}
    plain = prepare_lvquan(path, fields={"resize_ratio": None}, ratios=(1.0, 0.0, 0.0))
    assert list(plain) == ["train"]
    assert {tuple(s) for s in plain["train"]["pixel_spacing"]} == {(1.0, 1.0), (1.5, 1.5), (2.0, 2.0)}


def test_lvquan_errors(tmp_path):
    image, endo, epi = _lvquan_arrays(1)
    path = tmp_path / "p.mat"
    scipy.io.savemat(path, {"img": image, "endo": endo, "epi": epi, "pix_spacing": 1.0})
    with pytest.raises(InputError, match=r"p\.mat: no image field .*the file has \['endo', 'epi', 'img', 'pix_spacing'\]"):
        prepare_lvquan(path)
    assert len(prepare_lvquan(path, fields={"image": "img"}, ratios=(1, 0, 0))["train"]) == 20
    bad = endo.copy()
    bad[0, 0, 0] = 4
    scipy.io.savemat(path, {"image": image, "endo": bad, "epi": epi, "pix_spacing": 1.0})
    with pytest.raises(InputError, match=r"p\.mat: endo mask has unexpected values \[0, 1, 4\]"):
        prepare_lvquan(path)
    scipy.io.savemat(path, {"image": image, "endo": endo[:-1], "epi": epi, "pix_spacing": 1.0})
    with pytest.raises(InputError, match=r"p\.mat: endo mask shape .* differs from image shape"):
        prepare_lvquan(path)
    path.write_bytes(b"MATLAB garbage")
    with pytest.raises(InputError, match=r"p\.mat: unreadable MATLAB file"):
        prepare_lvquan(path)
    with pytest.raises(InputError, match="nothing.mat: no such file"):
        prepare_lvquan(tmp_path / "nothing.mat")
    with pytest.raises(InputError, match="unknown role"):
        prepare_lvquan(tmp_path, fields={"mask": "x"})


# ---------------------------------------------------------------- schema, round trip, saving, CLI

def test_bbox_from_label():
    label = np.zeros((6, 8), np.uint8)
    assert bbox_from_label(label) is None
    label[0, 7] = 3  # RV is not LV
    assert bbox_from_label(label) is None
    label[2, 3] = 1
    label[4, 5] = 2
    assert bbox_from_label(label) == [3, 2, 5, 4]
    label[5, 0] = 255  # ignored pixels are not LV
    assert bbox_from_label(torch.from_numpy(label)) == [3, 2, 5, 4]  # tensors too (training)
    with pytest.raises(InputError):
        bbox_from_label(np.zeros((2, 2, 2)))


def test_acdc_labels_map_by_name():
    acdc = np.array([[0, 1, 2, 3]], dtype=np.uint8)  # background, RV, myocardium, LV cavity
    assert acdc_to_canonical(acdc).tolist() == [[0, 0, 2, 1]]
    assert acdc_to_canonical(acdc, keep_rv=True).tolist() == [[0, 3, 2, 1]]
    with pytest.raises(InputError, match="unexpected label values"):
        acdc_to_canonical(np.array([[4]]))


def test_split_patients_never_overlap():
    ids = [f"p{i:03d}" for i in range(37)]
    for seed in range(5):
        parts = split_patients(ids + ids, (0.7, 0.1, 0.2), seed)  # duplicates (ED/ES rows) collapse
        assert sorted(sum(parts.values(), [])) == ids
        assert [len(parts[s]) for s in ("train", "validation", "test")] == [26, 4, 7]
    assert split_patients(ids, (0.7, 0.1, 0.2), 1) == split_patients(ids, (0.7, 0.1, 0.2), 1)
    with pytest.raises(InputError):
        split_patients(ids, (0.7, 0.2), 0)


def test_image_round_trip_bit_exact(tmp_path):
    from halsr_hf.data.schema import build_dataset_dict, make_row

    rng = np.random.default_rng(0)
    special = np.array([0.0, -0.0, 1e-38, 1e-45, 3.4e38, -3.4e38, np.pi, 1 / 3], np.float32)
    images = [rng.standard_normal((7, 5)).astype(np.float32) * 1e3, rng.random((4, 9), dtype=np.float32),
              np.resize(special, (3, 8)).astype(np.float32)]
    labels = [np.zeros(i.shape, np.uint8) for i in images]
    labels[1][1:3, 2:6] = 1
    labels[1][0, 2] = 2
    rows = [make_row(i, l, name=f"s{k}", patient_id=f"p{k}", source="test", phase="unknown", slice_index=0,
                     num_slices=1) for k, (i, l) in enumerate(zip(images, labels))]
    save_dataset(build_dataset_dict({"train": rows}, "test"), tmp_path / "out")
    loaded = datasets.load_from_disk(str(tmp_path / "out"))["train"]
    for fmt in ("numpy", None):
        for k, row in enumerate(loaded.with_format(fmt)):
            image = np.asarray(row["image"])
            assert image.dtype == np.float32 and image.tobytes() == images[k].tobytes()
            assert np.asarray(row["label"]).dtype == np.uint8
            assert np.array_equal(np.asarray(row["label"]), labels[k])
    torch_row = loaded.with_format("torch")[1]
    assert torch_row["image"].dtype.is_floating_point and tuple(torch_row["image"].shape) == (1, 4, 9)
    assert torch_row["image"][0].numpy().tobytes() == images[1].tobytes()
    assert np.array_equal(torch_row["label"][0].numpy(), labels[1])
    assert loaded[1]["roi"] == [2, 0, 5, 2] and loaded[0]["roi"] is None and loaded[1]["has_lv"]


def test_save_dataset_atomic_and_overwrite(tmp_path, monkeypatch):
    from halsr_hf.data.schema import build_dataset_dict, make_row

    row = make_row(np.ones((4, 4), np.float32), np.zeros((4, 4), np.uint8), name="x", patient_id="p",
                   source="test", phase="ED", slice_index=0, num_slices=1)
    dsdict = build_dataset_dict({"test": [row]}, "test")
    out = tmp_path / "out"
    save_dataset(dsdict, out)
    assert (out / "README.md").is_file() and (out / "dataset_dict.json").is_file()
    with pytest.raises(InputError, match="already exists"):
        save_dataset(dsdict, out)
    marker = out / "marker"
    marker.write_text("old")
    # a failure while writing leaves the old folder and no temporary folder behind
    monkeypatch.setattr(type(dsdict), "save_to_disk", lambda self, path: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        save_dataset(dsdict, out, overwrite=True)
    assert marker.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    monkeypatch.undo()
    save_dataset(dsdict, out, overwrite=True)
    assert not marker.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(InputError, match="patient p is in both"):
        build_dataset_dict({"train": [row], "test": [row]}, "test")


def test_cli_acdc_original(acdc_original, tmp_path, capsys):
    source, _ = acdc_original
    out = tmp_path / "converted"
    assert prepare_main(["acdc", "--source", str(source), "--out", str(out), "--split-seed", "3", "--num-proc", "1"]) == 0
    printed = capsys.readouterr().out
    assert "train" in printed and "7 patients" in printed and "2 patients" in printed
    loaded = datasets.load_from_disk(str(out))
    assert loaded["train"].features == features() and set(loaded) == {"train", "validation", "test"}
    card = (out / "README.md").read_text()
    for text in ("license: cc-by-nc-sa-4.0", "image-segmentation", "medical-imaging", "cardiac-mri",
                 "Bernard", "| train | 7 |", "`myocardium_annotated`"):
        assert text in card
    with pytest.raises(InputError, match="already exists"):
        prepare_main(["acdc", "--source", str(source), "--out", str(out)])
    # a failing conversion writes nothing, even with --overwrite
    bad_out = tmp_path / "bad"
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no patientNNN/Info.cfg"):
        prepare_main(["acdc", "--source", str(tmp_path / "empty"), "--out", str(bad_out), "--num-proc", "1"])
    assert not bad_out.exists()
    with pytest.raises(InputError, match="no patientNNN/Info.cfg"):
        prepare_main(["acdc", "--source", str(tmp_path / "empty"), "--out", str(out), "--overwrite"])
    assert datasets.load_from_disk(str(out))["train"].num_rows == 7 * 6  # the old output is untouched
    assert prepare_main(["acdc", "--source", str(source), "--out", str(out), "--overwrite", "--keep-rv",
                         "--ratios", "0.8,0.0,0.2", "--num-proc", "1"]) == 0
    assert set(datasets.load_from_disk(str(out))) == {"train", "test"}


def test_cli_push_to_hub_offline_fails_fast(acdc_original, tmp_path, monkeypatch):
    source, _ = acdc_original
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    from huggingface_hub import HfApi

    for name in ("create_repo", "upload_file"):  # refused before any Hub call (no retry loop)
        monkeypatch.setattr(HfApi, name, lambda *a, **k: pytest.fail("no Hub call may happen offline"))
    monkeypatch.setattr(datasets.DatasetDict, "push_to_hub", lambda *a, **k: pytest.fail("no Hub call may happen offline"))
    with pytest.raises(InputError, match="offline"):
        prepare_main(["acdc", "--source", str(source), "--out", str(tmp_path / "o"), "--push-to-hub", "me/acdc"])
    assert not (tmp_path / "o").exists()
    # the library function too, and the dispatcher turns it into one line and status 2
    from halsr_hf.data import push_dataset

    with pytest.raises(InputError, match="offline"):
        push_dataset(None, "me/acdc")
    result = subprocess.run(
        [sys.executable, "-m", "halsr_hf.cli", "prepare", "acdc", "--source", str(source), "--out", str(tmp_path / "o"),
         "--push-to-hub", "me/acdc"], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 2 and result.stderr.strip().startswith("halsr-hf prepare: error:") and "offline" in result.stderr


def test_push_dataset_calls_hub(monkeypatch, acdc_original):
    """Online path, network calls replaced: the repository, then the card, then push_to_hub (which
    merges its dataset_info into that card; the other order would overwrite the card's metadata)."""
    from huggingface_hub import HfApi, constants

    from halsr_hf.data import card as card_module

    source, _ = acdc_original
    dsdict = prepare_acdc(source, split_seed=3)
    calls = []
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo, **kw: calls.append(("repo", repo, kw["repo_type"])))
    monkeypatch.setattr(HfApi, "upload_file", lambda self, **kw: calls.append(
        ("card", kw["repo_id"], kw["path_in_repo"], Path(kw["path_or_fileobj"]).read_text())))
    monkeypatch.setattr(type(dsdict), "push_to_hub", lambda self, repo, **kw: calls.append(("data", repo)))
    url = card_module.push_dataset(dsdict, "me/acdc")
    assert url.endswith("datasets/me/acdc")
    assert [c[0] for c in calls] == ["repo", "card", "data"]
    assert calls[0] == ("repo", "me/acdc", "dataset") and calls[2] == ("data", "me/acdc")
    assert calls[1][1:3] == ("me/acdc", "README.md") and "Bernard" in calls[1][3]
    assert calls[1][3].startswith("---\nlicense: cc-by-nc-sa-4.0")  # metadata written by DatasetCardData
