"""Training data: slice sources (a ``datasets`` split or a compact arrays file) and the torch
datasets that turn them into model inputs with the package's own preprocessing.

A *source* yields, per row, an intensity-normalised float32 image (``normalize_intensity`` of the
whole slice, as at inference) and its uint8 label map with the canonical ids (0 background,
1 lv_cavity, 2 myocardium, 255 ignore). Two sources:

* :class:`DatasetSource`: rows of a ``datasets`` split (columns ``image``, ``label``, optionally
  ``has_lv`` and ``myocardium_annotated``), normalised on the fly;
* :class:`ArraySource`: the arrays file written by ``scripts/export_arrays.py`` (for machines
  without ``datasets``): per slice an LV-centred native-resolution crop of the normalised slice
  (``halsr`` kind) or the ROI-stage content (``roi`` kind), stored as uint8 (see :func:`quantize`).

Both feed the same code: :class:`HalsrCropDataset` (augment the slice, LV box from the transformed
label, random margin/jitter/side scaling, ``square_boxes``, then the image processor crops image
and label: ``processor(image, segmentation_maps=label, crop_boxes=..., do_normalize=False)``) and
:class:`RoiDataset` (augment the whole slice, ``HalsrImageProcessor._stack_padded_square``, box
normalised to the padded square).

Policies (documented in the README's training section):

* Rows without LV are skipped for HALSR-Net by default. With ``empty_weight > 0`` (``halsr-hf train
  --empty-crop-weight``) the slices of an annotated stack that the reference leaves empty next to an
  LV slice (above the base, below the apex: ACDC's, at end-systole mostly) are *empty crops*: cropped
  where inference would crop them (the neighbouring LV slice's box, with the training jitter), with an
  all-background target, each drawn ``empty_weight`` times an epoch (hard negatives: the segmenter
  learns to answer "no LV here"). The ROI regressor trains on rows without LV with ``has_lv=False``
  (presence loss only).
* Mix weights (``--dataset-weights``) and ``--max-train-samples`` are applied per epoch by
  :class:`EpochRows`: a fractional weight draws a new subset of its source every epoch.
* Rows with ``myocardium_annotated == False`` are skipped for HALSR-Net when the label set contains
  ``myocardium`` (their ring would be taught as background); they are kept otherwise. The ROI
  regressor skips them too when they show the LV (the whole-LV box is unknown).
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..data.schema import LABEL_NAMES, bbox_from_label
from ..image_processing_halsr import HalsrImageProcessor, normalize_intensity, square_boxes
from .augment import AugmentConfig, augment_slice

CANONICAL_LABELS = tuple(LABEL_NAMES)
IGNORE_INDEX = 255


def label_lookup(label_names) -> np.ndarray:
    """A 256-entry table mapping canonical ids to the ids of ``label_names`` (which must start with
    ``background``); canonical classes not in the set become background, 255 stays 255."""
    label_names = list(label_names)
    if not label_names or label_names[0] != "background":
        raise ValueError(f"the label set must start with 'background', got {label_names}")
    unknown = [n for n in label_names if n not in CANONICAL_LABELS]
    if unknown:
        raise ValueError(f"unknown label names {unknown}; choose from {list(CANONICAL_LABELS)}")
    table = np.zeros(256, dtype=np.uint8)
    for canonical_id, name in enumerate(CANONICAL_LABELS):
        table[canonical_id] = label_names.index(name) if name in label_names else 0
    table[IGNORE_INDEX] = IGNORE_INDEX
    return table


# -- quantisation of the arrays file ------------------------------------------------------------


def quantize(image: np.ndarray) -> tuple:
    """uint8 codes and (low, high) of a normalised image: value = low + code * (high - low) / 255.
    The step is about 0.03 standard deviations of the slice, far below MRI noise."""
    low, high = float(image.min()), float(image.max())
    scale = max(high - low, 1e-6)
    return np.round((image - low) / scale * 255).astype(np.uint8), (low, high)


def dequantize(codes: np.ndarray, low: float, high: float) -> np.ndarray:
    return (low + codes.astype(np.float32) * ((high - low) / 255.0)).astype(np.float32)


# -- sources ------------------------------------------------------------------------------------


class DatasetSource:
    """Rows of a ``datasets.Dataset`` (one split)."""

    def __init__(self, dataset, clip_percentiles=(0.5, 99.5)):
        self.dataset = dataset.with_format("numpy")
        self.clip_percentiles = tuple(clip_percentiles)
        columns = set(self.dataset.column_names)
        if "has_lv" in columns:
            self.has_lv = np.asarray(self.dataset["has_lv"], dtype=bool)
        else:
            self.has_lv = np.array([bbox_from_label(row["label"]) is not None for row in self.dataset], dtype=bool)
        if "myocardium_annotated" in columns:
            self.myocardium_annotated = np.asarray(self.dataset["myocardium_annotated"], dtype=bool)
        else:
            self.myocardium_annotated = np.ones(len(self.dataset), dtype=bool)
        self.source_names = np.asarray(self.dataset["source"] if "source" in columns else ["dataset"] * len(self.dataset), dtype=object)
        self.neighbour_boxes = neighbour_boxes(self.dataset) if {"patient_id", "phase", "slice_index", "roi"} <= columns else [None] * len(self.dataset)

    def __len__(self) -> int:
        return len(self.dataset)

    def get(self, index: int) -> tuple:
        row = self.dataset[int(index)]
        image = normalize_intensity(np.asarray(row["image"], dtype=np.float32), self.clip_percentiles)
        return image, np.array(row["label"], dtype=np.uint8)  # a writable copy


class ArraySource:
    """One kind (``halsr`` or ``roi``) and split of an arrays file (see ``scripts/export_arrays.py``)."""

    def __init__(self, path, split: str, kind: str):
        prefix = f"{kind}_{split}_"
        with np.load(path) as data:
            if prefix + "shapes" not in data:
                raise KeyError(f"{path} holds no {kind!r} arrays for split {split!r} (keys: {sorted(data.files)})")
            self.images = data[prefix + "images"]
            self.labels = data[prefix + "labels"]
            self.shapes = data[prefix + "shapes"].astype(np.int64)
            self.ranges = data[prefix + "ranges"].astype(np.float32)
            self.has_lv = data[prefix + "has_lv"].astype(bool)
        sizes = self.shapes[:, 0] * self.shapes[:, 1]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])
        self.myocardium_annotated = np.ones(len(self.shapes), dtype=bool)
        self.neighbour_boxes = [None] * len(self.shapes)  # crops only: no stack to take a neighbour from

    def __len__(self) -> int:
        return len(self.shapes)

    def get(self, index: int) -> tuple:
        start, stop = self.offsets[index], self.offsets[index + 1]
        shape = tuple(self.shapes[index])
        image = dequantize(self.images[start:stop].reshape(shape), *self.ranges[index])
        return image, self.labels[start:stop].reshape(shape)


def source_names(source) -> np.ndarray:
    """The ``source`` column of every row of a source (``"arrays"`` for an arrays file)."""
    names = getattr(source, "source_names", None)
    return np.asarray(names if names is not None else ["arrays"] * len(source), dtype=object)


class ConcatSource:
    """Several sources as one (e.g. ``--dataset-dir data/acdc,data/myops2020``); ``rows`` selects rows
    of the concatenation and may repeat them (the training mix's sampling weights, see
    :func:`weighted_rows`) or keep a subset (one source's validation rows)."""

    def __init__(self, sources, rows=None):
        self.sources = list(sources)
        self.offsets = np.concatenate([[0], np.cumsum([len(s) for s in self.sources])]).astype(np.int64)
        self.rows = np.arange(self.offsets[-1]) if rows is None else np.asarray(rows, dtype=np.int64)
        def column(name):
            return np.concatenate([np.asarray(getattr(s, name), dtype=bool) for s in self.sources])[self.rows]
        self.has_lv = column("has_lv")
        self.myocardium_annotated = column("myocardium_annotated")
        self.source_names = np.concatenate([source_names(s) for s in self.sources])[self.rows]
        boxes = [box for s in self.sources for box in getattr(s, "neighbour_boxes", [None] * len(s))]
        self.neighbour_boxes = [boxes[int(r)] for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def select(self, rows) -> "ConcatSource":
        return ConcatSource(self.sources, self.rows[np.asarray(rows, dtype=np.int64)])

    def get(self, index: int) -> tuple:
        row = int(self.rows[index])
        k = int(np.searchsorted(self.offsets, row, side="right")) - 1
        return self.sources[k].get(row - int(self.offsets[k]))


def neighbour_boxes(dataset) -> list:
    """Per row of a ``datasets`` split: for a slice without LV, the LV box (``roi`` column) of its
    nearest slice with LV in the same stack (patient, phase; ``slice_index`` +-1, then +-2; the
    lower index first on a tie), else None. Rows with LV get None. Reads no image."""
    patients, phases = dataset["patient_id"], dataset["phase"]
    indices, rois = dataset["slice_index"], dataset["roi"]
    stacks = {}
    for row, key in enumerate(zip(patients, phases)):
        stacks.setdefault(tuple(map(str, key)), {})[int(indices[row])] = row
    out = [None] * len(rois)
    for stack in stacks.values():
        for index, row in stack.items():
            if rois[row] is not None:
                continue
            for step in (-1, 1, -2, 2):
                other = stack.get(index + step)
                if other is not None and rois[other] is not None:
                    out[row] = [float(v) for v in rois[other]]
                    break
    return out


def weighted_rows(names: np.ndarray, weights: dict, seed: int = 0, epoch: int = 0) -> np.ndarray:
    """Row indices of one training epoch of a mix: the rows of source ``s`` repeated ``weights[s]``
    times (1 for a source not named); a fractional part takes that fraction of the source's rows,
    drawn anew for every ``epoch`` (seeded by ``seed`` and ``epoch``: reproducible, and a resumed run
    draws what an uninterrupted one would). Weight 0 leaves a source out. Augmentation makes repeats
    differ."""
    unknown = sorted(set(weights) - set(names.tolist()))
    if unknown:
        raise ValueError(f"--dataset-weights names sources that are not in the data: {unknown}; sources: {sorted(set(names.tolist()))}")
    rng = np.random.default_rng([int(seed), int(epoch)])
    rows = []
    for name in sorted(set(names.tolist())):
        own = np.nonzero(names == name)[0]
        weight = float(weights.get(name, 1.0))
        if weight < 0:
            raise ValueError(f"--dataset-weights: {name} has a negative weight {weight}")
        whole, fraction = int(weight), weight - int(weight)
        rows += [own] * whole
        if fraction > 0:
            rows.append(np.sort(rng.choice(own, size=int(round(fraction * len(own))), replace=False)))
    return np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)


class EpochRows:
    """The rows one training epoch draws from a source's ``candidates`` (indices into the source):
    the mix's ``weights`` per source name (:func:`weighted_rows`, fractional parts drawn anew each
    epoch), then, with ``max_samples``, a seeded random subset of that size (all sources keep their
    share; the first rows in name order were kept before). ``extra`` rows (the empty crops) are
    repeated ``extra_weight`` times, a fractional part drawn per epoch too. The number of rows is the
    same every epoch (the Trainer sizes the epoch once)."""

    def __init__(self, names, candidates, weights=None, seed: int = 0, max_samples=None, extra=(), extra_weight: float = 0.0):
        self.names = np.asarray(names, dtype=object)
        self.candidates = np.asarray(candidates, dtype=np.int64)
        self.extra = np.asarray(extra, dtype=np.int64)
        self.weights = dict(weights or {})
        self.seed = int(seed)
        self.max_samples = max_samples
        self.extra_weight = float(extra_weight)
        if self.extra_weight < 0:
            raise ValueError(f"the empty-crop weight must be >= 0, got {self.extra_weight}")

    def rows(self, epoch: int = 0) -> np.ndarray:
        picked = self.candidates[weighted_rows(self.names[self.candidates], self.weights, self.seed, epoch)] \
            if self.weights else self.candidates
        if len(self.extra) and self.extra_weight > 0:
            whole, fraction = int(self.extra_weight), self.extra_weight - int(self.extra_weight)
            rng = np.random.default_rng([self.seed, int(epoch), 1])
            parts = [picked] + [self.extra] * whole
            if fraction > 0:
                parts.append(np.sort(rng.choice(self.extra, size=int(round(fraction * len(self.extra))), replace=False)))
            picked = np.concatenate(parts)
        if self.max_samples is not None and self.max_samples < len(picked):
            rng = np.random.default_rng([self.seed, 2])  # the same subset every epoch where the rows are
            picked = np.sort(rng.choice(picked, size=int(self.max_samples), replace=False))
        return picked


# -- torch datasets -----------------------------------------------------------------------------


def _sample_rng() -> np.random.Generator:
    # torch's global RNG is seeded by set_seed in the main process and per worker by the DataLoader,
    # so augmentations are reproducible and differ between workers and epochs.
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))


