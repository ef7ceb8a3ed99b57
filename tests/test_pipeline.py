"""Image processor and ``pipeline("cardiac-lv-segmentation")`` tests: processor round trips,
two-stage inference on real data, remote code without the package, bad input."""

import gzip
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, pipeline

import halsr_hf
from halsr_hf import CardiacLVSegmentationPipeline, HalsrImageProcessor, InputError
from halsr_hf.image_processing_halsr import crop_and_resize, normalize_intensity, square_boxes

from .conftest import tiny_models

SUNNYBROOK_DICOM = "dicoms/SCD0000101/48.dcm"


def dice(a, b):
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return 1.0 if a.sum() + b.sum() == 0 else 2 * (a & b).sum() / (a.sum() + b.sum())


# ---- image processor -------------------------------------------------------------------------


def test_processor_save_load_and_normalisation(tmp_path):
    processor = HalsrImageProcessor(size=96, crop_margin=0.3)
    processor.save_pretrained(tmp_path)
    reloaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert isinstance(reloaded, HalsrImageProcessor) and reloaded.size == {"height": 96, "width": 96} and reloaded.crop_margin == 0.3
    rng = np.random.default_rng(0)
    image = rng.integers(0, 4000, size=(77, 91)).astype(np.uint16)
    normalized = reloaded.prepare_slice(image)
    assert normalized.dtype == np.float32 and normalized.shape == (77, 91)
    assert abs(normalized.mean()) < 1e-4 and abs(normalized.std() - 1) < 1e-3
    # the same slice as uint8 PNG, 16-bit PIL, float: same normalisation up to quantisation
    for variant in (Image.fromarray(image.astype(np.uint16)), image.astype(np.float64) / 7, torch.from_numpy(image.astype(np.float32))):
        assert np.abs(reloaded.prepare_slice(variant) - normalized).max() < 1e-4
    with pytest.warns(UserWarning, match="grayscale"):
        rgb = Image.fromarray(np.stack([image.astype(np.uint8)] * 3, axis=-1), mode="RGB")
        assert reloaded.prepare_slice(rgb).shape == (77, 91)
    batch = reloaded([image, image[:50]], boxes=[[10, 12, 40, 50], None])
    assert batch["pixel_values"].shape == (2, 1, 96, 96)
    assert batch["original_sizes"].tolist() == [[77, 91], [50, 91]]


@pytest.mark.parametrize("size", [(37, 53), (128, 128), (255, 97)])
def test_post_process_returns_label_maps_at_the_input_size(size):
    processor = HalsrImageProcessor()
    logits = torch.randn(2, 3, 32, 32)
    maps = processor.post_process_semantic_segmentation(logits, target_sizes=[size, size[::-1]])
    assert maps[0].shape == size and maps[1].shape == size[::-1]
    assert processor.post_process_semantic_segmentation(logits)[0].shape == (32, 32)
    with pytest.raises(InputError, match="target_sizes"):
        processor.post_process_semantic_segmentation(logits, target_sizes=[size])


@pytest.mark.parametrize("shape,box", [((97, 131), [40, 30, 70, 66]), ((64, 64), [0, 0, 20, 25]), ((120, 90), [60, 80, 89, 119])])
def test_crop_then_paste_puts_the_prediction_back_in_place(shape, box):
    """A known synthetic mask, cropped like an image and turned into perfect logits, comes back
    at the same place (also for boxes touching the border, where the crop leaves the image)."""
    processor = HalsrImageProcessor(size=64, crop_margin=0.25)
    label = np.zeros(shape, dtype=np.uint8)
    x0, y0, x1, y1 = box
    label[y0 : y1 + 1, x0 : x1 + 1] = 2
    label[y0 + 3 : y1 - 2, x0 + 3 : x1 - 2] = 1
    crop_box = square_boxes(torch.tensor([box], dtype=torch.float32), 0.25)
    crop = crop_and_resize(torch.from_numpy(label)[None, None].float(), crop_box, 64, mode="nearest")[0, 0].long()
    logits = torch.nn.functional.one_hot(crop, 3).permute(2, 0, 1)[None].float() * 10
    pasted = processor.paste(logits, crop_box, [shape])[0]
    assert pasted.shape == shape
    for class_id in (1, 2):
        assert dice(pasted == class_id, label == class_id) > 0.9
    assert (pasted[label == 0] == 0).mean() > 0.98


