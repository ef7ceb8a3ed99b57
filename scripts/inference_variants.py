"""Interleaved (ABAB...) timing and parity of the inference-only variants of the bundled networks
(issue 18): eager torch as loaded, BatchNorm folded (``fused_for_inference``), channels_last, and
optionally ``torch.compile`` and onnxruntime. On a shared machine absolute times mean little: each
round runs every variant once, in a random order, and the ratio to eager torch is taken per round;
the median over rounds is reported with the load average before and after.

    python scripts/inference_variants.py --rounds 15 --batch 16 --threads 1 [--compile] [--onnx]

Inputs are crops of real ACDC test slices around their reference LV box (segmenter) and whole
slices (localiser), made by the pipeline's image processor. Parity: max |logits - eager logits|.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import halsr_hf

ACDC = Path(os.environ.get("HALSR_DATA_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "data")) / "acdc-ssl4mis"


def real_inputs(processor, count: int):
    """(crops around the reference LV box, whole-slice ROI inputs) of ``count`` ACDC test slices."""
    import h5py

    names = [line.strip() for line in (ACDC / "test.list").read_text().split() if line.strip()]
    images, boxes = [], []
    for name in names:
        with h5py.File(ACDC / "data" / f"{name}.h5", "r") as f:
            volume, label = f["image"][()], f["label"][()]
        for z in range(len(volume)):
            if (label[z] == 2).sum() < 100:  # ACDC labels: 1 RV, 2 MYO, 3 LV
                continue
            rows, cols = np.nonzero(np.isin(label[z], (2, 3)))
            images.append(volume[z].astype(np.float32))
            boxes.append([cols.min(), rows.min(), cols.max(), rows.max()])
            if len(images) == count:
                break
        if len(images) == count:
            break
    crops = processor(images, boxes=boxes)["pixel_values"]
    roi_inputs = processor.preprocess_for_roi(images)["pixel_values"]
    return crops, roi_inputs


def variants(model, which: set, compile_mode=None):
    """name -> (callable on NCHW input, input transform)."""
    fused = model.fused_for_inference()
    out = {"eager": (lambda x: model(pixel_values=x).logits, lambda x: x)}
    if "fold" in which:
        out["fold"] = (lambda x: fused(pixel_values=x).logits, lambda x: x)
    if "fold_cl" in which:
        fused_cl = model.fused_for_inference().to(memory_format=torch.channels_last)
        out["fold_cl"] = (lambda x: fused_cl(pixel_values=x).logits, lambda x: x.contiguous(memory_format=torch.channels_last))
    if "eager_cl" in which:
        eager_cl = __import__("copy").deepcopy(model).to(memory_format=torch.channels_last)
        out["eager_cl"] = (lambda x: eager_cl(pixel_values=x).logits, lambda x: x.contiguous(memory_format=torch.channels_last))
    if compile_mode is not None:  # torch.compile of the folded copy (NCHW: inductor picks its own layouts)
        compiled = torch.compile(model.fused_for_inference(), mode=compile_mode)
        out["fold_compiled"] = (lambda x: compiled(pixel_values=x).logits, lambda x: x)
    if "fold_compiled_freezing" in which:  # inductor's CPU inference setting: weights as constants, prepacked
        import torch._inductor.config as inductor_config

        frozen = torch.compile(model.fused_for_inference(), mode=compile_mode or "default")

        def run_frozen(x):
            with inductor_config.patch(freezing=True):  # compiled at the first call, inside the patch
                return frozen(pixel_values=x).logits

        out["fold_compiled_freezing"] = (run_frozen, lambda x: x)
    return out


def onnx_variant(model, size: int):
    import tempfile

    import onnxruntime as ort

    from halsr_hf.onnx_backend import export_segmentation

    folder = tempfile.mkdtemp(prefix="variants-onnx-")
    export_segmentation(model, Path(folder) / "m.onnx", size)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(Path(folder) / "m.onnx"), options, providers=["CPUExecutionProvider"])
    return (lambda x: torch.from_numpy(session.run(None, {"pixel_values": x.numpy()})[0]), lambda x: x)


def measure(name, model, x, which, rounds, compile_mode=None, onnx=False) -> dict:
    runs = variants(model, which, compile_mode)
    if onnx:
        runs["onnx"] = onnx_variant(model, x.shape[-1])
    result = {"network": name, "input": list(x.shape), "variants": list(runs)}
    with torch.inference_mode():
        reference = runs["eager"][0](x)
        warm = {}
        parity = {}
        for key, (fn, prep) in runs.items():
            start = time.perf_counter()
            got = fn(prep(x))
            warm[key] = round(time.perf_counter() - start, 3)
            fn(prep(x))
            parity[key] = float((got.float() - reference).abs().max())
        result["first_call_s"] = warm
        result["max_abs_diff_vs_eager"] = parity
        result["logit_range"] = [float(reference.min()), float(reference.max())]
        times = {key: [] for key in runs}
        load = [os.getloadavg()]
        order = list(runs)
        rng = np.random.default_rng(0)
        for _ in range(rounds):
            for key in rng.permutation(order):  # a new order every round: no variant always runs first
                fn, prep = runs[key]
                xx = prep(x)
                start = time.perf_counter()
                fn(xx)
                times[key].append(time.perf_counter() - start)
        load.append(os.getloadavg())
    base = times["eager"]
    result["median_s"] = {k: round(statistics.median(v), 4) for k, v in times.items()}
    result["min_s"] = {k: round(min(v), 4) for k, v in times.items()}
    result["median_ratio_to_eager"] = {k: round(statistics.median([t / b for t, b in zip(v, base)]), 3) for k, v in times.items()}
    result["rounds"] = rounds
    result["loadavg_before_after"] = [[round(v, 2) for v in la] for la in load]
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", default="fold,fold_cl")
    parser.add_argument("--compile", default=None, help="torch.compile mode to add (e.g. default)")
    parser.add_argument("--onnx", action="store_true")
    parser.add_argument("--networks", default="segmenter,localizer")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = halsr_hf.load_pipeline(backend="torch")
    crops, roi_inputs = real_inputs(pipe.image_processor, args.batch)
    which = set(args.variants.split(",")) if args.variants else set()
    results = {"torch": torch.__version__, "threads": args.threads, "cpu_count": os.cpu_count(),
               "note": "interleaved rounds on a shared machine: the median per-round ratio is the figure", "runs": []}
    if "segmenter" in args.networks:
        results["runs"].append(measure("segmenter (bundled HALSR-Net small)", pipe.model, crops, which, args.rounds,
                                       args.compile, args.onnx))
        print(json.dumps(results["runs"][-1]), flush=True)
    if "localizer" in args.networks:
        results["runs"].append(measure("localiser (bundled plain U-Net small)", pipe.roi_model, roi_inputs, which,
                                       args.rounds, args.compile, args.onnx))
        print(json.dumps(results["runs"][-1]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
