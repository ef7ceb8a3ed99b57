"""``pipeline("cardiac-lv-segmentation")``: two-stage LV segmentation of short-axis cine MRI.

Stage 1, the ROI stage, finds the LV box on the whole slice (and whether the LV is there at all):
the bundled model's coarse LV localiser, or the paper's box regressor (see
:mod:`halsr_hf.roi_stage`); stage 2, HALSR-Net, segments a square crop around that box; the crop's
prediction is pasted back onto the input's grid.

The ROI model is looked up, in order: the ``roi_model=`` argument (a model or a folder/Hub id),
then the ``roi/`` sub-folder of the segmentation model's folder or Hub repository
(``config.roi_subfolder``, default ``"roi"``). A ROI stage that should be there and does not load
(a broken ``roi/`` folder; a Hub repository whose ``roi/`` cannot be loaded: not in the cache
offline, network error, broken ``config.json``) is an error when the pipeline is loaded. A model
without a ROI stage (a local folder without ``roi/``, a model object without ``roi_model=``) loads,
but a call that would use the ROI stage is refused: HALSR-Net was trained on LV crops, not on
whole slices. Whole-slice segmentation is an explicit choice: ``use_roi=False`` in a call, or
``roi_model=False`` when loading (then every call); its slices carry the ``no_roi_model`` flag.

Inputs: a path (PNG, JPEG, TIFF, 16-bit PNG, DICOM, ``.npy``, NIfTI 2D/3D/4D with ``frame=``, or a
folder holding one DICOM series), a PIL image, a numpy array or torch tensor (H, W) or (Z, H, W)
(another axis order with ``axes=``, e.g. ``axes="xyz"`` for ``nibabel.load(path).get_fdata()``; a 3D
array whose order is ambiguous, its last axis the shortest or possibly RGB, is refused without
``axes=``), an ``image_io.LoadedInput``, or a list of these (slices of all inputs are batched together,
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
2 myocardium), ``segments`` (the image-segmentation pipeline's format: ``label``, ``score`` (mean
probability of the class over its final mask), ``mask`` as PIL ``L`` 0/255, one per class present
in ``label_map``), ``roi`` (inclusive pixel box ``[x_min, y_min, x_max, y_max]`` of the final crop,
or None), ``roi_stage_box`` (the ROI stage's own box, after the volume consensus and before any
second look; None without a ROI stage or where it found no LV), ``lv_found`` (the result has an LV:
cavity or myocardium), ``lv_probability``, ``status`` (``segmented``, ``empty_segmentation``,
``not_located``, ``removed``, ``constant``), ``qc`` with ``qc_warnings`` and ``qc_info``, ``message``,
``areas_px``, ``areas_mm2`` (None
unless spacing is known from the file or ``pixel_spacing=``), ``pixel_spacing``. For a volume:
``label_map`` (Z, H, W), ``slices`` (the per-slice dicts, without their label maps),
``volumes_ml`` (when spacing and slice thickness are known), ``pixel_spacing``,
``slice_thickness``. A constant slice inside a volume (zero-padded end slices) gets an empty map,
``lv_found`` False and the ``constant_slice`` flag; a constant 2D input is an :class:`InputError`.

Anisotropic in-plane spacing (row and column spacing more than 1 % apart) is not resampled: crops
are square in pixels, as the network was trained (ACDC and Sunnybrook pixels are square), so the
LV reaches it stretched. Each slice then carries the ``anisotropic_spacing`` flag, the message says
so and a ``UserWarning`` is issued; areas and volumes in mm use both spacings and stay correct.
"""

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import Pipeline, PretrainedConfig

from .clinical import areas as measure_areas
from .clinical import volumes_ml as measure_volumes
from .errors import InputError, argument, front_end
from .image_io import check_stack, load_input, save_mask
from .image_processing_halsr import ROI_STAGE_SETTINGS, to_gray_float32
from .modeling_halsr import HalsrForSemanticSegmentation
from .modeling_roi import LvRoiRegressor
from .roi_stage import (
    CORRECTIONS,
    WARNING_FLAGS,
    RoiResult,
    better_look,
    cavity_not_enclosed,
    crop_prediction_in_output,
    finish_stack,
    keep_largest_component,
    look_quality,
    order_flags,
    plan_stack,
    second_look_box,
    split_flags,
    touches_border,
)
from .weight_init import weights_signature

TASK = "cardiac-lv-segmentation"

#: In-plane spacings further apart than this (relative) are "anisotropic" (qc flag ``anisotropic_spacing``).
ANISOTROPY_TOLERANCE = 0.01

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