def test_crop_follows_the_box():
    processor = HalsrImageProcessor(size=32, crop_margin=0.0)
    image = np.zeros((100, 100), dtype=np.float32)
    image[20:52, 60:92] = 1.0  # the box, x 60..91, y 20..51
    crops, crop_boxes = processor.crop([image], [torch.tensor([60, 20, 91, 51])])
    assert crop_boxes[0].tolist() == [60.0, 20.0, 92.0, 52.0]
    assert torch.allclose(crops[0, 0], torch.ones(32, 32))


def test_post_process_keeps_a_non_square_slice_in_place():
    """Issue 12: the processor's square crop of a non-square slice, post-processed with the slice's
    size, comes back where it was (post_process_semantic_segmentation used to stretch the square
    logits to the slice: Dice 0 on this check)."""
    processor = HalsrImageProcessor(size=64)
    height, width = 60, 150
    label = np.zeros((height, width), dtype=np.uint8)
    label[10:50, 100:140] = 1  # a square object on the right
    label[20:40, 110:130] = 2
    inputs = processor(label.astype(np.float32) + np.random.default_rng(0).random((height, width)).astype(np.float32))
    assert inputs["crop_boxes"].tolist() == [[0.0, 0.0, 150.0, 150.0]]  # the whole slice, padded to a square
    crop = crop_and_resize(torch.from_numpy(label)[None, None].float(), inputs["crop_boxes"], 64, mode="nearest")[0, 0].long()
    logits = torch.nn.functional.one_hot(crop, 3).permute(2, 0, 1)[None].float() * 10
    for kwargs in ({}, {"crop_boxes": inputs["crop_boxes"]}):
        label_map = processor.post_process_semantic_segmentation(logits, target_sizes=inputs["original_sizes"], **kwargs)[0]
        assert label_map.shape == (height, width)
        for class_id in (1, 2):
            assert dice(label_map.numpy() == class_id, label == class_id) > 0.9
    # with a ROI box: the crop is around the box, mapped back through crop_boxes
    boxed = processor(label.astype(np.float32) + 0.5, boxes=[[100, 10, 139, 49]])
    crop = crop_and_resize(torch.from_numpy(label)[None, None].float(), boxed["crop_boxes"], 64, mode="nearest")[0, 0].long()
    logits = torch.nn.functional.one_hot(crop, 3).permute(2, 0, 1)[None].float() * 10
    label_map = processor.post_process_semantic_segmentation(logits, target_sizes=boxed["original_sizes"],
                                                             crop_boxes=boxed["crop_boxes"])[0]
    assert dice(label_map.numpy() == 1, label == 1) > 0.9 and dice(label_map.numpy() == 2, label == 2) > 0.9
    with pytest.raises(InputError, match="crop_boxes needs target_sizes"):
        processor.post_process_semantic_segmentation(logits, crop_boxes=boxed["crop_boxes"])


def test_processor_rejects_unknown_keyword_arguments():
    processor = HalsrImageProcessor(size=32)
    image = np.random.default_rng(0).random((40, 50)).astype(np.float32)
    with pytest.raises(InputError, match="'box' \\(did you mean 'boxes'\\?\\)"):
        processor(image, box=[1, 2, 10, 12])
    with pytest.raises(InputError, match="'crop_margn' \\(did you mean 'crop_margin'\\?\\)"):
        HalsrImageProcessor(crop_margn=0.1)
    with pytest.raises(InputError, match="'size_roi'"):
        processor.preprocess_for_roi(image, size_roi=64)
    with pytest.raises(InputError, match="2 boxes for 1 images"):
        processor(image, boxes=[[1, 2, 10, 12], None])


# ---- the bundled model: the transformers-native path and the bare task --------------------------


@pytest.fixture(scope="module")
def bundled_pipe():
    try:
        halsr_hf.default_model_dir()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    return halsr_hf.load_pipeline()


EXAMPLE_DICOM = Path(__file__).resolve().parents[1] / "space" / "examples" / "SCD0000101_48.dcm"


