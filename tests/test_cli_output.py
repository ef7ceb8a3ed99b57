"""What a user runs and sees (issue 20): the command line's JSON is JSON, the Python loader is quiet,
``train --help`` leads with the project's own options, ``segment`` refuses existing outputs before
it writes anything."""

import json
import re

import numpy as np
import pytest

from halsr_hf import CardiacLVSegmentationPipeline, HalsrImageProcessor
from halsr_hf.cli import main

from .conftest import REPO_ROOT, tiny_models


def _strict_json(text: str):
    """``json.loads`` that refuses NaN/Infinity, as jq and JavaScript's JSON.parse do."""

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def never_finds_lv(tmp_path_factory):
    """A tiny model folder whose ROI stage never finds an LV: every label map is empty."""
    model, roi = tiny_models(presence_bias=-20.0)
    folder = tmp_path_factory.mktemp("no-lv-model")
    CardiacLVSegmentationPipeline(model=model, image_processor=HalsrImageProcessor(size=64, roi_size=64),
                                  roi_model=roi).save_pretrained(folder)
    return folder


def test_ef_json_prints_null_for_an_undefined_ef(never_finds_lv, tmp_path, capsys):
    """No cavity at ED: the EF is undefined (NaN in Python); ``--json`` printed ``NaN``, not JSON."""
    rng = np.random.default_rng(0)
    ed, es = tmp_path / "ed.npy", tmp_path / "es.npy"
    np.save(ed, rng.random((3, 48, 40)).astype(np.float32))
    np.save(es, rng.random((3, 48, 40)).astype(np.float32))
    assert main(["ef", "--ed", str(ed), "--es", str(es), "--model", str(never_finds_lv), "--json"]) == 0
    out = capsys.readouterr().out
    assert "NaN" not in out
    result = _strict_json(out)
    assert result["ef_percent"] is None and result["edv_voxels"] == 0
    assert any("no lv_cavity" in warning for warning in result["warnings"])


def test_json_safe_turns_every_non_finite_number_into_null():
    from halsr_hf.json_output import dumps, json_safe

    value = {"a": float("nan"), "b": [np.float32("inf"), np.int64(3), np.bool_(True)], "c": (1.5, None),
             "d": np.array([1.0, np.nan])}
    assert json_safe(value) == {"a": None, "b": [None, 3, True], "c": [1.5, None], "d": [1.0, None]}
    assert _strict_json(dumps(value)) == json_safe(value)


@pytest.fixture
def progress_bars_on(monkeypatch):
    """transformers' and huggingface_hub's default (bars on), whatever an earlier CLI call set; put back after."""
    import huggingface_hub.utils as hub_utils
    import transformers.utils.logging as hf_logging

    import halsr_hf

    tf_was_on, hub_was_on = hf_logging.is_progress_bar_enabled(), not hub_utils.are_progress_bars_disabled()
    monkeypatch.setattr(halsr_hf, "_show_loading_progress", False, raising=False)
    hf_logging.enable_progress_bar()
    hub_utils.enable_progress_bars()
    yield
    (hf_logging.enable_progress_bar if tf_was_on else hf_logging.disable_progress_bar)()
    (hub_utils.enable_progress_bars if hub_was_on else hub_utils.disable_progress_bars)()


def test_load_pipeline_shows_no_progress_bars_unless_verbose(tiny_folder, progress_bars_on, capfd):
    import transformers.utils.logging as hf_logging

    import halsr_hf

    capfd.readouterr()
    halsr_hf.load_pipeline(str(tiny_folder))
    out, err = capfd.readouterr()
    assert "Loading weights" not in out + err and "it/s]" not in out + err, err
    assert hf_logging.is_progress_bar_enabled()  # the caller's setting is left as it was
    halsr_hf.load_pipeline(str(tiny_folder), verbose=True)
    assert "Loading weights" in capfd.readouterr().err


