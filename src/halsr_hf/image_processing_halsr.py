"""Image processor for HALSR-Net and its ROI model (an LV localiser or a box regressor).

One place defines how a short-axis slice becomes model input, for training and inference alike:

1. **Gray float32.** Any 2D slice (uint8, uint16, float; PIL modes L, I;16, I, F; RGB/RGBA are
   converted to gray with ITU-R 601 weights, and a warning, since MRI is single-channel).
2. **Intensity normalisation** (:func:`normalize_intensity`): clip to the slice's 0.5 and 99.5
   percentiles, then z-score (zero mean, unit variance) over the slice. Scanner- and
   converter-independent (raw DICOM values, min-max [0, 1] ACDC, 8-bit PNG all end up alike).
   Computed on the *whole* slice, before any crop, at training and inference.
3. **ROI stage input** (:meth:`HalsrImageProcessor.preprocess_roi`): the normalised slice is
   zero-padded at the bottom/right to a square (aspect ratio kept) and resized to
   ``roi_size`` x ``roi_size``; predicted boxes are normalised to that padded square.
4. **Segmentation input** (:meth:`HalsrImageProcessor.crop`): a square crop centred on the LV box,
   of side ``max(box width, box height) * (1 + 2 * crop_margin)``, resampled bilinearly to
   ``size`` x ``size`` (zeros outside the image). Without a box (no ROI model) the whole slice,
   padded to a square, is the crop.
5. **Back to the input grid** (:meth:`HalsrImageProcessor.paste`): crop logits are resampled into
   the crop's footprint in the original slice and arg-maxed; everything outside is background.
   :meth:`post_process_semantic_segmentation` does the same from a model output, with the
   ``crop_boxes`` and ``original_sizes`` that :meth:`preprocess` returned (without crop boxes: the
   whole slice padded to a square, what :meth:`preprocess` crops without ``boxes``), so a
   non-square slice is never stretched.

The ROI stage outside the pipeline: :meth:`HalsrImageProcessor.preprocess_for_roi` builds the ROI
model's input from raw slices and :meth:`HalsrImageProcessor.post_process_roi` turns its output
into pixel boxes (``None`` where no LV is found), which go to ``processor(images, boxes=...)``.
Together they give the pipeline's label map (``tests/test_docs.py`` and ``tests/test_pipeline.py``
compare them)::

    roi_inputs = processor.preprocess_for_roi(image)
    boxes = processor.post_process_roi(roi_model(pixel_values=roi_inputs["pixel_values"]), roi_inputs["original_sizes"])
    inputs = processor(image, boxes=boxes)              # boxes[i] None: no LV (the pipeline returns an empty map)
    outputs = model(pixel_values=inputs["pixel_values"])
    label_map = processor.post_process_semantic_segmentation(
        outputs, target_sizes=inputs["original_sizes"], crop_boxes=inputs["crop_boxes"])[0]

Boxes are ``(x_min, y_min, x_max, y_max)`` in pixels; x is the column, y the row.

SegFormer's conventions: ``size`` is ``{"height", "width"}`` (square; an int in older configs is
read as both); ``processor(images, segmentation_maps=maps)`` also returns ``labels``, the same crops
of the label maps, so ``model(**processor(images, segmentation_maps=maps))`` returns the loss (the
model accepts and ignores ``crop_boxes`` and ``original_sizes``). The training crops of
:class:`halsr_hf.training.data.HalsrCropDataset` are made by this processor
(``crop_boxes=`` the random training crops, ``do_normalize=False`` for slices normalised before
augmentation).

The ROI stage's inference settings (:data:`ROI_STAGE_SETTINGS`: thresholds of the localiser, the
presence test, the ``low_roi_confidence`` flag, the volume consensus and the second look) are
attributes of the processor: saved in ``preprocessor_config.json``, they travel with a checkpoint,
and a pipeline call can override each of them.
"""

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

