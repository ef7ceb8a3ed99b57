"""``halsr-hf push-to-hub`` and the model card: dry-run folders that load without the package,
fine-tuning from them, cards whose ``model-index`` round-trips the evaluation numbers, and the
upload code path with only the network calls replaced (offline, no token, unauthorised)."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import HfApi, ModelCard, constants
from huggingface_hub.repocard_data import model_index_to_eval_results

from halsr_hf import CardiacLVSegmentationPipeline, HalsrConfig, HalsrForSemanticSegmentation, HalsrImageProcessor
from halsr_hf import LvRoiConfig, LvRoiRegressor, load_pipeline
import halsr_hf
from halsr_hf import hub
from halsr_hf.model_card import check_model_card, load_summary, render_model_card, write_model_card

from .conftest import load_acdc_slices, tiny_models

REPO_ID = "someone/halsr-net-tiny-test"
ACDC_SLICE = "patient003_frame01_slice_5"
CODE_FILES = {"configuration_halsr.py", "modeling_halsr.py", "image_processing_halsr.py", "pipeline_halsr.py",
              "image_io.py", "clinical.py", "errors.py", "configuration_roi.py", "modeling_roi.py", "weight_init.py",
              "atomic.py", "roi_stage.py",
              "visualize.py"}  # the Space without the package takes visualize.py from the repository (docs/space.md)
MODEL_REPO_FILES = CODE_FILES | {
    "README.md", "config.json", "model.safetensors", "preprocessor_config.json", "evaluation/summary.json",
    "roi/config.json", "roi/model.safetensors", "roi/configuration_roi.py", "roi/modeling_roi.py", "roi/errors.py",
    "roi/weight_init.py",
}

#: A FIXTURE, not a result: the shape of ``halsr-hf evaluate``'s summary.json with made-up numbers
#: (values with many digits, to check that they reach the card's metadata unchanged).
FAKE_SUMMARY = {
    "model": "fixture-model",
    "dataset": {"name": "ACDC (SSL4MIS split)", "hf_id": None, "split": "test", "source": "acdc"},
    "distance_unit": "px",
    "volume_metrics": {
        "dice_lv_cavity": {"mean": 0.9512345678901234, "sd": 0.0311, "median": 0.9601},
        "dice_myocardium": {"mean": 0.8876543, "sd": 0.041, "median": 0.89},
        "hd95_lv_cavity": {"mean": 3.2512, "sd": 1.5, "median": 2.9},
        "hd95_myocardium": {"mean": 4.125, "sd": 2.0, "median": 3.7},
        "assd_lv_cavity": {"mean": 0.8751, "sd": 0.3, "median": 0.8},
        "hd_myocardium": {"mean": float("nan"), "sd": None, "median": None},  # non-finite: left out of model-index
    },
    "slice_metrics": {"dice_lv_cavity": {"mean": 0.9033, "sd": 0.1, "median": 0.93},
                      "iou_myocardium": {"mean": 0.7712, "sd": 0.1, "median": 0.78}},
    "roi": {"rmse": 2.4567, "rmse_sd": 1.25, "unit": "px", "outlier_rate_percent": 1.5,
            "outlier_definition": "IoU with the reference box < 0.5"},
    "clinical": {"ef_bias": -1.2345, "ef_mae": 3.5, "ef_r": 0.9712, "edv_bias": 2.5, "edv_mae": None,
                 "unit_volume": "px^3"},
    "extra_evaluations": [{
        "dataset": {"name": "Sunnybrook Cardiac Data (subset)", "hf_id": "someone/sunnybrook-lv", "split": "all",
                    "source": "sunnybrook"},
        "distance_unit": "mm",
        "volume_metrics": None,
        "roi": {"rmse": 3.75, "rmse_sd": 1.0, "unit": "mm", "outlier_rate_percent": 4.0, "outlier_definition": "x"},
        "slice_metrics": {"dice_lv_cavity": {"mean": 0.8523, "sd": 0.1, "median": 0.88},
                          "hd95_lv_cavity": {"mean": 5.4321, "sd": 2.0, "median": 5.0}},
    }],
    "baseline": {"model": "a second model evaluated side by side: not part of this card's model-index"},
}


@pytest.fixture(scope="module")
def summary_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval") / "summary.json"
    path.write_text(json.dumps(FAKE_SUMMARY, indent=2))  # NaN written as JSON NaN, as json.dump does
    return path


@pytest.fixture(scope="module")
def dry_run(tiny_folder, summary_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("dry") / "repo"
    code = hub.main(["model", "--model-dir", str(tiny_folder), "--repo-id", REPO_ID,
                     "--eval-results", str(summary_path), "--dry-run", str(out)])
    assert code == 0
    return out


def expected_metrics(summary):
    """(dataset name, metric name) -> value for every finite mean/scalar of a summary."""
    from halsr_hf.model_card import eval_results_from_summary

    return {(r.dataset_name, r.metric_name): r.metric_value for r in eval_results_from_summary(summary)}


# ---- the dry-run model folder ------------------------------------------------------------------


def test_dry_run_model_folder_is_the_repository(dry_run, summary_path, capsys):
    files = set(hub.list_files(dry_run))
    assert MODEL_REPO_FILES <= files
    assert all(f.endswith(".py") and "/" not in f for f in files - MODEL_REPO_FILES)  # more code files the pipeline imports
    config = json.loads((dry_run / "config.json").read_text())
    assert config["auto_map"]["AutoModelForSemanticSegmentation"] == "modeling_halsr.HalsrForSemanticSegmentation"
    assert config["auto_map"]["AutoConfig"] == "configuration_halsr.HalsrConfig"
    pipeline_spec = config["custom_pipelines"]["cardiac-lv-segmentation"]
    assert pipeline_spec["impl"] == "pipeline_halsr.CardiacLVSegmentationPipeline"
    # transformers 5's format ({"model": (id, revision)}), the repository itself: no local path of this machine
    assert pipeline_spec["default"] == {"model": [REPO_ID, "main"]}
    assert str(Path(halsr_hf.__file__).parent) not in (dry_run / "config.json").read_text()
    processor = json.loads((dry_run / "preprocessor_config.json").read_text())
    assert processor["auto_map"]["AutoImageProcessor"] == "image_processing_halsr.HalsrImageProcessor"
    roi_config = json.loads((dry_run / "roi" / "config.json").read_text())
    assert roi_config["auto_map"]["AutoModel"] == "modeling_roi.LvRoiRegressor"
    # code is self-contained: relative imports only
    for path in dry_run.rglob("*.py"):
        text = path.read_text()
        assert "import halsr_hf" not in text and "from halsr_hf" not in text, path
    hub.check_self_contained(dry_run)
    # weights only as safetensors, nothing pickled
    assert not [p for p in dry_run.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]
    assert json.loads((dry_run / "evaluation" / "summary.json").read_text())["model"] == "fixture-model"
    assert not list(dry_run.parent.glob(".repo.tmp-*"))  # the temporary folder was renamed


def test_self_contained_check_catches_package_imports(tmp_path):
    (tmp_path / "modeling_x.py").write_text("from halsr_hf.errors import InputError\n")
    with pytest.raises(RuntimeError, match="modeling_x.py"):
        hub.check_self_contained(tmp_path)


def test_dry_run_refuses_a_non_empty_folder_unless_overwrite(tiny_folder, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    args = ["model", "--model-dir", str(tiny_folder), "--repo-id", REPO_ID, "--dry-run", str(out)]
    assert hub.main(args) == 2
    assert "not empty" in capsys.readouterr().err and (out / "keep.txt").is_file()
    assert hub.main(args + ["--overwrite"]) == 0
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    assert "evaluation/summary.json" not in hub.list_files(out)  # no --eval-results: no evaluation
    assert "No evaluation results were supplied" in (out / "README.md").read_text()


REMOTE = textwrap.dedent(
    """
    import sys
    sys.modules["halsr_hf"] = None  # the package cannot be imported in this process
    import numpy as np
    from transformers import AutoImageProcessor, AutoModel, AutoModelForSemanticSegmentation, pipeline
    folder, image_path, out = sys.argv[1:4]
    pipe = pipeline("cardiac-lv-segmentation", model=folder, trust_remote_code=True)
    assert "halsr_hf" not in type(pipe).__module__ and pipe.roi_model is not None
    np.save(out, pipe(np.load(image_path))["label_map"])
    model = AutoModelForSemanticSegmentation.from_pretrained(folder, trust_remote_code=True)
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    roi = AutoModel.from_pretrained(folder, subfolder="roi", trust_remote_code=True)
    print(type(pipe).__name__, type(model).__name__, type(processor).__name__, type(roi).__name__)
    """
)


def test_dry_run_folder_loads_where_halsr_hf_is_not_importable(dry_run, acdc_dir, tmp_path):
    fresh = tmp_path / "copied-repo"
    shutil.copytree(dry_run, fresh)
    image, _ = load_acdc_slices(acdc_dir, [ACDC_SLICE])[0]
    np.save(tmp_path / "slice.npy", image)
    (tmp_path / "remote.py").write_text(REMOTE)
    result = subprocess.run(
        [sys.executable, str(tmp_path / "remote.py"), str(fresh), str(tmp_path / "slice.npy"), str(tmp_path / "out.npy")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["CardiacLVSegmentationPipeline", "HalsrForSemanticSegmentation",
                                     "HalsrImageProcessor", "LvRoiRegressor"]
    installed = load_pipeline(model=str(fresh))(image)["label_map"]
    remote = np.load(tmp_path / "out.npy")
    assert remote.shape == image.shape and np.array_equal(remote, installed)


def test_trainer_checkpoint_is_resaved_with_code_processor_and_roi(tmp_path, summary_path):
    """A folder with only weights + config (as a Trainer saves it) and a separate ROI folder."""
    model, roi = tiny_models(seed=1)
    checkpoint, roi_dir = tmp_path / "checkpoint", tmp_path / "roi-model"
    model.save_pretrained(checkpoint)
    roi.save_pretrained(roi_dir)
    for path in checkpoint.glob("*.py"):
        path.unlink()
    (checkpoint / "training_args.json").write_text(json.dumps({"learning_rate": 0.001, "max_steps": 7, "seed": 42,
                                                               "per_device_train_batch_size": 16}))
    (checkpoint / "command.txt").write_text("command: halsr-hf train --preset tiny\nseed: 42\n")
    (checkpoint / "all_results.json").write_text(json.dumps({"train_loss": 0.4321, "epoch": 1.0}))
    (checkpoint / "run_args.json").write_text(json.dumps({"model_args": {"preset": "tiny", "architecture": "halsr"},
                                                          "data_args": {"image_size": 64, "augment": True}, "seed": 42}))
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 7, "train_batch_size": 16, "log_history": []}))
    (checkpoint / "training_args.bin").write_bytes(b"pickle")
    (checkpoint / "checkpoint-7").mkdir()
    out = tmp_path / "repo"
    assert hub.main(["model", "--model-dir", str(checkpoint), "--repo-id", REPO_ID, "--dry-run", str(out)]) == 2
    assert hub.main(["model", "--model-dir", str(checkpoint), "--roi-model", str(roi_dir), "--repo-id", REPO_ID,
                     "--eval-results", str(summary_path), "--dry-run", str(out)]) == 0
    files = set(hub.list_files(out))
    assert {"pipeline_halsr.py", "preprocessor_config.json", "roi/model.safetensors", "training_args.json",
            "command.txt", "all_results.json"} <= files
    assert "training_args.bin" not in files and "trainer_state.json" in files
    assert not [f for f in files if f.startswith("checkpoint-")]
    assert json.loads((out / "preprocessor_config.json").read_text())["size"] == {"height": 64, "width": 64}  # the model's image_size
    card = (out / "README.md").read_text()
    assert "| `learning_rate` | 0.001 |" in card and "| `max_steps` | 7 |" in card
    assert "command: halsr-hf train --preset tiny" in card and "| `train_loss` | 0.4321 |" in card
    assert "| `preset` | tiny |" in card and "| `global_step` | 7 |" in card and "| `augment` | True |" in card


def test_bad_inputs_give_one_line_errors(tmp_path, tiny_folder, capsys):
    bad = tmp_path / "summary.json"
    bad.write_text(json.dumps({"model": "x"}))
    assert hub.main(["model", "--model-dir", str(tiny_folder), "--repo-id", REPO_ID, "--eval-results", str(bad),
                     "--dry-run", str(tmp_path / "o")]) == 2
    assert "not an evaluation summary" in capsys.readouterr().err
    assert hub.main(["model", "--model-dir", str(tmp_path), "--repo-id", REPO_ID, "--dry-run", str(tmp_path / "o")]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ---- fine-tuning from a published folder ---------------------------------------------------------


def test_fine_tuning_starts_from_a_dry_run_folder(dry_run, acdc_dir, tmp_path):
    from halsr_hf.cli import main as cli_main
    from halsr_hf.data.schema import build_dataset_dict, make_row

    names = {"train": ["patient003_frame01_slice_4", "patient003_frame01_slice_5"],
             "validation": ["patient099_frame01_slice_5"]}
    rows = {}
    for split, split_names in names.items():
        rows[split] = [make_row(image, label, name=name, patient_id=name[:10], source="acdc", phase="ED",
                                slice_index=i, num_slices=10)
                       for i, (name, (image, label)) in enumerate(zip(split_names, load_acdc_slices(acdc_dir, split_names)))]
    build_dataset_dict(rows, source="acdc").save_to_disk(str(tmp_path / "data"))
    out = tmp_path / "finetuned"
    code = cli_main(["train", "--dataset_dir", str(tmp_path / "data"), "--model_name_or_path", str(dry_run),
                     "--max_steps", "2", "--per_device_train_batch_size", "2", "--image_size", "64",
                     "--eval_strategy", "no", "--save_strategy", "no", "--output_dir", str(out)])
    assert code == 0
    tuned = HalsrForSemanticSegmentation.from_pretrained(out)
    assert tuned.config.hidden_sizes == [4, 8, 8, 16, 16]
    start = HalsrForSemanticSegmentation.from_pretrained(dry_run)
    changed = [not torch.equal(a, b) for a, b in zip(start.state_dict().values(), tuned.state_dict().values())]
    assert any(changed)  # it trained, from the published weights


# ---- the model card ----------------------------------------------------------------------------------


def test_model_card_metadata_validates_and_round_trips_the_numbers(dry_run):
    card = ModelCard.load(dry_run / "README.md")
    data = card.data
    assert data.license == "cc-by-nc-sa-4.0" and data.library_name == "transformers"
    assert {"medical-imaging", "cardiac-mri", "image-segmentation"} <= set(data.tags)
    assert data.datasets == ["someone/sunnybrook-lv"]
    # model-index parses with huggingface_hub's own parser, to the same entries
    metadata = yaml.safe_load((dry_run / "README.md").read_text().split("---")[1])
    name, parsed = model_index_to_eval_results(metadata["model-index"])
    assert name.startswith("HALSR-Net (tiny)")
    assert len(parsed) == len(data.eval_results) == len(check_model_card(dry_run / "README.md"))
    got = {(r.dataset_name, r.metric_name): r.metric_value for r in parsed}
    expected = expected_metrics(FAKE_SUMMARY)
    assert got == expected  # exactly, no rounding
    assert got[("ACDC (SSL4MIS split)", "Dice (LV cavity, 3D per volume)")] == 0.9512345678901234
    # a 3D distance in pixels (a slice step counted as one pixel) and volumes in voxels are not published
    assert not [n for d, n in got if "3D per volume, px" in n or "EDV" in n or "ESV" in n]
    assert got[("Sunnybrook Cardiac Data (subset)", "HD95 (LV cavity, 2D per slice, mm)")] == 5.4321
    # a summary without final_crop_* keys measured every ROI number on the final crop's box: named so
    assert got[("ACDC (SSL4MIS split)", "Final crop's box RMSE, after the second look (px)")] == 2.4567
    assert got[("ACDC (SSL4MIS split)", "EF Pearson correlation")] == 0.9712
    assert got[("Sunnybrook Cardiac Data (subset)", "Final crop's box RMSE, after the second look (mm)")] == 3.75
    assert not [n for d, n in got if n.startswith("ROI stage") or "unit_volume" in n]
    # every finite mean of the fixture is there (but 3D distances in px), the NaN is not
    for level, suffix in (("volume_metrics", "3D per volume"), ("slice_metrics", "2D per slice")):
        for key, stats in FAKE_SUMMARY[level].items():
            metric = key.split("_")[0]
            values = [v for (d, n), v in got.items() if d.startswith("ACDC") and suffix in n and
                      n.startswith({"dice": "Dice", "hd95": "HD95", "assd": "ASSD", "hd": "Hausdorff", "iou": "IoU"}[metric])
                      and ("LV cavity" in n) == key.endswith("lv_cavity")]
            published = not np.isnan(stats["mean"]) and (metric in ("dice", "iou") or level == "slice_metrics")
            assert values == ([stats["mean"]] if published else []), key
    by_type = {(r.dataset_name, r.metric_name): (r.task_type, r.dataset_type, r.dataset_split, r.metric_type) for r in parsed}
    assert by_type[("ACDC (SSL4MIS split)", "Dice (LV cavity, 3D per volume)")] == ("image-segmentation", "acdc", "test", "dice")
    assert by_type[("Sunnybrook Cardiac Data (subset)", "Dice (LV cavity, 2D per slice)")][1:3] == ("someone/sunnybrook-lv", "all")


def test_model_card_text(dry_run):
    text = ModelCard.load(dry_run / "README.md").text
    for needle in ("not a medical device", "2D short-axis cine", "Siemens", "Dijon", "non-commercial",
                   "10.1016/j.compmedimag.2025.102546", "Bernard", "Radau", f'model="{REPO_ID}", trust_remote_code=True',
                   f"halsr-hf segment", f"--model_name_or_path {REPO_ID}", "34,634 parameters", "roi/",
                   "| Dice | LV cavity | 0.9512 | 0.0311 | 0.9601 |", "per slice only (2D, in-plane",
                   "EDV and ESV are not given", "| Final crop's box RMSE, after the second look (px) | 2.457 |"):
        assert needle in text, needle
    assert "HD95 (px) | myocardium" not in text  # the fixture's 3D distance in px is not in the card


def test_model_card_names_what_each_number_measures(tiny_folder):
    """Issue 20: 3D distances in px (a 10 mm slice step counted as 1 px), EDV/ESV in voxels and ROI
    numbers of the final crop's box published as the ROI stage's. A summary of halsr-hf evaluate
    as it is now: distances in mm, volumes in mL, the ROI stage's own box and the final crop."""
    from halsr_hf.model_card import eval_results_from_summary

    stats = lambda mean: {"mean": mean, "sd": 0.1, "median": mean, "n": 10}  # noqa: E731
    summary = {
        "model": "bundled:halsr_hf/default_model", "distance_unit": "mm",
        "dataset": {"name": "spaced", "hf_id": None, "split": "test", "source": "x"},
        "volume_metrics": {"dice_lv_cavity": stats(0.93), "hd95_lv_cavity": stats(4.25)},
        "slice_metrics": {"hd95_lv_cavity": stats(3.5)},
        "roi": {"rmse": 2.25, "unit": "mm", "outlier_rate_percent": 5.0, "iou_mean": 0.75, "in_crop_percent": 92.5,
                "final_crop_iou_mean": 0.875, "final_crop_in_crop_percent": 97.5, "n": 40, "outlier_definition": "x"},
        "clinical": {"ef_mae": 3.5, "edv_bias": -4.5, "edv_r": 0.97, "unit_volume": "ml"},
    }
    got = {r.metric_name: (r.metric_type, r.metric_value) for r in eval_results_from_summary(summary)}
    assert got["HD95 (LV cavity, 3D per volume, mm)"] == ("hd95", 4.25)
    assert got["HD95 (LV cavity, 2D per slice, mm)"] == ("hd95", 3.5)
    assert got["EDV bias, predicted minus reference (mL)"] == ("edv_bias", -4.5)
    assert got["ROI stage box RMSE (mm)"] == ("roi_rmse", 2.25)
    assert got["ROI stage box mean IoU (a missed LV counts 0)"] == ("roi_iou_mean", 0.75)
    assert got["Reference LV box inside the ROI stage's crop (%)"] == ("roi_in_crop_percent", 92.5)
    assert got["Final crop's box mean IoU, after the second look (a missed LV counts 0)"] == ("roi_final_crop_iou_mean", 0.875)
    assert got["Reference LV box inside the final crop, after the second look (%)"] == ("roi_final_crop_in_crop_percent", 97.5)
    text = render_model_card(tiny_folder, [summary], repo_id="me/x").text
    assert "Distances in **mm**" in text and "the ROI stage's own box, and the final crop" in text
    assert "| EDV bias, predicted minus reference | -4.5000 | mL |" in text
    # in pixels, volumes in voxels, a pipeline that did not report the ROI stage's box
    summary.update(distance_unit="px", clinical={"ef_mae": 3.5, "edv_bias": -4.5, "unit_volume": "voxels"})
    summary["roi"].update(unit="px", rmse=None, outlier_rate_percent=None, iou_mean=None, in_crop_percent=None)
    got = {r.metric_name: r.metric_value for r in eval_results_from_summary(summary)}
    assert set(got) == {"Dice (LV cavity, 3D per volume)", "HD95 (LV cavity, 2D per slice, px)",
                        "Final crop's box mean IoU, after the second look (a missed LV counts 0)",
                        "Reference LV box inside the final crop, after the second look (%)",
                        "EF mean absolute error (percentage points)"}
    text = render_model_card(tiny_folder, [summary], repo_id="me/x").text
    assert "did not report the\nROI stage's own box" in text and "EDV and ESV are not given" in text