def test_models_alone_give_the_pipelines_label_map_on_a_real_slice(bundled_pipe):
    """Issue 12: AutoModelForSemanticSegmentation + AutoImageProcessor (+ the ROI model, the
    bundled localiser, with AutoModelForSemanticSegmentation too), as the model card shows them,
    give exactly the label map of the pipeline's first pass (``second_look=0``; the pipeline keeps
    the largest LV component) on a non-square real slice crop and on the bundled DICOM example, with
    and without the ROI stage."""
    from transformers import AutoModelForSemanticSegmentation

    from halsr_hf.image_io import load_input
    from halsr_hf.roi_stage import keep_largest_component

    folder = str(halsr_hf.default_model_dir())
    model = AutoModelForSemanticSegmentation.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    roi_model = AutoModelForSemanticSegmentation.from_pretrained(folder, subfolder="roi").eval()
    full = load_input(str(EXAMPLE_DICOM)).slices[0]
    for image in (full, full[30:230, 10:256]):  # square 256x256 and non-square 200x246
        with torch.no_grad():
            roi_inputs = processor.preprocess_for_roi(image)
            boxes = processor.post_process_roi(roi_model(pixel_values=roi_inputs["pixel_values"]),
                                               roi_inputs["original_sizes"])
            assert boxes[0] is not None
            inputs = processor(image, boxes=boxes)
            outputs = model(pixel_values=inputs["pixel_values"])
            label_map = processor.post_process_semantic_segmentation(
                outputs, target_sizes=inputs["original_sizes"], crop_boxes=inputs["crop_boxes"])[0]
            expected = bundled_pipe(image, second_look=0)
            assert label_map.shape == image.shape and (label_map.numpy() == 1).sum() > 100
            assert np.array_equal(keep_largest_component(label_map.numpy().astype(np.uint8))[0], expected["label_map"])
            assert [int(round(float(v))) for v in boxes[0]] == expected["roi"]
            # whole slice (no ROI stage): the SegFormer-style call, target_sizes only
            inputs = processor(image)
            outputs = model(pixel_values=inputs["pixel_values"])
            label_map = processor.post_process_semantic_segmentation(outputs, target_sizes=[image.shape])[0]
            whole = keep_largest_component(label_map.numpy().astype(np.uint8))[0]
            assert np.array_equal(whole, bundled_pipe(image, use_roi=False, second_look=0)["label_map"])
    # issue 20: the processor's output goes to the model as is, as with SegFormer's
    inputs = processor(full)
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, model(pixel_values=inputs["pixel_values"]).logits)


NO_PROMPT = textwrap.dedent(
    """
    import sys, tempfile
    from transformers import pipeline
    import halsr_hf

    example = sys.argv[1]
    pipe = pipeline("cardiac-lv-segmentation")
    print("bare", type(pipe).__module__, pipe.model.name_or_path == str(halsr_hf.default_model_dir()),
          pipe.roi_model is not None, int((pipe(example)["label_map"] == 1).sum()))
    pipe = pipeline("cardiac-lv-segmentation", model=halsr_hf.default_model_dir())
    print("folder", type(pipe).__module__, type(pipe.image_processor).__module__)
    saved = tempfile.mkdtemp()
    pipe.save_pretrained(saved)  # config.json now has auto_map and custom_pipelines
    for trust in (None, True):
        kwargs = {} if trust is None else {"trust_remote_code": trust}
        again = pipeline("cardiac-lv-segmentation", model=saved, **kwargs)
        print("saved", trust, type(again).__module__, type(again.model).__module__, again.roi_model is not None)
    """
)