class EpochDataset(Dataset):
    """A torch dataset over the rows :class:`EpochRows` draws (``self.epoch_rows``, set by the
    subclass): :meth:`set_epoch` draws an epoch's rows into ``self.indices``
    (``EpochDrawCallback`` calls it as each epoch begins); the length is the same every epoch."""

    def set_epoch(self, epoch: int) -> None:
        """Draw the rows of training epoch ``epoch``."""
        self.indices = self.epoch_rows.rows(epoch)

    def __len__(self) -> int:
        return len(self.indices)


class HalsrCropDataset(EpochDataset):
    """LV crops for HALSR-Net: ``{"pixel_values": (1, size, size) float32, "labels": (size, size) long}``.

    Training (``train=True``): augmentation of the slice, then the ground-truth box of the
    transformed label with a margin uniform in ``margin_range``, its centre moved by up to
    ``jitter`` x the side in x and y, its side scaled uniformly in ``side_scale_range`` (the model
    learns to tolerate the ROI regressor's errors). Evaluation: the box with ``eval_margin`` (the
    inference margin), no augmentation.

    Rows: those with LV (and, for a label set with ``myocardium``, an annotated myocardium); with
    ``empty_weight > 0`` also the *empty crops* (slices without LV next to an LV slice of the same
    stack, cropped around that neighbour's box; see the module docstring). ``weights`` (per source
    name), ``seed`` and ``max_samples`` choose each epoch's rows (:class:`EpochRows`);
    :meth:`set_epoch` draws an epoch's (``EpochDrawCallback`` calls it as each epoch begins).
    """

    def __init__(
        self,
        source,
        label_names=CANONICAL_LABELS,
        size: int = 128,
        train: bool = False,
        augment: AugmentConfig | None = None,
        margin_range=(0.10, 0.45),
        eval_margin: float = 0.25,
        jitter: float = 0.10,
        side_scale_range=(0.9, 1.1),
        weights: dict | None = None,
        seed: int = 0,
        max_samples: int | None = None,
        empty_weight: float = 0.0,
    ):
        self.source = source
        self.size = int(size)
        self.train = train
        self.augment = augment if augment is not None else AugmentConfig()
        self.margin_range = tuple(margin_range)
        self.eval_margin = float(eval_margin)
        self.jitter = float(jitter)
        self.side_scale_range = tuple(side_scale_range)
        self.lut = torch.from_numpy(label_lookup(label_names).astype(np.int64))
        #: crops images and labels as at inference (``processor(images, segmentation_maps=..., crop_boxes=...)``)
        self.processor = HalsrImageProcessor(size=self.size, crop_margin=self.eval_margin)
        keep = np.asarray(source.has_lv, dtype=bool).copy()
        if "myocardium" in label_names:
            keep &= np.asarray(source.myocardium_annotated, dtype=bool)
        self.neighbour_boxes = list(getattr(source, "neighbour_boxes", None) or [None] * len(source))
        empty = [i for i, box in enumerate(self.neighbour_boxes) if box is not None and not source.has_lv[i]]
        self.epoch_rows = EpochRows(source_names(source), np.nonzero(keep)[0], weights, seed, max_samples,
                                    extra=empty if train else (), extra_weight=empty_weight if train else 0.0)
        #: the empty crops among the candidate rows (slices without LV, each with its neighbour's box)
        self.empty_rows = np.asarray(empty if train and empty_weight > 0 else [], dtype=np.int64)
        self.set_epoch(0)

    def _empty_crop(self, row: int, rng) -> tuple:
        """(image, label, box) of an empty crop: the slice and its all-background label, augmented
        together with an ellipse inscribed in the neighbour's LV box (marker value 254 in the label),
        whose box after augmentation is the crop's box; the marker is then removed."""
        image_np, label_np = self.source.get(row)
        image, label = torch.from_numpy(image_np), torch.from_numpy(np.ascontiguousarray(label_np))
        x0, y0, x1, y1 = self.neighbour_boxes[row]
        rows_, cols_ = torch.meshgrid(torch.arange(label.shape[0]), torch.arange(label.shape[1]), indexing="ij")
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, max((x1 - x0) / 2, 0.5), max((y1 - y0) / 2, 0.5)
        marker = ((cols_ - cx) / rx) ** 2 + ((rows_ - cy) / ry) ** 2 <= 1.0
        label = torch.where(marker & (label == 0), torch.tensor(254, dtype=torch.uint8), label)
        if self.train:
            image, label = augment_slice(image, label, self.augment, rng)
        box = bbox_from_label((label == 254).numpy().astype(np.uint8))  # the ellipse as "LV": its box
        label = torch.where(label == 254, torch.tensor(0, dtype=torch.uint8), label)
        if box is None:  # augmented out of the image: the neighbour's box as it was
            box = [int(v) for v in self.neighbour_boxes[row]]
        return image, label, box

    def _crop_box(self, box, rng) -> torch.Tensor:
        box = torch.tensor([box], dtype=torch.float32)
        if not self.train:
            return square_boxes(box, self.eval_margin)
        crop = square_boxes(box, float(rng.uniform(*self.margin_range)))[0]
        side = float(crop[2] - crop[0])
        cx = float(crop[0] + crop[2]) / 2 + rng.uniform(-self.jitter, self.jitter) * side
        cy = float(crop[1] + crop[3]) / 2 + rng.uniform(-self.jitter, self.jitter) * side
        side *= rng.uniform(*self.side_scale_range)
        return torch.tensor([[cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]])

    def _lv_slice(self, row: int, rng) -> tuple:
        """(image, label, box) of a row with LV: augmented in training (the box of the transformed
        label; the slice as it is when the augmentation moved the LV out of it)."""
        image_np, label_np = self.source.get(row)
        image, label = torch.from_numpy(image_np), torch.from_numpy(np.ascontiguousarray(label_np))
        if self.train:
            aug_image, aug_label = augment_slice(image, label, self.augment, rng)
            box = bbox_from_label(aug_label)
            if box is not None:
                return aug_image, aug_label, box
        return image, label, bbox_from_label(label)

    def __getitem__(self, i: int) -> dict:
        row = int(self.indices[i])
        rng = _sample_rng() if self.train else None
        if not self.source.has_lv[row] and self.neighbour_boxes[row] is not None:
            image, label, box = self._empty_crop(row, rng)
        else:
            image, label, box = self._lv_slice(row, rng)
        crop_box = self._crop_box(box, rng)
        # the source's slices are normalised already (and augmented since): the processor only crops
        inputs = self.processor(image, segmentation_maps=label, crop_boxes=crop_box, do_normalize=False)
        return {"pixel_values": inputs["pixel_values"][0].contiguous(), "labels": self.lut[inputs["labels"][0]]}


