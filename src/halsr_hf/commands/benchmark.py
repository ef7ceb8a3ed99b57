"""``halsr-hf benchmark``: model cost, pipeline throughput and training throughput, in one run.

Writes ``results.json`` (the measurements) and ``README.md`` (rendered from them by
:mod:`.benchmark_report`, judged against ``targets.json`` when the output folder has one) into
``--out`` (default ``benchmarks``). Parts (``--parts``, default all):

1. **Model cost**: parameters, GFLOPs per slice (``torch.utils.flop_counter``), forward time per
   slice at batch 1 and 16, at 128x128 and 256x256 (median and min over repeated runs after a
   warm-up), and each network's time as a ratio to its reference network, for HALSR-Net
   ``small``/``base``/``large``, plain U-Nets (``HalsrConfig.plain_unet``: HALSR-Net with its three
   modules off) of the same widths and of about 10M parameters, and an nnU-Net-2D-sized
   ``PlainConvUNet`` from nnU-Net's ``dynamic_network_architectures`` (optional package).
2. **Pipeline**: the bundled model (or, while none is bundled, a randomly initialised ``small``
   model, labelled so), file in, label map and areas out: slices/s at batch 1 and 16, the latency
   of a 10-slice NIfTI volume with the default backend (``pipe.backend``: onnxruntime on CPU when
   installed), the bare networks' forward throughput (eager torch), peak resident memory, and the
   same with the other backends (``--backends``).
3. **Training throughput** (slices/s) per preset, the bare step (forward, loss, backward, AdamW on
   random tensors), channels_last as ``halsr-hf train`` runs it (on CUDA with bf16 autocast); and,
   beside it, the **default model's real training configuration**: HALSR-Net ``small`` on real ACDC
   training slices through ``HalsrCropDataset`` with the default augmentation, the training
   collator and a ``DataLoader`` (no workers, as the CPU trainings run), data loading included,
   with the share of the step spent waiting for data.

Segmentation quality with and without the ROI stage is ``halsr-hf evaluate`` (``--no-roi``), not a
benchmark. ``--quick`` runs every part on tiny sizes in well under a minute (the CI smoke test);
its timings mean nothing. The machine is often shared: the JSON records the load average before
and after each part and the minimum of the runs beside the median.
"""

import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, NamedTuple

import h5py
import nibabel as nib
import numpy as np
import torch
import transformers
from PIL import Image
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .. import default_model_dir, load_pipeline
from ..configuration_halsr import PRESETS, HalsrConfig
from ..configuration_roi import LvRoiConfig
from ..errors import InputError
from ..image_processing_halsr import HalsrImageProcessor
from ..modeling_halsr import HalsrForSemanticSegmentation
from ..modeling_roi import LvRoiRegressor
from ..pipeline_halsr import CardiacLVSegmentationPipeline
from .benchmark_cli import build_parser
from .benchmark_report import render_markdown

#: Real data: $HALSR_DATA_DIR, else ../shared/data beside the folder the command runs in (a
#: checkout); never a path derived from where the package is installed.
DATA_DIR = Path(os.environ.get("HALSR_DATA_DIR", Path.cwd().parent / "shared" / "data"))
ACDC_DIR = DATA_DIR / "acdc-ssl4mis"
PARTS = {1: "model_cost", 2: "pipeline", 3: "training"}

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
#: Widths of a plain U-Net with about the parameters of HALSR-Net ``base`` (10.9M vs 10.4M).
UNET_10M_WIDTHS = [40, 80, 160, 320, 560]
#: ``time_call`` settings: --quick (2 runs, timings meaningless) and a full CPU run.
QUICK_TIMING = {"warmup": 1, "min_runs": 2, "max_runs": 2, "budget_s": 0.0}
FULL_TIMING = {"warmup": 1, "min_runs": 3, "max_runs": 10, "budget_s": 4.0}


# -- measuring ------------------------------------------------------------------------------------


def _load() -> list:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        return []