def test_task_and_folders_load_with_the_local_classes_and_no_prompt(bundled_pipe, tmp_path):
    """Issue 12: pipeline("cardiac-lv-segmentation") with no model (the v4-format default used to
    fail with "not enough values to unpack"), with the bundled folder (used to ask "Do you wish to
    run the custom code? [y/N]" on stdin), and with a saved folder whose config has custom_pipelines,
    all with halsr_hf imported, stdin closed and no trust_remote_code."""
    script = tmp_path / "no_prompt.py"
    script.write_text(NO_PROMPT)
    result = subprocess.run([sys.executable, str(script), str(EXAMPLE_DICOM)], stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Do you wish to run the custom code" not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    bare = next(line for line in lines if line.startswith("bare")).split()
    assert bare[1:4] == ["halsr_hf.pipeline_halsr", "True", "True"]
    assert int(bare[4]) == int((bundled_pipe(str(EXAMPLE_DICOM))["label_map"] == 1).sum())
    assert "folder halsr_hf.pipeline_halsr halsr_hf.image_processing_halsr" in lines
    assert "saved None halsr_hf.pipeline_halsr halsr_hf.modeling_halsr True" in lines
    assert "saved True halsr_hf.pipeline_halsr halsr_hf.modeling_halsr True" in lines


def test_registered_default_is_in_transformers5_format_and_never_saved(tiny_folder):
    import json

    from transformers.pipelines import PIPELINE_REGISTRY

    default = PIPELINE_REGISTRY.supported_tasks["cardiac-lv-segmentation"]["default"]
    assert set(default) == {"model"} and len(default["model"]) == 2
    assert default["model"][0] == str(Path(halsr_hf.__file__).resolve().parent / "default_model")
    spec = json.loads((tiny_folder / "config.json").read_text())["custom_pipelines"]["cardiac-lv-segmentation"]
    assert "default" not in spec  # no folder of this machine in a saved config
    assert str(Path(halsr_hf.__file__).resolve().parent) not in (tiny_folder / "config.json").read_text()


# ---- pipeline with tiny models -------------------------------------------------------------


def test_pipeline_saved_folder_has_code_roi_and_custom_pipeline(tiny_folder):
    import json

    config = json.loads((tiny_folder / "config.json").read_text())
    assert "cardiac-lv-segmentation" in config["custom_pipelines"]
    assert config["auto_map"]["AutoModelForSemanticSegmentation"].endswith("HalsrForSemanticSegmentation")
    for name in ("pipeline_halsr.py", "modeling_halsr.py", "image_processing_halsr.py", "image_io.py", "clinical.py",
                 "errors.py", "modeling_roi.py", "configuration_roi.py", "preprocessor_config.json", "model.safetensors",
                 "roi/config.json", "roi/model.safetensors"):
        assert (tiny_folder / name).is_file(), name


def test_pipeline_outputs_for_a_slice_and_a_volume(tiny_pipe):
    rng = np.random.default_rng(1)
    image = rng.random((90, 110)).astype(np.float32)
    out = tiny_pipe(image)
    assert out["label_map"].shape == (90, 110) and out["label_map"].dtype == np.uint8
    assert set(np.unique(out["label_map"])) <= {0, 1, 2}
    assert out["lv_found"] and out["roi"] is not None and len(out["roi"]) == 4
    assert out["areas_mm2"] is None and out["pixel_spacing"] is None
    for segment in out["segments"]:
        assert segment["mask"].mode == "L" and segment["mask"].size == (110, 90)
        class_id = {"lv_cavity": 1, "myocardium": 2}[segment["label"]]
        assert np.array_equal(np.asarray(segment["mask"]) > 0, out["label_map"] == class_id)
    volume = tiny_pipe(np.stack([image] * 3), pixel_spacing=(1.5, 1.25), slice_thickness=8.0)
    assert volume["label_map"].shape == (3, 90, 110) and len(volume["slices"]) == 3
    assert np.array_equal(volume["label_map"][1], out["label_map"])
    assert volume["volumes_ml"] is not None


def test_no_lv_is_reported_instead_of_segmenting_noise(tmp_path):
    model, roi = tiny_models(presence_bias=-5.0)
    pipe = CardiacLVSegmentationPipeline(model=model, image_processor=HalsrImageProcessor(size=64, roi_size=64), roi_model=roi)
    out = pipe(np.random.default_rng(0).random((64, 80)).astype(np.float32))
    assert out["lv_found"] is False and out["roi"] is None and out["message"].startswith("LV not located")
    assert not out["label_map"].any()
    whole = pipe(np.random.default_rng(0).random((64, 80)).astype(np.float32), use_roi=False)
    assert whole["lv_found"] is True


def test_roi_model_argument_validation(tiny_folder):
    model, _ = tiny_models()
    with pytest.raises(InputError, match="expected an LV box regressor .* or an LV localiser"):
        CardiacLVSegmentationPipeline(model=model, image_processor=HalsrImageProcessor(), roi_model=model)
    with pytest.raises(InputError, match="roi_model"):
        CardiacLVSegmentationPipeline(model=model, image_processor=HalsrImageProcessor(), roi_model=str(tiny_folder))


def test_batch_and_single_give_identical_results(tiny_pipe):
    rng = np.random.default_rng(2)
    images = [rng.random((80, 96)).astype(np.float32), rng.random((70, 70)).astype(np.float32) * 300]
    batched = tiny_pipe(images, batch_size=16)
    for image, result in zip(images, batched):
        assert np.array_equal(tiny_pipe(image, batch_size=1)["label_map"], result["label_map"])


def test_file_inputs_and_masks(tiny_pipe, tmp_path):
    rng = np.random.default_rng(3)
    image16 = (rng.random((60, 72)) * 60000).astype(np.uint16)
    png = tmp_path / "slice16.png"
    Image.fromarray(image16).save(png)
    out_png = tiny_pipe(str(png))
    assert np.array_equal(out_png["label_map"], tiny_pipe(image16)["label_map"])
    data = rng.random((72, 60, 4, 3)).astype(np.float32)  # (X, Y, Z, T)
    affine = np.diag([1.4, 1.3, 9.0, 1.0])
    nii = tmp_path / "cine.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), nii)
    out = tiny_pipe(str(nii), frame=1, save_mask=str(tmp_path / "mask.nii.gz"))
    assert out["label_map"].shape == (4, 60, 72) and out["pixel_spacing"] == pytest.approx((1.3, 1.4))
    assert out["slice_thickness"] == pytest.approx(9.0)
    mask = nib.load(tmp_path / "mask.nii.gz")
    assert mask.shape == (72, 60, 4) and np.allclose(mask.affine, affine)
    assert np.array_equal(np.asarray(mask.dataobj)[:, :, 2].T, out["label_map"][2])
    with pytest.raises(InputError, match="already exists"):
        tiny_pipe(str(nii), frame=1, save_mask=str(tmp_path / "mask.nii.gz"))
    tiny_pipe(str(png), save_mask=str(tmp_path / "mask.png"))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "mask.png")), out_png["label_map"])


