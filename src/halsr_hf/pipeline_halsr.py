"""``pipeline("cardiac-lv-segmentation")``: two-stage LV segmentation of short-axis cine MRI.

Stage 1, the ROI regressor, predicts the LV box on the whole slice (and whether the LV is there
at all); stage 2, HALSR-Net, segments a square crop around that box; the crop's prediction is
pasted back onto the input's grid. Without a ROI model the whole slice (padded to a square) is
segmented.

The ROI regressor is looked up, in order: the ``roi_model=`` argument (a model or a folder/Hub
id), then the ``roi/`` sub-folder of the segmentation model's folder or Hub repository
(``config.roi_subfolder``, default ``"roi"``).

Inputs: a path (PNG, JPEG, TIFF, 16-bit PNG, DICOM, NIfTI 2D/3D/4D with ``frame=``), a PIL image,
a numpy array or torch tensor (H, W) or (Z, H, W), or a list of these (slices of all inputs are
batched together, ``batch_size`` at a time).

Output for a 2D input, a dict: ``label_map`` (uint8, input size, 0 background / 1 lv_cavity /
2 myocardium), ``segments`` (the image-segmentation pipeline's format: ``label``, ``score``,
``mask`` as PIL ``L`` 0/255, one per class present), ``roi`` (inclusive pixel box
``[x_min, y_min, x_max, y_max]`` or None), ``lv_found``, ``message``, ``areas_px``,
``areas_mm2`` (None unless spacing is known from the file or ``pixel_spacing=``),
``pixel_spacing``. For a volume: ``label_map`` (Z, H, W), ``slices`` (the per-slice dicts, without
their label maps), ``volumes_ml`` (when spacing and slice thickness are known), ``pixel_spacing``,
``slice_thickness``.
"""

import numpy as np
import torch
from transformers import Pipeline

from .errors import InputError
from .image_io import load_input, save_mask
from .image_processing_halsr import normalize_intensity, to_gray_float32, validate_slice
from .modeling_roi import LvRoiRegressor

TASK = "cardiac-lv-segmentation"