def _cpu_seconds() -> tuple:
    """(busy CPU seconds of the whole machine from /proc/stat, CPU seconds of this process and its
    children): their difference over a section is the CPU time other work took meanwhile."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    mine = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):  # pragma: no cover (not Linux)
        return None, mine
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK"), mine


def _foreign_cores(before: tuple, after: tuple, wall_s: float) -> float | None:
    """Cores' worth of CPU used by other processes during a section (None where /proc/stat is missing)."""
    if before[0] is None or after[0] is None or wall_s <= 0:
        return None
    return round(max(0.0, (after[0] - before[0]) - (after[1] - before[1])) / wall_s, 3)


def _wait_for_idle(max_load: float, wait_s: float, allow_busy: bool) -> None:
    """Timings taken beside other work are wrong by up to 10x on a 2-core machine: wait up to
    ``wait_s`` for the 1-minute load average to drop to ``max_load``, then refuse (InputError)
    unless ``allow_busy``."""
    deadline = time.monotonic() + wait_s
    while _load() and _load()[0] > max_load and time.monotonic() < deadline:
        time.sleep(5)
    load = _load()
    if load and load[0] > max_load and not allow_busy:
        raise InputError(
            f"the machine is busy (1-minute load average {load[0]} > --max-load {max_load} after waiting "
            f"{wait_s:.0f} s): stop other work (trainings, test suites) or pass --allow-busy to measure anyway "
            "(results then flagged unreliable)"
        )


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
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path.cwd(), capture_output=True, text=True,
                              timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _sync(device) -> None:
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
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


# -- the networks of parts 1 and 3 ----------------------------------------------------------------


class Network(NamedTuple):
    name: str
    kind: str  # halsr, unet or nnunet
    description: str
    build: Callable[[], nn.Module]
    reference: str  # the network its times are divided by


def _logits(model: nn.Module) -> Callable:
    """``x -> logits`` for a transformers model (``.logits``) or a plain module (its output)."""
    if isinstance(model, HalsrForSemanticSegmentation):
        return lambda x: model(pixel_values=x).logits
    return model