@pytest.mark.parametrize("command", ["train", "train-roi"])
def test_train_help_shows_the_project_options_first_and_the_trainer_s_behind_help_all(command, capsys):
    """``halsr-hf train --help`` was 704 lines of generic Trainer options before the project's own;
    then 191 lines where every option appeared twice (``--x_y, --x-y``), several without a
    description (issue 26). Now each option once, each with a description, the fine knobs under
    ``--help-all``."""
    assert main([command, "--help"]) == 0
    short = capsys.readouterr().out
    lines = short.splitlines()
    assert len(lines) < 120, len(lines)
    assert lines[0].startswith(f"usage: halsr-hf {command} [--help | --help-all]")
    headings = [line for line in lines if line and not line.startswith(" ") and line.endswith(":")]
    assert headings[:3] == ["options:", "model options:", "data options:"], headings
    assert "--dataset-dir" in short and "--model-name-or-path" in short
    trainer = short.index("common Trainer options")
    option_line = re.search(r"^\s+--output[-_]dir\b", short, re.M).start()  # the option's own entry, not a mention in a help text
    assert short.index("--dataset-dir") < trainer < option_line
    words = " ".join(short.split())
    assert "(default: runs/" in words and "(default: 0.001)" in words  # this command's defaults, not the Trainer's
    assert "--ddp-backend" not in short and "--elastic-prob" not in short  # expert options: --help-all
    assert words.endswith("(logging, checkpoints, precision, distributed training, Hub upload, ...).")
    assert main([command, "--help-all"]) == 0
    everything = capsys.readouterr().out
    assert "``" not in everything
    assert everything.index("data options:") < everything.index("\nTrainer options (transformers.TrainingArguments)")
    assert everything.index("Trainer options (transformers.TrainingArguments)") < everything.index("--ddp-backend")
    for text in (short, everything):
        entries = _option_entries(text)
        assert "--scale-min" in entries or text is short
        flags = [flag for flag, _ in entries.items()]
        assert not [f for f in flags if "_" in f], "an option listed in its underscore spelling too"
        assert [f for f, help_text in entries.items() if not help_text] == [], "options without a description"


def _option_entries(help_text: str) -> dict:
    """{--flag: its description} of an argparse help text (the first spelling of each entry)."""
    entries, current = {}, None
    for line in help_text.splitlines():
        match = re.match(r"^  (-\w, )?(--[\w-]+)(?: (\S+))?(?:\s{2,}(.*))?$", line)
        if match:
            current = match.group(2)
            entries[current] = (match.group(4) or "").strip()
        elif current and line.startswith(" " * 10) and line.strip():
            entries[current] = (entries[current] + " " + line.strip()).strip()
        elif not line.strip():
            current = None
    return entries


def test_train_help_lists_each_option_once(capsys):
    assert main(["train", "--help-all"]) == 0
    text = capsys.readouterr().out
    flags = re.findall(r"^  (?:-\w, )?(--[\w-]+)", text, re.M)
    assert len(flags) == len(set(flags)) > 150
    assert "--dataset_dir" not in text and not re.search(r"--[\w-]+, --", text)


def test_train_accepts_both_spellings_and_names_an_unknown_option(capsys):
    from halsr_hf.training.arguments import TRAINING_DEFAULTS, ModelArguments, check_arguments

    check_arguments(["--dataset_dir", "d", "--dataset-dir", "d", "--warmup-steps", "3"], ModelArguments, TRAINING_DEFAULTS,
                    "halsr-hf train")
    with pytest.raises(SystemExit) as stop:
        check_arguments(["--datset-dir", "d"], ModelArguments, TRAINING_DEFAULTS, "halsr-hf train")
    assert stop.value.code == 2 and "did you mean --dataset-dir?" in capsys.readouterr().err


