"""HALSR-Net cardiac MRI left-ventricle segmentation: the Gradio Space.

Upload a short-axis cine MRI slice (PNG, JPEG, 16-bit PNG, DICOM) or volume (NIfTI 3D/4D); the
app shows the LV cavity (red), the myocardium (blue) and the ROI box (yellow) over the image, with
a zoom on the ROI beside it, lists what the pipeline did on each slice (its message and quality
flags), measures the areas (mm² when the pixel spacing is known) and, for volumes, the cavity and
myocardium volumes (mL). An ED + ES pair of volumes gives EDV, ESV, stroke volume, EF and the
myocardial mass. Masks download as PNG (label ids 0/1/2, lossless) and NIfTI (input's affine).

A thin UI: files are read by ``image_io.load_input``, segmented and measured by the
``cardiac-lv-segmentation`` pipeline, drawn by ``visualize.overlay``, written by
``image_io.save_mask``; those modules come from the package the pipeline's class belongs to
(``halsr_hf``, or the model repository's own code when the package is not installed).

Run locally: ``python space/app.py`` (Gradio reads ``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT``).
Configuration (environment variables):

- ``HALSR_MODEL``: model folder or Hub id (default: the model bundled with ``halsr_hf``; without
  the package, the first ``models:`` entry of this folder's README.md, loaded with
  ``trust_remote_code=True``); ``HALSR_ROI_MODEL``: ROI model (localiser or box regressor) folder or Hub id (default: the
  model's ``roi/``).
- ``HALSR_MAX_FILE_SIZE`` (default ``50mb``), ``HALSR_MAX_IMAGE_SIDE`` (default 1024 pixels),
  ``HALSR_MAX_SLICES`` (default 64), ``HALSR_CONCURRENCY`` (default 2 requests at a time),
  ``HALSR_QUEUE_SIZE`` (default 32 waiting requests).
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no outside network call at start

import functools  # noqa: E402
import importlib  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402
from huggingface_hub import metadata_load  # noqa: E402

logger = logging.getLogger("halsr_space")

HERE = Path(__file__).resolve().parent
EXAMPLES_DIR = HERE / "examples"

MAX_FILE_SIZE = os.environ.get("HALSR_MAX_FILE_SIZE", "50mb")
MAX_IMAGE_SIDE = int(os.environ.get("HALSR_MAX_IMAGE_SIDE", "1024"))
MAX_SLICES = int(os.environ.get("HALSR_MAX_SLICES", "64"))
CONCURRENCY = int(os.environ.get("HALSR_CONCURRENCY", "2"))
QUEUE_SIZE = int(os.environ.get("HALSR_QUEUE_SIZE", "32"))
DEFAULT_ALPHA = 0.45

#: Per-slice results: whether the ROI stage located the LV and something was segmented (the words of
#: ``halsr_hf.visualize``: "LV located", "segmented", "nothing segmented", the same in the command
#: line), the areas, the pipeline's message and quality flags.
AREA_HEADERS = {
    unit: ["slice", "LV located", f"LV cavity area ({label})", f"myocardium area ({label})", "segmented", "message",
           "quality flags"]
    for unit, label in (("mm2", "mm²"), ("px", "pixels"))
}
MEASURE_HEADERS = ["measure", "value", "unit"]
#: Widths of the per-slice table's columns: the message and the quality flags get the room they need.
AREA_COLUMN_WIDTHS = ["6%", "8%", "11%", "11%", "8%", "36%", "20%"]
#: The zoom on the ROI: a square around the box, this much wider than the box on each side (of its side).
ZOOM_MARGIN = 0.5
ZOOM_SIDE = 384


# ---- model and package code ------------------------------------------------------------------


def load_pipeline_from_env():
    """The segmentation pipeline named by ``HALSR_MODEL``/``HALSR_ROI_MODEL`` (module docstring)."""
    model = os.environ.get("HALSR_MODEL") or None
    roi_model = os.environ.get("HALSR_ROI_MODEL") or None
    try:
        import halsr_hf
    except ImportError:  # the package is optional on a Space: the model repository carries the code
        from transformers import pipeline

        model = model or readme_model()
        if model is None:
            raise RuntimeError("halsr_hf is not installed: set HALSR_MODEL to a model folder or Hub id saved with its code") from None
        kwargs = {} if roi_model is None else {"roi_model": roi_model}
        return pipeline("cardiac-lv-segmentation", model=model, trust_remote_code=True, **kwargs)
    return halsr_hf.load_pipeline(model, roi_model=roi_model)


def readme_model() -> str | None:
    """The first ``models:`` entry of this Space's README front matter (the Hub model it shows)."""
    readme = HERE / "README.md"
    models = metadata_load(readme).get("models") if readme.is_file() else None
    return models[0] if models else None