from .errors import InputError, check_no_unknown_kwargs
from .roi_stage import localizer_results, regressor_results

_GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def to_gray_float32(image, name: str = "image") -> np.ndarray:
    """Convert one 2D slice (PIL image, numpy array or torch tensor) to a float32 (H, W) array."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        mode = image.mode
        if mode in ("RGB", "RGBA", "P", "LA", "CMYK", "YCbCr"):
            warnings.warn(f"{name}: {mode} image converted to grayscale (cine MRI is single-channel)", stacklevel=3)
            image = image.convert("RGB")
            array = np.asarray(image, dtype=np.float32) @ _GRAY_WEIGHTS
        else:
            array = np.asarray(image)
    elif isinstance(image, torch.Tensor):
        array = image.detach().cpu().numpy()
    elif isinstance(image, np.ndarray):
        array = image
    else:
        raise InputError(f"{name}: expected a PIL image, numpy array or torch tensor, got {type(image).__name__}")
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] in (3, 4) and array.shape[0] > 4:
        warnings.warn(f"{name}: RGB array converted to grayscale (cine MRI is single-channel)", stacklevel=3)
        array = array[..., :3].astype(np.float32) @ _GRAY_WEIGHTS
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise InputError(f"{name}: expected a 2D slice (H, W), got an array of shape {array.shape}")
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.number)):
        raise InputError(f"{name}: expected numeric pixel values, got dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=np.float32)


def validate_slice(array: np.ndarray, name: str = "image", max_image_size: int = 4096, min_image_size: int = 8) -> None:
    """Raise :class:`InputError` for slices the models cannot segment meaningfully."""
    height, width = array.shape
    if min(height, width) < min_image_size:
        raise InputError(f"{name}: image of {height}x{width} pixels is too small (minimum {min_image_size}x{min_image_size})")
    if max(height, width) > max_image_size:
        raise InputError(
            f"{name}: image of {height}x{width} pixels exceeds the limit of {max_image_size}x{max_image_size} "
            "(max_image_size of the image processor)"
        )
    if not np.isfinite(array).all():
        raise InputError(f"{name}: image contains NaN or infinite values ({int((~np.isfinite(array)).sum())} pixels)")
    if float(array.max()) == float(array.min()):
        raise InputError(f"{name}: image is constant (every pixel = {float(array.min())}); nothing to segment")


def normalize_intensity(array: np.ndarray, clip_percentiles=(0.5, 99.5)) -> np.ndarray:
    """Percentile clipping then z-score, over one slice. Returns float32."""
    low, high = np.percentile(array, clip_percentiles)
    clipped = np.clip(array, low, high)
    std = clipped.std()
    if std < 1e-8:  # constant after clipping (e.g. a tiny bright spot): fall back to unclipped
        clipped, std = array, array.std()
    return ((clipped - clipped.mean()) / max(float(std), 1e-8)).astype(np.float32)


def square_boxes(boxes: torch.Tensor, margin: float) -> torch.Tensor:
    """Square boxes centred on ``boxes`` (x_min, y_min, x_max, y_max; pixels, inclusive) with side
    ``max(w, h) * (1 + 2 * margin)``. Returned as continuous coordinates (x0, y0, x1, y1) where a
    pixel index i covers [i, i + 1)."""
    boxes = boxes.to(torch.float32)
    cx = (boxes[:, 0] + boxes[:, 2] + 1) / 2
    cy = (boxes[:, 1] + boxes[:, 3] + 1) / 2
    side = torch.maximum(boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1) * (1 + 2 * margin)
    side = side.clamp_min(8.0)
    return torch.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], dim=1)


def crop_and_resize(images: torch.Tensor, crop_boxes: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """Sample ``size`` x ``size`` crops of ``images`` (B, C, H, W) at ``crop_boxes`` (B, 4 continuous
    pixel coordinates x0, y0, x1, y1). Outside the image: zeros. Works for labels with ``mode="nearest"``."""
    batch, _, height, width = images.shape
    crop_boxes = crop_boxes.to(images.device, torch.float32)
    # affine_grid maps output [-1, 1] to input [-1, 1] (align_corners=False: pixel edges)
    scale_x = (crop_boxes[:, 2] - crop_boxes[:, 0]) / width
    scale_y = (crop_boxes[:, 3] - crop_boxes[:, 1]) / height
    shift_x = (crop_boxes[:, 0] + crop_boxes[:, 2]) / width - 1
    shift_y = (crop_boxes[:, 1] + crop_boxes[:, 3]) / height - 1
    theta = torch.zeros(batch, 2, 3, device=images.device)
    theta[:, 0, 0], theta[:, 0, 2] = scale_x, shift_x
    theta[:, 1, 1], theta[:, 1, 2] = scale_y, shift_y
    grid = F.affine_grid(theta, (batch, images.shape[1], size, size), align_corners=False)
    return F.grid_sample(images.float(), grid, mode=mode, padding_mode="zeros", align_corners=False)


def _groups_by_shape(arrays: list) -> dict:
    """``{(height, width): [indices]}`` of 2D arrays, in first-seen order: slices batched together."""
    groups = {}
    for i, array in enumerate(arrays):
        groups.setdefault(tuple(np.shape(array)), []).append(i)
    return groups


#: The ROI stage's tuned inference settings (ACDC validation split; see :mod:`halsr_hf.roi_stage`),
#: with their defaults. They are attributes of the image processor, so they are saved in
#: ``preprocessor_config.json`` and travel with a checkpoint; a pipeline call overrides any of them
#: (``pipe(x, low_confidence=0.8)``).
ROI_STAGE_SETTINGS = {
    "presence_threshold": 0.5,
    "localizer_threshold": 0.5,
    "low_confidence": 0.9,
    "consensus_confidence": 0.9,
    "consensus_max_offset": 0.5,
    "consensus_extend_threshold": 0.1,
    "second_look_offset": 0.1,
    "second_look_scale": 1.25,
    # the clean-up after segmentation: the largest LV component with 4- or 8-connectivity
    # (roi_stage.keep_largest_component), and the base-of-the-ventricle rule (roi_stage.basal_rule:
    # in a stack, basal slices whose cavity enclosure by myocardium is below this value are
    # removed; 0 = off)
    "component_connectivity": 4,
    "basal_enclosure_threshold": 0.0,
    # the stack's largest 3D LV component (roi_stage.largest_stack_component): slices whose LV is not
    # part of it are removed (flag outside_lv_range); 1 = on, 0 = off
    "stack_component": 0,
    # at the apical end, a slice whose LV is more than this many times its inward neighbour's is past
    # the apex and removed (roi_stage.apex_rule); 0 = off
    "apex_growth": 0,
    # where ED and ES of one subject are segmented together (cohorts, halsr-hf ef, the evaluation's
    # ED/ES pairs): the ES slices with an LV must have an LV at ED (roi_stage.es_within_ed); 1 = on
    "es_within_ed": 0,
}


def size_dict(size, name: str = "size") -> dict:
    """``{"height": h, "width": w}`` from an int (older configs saved ``"size": 128``) or such a dict.
    HALSR-Net's crops are square (a square box around the LV): height and width must be equal."""
    if isinstance(size, dict):
        if set(size) != {"height", "width"}:
            raise InputError(f"{name}: expected an int or {{'height': ..., 'width': ...}}, got {size!r}")
        height, width = int(size["height"]), int(size["width"])
    else:
        height = width = int(size)
    if height != width or height < 1:
        raise InputError(f"{name}: the crops are square, height and width must be equal and positive, got {height}x{width}")
    return {"height": height, "width": width}


