"""Fine-tuning keeps the ROI stage: ``halsr-hf train --model_name_or_path M`` copies ``M``'s ROI
model (its ``roi/`` sub-folder, ``config.roi_subfolder``) into the output folder, with the ROI-stage
settings of ``M``'s image processor (``roi_size`` and the thresholds of
:data:`~halsr_hf.image_processing_halsr.ROI_STAGE_SETTINGS`), so that
``halsr-hf segment --model OUTPUT`` runs the same ROI stage as ``M`` did. Without it the pipeline
refuses to segment (HALSR-Net is trained on LV crops, not whole slices) until a ROI model is given.
"""

import shutil
import warnings
from pathlib import Path

from ..atomic import atomic_folder
from ..image_processing_halsr import ROI_STAGE_SETTINGS, HalsrImageProcessor

PROCESSOR_FILE = "preprocessor_config.json"


def carry_roi_stage(source, output_dir, subfolder: str = "roi") -> Path | None:
    """Copy the ROI stage of ``source`` (a model folder or Hub id) into ``output_dir/subfolder``.

    Nothing is done when ``output_dir`` already has that sub-folder, or ``source`` has none (a
    checkpoint trained from scratch). A Hub id is read through the Hub cache (``HF_HUB_OFFLINE``
    respected); a Hub error is a warning, not a failed training. Returns the new folder or None."""
    if not source:
        return None
    target = Path(output_dir) / subfolder
    if target.exists():
        return None
    local = Path(source)
    if local.is_dir():
        roi = local / subfolder
    else:
        try:
            from huggingface_hub import snapshot_download

            local = Path(snapshot_download(str(source), allow_patterns=[f"{subfolder}/*", PROCESSOR_FILE]))
            roi = local / subfolder
        except Exception as error:  # huggingface_hub raises many types (offline, not found, network)
            warnings.warn(f"{source}: its ROI stage ({subfolder}/) could not be fetched ({type(error).__name__}: {error}); "
                          f"{output_dir} has none: pass roi_model= / --roi-model when segmenting with it", UserWarning,
                          stacklevel=2)
            return None
    if not (roi / "config.json").is_file():
        return None
    with atomic_folder(target) as tmp:
        for path in roi.iterdir():
            if path.is_file():
                shutil.copy2(path, Path(tmp) / path.name)
    if (local / PROCESSOR_FILE).is_file() and (Path(output_dir) / PROCESSOR_FILE).is_file():
        source_processor = HalsrImageProcessor.from_pretrained(str(local))
        processor = HalsrImageProcessor.from_pretrained(str(output_dir))
        for key in ("roi_size", *ROI_STAGE_SETTINGS):
            setattr(processor, key, getattr(source_processor, key))
        processor.save_pretrained(str(output_dir))
    return target
