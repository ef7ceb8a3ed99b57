"""``pipeline("cardiac-lv-segmentation")``: two-stage LV segmentation of short-axis cine MRI.

Stage 1, the ROI regressor, predicts the LV box on the whole slice (and whether the LV is there
at all); stage 2, HALSR-Net, segments a square crop around that box; the crop's prediction is
pasted back onto the input's grid. Without a ROI model the whole slice (padded to a square) is
segmented.

The ROI regressor is looked up, in order: the ``roi_model=`` argument (a model or a folder/Hub
id), then the ``roi/`` sub-folder of the segmentation model's folder or Hub repository
(``config.roi_subfolder``, default ``"roi"``).

Inputs: a path (PNG, JPEG, TIFF, 16-bit PNG, DICOM, ``.npy``, NIfTI 2D/3D/4D with ``frame=``, or a
folder holding one DICOM series), a PIL image, a numpy array or torch tensor (H, W) or (Z, H, W),
an ``image_io.LoadedInput``, or a list of these (slices of all inputs are batched together,
``batch_size`` at a time).

What is a stack (the volume consensus runs within one stack, never across):

- each volume is its own stack: a 3D array, a 3D NIfTI, one frame of a 4D NIfTI, a multi-frame
  DICOM file, a DICOM series (a folder of one SeriesInstanceUID, its files sorted along the slice
  normal; a cine series has one volume per phase, chosen with ``frame=`` like a 4D NIfTI; rules in
  :mod:`halsr_hf.dicom_series`);
- a 2D input is a stack of one, unless ``stack=True``: then the 2D inputs of the list, in the order
  given, are one stack. ``stack=True`` never joins volumes (each stays its own stack), and refuses
  2D DICOM files of different series or of one slice position (two phases).

Output for a 2D input, a dict: ``label_map`` (uint8, input size, 0 background / 1 lv_cavity /
2 myocardium), ``segments`` (the image-segmentation pipeline's format: ``label``, ``score``,
``mask`` as PIL ``L`` 0/255, one per class present), ``roi`` (inclusive pixel box
``[x_min, y_min, x_max, y_max]`` or None), ``lv_found``, ``message``, ``areas_px``,
``areas_mm2`` (None unless spacing is known from the file or ``pixel_spacing=``),
``pixel_spacing``. For a volume: ``label_map`` (Z, H, W), ``slices`` (the per-slice dicts, without
their label maps), ``volumes_ml`` (when spacing and slice thickness are known), ``pixel_spacing``,
``slice_thickness``.
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import Pipeline, PretrainedConfig

from .clinical import areas as measure_areas
from .clinical import volumes_ml as measure_volumes
from .errors import InputError
from .image_io import check_stack, load_input, save_mask
from .modeling_halsr import HalsrForSemanticSegmentation
from .modeling_roi import LvRoiRegressor
from .roi_stage import (
    RoiResult,
    cavity_not_enclosed,
    keep_largest_component,
    order_flags,
    second_look_box,
    touches_border,
    volume_consensus,
)

TASK = "cardiac-lv-segmentation"


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 rotations/flips of the last two axes (k in 0..7; a tensor or a numpy
    array, returned as the same kind)."""
    if isinstance(x, np.ndarray):
        return np.ascontiguousarray(dihedral(torch.from_numpy(np.ascontiguousarray(x)), k).numpy())
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return x.transpose(-2, -1) if k >= 4 else x