def package_modules(pipe) -> SimpleNamespace:
    """``image_io``, ``clinical``, ``visualize`` and ``errors`` of the package the pipeline's class
    comes from: ``halsr_hf``, or the ``transformers_modules`` copy of a model repository's code."""
    package = type(pipe).__module__.rsplit(".", 1)[0]
    try:
        return SimpleNamespace(**{name: importlib.import_module(f"{package}.{name}")
                                  for name in ("image_io", "clinical", "visualize", "errors")})
    except ImportError as error:
        raise RuntimeError(f"the pipeline's code ({package}) has no {error.name}; install halsr_hf") from None


def _model_name(pipe) -> str:
    """The Hub id, or a local folder's name (the server's paths are not shown)."""
    name = str(getattr(pipe.model, "name_or_path", "") or getattr(pipe.model.config, "_name_or_path", "") or "model")
    path = Path(name)
    if path.is_dir():
        return "bundled default model" if path.name == "default_model" else f"local model {path.name}"
    return name


# ---- helpers ----------------------------------------------------------------------------------


class _UserError(Exception):
    """An input problem detected by the app itself (shown as is)."""


def _work_dir() -> Path:
    """A fresh folder under Gradio's temp dir (files there may be served back to the browser)."""
    root = Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio") / "halsr-space"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=root))


def _file_path(file) -> str | None:
    if isinstance(file, (list, tuple)):
        file = file[0] if file else None
    if file is None:
        return None
    return str(file if isinstance(file, (str, os.PathLike)) else getattr(file, "name", file))


def _spacing(row_mm, col_mm, thickness_mm):
    """The hand-entered spacing (0 or empty = from the file)."""
    row, col, thickness = float(row_mm or 0), float(col_mm or 0), float(thickness_mm or 0)
    for label, value in (("pixel spacing (row)", row), ("pixel spacing (column)", col), ("slice thickness", thickness)):
        if not math.isfinite(value) or value < 0:
            raise _UserError(f"{label}: must be a positive number in mm (or 0 to use the file's), got {value}")
    if (row > 0) != (col > 0):
        row = col = max(row, col)  # one value given: square pixels
    return ((row, col) if row > 0 else None), (thickness if thickness > 0 else None)


def _frame(value):
    if value is None or value == "":
        return None
    value = float(value)
    if not value.is_integer() or value < 0:
        raise _UserError(f"frame: expected a whole number >= 0, got {value}")
    return int(value)


def _fmt(value, digits=1):
    if value is None:
        return "n/a"
    if isinstance(value, float) and math.isnan(value):
        return "undefined"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


# ---- the app ----------------------------------------------------------------------------------


