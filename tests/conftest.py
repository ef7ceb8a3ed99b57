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