# ---- bad input -------------------------------------------------------------------------------


def _bad_inputs(tmp_path):
    truncated = tmp_path / "truncated.png"
    buffer = tmp_path / "full.png"
    Image.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)).save(buffer)
    truncated.write_bytes(buffer.read_bytes()[:100])
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    bad_dicom = tmp_path / "bad.dcm"
    bad_dicom.write_bytes(b"not a dicom file at all" * 10)
    bad_nifti = tmp_path / "bad.nii.gz"
    bad_nifti.write_bytes(gzip.compress(b"garbage" * 50))
    four_d = tmp_path / "cine4d.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((32, 32, 2, 5)).astype(np.float32), np.eye(4)), four_d)
    nan_image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    nan_image[3, 3] = np.nan
    inf_image = nan_image.copy()
    inf_image[3, 3] = np.inf
    return [
        (str(truncated), {}, "truncated"),
        (str(empty), {}, "empty file"),
        (str(bad_dicom), {}, "DICOM"),
        (str(bad_nifti), {}, "NIfTI"),
        (str(tmp_path / "slice.txt"), {}, "unsupported file type"),
        (str(tmp_path / "missing.png"), {}, "no such file"),
        (str(four_d), {}, "pass frame="),
        (str(four_d), {"frame": 9}, "out of range"),
        (np.zeros((64, 64), dtype=np.float32), {}, "constant"),
        (nan_image, {}, "NaN or infinite"),
        (inf_image, {}, "NaN or infinite"),
        (np.ones((1, 1), dtype=np.float32), {}, "too small"),
        (np.random.default_rng(0).random((5000, 16)).astype(np.float32), {}, "exceeds the limit of 4096x4096"),
        (np.zeros((2, 2, 2, 2)), {}, "expected \\(H, W\\) or \\(Z, H, W\\)"),
        ("x" * 3, {}, "unsupported file type"),
        (object(), {}, "unsupported input"),
        (np.random.default_rng(0).random((32, 32)), {"pixel_spacing": (0, 1)}, "pixel_spacing"),
    ]