def test_render_and_write_model_card_api(tiny_folder, summary_path, tmp_path):
    card = render_model_card(tiny_folder, [summary_path], repo_id="me/x")
    assert isinstance(card, ModelCard) and 'model="me/x"' in card.text
    assert len(card.data.eval_results) == len(expected_metrics(FAKE_SUMMARY))
    written = write_model_card(tiny_folder, [summary_path], repo_id="me/x", out_path=tmp_path / "card.md")
    assert ModelCard.load(written).data.eval_results[0].metric_value == 0.9512345678901234
    no_eval = render_model_card(tiny_folder, [], repo_id="me/x")
    assert not no_eval.data.eval_results and "No evaluation results" in no_eval.text
    assert load_summary(summary_path)["model"] == "fixture-model"


def test_model_card_template_is_package_data_and_the_space_is_never_guessed(tmp_path, monkeypatch, capsys):
    """Issue 12: the template was read from the checkout's model_cards/ (absent from the wheel) and
    the Space from parents[2] of the package; both silently depended on a checkout."""
    import tomllib

    from halsr_hf.model_card import default_template_path

    package = Path(halsr_hf.__file__).resolve().parent
    assert default_template_path() == package / "templates" / "halsr_net.md"
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    package_data = pyproject["tool"]["setuptools"]["package-data"]["halsr_hf"]
    assert "templates/*.md" in package_data and "default_model/**/*" in package_data
    for pattern in package_data:  # nothing declared that does not exist
        assert list(package.glob(pattern)), pattern
    monkeypatch.chdir(tmp_path)  # not a checkout: no ./space
    assert hub.main(["space", "--repo-id", "x/y", "--dry-run", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "pass --space-dir" in err and not (tmp_path / "out").exists()


# ---- upload code paths with only the network calls replaced -------------------------------------------


@pytest.fixture
def fake_hub(monkeypatch):
    """Replace HfApi.create_repo / upload_folder / upload_file (the network) and turn the offline
    switch off for this test only; records every call with the uploaded folder's files."""
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs, self.token))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, folder_path, repo_id, **kwargs):
        calls.append(("upload_folder", repo_id, dict(kwargs, files=hub.list_files(folder_path)), self.token))
        return "commit"

    def upload_file(self, *, path_or_fileobj, path_in_repo, repo_id, **kwargs):
        calls.append(("upload_file", repo_id, dict(kwargs, path_in_repo=path_in_repo,
                                                    content=Path(path_or_fileobj).read_text()), self.token))
        return "commit"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setattr(HfApi, "upload_file", upload_file)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_fake_test_token")
    return calls