class SpaceApp:
    """The app's logic, independent of the page layout (each public method is one API endpoint)."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.code = package_modules(pipe)
        self.model_name = _model_name(pipe)

    def _load(self, file, frame, pixel_spacing, slice_thickness, what="file"):
        """``image_io.load_input`` with the app's limits; a 4D NIfTI without a frame shows frame 0."""
        path = _file_path(file)
        if path is None:
            raise _UserError(f"no {what} uploaded: choose a PNG, JPEG, DICOM or NIfTI file")
        loaded = self.code.image_io.load_input(path, frame=0 if frame is None else frame, pixel_spacing=pixel_spacing,
                                               slice_thickness=slice_thickness)  # frame is ignored but by 4D NIfTI
        loaded.name = Path(path).name
        notes = []
        shape = loaded.header.get_data_shape() if loaded.kind == "nifti" else ()
        if frame is None and len(shape) == 4 and shape[3] > 1:
            notes.append(f"4D NIfTI with {shape[3]} frames: showing frame 0 (set *Frame* to choose another)")
        height, width = loaded.slices[0].shape[:2]
        if max(height, width) > MAX_IMAGE_SIDE:
            raise _UserError(f"{loaded.name}: image of {height}x{width} pixels exceeds this app's limit of {MAX_IMAGE_SIDE} pixels per side")
        if len(loaded.slices) > MAX_SLICES:
            raise _UserError(f"{loaded.name}: {len(loaded.slices)} slices exceed this app's limit of {MAX_SLICES} slices per volume")
        return loaded, notes

    def _segment_loaded(self, loaded):
        data = np.stack(loaded.slices) if loaded.is_volume else loaded.slices[0]
        kwargs = {}
        if loaded.pixel_spacing is not None:
            kwargs["pixel_spacing"] = loaded.pixel_spacing
        if loaded.slice_thickness is not None and loaded.is_volume:
            kwargs["slice_thickness"] = loaded.slice_thickness
        return self.pipe(data, **kwargs)

    # -- endpoints --------------------------------------------------------------------------------

    def segment(self, file, row_mm=0, col_mm=0, thickness_mm=0, frame=None, alpha=DEFAULT_ALPHA):
        """Segment one upload: (overlay, areas table, volumes table, summary, mask files, state)."""
        pixel_spacing, slice_thickness = _spacing(row_mm, col_mm, thickness_mm)
        loaded, notes = self._load(file, _frame(frame), pixel_spacing, slice_thickness)
        result = self._segment_loaded(loaded)
        label_maps = np.asarray(result["label_map"])
        slices = result["slices"] if loaded.is_volume else [result]
        if not loaded.is_volume:
            label_maps = label_maps[None]
        unit = "mm2" if loaded.pixel_spacing is not None else "px"
        areas = []
        for index, item in enumerate(slices):
            values = item["areas_mm2"] if unit == "mm2" else item["areas_px"]
            segmented = bool(item["areas_px"]["lv_cavity"] or item["areas_px"]["myocardium"])
            areas.append([index, "yes" if item["lv_found"] else "no", round(float(values["lv_cavity"]), 1),
                          round(float(values["myocardium"]), 1), "yes" if segmented else "no", item.get("message") or "",
                          "; ".join(item.get("qc") or []) or "-"])
        measures = self._volume_measures(result, loaded) if loaded.is_volume else []
        state = {
            "images": [np.asarray(s, dtype=np.float32) for s in loaded.slices],
            "label_maps": label_maps.astype(np.uint8),
            "rois": [item["roi"] for item in slices],
        }
        middle = len(slices) // 2 if loaded.is_volume else 0
        summary = self._summary(loaded, slices, notes)
        files = self._mask_files(label_maps, loaded)
        state["index"] = middle
        return (self.render(state, middle, alpha), pd.DataFrame(areas, columns=AREA_HEADERS[unit]), pd.DataFrame(measures, columns=MEASURE_HEADERS),
                summary, files, state)

    @staticmethod
    def slice_slider(state):
        """The slice slider for the current upload (shown for volumes only)."""
        count = len(state["images"]) if state else 1
        return gr.Slider(minimum=0, maximum=max(count - 1, 1), value=(state or {}).get("index", 0), step=1,
                         visible=count > 1, label=f"slice (0-{count - 1})")

    def render(self, state, index=0, alpha=DEFAULT_ALPHA):
        """The overlay of slice ``index`` (LV cavity red, myocardium blue, ROI box yellow)."""
        if not state:
            return None
        count = len(state["images"])
        index = int(min(max(int(index or 0), 0), count - 1))
        alpha = float(DEFAULT_ALPHA if alpha is None else min(max(float(alpha), 0.0), 1.0))
        return self.code.visualize.overlay(state["images"][index], state["label_maps"][index], state["rois"][index], alpha=alpha)

    def zoom(self, state, index=0, alpha=DEFAULT_ALPHA):
        """The overlay of slice ``index`` around its ROI box (or, without one, around the segmented
        LV), enlarged to about ZOOM_SIDE pixels without smoothing; None where there is neither."""
        if not state:
            return None
        count = len(state["images"])
        index = int(min(max(int(index or 0), 0), count - 1))
        image, label_map, roi = state["images"][index], state["label_maps"][index], state["rois"][index]
        if roi is None:
            ys, xs = np.nonzero(label_map)
            if ys.size == 0:
                return None
            roi = [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
        height, width = image.shape[:2]
        side = max(roi[2] - roi[0] + 1, roi[3] - roi[1] + 1) * (1 + 2 * ZOOM_MARGIN)
        cx, cy = (roi[0] + roi[2] + 1) / 2, (roi[1] + roi[3] + 1) / 2
        x0, y0 = max(int(round(cx - side / 2)), 0), max(int(round(cy - side / 2)), 0)
        x1, y1 = min(int(round(cx + side / 2)), width), min(int(round(cy + side / 2)), height)
        alpha = float(DEFAULT_ALPHA if alpha is None else min(max(float(alpha), 0.0), 1.0))
        shifted = [roi[0] - x0, roi[1] - y0, roi[2] - x0, roi[3] - y0] if state["rois"][index] is not None else None
        picture = self.code.visualize.overlay(image[y0:y1, x0:x1], label_map[y0:y1, x0:x1], shifted, alpha=alpha)
        scale = max(1, ZOOM_SIDE // max(x1 - x0, y1 - y0))
        return picture.resize((picture.width * scale, picture.height * scale), resample=Image.Resampling.NEAREST)

    @staticmethod
    def layout(state):
        """The page's parts that depend on the upload: the slice slider and the volumes table (both
        shown for volumes only)."""
        count = len(state["images"]) if state else 1
        return SpaceApp.slice_slider(state), gr.update(visible=count > 1)

    def cardiac_function(self, ed_file, es_file, row_mm=0, col_mm=0, thickness_mm=0, ed_frame=None, es_frame=None,
                         alpha=DEFAULT_ALPHA):
        """EDV, ESV, SV, EF and myocardial mass of an ED and an ES volume (or two frames of one 4D NIfTI)."""
        pixel_spacing, slice_thickness = _spacing(row_mm, col_mm, thickness_mm)
        if es_file is None:
            es_file = ed_file  # one 4D NIfTI holding both phases
        ed_frame, es_frame = _frame(ed_frame), _frame(es_frame)
        if _file_path(es_file) == _file_path(ed_file) and ed_frame == es_frame:
            raise _UserError("ED and ES are the same volume: upload two volumes, or one 4D NIfTI with different ED and ES frames")
        ed, ed_notes = self._load(ed_file, ed_frame, pixel_spacing, slice_thickness, "ED volume")
        es, es_notes = self._load(es_file, es_frame, pixel_spacing, slice_thickness, "ES volume")
        for phase, loaded in (("ED", ed), ("ES", es)):
            if not loaded.is_volume:
                raise _UserError(f"{loaded.name}: the {phase} input is a single slice; EF needs a short-axis volume (NIfTI 3D/4D)")
        spacing, thickness = ed.pixel_spacing, ed.slice_thickness
        if spacing is None or thickness is None:
            spacing = thickness = None
        warnings = []
        if (ed.pixel_spacing, ed.slice_thickness) != (es.pixel_spacing, es.slice_thickness):
            warnings.append(f"ED and ES spacing differ ({ed.pixel_spacing}, {ed.slice_thickness} vs "
                            f"{es.pixel_spacing}, {es.slice_thickness}); the ED spacing is used")
        ed_out, es_out = self._segment_loaded(ed), self._segment_loaded(es)
        function = self.code.clinical.cardiac_function(ed_out["label_map"], es_out["label_map"], spacing, thickness)
        ml = function["volume_unit"] == "ml"
        rows = [
            ["EDV", _fmt(function["edv_ml"]) if ml else function["edv_voxels"], "mL" if ml else "voxels"],
            ["ESV", _fmt(function["esv_ml"]) if ml else function["esv_voxels"], "mL" if ml else "voxels"],
            ["stroke volume", _fmt(function["sv_ml"]) if ml else function["sv_voxels"], "mL" if ml else "voxels"],
            ["ejection fraction", _fmt(function["ef_percent"]), "%"],
            ["myocardial mass (ED)", _fmt(function["myocardial_mass_g"]) if ml else "n/a (spacing unknown)", "g"],
        ]
        warnings += function["warnings"]
        if not ml:
            warnings.append("pixel spacing or slice thickness unknown: volumes in voxels, EF only "
                            "(enter the spacing and slice thickness to get mL and g)")
        text = "\n".join(f"- {line}" for line in ed_notes + es_notes + warnings) or "No warnings."
        images = []
        for phase, loaded, out in (("ED", ed, ed_out), ("ES", es, es_out)):
            middle = len(loaded.slices) // 2
            roi = out["slices"][middle]["roi"]
            images.append((self.code.visualize.overlay(loaded.slices[middle], out["label_map"][middle], roi, alpha=float(alpha)),
                           f"{phase}: {loaded.name}, slice {middle}"))
        return pd.DataFrame(rows, columns=MEASURE_HEADERS), text, images

    # -- pieces -------------------------------------------------------------------------------------

    def _volume_measures(self, result, loaded):
        volumes = result.get("volumes_ml")
        if volumes is None:
            cavity = sum(int(s["areas_px"]["lv_cavity"]) for s in result["slices"])
            myo = sum(int(s["areas_px"]["myocardium"]) for s in result["slices"])
            return [["LV cavity volume", cavity, "voxels"], ["myocardium volume", myo, "voxels"]]
        mass = self.code.clinical.myocardial_mass_g(volumes["myocardium"])
        return [["LV cavity volume", round(volumes["lv_cavity"], 2), "mL"],
                ["myocardium volume", round(volumes["myocardium"], 2), "mL"],
                ["myocardial mass", round(mass, 1), "g"]]

    def _summary(self, loaded, slices, notes):
        height, width = loaded.slices[0].shape
        kind = {"dicom": "DICOM", "nifti": "NIfTI"}.get(loaded.kind, loaded.kind.upper())
        shape = f"{len(slices)} slices of {height}×{width}" if loaded.is_volume else f"slice of {height}×{width}"
        if loaded.pixel_spacing is not None:
            spacing = f"pixel spacing {loaded.pixel_spacing[0]:.4g} × {loaded.pixel_spacing[1]:.4g} mm"
        else:
            spacing = "pixel spacing unknown (areas in pixels; enter it below for mm²)"
        if loaded.is_volume:
            spacing += (f", slice thickness {loaded.slice_thickness:.4g} mm" if loaded.slice_thickness
                        else ", slice thickness unknown (enter it for volumes in mL)")
        lines = [f"**{loaded.name}**: {kind} {shape}, {spacing}."]
        # what happened, in the words of the command line (visualize.summary_lines), from the result's fields
        words = getattr(self.code.visualize, "summary_lines", None)
        if words is not None:
            lines += words(slices)
        lines += notes
        lines.append(f"Model: `{self.model_name}`. Research use only, not a medical device.")
        return "\n\n".join(lines)

    def _mask_files(self, label_maps, loaded):
        folder = _work_dir()
        stem = next((loaded.name[: -len(s)] for s in self.code.image_io.SUPPORTED if loaded.name.lower().endswith(s)),
                    loaded.name) or "input"
        save = self.code.image_io.save_mask
        nifti = save(label_maps if loaded.is_volume else label_maps[0], folder / f"{stem}_mask.nii.gz", loaded)
        if not loaded.is_volume:
            return [str(save(label_maps[0], folder / f"{stem}_mask.png")), str(nifti)]
        pngs = folder / "png"
        archive = folder / f"{stem}_mask_png.zip"
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for index, label_map in enumerate(label_maps):
                path = save(label_map, pngs / f"{stem}_mask_slice{index:03d}.png")
                zf.write(path, path.name)
        return [str(nifti), str(archive)]


def _readable_errors(app: SpaceApp, fn):
    """Turn input errors into a message in the page and anything else into a short one (the
    traceback goes to the server log only)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (_UserError, app.code.errors.InputError) as error:
            raise gr.Error(_strip_paths(str(error)), title="Cannot process this input", print_exception=False) from None
        except Exception as error:  # noqa: BLE001 - the page must never show a stack trace
            logger.error("unexpected error in %s:\n%s", fn.__name__, traceback.format_exc())
            message = _strip_paths(str(error).splitlines()[0] if str(error) else "")[:300]
            raise gr.Error(f"Unexpected error ({type(error).__name__}{': ' + message if message else ''}). "
                           "Check that the file is a short-axis cardiac MRI slice or volume.",
                           title="Processing failed", print_exception=False) from None

    return wrapper


def _strip_paths(message: str) -> str:
    """Show uploaded files by their name, not by the server's temp path."""
    parts = []
    for token in message.split(" "):
        core = token.rstrip(":,;.)")
        if os.sep in core and (core.startswith(os.sep) or core.startswith("." + os.sep)):
            token = token.replace(core, Path(core).name)
        parts.append(token)
    return " ".join(parts)


DESCRIPTION = """# HALSR-Net: left-ventricle segmentation of cardiac MRI
Upload a short-axis cine MRI **slice** (PNG, JPEG, 16-bit PNG, DICOM) or **volume** (NIfTI 3D/4D), then press
**Segment**. The LV cavity is shown in <span style="color:#e61e1e">red</span>, the myocardium in
<span style="color:#285af0">blue</span>, the region of interest found by the first stage in
<span style="color:#d4b000">yellow</span>. Areas are in mm² when the pixel spacing is known (DICOM, NIfTI, or
entered below), in pixels otherwise. *Research use only, not a medical device.*"""


def build_demo(pipe=None) -> gr.Blocks:
    """The Blocks of the Space. ``pipe``: a ``cardiac-lv-segmentation`` pipeline (default: from the
    ``HALSR_MODEL``/``HALSR_ROI_MODEL`` environment variables, else the bundled model)."""
    app = SpaceApp(pipe if pipe is not None else load_pipeline_from_env())
    examples = sorted(str(p) for p in EXAMPLES_DIR.glob("*.dcm"))

    with gr.Blocks(title="HALSR-Net LV segmentation") as demo:
        gr.Markdown(DESCRIPTION)
        with gr.Tab("Segment a slice or volume"):
            state = gr.State(None)
            with gr.Row():
                with gr.Column(scale=1, min_width=300):
                    upload = gr.File(label="MRI slice or volume (.png .jpg .dcm .nii .nii.gz)", file_count="single",
                                     elem_id="upload")
                    with gr.Accordion("Spacing (0 = from the file)", open=False):
                        with gr.Row():
                            row_mm = gr.Number(0, label="pixel spacing, rows (mm)", minimum=0)
                            col_mm = gr.Number(0, label="pixel spacing, columns (mm)", minimum=0)
                        with gr.Row():
                            thickness_mm = gr.Number(0, label="slice thickness (mm, volumes)", minimum=0)
                            frame = gr.Number(None, label="frame (4D NIfTI, 0-based)", minimum=0, precision=0)
                    button = gr.Button("Segment", variant="primary", elem_id="segment")
                    if examples:
                        gr.Examples(examples, inputs=[upload], label="Examples: Sunnybrook DICOM slices (CC0)")
                with gr.Column(scale=2):
                    with gr.Row():
                        image = gr.Image(label="Overlay", type="pil", format="png", interactive=False, height=380,
                                         elem_id="overlay")
                        zoom = gr.Image(label="Zoom on the ROI", type="pil", format="png", interactive=False, height=380,
                                        elem_id="zoom")
                    alpha = gr.Slider(0, 1, value=DEFAULT_ALPHA, step=0.05, label="opacity")
                    # the static maximum bounds API calls; the page's slider is resized per upload
                    slice_index = gr.Slider(0, MAX_SLICES - 1, value=0, step=1, label="slice", visible=False)
            summary = gr.Markdown(elem_id="summary")
            # full width, wrapped: the pipeline's message and the quality flags are read, not cut off
            areas = gr.Dataframe(headers=AREA_HEADERS["mm2"], label="Per slice: areas, what the pipeline did (message) "
                                 "and quality flags", interactive=False, wrap=True, column_widths=AREA_COLUMN_WIDTHS,
                                 elem_id="areas")
            volumes = gr.Dataframe(headers=MEASURE_HEADERS, label="Volumes (slice summation)", interactive=False,
                                   visible=False, elem_id="volumes")
            masks = gr.File(label="Masks: PNG (ids 0 background, 1 LV cavity, 2 myocardium; lossless) and NIfTI "
                                  "(input's affine)", file_count="multiple", interactive=False, elem_id="masks")

            zoom_in = _readable_errors(app, app.zoom)
            shown = button.click(_readable_errors(app, app.segment), [upload, row_mm, col_mm, thickness_mm, frame, alpha],
                                 [image, areas, volumes, summary, masks, state], api_name="segment")
            shown.success(app.layout, state, [slice_index, volumes], api_visibility="private", show_progress="hidden").then(
                zoom_in, [state, slice_index, alpha], zoom, api_visibility="private", show_progress="hidden")
            render = _readable_errors(app, app.render)
            for control, api in ((slice_index, {"api_name": "show_slice"}), (alpha, {"api_visibility": "private"})):
                control.release(render, [state, slice_index, alpha], image, show_progress="hidden", **api).then(
                    zoom_in, [state, slice_index, alpha], zoom, api_visibility="private", show_progress="hidden")

        with gr.Tab("Cardiac function (ED + ES)"):
            gr.Markdown("Upload the **end-diastolic** and **end-systolic** short-axis volumes (NIfTI), or one 4D "
                        "NIfTI as ED with the two frame numbers. Volumes by slice summation; mass = myocardial "
                        "volume at ED × 1.05 g/mL.")
            with gr.Row():
                with gr.Column():
                    ed_file = gr.File(label="ED volume", file_count="single", elem_id="ed")
                    es_file = gr.File(label="ES volume (empty: same file as ED)", file_count="single", elem_id="es")
                    with gr.Row():
                        ed_frame = gr.Number(None, label="ED frame (4D)", minimum=0, precision=0)
                        es_frame = gr.Number(None, label="ES frame (4D)", minimum=0, precision=0)
                    with gr.Row():
                        ef_row = gr.Number(0, label="pixel spacing, rows (mm)", minimum=0)
                        ef_col = gr.Number(0, label="pixel spacing, columns (mm)", minimum=0)
                        ef_thickness = gr.Number(0, label="slice thickness (mm)", minimum=0)
                    ef_button = gr.Button("Compute EF", variant="primary", elem_id="compute-ef")
                with gr.Column():
                    function_table = gr.Dataframe(headers=MEASURE_HEADERS, label="LV function", interactive=False)
                    function_notes = gr.Markdown()
                    function_images = gr.Gallery(label="Mid-ventricular slices", columns=2, format="png")
            ef_button.click(_readable_errors(app, app.cardiac_function),
                            [ed_file, es_file, ef_row, ef_col, ef_thickness, ed_frame, es_frame, alpha],
                            [function_table, function_notes, function_images], api_name="cardiac_function")
    demo.halsr_app = app
    return demo


def launch(demo: gr.Blocks, **kwargs):
    """Queue (concurrency limit, bounded queue) and launch with the upload size limit. Without
    ``server_name``/``server_port``, Gradio reads ``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT``."""
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    kwargs.setdefault("max_file_size", MAX_FILE_SIZE)
    kwargs.setdefault("allowed_paths", [str(EXAMPLES_DIR)])
    return demo.launch(**kwargs)


if __name__ == "__main__":
    import sys

    logging.basicConfig(level=logging.INFO)
    try:
        demo = build_demo()
    except (FileNotFoundError, RuntimeError, OSError) as error:
        sys.exit(f"space/app.py: cannot load the model: {error}")
    launch(demo)
