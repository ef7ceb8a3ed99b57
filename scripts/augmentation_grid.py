#!/usr/bin/env python
"""Draw augmented training samples as a PNG grid (``docs/augmentation-samples.png``), and time the
augmentation.

Rows: real slices from ``../shared/data`` (ACDC from acdc-ssl4mis, MyoPS 2020 cine (C0) and LGE of
one slice, an EMIDEC LGE slice), each normalised as in training (``normalize_intensity`` of the
whole slice). Columns: the original, then ``augment_slice`` with one family of transforms forced on
(the others off), then two draws of the default ``AugmentConfig``. Grey levels use one window per
row (the original's z-score range), so brightness and contrast changes show; contours: LV cavity
red, myocardium green::

    python scripts/augmentation_grid.py --data ../shared/data --out docs/augmentation-samples.png
    python scripts/augmentation_grid.py --data ../shared/data --time    # ms per 256x256 slice
"""

import argparse
import os
import sys
import time
from dataclasses import fields
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from halsr_hf.data.schema import acdc_to_canonical
from halsr_hf.image_processing_halsr import normalize_intensity
from halsr_hf.training.augment import AugmentConfig, augment_slice

REPO_ROOT = Path(__file__).resolve().parents[1]
PROBS = [f.name for f in fields(AugmentConfig) if f.name.endswith("_prob")]
CELL = 140
CONTOURS = ((1, (255, 40, 40)), (2, (40, 230, 40)))  # LV cavity red, myocardium green
# the PNG's palette: 64 grey levels and the contour colours (a fraction of the RGB size, and a
# generic quantiser would merge the thin red contours into the greys)
PALETTE = Image.new("P", (1, 1))
PALETTE.putpalette([v for g in np.linspace(0, 255, 64).round().astype(int) for v in (g, g, g)]
                   + [v for _, colour in CONTOURS for v in colour] + [0, 0, 0] * (256 - 64 - len(CONTOURS)))
HEADER, ROW_LABEL = 30, 88


def forced(*names) -> AugmentConfig:
    config = AugmentConfig(dihedral=False, **{p: 0.0 for p in PROBS})
    for name in names:
        setattr(config, f"{name}_prob", 1.0)
    return config


COLUMNS = [
    ("original", None),
    ("intensity curve", forced("remap")),
    ("gamma, inv. gamma", forced("gamma", "inverted_gamma")),
    ("bias, bright., contr.", forced("bias", "brightness", "contrast")),
    ("low-res, blur, noise", forced("lowres", "blur", "noise")),
    ("rot., scale, elastic", forced("rotation", "scale", "anisotropy", "elastic")),
    ("default", AugmentConfig()),
    ("default", AugmentConfig()),
]


def load_rows(data: Path) -> list:
    """(name, normalised image, canonical label) per row."""
    rows = []
    for name in ("patient003_frame01_slice_4", "patient012_frame02_slice_6"):
        with h5py.File(data / "acdc-ssl4mis" / "data" / f"{name}.h5", "r") as f:
            rows.append((f"ACDC {name.split('_')[0][7:]}" + (" ED" if "frame01" in name else " ES"), f["image"][()],
                         acdc_to_canonical(f["label"][()])))
    case = data / "myops2020" / "Case3001"
    gd = np.asarray(nib.load(case / "Case3001_gd.nii.gz").dataobj)[:, :, 2]
    myops_label = np.zeros(gd.shape, np.uint8)
    myops_label[gd == 500] = 1
    myops_label[np.isin(gd, [200, 1220, 2221])] = 2
    for sequence in ("C0", "LGE"):
        image = np.asarray(nib.load(case / f"Case3001_{sequence}.nii.gz").dataobj)[:, :, 2]
        rows.append((f"MyoPS {sequence}", image.T, myops_label.T))  # rows = anterior-posterior for display
    png = data / "emidec" / "train" / "Case_P002_slice004.png"
    mask = np.array(Image.open(data / "emidec" / "trainannot" / png.name))
    emidec_label = np.where(mask == 1, 1, np.where(np.isin(mask, [2, 3, 4]), 2, 0)).astype(np.uint8)
    rows.append(("EMIDEC LGE", np.array(Image.open(png)), emidec_label))
    return [(name, normalize_intensity(np.asarray(image, np.float32)), np.ascontiguousarray(label)) for name, image, label in rows]