def arrange_axes(item, axes: str | None = None):
    """An array or tensor in the pipeline's order, (H, W) or (Z, H, W), from one in the order
    ``axes`` names: letters ``z`` (slices), ``y`` (rows of the output's slices), ``x`` (columns),
    ``c`` (colour channels, converted to gray). ``axes="xyz"`` is nibabel's
    ``nib.load(path).get_fdata()`` order, read as the NIfTI reader reads files (slice ``k`` is
    ``data[:, :, k].T``); ``"zyx"`` the default order (numpy, SimpleITK); ``"yxc"`` an RGB(A) image.
    Paths and PIL images are returned as they are (``axes`` must then be None).

    Without ``axes``, a 3D array whose order is ambiguous is refused: its last axis is the shortest
    (an (X, Y, Z) volume such as ``get_fdata()``'s, not Z slices of H x W), or it looks like an RGB
    image (last axis 3 or 4) whose channels differ (a volume of 3 or 4 slices in (X, Y, Z) order
    would otherwise be read as a colour image). An RGB array whose channels are equal stays a gray
    image."""
    array_like = isinstance(item, (np.ndarray, torch.Tensor))
    if axes is None:
        if array_like and item.ndim == 3:
            _check_unambiguous(item)
        return item
    if not array_like:
        raise InputError(f"{argument('axes', axes)} applies to numpy arrays and torch tensors; files and PIL images "
                         "carry their own orientation")
    array = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
    name = f"array {tuple(array.shape)}"
    letters = str(axes).lower()
    known = {2: ("yx",), 3: ("zyx", "yxc")}.get(array.ndim, ())
    target = next((order for order in known if sorted(order) == sorted(letters) and len(set(letters)) == len(letters)), None)
    if target is None:
        raise InputError(
            f"{name}: {argument('axes', axes)} does not name its {array.ndim} axes; use a permutation of "
            + (" or ".join(repr(k) for k in known) if known else "'yx' (2D) or 'zyx'/'yxc' (3D)")
            + " (z slices, y rows, x columns, c colour channels)"
        )
    array = np.transpose(array, [letters.index(axis) for axis in target])
    if target == "yxc":
        if array.shape[-1] == 1:
            return np.ascontiguousarray(array[..., 0])
        if array.shape[-1] not in (3, 4):
            raise InputError(f"{name}: {argument('axes', axes)}: expected 1, 3 or 4 colour channels, got {array.shape[-1]}")
        return to_gray_float32(np.ascontiguousarray(array[..., :3]).astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32), name)
    return np.ascontiguousarray(array)


def _check_unambiguous(item) -> None:
    shape = tuple(item.shape)
    name = f"array {shape}"
    hint = (f"pass {argument('axes', 'xyz')} for a volume in (X, Y, Z) order (nibabel's get_fdata()), "
            f"{argument('axes', 'zyx')} for Z slices of H x W")
    if shape[-1] in (3, 4) and shape[0] > 4:
        array = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else item
        if all(np.array_equal(array[..., 0], array[..., k]) for k in range(1, min(shape[-1], 3))):
            return  # a gray image stored as RGB(A): read as one gray slice
        raise InputError(f"{name}: ambiguous: an RGB image (H, W, {shape[-1]}) or a volume of {shape[-1]} slices in "
                         f"(X, Y, Z) order; {hint}, or {argument('axes', 'yxc')} for a colour image (converted to gray)")
    if shape[2] < shape[0] and shape[2] < shape[1]:
        raise InputError(f"{name}: ambiguous axis order: its last axis is the shortest, as in an (X, Y, Z) volume, "
                         f"not Z slices of H x W; {hint}")


def _is_constant(array) -> bool:
    array = np.asarray(array)
    return array.ndim == 2 and array.size > 0 and bool(np.isfinite(array).all()) and float(array.max()) == float(array.min())


def _anisotropic(spacing) -> bool:
    return spacing is not None and abs(spacing[0] - spacing[1]) > ANISOTROPY_TOLERANCE * min(spacing)


