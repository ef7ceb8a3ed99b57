"""Test setup shared by every test file.

The environment is fixed before anything imports transformers or huggingface_hub: offline Hub,
a throw-away HF_HOME (dynamic-module cache included), one torch thread.
"""

import os
import tempfile
from pathlib import Path

_HF_HOME = tempfile.mkdtemp(prefix="halsr-hf-test-home-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HOME"] = _HF_HOME
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Real data beside the project (see ../shared/data/README.md); override with HALSR_DATA_DIR.
DATA_DIR = Path(os.environ.get("HALSR_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
ACDC_DIR = DATA_DIR / "acdc-ssl4mis"
SUNNYBROOK_DIR = DATA_DIR / "sunnybrook"
MYOPS_DIR = DATA_DIR / "myops2020"
EMIDEC_DIR = DATA_DIR / "emidec"


@pytest.fixture(scope="session")
def acdc_dir() -> Path:
    if not (ACDC_DIR / "data").is_dir():
        pytest.skip(f"real ACDC data not found at {ACDC_DIR}")
    return ACDC_DIR


@pytest.fixture(scope="session")
def sunnybrook_dir() -> Path:
    if not (SUNNYBROOK_DIR / "dicoms").is_dir():
        pytest.skip(f"real Sunnybrook data not found at {SUNNYBROOK_DIR}")
    return SUNNYBROOK_DIR


@pytest.fixture(scope="session")
def myops_dir() -> Path:
    if not (MYOPS_DIR / "Case3001").is_dir():
        pytest.skip(f"real MyoPS 2020 data not found at {MYOPS_DIR}")
    return MYOPS_DIR


@pytest.fixture(scope="session")
def emidec_dir() -> Path:
    if not (EMIDEC_DIR / "train").is_dir():
        pytest.skip(f"real EMIDEC data not found at {EMIDEC_DIR}")
    return EMIDEC_DIR


def load_acdc_slices(acdc_dir: Path, names: list) -> list:
    """Read ACDC SSL4MIS 2D slice files (``patientNNN_frameFF_slice_K``) as (image, label) arrays,
    labels mapped to the canonical ids (0 background, 1 lv_cavity, 2 myocardium; RV -> 0)."""
    import h5py
    import numpy as np

    from halsr_hf.data.schema import acdc_to_canonical

    out = []
    for name in names:
        with h5py.File(acdc_dir / "data" / f"{name}.h5", "r") as f:
            out.append((f["image"][()].astype(np.float32), acdc_to_canonical(f["label"][()])))
    return out


# ---- the tiny random models shared by the pipeline, evaluation, Hub, ONNX and Space tests ---------


def tiny_models(seed: int = 0, presence_bias: float = 5.0):
    """A tiny random HALSR-Net (64x64 crops) and ROI regressor (64x64 input) whose box is fixed near
    the centre of the slice, with the LV present (``presence_bias < 0``: never found). New models
    at every call, so a test may change them."""
    from halsr_hf import HalsrConfig, HalsrForSemanticSegmentation, LvRoiConfig, LvRoiRegressor

    torch.manual_seed(seed)
    model = HalsrForSemanticSegmentation(HalsrConfig(hidden_sizes=[4, 8, 8, 16, 16], image_size=64)).eval()
    roi = LvRoiRegressor(LvRoiConfig(image_size=64, encoder_sizes=[4, 8, 8, 16], fc_sizes=[16, 32],
                                     reduce_sizes=[16, 16, 8], global_channels=16, head_sizes=[8, 8])).eval()
    with torch.no_grad():
        roi.box.weight.zero_()
        roi.box.bias.copy_(torch.tensor([-0.6, -0.6, 0.6, 0.6]))
        roi.presence.weight.zero_()
        roi.presence.bias.fill_(presence_bias)
    return model, roi


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    """:func:`tiny_models` saved by the pipeline (code, processor, ``roi/``), as a user's model
    folder. Shared by the whole session: read it, never write into it."""
    from halsr_hf import CardiacLVSegmentationPipeline, HalsrImageProcessor

    model, roi = tiny_models()
    folder = tmp_path_factory.mktemp("tiny-model")
    CardiacLVSegmentationPipeline(model=model, image_processor=HalsrImageProcessor(size=64, roi_size=64),
                                  roi_model=roi).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_pipe(tiny_folder):
    """The pipeline loaded from :func:`tiny_folder` the way users load a model
    (``halsr_hf.load_pipeline``). Shared: do not change its settings."""
    import halsr_hf

    return halsr_hf.load_pipeline(str(tiny_folder))
