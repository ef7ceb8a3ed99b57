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


# -- resuming and the training mix ---------------------------------------------------------------


def test_killed_run_resumes_from_its_last_checkpoint(dataset_dir, tmp_path):
    """A run killed with SIGKILL after its second checkpoint, then ``--resume`` with the same command:
    it continues from that checkpoint (not from step 0), keeps the first command, and adds up steps
    and wall time over both sessions."""
    import signal
    import time

    out = tmp_path / "resumed"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT / "src"))
    command = [sys.executable, "-m", "halsr_hf.cli", "train", "--dataset-dir", str(dataset_dir), "--output-dir", str(out),
               "--max-steps", "40", "--save-steps", "2", "--save-total-limit", "3", *FAST]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and not (out / "checkpoint-4" / "run_progress.json").exists():
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    assert 4 <= max(killed) < 40 and not (out / "all_results.json").exists()
    first = json.loads((out / f"checkpoint-{max(killed)}" / "run_progress.json").read_text())

    result = subprocess.run(command + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"--resume: continuing from {out / f'checkpoint-{max(killed)}'}" in result.stdout
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 40
    lines = (out / "command.txt").read_text().splitlines()
    assert lines[0].startswith("command: halsr-hf train") and "--resume" not in lines[0]
    assert sum(line.startswith("resumed: ") for line in lines) == 1 and "--resume" in lines[-1]
    run_args = json.loads((out / "run_args.json").read_text())
    assert "--resume" not in run_args["argv"] and run_args["global_step"] == 40 and run_args["finished"]
    sessions = run_args["sessions"]
    assert len(sessions) == 2 and sessions[1]["first_step"] == max(killed) and sessions[1]["last_step"] == 40
    assert run_args["wall_s_total"] == pytest.approx(first["wall_s"] + sessions[1]["wall_s"], abs=0.05)
    results = json.loads((out / "train_results.json").read_text())
    assert results["train_wall_s_total"] >= results["train_wall_s"]


def test_resume_without_a_checkpoint_starts_fresh_and_time_limit_counts_earlier_sessions(dataset_dir, tmp_path):
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from halsr_hf.training.callbacks import TimeLimitCallback
    from halsr_hf.training.train import main

    out = tmp_path / "fresh"
    assert main(["--dataset-dir", str(dataset_dir), "--output-dir", str(out), "--max-steps", "2", "--resume", "True", *FAST]) == 0
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2
    # a budget already spent by earlier sessions stops the resumed one at its first step
    args, state, control = TrainingArguments(str(tmp_path / "x"), eval_strategy="steps"), TrainerState(), TrainerControl()
    spent = TimeLimitCallback(60, elapsed_before=61)
    spent.on_train_begin(args, state, control)
    assert spent.on_step_end(args, state, control).should_training_stop and control.should_evaluate
    fresh, control = TimeLimitCallback(60, elapsed_before=0), TrainerControl()
    fresh.on_train_begin(args, state, control)
    assert not fresh.on_step_end(args, state, control).should_training_stop


def test_mix_weights_and_per_source_validation(dataset_dir, acdc_dir, tmp_path):
    """Two dataset folders as one training mix: the weights repeat or subsample each source's rows,
    validation is reported per source, and the best checkpoint is chosen on their mean."""
    from halsr_hf.data import save_dataset
    from halsr_hf.data.schema import build_dataset_dict, make_row
    from halsr_hf.training.data import ConcatSource, DatasetSource, weighted_rows
    from halsr_hf.data.card import load_split
    from halsr_hf.training.train import main, parse_weights

    rows = {}
    for split, names in (("train", TRAIN_SLICES[:4]), ("validation", VAL_SLICES[:2])):
        rows[split] = [make_row(np.ascontiguousarray(image[::-1]), np.ascontiguousarray(label[::-1]), name=n, patient_id="other" + n[7:10],
                                source="other-vendor", phase="unknown", slice_index=i, num_slices=4)
                       for i, (n, (image, label)) in enumerate(zip(names, load_acdc_slices(acdc_dir, names)))]
    other = save_dataset(build_dataset_dict(rows, "other-vendor"), tmp_path / "other")

    mix = ConcatSource([DatasetSource(load_split(str(dataset_dir), "train")), DatasetSource(load_split(str(other), "train"))])
    names = mix.source_names
    assert (names == "acdc-ssl4mis").sum() == len(TRAIN_SLICES) and (names == "other-vendor").sum() == 4
    rows = weighted_rows(names, {"other-vendor": 2.5, "acdc-ssl4mis": 0.5}, seed=1)
    assert (names[rows] == "other-vendor").sum() == 10 and (names[rows] == "acdc-ssl4mis").sum() == len(TRAIN_SLICES) // 2
    assert len(set(rows[names[rows] == "acdc-ssl4mis"].tolist())) == len(TRAIN_SLICES) // 2  # a subset, no repeat
    assert parse_weights("a=1, b=0.5") == {"a": 1.0, "b": 0.5}
    with pytest.raises(Exception, match="SOURCE=WEIGHT"):
        parse_weights("a:1")
    with pytest.raises(ValueError, match="not in the data"):
        weighted_rows(names, {"acdc": 1.0})

    out = tmp_path / "mix"
    assert main(["--dataset-dir", f"{dataset_dir},{other}", "--dataset-weights", "other-vendor=2", "--output-dir", str(out),
                 "--max-steps", "2", *FAST]) == 0
    results = json.loads((out / "all_results.json").read_text())
    for source in ("acdc-ssl4mis", "other-vendor"):
        assert 0.0 <= results[f"eval_{source}_dice_mean"] <= 1.0 and f"eval_{source}_dice_myocardium" in results
    assert results["eval_dice_mean"] == pytest.approx((results["eval_acdc-ssl4mis_dice_mean"] + results["eval_other-vendor_dice_mean"]) / 2)
    run_args = json.loads((out / "run_args.json").read_text())
    with_lv = mix.has_lv & mix.myocardium_annotated
    assert run_args["train_slices"] == with_lv[names == "acdc-ssl4mis"].sum() + 2 * with_lv[names == "other-vendor"].sum()
    assert run_args["eval_slices_per_source"] == {"acdc-ssl4mis": len(VAL_SLICES), "other-vendor": 2}


def test_learning_curves_are_drawn_from_a_runs_trainer_state(tmp_path):
    """scripts/plot_learning_curves.py reads the newest checkpoint's trainer_state.json while a run is
    still training and draws loss and per-source validation Dice."""
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        from plot_learning_curves import curves, draw
    finally:
        sys.path.remove(str(REPO_ROOT / "scripts"))
    history = [{"loss": 0.3 - 0.01 * k, "epoch": k / 2, "step": k} for k in range(1, 9)]
    for epoch in (1, 2, 3, 4):
        history.append({"eval_a_dice_lv_cavity": 0.8 + 0.01 * epoch, "eval_b_dice_lv_cavity": 0.7 + 0.02 * epoch,
                        "eval_a_dice_mean": 0.8, "epoch": epoch})
        history.append({"eval_dice_mean": 0.75 + 0.01 * epoch, "epoch": epoch})
    run = tmp_path / "run"
    (run / "checkpoint-8").mkdir(parents=True)
    (run / "checkpoint-8" / "trainer_state.json").write_text(json.dumps({"log_history": history, "global_step": 8, "epoch": 4.0}))
    loss, metrics = curves(json.loads((run / "checkpoint-8" / "trainer_state.json").read_text()))
    assert len(loss) == 8 and set(metrics) == {"eval_a_dice_lv_cavity", "eval_b_dice_lv_cavity", "eval_a_dice_mean", "eval_dice_mean"}
    png = draw(run, run / "learning_curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_learning_curves_of_a_second_stage_continue_the_first(tmp_path):
    """A run started from a checkpoint of an earlier one (--after) is drawn after it: its epochs are
    shifted by the earlier run's, on one axis."""
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        import plot_learning_curves
    finally:
        sys.path.remove(str(REPO_ROOT / "scripts"))
    first, second = tmp_path / "first" / "checkpoint-4", tmp_path / "second"
    first.mkdir(parents=True)
    second.mkdir()
    first_state = {"global_step": 4, "epoch": 2.0, "log_history": [{"loss": 0.3, "epoch": 1.0}, {"eval_dice_mean": 0.7, "epoch": 2.0}]}
    second_state = {"global_step": 2, "epoch": 1.0, "log_history": [{"loss": 0.2, "epoch": 0.5}, {"eval_dice_mean": 0.8, "epoch": 1.0}]}
    (first / "trainer_state.json").write_text(json.dumps(first_state))
    (second / "trainer_state.json").write_text(json.dumps(second_state))
    loss, metrics, offset = plot_learning_curves.stage_curves(second, after=first)
    assert offset == 2.0 and loss == [(1.0, 0.3), (2.5, 0.2)]
    assert metrics["eval_dice_mean"] == [(2.0, 0.7), (3.0, 0.8)]
    png = plot_learning_curves.draw(second, tmp_path / "curves.png", after=first)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_early_stopping_counts_only_evaluations_with_the_selection_metric(tmp_path):
    """In a mix, each source is evaluated on its own before the mean is reported: those evaluations
    neither count towards early stopping nor log that early stopping is disabled."""
    from unittest import mock

    from transformers import TrainerControl, TrainerState, TrainingArguments
    from transformers import trainer_callback

    from halsr_hf.training.train import SelectionEarlyStoppingCallback

    args = TrainingArguments(output_dir=str(tmp_path), metric_for_best_model="dice_mean", greater_is_better=True,
                             load_best_model_at_end=True, eval_strategy="epoch", save_strategy="epoch", report_to=[])
    callback, state, control = SelectionEarlyStoppingCallback(early_stopping_patience=2), TrainerState(), TrainerControl()
    state.best_metric = 0.9
    with mock.patch.object(trainer_callback.logger, "warning") as warning:
        callback.on_evaluate(args, state, control, {"eval_acdc-ssl4mis_dice_mean": 0.5})
        callback.on_evaluate(args, state, control, {"eval_dice_mean": 0.8})
        callback.on_evaluate(args, state, control, {"eval_myops2020-cine_dice_mean": 0.1})
    warning.assert_not_called()
    assert callback.early_stopping_patience_counter == 1 and not control.should_training_stop
    callback.on_evaluate(args, state, control, {"eval_dice_mean": 0.8})
    assert callback.early_stopping_patience_counter == 2 and control.should_training_stop


def test_resumed_run_matches_an_uninterrupted_one_tensor_by_tensor(dataset_dir, tmp_path):
    """Issue 25: resuming was checked only by its bookkeeping. Here a run of 6 steps is compared with one
    resumed from its step-3 checkpoint (what a run killed after that checkpoint leaves): every weight,
    buffer and optimiser state tensor, and the scheduler, are equal at step 6."""
    import shutil

    from safetensors.torch import load_file

    from halsr_hf.training.train import main

    fast = [a for a in FAST]
    fast[fast.index("--eval_strategy") + 1] = "no"
    command = ["--dataset-dir", str(dataset_dir), "--max-steps", "6", "--save-strategy", "steps", "--save-steps", "3", *fast]
    whole = tmp_path / "whole"
    assert main([*command, "--output-dir", str(whole)]) == 0
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(whole / "checkpoint-3", resumed / "checkpoint-3")
    assert main([*command, "--output-dir", str(resumed), "--resume"]) == 0
    # it did resume (a fresh start with the same seed would also end equal): its session began at step 3
    session = json.loads((resumed / "run_args.json").read_text())["sessions"][-1]
    assert (session["first_step"], session["last_step"]) == (3, 6) and session["resumed_from"].endswith("checkpoint-3")

    def same(a: dict, b: dict, what: str):
        assert a.keys() == b.keys(), what
        for key in a:
            x, y = a[key], b[key]
            if isinstance(x, dict):
                same(x, y, f"{what}.{key}")
            elif isinstance(x, torch.Tensor):
                assert torch.equal(x, y), f"{what}.{key}: max difference {(x.float() - y.float()).abs().max()}"
            elif isinstance(x, list) and x and isinstance(x[0], dict):
                for i, (u, v) in enumerate(zip(x, y)):
                    same(u, v, f"{what}.{key}[{i}]")
            else:
                assert x == y, f"{what}.{key}: {x!r} != {y!r}"

    weights = load_file(whole / "checkpoint-6" / "model.safetensors")
    assert weights and weights.keys() == load_file(resumed / "checkpoint-6" / "model.safetensors").keys()
    same(weights, load_file(resumed / "checkpoint-6" / "model.safetensors"), "weights")
    same(load_file(whole / "model.safetensors"), load_file(resumed / "model.safetensors"), "final weights")
    optimiser = torch.load(whole / "checkpoint-6" / "optimizer.pt", weights_only=True)
    assert optimiser["state"], "the optimiser has state (Adam moments) to compare"
    same(optimiser, torch.load(resumed / "checkpoint-6" / "optimizer.pt", weights_only=True), "optimiser")
    same(torch.load(whole / "checkpoint-6" / "scheduler.pt", weights_only=True),
         torch.load(resumed / "checkpoint-6" / "scheduler.pt", weights_only=True), "scheduler")
    # and the check itself can fail: the step-3 weights differ from the step-6 ones
    assert not all(torch.equal(weights[k], v) for k, v in load_file(whole / "checkpoint-3" / "model.safetensors").items())


def test_finetune_the_bundled_model_by_its_name(dataset_dir, tmp_path, capfd):
    """Issue 26: ``--model-name-or-path bundled`` (the README's fine-tuning command) fine-tunes the
    bundled model and keeps its ROI stage; the run ends by saying where the model went and its best
    validation Dice; the saved weights have the user's normal permissions (safetensors wrote them
    0600); the logs are one plain line per step, numbers as numbers, not dicts of strings."""
    import re

    from halsr_hf.cli import main

    out = tmp_path / "ft"
    previous = os.umask(0o022)
    try:
        assert main(["train", "--dataset-dir", str(dataset_dir), "--model-name-or-path", "bundled", "--output-dir", str(out),
                     "--max-steps", "2", "--per-device-train-batch-size", "4", "--eval-strategy", "steps", "--eval-steps",
                     "2", "--logging-steps", "1", "--dataloader-num-workers", "0"]) == 0
    finally:
        os.umask(previous)
    printed = capfd.readouterr().out
    last = printed.strip().splitlines()[-1]
    assert re.fullmatch(rf"model saved to {re.escape(str(out))} \(best checkpoint {re.escape(str(out))}/checkpoint-2: "
                        r"validation dice_mean 0\.\d{4}\)", last), last
    for weights in (out / "model.safetensors", out / "checkpoint-2" / "model.safetensors"):
        assert weights.stat().st_mode & 0o777 == 0o644, oct(weights.stat().st_mode)
    assert (out / "roi" / "config.json").is_file()  # the bundled ROI stage came along
    steps = [line for line in printed.splitlines() if line.startswith(("step ", "eval step "))]
    assert steps[0].startswith("step 1/2 | ") and re.search(r"\| loss \d", steps[0]), steps
    assert any(line.startswith("eval step 2/2 | ") and "| dice_mean 0." in line for line in steps), steps
    assert "{'" not in printed and "it/s]" not in printed