class HalsrImageProcessor(BaseImageProcessor):
    r"""Image processor of the cardiac LV segmentation pipeline (see the module docstring).

    Args:
        size (`dict[str, int]`, defaults to ``{"height": 128, "width": 128}``): size of the square
            crop fed to HALSR-Net (SegFormer's convention; an int ``n``, as older configs saved it,
            means ``{"height": n, "width": n}``). :attr:`crop_size` is the side as an int.
        roi_size (`int`, defaults to 128): side of the square image fed to the ROI model.
        crop_margin (`float`, defaults to 0.25): margin added on each side of the LV box, as a
            fraction of the box's larger side, before cropping for HALSR-Net.
        clip_percentiles (`tuple[float, float]`, defaults to ``(0.5, 99.5)``): intensity clipping.
        max_image_size (`int`, defaults to 4096): larger slices are refused with :class:`InputError`.
        min_image_size (`int`, defaults to 8): smaller slices are refused.
        presence_threshold (`float`, defaults to 0.5): minimum ROI-stage LV probability for a slice
            to be segmented.
        localizer_threshold (`float`, defaults to 0.5): the localiser's LV probability above which
            cells form candidate regions (when none does, regions above ``presence_threshold``
            are taken, if that is lower).
        low_confidence (`float`, defaults to 0.9): a segmented slice whose ROI-stage probability is
            below this gets the ``low_roi_confidence`` flag.
        consensus_confidence (`float`, defaults to 0.9), consensus_max_offset (`float`, defaults to
            0.5), consensus_extend_threshold (`float`, defaults to 0.1): the volume consensus
            (:func:`halsr_hf.roi_stage.volume_consensus`); tuned on the ACDC validation split
            (20 volumes: LV-in-crop 97.0 % -> 98.0 %, MYO Dice 0.906 -> 0.909).
        second_look_offset (`float`, defaults to 0.1), second_look_scale (`float`, defaults to 1.25):
            when the pipeline crops again (:func:`halsr_hf.roi_stage.second_look_box`).

    The last eight are the ROI stage's inference settings (:data:`ROI_STAGE_SETTINGS`): saved with
    the processor, overridable per pipeline call.
    """

    model_input_names = ["pixel_values"]
    #: keys of a saved ``preprocessor_config.json`` (or passed by ``from_pretrained``) that are not settings
    _METADATA_KEYS = ("image_processor_type", "processor_class", "_processor_class", "auto_map")

    def __init__(
        self,
        size=None,
        roi_size: int = 128,
        crop_margin: float = 0.25,
        clip_percentiles=(0.5, 99.5),
        max_image_size: int = 4096,
        min_image_size: int = 8,
        **kwargs,
    ):
        for key in self._METADATA_KEYS:
            kwargs.pop(key, None)
        settings = {key: float(kwargs.pop(key, default)) for key, default in ROI_STAGE_SETTINGS.items()}
        check_no_unknown_kwargs(
            kwargs, "HalsrImageProcessor",
            ("size", "roi_size", "crop_margin", "clip_percentiles", "max_image_size", "min_image_size", *ROI_STAGE_SETTINGS),
        )
        super().__init__()
        self.size = size_dict(128 if size is None else size)
        self.roi_size = int(roi_size)
        self.crop_margin = float(crop_margin)
        self.clip_percentiles = list(clip_percentiles)
        self.max_image_size = int(max_image_size)
        self.min_image_size = int(min_image_size)
        for key, value in settings.items():
            setattr(self, key, value)

    @property
    def crop_size(self) -> int:
        """Side of HALSR-Net's square crop, in pixels (``size["height"]``)."""
        return int(self.size["height"])

    def roi_stage_settings(self, **overrides) -> dict:
        """The ROI stage's settings of this processor (:data:`ROI_STAGE_SETTINGS`), with ``overrides``
        (None values ignored) applied."""
        check_no_unknown_kwargs({k: v for k, v in overrides.items() if k not in ROI_STAGE_SETTINGS},
                                "roi_stage_settings", tuple(ROI_STAGE_SETTINGS))
        settings = {key: float(getattr(self, key, default)) for key, default in ROI_STAGE_SETTINGS.items()}
        settings.update({k: float(v) for k, v in overrides.items() if v is not None})
        return settings

    # -- single slices ---------------------------------------------------------------------

    def prepare_slice(self, image, name: str = "image") -> np.ndarray:
        """Gray float32, validated, intensity-normalised (H, W) array at the input's size."""
        array = to_gray_float32(image, name)
        validate_slice(array, name, self.max_image_size, self.min_image_size)
        return normalize_intensity(array, tuple(self.clip_percentiles))

    def _as_list(self, images):
        if isinstance(images, (list, tuple)):
            return list(images)
        if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 3 and images.shape[0] > 4 and images.shape[-1] > 4:
            return list(images)
        return [images]

    def _stack_padded_square(self, normalized: list) -> tuple:
        """Zero-pad each slice to a square (bottom/right) and resize to roi_size. Returns the batch
        and the padded side of each slice (pixels). Slices of one size (a volume's) are padded and
        resized together, in one call (the same arithmetic per slice as one at a time)."""
        out = [None] * len(normalized)
        sides = [max(np.shape(array)) for array in normalized]
        for (height, width), indices in _groups_by_shape(normalized).items():
            side = max(height, width)
            tensor = torch.stack([torch.as_tensor(normalized[i]) for i in indices])[:, None]
            tensor = F.pad(tensor, (0, side - width, 0, side - height))
            resized = F.interpolate(tensor, size=(self.roi_size, self.roi_size), mode="bilinear", align_corners=False,
                                    antialias=side > self.roi_size)
            for j, i in enumerate(indices):
                out[i] = resized[j : j + 1]
        return torch.cat(out), sides

    # -- the transformers entry point ------------------------------------------------------

    def __call__(self, images=None, **kwargs) -> BatchFeature:
        return self.preprocess(images, **kwargs)

    def preprocess(self, images=None, segmentation_maps=None, boxes=None, crop_boxes=None, do_normalize: bool = True,
                   return_tensors="pt", **kwargs) -> BatchFeature:
        """HALSR-Net input, as SegFormer's processor gives it: ``pixel_values`` (B, 1, size, size)
        crops around ``boxes`` (B inclusive pixel boxes ``[x_min, y_min, x_max, y_max]``, e.g. from
        :meth:`post_process_roi`) or, without boxes (or where a box is None), of the whole slice
        padded to a square; with ``segmentation_maps`` (one (H, W) label map per image), ``labels``
        (B, size, size) long: the same crops of the maps, nearest-neighbour, 0 outside the image.
        ``model(**processor(images, segmentation_maps=maps))`` returns the loss.

        Also returns ``crop_boxes`` (B, 4) and ``original_sizes`` (B, 2), the geometry for
        :meth:`post_process_semantic_segmentation` (the model accepts and ignores them, as SAM's
        does its processor's sizes, so ``model(**inputs)`` works).

        ``crop_boxes``: the crops' own continuous pixel boxes (x0, y0, x1, y1), instead of ``boxes``
        (training crops with a random margin and jitter). ``do_normalize=False``: the images are
        already intensity-normalised (:func:`normalize_intensity` of the whole slice, as training
        sources give them, possibly augmented after); they are only cropped."""
        check_no_unknown_kwargs(kwargs, "HalsrImageProcessor.preprocess",
                                ("images", "segmentation_maps", "boxes", "crop_boxes", "do_normalize", "return_tensors"))
        if images is None:
            raise InputError("HalsrImageProcessor.preprocess: no images given")
        images = self._as_list(images)
        if do_normalize:
            normalized = [self.prepare_slice(image, f"image {i}") for i, image in enumerate(images)]
        else:
            normalized = [to_gray_float32(image, f"image {i}") for i, image in enumerate(images)]
        if boxes is not None and crop_boxes is not None:
            raise InputError("HalsrImageProcessor.preprocess: pass boxes (LV boxes) or crop_boxes (the crops themselves), not both")
        if boxes is not None:
            one_box = getattr(boxes, "ndim", None) == 1 or (
                isinstance(boxes, (list, tuple)) and len(boxes) == 4 and all(isinstance(v, (int, float)) for v in boxes))
            boxes = [boxes] if one_box else list(boxes)
            if len(boxes) != len(normalized):
                raise InputError(f"boxes: {len(boxes)} boxes for {len(normalized)} images")
        if crop_boxes is not None:
            crop_boxes = torch.as_tensor(crop_boxes, dtype=torch.float32).reshape(-1, 4)
            if len(crop_boxes) != len(normalized):
                raise InputError(f"crop_boxes: {len(crop_boxes)} boxes for {len(normalized)} images")
        pixel_values, crop_boxes = self.crop(normalized, boxes, crop_boxes=crop_boxes)
        data = {"pixel_values": pixel_values}
        if segmentation_maps is not None:
            maps = self._as_list(segmentation_maps)
            if len(maps) != len(normalized):
                raise InputError(f"segmentation_maps: {len(maps)} maps for {len(normalized)} images")
            data["labels"] = self.crop_labels(maps, crop_boxes, [a.shape for a in normalized])
        data["crop_boxes"] = crop_boxes
        data["original_sizes"] = torch.tensor([a.shape for a in normalized], dtype=torch.long)
        return BatchFeature(data, tensor_type=return_tensors)

    def crop_labels(self, segmentation_maps: list, crop_boxes: torch.Tensor, sizes=None) -> torch.Tensor:
        """The crops ``crop_boxes`` of label maps (each (H, W), integer ids) on the ``size`` grid,
        nearest-neighbour (ids kept, 255 "ignore" included), 0 outside the map: (B, size, size) long."""
        out = []
        for i, label in enumerate(segmentation_maps):
            label = torch.as_tensor(np.asarray(label) if not isinstance(label, torch.Tensor) else label)
            if label.ndim != 2 or (sizes is not None and tuple(label.shape) != tuple(sizes[i])):
                expected = "" if sizes is None else f" {tuple(sizes[i])}, the size of its image"
                raise InputError(f"segmentation_maps[{i}]: expected an (H, W) label map{expected}, got shape {tuple(label.shape)}")
            crop = crop_and_resize(label[None, None].float(), crop_boxes[i : i + 1], self.crop_size, mode="nearest")
            out.append(crop[0, 0].long())
        return torch.stack(out)

    def preprocess_roi(self, normalized: list) -> tuple:
        """ROI-model input from normalised slices: (B, 1, roi_size, roi_size) and each slice's padded side."""
        return self._stack_padded_square(normalized)

    # -- the ROI stage outside the pipeline ------------------------------------------------

    def preprocess_for_roi(self, images, return_tensors="pt", **kwargs) -> BatchFeature:
        """ROI-model input from raw slices (as :meth:`preprocess` takes them): ``pixel_values``
        (B, 1, roi_size, roi_size), each slice normalised, zero-padded to a square and resized, and
        ``original_sizes`` (B, 2) for :meth:`post_process_roi`."""
        check_no_unknown_kwargs(kwargs, "HalsrImageProcessor.preprocess_for_roi", ("images", "return_tensors"))
        normalized = [self.prepare_slice(image, f"image {i}") for i, image in enumerate(self._as_list(images))]
        pixel_values, _ = self.preprocess_roi(normalized)
        sizes = torch.tensor([a.shape for a in normalized], dtype=torch.long)
        return BatchFeature({"pixel_values": pixel_values, "original_sizes": sizes}, tensor_type=return_tensors)

    def post_process_roi(self, outputs, original_sizes, presence_threshold: float | None = None,
                         localizer_threshold: float | None = None, return_results: bool = False) -> list:
        """Boxes from a ROI model's output, as the pipeline computes them: inclusive pixel boxes
        ``[x_min, y_min, x_max, y_max]`` (float tensors) on each original slice, or ``None`` where the
        LV probability is below ``presence_threshold`` or the box is degenerate (the pipeline then
        segments nothing). ``outputs`` is the box regressor's (``pred_boxes``, ``presence_logits``)
        or the localiser's (``logits``, background/lv, on the ``roi_size`` grid); the rules are in
        :mod:`halsr_hf.roi_stage`. The thresholds default to this processor's settings.
        ``return_results=True`` returns its :class:`RoiResult` objects (with the candidates the
        volume consensus uses, and ``degenerate``) instead of boxes."""
        settings = self.roi_stage_settings(presence_threshold=presence_threshold, localizer_threshold=localizer_threshold)
        presence_threshold, localizer_threshold = settings["presence_threshold"], settings["localizer_threshold"]
        sizes = [tuple(int(v) for v in size) for size in original_sizes]
        sides = [max(size) for size in sizes]
        logits = getattr(outputs, "logits", None)
        if logits is None and isinstance(outputs, torch.Tensor) and outputs.ndim == 4:
            logits = outputs
        if logits is not None:
            if len(sizes) != len(logits):
                raise InputError(f"original_sizes has {len(sizes)} entries for {len(logits)} localiser outputs")
            probability = torch.softmax(logits.detach().float(), dim=1)[:, 1].cpu().numpy()
            results = localizer_results(probability, sides, sizes, threshold=localizer_threshold,
                                        presence_threshold=presence_threshold)
        else:
            pred_boxes = outputs.pred_boxes if hasattr(outputs, "pred_boxes") else outputs[0]
            presence = outputs.presence_logits if hasattr(outputs, "presence_logits") else None
            if len(sizes) != len(pred_boxes):
                raise InputError(f"original_sizes has {len(sizes)} entries for {len(pred_boxes)} predicted boxes")
            results = regressor_results(pred_boxes.detach(), None if presence is None else presence.detach(), sides, sizes)
        for result in results:
            result.degenerate = result.box is not None and (result.box[2] - result.box[0] < 1 or result.box[3] - result.box[1] < 1)
            result.found = result.box is not None and result.probability >= presence_threshold and not result.degenerate
        if return_results:
            return results
        return [torch.tensor(r.box, dtype=torch.float32) if r.found else None for r in results]

    def crop(self, normalized: list, boxes=None, crop_boxes=None) -> tuple:
        """Crops for HALSR-Net from normalised slices (see the module docstring), around ``boxes``
        (LV boxes; None: the whole slice) or at ``crop_boxes`` (the crops themselves, (B, 4)
        continuous pixel coordinates). Returns the crops and their crop boxes."""
        out_boxes = []
        for i, array in enumerate(normalized):
            height, width = array.shape
            if crop_boxes is not None:
                crop_box = torch.as_tensor(crop_boxes[i], dtype=torch.float32).reshape(1, 4)
            elif boxes is None or boxes[i] is None:
                side = float(max(height, width))
                crop_box = torch.tensor([[0.0, 0.0, side, side]])
            else:
                crop_box = square_boxes(torch.as_tensor(boxes[i], dtype=torch.float32).reshape(1, 4), self.crop_margin)
            out_boxes.append(crop_box)
        out_boxes = torch.cat(out_boxes) if out_boxes else torch.zeros(0, 4)
        crops = [None] * len(normalized)
        for indices in _groups_by_shape(normalized).values():  # slices of one size (a volume's): one grid_sample
            images = torch.stack([torch.as_tensor(normalized[i]) for i in indices])[:, None]
            sampled = crop_and_resize(images, out_boxes[indices], self.crop_size)
            for j, i in enumerate(indices):
                crops[i] = sampled[j : j + 1]
        return torch.cat(crops), out_boxes

    def paste(self, logits: torch.Tensor, crop_boxes: torch.Tensor, original_sizes, return_probabilities: bool = False):
        """Map crop logits (B, K, s, s) back into each slice's grid; returns uint8 label maps (and,
        with ``return_probabilities``, float32 maps of the softmax probability of each pixel's
        label, 0 outside the crop)."""
        label_maps, probability_maps = [], []
        for i in range(logits.shape[0]):
            height, width = (int(v) for v in original_sizes[i])
            x0, y0, x1, y1 = (float(v) for v in crop_boxes[i])
            label_map = np.zeros((height, width), dtype=np.uint8)
            probability_map = np.zeros((height, width), dtype=np.float32)
            label_maps.append(label_map)
            probability_maps.append(probability_map)
            c0, c1 = max(int(np.floor(x0)), 0), min(int(np.ceil(x1)), width)
            r0, r1 = max(int(np.floor(y0)), 0), min(int(np.ceil(y1)), height)
            if c1 <= c0 or r1 <= r0:
                continue
            # pixel centres of the footprint, in the crop's normalised [-1, 1] coordinates
            xs = ((torch.arange(c0, c1, dtype=torch.float32) + 0.5) - x0) / (x1 - x0) * 2 - 1
            ys = ((torch.arange(r0, r1, dtype=torch.float32) + 0.5) - y0) / (y1 - y0) * 2 - 1
            grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)[None]
            sampled = F.grid_sample(logits[i : i + 1].float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
            # argmax over a contiguous last axis: ~10x faster than over the strided first axis, same result
            label_map[r0:r1, c0:c1] = sampled[0].permute(1, 2, 0).contiguous().argmax(-1).to(torch.uint8).numpy()
            if return_probabilities:
                probability_map[r0:r1, c0:c1] = torch.softmax(sampled[0], dim=0).amax(dim=0).numpy()
        return (label_maps, probability_maps) if return_probabilities else label_maps

    def post_process_semantic_segmentation(self, outputs, target_sizes=None, crop_boxes=None) -> list:
        """Label maps on each slice's own grid, as the pipeline computes them. Returns a list of
        (H, W) long tensors.

        Args:
            outputs: the model output (or its ``logits``, (B, K, s, s) for the crops of :meth:`preprocess`).
            target_sizes: (height, width) of each original slice: ``inputs["original_sizes"]``.
                Without it, the arg-max at the logits' size.
            crop_boxes: ``inputs["crop_boxes"]`` of :meth:`preprocess`. Without it, each crop is taken
                to be the whole slice padded to a square (what :meth:`preprocess` does without
                ``boxes``): the logits are mapped back to the top-left ``target_sizes[i]`` of that
                square, never stretched to a non-square slice.
        """
        logits = outputs.logits if hasattr(outputs, "logits") else outputs
        if target_sizes is not None and len(target_sizes) != len(logits):
            raise InputError(f"target_sizes has {len(target_sizes)} entries for a batch of {len(logits)} logits")
        if target_sizes is None:
            if crop_boxes is not None:
                raise InputError("crop_boxes needs target_sizes (the original_sizes returned by the processor)")
            return [logits[i].argmax(dim=0) for i in range(len(logits))]
        sizes = [tuple(int(v) for v in size) for size in target_sizes]
        if crop_boxes is None:
            crop_boxes = torch.tensor([[0.0, 0.0, float(max(size)), float(max(size))] for size in sizes])
        elif len(crop_boxes) != len(logits):
            raise InputError(f"crop_boxes has {len(crop_boxes)} entries for a batch of {len(logits)} logits")
        maps = self.paste(logits.detach().float().cpu(), torch.as_tensor(crop_boxes, dtype=torch.float32), sizes)
        return [torch.from_numpy(label_map).long() for label_map in maps]