def render(image: torch.Tensor, label: torch.Tensor, window: tuple) -> np.ndarray:
    """An RGB CELL x CELL tile: the image in ``window`` (z units), aspect kept, contours on top."""
    height, width = image.shape
    scale = CELL / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    small = F.interpolate(image[None, None], size=size, mode="bilinear", antialias=True, align_corners=False)[0, 0]
    small_label = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].long()
    grey = ((small - window[0]) / (window[1] - window[0])).clamp(0, 1).mul(255).to(torch.uint8).numpy()
    tile = np.zeros((CELL, CELL, 3), np.uint8)
    top, left = (CELL - size[0]) // 2, (CELL - size[1]) // 2
    tile[top : top + size[0], left : left + size[1]] = grey[..., None]
    for value, colour in CONTOURS:
        mask = (small_label == value).float()[None, None]
        eroded = -F.max_pool2d(-mask, 3, stride=1, padding=1)
        edge = ((mask - eroded)[0, 0] > 0).numpy()
        tile[top : top + size[0], left : left + size[1]][edge] = colour
    return tile


def draw_grid(rows: list, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    width, height = ROW_LABEL + CELL * len(COLUMNS), HEADER + CELL * len(rows)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for j, (title, _) in enumerate(COLUMNS):
        draw.text((ROW_LABEL + j * CELL + 4, 9), title, fill=(0, 0, 0))
    for i, (name, image_np, label_np) in enumerate(rows):
        draw.text((4, HEADER + i * CELL + CELL // 2 - 6), name, fill=(0, 0, 0))
        image, label = torch.from_numpy(image_np), torch.from_numpy(label_np)
        window = (float(image.min()), float(image.max()))
        for j, (_, config) in enumerate(COLUMNS):
            out, out_label = (image, label) if config is None else augment_slice(image.clone(), label.clone(), config, rng)
            canvas.paste(Image.fromarray(render(out, out_label, window)), (ROW_LABEL + j * CELL, HEADER + i * CELL))
    return canvas


def time_augmentation(rows: list, calls: int, seed: int) -> str:
    """Mean ms per call of ``augment_slice`` (default config) on the 256x256 EMIDEC slice, one thread."""
    torch.set_num_threads(1)
    _, image_np, label_np = rows[-1]
    image, label = torch.from_numpy(image_np), torch.from_numpy(label_np)
    assert image.shape == (256, 256)
    config, rng = AugmentConfig(), np.random.default_rng(seed)
    for _ in range(50):
        augment_slice(image, label, config, rng)
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        augment_slice(image, label, config, rng)
    ms = (time.perf_counter() - start) / calls * 1e3
    cpu_ms = (time.process_time() - start_cpu) / calls * 1e3
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    # on a shared machine the wall time includes waiting for a core; the CPU time is the cost itself
    return (f"augment_slice, default config, 256x256, 1 thread: {ms:.2f} ms wall, {cpu_ms:.2f} ms CPU per slice "
            f"(mean of {calls}; load average {load})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = Path(os.environ.get("HALSR_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
    parser.add_argument("--data", type=Path, default=default_data, help="the shared data folder (acdc-ssl4mis, myops2020, emidec)")
    parser.add_argument("--out", type=Path, default=None, help="PNG to write (e.g. docs/augmentation-samples.png)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time", action="store_true", help="time augment_slice instead of (or as well as) drawing")
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args(argv)
    if args.out is None and not args.time:
        parser.error("give --out and/or --time")
    rows = load_rows(args.data)
    if args.out is not None:
        grid = draw_grid(rows, args.seed)
        grid.quantize(palette=PALETTE, dither=Image.Dither.NONE).save(args.out, optimize=True)
        print(f"wrote {args.out} ({args.out.stat().st_size // 1024} kB, {grid.size[0]}x{grid.size[1]})")
    if args.time:
        print(time_augmentation(rows, args.calls, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
