"""Issue 18: the inference-only speed-ups keep the networks' function, on real slices with the
bundled models: BatchNorm folded (``fused_for_inference``, what the torch backend runs), the
default backend (onnxruntime on CPU when installed) against eager torch, and the ONNX export cache.
The bundled model is loaded once for the module; real ACDC test slices (never trained on)."""

import numpy as np
import pytest
import torch

import halsr_hf
from halsr_hf import CardiacLVSegmentationPipeline, HalsrImageProcessor, InputError

from .conftest import load_acdc_slices, tiny_models

#: |folded - eager| on logits, bundled models, real slices (measured: at most 9.9e-5 on 32 ACDC test
#: slices, logits up to 85 in magnitude; eager torch itself differs by up to 6e-5 between batch 32
#: and batch 1 on the same slices: float32 rounding, docs/performance.md)
FOLD_MAX_ABS_DIFF = 1e-4
#: |torch backend (folded, channels_last on CPU) - eager| on logits: 1.5e-4 measured (the localiser,
#: logits in -51..39: 3e-6 relative); on softmax probabilities 1e-5
TORCH_BACKEND_MAX_ABS_DIFF, MAX_PROBABILITY_DIFF = 2e-4, 1e-5
#: |onnxruntime - eager torch| on logits, bundled models, real slices: the bound for the default backend
ONNX_MAX_ABS_DIFF = 1e-3
#: ACDC test slices (ED of patient 011, ES of patient 083; basal to apical)
SLICES = {"patient011_frame01": (2, 5, 8), "patient083_frame02": (1, 3, 5)}


@pytest.fixture(scope="module")
def bundled():
    try:
        halsr_hf.default_model_dir()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    return halsr_hf.load_pipeline(backend="torch")


@pytest.fixture(scope="module")
def real_inputs(acdc_dir, bundled):
    """(segmenter crops around the reference LV box, localiser inputs) of the real slices."""
    pairs = [(image[k], label[k]) for (image, label), ks in zip(load_acdc_slices(acdc_dir, list(SLICES)), SLICES.values())
             for k in ks]
    images = [image for image, _ in pairs]
    boxes = []
    for _, label in pairs:
        rows, cols = np.nonzero(label > 0)
        boxes.append([cols.min(), rows.min(), cols.max(), rows.max()] if rows.size else None)
    processor = bundled.image_processor
    return processor(images, boxes=boxes)["pixel_values"], processor.preprocess_for_roi(images)["pixel_values"], images


def test_folded_batchnorm_keeps_the_bundled_networks_function(bundled, real_inputs):
    crops, roi_inputs, _ = real_inputs
    for model, x in ((bundled.model, crops), (bundled.roi_model, roi_inputs)):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        fused = model.fused_for_inference()
        assert fused.is_fused_for_inference and not model.is_fused_for_inference
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
        with torch.inference_mode():
            expected, got = model(pixel_values=x).logits, fused(pixel_values=x).logits
        assert float((got - expected).abs().max()) < FOLD_MAX_ABS_DIFF, float((got - expected).abs().max())
        # the original is untouched: same state dict, still BatchNorm, still trainable
        after = model.state_dict()
        assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    # what the torch backend runs: the folded copies, channels_last on CPU
    with torch.inference_mode():
        pairs = ((bundled._run_segmentation(crops), bundled.model(pixel_values=crops).logits),
                 (bundled._run_localizer(roi_inputs), bundled.roi_model(pixel_values=roi_inputs).logits))
    for got, expected in pairs:
        assert float((got - expected).abs().max()) < TORCH_BACKEND_MAX_ABS_DIFF
        assert float((got.softmax(1) - expected.softmax(1)).abs().max()) < MAX_PROBABILITY_DIFF


def test_a_folded_copy_is_never_saved_or_trained(tmp_path):
    model, roi = tiny_models()
    for fused in (model.fused_for_inference(), roi.fused_for_inference()):
        with pytest.raises(InputError, match="inference-only copy"):
            fused.save_pretrained(tmp_path / "fused")
        with pytest.raises(InputError, match="inference-only copy"):
            fused.train()
        fused.eval()  # train(False) is fine
    assert not (tmp_path / "fused").exists()
    # the pipeline folds for inference but saves the trainable originals
    pipe = CardiacLVSegmentationPipeline(model=model, image_processor=HalsrImageProcessor(size=64, roi_size=64),
                                         roi_model=roi, backend="torch")
    pipe(np.random.default_rng(0).random((64, 70)).astype(np.float32))
    assert pipe.model is model and not model.is_fused_for_inference
    pipe.save_pretrained(tmp_path / "saved")
    again = halsr_hf.HalsrForSemanticSegmentation.from_pretrained(tmp_path / "saved")
    assert again.state_dict().keys() == model.state_dict().keys()


def test_torch_backend_refolds_when_the_weights_change():
    model, roi = tiny_models()
    pipe = CardiacLVSegmentationPipeline(model=model, image_processor=HalsrImageProcessor(size=64, roi_size=64),
                                         roi_model=roi, backend="torch")
    x = torch.randn(2, 1, 64, 64)
    with torch.inference_mode():
        first = pipe._run_segmentation(x)
    with torch.no_grad():
        model.head.bias.add_(3.0)
    with torch.inference_mode():
        second = pipe._run_segmentation(x)
        assert torch.allclose(second, model(pixel_values=x).logits, atol=1e-3)  # random logits up to ~50
    assert not torch.allclose(first, second)


