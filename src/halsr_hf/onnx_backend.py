"""onnxruntime inference for the pipeline: ``pipeline(..., backend="onnx")`` or ``pipe.set_backend("onnx")``.

Both models are exported with :mod:`halsr_hf.commands.export_onnx` (into a temporary folder, or
read from ``onnx_dir`` when it holds ``segmentation.onnx``/``roi.onnx`` written by ``halsr-hf
export-onnx``) and run by onnxruntime's CPU provider with as many intra-op threads as torch uses.
Everything else in the pipeline (reading, normalisation, crops, paste-back, measures) is shared
with the torch backend. On this project's 2-core CPU it is faster than eager torch (numbers in
``benchmarks/README.md`` and ``docs/performance.md``); outputs match torch to about 1e-4 in the
logits (the parity test states the bound).
"""

import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from .errors import InputError
from .modeling_roi import LvRoiOutput

#: ONNX opset of the exports (TorchScript-based exporter; see ``halsr-hf export-onnx``).
OPSET = 17


def _wrappers():
    class SegmentationLogits(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, pixel_values):
            return self.model(pixel_values=pixel_values, return_dict=True).logits

    class RoiOutputs(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, pixel_values):
            out = self.model(pixel_values=pixel_values, return_dict=True)
            presence = out.presence_logits if out.presence_logits is not None else torch.zeros_like(out.pred_boxes[:, 0])
            return out.pred_boxes, presence

    return SegmentationLogits, RoiOutputs


def export_segmentation(model, path, size: int = 128, opset: int = OPSET) -> Path:
    """Export a :class:`HalsrForSemanticSegmentation` to ``path`` for ``size`` x ``size`` inputs (dynamic batch)."""
    SegmentationLogits, _ = _wrappers()
    wrapper = SegmentationLogits(model.eval()).eval()
    example = torch.randn(2, model.config.num_channels, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about the shape checks, expected
        torch.onnx.export(
            wrapper, (example,), str(path), input_names=["pixel_values"], output_names=["logits"],
            dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset, dynamo=False,
        )
    return Path(path)


def is_localizer(roi_model) -> bool:
    """A ROI model that segments (the coarse localiser) rather than regresses boxes."""
    return getattr(roi_model.config, "model_type", None) == "halsr"


def export_roi(model, path, opset: int = OPSET) -> Path:
    """Export a :class:`LvRoiRegressor` to ``path`` (dynamic batch axis; the size is fixed by its
    config), or a localiser (a :class:`HalsrForSemanticSegmentation`) like the segmentation model."""
    if is_localizer(model):
        return export_segmentation(model, path, model.config.image_size or 128, opset)
    _, RoiOutputs = _wrappers()
    wrapper = RoiOutputs(model.eval()).eval()
    size = model.config.image_size
    example = torch.randn(2, model.config.num_channels, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, (example,), str(path), input_names=["pixel_values"], output_names=["pred_boxes", "presence_logits"],
            dynamic_axes={"pixel_values": {0: "batch"}, "pred_boxes": {0: "batch"}, "presence_logits": {0: "batch"}},
            opset_version=opset, dynamo=False,
        )
    return Path(path)


def parity(model_path, torch_fn, inputs: list) -> float:
    """Max abs difference between onnxruntime (CPU) and ``torch_fn`` over ``inputs``."""
    import onnxruntime as ort  # optional package (pip install halsr-hf[onnx])

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for x in inputs:
        with torch.inference_mode():
            expected = torch_fn(x)
        expected = expected if isinstance(expected, (tuple, list)) else (expected,)
        got = session.run(None, {"pixel_values": x.numpy()})
        for e, g in zip(expected, got):
            worst = max(worst, float(np.abs(e.float().numpy() - g).max()))
    return worst


class OnnxRunner:
    """Runs the segmentation model (``segment(pixel_values) -> logits``) and the ROI regressor
    (``roi(pixel_values) -> object with pred_boxes, presence_logits``) with onnxruntime."""

    def __init__(self, model, roi_model=None, size: int = 128, onnx_dir=None, threads: int | None = None):
        try:
            import onnxruntime as ort  # optional package
        except ImportError as error:  # pragma: no cover
            raise InputError(f"backend='onnx' needs onnxruntime (pip install onnxruntime): {error}") from None
        folder = Path(onnx_dir) if onnx_dir is not None else None
        if folder is None or not (folder / "segmentation.onnx").is_file():
            self._tmp = tempfile.TemporaryDirectory(prefix="halsr-onnx-")
            folder = Path(self._tmp.name)
            export_segmentation(model, folder / "segmentation.onnx", size)
            if roi_model is not None:
                export_roi(roi_model, folder / "roi.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        self.size = size
        self.segmentation = ort.InferenceSession(str(folder / "segmentation.onnx"), options, providers=providers)
        self.roi_session = None
        if roi_model is not None:
            if not (folder / "roi.onnx").is_file():
                raise InputError(f"{folder}: no roi.onnx beside segmentation.onnx")
            self.roi_session = ort.InferenceSession(str(folder / "roi.onnx"), options, providers=providers)

    def segment(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if tuple(pixel_values.shape[-2:]) != (self.size, self.size):
            raise InputError(f"backend='onnx': the exported model takes {self.size}x{self.size} crops, got {tuple(pixel_values.shape)}")
        (logits,) = self.segmentation.run(None, {"pixel_values": pixel_values.float().cpu().numpy()})
        return torch.from_numpy(logits)

    def localize(self, pixel_values: torch.Tensor) -> torch.Tensor:
        (logits,) = self.roi_session.run(None, {"pixel_values": pixel_values.float().cpu().numpy()})
        return torch.from_numpy(logits)

    def roi(self, pixel_values: torch.Tensor):
        boxes, presence = self.roi_session.run(None, {"pixel_values": pixel_values.float().cpu().numpy()})
        return LvRoiOutput(pred_boxes=torch.from_numpy(boxes), presence_logits=torch.from_numpy(presence))