def _png_header_only(path, width, height):
    """A PNG that declares ``width`` x ``height`` 8-bit gray pixels (and holds one row of data)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1)))
                     + chunk(b"IEND", b""))
    return path


def test_huge_images_are_refused_before_decoding(tiny_pipe, tmp_path):
    """Issue 12: a 30000 x 30000 PNG raised PIL's DecompressionBombError (and one between PIL's
    limit and twice it was decoded, with a warning only)."""
    for side in (30000, 12000):
        path = _png_header_only(tmp_path / f"huge{side}.png", side, side)
        with pytest.raises(InputError, match=f"huge{side}.png: image too large to decode safely"):
            tiny_pipe(str(path))


def test_missing_optional_readers_name_the_package_to_install(tiny_pipe, tmp_path, monkeypatch):
    """Issue 12: NIfTI without nibabel (the card's transformers-only path) was a bare ModuleNotFoundError."""
    from halsr_hf.image_io import save_mask

    nifti = tmp_path / "volume.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((32, 32, 2)).astype(np.float32), np.eye(4)), nifti)
    monkeypatch.setitem(sys.modules, "nibabel", None)  # import nibabel -> ImportError
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(InputError, match="volume.nii.gz: reading NIfTI files needs the Python package 'nibabel'.*pip install nibabel"):
        tiny_pipe(str(nifti))
    with pytest.raises(InputError, match="needs the Python package 'pydicom'.*pip install pydicom"):
        tiny_pipe(str(EXAMPLE_DICOM))
    with pytest.raises(InputError, match="needs the Python package 'nibabel'"):
        save_mask(np.zeros((4, 4), dtype=np.uint8), tmp_path / "mask.nii.gz")


def test_bad_inputs_raise_input_error_naming_the_input(tiny_pipe, tmp_path):
    for item, kwargs, match in _bad_inputs(tmp_path):
        with pytest.raises(InputError, match=match) as info:
            tiny_pipe(item, **kwargs)
        if isinstance(item, str):
            assert Path(item).name in str(info.value)


def test_max_image_size_is_configurable(tiny_folder):
    pipe = pipeline("cardiac-lv-segmentation", model=str(tiny_folder), trust_remote_code=False,
                    pipeline_class=CardiacLVSegmentationPipeline)
    pipe.image_processor.max_image_size = 100
    with pytest.raises(InputError, match="limit of 100x100"):
        pipe(np.random.default_rng(0).random((101, 50)).astype(np.float32))


# ---- remote code without the package ---------------------------------------------------------

REMOTE = textwrap.dedent(
    """
    import sys
    sys.modules["halsr_hf"] = None
    import numpy as np
    from transformers import pipeline
    folder, image_path, out = sys.argv[1:4]
    pipe = pipeline("cardiac-lv-segmentation", model=folder, trust_remote_code=True)
    assert "halsr_hf" not in type(pipe).__module__
    result = pipe(image_path)
    np.save(out, result["label_map"])
    print(type(pipe).__name__, result["roi"], result["areas_mm2"])
    """
)


def test_saved_folder_runs_with_remote_code_without_the_package(tiny_folder, tiny_pipe, sunnybrook_dir, tmp_path):
    image_path = sunnybrook_dir / SUNNYBROOK_DICOM
    script = tmp_path / "remote.py"
    script.write_text(REMOTE)
    result = subprocess.run([sys.executable, str(script), str(tiny_folder), str(image_path), str(tmp_path / "out.npy")],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "CardiacLVSegmentationPipeline" in result.stdout
    assert np.array_equal(np.load(tmp_path / "out.npy"), tiny_pipe(str(image_path))["label_map"])


# ---- real data ---------------------------------------------------------------------------------


def test_sunnybrook_dicom_areas_in_mm2(tiny_pipe, sunnybrook_dir):
    import pydicom

    path = sunnybrook_dir / SUNNYBROOK_DICOM
    spacing = tuple(float(v) for v in pydicom.dcmread(path).PixelSpacing)
    out = tiny_pipe(str(path))
    assert out["pixel_spacing"] == pytest.approx(spacing)
    assert out["label_map"].shape == (256, 256)
    for name, pixels in out["areas_px"].items():
        assert out["areas_mm2"][name] == pytest.approx(pixels * spacing[0] * spacing[1])


def test_acdc_slice_and_volume_end_to_end(tiny_pipe, acdc_dir):
    with h5py.File(acdc_dir / "data" / "patient011_frame01.h5", "r") as f:
        volume = f["image"][()]
    out = tiny_pipe(volume, batch_size=4)
    assert out["label_map"].shape == volume.shape
    single = tiny_pipe(torch.from_numpy(volume[3]))
    assert np.array_equal(single["label_map"], out["label_map"][3])
    assert out["volumes_ml"] is None  # the SSL4MIS copy lost its spacing


def test_default_model_is_bundled_and_its_absence_is_a_clear_error(monkeypatch, tmp_path):
    folder = halsr_hf.default_model_dir()  # the package ships both stages
    assert (folder / "config.json").is_file() and (folder / "roi" / "config.json").is_file()
    monkeypatch.setattr(halsr_hf, "_DEFAULT_MODEL_DIR", tmp_path / "default_model")
    with pytest.raises(FileNotFoundError, match="no default model is bundled"):
        halsr_hf.default_model_dir()


def test_normalisation_is_scale_invariant():
    rng = np.random.default_rng(0)
    image = rng.random((50, 60)).astype(np.float32)
    assert np.abs(normalize_intensity(image * 1000 + 20) - normalize_intensity(image)).max() < 1e-3


# ---- EF through the pipeline and the CLI ------------------------------------------------------


def _nifti_pair(tmp_path):
    rng = np.random.default_rng(5)
    affine = np.diag([1.25, 1.25, 10.0, 1.0])
    paths = []
    for name in ("ed", "es"):
        path = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(rng.random((70, 64, 3)).astype(np.float32), affine), path)
        paths.append(str(path))
    return paths


def test_ejection_fraction_through_the_pipeline(tiny_pipe, tmp_path):
    from halsr_hf.clinical import ejection_fraction

    ed, es = _nifti_pair(tmp_path)
    result = ejection_fraction(ed, es, pipe=tiny_pipe)
    assert result["volume_unit"] == "ml"
    # the expected values by hand from the pipeline's own label maps (not through clinical.cardiac_function):
    # voxel counts times 1.25 x 1.25 x 10 mm, the myocardium at 1.05 g/mL
    voxel_ml = 1.25 * 1.25 * 10.0 / 1000
    ed_map, es_map = tiny_pipe(ed)["label_map"], tiny_pipe(es)["label_map"]
    edv, esv = (ed_map == 1).sum() * voxel_ml, (es_map == 1).sum() * voxel_ml
    expected = {"edv_ml": edv, "esv_ml": esv, "sv_ml": edv - esv, "myocardial_mass_g": (ed_map == 2).sum() * voxel_ml * 1.05,
                "edv_voxels": (ed_map == 1).sum(), "ef_percent": 100 * (edv - esv) / edv}
    for key, value in expected.items():
        assert result[key] == pytest.approx(value), key
    assert np.array_equal(result["ed_label_map"], ed_map) and np.array_equal(result["es_label_map"], es_map)
    with pytest.raises(InputError, match="single slice"):
        ejection_fraction(np.random.default_rng(0).random((40, 40)).astype(np.float32), es, pipe=tiny_pipe)


def test_segment_and_ef_commands(tiny_folder, sunnybrook_dir, tmp_path, capsys):
    import json

    from halsr_hf.cli import main

    dicom = str(sunnybrook_dir / SUNNYBROOK_DICOM)
    ed, es = _nifti_pair(tmp_path)
    out_dir = tmp_path / "out"
    assert main(["segment", dicom, ed, "--model", str(tiny_folder), "--out-dir", str(out_dir)]) == 0
    table = capsys.readouterr().out
    assert "| 48.dcm" not in table and "mm²" in table and "mL" in table
    report = json.loads((out_dir / "measurements.json").read_text())
    assert report[0]["areas_mm2"] is not None and report[1]["volumes_ml"] is not None
    assert (out_dir / "48_overlay.png").is_file() and (out_dir / "48_mask.png").is_file()
    assert (out_dir / "ed_mask.nii.gz").is_file() and (out_dir / "ed_overlay_z02.png").is_file()
    overlay_png = Image.open(out_dir / "48_overlay.png")
    assert overlay_png.mode == "RGB" and overlay_png.size == (256, 256)
    # no silent overwrite
    assert main(["segment", dicom, "--model", str(tiny_folder), "--out-dir", str(out_dir)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["ef", "--ed", ed, "--es", es, "--model", str(tiny_folder), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["volume_unit"] == "ml" and "ef_percent" in result
    assert main(["segment", str(tmp_path / "nope.png"), "--model", str(tiny_folder), "--out-dir", str(out_dir)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_cli_messages_name_flags_and_files_follow_the_umask(tiny_folder, tiny_pipe, tmp_path, capsys):
    """Issue 12: CLI errors said "pass overwrite=True", "pass frame="; files written through
    mkstemp stayed 0600 whatever the umask."""
    import os

    from halsr_hf.cli import main

    four_d = tmp_path / "cine4d.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((32, 32, 2, 5)).astype(np.float32), np.eye(4)), four_d)
    common = ["--model", str(tiny_folder), "--out-dir", str(tmp_path / "out")]
    assert main(["segment", str(four_d), *common]) == 2
    err = capsys.readouterr().err
    assert "pass --frame (0-based)" in err and "frame=" not in err
    assert main(["segment", str(four_d), "--frame", "9", *common]) == 2
    assert "--frame 9 out of range" in capsys.readouterr().err
    assert main(["ef", "--ed", str(four_d), "--es", str(four_d), "--ed-frame", "1", "--model", str(tiny_folder)]) == 2
    assert "pass --es-frame (0-based)" in capsys.readouterr().err
    with pytest.raises(InputError, match="pass frame= \\(0-based\\)"):  # the Python API names its keyword
        tiny_pipe(str(four_d))

    previous = os.umask(0o027)
    try:
        assert main(["segment", str(EXAMPLE_DICOM), str(four_d), "--frame", "1", *common]) == 0
    finally:
        os.umask(previous)
    written = [p for p in (tmp_path / "out").iterdir()]
    assert len(written) >= 5 and not list((tmp_path / "out").glob(".tmp-*"))
    assert {oct(p.stat().st_mode & 0o777) for p in written} == {oct(0o640)}
    assert main(["segment", str(EXAMPLE_DICOM), *common]) == 2
    err = capsys.readouterr().err
    assert "pass --overwrite to replace it" in err and "overwrite=True" not in err
    with pytest.raises(InputError, match="pass overwrite=True"):
        halsr_hf.image_io.save_mask(np.zeros((4, 4), np.uint8), tmp_path / "out" / "SCD0000101_48_mask.png")


def test_cli_weight_loading_progress_bars_only_with_verbose(tiny_folder, tmp_path):
    """Issue 12: every CLI call printed "Loading weights" progress bars."""
    import os

    env = {**os.environ, "PYTHONPATH": str(Path(halsr_hf.__file__).resolve().parents[1])}
    command = [sys.executable, "-m", "halsr_hf.cli", "segment", str(EXAMPLE_DICOM), "--model", str(tiny_folder)]
    quiet = subprocess.run(command + ["--out-dir", "a"], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    verbose = subprocess.run(command + ["--out-dir", "b", "--verbose"], capture_output=True, text=True, timeout=300,
                             cwd=tmp_path, env=env)
    assert quiet.returncode == 0 and verbose.returncode == 0, quiet.stderr + verbose.stderr
    assert "Loading weights" not in quiet.stderr + quiet.stdout and "%|" not in quiet.stderr
    assert "Loading weights" in verbose.stderr
    assert quiet.stdout.replace("a/", "b/") == verbose.stdout


def test_cli_help_is_plain_text(capsys):
    """Issue 12: --help showed raw reST markup (``halsr-hf segment ...``)."""
    from halsr_hf.cli import COMMANDS, main

    assert main(["--help"]) == 0
    assert "--verbose" in capsys.readouterr().out
    for command in COMMANDS:
        assert main([command, "--help"]) == 0, command
        text = capsys.readouterr().out
        assert f"halsr-hf {command}" in text and "``" not in text, (command, text[:500])


def test_roi_stage_box_is_the_stage_s_own_box_before_the_second_look(acdc_dir):
    """``roi_stage_box``: the localiser's box after the consensus, before any re-crop; ``roi`` is the
    final crop's. Without a second look they are one box; with the ROI stage off, there is none."""
    import h5py

    with h5py.File(acdc_dir / "data" / "patient030_frame02.h5", "r") as f:
        volume = f["image"][()]
    pipe = halsr_hf.load_pipeline()
    plain = pipe(volume, second_look=0)
    looked = pipe(volume)
    for a, b in zip(plain["slices"], looked["slices"]):
        assert a["roi_stage_box"] == a["roi"] and b["roi_stage_box"] == a["roi_stage_box"]
        if "second_look" in b["qc"]:
            assert b["roi"] != b["roi_stage_box"]
    assert all(s["roi_stage_box"] is None for s in pipe(volume, use_roi=False)["slices"])