def dihedral_inverse(x: torch.Tensor, k: int) -> torch.Tensor:
    """Undo :func:`dihedral` ``k``."""
    if isinstance(x, np.ndarray):
        return np.ascontiguousarray(dihedral_inverse(torch.from_numpy(np.ascontiguousarray(x)), k).numpy())
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
        second_look (`int`, defaults to 2): at most this many re-crops around the predicted LV
            (0: off; the rule is in :mod:`halsr_hf.roi_stage`).
        consensus (`bool`, defaults to True): correct outlier ROI boxes of a volume's slices from
            the stack's median LV centre.
        stack (`bool`, defaults to False): treat the 2D inputs of a list as the slices of one stack,
            in the order given (for the consensus); volumes in the list stay their own stacks.
        save_mask (`str`): write the mask to this ``.png`` or ``.nii.gz`` path (one input only).
        overwrite (`bool`, defaults to False): allow ``save_mask`` to replace a file.

    Thresholds of the ROI stage (attributes, tuned on the ACDC validation split; see
    :mod:`halsr_hf.roi_stage`): ``localizer_threshold`` 0.5, ``low_confidence`` 0.9,
    ``consensus_confidence`` 0.9, ``consensus_max_offset`` 0.5, ``consensus_extend_threshold`` 0.1
    (ACDC validation, 20 volumes: LV-in-crop 97.0 % -> 98.0 %, MYO Dice 0.906 -> 0.909),
    ``second_look_offset`` 0.1, ``second_look_scale`` 1.25.

    Every slice's result has ``qc`` (quality flags, :data:`halsr_hf.roi_stage.QC_FLAGS`) and a
    ``message`` that says what was done.
    """

    localizer_threshold = 0.5
    low_confidence = 0.9
    consensus_confidence = 0.9
    consensus_max_offset = 0.5
    consensus_extend_threshold = 0.1
    second_look_offset = 0.1
    second_look_scale = 1.25

    _load_image_processor = True
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_processor = False
    _load_video_processor = False  # else transformers looks for one in the auto_map and prompts on stdin

    def __init__(self, *args, roi_model=None, backend="torch", **kwargs):
        super().__init__(*args, **kwargs)
        self.model.eval()
        self.roi_kind = None
        self.roi_model = self._resolve_roi_model(roi_model)
        self.set_backend(backend)

    # -- inference backend (issue 8; see docs/performance.md) -- begin
    def set_backend(self, backend="torch", onnx_dir=None):
        """Run the two networks with ``"torch"`` (default) or ``"onnx"`` (onnxruntime, CPU; the
        models are exported once, or read from ``onnx_dir`` written by ``halsr-hf export-onnx``)."""
        if backend == "onnx":
            from .onnx_backend import OnnxRunner

            runner = OnnxRunner(self.model, self.roi_model, self.image_processor.size, onnx_dir)
            self._run_segmentation, self._run_roi, self._run_localizer = runner.segment, runner.roi, runner.localize
        elif backend == "torch":
            self._run_segmentation = lambda pixel_values: self.model(pixel_values=pixel_values).logits
            self._run_roi = lambda pixel_values: self.roi_model(pixel_values)
            self._run_localizer = lambda pixel_values: self.roi_model(pixel_values=pixel_values).logits
        else:
            raise InputError(f"backend={backend!r}: expected 'torch' or 'onnx'")
        self.backend = backend
    # -- inference backend -- end

    # -- set-up ------------------------------------------------------------------------------

    def _resolve_roi_model(self, roi_model):
        """The ROI model: ``roi_model=`` (a model, folder or Hub id), else the ``roi/`` sub-folder of
        the segmentation model. A sub-folder that is absent means "no ROI stage"; one that exists but
        does not load is an error (never a silent switch to whole-slice segmentation)."""
        if isinstance(roi_model, torch.nn.Module):
            model = roi_model
        elif roi_model is not None:
            model = load_roi_model(str(roi_model), None, f"roi_model={roi_model!r}")
        else:
            source = getattr(self.model, "name_or_path", None) or getattr(self.model.config, "_name_or_path", None)
            subfolder = getattr(self.model.config, "roi_subfolder", "roi")
            if not source or not subfolder:
                return None
            local = Path(source)
            if local.is_dir() and not (local / subfolder).exists():
                return None
            try:
                model = load_roi_model(source, subfolder, f"the ROI model in {source}/{subfolder}")
            except InputError:
                if local.is_dir():
                    raise
                return None  # a Hub repository without a roi/ folder
        kind = _roi_kind(model)
        if kind is None:
            raise InputError(
                f"roi_model: expected an LV ROI regressor (model_type 'halsr_roi') or a localiser (a "
                f"HALSR-Net with labels background, lv), got {type(model).__name__} "
                f"(model_type {getattr(model.config, 'model_type', None)!r})"
            )
        self.roi_kind = kind
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
        second_look=None,
        consensus=None,
        stack=None,
        save_mask=None,
        overwrite=None,
        batch_size=None,
        **kwargs,
    ):
        if kwargs:
            raise InputError(
                f"unknown argument(s) {', '.join(sorted(kwargs))} for the cardiac-lv-segmentation pipeline; "
                "expected frame, pixel_spacing, slice_thickness, use_roi, presence_threshold, tta, second_look, "
                "consensus, stack, save_mask, overwrite, batch_size"
            )
        preprocess = {k: v for k, v in dict(frame=frame, pixel_spacing=pixel_spacing, slice_thickness=slice_thickness).items() if v is not None}
        forward = {k: v for k, v in dict(use_roi=use_roi, presence_threshold=presence_threshold, tta=tta,
                                         second_look=second_look, consensus=consensus, batch_size=batch_size).items() if v is not None}
        postprocess = {k: v for k, v in dict(save_mask=save_mask, overwrite=overwrite).items() if v is not None}
        if stack is not None:
            postprocess["stack"] = stack
        return preprocess, forward, postprocess

    # -- the three steps ---------------------------------------------------------------------

    def preprocess(self, inputs, frame=None, pixel_spacing=None, slice_thickness=None):
        loaded = load_input(inputs, frame=frame, pixel_spacing=pixel_spacing, slice_thickness=slice_thickness)
        normalized = [
            self.image_processor.prepare_slice(array, f"{loaded.name} slice {index}" if loaded.is_volume else loaded.name)
            for index, array in enumerate(loaded.slices)
        ]
        return {"loaded": loaded, "normalized": normalized}

    def _locate(self, normalized: list, batch_size: int, presence_threshold: float) -> list:
        """Run the ROI model on whole slices: one :class:`RoiResult` per slice."""
        results = []
        for start in range(0, len(normalized), batch_size):
            chunk = normalized[start : start + batch_size]
            roi_inputs, _ = self.image_processor.preprocess_roi(chunk)
            roi_inputs = roi_inputs.to(self.device, dtype=self.roi_model.dtype)
            out = self._run_localizer(roi_inputs) if self.roi_kind == "localizer" else self._run_roi(roi_inputs)
            results += self.image_processor.post_process_roi(
                out, [a.shape for a in chunk], presence_threshold, self.localizer_threshold, return_results=True
            )
        return results

    def _segment(self, normalized: list, indices: list, boxes: list, tta: bool, batch_size: int) -> dict:
        """Segment crops of slices ``indices`` around ``boxes`` (None: the whole slice). Returns, per
        index: the pasted label map with only its largest LV component, whether other components
        were removed, the crop's own label map, its crop box and class scores."""
        out = {}
        processor = self.image_processor
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            crops, crop_boxes = processor.crop([normalized[i] for i in chunk], [boxes[i] for i in chunk])
            crops = crops.to(self.device, dtype=self.model.dtype)
            if tta:
                logits = sum(dihedral_inverse(self._run_segmentation(dihedral(crops, k)), k) for k in range(8)) / 8
            else:
                logits = self._run_segmentation(crops)
            logits = logits.float().cpu()
            pasted = processor.paste(logits, crop_boxes, [normalized[i].shape for i in chunk])
            probs = torch.softmax(logits, dim=1)
            predicted = probs.permute(0, 2, 3, 1).contiguous().argmax(-1)  # contiguous axis: ~10x faster, same result
            for j, i in enumerate(chunk):
                scores = {}
                for class_id in range(1, probs.shape[1]):
                    region = predicted[j] == class_id
                    if region.any():
                        scores[class_id] = float(probs[j, class_id][region].mean())
                label_map, several = keep_largest_component(pasted[j])
                out[i] = (label_map, several, predicted[j].numpy(), crop_boxes[j].tolist(), scores)
        return out

    @torch.inference_mode()
    def _forward(self, model_inputs, use_roi=True, presence_threshold=0.5, tta=False, second_look=2,
                 consensus=True, batch_size=16):
        """ROI stage, volume consensus, segmentation with up to ``second_look`` re-crops, checks.
        ``model_inputs["groups"]`` gives each slice's stack (consensus runs within a stack)."""
        normalized = model_inputs["normalized"]
        groups = model_inputs.get("groups") or [0] * len(normalized)
        sizes = [a.shape for a in normalized]
        count = len(normalized)
        margin = self.image_processor.crop_margin
        if use_roi and self.roi_model is not None:
            results = self._locate(normalized, batch_size, presence_threshold)
            for result in results:
                if result.found and result.probability < self.low_confidence:
                    result.flags.append("low_roi_confidence")
            if consensus:
                for group in sorted(set(groups)):
                    members = [i for i in range(count) if groups[i] == group]
                    if len(members) > 2:
                        subset = [results[i] for i in members]
                        volume_consensus(subset, [sizes[i] for i in members], self.consensus_confidence,
                                         self.consensus_max_offset, self.consensus_extend_threshold)
        else:
            results = [RoiResult(box=None, probability=1.0, found=True, flags=["no_roi_model"]) for _ in range(count)]
        whole_slice = not (use_roi and self.roi_model is not None)
        boxes = [r.box if r.found else None for r in results]
        looks = [0] * count
        segmented = {}
        active = [i for i in range(count) if results[i].found]
        extra_looks = 0 if whole_slice else max(int(second_look), 0)  # nothing to re-crop around a whole slice
        for look in range(1 + extra_looks):
            if not active:
                break
            segmented.update(self._segment(normalized, active, boxes, tta, batch_size))
            if look == extra_looks:
                break
            again = []
            for i in active:
                label_map, _, crop_prediction, crop_box, _ = segmented[i]
                box = second_look_box(crop_prediction, crop_box, label_map, margin, self.second_look_offset, self.second_look_scale)
                if box is not None:
                    boxes[i], looks[i] = box, looks[i] + 1
                    again.append(i)
            active = again
        label_maps, scores, roi, qc, messages = [], [], [], [], []
        for i in range(count):
            result = results[i]
            flags = list(result.flags)
            if i not in segmented:
                label_maps.append(np.zeros(sizes[i], dtype=np.uint8))
                scores.append({})
                roi.append(None)
                qc.append(order_flags(flags))
                messages.append(
                    f"no LV found: the ROI stage's LV probability {result.probability:.2f} is below presence_threshold "
                    f"{presence_threshold}; nothing segmented" if result.box is not None or result.probability < presence_threshold
                    else "no LV found: the ROI stage returned no box; nothing segmented"
                )
                continue
            label_map, several, crop_prediction, _, class_scores = segmented[i]
            if looks[i]:
                flags.append("second_look")
            if touches_border(crop_prediction):
                flags.append("mask_touches_crop_border")
            if several:
                flags.append("several_components")
            if cavity_not_enclosed(label_map):
                flags.append("cavity_not_enclosed")
            label_maps.append(label_map)
            scores.append(class_scores)
            roi.append(None if boxes[i] is None else [int(round(float(v))) for v in boxes[i]])
            qc.append(order_flags(flags))
            messages.append(_message(result, label_map, looks[i], flags, not whole_slice))
        found = [bool(results[i].found and label_maps[i].any()) if i in segmented else False for i in range(count)]
        return {"label_maps": label_maps, "roi": roi, "lv_found": found,
                "lv_probability": [None if "no_roi_model" in r.flags else r.probability for r in results],
                "scores": scores, "qc": qc, "message": messages}

    def postprocess(self, model_outputs, save_mask=None, overwrite=False):
        loaded = model_outputs["loaded"]
        id2label = {int(k): v for k, v in self.model.config.id2label.items()}
        results = []
        for i, label_map in enumerate(model_outputs["label_maps"]):
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
                "lv_found": model_outputs["lv_found"][i],
                "lv_probability": model_outputs["lv_probability"][i],
                "qc": model_outputs["qc"][i],
                "message": model_outputs["message"][i],
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
        """Segment one input or a list. Kept because slices of *all* inputs are batched together
        (``batch_size`` at a time) and a volume's consensus needs all its slices in one forward."""
        preprocess_params, forward_params, postprocess_params = self._sanitize_parameters(**kwargs)
        forward_params.setdefault("batch_size", int(getattr(self, "_batch_size", None) or 16))
        stack = postprocess_params.pop("stack", False)
        single = not isinstance(inputs, (list, tuple))
        items = [inputs] if single else list(inputs)
        if not single and postprocess_params.get("save_mask") is not None:
            raise InputError("save_mask= takes one input; for several inputs call the pipeline once per input")
        prepared = [self.preprocess(item, **preprocess_params) for item in items]
        if stack:
            check_stack([p["loaded"] for p in prepared])
        # the consensus runs within a stack: each volume (group n >= 0); with stack=True the 2D inputs
        # together (-1); else each 2D input alone (-2, -3, ...)
        groups = [n if p["loaded"].is_volume else -1 if stack else -2 - n for n, p in enumerate(prepared)
                  for _ in p["normalized"]]
        merged = {"normalized": [a for p in prepared for a in p["normalized"]], "groups": groups}
        outputs = self._forward(merged, **forward_params)
        results, start = [], 0
        for p in prepared:
            stop = start + len(p["normalized"])
            part = {key: value[start:stop] for key, value in outputs.items()}
            part["loaded"] = p["loaded"]
            results.append(self.postprocess(part, **postprocess_params))
            start = stop
        return results[0] if single else results