def test_trainer_options_of_the_short_help_match_transformers():
    """The short help lists a few TrainingArguments options without loading transformers: their
    types and defaults are written down here, and checked against transformers."""
    import dataclasses

    from transformers import TrainingArguments

    from halsr_hf.training.arguments import TRAINER_OPTIONS, trainer_field_names

    fields = {f.name: f for f in dataclasses.fields(TrainingArguments)}
    assert trainer_field_names() == frozenset(fields)
    for name, (kind, default, help_text) in TRAINER_OPTIONS.items():
        assert name in fields and help_text, name
        assert fields[name].default == default, (name, fields[name].default, default)


def test_segment_refuses_an_existing_output_before_writing_anything(tiny_folder, tmp_path, capsys):
    """The docstring said "before anything is written", but only measurements.json was checked up
    front: an existing overlay was refused after the mask had been written."""
    from PIL import Image

    rng = np.random.default_rng(1)
    slice_png = tmp_path / "slice.png"
    Image.fromarray(rng.integers(0, 255, (48, 40), dtype=np.uint8)).save(slice_png)
    out = tmp_path / "out"
    out.mkdir()
    (out / "slice_overlay.png").write_bytes(b"an earlier result")
    args = ["segment", str(slice_png), "--model", str(tiny_folder), "--out-dir", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "slice_overlay.png: already exists" in err and "--overwrite" in err
    assert sorted(p.name for p in out.iterdir()) == ["slice_overlay.png"]  # nothing written
    assert (out / "slice_overlay.png").read_bytes() == b"an earlier result"
    assert main(args + ["--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["measurements.json", "slice_mask.png", "slice_overlay.png"]


def test_bundled_is_one_model_name_everywhere(tmp_path, capsys):
    """Issue 26: ``--model_name_or_path default`` ended in a Hub traceback and the bundled model had
    no name; ``bundled`` now names it in load_pipeline, segment, predict and ef (train: tests/test_training.py)."""
    import halsr_hf

    bundled = str(halsr_hf.default_model_dir())
    assert halsr_hf.resolve_model("bundled") == halsr_hf.resolve_model(None) == bundled
    assert halsr_hf.load_pipeline("bundled").model.name_or_path == bundled
    example = str(REPO_ROOT / "space" / "examples" / "SCD0000101_48.dcm")
    assert main(["segment", example, "--model", "bundled", "--out-dir", str(tmp_path / "seg")]) == 0
    rng = np.random.default_rng(0)
    volume = tmp_path / "cohort" / "subject.npy"
    volume.parent.mkdir()
    np.save(volume, rng.random((2, 64, 64)).astype(np.float32))
    assert main(["ef", "--ed", str(volume), "--es", str(volume), "--model", "bundled", "--json"]) == 0
    assert main(["predict", "-i", str(volume.parent), "-o", str(tmp_path / "out"), "--model", "bundled",
                 "--num-workers", "0", "--no-progress"]) == 0
    assert json.loads((tmp_path / "out" / "run.json").read_text())["model"] == bundled
    for command in ("segment", "predict", "ef"):
        assert main([command, "--help"]) == 0
        assert "'bundled'" in " ".join(capsys.readouterr().out.split())


def test_segment_speaks_of_located_segmented_and_nothing_segmented(never_finds_lv, tmp_path, capsys):
    """Issue 26: one vocabulary with the Space ("LV located", "segmented", "nothing segmented"),
    from the result's fields: here the ROI stage finds nothing, so nothing is segmented."""
    volume = tmp_path / "stack.npy"
    np.save(volume, np.random.default_rng(0).random((3, 48, 40)).astype(np.float32))
    assert main(["segment", str(volume), "--model", str(never_finds_lv), "--out-dir", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "| input | slices | LV located | segmented | LV cavity | myocardium | unit | quality flags |" in out
    assert f"| {volume} | 3 | 0/3 | 0/3 |" in out
    assert f"{volume}: LV located on 0 of 3 slices; segmented: 0; nothing segmented on slices 0, 1, 2." in out
    assert "LV found" not in out
