"""onnxruntime inference for the pipeline: the default backend on CPU when onnxruntime is installed
(``pipeline(...)``, ``backend="auto"``), or ``backend="onnx"`` / ``pipe.set_backend("onnx")``.

Both models are exported with the TorchScript-based exporter (:func:`export_segmentation`,
:func:`export_roi`) and run by onnxruntime's CPU provider with as many intra-op threads as torch
uses. The exports are cached (:func:`cached_export`): ``$HF_HOME/halsr_hf/onnx/`` (or
``$HALSR_HF_ONNX_CACHE``), one file per model named by the hash of its weights, config, input size,
opset and torch version, so only the first load of a model pays for the export; nothing is ever
written beside the model (the bundled model lives in the installed package). ``onnx_dir`` reads the
files of ``halsr-hf export-onnx`` instead. A model whose weights change after the runner was built
(in place, as a test or a fine-tune does) is exported again at its next call.

Everything else in the pipeline (reading, normalisation, crops, paste-back, measures) is shared
with the torch backend. On this project's 2-core CPU it is faster than eager torch (numbers in
``benchmarks/README.md`` and ``docs/performance.md``); outputs match torch to about 1e-5 in the
logits of the bundled models on real slices (the parity tests state the bound, 1e-3).

A box regressor without a presence head is exported with the ``pred_boxes`` output only, and the
runner returns ``presence_logits=None`` for it, as torch does (the pipeline then reads the LV as
present, probability 1).
"""

import atexit
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_file
from .errors import InputError
from .modeling_roi import LvRoiOutput
from .weight_init import weights_signature

