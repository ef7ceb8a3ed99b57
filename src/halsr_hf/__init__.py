"""halsr-hf: HALSR-Net cardiac LV segmentation (ROI regressor + HALSR-Net) as transformers models.

Importing the package registers the models with the ``Auto*`` classes and the
``cardiac-lv-segmentation`` pipeline task.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForSemanticSegmentation

from .configuration_halsr import PRESETS, HalsrConfig
from .configuration_roi import LvRoiConfig
from .errors import InputError
from .image_processing_halsr import HalsrImageProcessor
from .modeling_halsr import HalsrForSemanticSegmentation, HalsrModel, HalsrPreTrainedModel
from .modeling_roi import LvRoiOutput, LvRoiRegressor

__version__ = "0.1.0"

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

__all__ = [
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