def test_upload_model(fake_hub, tiny_folder, summary_path, dry_run, monkeypatch):
    staged = []
    real_build = hub.build_model_folder
    monkeypatch.setattr(hub, "build_model_folder", lambda *a, **k: staged.append(real_build(*a, **k)) or staged[-1])
    code = hub.main(["model", "--model-dir", str(tiny_folder), "--repo-id", REPO_ID, "--private",
                     "--eval-results", str(summary_path), "--commit-message", "Publish tiny test model"])
    assert code == 0
    assert [c[0] for c in fake_hub] == ["create_repo", "upload_folder"]
    (_, repo_id, create, token), (_, repo_id2, upload, _) = fake_hub
    assert repo_id == repo_id2 == REPO_ID and token == "hf_fake_test_token"
    assert create == {"repo_type": "model", "private": True, "exist_ok": True}
    assert upload["repo_type"] == "model" and upload["commit_message"] == "Publish tiny test model"
    assert upload["files"] == hub.list_files(dry_run)  # exactly the dry-run folder
    assert not staged[0].exists()  # the temporary folder is removed after the upload


def _model_index(card_path) -> dict:
    """(dataset, metric name) -> value of a card's model-index."""
    return {(r.dataset_name, r.metric_name): r.metric_value for r in ModelCard.load(card_path).data.eval_results or []}


