#!/usr/bin/env python
"""Write the compact arrays file that ``train.py`` / ``train_roi.py --arrays_file`` read, for
machines without ``datasets`` or the raw data (the GPU run: ``scripts/gpu_train.sh``).

Reads the ACDC SSL4MIS HDF5 files directly (``--source``; train = the 70 training patients' slices,
validation = the 10 ``val.list`` volumes cut into slices), labels mapped to the canonical ids
(0 background, 1 lv_cavity, 2 myocardium; RV -> background). Per slice, after
``normalize_intensity`` of the whole slice (as at inference):

* ``halsr_*``: only slices that show the LV. A native-resolution square crop centred on the LV box,
  of side ``max(w, h) * (1 + 2 * --margin)`` (default margin 0.8: the training crop's largest margin
  0.45, side scaling 1.1, centre jitter 0.1 and a 1.2x zoom-out all stay inside for the usual
  rotations), zero outside the slice, and its label crop;
* ``roi_*``: every slice. The ROI-stage input exactly as ``HalsrImageProcessor.preprocess_roi``
  makes it (padded square resized to 128), without the padding (the ``ceil(H * 128 / side)`` x
  ``ceil(W * 128 / side)`` content, so augmentation can transpose it and training pads it again),
  and the label resized to that grid with nearest neighbour (box error <= 1 px of 128).

Images are stored as uint8 codes with a per-slice (low, high) range (``halsr_hf.training.data.
quantize``: step (high - low) / 255, about 0.03 standard deviations of the slice, well below MRI
noise); labels as uint8. Variable-size arrays are concatenated flat with their ``shapes``. The file
is a compressed ``.npz`` (numpy only to read).

    python scripts/export_arrays.py --source ../shared/data/acdc-ssl4mis --out .gpu/acdc_train_val.npz
"""

import argparse
import math
import sys
import time
from pathlib import Path

import h5py
import numpy as np

try:
    import halsr_hf  # noqa: F401
except ImportError:  # a plain checkout: use src/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from halsr_hf.image_processing_halsr import HalsrImageProcessor, normalize_intensity  # noqa: E402
from halsr_hf.data.schema import acdc_to_canonical, bbox_from_label  # noqa: E402
from halsr_hf.training.data import quantize  # noqa: E402


def read_split(source: Path, split: str, max_slices=None):
    """(name, image float32 (H, W), canonical label uint8 (H, W)) for every slice of a split."""
    if split == "train":
        names = (source / "train_slices.list").read_text().split()
        for name in sorted(names)[:max_slices]:
            with h5py.File(source / "data" / f"{name}.h5", "r") as f:
                yield name, f["image"][()].astype(np.float32), acdc_to_canonical(f["label"][()])
    else:
        count = 0
        for volume in sorted((source / f"{'val' if split == 'validation' else split}.list").read_text().split()):
            with h5py.File(source / "data" / f"{volume}.h5", "r") as f:
                images, labels = f["image"][()].astype(np.float32), acdc_to_canonical(f["label"][()])
            for k in range(images.shape[0]):
                if max_slices is not None and count >= max_slices:
                    return
                count += 1
                yield f"{volume}_slice_{k + 1}", images[k], labels[k]


def lv_crop(image: np.ndarray, label: np.ndarray, box, margin: float):
    """Square native-resolution crop centred on ``box``, zeros outside the slice."""
    side = int(math.ceil(max(box[2] - box[0] + 1, box[3] - box[1] + 1) * (1 + 2 * margin)))
    cx, cy = (box[0] + box[2] + 1) / 2, (box[1] + box[3] + 1) / 2
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    out_image = np.zeros((side, side), dtype=np.float32)
    out_label = np.zeros((side, side), dtype=np.uint8)
    height, width = image.shape
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, width), min(y0 + side, height)
    out_image[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    out_label[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = label[sy0:sy1, sx0:sx1]
    return out_image, out_label


def export(source: Path, out: Path, margin: float = 0.8, roi_size: int = 128, splits=("train", "validation"), max_slices=None) -> dict:
    processor = HalsrImageProcessor(roi_size=roi_size)
    arrays, summary = {}, {}
    for split in splits:
        store = {kind: {"images": [], "labels": [], "shapes": [], "ranges": [], "has_lv": []} for kind in ("halsr", "roi")}
        for name, image, label in read_split(source, split, max_slices):
            normalized = normalize_intensity(image)
            box = bbox_from_label(label)
            if box is not None:
                crop_image, crop_label = lv_crop(normalized, label, box, margin)
                codes, value_range = quantize(crop_image)
                for key, value in (("images", codes.ravel()), ("labels", crop_label.ravel()), ("shapes", crop_image.shape), ("ranges", value_range), ("has_lv", True)):
                    store["halsr"][key].append(value)
            padded, sides = processor.preprocess_roi([normalized])
            height, width = normalized.shape
            rows, cols = math.ceil(height * roi_size / sides[0]), math.ceil(width * roi_size / sides[0])
            content = padded[0, 0, :rows, :cols].numpy()
            small_label = F.interpolate(torch.from_numpy(label)[None, None].float(), size=(rows, cols), mode="nearest")[0, 0].to(torch.uint8).numpy()
            codes, value_range = quantize(content)
            for key, value in (("images", codes.ravel()), ("labels", small_label.ravel()), ("shapes", content.shape), ("ranges", value_range), ("has_lv", box is not None and bbox_from_label(small_label) is not None)):
                store["roi"][key].append(value)
        for kind, columns in store.items():
            prefix = f"{kind}_{split}_"
            arrays[prefix + "images"] = np.concatenate(columns["images"]).astype(np.uint8)
            arrays[prefix + "labels"] = np.concatenate(columns["labels"]).astype(np.uint8)
            arrays[prefix + "shapes"] = np.asarray(columns["shapes"], dtype=np.int32)
            arrays[prefix + "ranges"] = np.asarray(columns["ranges"], dtype=np.float32)
            arrays[prefix + "has_lv"] = np.asarray(columns["has_lv"], dtype=bool)
            summary[f"{kind}_{split}"] = len(columns["shapes"])
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    summary["megabytes"] = round(out.stat().st_size / 2**20, 2)
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "acdc-ssl4mis")
    parser.add_argument("--out", type=Path, default=Path(".gpu/acdc_train_val.npz"))
    parser.add_argument("--margin", type=float, default=0.8, help="margin of the stored LV crop (fraction of the box side, each side)")
    parser.add_argument("--roi_size", type=int, default=128)
    parser.add_argument("--max_slices", type=int, default=None, help="per split (quick tests)")
    args = parser.parse_args(argv)
    start = time.time()
    summary = export(args.source, args.out, args.margin, args.roi_size, max_slices=args.max_slices)
    print(f"wrote {args.out} in {time.time() - start:.1f} s: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