def _dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 rotations/flips of the last two axes (k in 0..7)."""
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return x.transpose(-2, -1) if k >= 4 else x


def _dihedral_inverse(x: torch.Tensor, k: int) -> torch.Tensor:
    if k >= 4:
        x = x.transpose(-2, -1)
    return torch.rot90(x, -(k % 4), dims=(-2, -1))


class CardiacLVSegmentationPipeline(Pipeline):
    """See the module docstring. Call parameters:

    Args:
        batch_size (`int`, defaults to 16): slices per forward pass.
        frame (`int`): the frame of a 4D NIfTI (required for 4D inputs).
        pixel_spacing (`tuple[float, float]`): (row_mm, col_mm), overrides the file's.
        slice_thickness (`float`): slice spacing in mm for volumes, overrides the file's.
        use_roi (`bool`, defaults to True): run the ROI stage when a ROI model is available.
        presence_threshold (`float`, defaults to 0.5): minimum ROI-stage LV probability.
        tta (`bool`, defaults to False): average the crop logits over the 8 rotations/flips.
        save_mask (`str`): write the mask to this ``.png`` or ``.nii.gz`` path (one input only).
        overwrite (`bool`, defaults to False): allow ``save_mask`` to replace a file.
    """

    _load_image_processor = True
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_processor = False

    def __init__(self, *args, roi_model=None, backend="torch", **kwargs):
        super().__init__(*args, **kwargs)
        self.model.eval()
        self.roi_model = self._resolve_roi_model(roi_model)
        self.set_backend(backend)

    # -- inference backend (issue 8; see docs/performance.md) -- begin
    def set_backend(self, backend="torch", onnx_dir=None):
        """Run the two networks with ``"torch"`` (default) or ``"onnx"`` (onnxruntime, CPU; the
        models are exported once, or read from ``onnx_dir`` written by ``halsr-hf export-onnx``)."""
        if backend == "onnx":
            from .onnx_backend import OnnxRunner

            runner = OnnxRunner(self.model, self.roi_model, self.image_processor.size, onnx_dir)
            self._run_segmentation, self._run_roi = runner.segment, runner.roi
        elif backend == "torch":
            self._run_segmentation = lambda pixel_values: self.model(pixel_values=pixel_values).logits
            self._run_roi = lambda pixel_values: self.roi_model(pixel_values)
        else:
            raise InputError(f"backend={backend!r}: expected 'torch' or 'onnx'")
        self.backend = backend
    # -- inference backend -- end

    # -- set-up ------------------------------------------------------------------------------

    def _resolve_roi_model(self, roi_model):
        if isinstance(roi_model, torch.nn.Module):
            model = roi_model
        elif roi_model is not None:
            try:
                model = LvRoiRegressor.from_pretrained(str(roi_model))
            except (OSError, ValueError) as error:
                raise InputError(f"roi_model={roi_model!r}: cannot load a ROI regressor there ({error})") from None
        else:
            source = getattr(self.model, "name_or_path", None) or getattr(self.model.config, "_name_or_path", None)
            subfolder = getattr(self.model.config, "roi_subfolder", "roi")
            if not source or not subfolder:
                return None
            try:
                model = LvRoiRegressor.from_pretrained(source, subfolder=subfolder)
            except (OSError, ValueError):
                return None
        if getattr(model.config, "model_type", None) != "halsr_roi" or not hasattr(model, "box"):
            raise InputError(
                f"roi_model: expected an LV ROI regressor (model_type 'halsr_roi'), got "
                f"{type(model).__name__} (model_type {getattr(model.config, 'model_type', None)!r})"
            )
        return model.to(self.device).eval()

    def save_pretrained(self, save_directory, **kwargs):
        """Save model, image processor, ``custom_pipelines`` and code, and the ROI model in ``roi/``."""
        super().save_pretrained(save_directory, **kwargs)
        if self.roi_model is not None:
            self.roi_model.save_pretrained(f"{save_directory}/roi", **kwargs)

    def _sanitize_parameters(
        self,
        frame=None,
        pixel_spacing=None,
        slice_thickness=None,
        use_roi=None,
        presence_threshold=None,
        tta=None,
        save_mask=None,
        overwrite=None,
        **kwargs,
    ):
        preprocess = {k: v for k, v in dict(frame=frame, pixel_spacing=pixel_spacing, slice_thickness=slice_thickness).items() if v is not None}
        forward = {k: v for k, v in dict(use_roi=use_roi, presence_threshold=presence_threshold, tta=tta).items() if v is not None}
        postprocess = {k: v for k, v in dict(save_mask=save_mask, overwrite=overwrite).items() if v is not None}
        return preprocess, forward, postprocess

    # -- the three steps ---------------------------------------------------------------------

    def preprocess(self, inputs, frame=None, pixel_spacing=None, slice_thickness=None):
        loaded = load_input(inputs, frame=frame, pixel_spacing=pixel_spacing, slice_thickness=slice_thickness)
        processor = self.image_processor
        normalized = []
        for index, array in enumerate(loaded.slices):
            name = f"{loaded.name} slice {index}" if loaded.is_volume else loaded.name
            array = to_gray_float32(array, name)
            validate_slice(array, name, processor.max_image_size, processor.min_image_size)
            normalized.append(normalize_intensity(array, tuple(processor.clip_percentiles)))
        return {"loaded": loaded, "normalized": normalized}

    @torch.inference_mode()
    def _forward(self, model_inputs, use_roi=True, presence_threshold=0.5, tta=False, batch_size=16):
        normalized = model_inputs["normalized"]
        processor = self.image_processor
        sizes = [a.shape for a in normalized]
        count = len(normalized)
        boxes = [None] * count
        found = [True] * count
        probabilities = [None] * count
        if use_roi and self.roi_model is not None:
            for start in range(0, count, batch_size):
                chunk = normalized[start : start + batch_size]
                roi_inputs, sides = processor.preprocess_roi(chunk)
                out = self._run_roi(roi_inputs.to(self.device, dtype=self.roi_model.dtype))
                chunk_boxes = processor.boxes_from_roi_output(out.pred_boxes, sides, sizes[start : start + batch_size])
                for j in range(len(chunk)):
                    box = chunk_boxes[j]
                    probability = 1.0 if out.presence_logits is None else float(torch.sigmoid(out.presence_logits[j]))
                    probabilities[start + j] = probability
                    degenerate = float(box[2] - box[0]) < 2 or float(box[3] - box[1]) < 2
                    found[start + j] = probability >= presence_threshold and not degenerate
                    boxes[start + j] = box
        to_segment = [i for i in range(count) if found[i]]
        label_maps = [np.zeros(size, dtype=np.uint8) for size in sizes]
        scores = [{} for _ in range(count)]
        for start in range(0, len(to_segment), batch_size):
            indices = to_segment[start : start + batch_size]
            crops, crop_boxes = processor.crop([normalized[i] for i in indices], [boxes[i] for i in indices])
            crops = crops.to(self.device, dtype=self.model.dtype)
            if tta:
                logits = sum(_dihedral_inverse(self._run_segmentation(_dihedral(crops, k)), k) for k in range(8)) / 8
            else:
                logits = self._run_segmentation(crops)
            logits = logits.float().cpu()
            pasted = processor.paste(logits, crop_boxes, [sizes[i] for i in indices])
            probs = torch.softmax(logits, dim=1)
            predicted = probs.permute(0, 2, 3, 1).contiguous().argmax(-1)  # contiguous axis: ~10x faster, same result
            for j, i in enumerate(indices):
                label_maps[i] = pasted[j]
                for class_id in range(1, probs.shape[1]):
                    region = predicted[j] == class_id
                    if region.any():
                        scores[i][class_id] = float(probs[j, class_id][region].mean())
        roi = [None if not found[i] or boxes[i] is None else [int(round(float(v))) for v in boxes[i]] for i in range(count)]
        return {"loaded": model_inputs["loaded"], "label_maps": label_maps, "roi": roi, "lv_found": found,
                "lv_probability": probabilities, "scores": scores}

    def postprocess(self, model_outputs, save_mask=None, overwrite=False):
        from PIL import Image

        from .clinical import areas as measure_areas
        from .clinical import volumes_ml as measure_volumes

        loaded = model_outputs["loaded"]
        id2label = {int(k): v for k, v in self.model.config.id2label.items()}
        results = []
        for i, label_map in enumerate(model_outputs["label_maps"]):
            found = model_outputs["lv_found"][i]
            segments = [
                {"label": id2label.get(class_id, str(class_id)), "score": score,
                 "mask": Image.fromarray(((label_map == class_id) * 255).astype(np.uint8), mode="L")}
                for class_id, score in sorted(model_outputs["scores"][i].items())
            ]
            areas = measure_areas(label_map, loaded.pixel_spacing)
            results.append({
                "label_map": label_map,
                "segments": segments,
                "roi": model_outputs["roi"][i],
                "lv_found": found,
                "lv_probability": model_outputs["lv_probability"][i],
                "message": None if found else "no LV found by the ROI stage (probability below presence_threshold); nothing segmented",
                "areas_px": {name: areas[f"{name}_pixels"] for name in ("lv_cavity", "myocardium")},
                "areas_mm2": None if loaded.pixel_spacing is None
                else {name: areas[f"{name}_mm2"] for name in ("lv_cavity", "myocardium")},
                "pixel_spacing": loaded.pixel_spacing,
            })
        if not loaded.is_volume:
            output = results[0]
            output["input"] = loaded.name
        else:
            volume = np.stack([r.pop("label_map") for r in results])
            volumes = None
            if loaded.pixel_spacing is not None and loaded.slice_thickness is not None:
                measured = measure_volumes(volume, loaded.pixel_spacing, loaded.slice_thickness)
                volumes = {name: measured[f"{name}_ml"] for name in ("lv_cavity", "myocardium")}
            output = {"input": loaded.name, "label_map": volume, "slices": results, "volumes_ml": volumes,
                      "pixel_spacing": loaded.pixel_spacing, "slice_thickness": loaded.slice_thickness,
                      "frame": loaded.frame}
        if save_mask is not None:
            output["mask_path"] = str(save_mask_file(output["label_map"], save_mask, loaded, overwrite))
        return output

    # -- display -------------------------------------------------------------------------------

    @staticmethod
    def overlay(image, result: dict, slice_index: int | None = None, alpha: float = 0.45):
        """The paper's figure style for one result: the slice in gray, LV cavity red, myocardium
        blue, ROI box yellow (a PIL RGB image). ``image`` is the 2D slice (or the volume, with
        ``slice_index``) that was segmented."""
        from .visualize import overlay

        if slice_index is None:
            return overlay(np.asarray(image), result["label_map"], result.get("roi"), alpha=alpha)
        return overlay(np.asarray(image)[slice_index], result["label_map"][slice_index],
                       result["slices"][slice_index]["roi"], alpha=alpha)

    # -- batching across inputs ---------------------------------------------------------------

    def __call__(self, inputs, **kwargs):
        """Segment one input or a list; slices of all inputs are batched ``batch_size`` at a time."""
        batch_size = int(kwargs.pop("batch_size", None) or getattr(self, "_batch_size", None) or 16)
        preprocess_params, forward_params, postprocess_params = self._sanitize_parameters(**kwargs)
        single = not isinstance(inputs, (list, tuple))
        items = [inputs] if single else list(inputs)
        if not single and postprocess_params.get("save_mask") is not None:
            raise InputError("save_mask= takes one input; for several inputs call the pipeline once per input")
        prepared = [self.preprocess(item, **preprocess_params) for item in items]
        merged = {"loaded": None, "normalized": [a for p in prepared for a in p["normalized"]]}
        outputs = self._forward(merged, batch_size=batch_size, **forward_params)
        results, start = [], 0
        for p in prepared:
            stop = start + len(p["normalized"])
            part = {key: value[start:stop] for key, value in outputs.items() if key != "loaded"}
            part["loaded"] = p["loaded"]
            results.append(self.postprocess(part, **postprocess_params))
            start = stop
        return results[0] if single else results


def save_mask_file(label_map, path, loaded=None, overwrite=False):
    """Write a pipeline label map as PNG or NIfTI (see :func:`image_io.save_mask`)."""
    return save_mask(label_map, path, loaded, overwrite=overwrite)
