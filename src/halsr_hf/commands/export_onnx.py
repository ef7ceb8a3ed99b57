"""``halsr-hf export-onnx --model M --out DIR``: the segmentation and ROI models as ONNX.

Writes ``DIR/segmentation.onnx`` (input ``pixel_values`` (batch, 1, S, S), output ``logits``
(batch, num_labels, S, S), S = the image processor's crop ``size``, 128 by default: the pipeline
always feeds that size; batch is a dynamic axis), ``DIR/roi.onnx``
(input ``pixel_values`` (batch, 1, S, S) with S the ROI model's fixed ``image_size``, batch
dynamic; outputs ``pred_boxes`` (batch, 4) and, when the regressor has a presence head,
``presence_logits`` (batch,); a localiser's output is ``logits`` like the segmentation model's), the configs and the
image processor (so that ``DIR`` is also a ``from_pretrained`` folder for the processor), and
``DIR/onnx_export.json`` (opset, torch version, the max abs difference between onnxruntime and
torch measured at export).

Opset: :data:`OPSET` (17), exported with the TorchScript-based exporter (``dynamo=False``; the
dynamo exporter needs ``onnxscript``, not a dependency here). Spatial axes are static: that
exporter cannot export ``adaptive_avg_pool2d`` to 2x2 / 4x4 grids (HAPM's SPP branch) when the
input size is unknown ("input size not accessible"), so height and width are fixed at export
(``--size``); the batch axis is dynamic.
"""

import argparse
import json
import sys
import warnings
from pathlib import Path

from ..atomic import atomic_folder, check_output_folder

#: Names of :mod:`halsr_hf.onnx_backend` this module offers; imported on first use (torch), so that
#: ``halsr-hf export-onnx --help`` answers at once.
_BACKEND_NAMES = ("OPSET", "_wrappers", "export_roi", "export_segmentation", "is_localizer", "parity")


def __getattr__(name):
    if name in _BACKEND_NAMES:
        from .. import onnx_backend

        return getattr(onnx_backend, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def export_pipeline_models(model, roi_model, out, image_processor=None, opset: int | None = None, check: bool = True,
                           size: int | None = None) -> dict:
    """Export both models into ``out``; returns (and writes as ``onnx_export.json``) the summary.
    ``opset``: default :data:`halsr_hf.onnx_backend.OPSET`."""
    import torch

    from ..onnx_backend import OPSET, _wrappers, export_roi, export_segmentation, is_localizer, parity

    opset = OPSET if opset is None else opset

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if size is None:
        size = image_processor.crop_size if image_processor is not None else int(getattr(model.config, "image_size", 128))
    summary = {"opset": opset, "torch": torch.__version__, "exporter": "torch.onnx.export(dynamo=False)", "files": {}}
    seg_path = export_segmentation(model, out / "segmentation.onnx", size, opset)
    summary["files"]["segmentation"] = {"path": seg_path.name, "inputs": f"pixel_values (batch, 1, {size}, {size}), batch dynamic",
                                        "outputs": f"logits (batch, num_labels, {size}, {size})", "size": size}
    model.config.save_pretrained(out / "segmentation_config")
    if image_processor is not None:
        image_processor.save_pretrained(out)
    generator = torch.Generator().manual_seed(0)
    if check:
        SegmentationLogits, RoiOutputs = _wrappers()
        inputs = [torch.randn(b, 1, h, w, generator=generator) for b, h, w in ((1, size, size), (5, size, size))]
        summary["files"]["segmentation"]["max_abs_diff_vs_torch"] = parity(seg_path, SegmentationLogits(model.eval()), inputs)
    if roi_model is not None:
        roi_path = export_roi(roi_model, out / "roi.onnx", opset)
        roi_size = roi_model.config.image_size
        localizer = is_localizer(roi_model)
        summary["files"]["roi"] = {"path": roi_path.name, "inputs": f"pixel_values (batch, 1, {roi_size}, {roi_size}), batch dynamic",
                                   "outputs": "logits (batch, 2, size, size): the localiser's background/lv" if localizer
                                   else "pred_boxes (batch, 4)" + (", presence_logits (batch,)"
                                                                   if getattr(roi_model, "presence", None) is not None else "")}
        roi_model.config.save_pretrained(out / "roi_config")
        if check:
            inputs = [torch.randn(b, 1, roi_size, roi_size, generator=generator) for b in (1, 4)]
            wrapper = SegmentationLogits(roi_model.eval()) if localizer else RoiOutputs(roi_model.eval())
            summary["files"]["roi"]["max_abs_diff_vs_torch"] = parity(roi_path, wrapper, inputs)
    (out / "onnx_export.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv=None) -> int:
    from ..cli import MODEL_HELP, VERBOSE_HELP, description

    parser = argparse.ArgumentParser(prog="halsr-hf export-onnx", description=description(__doc__), epilog=VERBOSE_HELP)
    parser.add_argument("--model", default=None, help=MODEL_HELP)
    parser.add_argument("--roi-model", default=None, help="ROI model folder (default: the model's roi/ sub-folder)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: halsr_hf.onnx_backend.OPSET)")
    parser.add_argument("--size", type=int, default=None, help="segmentation input side (default: the image processor's size)")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime-vs-torch parity check")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    args = parser.parse_args(argv)
    check_output_folder(args.out, args.overwrite, "--out")
    from .. import load_pipeline
    from ..errors import InputError

    try:
        pipe = load_pipeline(args.model, roi_model=args.roi_model, backend="torch")  # no cached export needed here
    except FileNotFoundError as error:
        raise InputError(str(error)) from None
    except OSError as error:
        raise InputError(f"--model {args.model}: cannot load a model there ({error})") from None
    with atomic_folder(args.out) as staged:  # written beside --out, renamed into place when complete
        summary = export_pipeline_models(pipe.model, pipe.roi_model, staged, pipe.image_processor, args.opset,
                                         not args.no_check, args.size)
    for name, info in summary["files"].items():
        diff = info.get("max_abs_diff_vs_torch")
        print(f"{name}: {Path(args.out) / info['path']}" + ("" if diff is None else f" (max abs diff vs torch {diff:.2e})"))
    if "roi" not in summary["files"]:
        print("no ROI model found: only the segmentation model was exported", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
