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

**Lazy import.** ``import halsr_hf`` loads neither torch nor transformers (``halsr-hf --help``
answers in a fraction of a second, where loading them takes seconds): the classes below are
imported on first use (``halsr_hf.HalsrConfig``, as transformers' own ``_LazyModule`` does), and the
registration happens as soon as transformers' registries are there: at once when
``transformers.pipelines`` or its Auto classes are already imported, else right after their import
(an import hook, :class:`_AfterImport`), and in any case before :func:`load_pipeline` or a class of
this package is used. So ``import halsr_hf`` then ``transformers.pipeline("cardiac-lv-segmentation")``
works as before, whichever of the two is imported first.
"""

import contextlib
import importlib
import importlib.abc
import sys
import threading
from pathlib import Path

from .errors import InputError

__version__ = "0.1.0"

_DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"

#: The reserved model name of the bundled model, accepted wherever a model folder or Hub id is:
#: ``load_pipeline("bundled")``, ``halsr-hf segment/predict/ef --model bundled``,
#: ``halsr-hf train --model-name-or-path bundled`` (fine-tuning it). A local folder of that name
#: still wins (write ``./bundled`` to be explicit).
BUNDLED = "bundled"

#: Public names that live in submodules, imported on first access (PEP 562 ``__getattr__``).
_LAZY = {
    "PRESETS": "configuration_halsr",
    "HalsrConfig": "configuration_halsr",
    "LvRoiConfig": "configuration_roi",
    "HalsrImageProcessor": "image_processing_halsr",
    "HalsrForSemanticSegmentation": "modeling_halsr",
    "HalsrModel": "modeling_halsr",
    "HalsrPreTrainedModel": "modeling_halsr",
    "LvRoiOutput": "modeling_roi",
    "LvRoiRegressor": "modeling_roi",
    "TASK": "pipeline_halsr",
    "CardiacLVSegmentationPipeline": "pipeline_halsr",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        if name in _SUBMODULES:  # halsr_hf.image_io etc., as after ``import halsr_hf.image_io``
            return importlib.import_module(f"{__name__}.{name}")
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    _register(auto=True, pipeline=module == "pipeline_halsr")
    globals()[name] = value  # the next access does not come here
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))


_SUBMODULES = ("atomic", "cli", "clinical", "cohort", "commands", "data", "dicom_series", "errors", "evaluation", "hub",
               "hub_cli", "image_io", "json_output", "metrics", "model_card", "onnx_backend", "roi_stage", "training",
               "visualize", "weight_init", "configuration_halsr", "configuration_roi", "image_processing_halsr",
               "modeling_halsr", "modeling_roi", "pipeline_halsr")


def default_model_dir() -> Path:
    """The folder of the bundled default model (HALSR-Net ``small`` + its LV localiser in
    ``roi/``), loadable with ``from_pretrained`` and used by ``pipeline("cardiac-lv-segmentation")``."""
    if not (_DEFAULT_MODEL_DIR / "config.json").is_file():
        raise FileNotFoundError(
            f"no default model is bundled with this installation of halsr-hf (expected {_DEFAULT_MODEL_DIR}); "
            "pass model= a folder or Hub id"
        )
    return _DEFAULT_MODEL_DIR


def resolve_model(model):
    """A model argument as a folder or Hub id: ``None`` and :data:`BUNDLED` (``"bundled"``) are
    the bundled model's folder (unless a folder named ``bundled`` exists here); anything else is
    returned as given (a path as a string)."""
    if model is None or (str(model) == BUNDLED and not Path(BUNDLED).exists()):
        return str(default_model_dir())
    return str(model)


# ---- registration with transformers (on first need; see the module docstring) -------------------

#: transformers modules whose import makes the registration possible (the registries), and this
#: package's modules whose import needs it (their classes save an ``auto_map``).
_REGISTRY_MODULES = ("transformers.pipelines", "transformers.models.auto.configuration_auto",
                     "transformers.models.auto.modeling_auto", "transformers.models.auto.image_processing_auto")
_OWN_MODULES = tuple(f"{__name__}.{name}" for name in ("configuration_halsr", "configuration_roi", "modeling_halsr",
                                                       "modeling_roi", "image_processing_halsr", "pipeline_halsr"))
_registered = {"auto": False, "pipeline": False}
_lock = threading.RLock()
_registering = []  # non-empty while _register runs (its own imports re-enter it)


def _initializing(name: str) -> bool:
    module = sys.modules.get(name)
    return module is not None and bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def _register(just_imported: str | None = None, auto: bool = False, pipeline: bool = False) -> None:
    """Register the models with the Auto classes and the pipeline task, once each.

    ``auto``, ``pipeline``: do it now, importing what is needed (a class of this package or
    :func:`load_pipeline` is being used). Otherwise (the import hook, ``import halsr_hf``) register
    only where transformers has already imported the registry, and wait while one of the modules
    involved is still being imported (the module that just finished, ``just_imported``, is complete)."""
    if all(_registered.values()):
        return
    involved = _REGISTRY_MODULES + _OWN_MODULES + ("transformers", "transformers.configuration_utils",
                                                   "transformers.modeling_utils", "transformers.image_processing_utils")
    with _lock:
        if _registering or any(_initializing(name) for name in involved if name != just_imported):
            return  # the registration in progress, a later import (this hook again) or use of the package finishes the job
        _registering.append(True)  # the imports below come back here through the hook: they wait
        try:
            if not _registered["auto"] and (auto or pipeline or any(name in sys.modules for name in _REGISTRY_MODULES + _OWN_MODULES)):
                _register_auto_classes()
                _registered["auto"] = True
            if not _registered["pipeline"] and (pipeline or "transformers.pipelines" in sys.modules):
                _register_pipeline()
                _registered["pipeline"] = True
        finally:
            _registering.clear()


def _register_auto_classes() -> None:
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForSemanticSegmentation

    from .configuration_halsr import HalsrConfig
    from .configuration_roi import LvRoiConfig
    from .image_processing_halsr import HalsrImageProcessor
    from .modeling_halsr import HalsrForSemanticSegmentation, HalsrModel
    from .modeling_roi import LvRoiRegressor

    AutoConfig.register(HalsrConfig.model_type, HalsrConfig, exist_ok=True)
    AutoConfig.register(LvRoiConfig.model_type, LvRoiConfig, exist_ok=True)
    AutoModel.register(HalsrConfig, HalsrModel, exist_ok=True)
    AutoModel.register(LvRoiConfig, LvRoiRegressor, exist_ok=True)
    AutoModelForSemanticSegmentation.register(HalsrConfig, HalsrForSemanticSegmentation, exist_ok=True)
    AutoImageProcessor.register(HalsrConfig, HalsrImageProcessor, exist_ok=True)
    # Saved folders carry the code and an ``auto_map`` so that they load with trust_remote_code=True
    # where this package is not installed.
    HalsrConfig.register_for_auto_class()
    LvRoiConfig.register_for_auto_class()
    HalsrForSemanticSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")
    LvRoiRegressor.register_for_auto_class("AutoModel")
    HalsrImageProcessor.register_for_auto_class("AutoImageProcessor")


def _register_pipeline() -> None:
    from transformers import AutoModelForSemanticSegmentation
    from transformers.pipelines import PIPELINE_REGISTRY

    from .pipeline_halsr import TASK, CardiacLVSegmentationPipeline

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


class _AfterLoader(importlib.abc.Loader):
    """A module's own loader, then :func:`_register` once the module is complete."""

    def __init__(self, loader, name: str):
        self._loader, self._name = loader, name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        module.__loader__ = self._loader  # as if this wrapper had never been there
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        _register(just_imported=self._name)

    def __getattr__(self, name):  # get_source, is_package, get_resource_reader...
        return getattr(self._loader, name)


class _AfterImport(importlib.abc.MetaPathFinder):
    """The import hook of the lazy registration: for the modules of :data:`_REGISTRY_MODULES` and
    :data:`_OWN_MODULES`, the spec the other finders give, with a loader that registers after the
    module ran. It stays out of every other import and removes itself once all is registered."""

    _watched = frozenset(_REGISTRY_MODULES + _OWN_MODULES)

    def find_spec(self, fullname, path, target=None):
        if fullname not in self._watched:
            return None
        if all(_registered.values()):
            with contextlib.suppress(ValueError):
                sys.meta_path.remove(self)
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _AfterLoader(spec.loader, fullname)
                return spec
        return None


if not any(isinstance(finder, _AfterImport) for finder in sys.meta_path):
    sys.meta_path.insert(0, _AfterImport())
_register()  # transformers imported before this package: register now


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
    """``pipeline("cardiac-lv-segmentation")`` for a folder, a Hub id or the bundled default model
    (``model=None`` or ``"bundled"``, :data:`BUNDLED`), always with this package's pipeline class.
    ``roi_model``: see :class:`CardiacLVSegmentationPipeline` (``False``: whole slices, no ROI
    stage). A ``model`` that is neither an existing folder nor a loadable Hub id is an
    :class:`InputError` in one line.

    ``verbose``: show the progress bars of weight loading and Hub downloads (default: no, as in the
    command line, where ``--verbose`` shows them)."""
    from transformers import pipeline

    from .errors import argument
    from .pipeline_halsr import TASK, CardiacLVSegmentationPipeline, _is_a_path, _one_line

    _register(auto=True, pipeline=True)
    model = resolve_model(model)
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


__all__ = [
    "BUNDLED",
    "TASK",
    "CardiacLVSegmentationPipeline",
    "default_model_dir",
    "load_pipeline",
    "resolve_model",
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
