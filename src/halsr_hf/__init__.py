"""halsr-hf: HALSR-Net cardiac LV segmentation (ROI stage + HALSR-Net) as transformers models.

The ROI stage of the bundled model is a coarse LV localiser; the paper's box regressor is
selectable (see :mod:`halsr_hf.roi_stage`).

Importing the package registers the models with the ``Auto*`` classes and the
``cardiac-lv-segmentation`` pipeline task (default model: the bundled one), and makes this
package's classes win over the code copies of saved folders, without ``trust_remote_code`` and
without a prompt: ``pipeline("cardiac-lv-segmentation")``,
``pipeline("cardiac-lv-segmentation", model=folder)`` and the ``Auto*.from_pretrained(folder)``
calls all use the classes below (a saved config's ``custom_pipelines`` gives way to the registered
task: :attr:`HalsrConfig.custom_pipelines`). ``trust_remote_code=True`` is only needed where the
package is not installed.
"""

import contextlib
from pathlib import Path

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForSemanticSegmentation
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_halsr import PRESETS, HalsrConfig
from .configuration_roi import LvRoiConfig
from .errors import InputError
from .image_processing_halsr import HalsrImageProcessor
from .modeling_halsr import HalsrForSemanticSegmentation, HalsrModel, HalsrPreTrainedModel
from .modeling_roi import LvRoiOutput, LvRoiRegressor
from .pipeline_halsr import TASK, CardiacLVSegmentationPipeline

__version__ = "0.1.0"

_DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"


def default_model_dir() -> Path:
    """The folder of the bundled default model (HALSR-Net ``small`` + its LV localiser in
    ``roi/``), loadable with ``from_pretrained`` and used by ``pipeline("cardiac-lv-segmentation")``."""
    if not (_DEFAULT_MODEL_DIR / "config.json").is_file():
        raise FileNotFoundError(
            f"no default model is bundled with this installation of halsr-hf (expected {_DEFAULT_MODEL_DIR}); "
            "pass model= a folder or Hub id"
        )
    return _DEFAULT_MODEL_DIR

AutoConfig.register(HalsrConfig.model_type, HalsrConfig, exist_ok=True)
AutoConfig.register(LvRoiConfig.model_type, LvRoiConfig, exist_ok=True)
AutoModel.register(HalsrConfig, HalsrModel, exist_ok=True)
AutoModel.register(LvRoiConfig, LvRoiRegressor, exist_ok=True)
AutoModelForSemanticSegmentation.register(HalsrConfig, HalsrForSemanticSegmentation, exist_ok=True)
AutoImageProcessor.register(HalsrConfig, HalsrImageProcessor, exist_ok=True)

#: Whether :func:`load_pipeline` shows weight-loading progress bars when ``verbose`` is not given:
#: off, as in the command line, whose ``--verbose`` turns it on (``cli.set_verbosity``).
_show_loading_progress = False


@contextlib.contextmanager
def _loading_progress(show: bool):
    """The progress bars of transformers (weight loading) and huggingface_hub (downloads) on or
    off for the duration, then as they were."""
    import huggingface_hub.utils as hub_utils
    import transformers.utils.logging as hf_logging

    tf_was_on = hf_logging.is_progress_bar_enabled()
    hub_was_on = not hub_utils.are_progress_bars_disabled()
    if show != tf_was_on:
        (hf_logging.enable_progress_bar if show else hf_logging.disable_progress_bar)()
    if show != hub_was_on:
        (hub_utils.enable_progress_bars if show else hub_utils.disable_progress_bars)()
    try:
        yield
    finally:
        if show != tf_was_on:
            (hf_logging.enable_progress_bar if tf_was_on else hf_logging.disable_progress_bar)()
        if show != hub_was_on:
            (hub_utils.enable_progress_bars if hub_was_on else hub_utils.disable_progress_bars)()


def load_pipeline(model=None, roi_model=None, device=None, trust_remote_code: bool = False, verbose: bool | None = None,
                  **kwargs):
    """``pipeline("cardiac-lv-segmentation")`` for a folder, a Hub id or (``model=None``) the bundled
    default model, always with this package's pipeline class. ``roi_model``: see
    :class:`CardiacLVSegmentationPipeline` (``False``: whole slices, no ROI stage). A ``model`` that
    is neither an existing folder nor a loadable Hub id is an :class:`InputError` in one line.

    ``verbose``: show the progress bars of weight loading and Hub downloads (default: no, as in the
    command line, where ``--verbose`` shows them)."""
    from transformers import pipeline

    from .errors import argument
    from .pipeline_halsr import _is_a_path, _one_line

    model = str(default_model_dir()) if model is None else str(model)
    if not Path(model).exists() and _is_a_path(model):
        raise InputError(f"{argument('model', model)}: no such folder")
    try:
        with _loading_progress(_show_loading_progress if verbose is None else bool(verbose)):
            return pipeline(
                TASK, model=model, roi_model=roi_model, device=device, trust_remote_code=trust_remote_code,
                pipeline_class=CardiacLVSegmentationPipeline, **kwargs,
            )
    except OSError as error:
        if Path(model).exists():
            raise
        raise InputError(f"{argument('model', model)}: no such folder, nor a Hub model that could be loaded "
                         f"({_one_line(error)})") from None


# transformers 5 format of a task's default: {"model": (name_or_folder, revision)} (the v4 form
# {"pt": (...)} makes the bare pipeline(TASK) fail with "not enough values to unpack").
PIPELINE_REGISTRY.register_pipeline(
    TASK,
    pipeline_class=CardiacLVSegmentationPipeline,
    pt_model=AutoModelForSemanticSegmentation,
    default={"model": (str(_DEFAULT_MODEL_DIR), "main")},
    type="image",
)
# ``Pipeline.save_pretrained`` copies the class's ``_registered_impl`` into the saved config's
# ``custom_pipelines``: without the default, which is a folder of this installation only.
CardiacLVSegmentationPipeline._registered_impl = {
    TASK: {key: value for key, value in PIPELINE_REGISTRY.supported_tasks[TASK].items() if key != "default"}
}


# Saved folders carry the code and an ``auto_map`` so that they load with trust_remote_code=True
# where this package is not installed.
HalsrConfig.register_for_auto_class()
LvRoiConfig.register_for_auto_class()
HalsrForSemanticSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")
LvRoiRegressor.register_for_auto_class("AutoModel")
HalsrImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = [
    "TASK",
    "CardiacLVSegmentationPipeline",
    "default_model_dir",
    "load_pipeline",
    "PRESETS",
    "HalsrConfig",
    "HalsrForSemanticSegmentation",
    "HalsrImageProcessor",
    "HalsrModel",
    "HalsrPreTrainedModel",
    "InputError",
    "LvRoiConfig",
    "LvRoiOutput",
    "LvRoiRegressor",
]
