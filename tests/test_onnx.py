"""ONNX export (``halsr-hf export-onnx``) and the pipeline's ``backend="onnx"``: onnxruntime's
outputs match torch's."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from halsr_hf import CardiacLVSegmentationPipeline, HalsrImageProcessor, InputError  # noqa: E402
from halsr_hf.commands import export_onnx  # noqa: E402

from .conftest import tiny_models  # noqa: E402

#: Bound on |onnxruntime - torch| for the logits / boxes of the tiny random models (float32;
#: measured about 1e-6 here, and 5.5e-4 on the logits of a random ``small`` model, whose logits
#: are in the tens).
MAX_ABS_DIFF = 1e-3


@pytest.fixture(scope="module")
def memory_pipe():
    """The tiny models in a pipeline built in memory (its own: these tests switch backends)."""
    model, roi = tiny_models()
    return CardiacLVSegmentationPipeline(model=model, image_processor=HalsrImageProcessor(size=64, roi_size=64), roi_model=roi)


def test_export_onnx_command_matches_torch(memory_pipe, tmp_path, capsys):
    folder = tmp_path / "model"
    memory_pipe.save_pretrained(folder)
    assert export_onnx.main(["--model", str(folder), "--out", str(tmp_path / "onnx")]) == 0
    summary = json.loads((tmp_path / "onnx" / "onnx_export.json").read_text())
    assert summary["opset"] == export_onnx.OPSET
    for name in ("segmentation", "roi"):
        assert (tmp_path / "onnx" / summary["files"][name]["path"]).is_file()
        assert summary["files"][name]["max_abs_diff_vs_torch"] < MAX_ABS_DIFF
    assert "max abs diff" in capsys.readouterr().out
    # nothing is silently overwritten: a non-empty --out needs --overwrite
    with pytest.raises(InputError, match="--out .* not empty.*--overwrite"):
        export_onnx.main(["--model", str(folder), "--out", str(tmp_path / "onnx")])
    assert export_onnx.main(["--model", str(folder), "--out", str(tmp_path / "onnx"), "--overwrite", "--no-check"]) == 0
    # independent check, with a batch size that was not used at export (dynamic batch axis)
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "onnx" / "segmentation.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(7, 1, 64, 64)
    with torch.inference_mode():
        expected = memory_pipe.model(pixel_values=x).logits.numpy()
    assert np.abs(session.run(None, {"pixel_values": x.numpy()})[0] - expected).max() < MAX_ABS_DIFF


def test_onnx_backend_gives_the_torch_label_maps(memory_pipe):
    rng = np.random.default_rng(0)
    volume = rng.random((5, 90, 77)).astype(np.float32)
    expected = memory_pipe(volume)
    onnx_pipe = CardiacLVSegmentationPipeline(model=memory_pipe.model, image_processor=memory_pipe.image_processor,
                                              roi_model=memory_pipe.roi_model, backend="onnx")
    assert onnx_pipe.backend == "onnx"
    got = onnx_pipe(volume)
    assert got["slices"][0]["roi"] == expected["slices"][0]["roi"]
    # label maps agree except where two logits tie to within the float error
    assert (got["label_map"] == expected["label_map"]).mean() > 0.999
    with pytest.raises(InputError, match="backend"):
        onnx_pipe.set_backend("tensorrt")
    onnx_pipe.set_backend("torch")
    assert np.array_equal(onnx_pipe(volume)["label_map"], expected["label_map"])


def test_export_onnx_without_a_model_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="model"):
        export_onnx.main(["--model", str(tmp_path / "missing"), "--out", str(tmp_path / "onnx")])


def test_folded_and_unfolded_models_export_the_same_function(tmp_path):
    """A model and its ``fused_for_inference()`` copy export to ONNX files that compute the same
    logits (the TorchScript exporter folds BatchNorm itself in eval mode), and the export cache keeps
    them apart (different weights hashes)."""
    import onnxruntime as ort

    from halsr_hf import onnx_backend

    model, roi = tiny_models()
    x = torch.randn(3, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    outputs = {}
    for name, candidate in (("unfolded", model), ("folded", model.fused_for_inference()),
                            ("roi_unfolded", roi), ("roi_folded", roi.fused_for_inference())):
        path = tmp_path / f"{name}.onnx"
        if name.startswith("roi"):
            onnx_backend.export_roi(candidate, path)
        else:
            onnx_backend.export_segmentation(candidate, path, 64)
        outputs[name] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"pixel_values": x.numpy()})
    with torch.inference_mode():
        expected = model(pixel_values=x).logits.numpy()
        expected_boxes = roi(pixel_values=x).pred_boxes.numpy()
    assert np.abs(outputs["folded"][0] - outputs["unfolded"][0]).max() < MAX_ABS_DIFF
    assert np.abs(outputs["folded"][0] - expected).max() < MAX_ABS_DIFF
    assert np.abs(outputs["roi_folded"][0] - outputs["roi_unfolded"][0]).max() < 1e-5
    assert np.abs(outputs["roi_folded"][0] - expected_boxes).max() < 1e-5
    assert onnx_backend.weights_hash(model, 64) != onnx_backend.weights_hash(model.fused_for_inference(), 64)