#: ONNX opset of the exports (TorchScript-based exporter; see ``halsr-hf export-onnx``).
OPSET = 17
#: Part of the cache key: bump when the export code changes what an exported file computes.
EXPORT_VERSION = 2


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
            # no presence head: boxes only (a zero logit would read as probability 0.5, torch gives 1.0)
            return (out.pred_boxes,) if out.presence_logits is None else (out.pred_boxes, out.presence_logits)

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
    outputs = ["pred_boxes"] + (["presence_logits"] if getattr(model, "presence", None) is not None else [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, (example,), str(path), input_names=["pixel_values"], output_names=outputs,
            dynamic_axes={"pixel_values": {0: "batch"}, **{name: {0: "batch"} for name in outputs}},
            opset_version=opset, dynamo=False,
        )
    return Path(path)


def weights_hash(model, size: int | None = None, opset: int = OPSET) -> str:
    """SHA-256 of what an export of ``model`` depends on: its class, config (without names and
    versions), state dict (names, shapes, dtypes, bytes), the input size, the opset, torch's version
    and :data:`EXPORT_VERSION`. A folded copy (``fused_for_inference``) hashes differently from its
    original (its state dict differs): each is exported as what it is."""
    digest = hashlib.sha256()
    config = {k: v for k, v in model.config.to_dict().items()
              if not k.startswith("_") and k not in ("transformers_version", "name_or_path")}
    header = [EXPORT_VERSION, opset, torch.__version__, type(model).__name__, size,
              getattr(model, "is_fused_for_inference", False), json.dumps(config, sort_keys=True, default=str)]
    digest.update(json.dumps(header).encode())
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_dir() -> Path:
    """Where exports are cached: ``$HALSR_HF_ONNX_CACHE``, else ``$HF_HOME/halsr_hf/onnx``."""
    if os.environ.get("HALSR_HF_ONNX_CACHE"):
        return Path(os.environ["HALSR_HF_ONNX_CACHE"])
    home = os.environ.get("HF_HOME")
    if not home:
        from huggingface_hub import constants  # a dependency of transformers

        home = constants.HF_HOME
    return Path(home) / "halsr_hf" / "onnx"


def cached_export(model, kind: str, size: int | None = None) -> Path:
    """The ONNX file of ``model`` (``kind`` "segmentation" or "roi"), exported once per weights
    hash into :func:`cache_dir` (atomically: a concurrent process never reads half a file). When
    the cache folder cannot be written, the file is exported into a temporary folder instead."""
    key = weights_hash(model, size)
    name = f"{kind}-{key[:24]}.onnx"

    def write(path):
        if kind == "roi":
            export_roi(model, path)
        else:
            export_segmentation(model, path, size)

    path = cache_dir() / name
    if path.is_file():
        return path
    try:
        return atomic_file(path, write)
    except OSError:  # read-only HF_HOME: no cache, but still a working backend
        folder = Path(tempfile.mkdtemp(prefix="halsr-onnx-"))
        atexit.register(shutil.rmtree, folder, True)
        write(folder / name)
        return folder / name


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
    """Runs the segmentation model (``segment(pixel_values) -> logits``) and the ROI model
    (``roi(pixel_values)`` -> object with ``pred_boxes``, ``presence_logits``; ``localize(pixel_values)``
    -> logits for a localiser) with onnxruntime. The models are exported through :func:`cached_export`
    (or read from ``onnx_dir``), and exported again when their weights have changed since."""

    def __init__(self, model, roi_model=None, size: int = 128, onnx_dir=None, threads: int | None = None):
        try:
            import onnxruntime as ort  # optional package
        except ImportError as error:  # pragma: no cover
            raise InputError(f"backend='onnx' needs onnxruntime (pip install onnxruntime): {error}") from None
        self._ort = ort
        self.model, self.roi_model, self.size = model, roi_model, size
        self.options = ort.SessionOptions()
        self.options.intra_op_num_threads = threads or torch.get_num_threads()
        self.options.inter_op_num_threads = 1
        # onnxruntime's threads spin-wait between runs by default, and so do torch's OpenMP threads
        # after the pipeline's torch work (resampling, softmax, paste-back): on a 2-core machine the
        # two pools then take turns burning the cores. Measured (Intel Xeon, 2 cores, 2 threads,
        # bundled model): one slice per call 11.9 -> 23.2 slices/s (torch backend 20.1), a batch of
        # 16 and a 9-slice volume unchanged (35.1 -> 34.6 slices/s, 0.268 -> 0.258 s).
        self.options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.onnx_dir = Path(onnx_dir) if onnx_dir is not None and (Path(onnx_dir) / "segmentation.onnx").is_file() else None
        #: the ONNX files in use, and the weights signature each was exported from
        self.files, self._signatures, self.segmentation, self.roi_session = {}, {}, None, None
        self._load()

    def _session(self, path):
        return self._ort.InferenceSession(str(path), self.options, providers=["CPUExecutionProvider"])

    def _load(self, which=("segmentation", "roi")) -> None:
        """(Re)load the sessions of ``which``: from ``onnx_dir``, or exported through the cache."""
        for kind in which:
            model = self.model if kind == "segmentation" else self.roi_model
            if model is None:
                continue
            if self.onnx_dir is not None:
                path = self.onnx_dir / f"{kind}.onnx"
                if not path.is_file():
                    raise InputError(f"{self.onnx_dir}: no {kind}.onnx beside segmentation.onnx")
            else:
                path = cached_export(model, kind, self.size if kind == "segmentation" else None)
            session = self._session(path)
            self.files[kind], self._signatures[kind] = Path(path), weights_signature(model)
            if kind == "segmentation":
                self.segmentation = session
            else:
                self.roi_session = session

    def _check_current(self, kind: str) -> None:
        """Export ``kind`` again when its model's weights changed since (not the files of ``onnx_dir``)."""
        model = self.model if kind == "segmentation" else self.roi_model
        if self.onnx_dir is None and weights_signature(model) != self._signatures[kind]:
            self._load((kind,))

    def segment(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if tuple(pixel_values.shape[-2:]) != (self.size, self.size):
            raise InputError(f"backend='onnx': the exported model takes {self.size}x{self.size} crops, got {tuple(pixel_values.shape)}")
        self._check_current("segmentation")
        (logits,) = self.segmentation.run(None, {"pixel_values": pixel_values.float().cpu().numpy()})
        return torch.from_numpy(logits)

    def localize(self, pixel_values: torch.Tensor) -> torch.Tensor:
        self._check_current("roi")
        (logits,) = self.roi_session.run(None, {"pixel_values": pixel_values.float().cpu().numpy()})
        return torch.from_numpy(logits)

    def roi(self, pixel_values: torch.Tensor):
        self._check_current("roi")
        outputs = self.roi_session.run(None, {"pixel_values": pixel_values.float().cpu().numpy()})
        presence = torch.from_numpy(outputs[1]) if len(outputs) > 1 else None  # no presence head: as torch, None
        return LvRoiOutput(pred_boxes=torch.from_numpy(outputs[0]), presence_logits=presence)