def test_default_backend_is_onnx_on_cpu_and_matches_torch_on_real_slices(bundled, real_inputs):
    pytest.importorskip("onnxruntime")
    crops, roi_inputs, images = real_inputs
    default = halsr_hf.load_pipeline()
    assert default.backend == "onnx" and "auto" in default.backend_reason
    # onnxruntime's threads must not spin beside torch's (2x slower single-slice calls on 2 cores)
    assert default._run_segmentation.__self__.options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    unfolded = CardiacLVSegmentationPipeline(model=bundled.model, image_processor=bundled.image_processor,
                                             roi_model=bundled.roi_model, backend="torch")
    unfolded.set_backend("torch", optimize=False)
    assert bundled.backend == "torch" and bundled.backend_reason == "chosen explicitly"
    with torch.inference_mode():
        seg_diff = float((default._run_segmentation(crops) - unfolded._run_segmentation(crops)).abs().max())
        roi_diff = float((default._run_localizer(roi_inputs) - unfolded._run_localizer(roi_inputs)).abs().max())
    assert seg_diff < ONNX_MAX_ABS_DIFF and roi_diff < ONNX_MAX_ABS_DIFF, (seg_diff, roi_diff)
    # end to end, as a volume: same boxes, label maps equal but for float ties
    volume = np.stack([image for image in images[:3]])
    got, expected = default(volume), unfolded(volume)
    assert [s["roi"] for s in got["slices"]] == [s["roi"] for s in expected["slices"]]
    assert (got["label_map"] == expected["label_map"]).mean() > 0.9999
    assert np.allclose([s["lv_probability"] for s in got["slices"]], [s["lv_probability"] for s in expected["slices"]], atol=1e-4)


def test_onnx_regressor_without_presence_head_reads_the_lv_as_present():
    """A box regressor without a presence head: torch returns no presence logit (probability 1.0);
    the ONNX export used to return zeros (probability 0.5, below some thresholds: no LV)."""
    pytest.importorskip("onnxruntime")
    from halsr_hf import LvRoiConfig, LvRoiRegressor

    model, _ = tiny_models()
    torch.manual_seed(1)
    roi = LvRoiRegressor(LvRoiConfig(image_size=64, encoder_sizes=[4, 8, 8, 16], fc_sizes=[16, 32], predict_presence=False,
                                     reduce_sizes=[16, 16, 8], global_channels=16, head_sizes=[8, 8])).eval()
    image = np.random.default_rng(0).random((80, 72)).astype(np.float32)
    results, x = {}, torch.randn(3, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    for backend in ("torch", "onnx"):
        pipe = CardiacLVSegmentationPipeline(model=model, image_processor=HalsrImageProcessor(size=64, roi_size=64),
                                             roi_model=roi, backend=backend)
        results[backend] = pipe(image, presence_threshold=0.6)
        out = pipe._run_roi(x)
        assert out.presence_logits is None
        results[backend + "_boxes"] = out.pred_boxes
    assert results["onnx"]["lv_probability"] == results["torch"]["lv_probability"] == 1.0
    assert results["onnx"]["lv_found"] and results["onnx"]["roi"] == results["torch"]["roi"]
    assert float((results["onnx_boxes"] - results["torch_boxes"]).abs().max()) < 1e-5


def test_onnx_exports_are_cached_by_weights_and_never_written_beside_the_model(tiny_folder, monkeypatch, tmp_path):
    pytest.importorskip("onnxruntime")
    from halsr_hf import onnx_backend

    monkeypatch.setenv("HALSR_HF_ONNX_CACHE", str(tmp_path / "cache"))
    before = sorted(p.name for p in tiny_folder.rglob("*"))
    pipe = halsr_hf.load_pipeline(str(tiny_folder), backend="onnx")
    files = sorted((tmp_path / "cache").iterdir())
    assert len(files) == 2 and all(f.suffix == ".onnx" for f in files)
    assert sorted(p.name for p in tiny_folder.rglob("*")) == before
    calls = []
    monkeypatch.setattr(onnx_backend, "export_segmentation", lambda *a, **k: calls.append(a))
    again = halsr_hf.load_pipeline(str(tiny_folder), backend="onnx")  # a second load: read from the cache
    assert calls == [] and sorted((tmp_path / "cache").iterdir()) == files
    monkeypatch.undo()
    monkeypatch.setenv("HALSR_HF_ONNX_CACHE", str(tmp_path / "cache"))
    image = np.random.default_rng(0).random((64, 70)).astype(np.float32)
    assert np.array_equal(pipe(image)["label_map"], again(image)["label_map"])
    # weights changed in place: exported again at the next call, the outputs follow torch's
    with torch.no_grad():
        again.model.head.bias.add_(torch.tensor([0.0, 4.0, 0.0]))
    torch_pipe = CardiacLVSegmentationPipeline(model=again.model, image_processor=again.image_processor,
                                               roi_model=again.roi_model, backend="torch")
    assert (again(image)["label_map"] == torch_pipe(image)["label_map"]).mean() > 0.999
    assert len(list((tmp_path / "cache").iterdir())) == 3


def test_onnx_backend_works_when_the_cache_cannot_be_written(monkeypatch, tmp_path):
    pytest.importorskip("onnxruntime")
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("HALSR_HF_ONNX_CACHE", str(tmp_path / "a-file" / "cache"))  # cannot be created
    model, roi = tiny_models()
    pipe = CardiacLVSegmentationPipeline(model=model, image_processor=HalsrImageProcessor(size=64, roi_size=64),
                                         roi_model=roi)
    assert pipe.backend == "onnx" and all(path.is_file() for path in pipe._run_segmentation.__self__.files.values())
    assert pipe(np.random.default_rng(0).random((64, 70)).astype(np.float32))["lv_found"]
