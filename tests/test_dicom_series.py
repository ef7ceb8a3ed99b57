"""The pipeline's input semantics (issue 19): what is one stack, DICOM series and multi-frame DICOM
split into space and time, and the folder/.npy messages of issue 20. Real Sunnybrook DICOM files
(one series per patient: 9 slice positions x 2 phases, 18 single-frame files)."""

import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from halsr_hf import InputError
from halsr_hf.image_io import dicom_series_phases, load_frames, load_input, read_dicom_file, save_mask

PATIENT = "SCD0000101"

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # Sunnybrook's UIDs have a leading zero


@pytest.fixture(scope="module")
def series_dir(sunnybrook_dir) -> Path:
    return sunnybrook_dir / "dicoms" / PATIENT


def _headers(folder: Path) -> list:
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [(p, pydicom.dcmread(p)) for p in sorted(folder.glob("*.dcm"))]


def write_multiframe(series: Path, path: Path, shuffle_seed: int = 0) -> Path:
    """An enhanced-MR-style multi-frame file holding every image of a single-frame series, frames in a
    shuffled order, geometry and timing only in the per-frame functional groups."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    images = _headers(series)
    order = np.random.default_rng(shuffle_seed).permutation(len(images))
    first = images[0][1]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"  # Enhanced MR Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "MR"
    ds.Rows, ds.Columns = first.Rows, first.Columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, first.PixelRepresentation
    ds.NumberOfFrames = len(images)
    shared = Dataset()
    orientation, measures = Dataset(), Dataset()
    orientation.ImageOrientationPatient = list(first.ImageOrientationPatient)
    measures.PixelSpacing = list(first.PixelSpacing)
    measures.SliceThickness = first.SliceThickness
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for index in order:
        image = images[index][1]
        item, position, timing = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = list(image.ImagePositionPatient)
        timing.NominalCardiacTriggerDelayTime = image.TriggerTime
        item.PlanePositionSequence = Sequence([position])
        item.CardiacSynchronizationSequence = Sequence([timing])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = np.stack([images[i][1].pixel_array for i in order]).astype(first.pixel_array.dtype).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_dicom_series_is_sorted_along_the_normal_and_split_into_phases(series_dir):
    phases = dicom_series_phases(series_dir)
    assert len(phases) == 2 and all(p.is_volume and len(p.slices) == 9 for p in phases)
    headers = dict((p.name, h) for p, h in _headers(series_dir))
    normal = np.cross(*np.reshape(np.asarray(headers["48.dcm"].ImageOrientationPatient, float), (2, 3)))
    for phase in phases:
        files = phase.extra["images"]
        depth = [float(np.dot(np.asarray(headers[f].ImagePositionPatient, float), normal)) for f in files]
        assert np.all(np.diff(depth) > 0)  # ascending along the normal
        for array, name in zip(phase.slices, files):
            assert np.array_equal(array, headers[name].pixel_array.astype(np.float32))
    times = [[float(headers[f].TriggerTime) for f in p.extra["images"]] for p in phases]
    assert max(times[0]) < min(times[1])  # phase 0 is the earlier trigger time at every position
    assert phases[0].slice_thickness == pytest.approx(10.0, abs=0.01)  # from the positions
    assert phases[0].pixel_spacing == pytest.approx(tuple(float(v) for v in headers["48.dcm"].PixelSpacing))
    # the affine: nibabel's own DICOM geometry (LPS; voxel axes row, column), flipped to RAS, with our
    # voxel axes (column, row: the layout save_mask writes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from nibabel.nicom import dicomwrappers

        reference = dicomwrappers.wrapper_from_data(headers[phases[0].extra["images"][0]]).affine
    ras = np.diag([-1, -1, 1, 1]) @ reference
    assert np.allclose(phases[0].affine[:, [0, 1, 3]], ras[:, [1, 0, 3]], atol=1e-4)
    assert np.allclose(phases[0].affine[:3, 2], np.diag([-1, -1, 1]) @ normal * 10.0, atol=0.01)


def test_series_order_does_not_depend_on_file_names(series_dir, tmp_path):
    shuffled = tmp_path / "renamed"
    shuffled.mkdir()
    for index, path in enumerate(sorted(series_dir.glob("*.dcm"), key=lambda p: -int(p.stem))):
        shutil.copy(path, shuffled / f"IM{index:04d}")  # no extension: found by the DICM preamble
    (shuffled / "notes.txt").write_text("not DICOM")
    original, renamed = dicom_series_phases(series_dir), dicom_series_phases(shuffled)
    for a, b in zip(original, renamed):
        assert all(np.array_equal(x, y) for x, y in zip(a.slices, b.slices))
        assert np.allclose(a.affine, b.affine)


def test_multiframe_dicom_is_split_into_space_and_time_from_functional_groups(series_dir, tmp_path):
    """Issue 19: a multi-frame file was a spatial stack, so cine frames got consensus and volumes_ml."""
    path = write_multiframe(series_dir, tmp_path / "cine.dcm")
    series = dicom_series_phases(series_dir)
    frames = load_frames(path)
    assert len(frames) == 2
    for from_file, from_series in zip(frames, series):
        assert len(from_file.slices) == 9 and from_file.is_volume
        assert all(np.array_equal(x, y) for x, y in zip(from_file.slices, from_series.slices))
        assert np.allclose(from_file.affine, from_series.affine)
        assert from_file.slice_thickness == pytest.approx(from_series.slice_thickness)
    with pytest.raises(InputError, match="multi-frame DICOM with 2 frames; pass frame="):
        read_dicom_file(path)
    assert np.array_equal(read_dicom_file(path, frame=1).slices[4], series[1].slices[4])


def test_broken_series_are_refused_naming_the_problem(series_dir, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(series_dir, partial)
    (partial / "59.dcm").unlink()  # one phase of one position missing
    with pytest.raises(InputError, match="different numbers of images"):
        dicom_series_phases(partial)
    gap = tmp_path / "gap"
    shutil.copytree(series_dir, gap)
    for name in ("108.dcm", "119.dcm"):  # a whole position missing in the middle
        (gap / name).unlink()
    with pytest.raises(InputError, match="not evenly spaced"):
        dicom_series_phases(gap)
    two = tmp_path / "two"
    shutil.copytree(series_dir, two / "a")
    other = next((series_dir.parent / "SCD0000201").glob("*.dcm"))
    shutil.copy(other, two / "b.dcm")
    with pytest.raises(InputError, match="2 DICOM series.*halsr-hf predict"):
        dicom_series_phases(two)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(series_dir, corrupt)
    (corrupt / "48.dcm").write_bytes((series_dir / "48.dcm").read_bytes()[:400])
    with pytest.raises(InputError, match="48.dcm: a DICOM image without pixel data \\(a truncated file"):
        dicom_series_phases(corrupt)


def test_pipeline_takes_a_series_folder_as_one_volume_per_phase(tiny_pipe, series_dir, tmp_path):
    with pytest.raises(InputError, match="DICOM series with 2 frames; pass frame="):
        tiny_pipe(str(series_dir))
    phase = dicom_series_phases(series_dir)[1]
    out = tiny_pipe(str(series_dir), frame=1, save_mask=str(tmp_path / "mask.nii.gz"))
    assert out["label_map"].shape == (9, 256, 256) and out["volumes_ml"] is not None
    assert out["slice_thickness"] == pytest.approx(10.0, abs=0.01)
    same = tiny_pipe(np.stack(phase.slices), pixel_spacing=phase.pixel_spacing, slice_thickness=phase.slice_thickness)
    assert np.array_equal(out["label_map"], same["label_map"])
    mask = nib.load(tmp_path / "mask.nii.gz")
    assert np.allclose(mask.affine, phase.affine) and mask.shape == (256, 256, 9)
    # a list of the phase's 2D files is a stack only when asked, and then gives the volume's result
    files = [str(series_dir / name) for name in phase.extra["images"]]
    stacked = tiny_pipe(files, stack=True)
    assert np.array_equal(np.stack([r["label_map"] for r in stacked]), out["label_map"])


def test_stack_groups_2d_inputs_only_and_never_merges_volumes_or_phases(tiny_pipe, series_dir, monkeypatch):
    import halsr_hf.roi_stage as pipeline_module  # roi_stage.plan_stack runs the consensus once per stack

    sizes = []
    real = pipeline_module.volume_consensus

    def spy(results, *args, **kwargs):
        sizes.append(len(results))
        return real(results, *args, **kwargs)

    monkeypatch.setattr(pipeline_module, "volume_consensus", spy)
    rng = np.random.default_rng(0)
    volume_a, volume_b = rng.random((3, 64, 72)).astype(np.float32), rng.random((4, 64, 72)).astype(np.float32)
    slices = list(rng.random((3, 64, 72)).astype(np.float32))
    tiny_pipe([volume_a, volume_b, *slices])
    assert sorted(sizes) == [3, 4]  # each volume its own stack; the 2D inputs alone
    sizes.clear()
    tiny_pipe([volume_a, volume_b, *slices], stack=True)
    assert sorted(sizes) == [3, 3, 4]  # the 2D inputs are one stack; the volumes stay apart
    sizes.clear()
    tiny_pipe([volume_a, volume_b], stack=True)
    assert sorted(sizes) == [3, 4]
    two_phases = [str(series_dir / "48.dcm"), str(series_dir / "59.dcm"), str(series_dir / "68.dcm")]
    with pytest.raises(InputError, match="59.dcm: same slice position as .*48.dcm \\(two phases"):
        tiny_pipe(two_phases, stack=True)
    other_series = next((series_dir.parent / "SCD0000201").glob("*.dcm"))
    with pytest.raises(InputError, match="another DICOM series"):
        tiny_pipe([str(series_dir / "48.dcm"), str(series_dir / "68.dcm"), str(other_series)], stack=True)
    assert len(tiny_pipe(two_phases)) == 3  # without stack=True they are separate slices


def test_folders_and_npy_inputs(tiny_pipe, tiny_folder, series_dir, tmp_path, capsys):
    """Issue 20: ``segment DIR`` said "unsupported file type '(no extension)'", and the list of types
    omitted .npy, which ``--help`` accepts."""
    from halsr_hf.cli import main

    cohort = tmp_path / "cohort"
    (cohort / "subject1").mkdir(parents=True)
    np.save(cohort / "subject1" / "volume.npy", np.random.default_rng(0).random((3, 40, 40)).astype(np.float32))
    out = tmp_path / "out"
    assert main(["segment", str(cohort), "--model", str(tiny_folder), "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "a folder without DICOM files" in err and "halsr-hf predict -i FOLDER -o OUT" in err and "(no extension)" not in err
    with pytest.raises(InputError, match=r"unsupported file type '\.txt'; supported: .*\.npy.*a folder holding one DICOM series"):
        load_input(str(tmp_path / "notes.txt"))
    array = cohort / "subject1" / "volume.npy"
    assert np.array_equal(tiny_pipe(str(array))["label_map"], tiny_pipe(np.load(array))["label_map"])
    assert main(["segment", str(array), str(series_dir), "--frame", "0", "--model", str(tiny_folder), "--out-dir", str(out)]) == 0
    mask = nib.load(out / f"{PATIENT}_mask.nii.gz")
    assert mask.shape == (256, 256, 9) and np.allclose(mask.affine, dicom_series_phases(series_dir)[0].affine)
    assert (out / "volume_mask.nii.gz").is_file() and (out / f"{PATIENT}_overlay_z08.png").is_file()


def test_save_mask_writes_every_frame_as_4d(tmp_path):
    data = np.random.default_rng(0).random((30, 20, 4, 3)).astype(np.float32)
    affine = np.diag([1.2, 1.3, 8.0, 1.0])
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "cine.nii.gz")
    frames = load_frames(tmp_path / "cine.nii.gz")
    assert [f.frame for f in frames] == [0, 1, 2] and all(np.array_equal(f.slices[1], data[:, :, 1, f.frame].T) for f in frames)
    labels = np.random.default_rng(1).integers(0, 3, size=(3, 4, 20, 30)).astype(np.uint8)
    mask = nib.load(save_mask(labels, tmp_path / "mask.nii.gz", frames[0]))
    assert mask.shape == (30, 20, 4, 3) and np.allclose(mask.affine, affine)
    assert np.array_equal(np.asarray(mask.dataobj)[:, :, 2, 1].T, labels[1, 2])


def test_one_series_per_slice_position_is_one_stack(series_dir, tmp_path):
    """Issue 25: several scanners export short-axis cine as one series per slice position; such a
    study folder (one study, one frame of reference, one orientation, one position per series) is one
    stack, the same as the single-series export. Two series at one position stay refused."""
    from pydicom.uid import generate_uid

    reference = dicom_series_phases(series_dir)
    split = tmp_path / "study"
    split.mkdir()
    by_position = {}
    for path, dataset in _headers(series_dir):
        position = tuple(round(float(v), 2) for v in dataset.ImagePositionPatient)
        dataset.SeriesInstanceUID = by_position.setdefault(position, generate_uid())
        dataset.StudyInstanceUID = "1.2.3"
        dataset.FrameOfReferenceUID = "1.2.3.4"
        dataset.save_as(split / path.name)
    assert len(by_position) == 9
    phases = dicom_series_phases(split)
    assert len(phases) == len(reference) == 2
    for mine, theirs in zip(phases, reference):
        assert all(np.array_equal(a, b) for a, b in zip(mine.slices, theirs.slices))
        assert mine.slice_thickness == pytest.approx(theirs.slice_thickness) and np.allclose(mine.affine, theirs.affine)
    assert phases[0].extra["series_merged"] == 9
    # another frame of reference for one position: not one stack
    other = tmp_path / "other"
    shutil.copytree(split, other)
    path, dataset = _headers(other)[0]
    dataset.FrameOfReferenceUID = "9.9.9"
    dataset.save_as(path)
    with pytest.raises(InputError, match="different frames of reference"):
        dicom_series_phases(other)
    # two series at the same positions (two acquisitions): refused as before
    twice = tmp_path / "twice"
    twice.mkdir()
    for index, (path, dataset) in enumerate(_headers(series_dir)):
        dataset.SeriesInstanceUID = "1.1" if index % 2 else "1.2"
        dataset.save_as(twice / path.name)
    with pytest.raises(InputError, match="2 DICOM series .*pass one series"):
        dicom_series_phases(twice)


def test_slice_thickness_fallback_is_a_warning(series_dir, tmp_path):
    """A multi-frame file without per-frame positions: the slice spacing can only be SliceThickness,
    which leaves out any gap between slices: a warning, gone when the spacing is given."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns, ds.NumberOfFrames = "MR", 8, 8, 3
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelSpacing, ds.SliceThickness = [1.5, 1.5], 8.0
    ds.PixelData = np.arange(3 * 64, dtype=np.uint16).tobytes()
    path = tmp_path / "stack.dcm"
    ds.save_as(path, enforce_file_format=True)
    loaded = load_input(path)
    assert loaded.slice_thickness == 8.0
    assert "slice spacing 8 mm taken from SliceThickness" in loaded.extra["slice_spacing_warning"]
    assert "slice_spacing_warning" not in load_input(path, slice_thickness=10.0).extra
    ds.SpacingBetweenSlices = 10.0
    ds.save_as(path, enforce_file_format=True)
    assert load_input(path).slice_thickness == 10.0 and "slice_spacing_warning" not in load_input(path).extra