def build_nnunet(plan: dict, num_classes: int = 3) -> nn.Module:
    """nnU-Net's ``PlainConvUNet`` (dynamic_network_architectures, optional) with the given 2D plan."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet  # optional package

    return PlainConvUNet(
        input_channels=1, n_stages=plan["n_stages"], features_per_stage=plan["features_per_stage"], conv_op=nn.Conv2d,
        kernel_sizes=plan["kernel_sizes"], strides=plan["strides"], n_conv_per_stage=plan["n_conv_per_stage"],
        num_classes=num_classes, n_conv_per_stage_decoder=plan["n_conv_per_stage_decoder"], conv_bias=plan["conv_bias"],
        norm_op=nn.InstanceNorm2d, norm_op_kwargs={"eps": 1e-5, "affine": True}, dropout_op=None,
        nonlin=nn.LeakyReLU, nonlin_kwargs={"negative_slope": 0.01, "inplace": True},
        deep_supervision=plan["deep_supervision"],
    )


def networks(quick: bool) -> list:
    """HALSR-Net presets, the plain U-Net of the same widths (and of ~10M parameters), nnU-Net 2D."""
    presets = ["tiny"] if quick else ["small", "base", "large"]
    nets = []
    for preset in presets:
        nets.append(Network(f"halsr-{preset}", "halsr", f"HALSR-Net preset {preset}, hidden_sizes {PRESETS[preset]['hidden_sizes']}",
                            lambda p=preset: HalsrForSemanticSegmentation(HalsrConfig.from_preset(p)), f"unet-{preset}"))
    for preset in presets:
        nets.append(Network(f"unet-{preset}", "unet", f"plain U-Net (HalsrConfig.plain_unet), widths {PRESETS[preset]['hidden_sizes']}",
                            lambda p=preset: HalsrForSemanticSegmentation(HalsrConfig.plain_unet(p)), f"unet-{preset}"))
    if not quick:
        nets.append(Network("unet-10M", "unet", f"plain U-Net, widths {UNET_10M_WIDTHS}: parameter count close to HALSR-Net base",
                            lambda: HalsrForSemanticSegmentation(HalsrConfig.plain_unet(hidden_sizes=UNET_10M_WIDTHS)),
                            "unet-10M"))
    nets.append(Network("nnunet-2d", "nnunet", "nnU-Net 2D PlainConvUNet (dynamic_network_architectures), see nnunet_plan",
                        lambda: build_nnunet(NNUNET_QUICK if quick else NNUNET_2D), "unet-tiny" if quick else "unet-base"))
    return nets


# -- part 1 ---------------------------------------------------------------------------------------


def part_model_cost(device, quick: bool) -> dict:
    sizes = [64] if quick else [128, 256]
    batches = [1, 2] if quick else [1, 16]
    timing = QUICK_TIMING if quick else FULL_TIMING
    rows, skipped = [], {}
    for net in networks(quick):
        try:
            model = net.build().to(device).eval()
        except ImportError as error:
            skipped[net.name] = f"cannot build: {error} (pip install --no-deps dynamic_network_architectures)"
            continue
        call = _logits(model)
        row = {"name": net.name, "kind": net.kind, "description": net.description, "reference": net.reference,
               "parameters": sum(p.numel() for p in model.parameters()), "gflops_per_slice": {}, "forward_ms_per_slice": {}}
        with torch.inference_mode():
            for size in sizes:
                row["gflops_per_slice"][f"{size}x{size}"] = round(count_flops(call, torch.randn(1, 1, size, size, device=device)) / 1e9, 3)
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
        row["ratio_to_reference"] = None if ref is None else {
            key: round(value["median"] / ref["forward_ms_per_slice"][key]["median"], 3)
            for key, value in row["forward_ms_per_slice"].items()}
    settings = {"sizes": sizes, "batches": batches, "timing": timing, "mode": "eval, torch.inference_mode, float32, NCHW",
                "plain_unet": "HalsrForSemanticSegmentation(HalsrConfig.plain_unet(...))"}
    return {"settings": settings, "nnunet_plan": NNUNET_QUICK if quick else NNUNET_2D, "networks": rows, "skipped": skipped}


# -- part 2 ---------------------------------------------------------------------------------------


def _sample_slices(count: int, quick: bool):
    """(slices, source): ``count`` real ACDC test slices (float [0, 1], ~256x216) or synthetic ones."""
    slices = []
    found = (ACDC_DIR / "data").is_dir() and (ACDC_DIR / "test.list").is_file()
    names = (ACDC_DIR / "test.list").read_text().split() if found else []
    for name in names:
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


def _random_pipeline(quick: bool) -> CardiacLVSegmentationPipeline:
    """Random weights, the ROI stage fixed to a central box with the LV present (every slice is
    segmented, as with a trained model)."""
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
    with torch.no_grad():
        roi.box.weight.zero_()
        roi.box.bias.copy_(torch.tensor([-0.6, -0.6, 0.6, 0.6]))
        if roi.presence is not None:
            roi.presence.weight.zero_()
            roi.presence.bias.fill_(5.0)
    return CardiacLVSegmentationPipeline(model=model.eval(), image_processor=processor, roi_model=roi.eval())


def _pipeline_for(device, quick: bool) -> tuple:
    """(pipeline, description): the bundled model, else (and always with --quick) random weights."""
    if not quick:
        try:
            folder = default_model_dir()
            return load_pipeline(str(folder), device=device), "bundled model (bundled:halsr_hf/default_model)"
        except FileNotFoundError as error:
            return _random_pipeline(quick), f"randomly initialised HALSR-Net small + default ROI regressor: {error}"
    return _random_pipeline(quick), "randomly initialised tiny model (--quick)"


def _write_inputs(folder: Path, slices: list) -> tuple:
    """16-bit PNG files of the slices and a 10-slice NIfTI volume (1.5625x1.5625x10 mm)."""
    pngs = []
    for i, image in enumerate(slices):
        path = folder / f"slice{i:02d}.png"
        Image.fromarray((np.clip(image, 0, 1) * 65535).astype(np.uint16)).save(path)
        pngs.append(str(path))
    volume = np.stack(slices[:10], axis=-1).transpose(1, 0, 2)  # (X, Y, Z): slices are data[:, :, k].T
    nifti = folder / "volume10.nii.gz"
    nib.save(nib.Nifti1Image(volume.astype(np.float32), np.diag([1.5625, 1.5625, 10.0, 1.0])), str(nifti))
    return pngs, str(nifti)


def _throughput(pipe, pngs, nifti, device, timing) -> dict:
    """slices/s at batch 16 and 1 (files in) and the latency of the 10-slice volume."""
    t16 = time_call(lambda: pipe(pngs, batch_size=16), device, **timing)
    t1 = time_call(lambda: pipe(pngs[0], batch_size=1), device, **dict(timing, max_runs=max(timing["max_runs"], 10)))
    tv = time_call(lambda: pipe(nifti, batch_size=16), device, **timing)
    return {"slices_per_s_batch16": round(16 / t16["median_s"], 2), "slices_per_s_batch1": round(1 / t1["median_s"], 2),
            "volume10_latency_s": round(tv["median_s"], 4), "raw": {"batch16": t16, "batch1": t1, "volume10": tv}}


def part_pipeline(device, quick: bool, backends=("torch",)) -> dict:
    rss_before = _peak_rss_mb()
    pipe, model_label = _pipeline_for(device, quick)
    default_backend = pipe.backend  # what pipeline(...) chose ("auto"): the rows below measure it
    slices, source = _sample_slices(16, quick)
    timing = QUICK_TIMING if quick else dict(FULL_TIMING, budget_s=8.0)
    result = {"model": model_label, "slices": source, "slice_shape": list(slices[0].shape), "device": str(device),
              "backend": default_backend, "backend_reason": pipe.backend_reason,
              "inputs": "batch: 16 single-slice 16-bit PNG files, one pipeline call with batch_size=16; "
                        "batch 1: one PNG per call, batch_size=1; volume: a 10-slice NIfTI (1.5625x1.5625x10 mm)"}
    with tempfile.TemporaryDirectory(prefix="halsr-bench-") as tmp:
        pngs, nifti = _write_inputs(Path(tmp), slices)
        out = pipe(nifti)
        if out["label_map"].shape != (10,) + slices[0].shape or out["volumes_ml"] is None:
            raise RuntimeError(f"the pipeline's output for the 10-slice volume is not a (10, H, W) label map with volumes: "
                               f"{out['label_map'].shape}, volumes_ml={out['volumes_ml']}")
        result.update(_throughput(pipe, pngs, nifti, device, timing))
        # the bare networks at the crop / ROI sizes, same batch size
        crop, roi_size = pipe.image_processor.crop_size, pipe.image_processor.roi_size
        x16 = torch.randn(16, 1, crop, crop, device=device)
        r16 = torch.randn(16, 1, roi_size, roi_size, device=device)
        with torch.inference_mode():
            seg = time_call(lambda: pipe.model(pixel_values=x16), device, **timing)
            roi = time_call(lambda: pipe.roi_model(r16), device, **timing) if pipe.roi_model is not None else None
        result["segmentation_forward_slices_per_s_batch16"] = round(16 / seg["median_s"], 2)
        if roi is not None:
            result["roi_forward_slices_per_s_batch16"] = round(16 / roi["median_s"], 2)
            result["networks_only_slices_per_s_batch16"] = round(16 / (seg["median_s"] + roi["median_s"]), 2)
        result["pipeline_over_segmentation_forward"] = round(
            result["slices_per_s_batch16"] / result["segmentation_forward_slices_per_s_batch16"], 3)
        result["peak_rss_mb"] = _peak_rss_mb()
        result["peak_rss_mb_before_pipeline"] = rss_before
        result["backends"] = {}
        for backend in backends:
            if backend == default_backend:
                continue
            try:
                t0 = time.perf_counter()
                pipe.set_backend(backend)
                setup = time.perf_counter() - t0
                measured = _throughput(pipe, pngs, nifti, device, timing)
                measured.pop("raw")
                result["backends"][backend] = dict(measured, setup_s=round(setup, 2))
            except Exception as error:  # noqa: BLE001 -- recorded, the benchmark goes on
                result["backends"][backend] = {"skipped": f"{type(error).__name__}: {error}"}
            finally:
                pipe.set_backend(default_backend)
    return result


# -- part 3 ---------------------------------------------------------------------------------------


class _H5Source:
    """ACDC training slices (SSL4MIS HDF5) as a training source (``training.data`` interface):
    normalised image, canonical labels."""

    def __init__(self, count: int):
        from ..data.schema import acdc_to_canonical
        from ..image_processing_halsr import normalize_intensity

        names = (ACDC_DIR / "train_slices.list").read_text().split()[:: 7][:count]
        self.items = []
        for name in names:
            with h5py.File(ACDC_DIR / "data" / f"{name}.h5", "r") as f:
                image, label = f["image"][()].astype(np.float32), acdc_to_canonical(f["label"][()])
            if (label > 0).any():
                self.items.append((normalize_intensity(image), label.astype(np.uint8)))
        self.has_lv = np.ones(len(self.items), dtype=bool)
        self.myocardium_annotated = np.ones(len(self.items), dtype=bool)

    def __len__(self) -> int:
        return len(self.items)

    def get(self, index: int) -> tuple:
        image, label = self.items[index]
        return image.copy(), label.copy()


def _real_training_row(device, batch: int, size: int, steps: int, preset: str = "small") -> dict | None:
    """Slices/s of the default model's training configuration, data loading included (None
    without the ACDC data)."""
    from torch.utils.data import DataLoader

    from ..training.augment import AugmentConfig
    from ..training.data import HalsrCropDataset
    from ..training.train import make_collator

    if not (ACDC_DIR / "train_slices.list").is_file():
        return None
    cuda = str(device).startswith("cuda")
    torch.manual_seed(0)
    dataset = HalsrCropDataset(_H5Source(max(4 * batch, 8 if preset == "tiny" else 32)), size=size, train=True, augment=AugmentConfig())
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True, collate_fn=make_collator(True), num_workers=0)
    model = HalsrForSemanticSegmentation(HalsrConfig.from_preset(preset, image_size=size)).to(device).train()
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    iterator = iter(loader)
    wait_s, step_s = [], []
    for i in range(steps + 1):  # step 0 is a warm-up
        start = time.perf_counter()
        try:
            batch_data = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            batch_data = next(iterator)
        batch_data = {k: v.to(device) for k, v in batch_data.items()}
        loaded = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            loss = model(**batch_data).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _sync(device)
        if i > 0:
            step_s.append(time.perf_counter() - start)
            wait_s.append(loaded - start)
    return None if not step_s else {
        "name": f"halsr-{preset} (default training configuration)", "kind": "halsr-real",
        "slices_per_s": round(batch / statistics.median(step_s), 2), "step_s_median": round(statistics.median(step_s), 4),
        "data_wait_share": round(sum(wait_s) / sum(step_s), 3), "steps": len(step_s),
        "data": f"{len(dataset)} real ACDC training slices, HalsrCropDataset + default AugmentConfig, DataLoader (0 workers)",
    }


def part_training(device, quick: bool) -> dict:
    cuda = str(device).startswith("cuda")
    batch, size = (2, 64) if quick else (16, 128)
    if quick:
        timing = QUICK_TIMING
    elif cuda:
        timing = {"warmup": 5, "min_runs": 20, "max_runs": 50, "budget_s": 5.0}
    else:
        timing = {"warmup": 1, "min_runs": 2, "max_runs": 6, "budget_s": 12.0}
    rows = []
    for net in networks(quick):
        if net.kind == "nnunet" or net.name == "unet-10M":
            continue
        torch.manual_seed(0)
        model = net.build().to(device).train().to(memory_format=torch.channels_last)  # as halsr-hf train runs
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x = torch.randn(batch, 1, size, size, device=device).contiguous(memory_format=torch.channels_last)
        labels = torch.randint(0, 3, (batch, size, size), device=device)

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                loss = model(pixel_values=x, labels=labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        t = time_call(step, device, **timing)
        rows.append({"name": net.name, "kind": net.kind, "parameters": sum(p.numel() for p in model.parameters()),
                     "slices_per_s": round(batch / t["median_s"], 2), "step_s_median": round(t["median_s"], 4), "steps": t["runs"]})
        del model, optimizer
    by_name = {r["name"]: r for r in rows}
    for row in rows:
        ref = by_name.get("unet-" + row["name"].split("-", 1)[1]) if row["kind"] == "halsr" else None
        row["step_time_ratio_to_unet_same_widths"] = round(row["step_s_median"] / ref["step_s_median"], 3) if ref else None
    settings = {"batch": batch, "size": size, "optimizer": "AdamW", "loss": "BCE + Dice (eq. 8) for both",
                "precision": "bf16 autocast, channels_last" if cuda else "float32, channels_last", "data": "random tensors (compute only)"}
    if cuda:
        settings["gpu"] = torch.cuda.get_device_name(0)
    real = _real_training_row(device, batch, size, steps=2 if quick else 12, preset="tiny" if quick else "small")
    return {"settings": settings, "networks": rows, "real_configuration": real}


# -- command line -----------------------------------------------------------------------------------


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _write_report(out: Path, results: dict, report_name: str, targets_path: Path | None) -> None:
    """README.md (or <name>.md) from ``results``; the GPU results file beside it gets its own section."""
    gpu = None if str(results["meta"]["device"]).startswith("cuda") else _read_json(out / "results_cuda.json")
    targets = _read_json(targets_path) if targets_path is not None else None
    (out / report_name).write_text(render_markdown(results, gpu, targets))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    targets = Path(args.targets) if args.targets else (out / "targets.json" if (out / "targets.json").is_file() else None)
    if targets is not None and not targets.is_file():
        raise InputError(f"--targets {targets}: no such file")

    if args.render_only:
        results = _read_json(out / "results.json")
        if results is None:
            raise InputError(f"--render-only: no results.json in {out}")
        _write_report(out, results, "README.md", targets)
        return 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available")
    try:
        parts = sorted({int(p) for p in args.parts.split(",") if p.strip()})
    except ValueError:
        parts = None
    if not parts or not set(parts) <= set(PARTS):
        raise InputError(f"--parts: expected numbers among 1,2,3, got {args.parts!r} "
                         "(the ROI ablation is `halsr-hf evaluate`, with and without --no-roi)")
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    max_load = args.max_load if args.max_load is not None else 0.5 * (os.cpu_count() or 1)
    if not args.quick:
        _wait_for_idle(max_load, args.wait_idle, args.allow_busy)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    meta = {
        "command": "halsr-hf benchmark " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "git_commit": _git_commit(), "quick": args.quick,
        "cpu": _cpu_name(), "cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "transformers": transformers.__version__, "threads": torch.get_num_threads(),
        "device": args.device + (f" ({torch.cuda.get_device_name(0)})" if args.device.startswith("cuda") else ""),
        "load_start": _load(), "max_load": max_load,
    }
    device = torch.device(args.device)
    run = {1: lambda: part_model_cost(device, args.quick),
           2: lambda: part_pipeline(device, args.quick, tuple(args.backends.split(","))),
           3: lambda: part_training(device, args.quick)}
    results = {"meta": meta}
    for number in (2, 3, 1):  # the pipeline first, so that its peak memory is not the large models' of part 1
        if number not in parts:
            continue
        key = PARTS[number]
        t0, load0, cpu0 = time.perf_counter(), _load(), _cpu_seconds()
        print(f"[benchmark] part {number}: {key} ...", file=sys.stderr, flush=True)
        results[key] = run[number]()
        results[key]["elapsed_s"] = round(time.perf_counter() - t0, 1)
        load1 = _load()
        # Other work during the section, measured rather than guessed from the lagging load average
        # (which also counts this benchmark's own threads): CPU time of other processes per second.
        foreign = _foreign_cores(cpu0, _cpu_seconds(), time.perf_counter() - t0)
        reliable = foreign <= args.max_foreign_cores if foreign is not None else bool(load0) and load0[0] <= max_load
        results[key]["load"] = {"start": load0, "end": load1, "max_load": max_load, "foreign_cores": foreign,
                                "max_foreign_cores": args.max_foreign_cores, "reliable": reliable}
        if not reliable and not args.quick:
            print(f"[benchmark] part {number}: other processes used {foreign} cores during it (limit "
                  f"--max-foreign-cores {args.max_foreign_cores}): timings flagged unreliable", file=sys.stderr, flush=True)
    meta["load_end"] = _load()
    meta["total_s"] = round(time.perf_counter() - started, 1)
    ordered = {"meta": meta, **{PARTS[n]: results[PARTS[n]] for n in sorted(PARTS) if PARTS[n] in results}}
    json_name = args.json_name or ("results_cuda.json" if args.device.startswith("cuda") else "results.json")
    (out / json_name).write_text(json.dumps(ordered, indent=2, default=float) + "\n")
    _write_report(out, ordered, "README.md" if json_name == "results.json" else Path(json_name).stem + ".md", targets)
    print(f"[benchmark] wrote {out / json_name} in {meta['total_s']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