class RoiDataset(EpochDataset):
    """Whole slices for the ROI regressor: ``pixel_values`` (1, roi_size, roi_size) as
    ``HalsrImageProcessor.preprocess_roi`` builds them, ``labels`` (4,) the LV box normalised to the
    padded square (x_min / side, y_min / side, (x_max + 1) / side, (y_max + 1) / side), ``has_lv``."""

    def __init__(self, source, roi_size: int = 128, train: bool = False, augment: AugmentConfig | None = None,
                 weights: dict | None = None, seed: int = 0, max_samples: int | None = None):
        self.source = source
        self.train = train
        self.augment = augment if augment is not None else AugmentConfig()
        self.processor = HalsrImageProcessor(roi_size=roi_size)
        # an LV whose myocardium is not annotated has no reliable LV box: skip it (no-LV rows stay)
        unknown_box = np.asarray(source.has_lv, dtype=bool) & ~np.asarray(source.myocardium_annotated, dtype=bool)
        self.epoch_rows = EpochRows(source_names(source), np.nonzero(~unknown_box)[0], weights, seed, max_samples)
        self.set_epoch(0)

    def __getitem__(self, i: int) -> dict:
        image_np, label_np = self.source.get(int(self.indices[i]))
        image, label = torch.from_numpy(image_np), torch.from_numpy(np.ascontiguousarray(label_np))
        if self.train:
            image, label = augment_slice(image, label, self.augment, _sample_rng())
        pixel_values, sides = self.processor.preprocess_roi([image.numpy()])
        box = bbox_from_label(label)
        if box is None:
            target = torch.zeros(4)
        else:
            side = float(sides[0])
            target = torch.tensor([box[0] / side, box[1] / side, (box[2] + 1) / side, (box[3] + 1) / side])
        return {
            "pixel_values": pixel_values[0].contiguous(),
            "labels": target.float(),
            "has_lv": torch.tensor(box is not None),
        }


