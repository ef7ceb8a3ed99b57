"""The wheel stands alone: build it, install it into a fresh virtual environment outside the
checkout, and run the documented entry points from a temporary directory.

The virtual environment is created with ``--system-site-packages`` so that torch, transformers and
the other dependencies already installed are reused (nothing is downloaded; the wheel is installed
with ``--no-deps --no-index``), and the checks make sure ``halsr_hf`` is imported from the wheel,
not from the checkout or an editable install. When the tests themselves run in a virtual
environment (``python -m venv .venv && . .venv/bin/activate``, then the README's test command),
``--system-site-packages`` means the *base* interpreter's packages, which lack what was installed
into ``.venv``: the test environment then also sees ``.venv``'s site-packages, through a ``.pth``
file listing them (a plain path: ``.venv``'s own ``.pth`` files, e.g. the editable install of
this checkout, are not run there). The only file taken from the checkout at run time
is the README's example slice, copied to ``space/examples/`` of the temporary directory (the
README's relative path): the Space and its examples are not part of the package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from .conftest import REPO_ROOT
from .test_docs import console_commands, document_blocks, expected_prints, same_literal

pytestmark = [pytest.mark.slow, pytest.mark.wheel]

EXAMPLE = "space/examples/SCD0000101_48.dcm"
IGNORED = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", "*.egg-info", "build", "dist", ".pytest_cache")


def _source_files() -> list[Path]:
    """What a commit of the checkout holds: tracked files and untracked ones git does not ignore."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                                capture_output=True, check=True, timeout=60).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        return []
    return [REPO_ROOT / name for name in listed if name and (REPO_ROOT / name).is_file()]


def _copy_source(destination: Path) -> Path:
    files = _source_files()
    if not files:  # not a git checkout: everything but build outputs
        shutil.copytree(REPO_ROOT, destination, ignore=IGNORED, symlinks=True)
        return destination
    for path in files:
        target = destination / path.relative_to(REPO_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return destination


def _run(command, cwd, env, timeout=600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"{command} exited with {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def running_environment_site_packages() -> list[str]:
    """The site-packages of the virtual environment running the tests (empty outside one), which
    ``venv --system-site-packages`` does not see: it sees the base interpreter's."""
    if sys.prefix == sys.base_prefix:
        return []
    paths = sysconfig.get_paths()
    return list(dict.fromkeys(paths[key] for key in ("purelib", "platlib")))


def see_the_running_environment(python: Path, cwd: Path, env: dict) -> None:
    """Make the test venv see the packages of the venv the tests run in (after its own)."""
    outer = running_environment_site_packages()
    if not outer:
        return
    own = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd, env).stdout.strip()
    Path(own, "_halsr_test_outer_venv.pth").write_text("\n".join(outer) + "\n")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv python, venv bin, run dir, env) with the wheel of this checkout installed."""
    root = tmp_path_factory.mktemp("wheel")
    build_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    source = _copy_source(root / "source")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(root / "dist"), str(source)], root, build_env)
    wheels = list((root / "dist").glob("halsr_hf-*.whl"))
    assert len(wheels) == 1, wheels
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], root, build_env)
    python = venv / "bin" / "python"
    see_the_running_environment(python, root, build_env)
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
          "--ignore-installed", str(wheels[0])], root, build_env)
    run_dir = root / "run"
    (run_dir / "space" / "examples").mkdir(parents=True)
    shutil.copyfile(REPO_ROOT / EXAMPLE, run_dir / EXAMPLE)
    env = dict(build_env)
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HF_HOME=str(root / "hf-home"), OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1", VIRTUAL_ENV=str(venv))
    return {"python": python, "bin": venv / "bin", "run": run_dir, "env": env, "wheel": wheels[0], "venv": venv}


def test_wheel_holds_the_package_data(installed):
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    for required in ("halsr_hf/default_model/config.json", "halsr_hf/default_model/model.safetensors",
                     "halsr_hf/default_model/preprocessor_config.json", "halsr_hf/default_model/roi/config.json",
                     "halsr_hf/default_model/roi/model.safetensors", "halsr_hf/templates/halsr_net.md",
                     "halsr_hf/cli.py"):
        assert required in names, required
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_installed_package_is_imported_from_the_venv_not_the_checkout(installed):
    result = _run([str(installed["python"]), "-c",
                   "import halsr_hf, transformers; print(halsr_hf.__file__); print(halsr_hf.default_model_dir())"],
                  installed["run"], installed["env"])
    module, model_dir = result.stdout.split()
    venv = str(installed["venv"].resolve())
    assert module.startswith(venv) and model_dir.startswith(venv), result.stdout


def test_readme_python_example_from_the_wheel(installed):
    block = next(b for b in document_blocks("README.md") if b.lang == "python")
    script = installed["run"] / "readme_example.py"
    script.write_text(block.text + "\n")
    result = _run([str(installed["python"]), str(script)], installed["run"], installed["env"])
    shown = [s for s in expected_prints(block.text) if s is not None]
    assert shown, "the README's Python example shows no output"
    problem = same_literal(shown[0], result.stdout.splitlines()[0])
    assert problem is None, problem
    assert "Do you wish to run the custom code" not in result.stdout + result.stderr


def test_segment_a_bundled_example_from_the_wheel(installed):
    usage = next(b for b in document_blocks("README.md") if b.lang == "console")
    expected = console_commands(usage)[0].expected_output
    assert expected and EXAMPLE in expected[-1]
    result = _run([str(installed["bin"] / "halsr-hf"), "segment", EXAMPLE, "--out-dir", "halsr-output"],
                  installed["run"], installed["env"])
    lines = [line.rstrip() for line in result.stdout.splitlines()]
    for line in expected:  # the table the README shows
        assert line in lines, (line, result.stdout)
    written = sorted(p.name for p in (installed["run"] / "halsr-output").iterdir())
    assert written == ["SCD0000101_48_mask.png", "SCD0000101_48_overlay.png", "measurements.json"]
    assert "Loading weights" not in result.stderr


def test_push_to_hub_model_dry_run_from_the_wheel(installed):
    model_dir = _run([str(installed["python"]), "-c", "import halsr_hf; print(halsr_hf.default_model_dir())"],
                     installed["run"], installed["env"]).stdout.strip()
    out = installed["run"] / "repo"
    _run([str(installed["bin"] / "halsr-hf"), "push-to-hub", "model", "--model-dir", model_dir, "--repo-id",
          "me/halsr-net-small-acdc", "--dry-run", str(out)], installed["run"], installed["env"])
    card = (out / "README.md").read_text()
    assert 'model="me/halsr-net-small-acdc"' in card and "trust_remote_code=True" in card
    assert (out / "model.safetensors").is_file() and (out / "roi" / "model.safetensors").is_file()
    assert str(installed["venv"]) not in (out / "config.json").read_text()  # no path of this installation


def test_evaluate_help_and_quick_benchmark_from_the_wheel(installed):
    result = _run([str(installed["bin"] / "halsr-hf"), "evaluate", "--help"], installed["run"], installed["env"])
    assert "halsr-hf evaluate" in result.stdout and "``" not in result.stdout
    _run([str(installed["bin"] / "halsr-hf"), "benchmark", "--quick", "--out", "bench"], installed["run"],
         installed["env"])
    assert (installed["run"] / "bench" / "results.json").is_file()