class CardiacLVSegmentationPipeline(Pipeline):
    """See the module docstring. Call parameters:

    Args:
        batch_size (`int`, defaults to 16): slices per forward pass.
        frame (`int`): the frame of a 4D NIfTI (required for 4D inputs).
        axes (`str`): the axis order of a numpy array or torch tensor input (see :func:`arrange_axes`);
            default ``"zyx"`` for 3D, refused where ambiguous.
        pixel_spacing (`tuple[float, float]`): (row_mm, col_mm), overrides the file's.
        slice_thickness (`float`): slice spacing in mm for volumes, overrides the file's.
        use_roi (`bool`, defaults to True): run the ROI stage; ``False`` segments whole slices (the
            network was trained on LV crops: an explicit choice, flagged ``no_roi_model``). True
            without a ROI model is an :class:`InputError`.
        tta (`bool`, defaults to False): average the crop logits over the 8 rotations/flips.
        second_look (`int`, defaults to 2): at most this many re-crops around the predicted LV
            (0: off; the rule is in :mod:`halsr_hf.roi_stage`).
        consensus (`bool`, defaults to True): correct outlier ROI boxes of a volume's slices from
            the stack's median LV centre.
        stack (`bool`, defaults to False): treat the 2D inputs of a list as the slices of one stack,
            in the order given (for the consensus); volumes in the list stay their own stacks.
        save_mask (`str`): write the mask to this ``.png`` or ``.nii.gz`` path (one input only).
        overwrite (`bool`, defaults to False): allow ``save_mask`` to replace a file.
        presence_threshold, localizer_threshold, low_confidence, consensus_confidence,
        consensus_max_offset, consensus_extend_threshold, second_look_offset, second_look_scale
            (`float`): override the ROI stage's settings for this call; by default those of the
            image processor (:data:`halsr_hf.image_processing_halsr.ROI_STAGE_SETTINGS`, saved in
            ``preprocessor_config.json`` with the model, tuned on the ACDC validation split).

    Every slice's result has ``qc`` (quality flags, :data:`halsr_hf.roi_stage.QC_FLAGS`), split into
    ``qc_warnings`` (:data:`~halsr_hf.roi_stage.WARNING_FLAGS`: a person should look) and ``qc_info``
    (:data:`~halsr_hf.roi_stage.INFO_FLAGS`: routine steps and choices), and a ``message`` that says
    what was done.
    """

    _load_image_processor = True
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_processor = False
    _load_video_processor = False  # else transformers looks for one in the auto_map and prompts on stdin

    def __init__(self, *args, roi_model=None, backend="auto", **kwargs):
        super().__init__(*args, **kwargs)
        self.model.eval()
        self.roi_kind = None
        #: why there is no ROI model (None when there is one)
        self.no_roi_reason = None
        #: whether whole-slice segmentation was chosen when loading (``roi_model=False``)
        self.whole_slice = roi_model is False
        self.roi_model = self._resolve_roi_model(roi_model)
        self.set_backend(backend)

    # -- inference backend (issues 8, 18; see docs/performance.md) -- begin
    #: accepted by :meth:`set_backend` and ``pipeline(..., backend=...)``
    BACKENDS = ("auto", "torch", "onnx")

    def set_backend(self, backend="auto", onnx_dir=None, optimize: bool = True):
        """Choose how the two networks run; the choice is :attr:`backend` (``"torch"`` or ``"onnx"``),
        and why, :attr:`backend_reason`.

        * ``"auto"`` (or None; the default): ``"onnx"`` on CPU when onnxruntime is installed (the
          fastest backend here that stays within 1e-3 of torch on real slices: docs/performance.md),
          ``"torch"`` otherwise (no onnxruntime, a GPU, weights not in float32, or an export that fails,
          with a warning).
        * ``"onnx"``: onnxruntime, CPU. The exports are cached by weights hash under
          ``$HF_HOME/halsr_hf/onnx`` (:mod:`halsr_hf.onnx_backend`), so only the first load of a model
          pays for them; ``onnx_dir`` reads the files of ``halsr-hf export-onnx`` instead.
        * ``"torch"``: eager torch on the pipeline's device, with inference-only copies of the models
          whose BatchNorm is folded into the convolutions (``fused_for_inference``), in channels_last
          memory format on CPU (both measured faster: docs/performance.md); ``optimize=False`` runs the
          models as loaded. ``self.model`` and ``self.roi_model`` are never changed: saving the
          pipeline saves them; the copies are made again when their weights change.
        """
        requested = "auto" if backend is None else backend
        if requested not in self.BACKENDS:
            raise InputError(f"backend={backend!r}: expected one of {', '.join(map(repr, self.BACKENDS))} (or None: 'auto')")
        chosen, reason = requested, "chosen explicitly"
        if requested == "auto":
            chosen, reason = self._auto_backend()
        if chosen == "onnx":
            from .onnx_backend import OnnxRunner

            try:
                runner = OnnxRunner(self.model, self.roi_model, self.image_processor.crop_size, onnx_dir)
            except Exception as error:  # noqa: BLE001 -- "auto" falls back to torch, an explicit "onnx" fails
                if requested != "auto":
                    raise
                warnings.warn(f"backend='auto': the ONNX export or onnxruntime failed ({_one_line(error)}); "
                              "running with torch", UserWarning, stacklevel=2)
                chosen, reason = "torch", f"auto: the ONNX export or onnxruntime failed ({_one_line(error)})"
        if chosen == "onnx":
            self._run_segmentation, self._run_roi, self._run_localizer = runner.segment, runner.roi, runner.localize
        else:
            self._inference_copies, self._optimize = {}, bool(optimize)
            self._run_segmentation = lambda pixel_values: self._inference_model("model")(
                pixel_values=self._torch_input(pixel_values)).logits
            self._run_roi = lambda pixel_values: self._inference_model("roi_model")(self._torch_input(pixel_values))
            self._run_localizer = lambda pixel_values: self._inference_model("roi_model")(
                pixel_values=self._torch_input(pixel_values)).logits
            for name in ("model", "roi_model"):  # made now, not in the first call
                if getattr(self, name) is not None:
                    self._inference_model(name)
        self.backend, self.backend_reason = chosen, reason

    def _auto_backend(self) -> tuple:
        """(backend, reason) for ``backend="auto"``."""
        import importlib.util

        if self.device.type != "cpu":
            return "torch", f"auto: device {self.device} (onnxruntime runs on CPU here)"
        dtypes = {m.dtype for m in (self.model, self.roi_model) if m is not None}
        if dtypes != {torch.float32}:
            return "torch", f"auto: weights in {', '.join(sorted(map(str, dtypes)))}, the ONNX export is float32"
        if importlib.util.find_spec("onnxruntime") is None:
            return "torch", "auto: onnxruntime is not installed (pip install onnxruntime)"
        return "onnx", "auto: CPU and onnxruntime installed, the faster backend here"

    def _channels_last(self) -> bool:
        return self._optimize and self.device.type == "cpu"

    def _torch_input(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return pixel_values.contiguous(memory_format=torch.channels_last) if self._channels_last() else pixel_values

    def _inference_model(self, name: str):
        """The model ``self.<name>`` as the torch backend runs it: an inference-only copy with
        BatchNorm folded (channels_last on CPU), made again when the original's weights changed."""
        model = getattr(self, name)
        if not self._optimize or not hasattr(model, "fused_for_inference"):
            return model
        signature = weights_signature(model)
        cached = self._inference_copies.get(name)
        if cached is None or cached[0] != signature or cached[1] is not model:
            copy = model.fused_for_inference()
            if self._channels_last():
                copy = copy.to(memory_format=torch.channels_last)
            cached = (signature, model, copy)
            self._inference_copies[name] = cached
        return cached[2]
    # -- inference backend -- end

    # -- set-up ------------------------------------------------------------------------------

    def _resolve_roi_model(self, roi_model):
        """The ROI model: ``roi_model=`` (a model, folder or Hub id; ``False``: none, whole slices),
        else the ``roi/`` sub-folder of the segmentation model (see the module docstring)."""
        if roi_model is False:
            self.no_roi_reason = "whole-slice segmentation was chosen (roi_model=False)"
            return None
        if isinstance(roi_model, torch.nn.Module):
            model = roi_model
        elif roi_model is not None:
            model = load_roi_model(str(roi_model), None, argument("roi_model", str(roi_model)))
        else:
            source = getattr(self.model, "name_or_path", None) or getattr(self.model.config, "_name_or_path", None)
            subfolder = getattr(self.model.config, "roi_subfolder", None) or "roi"
            if not source:
                self.no_roi_reason = "the segmentation model was given as an object, without roi_model="
                return None
            local = Path(source)
            if local.is_dir():
                if not (local / subfolder).exists():
                    self.no_roi_reason = f"{source} has no {subfolder}/ folder (a training output holds HALSR-Net only)"
                    return None
                model = load_roi_model(source, subfolder, f"the ROI model in {local / subfolder}")
            else:
                try:
                    model = load_roi_model(source, subfolder, f"the ROI model of the Hub repository {source} ({subfolder}/)")
                except InputError as error:
                    raise InputError(
                        f"{error}; HALSR-Net segments LV crops and was not trained on whole slices: pass "
                        f"{argument('roi_model')} a ROI model (folder or Hub id), or "
                        f"{front_end('roi_model=False', '--no-roi')} to segment whole slices anyway"
                    ) from None
        kind = roi_kind(model)
        if kind is None:
            config = getattr(model, "config", None)
            raise InputError(
                f"roi_model: expected an LV box regressor (model_type 'halsr_roi') or an LV localiser (a HALSR-Net "
                f"whose config has stage 'localization'), got {type(model).__name__} (model_type "
                f"{getattr(config, 'model_type', None)!r}, stage {getattr(config, 'stage', None)!r})"
            )
        self.roi_kind = kind
        return model.to(self.device).eval()

    def save_pretrained(self, save_directory, **kwargs):
        """Save model, image processor, ``custom_pipelines`` and code, and the ROI model in ``roi/``."""
        super().save_pretrained(save_directory, **kwargs)
        if self.roi_model is not None:
            self.roi_model.save_pretrained(f"{save_directory}/{getattr(self.model.config, 'roi_subfolder', None) or 'roi'}", **kwargs)

    def check_roi_stage(self, use_roi: bool = True) -> None:
        """Raise :class:`InputError` when a call with ``use_roi`` would need a ROI model this pipeline
        does not have (see the module docstring)."""
        if use_roi and self.roi_model is None and not self.whole_slice:
            raise InputError(
                f"no ROI stage: {self.no_roi_reason}. HALSR-Net segments LV crops and was not trained on whole "
                f"slices; load the pipeline with {argument('roi_model')} a ROI model (folder or Hub id, e.g. the "
                f"roi/ folder of the model it was fine-tuned from), or pass "
                f"{front_end('use_roi=False', '--no-roi')} to segment whole slices anyway"
            )

    def _sanitize_parameters(
        self,
        frame=None,
        axes=None,
        pixel_spacing=None,
        slice_thickness=None,
        use_roi=None,
        tta=None,
        second_look=None,
        consensus=None,
        stack=None,
        save_mask=None,
        overwrite=None,
        batch_size=None,
        reference_roi=None,
        **kwargs,
    ):
        settings = {k: kwargs.pop(k) for k in list(kwargs) if k in ROI_STAGE_SETTINGS}
        if kwargs:
            raise InputError(
                f"unknown argument(s) {', '.join(sorted(kwargs))} for the cardiac-lv-segmentation pipeline; "
                "expected frame, axes, pixel_spacing, slice_thickness, use_roi, tta, second_look, consensus, stack, "
                f"save_mask, overwrite, batch_size, reference_roi, {', '.join(ROI_STAGE_SETTINGS)}"
            )
        preprocess = {k: v for k, v in dict(frame=frame, axes=axes, pixel_spacing=pixel_spacing,
                                             slice_thickness=slice_thickness).items() if v is not None}
        forward = {k: v for k, v in dict(use_roi=use_roi, tta=tta, second_look=second_look, consensus=consensus,
                                         batch_size=batch_size, reference_roi=reference_roi).items() if v is not None}
        if settings:
            forward["settings"] = {k: v for k, v in settings.items() if v is not None}
        postprocess = {k: v for k, v in dict(save_mask=save_mask, overwrite=overwrite).items() if v is not None}
        if stack is not None:
            postprocess["stack"] = stack
        return preprocess, forward, postprocess

    # -- the three steps ---------------------------------------------------------------------

    def preprocess(self, inputs, frame=None, axes=None, pixel_spacing=None, slice_thickness=None):
        loaded = load_input(arrange_axes(inputs, axes), frame=frame, pixel_spacing=pixel_spacing, slice_thickness=slice_thickness)
        normalized, constant = [], []
        for index, array in enumerate(loaded.slices):
            name = f"{loaded.name} slice {index}" if loaded.is_volume else loaded.name
            if loaded.is_volume and _is_constant(array):  # e.g. a zero-padded end slice: an empty map, flagged
                normalized.append(np.zeros(np.shape(array), dtype=np.float32))
                constant.append(True)
                continue
            normalized.append(self.image_processor.prepare_slice(array, name))
            constant.append(False)
        if loaded.is_volume and all(constant):
            value = float(np.asarray(loaded.slices[0]).min())
            raise InputError(f"{loaded.name}: every slice is constant (every pixel = {value}); nothing to segment")
        return {"loaded": loaded, "normalized": normalized, "constant": constant}

    def _locate(self, normalized: list, indices: list, batch_size: int, settings: dict) -> dict:
        """Run the ROI model on whole slices ``indices``: one :class:`RoiResult` per index."""
        results = {}
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            arrays = [normalized[i] for i in chunk]
            roi_inputs, _ = self.image_processor.preprocess_roi(arrays)
            roi_inputs = roi_inputs.to(self.device, dtype=self.roi_model.dtype)
            out = self._run_localizer(roi_inputs) if self.roi_kind == "localizer" else self._run_roi(roi_inputs)
            found = self.image_processor.post_process_roi(
                out, [a.shape for a in arrays], settings["presence_threshold"], settings["localizer_threshold"],
                return_results=True,
            )
            results.update(zip(chunk, found))
        return results

    def _segment(self, normalized: list, indices: list, boxes: list, tta: bool, batch_size: int, connectivity: int = 4) -> dict:
        """Segment crops of slices ``indices`` around ``boxes`` (None: the whole slice). Returns, per
        index: the pasted label map with only its largest LV component, whether other components
        were removed, the crop's label map restricted to the components kept
        (:func:`~halsr_hf.roi_stage.crop_prediction_in_output`), its crop box and class scores (mean
        probability of each class over its pixels of the final map)."""
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
            pasted, probabilities = processor.paste(logits, crop_boxes, [normalized[i].shape for i in chunk],
                                                    return_probabilities=True)
            predicted = logits.permute(0, 2, 3, 1).contiguous().argmax(-1)  # contiguous axis: ~10x faster, same result
            for j, i in enumerate(chunk):
                label_map, several = keep_largest_component(pasted[j], connectivity=connectivity)
                scores = {int(c): float(probabilities[j][label_map == c].mean()) for c in np.unique(label_map) if c != 0}
                crop_box = crop_boxes[j].tolist()
                kept = crop_prediction_in_output(predicted[j].numpy(), crop_box, label_map)
                out[i] = (label_map, several, kept, crop_box, scores)
        return out

    @torch.inference_mode()
    def _forward(self, model_inputs, use_roi=True, tta=False, second_look=2, consensus=True, batch_size=16,
                 settings=None, reference_roi=None):
        """The ROI stage, then the segmentation with up to ``second_look`` re-crops, then the stack's
        decisions after segmentation. ``model_inputs["groups"]`` gives each slice's stack,
        ``model_inputs["constant"]`` its constant slices (not segmented). ``reference_roi``: per stack
        (by group id) a reference's slices and boxes instead of the ROI stage's
        (:func:`~halsr_hf.roi_stage.apply_reference`; evaluation only)."""
        self.check_roi_stage(use_roi)
        settings = self.image_processor.roi_stage_settings(**(settings or {}))
        normalized = model_inputs["normalized"]
        count = len(normalized)
        groups = model_inputs.get("groups") or [0] * count
        constant = model_inputs.get("constant") or [False] * count
        stacks = {group: [i for i in range(count) if groups[i] == group] for group in dict.fromkeys(groups)}
        whole_slice = not use_roi or self.roi_model is None
        results = self._roi_stage(normalized, stacks, constant, whole_slice, consensus, batch_size, settings, reference_roi or {})
        boxes = [r.box if r.found else None for r in results]
        stage_boxes = [None if (whole_slice or b is None) else [int(round(float(v))) for v in b] for b in boxes]
        looks = self._segment_with_looks(normalized, results, boxes, whole_slice, second_look, tta, batch_size, settings)
        removed = {}  # slice index -> (flag, detail): the stack's decisions after segmentation
        for group, members in stacks.items():
            if (reference_roi or {}).get(group, {}).get("slices") is not None:
                continue  # the reference chose the slices
            segmented = [i for i in members if i in looks]
            decided = finish_stack([looks[i]["label_map"] for i in segmented], settings)
            removed.update({segmented[k]: value for k, value in decided.items()})
        outputs = {key: [] for key in ("label_maps", "roi", "roi_stage_box", "lv_found", "lv_probability", "scores",
                                       "qc", "status", "message")}
        for i, result in enumerate(results):
            look = looks.get(i)
            flags = list(result.flags)
            status, label_map, scores = "not_located", np.zeros(normalized[i].shape, dtype=np.uint8), {}
            if result.constant:
                status = "constant"
            elif look is not None:
                label_map, scores = look["label_map"], look["scores"]
                flags += look["flags"]
                status = "segmented" if label_map.any() else "empty_segmentation"
                if i in removed:
                    flags.append(removed[i][0])
                    status, label_map, scores = "removed", np.zeros_like(label_map), {}
            if status == "empty_segmentation":
                flags.append(_empty_flag(i, stacks[groups[i]], looks, removed))
            outputs["label_maps"].append(label_map)
            outputs["scores"].append(scores)
            outputs["roi"].append(None if look is None or look["box"] is None else [int(round(float(v))) for v in look["box"]])
            outputs["roi_stage_box"].append(stage_boxes[i])
            outputs["lv_found"].append(bool(label_map.any()))
            outputs["lv_probability"].append(None if ("no_roi_model" in result.flags or result.constant) else result.probability)
            outputs["qc"].append(order_flags(flags))
            outputs["status"].append(status)
            outputs["message"].append(_message(result, status, look, removed.get(i), settings, self.whole_slice))
        return outputs

    def _roi_stage(self, normalized, stacks, constant, whole_slice, consensus, batch_size, settings, reference) -> list:
        """One :class:`~halsr_hf.roi_stage.RoiResult` per slice: the ROI model on every non-constant
        slice, then :func:`~halsr_hf.roi_stage.plan_stack` once per stack (consensus or reference,
        confidence flag). Without a ROI stage: the whole slice, flagged ``no_roi_model``."""
        count = len(normalized)
        if whole_slice:
            return [RoiResult(box=None, probability=0.0, constant=True, flags=["constant_slice"]) if constant[i]
                    else RoiResult(box=None, probability=1.0, found=True, flags=["no_roi_model"]) for i in range(count)]
        located = self._locate(normalized, [i for i in range(count) if not constant[i]], batch_size, settings)
        results = [located.get(i) or RoiResult(box=None, probability=0.0, constant=True, flags=["constant_slice"])
                   for i in range(count)]
        for group, members in stacks.items():
            members = [i for i in members if not constant[i]]
            plan_stack([results[i] for i in members], [normalized[i].shape for i in members], settings, consensus,
                       _reference_for(reference.get(group), members, stacks[group]))
        return results

    def _segment_with_looks(self, normalized, results, boxes, whole_slice, second_look, tta, batch_size, settings) -> dict:
        """Segment every slice the ROI stage found, then crop again around the predicted LV where
        :func:`~halsr_hf.roi_stage.second_look_box` says so, at most ``second_look`` times; a new look
        is kept only when it is better (:func:`~halsr_hf.roi_stage.look_quality`). Returns, per
        segmented slice: ``label_map``, ``scores``, ``box`` (of the kept look's crop), ``looks`` (re-crops
        made), ``flags`` (``second_look``, ``mask_touches_crop_border``, ``several_components``,
        ``cavity_not_enclosed``)."""
        connectivity = int(settings["component_connectivity"])
        margin = self.image_processor.crop_margin
        active = [i for i, r in enumerate(results) if r.found]
        best, made = {}, {i: 0 for i in active}
        extra_looks = 0 if whole_slice else max(int(second_look), 0)  # nothing to re-crop around a whole slice
        for look in range(1 + extra_looks):
            if not active:
                break
            segmented = self._segment(normalized, active, boxes, tta, batch_size, connectivity)
            again = []
            for i in active:
                label_map, several, kept, crop_box, scores = segmented[i]
                quality = look_quality(label_map, kept, scores)
                if i not in best or better_look(quality, best[i]["quality"]):
                    best[i] = {"label_map": label_map, "several": several, "kept": kept, "scores": scores,
                               "box": boxes[i], "quality": quality}
                if look < extra_looks:
                    box = second_look_box(kept, crop_box, label_map, margin, settings["second_look_offset"],
                                          settings["second_look_scale"])
                    if box is not None:
                        boxes[i] = box
                        made[i] += 1
                        again.append(i)
            active = again
        for i, entry in best.items():
            flags = ["second_look"] if made[i] else []
            if touches_border(entry["kept"]):
                flags.append("mask_touches_crop_border")
            if entry["several"]:
                flags.append("several_components")
            if cavity_not_enclosed(entry["label_map"]):
                flags.append("cavity_not_enclosed")
            entry["flags"], entry["looks"] = flags, made[i]
        return best

    def postprocess(self, model_outputs, save_mask=None, overwrite=False):
        loaded = model_outputs["loaded"]
        id2label = {int(k): v for k, v in self.model.config.id2label.items()}
        anisotropic = _anisotropic(loaded.pixel_spacing)
        if anisotropic:
            note = (f"pixel spacing {loaded.pixel_spacing[0]:g} x {loaded.pixel_spacing[1]:g} mm (row x column) is "
                    "anisotropic: the crops are square in pixels, not in mm, so the network sees the LV stretched "
                    "(areas and volumes in mm are correct)")
            warnings.warn(f"{loaded.name}: {note}", UserWarning, stacklevel=3)
        results = []
        for i, label_map in enumerate(model_outputs["label_maps"]):
            qc, message = model_outputs["qc"][i], model_outputs["message"][i]
            if anisotropic:
                qc, message = order_flags(qc + ["anisotropic_spacing"]), f"{message} (check: {note})"
            segments = [
                {"label": id2label.get(class_id, str(class_id)), "score": score,
                 "mask": Image.fromarray(((label_map == class_id) * 255).astype(np.uint8), mode="L")}
                for class_id, score in sorted(model_outputs["scores"][i].items())
            ]
            areas = measure_areas(label_map, loaded.pixel_spacing)
            qc_warnings, qc_info = split_flags(qc)
            results.append({
                "label_map": label_map,
                "segments": segments,
                "roi": model_outputs["roi"][i],
                "roi_stage_box": model_outputs["roi_stage_box"][i],
                "lv_found": model_outputs["lv_found"][i],
                "lv_probability": model_outputs["lv_probability"][i],
                "qc": qc,
                "qc_warnings": qc_warnings,
                "qc_info": qc_info,
                "status": model_outputs["status"][i],
                "message": message,
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
        self.check_roi_stage(forward_params.get("use_roi", True))
        forward_params.setdefault("batch_size", int(getattr(self, "_batch_size", None) or 16))
        stack = postprocess_params.pop("stack", False)
        single = not isinstance(inputs, (list, tuple))
        items = [inputs] if single else list(inputs)
        reference = forward_params.pop("reference_roi", None)
        if not single and postprocess_params.get("save_mask") is not None:
            raise InputError("save_mask= takes one input; for several inputs call the pipeline once per input")
        prepared = [self.preprocess(item, **preprocess_params) for item in items]
        if stack:
            check_stack([p["loaded"] for p in prepared])
        # the consensus runs within a stack: each volume (group n >= 0); with stack=True the 2D inputs
        # together (-1); else each 2D input alone (-2, -3, ...)
        groups = [n if p["loaded"].is_volume else -1 if stack else -2 - n for n, p in enumerate(prepared)
                  for _ in p["normalized"]]
        merged = {"normalized": [a for p in prepared for a in p["normalized"]], "groups": groups,
                  "constant": [c for p in prepared for c in p["constant"]]}
        if reference is not None:
            forward_params["reference_roi"] = _reference_by_group(reference, prepared, single, stack)
        outputs = self._forward(merged, **forward_params)
        results, start = [], 0
        for p in prepared:
            stop = start + len(p["normalized"])
            part = {key: value[start:stop] for key, value in outputs.items()}
            part["loaded"] = p["loaded"]
            results.append(self.postprocess(part, **postprocess_params))
            start = stop
        return results[0] if single else results


def _reference_by_group(reference, prepared: list, single: bool, stack: bool) -> dict:
    """``reference_roi=`` (one dict for one input, a list of dicts or None for a list) -> ``{stack
    group: reference}``, each list checked against its input's slice count."""
    if stack:
        raise InputError("reference_roi= takes inputs that are their own stacks, not stack=True")
    references = [reference] if single else list(reference)
    if len(references) != len(prepared):
        raise InputError(f"reference_roi=: one entry per input expected, got {len(references)} for {len(prepared)} inputs")
    out = {}
    for n, (p, ref) in enumerate(zip(prepared, references)):
        if ref is None:
            continue
        unknown = sorted(set(ref) - {"slices", "boxes", "fallback_boxes"})
        if unknown:
            raise InputError(f"reference_roi=: unknown key(s) {unknown}; expected slices, boxes, fallback_boxes")
        for key, values in ref.items():
            if values is not None and len(values) != len(p["normalized"]):
                raise InputError(f"{p['loaded'].name}: reference_roi[{key!r}] has {len(values)} entries for "
                                 f"{len(p['normalized'])} slices")
        out[n if p["loaded"].is_volume else -2 - n] = ref
    return out


def _reference_for(reference, members: list, stack: list):
    """A stack's reference (per slice of the whole stack) restricted to its non-constant ``members``."""
    if reference is None:
        return None
    positions = [stack.index(i) for i in members]
    return {key: [values[k] for k in positions] for key, values in reference.items() if values is not None}


def _empty_flag(i: int, stack: list, looks: dict, removed: dict) -> str:
    """The flag of a slice whose segmentation came out empty although the ROI stage located the LV:
    ``outside_lv_range`` (information) when no slice beyond it, on that side of the stack, has an LV
    in the result (the segmenter placed the end of the ventricle there), else ``empty_segmentation``
    (a warning: a gap inside the ventricle)."""
    def has_lv(j):
        return j in looks and j not in removed and looks[j]["label_map"].any()

    position = stack.index(i)
    before = any(has_lv(j) for j in stack[:position])
    after = any(has_lv(j) for j in stack[position + 1:])
    return "empty_segmentation" if before and after else "outside_lv_range"


def _message(result, status: str, look, removed, settings: dict, chosen_at_load: bool = False) -> str:
    """What happened to one slice, in the words the pipeline, the CLI and the Space share: the ROI
    stage *located* the LV (or not); the slice was *segmented* (an LV in the result) or *nothing
    segmented*. Each claim matches the slice's fields (``status``, ``lv_found``, ``lv_probability``,
    ``qc``)."""
    if status == "constant":
        return "constant slice (every pixel has the same value); nothing segmented"
    if status == "not_located":
        if result.reference is not None:
            return f"no LV on this slice in the reference ({result.reference}); nothing segmented"
        return _not_located_message(result, settings)
    if "no_roi_model" in result.flags:
        text = "whole slice segmented (no ROI stage: " + ("roi_model=False" if chosen_at_load else "use_roi=False") + ")"
    elif result.reference is not None:
        text = {"reference slices": f"slice chosen by the reference, box from the ROI stage (probability {result.probability:.2f})",
                "reference box": "slice chosen by the ROI stage, box from the reference",
                "reference slices and box": "slice and box from the reference"}[result.reference]
    elif result.correction == "filled":
        text = ("LV box from the volume consensus: the stack's median LV box (the LV was located on slices above and "
                f"below; the ROI stage's LV probability on this slice: {result.probability:.2f})")
    elif result.correction == "extended":
        text = ("LV box from the volume consensus: the neighbouring slice's box (the end of the located range; the ROI "
                f"stage's LV probability on this slice: {result.probability:.2f})")
    else:
        text = f"LV located by the ROI stage (probability {result.probability:.2f})"
        if result.correction is not None:
            text += ", " + CORRECTIONS[result.correction]
    if look is not None and look["looks"]:
        text += f"; cropped again around the predicted LV {look['looks']} time{'s' if look['looks'] > 1 else ''}"
    if status == "removed":
        flag, detail = removed
        if flag == "basal_slice_removed":
            return (f"{text}; segmented, then removed: a basal slice of the stack on which the myocardium surrounds only "
                    f"{detail:.2f} of the cavity (basal_enclosure_threshold {settings['basal_enclosure_threshold']:.2f}; the "
                    "ACDC/M&Ms convention counts a basal slice only while the myocardium surrounds the cavity); nothing segmented")
        if detail == "apex":
            return (f"{text}; segmented, then removed: past the apex, its LV is more than apex_growth "
                    f"{settings['apex_growth']:g} times the LV of the slice inward of it; nothing segmented")
        return (f"{text}; segmented, then removed: its LV is not part of the stack's largest 3D LV component "
                "(stack_component); nothing segmented")
    if status == "empty_segmentation":
        return f"{text}; nothing segmented: the segmentation found no LV in the crop"
    label_map = look["label_map"]
    if not (label_map == 1).any():
        text += "; segmented (myocardium only, no cavity)"
    else:
        text += "; segmented"
    checks = [flag.replace("_", " ") for flag in look["flags"] + result.flags if flag in WARNING_FLAGS]
    if checks:
        text += " (check: " + ", ".join(dict.fromkeys(checks)) + ")"
    return text


def _not_located_message(result, settings: dict) -> str:
    """Why the ROI stage did not locate the LV on a slice, in words that match its fields."""
    threshold = settings["presence_threshold"]
    if result.degenerate:
        box = [round(float(v), 1) for v in result.box]
        return (f"LV not located: the ROI stage's box {box} is degenerate (less than one pixel from edge to edge in x "
                f"or y) although its LV probability is {result.probability:.2f}; nothing segmented")
    if result.probability < threshold:
        return (f"LV not located: the ROI stage's LV probability {result.probability:.2f} is below presence_threshold "
                f"{threshold:g}; nothing segmented")
    return (f"LV not located: the ROI stage's LV probability peaks at {result.probability:.2f}, but no region of the "
            f"localiser's map above localizer_threshold {settings['localizer_threshold']:g} is large enough to be a box; "
            "nothing segmented")


def roi_kind(model) -> str | None:
    """``"regressor"`` for the paper's box regressor (:class:`LvRoiRegressor`), ``"localizer"`` for a
    HALSR-Net whose config says ``stage="localization"``; None for anything else."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type == "halsr_roi" and hasattr(model, "box"):
        return "regressor"
    if model_type == "halsr" and getattr(config, "stage", None) == "localization":
        return "localizer"
    return None


def _one_line(error) -> str:
    """The first line of an exception's message (huggingface_hub's run over several)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) <= 240 else text[:237] + "..."


def load_roi_model(source: str, subfolder, what: str):
    """Load a ROI model (regressor or localiser) from a folder or Hub id; InputError when it fails.

    A localiser saved before its config said ``stage`` (a HALSR-Net with labels background, lv and
    no ``stage`` key) is read as one, with a warning to add ``"stage": "localization"``."""
    kwargs = {"subfolder": subfolder} if subfolder else {}
    if not subfolder and not Path(source).exists() and _is_a_path(source):
        raise InputError(f"{what}: no such folder")
    try:
        config_dict, _ = PretrainedConfig.get_config_dict(source, **kwargs)
        if config_dict.get("model_type") == "halsr_roi":
            return LvRoiRegressor.from_pretrained(source, **kwargs)
        overrides = {}
        labels = [str(v) for _, v in sorted((int(k), v) for k, v in (config_dict.get("id2label") or {}).items())]
        if config_dict.get("model_type") == "halsr" and "stage" not in config_dict and labels == ["background", "lv"]:
            warnings.warn(f"{what}: a localiser saved without 'stage' in its config.json (older halsr-hf); read as one. "
                          "Add \"stage\": \"localization\" to its config.json", UserWarning, stacklevel=3)
            overrides["stage"] = "localization"
        return HalsrForSemanticSegmentation.from_pretrained(source, **kwargs, **overrides)
    except (OSError, ValueError, KeyError) as error:
        if not subfolder and not Path(source).exists():
            raise InputError(f"{what}: no such folder, nor a Hub model that could be loaded ({_one_line(error)})") from None
        raise InputError(f"{what}: cannot load a ROI model there ({_one_line(error)})") from None


def _is_a_path(name: str) -> bool:
    """Whether ``name`` can only be a local path, not a Hub id (``namespace/name``)."""
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1 or name.endswith("/")


def save_mask_file(label_map, path, loaded=None, overwrite=False):
    """Write a pipeline label map as PNG or NIfTI (see :func:`image_io.save_mask`)."""
    return save_mask(label_map, path, loaded, overwrite=overwrite)