class LocalizerDataset(EpochDataset):
    """Whole slices for the coarse LV localiser (the default ROI stage, see ``pipeline_halsr``):
    ``pixel_values`` (1, roi_size, roi_size) as ``HalsrImageProcessor.preprocess_roi`` builds them and
    ``labels`` (roi_size, roi_size) long: 1 where the LV is (cavity or myocardium), 0 elsewhere, 255
    outside the label's annotation (ignored by the loss).

    The slice is first brought to the ROI grid (longer side = ``roi_size``, antialiased; the
    ``roi`` arrays of ``scripts/export_arrays.py`` are stored at that scale already), then, in
    training, augmented there (intensity, 8 rotations/flips, rotation/scale, elastic), zero-padded
    to a square (``pad_scale_range`` times the longer side) at a random position, so the LV can be
    anywhere and smaller than in ACDC, and resized back to ``roi_size``. Evaluation pads
    bottom/right to a square exactly as inference does.
    """

    def __init__(self, source, roi_size: int = 128, train: bool = False, augment: AugmentConfig | None = None,
                 pad_scale_range=(1.0, 1.5), pad_prob: float = 0.5, weights: dict | None = None, seed: int = 0,
                 max_samples: int | None = None):
        self.source = source
        self.roi_size = int(roi_size)
        self.train = train
        self.augment = augment if augment is not None else AugmentConfig()
        self.pad_scale_range = tuple(pad_scale_range)
        self.pad_prob = float(pad_prob)
        unknown_box = np.asarray(source.has_lv, dtype=bool) & ~np.asarray(source.myocardium_annotated, dtype=bool)
        self.epoch_rows = EpochRows(source_names(source), np.nonzero(~unknown_box)[0], weights, seed, max_samples)
        self.set_epoch(0)

    def _to_roi_grid(self, image: torch.Tensor, label: torch.Tensor) -> tuple:
        height, width = image.shape
        side = max(height, width)
        if side <= self.roi_size:
            return image, label
        rows, cols = int(np.ceil(height * self.roi_size / side)), int(np.ceil(width * self.roi_size / side))
        image = F.interpolate(image[None, None], size=(rows, cols), mode="bilinear", align_corners=False, antialias=True)[0, 0]
        label = F.interpolate(label[None, None].float(), size=(rows, cols), mode="nearest-exact")[0, 0].to(torch.uint8)
        return image, label

    def __getitem__(self, i: int) -> dict:
        image_np, label_np = self.source.get(int(self.indices[i]))
        image, label = torch.from_numpy(image_np), torch.from_numpy(np.ascontiguousarray(label_np))
        image, label = self._to_roi_grid(image, label)
        target = ((label == 1) | (label == 2)).to(torch.int64)
        target[label == IGNORE_INDEX] = IGNORE_INDEX
        height, width = image.shape
        side = max(height, width)
        top = left = 0
        if self.train:
            rng = _sample_rng()
            image, target_u8 = augment_slice(image, target.to(torch.uint8), self.augment, rng)
            target = target_u8.to(torch.int64)
            height, width = image.shape
            side = max(height, width)
            if rng.random() < self.pad_prob:
                side = int(round(side * rng.uniform(*self.pad_scale_range)))
            top, left = int(rng.integers(0, side - height + 1)), int(rng.integers(0, side - width + 1))
        canvas = torch.zeros(side, side)
        canvas[top : top + height, left : left + width] = image
        labels = torch.zeros(side, side, dtype=torch.int64)
        labels[top : top + height, left : left + width] = target
        if side != self.roi_size:
            canvas = F.interpolate(canvas[None, None], size=(self.roi_size, self.roi_size), mode="bilinear", align_corners=False, antialias=side > self.roi_size)[0, 0]
            labels = F.interpolate(labels[None, None].float(), size=(self.roi_size, self.roi_size), mode="nearest-exact")[0, 0].long()
        return {"pixel_values": canvas[None].contiguous(), "labels": labels}
