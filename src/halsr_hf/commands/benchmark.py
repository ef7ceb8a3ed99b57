"""``halsr-hf benchmark``: model cost, pipeline and training throughput, ROI ablation, in one run.

Writes ``results.json`` and ``README.md`` (markdown tables, with the machine, torch version and
thread count) into ``--out`` (default ``benchmarks``). Parts (``--parts``, default all):

1. **Model cost**: parameters, GFLOPs per slice (``torch.utils.flop_counter``), forward time per
   slice at batch 1 and 16, at 128x128 and 256x256 (median and min over repeated runs after a
   warm-up), and each network's time as a ratio to the plain U-Net of the same widths, for
   HALSR-Net ``small``/``base``/``large``, plain U-Nets (``HalsrConfig.plain_unet``: HALSR-Net with its three modules off), and an
   nnU-Net-2D-sized ``PlainConvUNet`` from nnU-Net's ``dynamic_network_architectures``.
2. **Pipeline**: the bundled model (or, while none is bundled, a randomly initialised ``small``
   model, labelled so), file in, label map and areas out: slices/s at batch 1 and 16, the latency
   of a 10-slice NIfTI volume, the bare networks' forward throughput, peak resident memory.
3. **Training throughput** (slices/s) per preset; on CUDA with bf16 autocast and channels_last.
4. **ROI ablation**: 3D Dice per volume of the bundled model with the ROI stage and on the whole
   slice, on the ACDC test split (skipped, with the reason, when the model or the data is missing).

``--quick`` runs every part on tiny sizes in well under a minute (the CI smoke test); its
timings mean nothing. Timings are medians; the machine is often shared, so the JSON also records
the load average before and after each part, and the minimum of the runs.
"""

