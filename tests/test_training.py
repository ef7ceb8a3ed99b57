"""Training scripts on real ACDC slices: a few steps each (tiny models, 64x64 crops), checkpoints
that reload, fine-tuning to another label set, the arrays-file source, the U-Net baseline, a
2-process torchrun run; plus the crop/augmentation invariants training relies on."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from .conftest import REPO_ROOT, load_acdc_slices

TRAIN_SLICES = [f"patient{p:03d}_frame0{f}_slice_{k}" for p in (3, 4) for f in (1, 2) for k in (1, 4, 6)]
VAL_SLICES = [f"patient005_frame01_slice_{k}" for k in (3, 5, 7)]
FAST = [
    "--preset", "tiny", "--image_size", "64", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8",
    "--eval_strategy", "steps", "--eval_steps", "2", "--logging_steps", "1", "--disable_tqdm", "True",
    "--dataloader_num_workers", "0", "--seed", "3",
]


def _rows(acdc_dir, names):
    from halsr_hf.data.schema import make_row

    rows = []
    for name, (image, label) in zip(names, load_acdc_slices(acdc_dir, names)):
        patient, frame, _, k = name.split("_")
        rows.append(make_row(image, label, name=name, patient_id=patient, source="acdc-ssl4mis",
                             phase="ED" if frame == "frame01" else "ES", slice_index=int(k) - 1, num_slices=10))
    return rows


@pytest.fixture(scope="module")
def dataset_dir(acdc_dir, tmp_path_factory):
    from halsr_hf.data import save_dataset
    from halsr_hf.data.schema import build_dataset_dict

    dsdict = build_dataset_dict({"train": _rows(acdc_dir, TRAIN_SLICES), "validation": _rows(acdc_dir, VAL_SLICES)}, "acdc-ssl4mis")
    return save_dataset(dsdict, tmp_path_factory.mktemp("data") / "acdc_small")


@pytest.fixture(scope="module")
def halsr_checkpoint(dataset_dir, tmp_path_factory):
    from halsr_hf.training.train import main

    out = tmp_path_factory.mktemp("runs") / "halsr"
    # hyphens, as in every other halsr-hf command (FAST uses the underscore spelling: both work)
    assert main(["--dataset-dir", str(dataset_dir), "--output-dir", str(out), "--max-steps", "4", *FAST]) == 0
    return out


# -- invariants (no training) --------------------------------------------------------------------


def test_flags_take_hyphens_or_underscores():
    from halsr_hf.training.train import build_argv

    for spelling in (["--eval-strategy", "no"], ["--eval_strategy=no"]):
        argv = build_argv(spelling, {}, "dice_mean")
        assert argv[argv.index("--load_best_model_at_end") + 1] == "False"
        assert argv[argv.index("--save_strategy") + 1] == "no"
    argv = build_argv(["--eval-steps", "7"], {}, "dice_mean")
    assert argv[argv.index("--save_steps") + 1] == "7"


def test_dihedral_covers_the_eight_orientations():
    from halsr_hf.training.augment import random_dihedral

    image = torch.arange(12.0).reshape(3, 4)
    rng = np.random.default_rng(0)
    seen = {tuple(random_dihedral(image, image, rng)[0].flatten().tolist()) for _ in range(200)}
    assert len(seen) == 8


def test_eval_crop_is_the_inference_crop_and_train_crop_follows_augmentation(dataset_dir):
    from datasets import load_from_disk

    from halsr_hf import HalsrImageProcessor
    from halsr_hf.data.schema import bbox_from_label
    from halsr_hf.training.data import DatasetSource, HalsrCropDataset, RoiDataset

    source = DatasetSource(load_from_disk(str(dataset_dir))["validation"])
    image, label = source.get(0)
    assert image.dtype == np.float32 and abs(float(image.mean())) < 1e-3  # normalised whole slice
    expected, _ = HalsrImageProcessor(size=64).crop([image], [bbox_from_label(label)])
    sample = HalsrCropDataset(source, size=64)[0]
    torch.testing.assert_close(sample["pixel_values"], expected[0])
    assert set(sample["labels"].unique().tolist()) == {0, 1, 2}

    torch.manual_seed(0)
    train = HalsrCropDataset(source, size=64, train=True)
    for i in range(6):  # every augmented crop still shows the LV, inside the crop
        labels = train[i % len(train)]["labels"]
        assert (labels == 1).any() and (labels == 2).any()
        assert not (labels[0] == 1).any() and not (labels[-1] == 1).any()

    roi = RoiDataset(source)[0]
    from halsr_hf.roi_stage import regressor_results

    box = regressor_results(roi["labels"][None], None, [max(image.shape)], [image.shape])[0].box
    assert box == pytest.approx([float(v) for v in bbox_from_label(label)], abs=1e-3) and bool(roi["has_lv"])


def test_label_sets_and_skipped_rows():
    from halsr_hf.training.data import HalsrCropDataset, RoiDataset, label_lookup

    lut = label_lookup(["background", "lv_cavity"])
    assert lut[[0, 1, 2, 255]].tolist() == [0, 1, 0, 255]
    with pytest.raises(ValueError):
        label_lookup(["lv_cavity", "background"])

    class Source:
        has_lv = np.array([True, True, False])
        myocardium_annotated = np.array([True, False, True])

        def __len__(self):
            return 3

    assert HalsrCropDataset(Source()).indices.tolist() == [0]
    assert HalsrCropDataset(Source(), label_names=["background", "lv_cavity"]).indices.tolist() == [0, 1]
    assert RoiDataset(Source()).indices.tolist() == [0, 2]


# -- training runs -------------------------------------------------------------------------------


def test_train_halsr_saves_a_reloadable_checkpoint(halsr_checkpoint):
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    import halsr_hf  # noqa: F401  (registers the Auto classes)

    out = halsr_checkpoint
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "train_results.json", "all_results.json",
                 "eval_results.json", "command.txt", "run_args.json", "training_args.json"):
        assert (out / name).is_file(), name
    model = AutoModelForSemanticSegmentation.from_pretrained(out)
    processor = AutoImageProcessor.from_pretrained(out)
    assert type(model).__name__ == "HalsrForSemanticSegmentation" and model.config.hidden_sizes == [4, 8, 8, 16, 16]
    assert processor.size == {"height": 64, "width": 64} and processor.crop_margin == 0.25
    results = json.loads((out / "all_results.json").read_text())
    assert 0.0 <= results["eval_dice_mean"] <= 1.0 and "eval_dice_lv_cavity" in results
    command = (out / "command.txt").read_text()
    assert "--preset tiny" in command and "seed: 3" in command
    assert json.loads((out / "training_args.json").read_text())["learning_rate"] == 1e-3
    with torch.no_grad():
        logits = model(torch.randn(1, 1, 64, 64)).logits
    assert logits.shape == (1, 3, 64, 64)


def test_finetune_to_another_label_set_through_the_cli(halsr_checkpoint, dataset_dir, tmp_path):
    from halsr_hf.cli import main
    from halsr_hf.modeling_halsr import HalsrForSemanticSegmentation

    out = tmp_path / "ft"
    argv = ["train", "--dataset_dir", str(dataset_dir), "--model_name_or_path", str(halsr_checkpoint),
            "--labels", "background,lv_cavity", "--ignore_mismatched_sizes", "True",
            "--output_dir", str(out), "--max_steps", "2", *FAST]
    assert main(argv) == 0
    model = HalsrForSemanticSegmentation.from_pretrained(out)
    assert model.config.id2label == {0: "background", 1: "lv_cavity"}
    results = json.loads((out / "all_results.json").read_text())
    assert "eval_dice_lv_cavity" in results and "eval_dice_myocardium" not in results
    # encoder weights come from the checkpoint, the head is new
    base = HalsrForSemanticSegmentation.from_pretrained(halsr_checkpoint)
    assert model.head.weight.shape[0] == 2 and base.head.weight.shape[0] == 3


def test_train_roi_saves_a_reloadable_checkpoint(dataset_dir, tmp_path):
    from halsr_hf.modeling_roi import LvRoiRegressor
    from halsr_hf.training.train_roi import main

    out = tmp_path / "roi"
    # the wall-clock limit stops it after the first step (with an evaluation and a checkpoint)
    argv = ["--dataset_dir", str(dataset_dir), "--output_dir", str(out), "--max_steps", "50", "--time_limit_minutes", "1e-6",
            *[a for a in FAST if a not in ("--preset", "tiny", "--image_size", "64")]]
    assert main(argv) == 0
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 1
    model = LvRoiRegressor.from_pretrained(out)
    assert model.config.image_size == 128
    results = json.loads((out / "all_results.json").read_text())
    assert {"eval_iou_mean", "eval_corner_rmse_px", "eval_presence_accuracy"} <= set(results)
    assert (out / "preprocessor_config.json").is_file() and (out / "command.txt").is_file()


def test_unet_baseline_from_the_arrays_file(acdc_dir, tmp_path):
    """export_arrays.py -> --arrays_file (the GPU path, no datasets) with --architecture unet: a
    HALSR-Net checkpoint whose config has the three modules and dropout off."""
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        from export_arrays import export
    finally:
        sys.path.remove(str(REPO_ROOT / "scripts"))
    from halsr_hf import HalsrForSemanticSegmentation
    from halsr_hf.configuration_halsr import PLAIN_UNET
    from halsr_hf.training.data import ArraySource
    from halsr_hf.training.train import main

    arrays = tmp_path / "arrays.npz"
    summary = export(acdc_dir, arrays, max_slices=6)
    assert summary["roi_train"] == 6 and summary["roi_validation"] == 6
    source = ArraySource(arrays, "train", "halsr")
    image, label = source.get(0)
    assert image.dtype == np.float32 and label.shape == image.shape

    out = tmp_path / "unet"
    assert main(["--arrays_file", str(arrays), "--architecture", "unet", "--output_dir", str(out), "--max_steps", "2", *FAST]) == 0
    model = HalsrForSemanticSegmentation.from_pretrained(out)
    assert model.config.hidden_sizes == [4, 8, 8, 16, 16]
    assert {key: getattr(model.config, key) for key in PLAIN_UNET} == PLAIN_UNET
    assert not any(part in name for name, _ in model.named_parameters() for part in ("hapm", "gate", "reconstruction"))
    assert "eval_dice_mean" in json.loads((out / "all_results.json").read_text())


def test_torchrun_two_processes(dataset_dir, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT / "src"))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
               str(REPO_ROOT / "scripts" / "train.py"), "--dataset_dir", str(dataset_dir), "--output_dir", str(out),
               "--max_steps", "2", "--ddp_backend", "gloo", *FAST]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "model.safetensors").is_file() and (out / "all_results.json").is_file()
    assert "world_size: 2" in (out / "command.txt").read_text()