def _message(result, label_map, looks: int, flags: list, used_roi: bool) -> str:
    """What happened to one slice, in words."""
    if not used_roi:
        text = "whole slice segmented (no ROI stage)"
    else:
        text = f"LV located by the ROI stage (probability {result.probability:.2f})"
        if "box_corrected" in flags:
            text += ", box corrected by the volume consensus"
    if looks:
        text += f"; cropped again around the predicted LV {looks} time{'s' if looks > 1 else ''}"
    if not label_map.any():
        return text + "; but the segmentation found no LV in the crop"
    warnings = [flag.replace("_", " ") for flag in flags if flag in ("mask_touches_crop_border", "several_components", "cavity_not_enclosed", "low_roi_confidence")]
    text += "; segmented"
    if warnings:
        text += " (check: " + ", ".join(warnings) + ")"
    return text


def _roi_kind(model) -> str | None:
    """``"regressor"`` for the paper's box regressor, ``"localizer"`` for a background/lv HALSR-Net."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type == "halsr_roi" and hasattr(model, "box"):
        return "regressor"
    if model_type == "halsr":
        labels = [str(v) for _, v in sorted((int(k), v) for k, v in config.id2label.items())]
        if labels == ["background", "lv"]:
            return "localizer"
    return None


def load_roi_model(source: str, subfolder, what: str):
    """Load a ROI model (regressor or localiser) from a folder or Hub id; InputError when it fails."""
    kwargs = {"subfolder": subfolder} if subfolder else {}
    try:
        config_dict, _ = PretrainedConfig.get_config_dict(source, **kwargs)
        model_class = LvRoiRegressor if config_dict.get("model_type") == "halsr_roi" else HalsrForSemanticSegmentation
        return model_class.from_pretrained(source, **kwargs)
    except (OSError, ValueError, KeyError) as error:
        raise InputError(f"{what}: cannot load a ROI model there ({error})") from None


def save_mask_file(label_map, path, loaded=None, overwrite=False):
    """Write a pipeline label map as PNG or NIfTI (see :func:`image_io.save_mask`)."""
    return save_mask(label_map, path, loaded, overwrite=overwrite)