import argparse
import datetime
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
DATA_DIR = Path(os.environ.get("HALSR_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
ACDC_DIR = DATA_DIR / "acdc-ssl4mis"

#: nnU-Net v2's default 2D plan for ACDC-like short-axis cine (ExperimentPlanner, 2d config):
#: base 32 features doubling per stage, capped at 512; as many stages as the patch allows with a
#: bottleneck edge >= 4 px: a 256x256 patch (ACDC's median in-plane size is ~256x216 px, planned
#: as 256x224) gives 7 stages (256 -> 4); 2 convs per stage in encoder and decoder, 3x3 kernels,
#: InstanceNorm (affine, eps 1e-5), LeakyReLU(0.01), conv bias; deep supervision off for timing.
NNUNET_2D = {
    "n_stages": 7,
    "features_per_stage": [32, 64, 128, 256, 512, 512, 512],
    "strides": [1, 2, 2, 2, 2, 2, 2],
    "kernel_sizes": 3,
    "n_conv_per_stage": 2,
    "n_conv_per_stage_decoder": 2,
    "norm": "InstanceNorm2d(eps=1e-5, affine=True)",
    "nonlin": "LeakyReLU(negative_slope=0.01)",
    "conv_bias": True,
    "deep_supervision": False,
}
NNUNET_QUICK = dict(NNUNET_2D, n_stages=4, features_per_stage=[4, 8, 16, 16], strides=[1, 2, 2, 2])


# -- helpers --------------------------------------------------------------------------------------


def _load() -> list:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        return []


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _sync(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_call(fn, device="cpu", warmup: int = 1, min_runs: int = 3, max_runs: int = 10, budget_s: float = 4.0) -> dict:
    """Median/min seconds of ``fn()`` over at least ``min_runs`` runs after ``warmup`` runs; more
    runs (up to ``max_runs``) while the total stays under ``budget_s``."""
    for _ in range(warmup):
        fn()
        _sync(device)
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or (len(times) < max_runs and time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "runs": len(times)}


def count_flops(model, x) -> int:
    """FLOPs (multiply-add = 2) of one forward pass, as counted by ``torch.utils.flop_counter``
    (convolutions, transposed convolutions and matmuls; element-wise ops are not counted)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


class _Logits:
    """Wrap a model so that ``forward(x)`` returns the logits tensor (for timing, FLOPs, ONNX)."""

    def __init__(self, model, halsr: bool):
        self.model, self.halsr = model, halsr

    def __call__(self, x):
        return self.model(pixel_values=x).logits if self.halsr else self.model(x)


def _plain_unet_class():
    """The plain U-Net baseline: HALSR-Net with its modules off (``HalsrConfig.plain_unet``), a
    factory ``widths -> model``."""
    from ..configuration_halsr import HalsrConfig
    from ..modeling_halsr import HalsrForSemanticSegmentation

    return (lambda sizes: HalsrForSemanticSegmentation(HalsrConfig.plain_unet(hidden_sizes=list(sizes)))), \
        "HalsrForSemanticSegmentation(HalsrConfig.plain_unet(...))"


def build_nnunet(plan: dict, num_classes: int = 3):
    """nnU-Net's ``PlainConvUNet`` (dynamic_network_architectures) with the given 2D plan."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from torch import nn

    return PlainConvUNet(
        input_channels=1, n_stages=plan["n_stages"], features_per_stage=plan["features_per_stage"], conv_op=nn.Conv2d,
        kernel_sizes=plan["kernel_sizes"], strides=plan["strides"], n_conv_per_stage=plan["n_conv_per_stage"],
        num_classes=num_classes, n_conv_per_stage_decoder=plan["n_conv_per_stage_decoder"], conv_bias=plan["conv_bias"],
        norm_op=nn.InstanceNorm2d, norm_op_kwargs={"eps": 1e-5, "affine": True}, dropout_op=None,
        nonlin=nn.LeakyReLU, nonlin_kwargs={"negative_slope": 0.01, "inplace": True},
        deep_supervision=plan["deep_supervision"],
    )


def _networks(quick: bool) -> list:
    """(name, kind, description, factory returning (module, is_halsr)) for part 1 and 3."""
    from ..configuration_halsr import PRESETS, HalsrConfig
    from ..modeling_halsr import HalsrForSemanticSegmentation

    presets = ["tiny"] if quick else ["small", "base", "large"]
    unet_cls, unet_source = _plain_unet_class()
    nets = []
    for preset in presets:
        sizes = PRESETS[preset]["hidden_sizes"]
        nets.append((f"halsr-{preset}", "halsr", f"HALSR-Net preset {preset}, hidden_sizes {sizes}",
                     lambda p=preset: (HalsrForSemanticSegmentation(HalsrConfig.from_preset(p)), True), f"unet-{preset}"))
    if unet_cls is not None:
        for preset in presets:
            sizes = PRESETS[preset]["hidden_sizes"]
            nets.append((f"unet-{preset}", "unet", f"plain U-Net, widths {sizes} ({unet_source})",
                         lambda s=sizes: (unet_cls(s), True), f"unet-{preset}"))
        if not quick:
            sizes = [40, 80, 160, 320, 560]
            nets.append(("unet-10M", "unet", f"plain U-Net, widths {sizes}: parameter count close to HALSR-Net base",
                         lambda s=sizes: (unet_cls(s), True), "unet-10M"))
    nets.append(("nnunet-2d", "nnunet", "nnU-Net 2D PlainConvUNet (dynamic_network_architectures), see nnunet_plan",
                 lambda: (build_nnunet(NNUNET_QUICK if quick else NNUNET_2D), False), "unet-base" if not quick else "unet-tiny"))
    return nets, unet_source


# -- part 1 ---------------------------------------------------------------------------------------


def part_model_cost(device, quick: bool) -> dict:
    import torch

    sizes = [64] if quick else [128, 256]
    batches = [1, 2] if quick else [1, 16]
    timing = dict(warmup=1, min_runs=2, max_runs=2, budget_s=0.0) if quick else dict(warmup=1, min_runs=3, max_runs=10, budget_s=4.0)
    nets, unet_source = _networks(quick)
    rows, skipped = [], {}
    for name, kind, description, factory, reference in nets:
        try:
            model, halsr = factory()
        except ImportError as error:
            skipped[name] = f"cannot build: {error} (pip install --no-deps dynamic_network_architectures)"
            continue
        model = model.to(device).eval()
        call = _Logits(model, halsr)
        row = {"name": name, "kind": kind, "description": description, "reference": reference,
               "parameters": sum(p.numel() for p in model.parameters()), "gflops_per_slice": {}, "forward_ms_per_slice": {}}
        with torch.inference_mode():
            for size in sizes:
                x1 = torch.randn(1, 1, size, size, device=device)
                row["gflops_per_slice"][f"{size}x{size}"] = round(count_flops(call, x1) / 1e9, 3)
                for batch in batches:
                    x = torch.randn(batch, 1, size, size, device=device)
                    t = time_call(lambda: call(x), device, **timing)
                    row["forward_ms_per_slice"][f"{size}x{size}/b{batch}"] = {
                        "median": round(1000 * t["median_s"] / batch, 3), "min": round(1000 * t["min_s"] / batch, 3), "runs": t["runs"]}
        rows.append(row)
        del model, call
    by_name = {r["name"]: r for r in rows}
    for row in rows:
        ref = by_name.get(row["reference"])
        row["ratio_to_reference"] = {
            key: round(value["median"] / ref["forward_ms_per_slice"][key]["median"], 3)
            for key, value in row["forward_ms_per_slice"].items()} if ref is not None else None
    targets = {}
    if not quick and {"halsr-base", "unet-10M", "unet-base", "nnunet-2d"} <= by_name.keys():
        key = "256x256/b16"
        base = by_name["halsr-base"]["forward_ms_per_slice"][key]["median"]
        targets = {
            "setting": key,
            "halsr_base_over_unet_10M": round(base / by_name["unet-10M"]["forward_ms_per_slice"][key]["median"], 3),
            "halsr_base_over_unet_base": round(base / by_name["unet-base"]["forward_ms_per_slice"][key]["median"], 3),
            "halsr_base_over_nnunet_2d": round(base / by_name["nnunet-2d"]["forward_ms_per_slice"][key]["median"], 3),
            "target": "halsr_base_over_unet_10M <= 1.3 and halsr_base_over_nnunet_2d <= 0.5",
        }
        targets["met"] = targets["halsr_base_over_unet_10M"] <= 1.3 and targets["halsr_base_over_nnunet_2d"] <= 0.5
    return {"settings": {"sizes": sizes, "batches": batches, "timing": timing, "mode": "eval, torch.inference_mode, float32, NCHW",
                         "plain_unet": unet_source}, "nnunet_plan": NNUNET_QUICK if quick else NNUNET_2D,
            "networks": rows, "skipped": skipped, "targets": targets}


# -- inputs for parts 2 and 4 --------------------------------------------------------------------------


def _test_volumes(limit: int | None = None) -> list:
    names = (ACDC_DIR / "test.list").read_text().split() if (ACDC_DIR / "test.list").is_file() else []
    return names[:limit] if limit else names


def _sample_slices(count: int, quick: bool):
    """(slices, source): ``count`` real ACDC test slices (float [0, 1], ~256x216) or synthetic ones."""
    import numpy as np

    slices = []
    if (ACDC_DIR / "data").is_dir():
        import h5py

        for name in _test_volumes():
            with h5py.File(ACDC_DIR / "data" / f"{name}.h5", "r") as f:
                slices.extend(f["image"][()].astype(np.float32))
            if len(slices) >= count:
                return slices[:count], "ACDC test split slices"
    rng = np.random.default_rng(0)
    side = 64 if quick else 224
    yy, xx = np.mgrid[:side, : side - 16]
    synthetic = []
    for i in range(count):
        r = np.hypot(yy - side / 2 - i % 5, xx - side / 2 + 8)
        image = np.where(r < side / 8, 0.9, np.where(r < side / 6, 0.3, 0.5)) + rng.normal(0, 0.05, r.shape)
        synthetic.append(image.astype(np.float32))
    return synthetic, "synthetic slices (ACDC data not found)"


def _random_pipeline(quick: bool):
    import torch

    from ..configuration_halsr import HalsrConfig
    from ..configuration_roi import LvRoiConfig
    from ..image_processing_halsr import HalsrImageProcessor
    from ..modeling_halsr import HalsrForSemanticSegmentation
    from ..modeling_roi import LvRoiRegressor
    from ..pipeline_halsr import CardiacLVSegmentationPipeline

    torch.manual_seed(0)
    if quick:
        model = HalsrForSemanticSegmentation(HalsrConfig.from_preset("tiny", image_size=64))
        roi = LvRoiRegressor(LvRoiConfig(image_size=64, encoder_sizes=[4, 8, 8, 16], fc_sizes=[16, 32],
                                         reduce_sizes=[16, 16, 8], global_channels=16, head_sizes=[8, 8]))
        processor = HalsrImageProcessor(size=64, roi_size=64)
    else:
        model = HalsrForSemanticSegmentation(HalsrConfig.from_preset("small"))
        roi = LvRoiRegressor(LvRoiConfig())
        processor = HalsrImageProcessor()
    with torch.no_grad():  # a central box with the LV present, so that every slice is segmented
        roi.box.weight.zero_()
        roi.box.bias.copy_(torch.tensor([-0.6, -0.6, 0.6, 0.6]))
        if roi.presence is not None:
            roi.presence.weight.zero_()
            roi.presence.bias.fill_(5.0)
    return CardiacLVSegmentationPipeline(model=model.eval(), image_processor=processor, roi_model=roi.eval())


def _bundled_pipeline(device, backend=None):
    from .. import default_model_dir, load_pipeline

    folder = default_model_dir()  # FileNotFoundError when none is bundled
    kwargs = {"backend": backend} if backend else {}
    return load_pipeline(str(folder), device=device, **kwargs), str(folder)


# -- part 2 ---------------------------------------------------------------------------------------


def part_pipeline(device, quick: bool, backends=("torch",)) -> dict:
    import nibabel as nib
    import numpy as np
    import torch
    from PIL import Image

    rss_before = _peak_rss_mb()
    try:
        if quick:
            raise FileNotFoundError("--quick uses a tiny random model")
        pipe, model_source = _bundled_pipeline(device)
        model_label = f"bundled model ({model_source})"
    except FileNotFoundError as error:
        pipe = _random_pipeline(quick)
        model_label = ("randomly initialised tiny model (--quick)" if quick else
                       f"randomly initialised HALSR-Net small + default ROI regressor: {error}")
    slices, source = _sample_slices(16, quick)
    timing = dict(warmup=1, min_runs=2, max_runs=2, budget_s=0.0) if quick else dict(warmup=1, min_runs=3, max_runs=10, budget_s=8.0)
    result = {"model": model_label, "slices": source, "slice_shape": list(slices[0].shape), "device": str(device)}
    with tempfile.TemporaryDirectory(prefix="halsr-bench-") as tmp:
        pngs = []
        for i, image in enumerate(slices):
            path = Path(tmp) / f"slice{i:02d}.png"
            Image.fromarray((np.clip(image, 0, 1) * 65535).astype(np.uint16)).save(path)
            pngs.append(str(path))
        volume = np.stack(slices[:10], axis=-1).transpose(1, 0, 2)  # (X, Y, Z): slices are data[:, :, k].T
        nifti = Path(tmp) / "volume10.nii.gz"
        affine = np.diag([1.5625, 1.5625, 10.0, 1.0])
        nib.save(nib.Nifti1Image(volume.astype(np.float32), affine), str(nifti))
        result["inputs"] = ("batch: 16 single-slice 16-bit PNG files, one pipeline call with batch_size=16; "
                            "batch 1: one PNG per call, batch_size=1; volume: a 10-slice NIfTI (1.5625x1.5625x10 mm)")
        t16 = time_call(lambda: pipe(pngs, batch_size=16), device, **timing)
        t1 = time_call(lambda: pipe(pngs[0], batch_size=1), device, **dict(timing, max_runs=max(timing["max_runs"], 10)))
        tv = time_call(lambda: pipe(str(nifti), batch_size=16), device, **timing)
        out = pipe(str(nifti))
        assert out["label_map"].shape == (10,) + slices[0].shape and out["volumes_ml"] is not None
        result["slices_per_s_batch16"] = round(16 / t16["median_s"], 2)
        result["slices_per_s_batch1"] = round(1 / t1["median_s"], 2)
        result["volume10_latency_s"] = round(tv["median_s"], 4)
        result["raw"] = {"batch16": t16, "batch1": t1, "volume10": tv}
        # the bare networks at the crop / ROI sizes, same batch size
        crop = pipe.image_processor.size
        x16 = torch.randn(16, 1, crop, crop, device=device)
        r16 = torch.randn(16, 1, pipe.image_processor.roi_size, pipe.image_processor.roi_size, device=device)
        with torch.inference_mode():
            seg = time_call(lambda: pipe.model(pixel_values=x16), device, **timing)
            roi = time_call(lambda: pipe.roi_model(r16), device, **timing) if pipe.roi_model is not None else None
        result["segmentation_forward_slices_per_s_batch16"] = round(16 / seg["median_s"], 2)
        if roi is not None:
            result["roi_forward_slices_per_s_batch16"] = round(16 / roi["median_s"], 2)
            result["networks_only_slices_per_s_batch16"] = round(16 / (seg["median_s"] + roi["median_s"]), 2)
        result["pipeline_over_segmentation_forward"] = round(result["slices_per_s_batch16"] / result["segmentation_forward_slices_per_s_batch16"], 3)
        result["targets"] = {
            "slices_per_s_batch16>=30": result["slices_per_s_batch16"] >= 30,
            "pipeline_over_segmentation_forward>=0.7": result["pipeline_over_segmentation_forward"] >= 0.7,
            "volume10_latency_s<0.5": result["volume10_latency_s"] < 0.5,
        }
        result["peak_rss_mb"] = _peak_rss_mb()
        result["peak_rss_mb_before_pipeline"] = rss_before
        result["backends"] = {}
        for backend in backends:
            if backend == "torch":
                continue
            try:
                t0 = time.perf_counter()
                pipe.set_backend(backend)
                setup = time.perf_counter() - t0
                b16 = time_call(lambda: pipe(pngs, batch_size=16), device, **timing)
                b1 = time_call(lambda: pipe(pngs[0], batch_size=1), device, **dict(timing, max_runs=max(timing["max_runs"], 10)))
                bv = time_call(lambda: pipe(str(nifti), batch_size=16), device, **timing)
                result["backends"][backend] = {"slices_per_s_batch16": round(16 / b16["median_s"], 2),
                                               "slices_per_s_batch1": round(1 / b1["median_s"], 2),
                                               "volume10_latency_s": round(bv["median_s"], 4), "setup_s": round(setup, 2)}
            except Exception as error:  # noqa: BLE001 -- recorded, the benchmark goes on
                result["backends"][backend] = {"skipped": f"{type(error).__name__}: {error}"}
            finally:
                pipe.set_backend("torch")
    return result


# -- part 3 ---------------------------------------------------------------------------------------


def part_training(device, quick: bool) -> dict:
    import torch

    cuda = str(device).startswith("cuda")
    batch, size = (2, 64) if quick else (16, 128)
    nets, _ = _networks(quick)
    nets = [n for n in nets if n[1] != "nnunet" and n[0] != "unet-10M"]
    rows = []
    for name, kind, description, factory, _ in nets:
        torch.manual_seed(0)
        model, halsr = factory()
        model = model.to(device).train()
        if cuda:
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x = torch.randn(batch, 1, size, size, device=device)
        labels = torch.randint(0, 3, (batch, size, size), device=device)
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                loss = model(pixel_values=x, labels=labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        if quick:
            timing = dict(warmup=1, min_runs=2, max_runs=2, budget_s=0.0)
        elif cuda:
            timing = dict(warmup=5, min_runs=20, max_runs=50, budget_s=5.0)
        else:
            timing = dict(warmup=1, min_runs=2, max_runs=6, budget_s=12.0)
        t = time_call(step, device, **timing)
        rows.append({"name": name, "kind": kind, "parameters": sum(p.numel() for p in model.parameters()),
                     "slices_per_s": round(batch / t["median_s"], 2), "step_s_median": round(t["median_s"], 4), "steps": t["runs"]})
        del model, optimizer
    by_name = {r["name"]: r for r in rows}
    for row in rows:
        ref = by_name.get("unet-" + row["name"].split("-", 1)[1]) if row["kind"] == "halsr" else None
        row["step_time_ratio_to_unet_same_widths"] = round(row["step_s_median"] / ref["step_s_median"], 3) if ref else None
    settings = {"batch": batch, "size": size, "optimizer": "AdamW", "loss": "BCE + Dice (eq. 8) for both",
                "precision": "bf16 autocast, channels_last" if cuda else "float32, NCHW", "data": "random tensors (compute only)"}
    if cuda:
        settings["gpu"] = torch.cuda.get_device_name(0)
    return {"settings": settings, "networks": rows}


# -- part 4 ---------------------------------------------------------------------------------------


def part_roi_ablation(device, quick: bool) -> dict:
    import numpy as np

    try:
        pipe, model_source = _bundled_pipeline(device)
    except FileNotFoundError as error:
        return {"skipped": f"no bundled model yet: {error}"}
    names = _test_volumes(2 if quick else None)
    if not names:
        return {"skipped": f"ACDC test split not found at {ACDC_DIR}"}
    if pipe.roi_model is None:
        return {"skipped": f"the bundled model ({model_source}) has no ROI regressor"}
    import h5py

    from ..metrics import segmentation_metrics

    mapping = np.array([0, 0, 2, 1], dtype=np.uint8)  # ACDC 1 RV 2 MYO 3 LV -> 0 bg, 1 lv_cavity, 2 myocardium
    per_volume = []
    for name in names:
        with h5py.File(ACDC_DIR / "data" / f"{name}.h5", "r") as f:
            image, label = f["image"][()].astype(np.float32), mapping[f["label"][()]]
        row = {"volume": name}
        for mode, use_roi in (("with_roi", True), ("whole_slice", False)):
            prediction = pipe(image, use_roi=use_roi)["label_map"]
            scores = segmentation_metrics(prediction, label, labels={1: "lv_cavity", 2: "myocardium"})
            row[mode] = {"dice_lv_cavity": scores["dice_lv_cavity"], "dice_myocardium": scores["dice_myocardium"]}
        per_volume.append(row)
    summary = {}
    for mode in ("with_roi", "whole_slice"):
        for key in ("dice_lv_cavity", "dice_myocardium"):
            values = [r[mode][key] for r in per_volume]
            summary[f"{mode}/{key}"] = {"mean": round(float(np.nanmean(values)), 4), "std": round(float(np.nanstd(values)), 4)}
    return {"model": model_source, "split": f"ACDC test ({len(names)} volumes)", "metric": "3D Dice per volume (halsr_hf.metrics)",
            "summary": summary, "per_volume": per_volume}


# -- report ---------------------------------------------------------------------------------------


def _fmt(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def render_markdown(results: dict, gpu: dict | None = None) -> str:
    meta = results["meta"]
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `{meta['command']}` on {meta['date']} (commit {meta.get('git_commit')}), in one process, "
        f"total {meta.get('total_s', 0):.0f} s{' (quick mode: tiny sizes, timings meaningless)' if meta['quick'] else ''}.",
        "",
        f"- Machine: {meta['cpu']}, {meta['cpu_count']} cores, {meta['platform']}; device `{meta['device']}`",
        f"- torch {meta['torch']}, transformers {meta['transformers']}, python {meta['python']}; "
        f"`torch.set_num_threads({meta['threads']})`",
        f"- Load average (1/5/15 min) at start {meta['load_start']}, at end {meta['load_end']} "
        "(the machine is shared with other jobs; medians are over repeated runs after warm-up, minimums are in results.json)",
        "",
    ]
    cost = results.get("model_cost")
    if cost:
        lines += ["## 1. Model cost", "",
                  f"Forward pass, {cost['settings']['mode']}; time per slice in ms (median). Ratio = time / time of the "
                  "reference network (the plain U-Net of the same widths; nnU-Net against `unet-base`; quick mode: `unet-tiny`).", ""]
        keys = list(cost["networks"][0]["forward_ms_per_slice"]) if cost["networks"] else []
        sizes = list(cost["networks"][0]["gflops_per_slice"]) if cost["networks"] else []
        header = ["network", "params (M)"] + [f"GFLOPs {s}" for s in sizes] + [f"ms/slice {k}" for k in keys] + [f"ratio {k}" for k in keys]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in cost["networks"]:
            ratios = row["ratio_to_reference"] or {}
            cells = [f"`{row['name']}`", f"{row['parameters'] / 1e6:.2f}"] + [_fmt(row["gflops_per_slice"][s]) for s in sizes]
            cells += [_fmt(row["forward_ms_per_slice"][k]["median"], 1) for k in keys]
            cells += [f"{_fmt(ratios.get(k))} ({row['reference']})" if ratios else "-" for k in keys]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        for row in cost["networks"]:
            lines.append(f"- `{row['name']}`: {row['description']}")
        plan = cost["nnunet_plan"]
        lines += ["", f"nnU-Net 2D plan used: {plan['n_stages']} stages, features {plan['features_per_stage']}, strides "
                  f"{plan['strides']}, {plan['n_conv_per_stage']} convs per stage (decoder {plan['n_conv_per_stage_decoder']}), "
                  f"3x3 kernels, {plan['norm']}, {plan['nonlin']}, deep supervision off.", ""]
        for name, reason in cost.get("skipped", {}).items():
            lines.append(f"- skipped `{name}`: {reason}")
        if cost.get("targets"):
            t = cost["targets"]
            lines += [f"Targets at {t['setting']}: HALSR-Net base / plain U-Net with ~10M parameters = "
                      f"**{t['halsr_base_over_unet_10M']}** (target <= 1.3; / U-Net of the same widths "
                      f"{t['halsr_base_over_unet_base']}), HALSR-Net base / nnU-Net 2D = **{t['halsr_base_over_nnunet_2d']}** "
                      f"(target <= 0.5): {'met' if t['met'] else 'NOT met'}.", ""]
    pipe = results.get("pipeline")
    if pipe:
        lines += ["## 2. End-to-end pipeline", "", f"Model: {pipe['model']}. Inputs: {pipe['slices']} "
                  f"({pipe['slice_shape'][0]}x{pipe['slice_shape'][1]}); {pipe['inputs']}.", "",
                  "| measure | value | target |", "|---|---|---|",
                  f"| slices/s, batch 16 (files in, label maps and areas out) | {pipe['slices_per_s_batch16']} | >= 30 |",
                  f"| slices/s, batch 1 | {pipe['slices_per_s_batch1']} | |",
                  f"| 10-slice volume latency (s) | {pipe['volume10_latency_s']} | < 0.5 |",
                  f"| segmentation network alone, slices/s at batch 16 | {pipe['segmentation_forward_slices_per_s_batch16']} | |",
                  f"| ROI network alone, slices/s at batch 16 | {pipe.get('roi_forward_slices_per_s_batch16', '-')} | |",
                  f"| both networks alone, slices/s at batch 16 | {pipe.get('networks_only_slices_per_s_batch16', '-')} | |",
                  f"| pipeline / segmentation forward throughput | {pipe['pipeline_over_segmentation_forward']} | >= 0.7 |",
                  f"| peak resident memory of the process (MB) | {pipe['peak_rss_mb']} (before loading: {pipe['peak_rss_mb_before_pipeline']}) | |",
                  ""]
        for backend, values in pipe.get("backends", {}).items():
            lines.append(f"- backend `{backend}`: {values}")
        lines.append("")
    for label, train in (("CPU" if not str(results["meta"]["device"]).startswith("cuda") else "GPU", results.get("training")),
                         ("GPU", (gpu or {}).get("training"))):
        if not train:
            continue
        s = train["settings"]
        lines += [f"## 3. Training throughput ({label}{', ' + s['gpu'] if s.get('gpu') else ''})", "",
                  f"Batch {s['batch']}, {s['size']}x{s['size']}, {s['optimizer']}, {s['precision']}, {s['data']}."
                  + (f" From `{gpu['meta']['command']}` on {gpu['meta']['date']}, torch {gpu['meta']['torch']}."
                     + (f" Note: {gpu['meta']['note']}" if gpu["meta"].get("note") else "")
                     if train is (gpu or {}).get("training") else ""), "",
                  "| network | params (M) | slices/s | step time / plain U-Net of the same widths |", "|---|---|---|---|"]
        for row in train["networks"]:
            lines.append(f"| `{row['name']}` | {row['parameters'] / 1e6:.2f} | {row['slices_per_s']} | "
                         f"{_fmt(row['step_time_ratio_to_unet_same_widths'])} |")
        lines.append("")
    roi = results.get("roi_ablation")
    if roi:
        lines += ["## 4. With and without the ROI stage", ""]
        if "skipped" in roi:
            lines += [f"Skipped: {roi['skipped']}", ""]
        else:
            lines += [f"{roi['model']}, {roi['split']}, {roi['metric']}: mean (std).", "",
                      "| mode | Dice LV cavity | Dice myocardium |", "|---|---|---|"]
            for mode, text in (("with_roi", "ROI stage + crop"), ("whole_slice", "whole slice, no ROI")):
                s = roi["summary"]
                lines.append(f"| {text} | {s[f'{mode}/dice_lv_cavity']['mean']:.4f} ({s[f'{mode}/dice_lv_cavity']['std']:.4f}) | "
                             f"{s[f'{mode}/dice_myocardium']['mean']:.4f} ({s[f'{mode}/dice_myocardium']['std']:.4f}) |")
            lines.append("")
    lines += ["Regenerate: `halsr-hf benchmark --out benchmarks` (or `python scripts/benchmark.py --out benchmarks`). "
              "A GPU run (`--device cuda --parts 3 --out DIR`) saved as `benchmarks/results_cuda.json` is added as its own section.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="halsr-hf benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test (under a minute); timings meaningless")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--out", default="benchmarks", help="folder for results.json and README.md (default benchmarks)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the machine's cores)")
    parser.add_argument("--parts", default="1,2,3,4", help="comma-separated parts to run (default 1,2,3,4)")
    parser.add_argument("--backends", default="torch,onnx", help="pipeline backends to time in part 2 (default torch,onnx)")
    parser.add_argument("--render-only", action="store_true",
                        help="only rewrite README.md from the results.json (and results_cuda.json) already in --out")
    parser.add_argument("--json-name", default=None, help="results file name (default results.json, results_cuda.json on cuda)")
    args = parser.parse_args(argv)
    import torch
    import transformers

    from ..errors import InputError

    if args.render_only:
        out = Path(args.out)
        if not (out / "results.json").is_file():
            raise InputError(f"--render-only: no results.json in {out}")
        results = json.loads((out / "results.json").read_text())
        gpu = json.loads((out / "results_cuda.json").read_text()) if (out / "results_cuda.json").is_file() else None
        (out / "README.md").write_text(render_markdown(results, gpu))
        return 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available")
    parts = {int(p) for p in args.parts.split(",") if p.strip()}
    if not parts <= {1, 2, 3, 4}:
        raise InputError(f"--parts: expected numbers among 1,2,3,4, got {args.parts!r}")
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    meta = {
        "command": "halsr-hf benchmark " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "git_commit": _git_commit(), "quick": args.quick,
        "cpu": _cpu_name(), "cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "transformers": transformers.__version__, "threads": torch.get_num_threads(),
        "device": args.device + (f" ({torch.cuda.get_device_name(0)})" if args.device.startswith("cuda") else ""),
        "load_start": _load(),
    }
    results = {"meta": meta}
    device = torch.device(args.device)
    # order: the pipeline first, so that its peak memory is not the large models' of part 1
    steps = [(2, "pipeline", lambda: part_pipeline(device, args.quick, tuple(args.backends.split(",")))),
             (4, "roi_ablation", lambda: part_roi_ablation(device, args.quick)),
             (3, "training", lambda: part_training(device, args.quick)),
             (1, "model_cost", lambda: part_model_cost(device, args.quick))]
    for number, key, run in steps:
        if number not in parts:
            continue
        t0, load0 = time.perf_counter(), _load()
        print(f"[benchmark] part {number}: {key} ...", file=sys.stderr, flush=True)
        results[key] = run()
        results[key]["elapsed_s"] = round(time.perf_counter() - t0, 1)
        results[key]["load"] = {"start": load0, "end": _load()}
    meta["load_end"] = _load()
    meta["total_s"] = round(time.perf_counter() - started, 1)
    ordered = {"meta": meta, **{k: results[k] for k in ("model_cost", "pipeline", "training", "roi_ablation") if k in results}}
    json_name = args.json_name or ("results_cuda.json" if args.device.startswith("cuda") else "results.json")
    (out / json_name).write_text(json.dumps(ordered, indent=2, default=float) + "\n")
    gpu = None
    if not args.device.startswith("cuda") and (out / "results_cuda.json").is_file():
        gpu = json.loads((out / "results_cuda.json").read_text())
    (out / ("README.md" if json_name == "results.json" else Path(json_name).stem + ".md")).write_text(render_markdown(ordered, gpu))
    print(f"[benchmark] wrote {out / json_name} in {meta['total_s']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