def test_push_of_the_bundled_model_keeps_its_evaluated_numbers(fake_hub, monkeypatch, capsys):
    """Issue 20: ``push-to-hub model --model-dir <bundled model>`` re-rendered the card without the
    bundled card's model-index unless --eval-results was given again. Only the upload is replaced."""
    bundled = halsr_hf.default_model_dir()
    expected = _model_index(bundled / "README.md")
    assert len(expected) > 10  # the bundled card has its evaluation
    uploaded = {}

    def upload_folder(self, *, folder_path, repo_id, **kwargs):
        uploaded.update(files=hub.list_files(folder_path), index=_model_index(Path(folder_path) / "README.md"),
                        summary=json.loads((Path(folder_path) / "evaluation" / "summary.json").read_text()))
        return "commit"

    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    assert hub.main(["model", "--model-dir", str(bundled), "--repo-id", REPO_ID]) == 0
    assert "evaluation results:" in capsys.readouterr().out
    assert uploaded["index"] == expected  # every entry, the same values
    assert uploaded["summary"] == json.loads((bundled / "evaluation" / "summary.json").read_text())


def test_a_card_with_numbers_and_no_summary_is_refused_not_emptied(tiny_folder, summary_path, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(tiny_folder, folder)
    write_model_card(folder, [summary_path], repo_id=REPO_ID)  # a card with a model-index, no evaluation/
    out = tmp_path / "repo"
    args = ["model", "--model-dir", str(folder), "--repo-id", REPO_ID, "--dry-run", str(out)]
    assert hub.main(args) == 2
    err = capsys.readouterr().err
    assert "has evaluation results (model-index)" in err and "--eval-results" in err and "--no-eval-results" in err
    assert not out.exists()
    assert hub.main(args + ["--no-eval-results"]) == 0  # deliberately without them
    assert _model_index(out / "README.md") == {}
    # a folder this command wrote carries its summaries: published again, the numbers stay
    again = tmp_path / "again"
    shutil.copytree(out, folder, dirs_exist_ok=True)
    (folder / "evaluation").mkdir(exist_ok=True)
    shutil.copy2(summary_path, folder / "evaluation" / "summary.json")
    assert hub.main(["model", "--model-dir", str(folder), "--repo-id", REPO_ID, "--dry-run", str(again)]) == 0
    assert _model_index(again / "README.md") == expected_metrics(FAKE_SUMMARY)


def test_upload_space(fake_hub, tmp_path):
    space = tmp_path / "space"
    (space / "__pycache__").mkdir(parents=True)
    (space / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"x")
    (space / "app.py").write_text("import gradio as gr\n")
    (space / "requirements.txt").write_text("halsr-hf\n")
    (space / "examples").mkdir()
    (space / "examples" / "slice.png").write_bytes(b"png")
    (space / "README.md").write_text("---\ntitle: HALSR-Net\nsdk: gradio\napp_file: app.py\n---\n")
    assert hub.main(["space", "--repo-id", "someone/halsr-demo", "--space-dir", str(space)]) == 0
    (_, _, create, _), (_, _, upload, _) = fake_hub
    assert create == {"repo_type": "space", "private": False, "exist_ok": True, "space_sdk": "gradio"}
    assert upload["repo_type"] == "space" and "demo" in upload["commit_message"]
    assert upload["files"] == ["README.md", "app.py", "examples/slice.png", "requirements.txt"]
    out = tmp_path / "space-dry"
    assert hub.main(["space", "--repo-id", "someone/halsr-demo", "--space-dir", str(space), "--dry-run", str(out)]) == 0
    assert hub.list_files(out) == upload["files"]
    (space / "README.md").write_text("# no front matter\n")
    assert hub.main(["space", "--repo-id", "x/y", "--space-dir", str(space), "--dry-run", str(tmp_path / "o2")]) == 2


@pytest.fixture
def tiny_dataset_dir(tmp_path):
    from datasets import Dataset, DatasetDict

    folder = tmp_path / "dataset"
    DatasetDict({
        "train": Dataset.from_dict({"patient_id": ["p1", "p2", "p3"], "slice_index": [0, 1, 2]}),
        "test": Dataset.from_dict({"patient_id": ["p9"], "slice_index": [0]}),
    }).save_to_disk(str(folder))
    (folder / "README.md").write_text("---\nlicense: cc-by-nc-sa-4.0\n---\n# Fixture dataset card\n")
    return folder


def test_upload_dataset(fake_hub, tiny_dataset_dir, monkeypatch):
    from datasets import DatasetDict

    def push_to_hub(self, repo_id, **kwargs):
        fake_hub.append(("push_to_hub", repo_id, dict(kwargs, splits={k: len(v) for k, v in self.items()}), kwargs["token"]))

    monkeypatch.setattr(DatasetDict, "push_to_hub", push_to_hub)
    assert hub.main(["dataset", "--dataset-dir", str(tiny_dataset_dir), "--repo-id", "someone/acdc-lv"]) == 0
    assert [c[0] for c in fake_hub] == ["create_repo", "upload_file", "push_to_hub"]
    create, card, push = (c[2] for c in fake_hub)
    assert create == {"repo_type": "dataset", "private": False, "exist_ok": True}
    assert card["repo_type"] == "dataset" and card["path_in_repo"] == "README.md"
    assert "# Fixture dataset card" in card["content"]
    assert push["splits"] == {"train": 3, "test": 1} and push["token"] == "hf_fake_test_token"
    assert push["private"] is False and push["commit_message"].startswith("Upload dataset")


def test_dataset_dry_run(tiny_dataset_dir, tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "dataset-dry"
    assert hub.main(["dataset", "--dataset-dir", str(tiny_dataset_dir), "--repo-id", "someone/acdc-lv",
                     "--dry-run", str(out)]) == 0
    assert hub.list_files(out) == ["README.md", "data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet"]
    assert pq.read_table(out / "data" / "train-00000-of-00001.parquet").num_rows == 3
    assert hub.main(["dataset", "--dataset-dir", str(tmp_path), "--repo-id", "x/y", "--dry-run", str(tmp_path / "o")]) == 2


# ---- offline, no token, unauthorised, unreachable ------------------------------------------------------


@pytest.mark.parametrize("kind", ["model", "dataset", "space"])
def test_offline_fails_fast_with_a_clear_message(kind, tiny_folder, tmp_path, monkeypatch, capsys):
    assert constants.HF_HUB_OFFLINE  # conftest's HF_HUB_OFFLINE=1
    monkeypatch.setattr(HfApi, "create_repo", lambda *a, **k: pytest.fail("no network call may happen offline"))
    args = {"model": ["--model-dir", str(tiny_folder)], "dataset": ["--dataset-dir", str(tmp_path)],
            "space": ["--space-dir", str(tmp_path)]}[kind]
    code = hub.main([kind, "--repo-id", "someone/x", *args])  # no retry loop: create_repo is never reached
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "HF_HUB_OFFLINE=1" in err and "nothing was uploaded" in err


def test_offline_error_raised_by_the_hub_is_translated(fake_hub, tiny_folder, monkeypatch, capsys):
    from huggingface_hub.errors import OfflineModeIsEnabled

    def offline(self, *a, **k):
        raise OfflineModeIsEnabled("offline")

    monkeypatch.setattr(HfApi, "create_repo", offline)
    assert hub.main(["model", "--model-dir", str(tiny_folder), "--repo-id", REPO_ID]) == 2
    assert "HF_HUB_OFFLINE=1" in capsys.readouterr().err


def test_no_token(fake_hub, tiny_folder, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(hub, "get_token", lambda: None)
    assert hub.main(["model", "--model-dir", str(tiny_folder), "--repo-id", REPO_ID]) == 2
    assert "no Hugging Face token: set HF_TOKEN" in capsys.readouterr().err
    assert fake_hub == []  # refused before any Hub call


def test_unauthorised_and_unreachable(fake_hub, tiny_folder, monkeypatch, capsys):
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    request = httpx2.Request("POST", "https://huggingface.co/api/repos/create")
    for status, expected in ((401, "unauthorised (HTTP 401)"), (403, "forbidden (HTTP 403)")):
        def rejected(self, *a, **k):
            raise HfHubHTTPError(f"{status} Client Error", response=httpx2.Response(status, request=request))

        monkeypatch.setattr(HfApi, "create_repo", rejected)
        assert hub.main(["model", "--model-dir", str(tiny_folder), "--repo-id", REPO_ID]) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1  # fails before any model is loaded

    def unreachable(self, *a, **k):
        raise httpx2.ConnectError("[Errno -2] Name or service not known", request=request)

    monkeypatch.setattr(HfApi, "create_repo", unreachable)
    assert hub.main(["model", "--model-dir", str(tiny_folder), "--repo-id", REPO_ID]) == 2
    assert "cannot reach" in capsys.readouterr().err


def test_cli_and_script_dispatch(tmp_path):
    from halsr_hf.cli import COMMANDS
    from halsr_hf.cli import main as cli_main

    assert COMMANDS["push-to-hub"][0] == "halsr_hf.hub_cli"  # the parser without the Hub libraries, then hub.run
    assert cli_main(["push-to-hub", "space", "--repo-id", "x/y", "--space-dir", str(tmp_path),
                     "--dry-run", str(tmp_path / "o")]) == 2
    script = Path(__file__).resolve().parents[1] / "scripts" / "push_to_hub.py"
    result = subprocess.run([sys.executable, str(script), "space", "--repo-id", "x/y", "--space-dir", str(tmp_path),
                             "--dry-run", str(tmp_path / "o2")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "halsr-hf push-to-hub" in result.stderr, result.stderr  # the same entry point


def test_card_describes_the_training_mix_budget_validation_and_orientation(tiny_folder, summary_path, tmp_path):
    """Issue 17: the card says what the model was trained on (from run_args.json, not a fixed
    'trained on ACDC'), the budget used, the validation Dice per source at the best checkpoint,
    the learning curves and the orientation check; publishing keeps the ROI model's own record."""
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_folder, folder)
    run = {"data_args": {"dataset_dir": "a,b", "dataset_weights": "myops2020-cine=3"}, "model_args": {},
           "eval_slices_per_source": {"acdc-ssl4mis": 20, "myops2020-cine": 4}, "wall_s_total": 7200.0, "global_step": 900,
           "sessions": [{}, {}, {}], "train_slices": 300}
    state = {"global_step": 1000, "epoch": 50.0, "best_global_step": 800, "log_history": [
        {"step": 800, "eval_acdc-ssl4mis_dice_lv_cavity": 0.95, "eval_acdc-ssl4mis_dice_myocardium": 0.9},
        {"step": 800, "eval_myops2020-cine_dice_lv_cavity": 0.91, "eval_myops2020-cine_dice_myocardium": 0.87},
        {"step": 800, "eval_dice_mean": 0.9075}, {"step": 900, "eval_acdc-ssl4mis_dice_lv_cavity": 0.5}]}
    (folder / "run_args.json").write_text(json.dumps(run))
    (folder / "trainer_state.json").write_text(json.dumps(state))
    (folder / "learning_curves.png").write_bytes(b"\x89PNG\r\n")
    (folder / "hardware.txt").write_text("cpu: test, 2 cores\n")
    (folder / "roi" / "command.txt").write_text("command: halsr-hf train --task localization\n")
    (folder / "evaluation").mkdir()
    (folder / "evaluation" / "orientation.json").write_text(json.dumps(
        {"volumes": 40, "split": "test", "median": 0.0051, "max": 0.0193, "tolerance": 0.02, "within_tolerance": 40}))
    text = render_model_card(folder, [summary_path], repo_id="me/x").text
    assert "Trained on 2 sources" in text and "MyoPS 2020, cine (bSSFP) [3]" in text and "**Siemens**" in text
    assert "Budget used: 1000 optimiser steps (50.0 epochs of 300 training slices),\n2.0 hours of wall time over 3 session(s)" in text
    assert "| ACDC (SSL4MIS split), cine | 0.9500 | 0.9000 |" in text and "| MyoPS 2020, cine (bSSFP) | 0.9100 | 0.8700 |" in text
    assert "0.5000" not in text  # a later, worse evaluation is not the best checkpoint's
    assert "`learning_curves.png`" in text and "Hardware: cpu: test, 2 cores." in text
    assert "on the 40 ACDC test volumes" in text and "0.005 mean Dice (median; max 0.02; 40 of 40" in text
    assert "the MyoPS 2020 challenge's research terms" in text
    assert "command: halsr-hf train --task localization" in text  # the localiser's own command
    (folder / "stage1_command.txt").write_text("command: halsr-hf train --stage one\n")
    (folder / "command.txt").write_text("command: halsr-hf train --stage two\n")
    (folder / "stage1_run_args.json").write_text(json.dumps({"wall_s_total": 3600.0, "global_step": 50}))
    text = render_model_card(folder, [summary_path], repo_id="me/x").text
    assert "Trained in two stages" in text and "command: halsr-hf train --stage one" in text
    assert "(`stage1_command.txt`): 50 optimiser steps, 1.0 hours" in text and "Second stage: command and environment" in text
    bare = render_model_card(tiny_folder, [summary_path], repo_id="me/x").text
    assert "Trained on ACDC" in bare and "Budget used" not in bare and "ACDC test volumes" not in bare

    out = hub.build_model_folder(folder, tmp_path / "repo", repo_id="me/x", eval_summaries=[summary_path])
    for name in ("run_args.json", "learning_curves.png", "hardware.txt", "evaluation/orientation.json", "roi/command.txt",
                 "stage1_command.txt", "stage1_run_args.json"):
        assert (out / name).is_file(), name
    assert "on the 40 ACDC test volumes" in (out / "README.md").read_text()


# ---- no training machine's folders in what is published (issue 25) ----------------------------------

#: A path from the file system root: "/" then a letter, at the start of a token (so not a URL's "//host/x",
#: not "a/b"); written independently of halsr_hf.model_card.ABSOLUTE_PATH.
ROOTED = __import__("re").compile(r"(?:^|[\s\"'=,|(`\[])(/[A-Za-z][^\s\"',|)`\]]*)", __import__("re").MULTILINE)


def test_bundled_model_records_and_card_hold_no_absolute_path():
    """command.txt, run_args.json, stage1_* and the card carried /work/data/... of the training machine."""
    folder = halsr_hf.default_model_dir()
    texts = [p for p in folder.rglob("*") if p.is_file() and p.suffix in (".txt", ".json", ".md", ".cfg", ".csv")]
    assert {"command.txt", "run_args.json", "stage1_command.txt", "stage1_run_args.json", "README.md"} <= {p.name for p in texts}
    found = {p.relative_to(folder).as_posix(): ROOTED.findall(p.read_text(encoding="utf-8")) for p in texts}
    assert not {name: paths for name, paths in found.items() if paths}
    # the datasets are still named, by their project-relative folders
    assert "--dataset-dir data/acdc,data/myops2020,data/emidec" in (folder / "command.txt").read_text()


def test_records_are_made_portable_when_the_card_is_rendered(tmp_path, monkeypatch):
    from halsr_hf.model_card import portable_path, portable_paths, training_view

    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    assert portable_path("/srv/x/data/acdc") == "data/acdc" and portable_path(str(project / "runs" / "a")) == "runs/a"
    assert portable_path("/scratch/me/model") == "model" and portable_path("runs/b") == "runs/b"
    text = ("command: halsr-hf train --dataset-dir /srv/x/data/acdc,/srv/x/data/emidec --output-dir "
            f"{project}/runs/m see https://example.org/a/b and src/x/y")
    assert portable_paths(text) == ("command: halsr-hf train --dataset-dir data/acdc,data/emidec --output-dir runs/m "
                                    "see https://example.org/a/b and src/x/y")
    model = tmp_path / "model"
    model.mkdir()
    (model / "command.txt").write_text("command: halsr-hf train --dataset-dir /mnt/big/data/acdc\n")
    (model / "run_args.json").write_text(json.dumps({"data_args": {"dataset_dir": "/mnt/big/data/acdc"}, "model_args": {}}))
    view = training_view(model)
    assert view["command"] == "command: halsr-hf train --dataset-dir data/acdc"
    assert not ROOTED.findall(json.dumps(view))