def test_nifti_units_and_slice_axis_come_from_the_header(tmp_path):
    """Issue 25: xyzt_units was ignored (spacing in metres read as mm) and the slice axis was always
    the third voxel axis. A volume saved slices-first with a (8, 1.25, 1.5) mm affine reads as slices
    of 1.25 x 1.5 mm, 8 mm apart, and its mask goes back in the file's own layout."""
    rng = np.random.default_rng(0)
    volume = rng.random((16, 12, 5)).astype(np.float32)  # (X, Y, Z)
    metres = nib.Nifti1Image(volume, np.diag([0.00125, 0.0015, 0.008, 1.0]))
    metres.header.set_xyzt_units("meter", "sec")
    nib.save(metres, tmp_path / "metres.nii.gz")
    loaded = load_input(tmp_path / "metres.nii.gz")
    assert loaded.pixel_spacing == pytest.approx((1.5, 1.25)) and loaded.slice_thickness == pytest.approx(8.0)
    slices_first = np.ascontiguousarray(np.moveaxis(volume, 2, 0))  # (Z, X, Y) on disk
    image = nib.Nifti1Image(slices_first, np.diag([8.0, 1.25, 1.5, 1.0]))
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, tmp_path / "first.nii.gz")
    loaded = load_input(tmp_path / "first.nii.gz")
    reference = load_input(tmp_path / "metres.nii.gz")
    assert len(loaded.slices) == 5 and all(np.array_equal(a, b) for a, b in zip(loaded.slices, reference.slices))
    assert loaded.pixel_spacing == pytest.approx((1.5, 1.25)) and loaded.slice_thickness == pytest.approx(8.0)
    labels = np.stack([(s > 0.5).astype(np.uint8) for s in loaded.slices])
    mask = nib.load(save_mask(labels, tmp_path / "first_mask.nii.gz", loaded))
    assert mask.shape == slices_first.shape and np.allclose(mask.affine, image.affine)
    assert np.array_equal(np.asarray(mask.dataobj), (slices_first > 0.5).astype(np.uint8))


def test_reading_the_bundled_examples_warns_nothing():
    """Issue 26: pydicom warned ``Invalid value for VR UI: '2.16.124.113543.6006.99.0587...'`` (a UID
    component with a leading zero, as in all Sunnybrook files) at every read. That warning alone is
    silenced; the pixels are those of the file."""
    import warnings
    from pathlib import Path

    import pydicom

    from halsr_hf.image_io import load_input

    examples = sorted((Path(__file__).resolve().parents[1] / "space" / "examples").glob("*.dcm"))
    assert len(examples) == 4
    for path in examples:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loaded = load_input(str(path))
        assert [str(w.message)[:60] for w in caught] == [], path.name
        assert loaded.extra["SeriesInstanceUID"].startswith("2.16.124.113543.6006.99.")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = pydicom.dcmread(str(path)).pixel_array
        assert np.array_equal(loaded.slices[0], pixels.astype(np.float32))
