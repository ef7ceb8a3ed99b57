"""The documents are tests: every ``python``, ``bash``/``sh`` and ``console`` block of README.md,
docs/*.md and the rendered model card runs, in order, as a user would copy it.

Conventions (also what a document author has to follow):

- Each document runs in its own empty working directory (a "sandbox"), blocks in document order,
  so a block may use what an earlier block of the same document wrote. In the sandbox,
  ``space/`` is the repository's Space folder (its bundled example slices), ``../shared/data``
  the real data folder beside the checkout (``HALSR_DATA_DIR``), and the placeholder inputs the
  documents name exist: ``ED.nii.gz``/``ES.nii.gz`` and ``ed.nii.gz``/``es.nii.gz`` (ACDC
  patient001 end-diastole/end-systole, 1.5625 x 1.5625 x 10 mm), ``scan.nii.gz`` (both frames as
  one 4D NIfTI) and ``slice.dcm`` (the bundled Sunnybrook DICOM example).
- ``halsr-hf``, ``python`` and ``python3`` are this interpreter with this checkout's ``src/``;
  the Hub is offline. Package installation (``pip install ...``, alone or as the head of an
  ``&&`` chain) is not run here: tests/test_wheel.py installs the wheel and runs the examples
  from it.
- A block right after ``<!-- skip-test: CATEGORY: why -->`` is not run; CATEGORY is ``network``,
  ``GPU`` or ``long`` (long training, a full evaluation or benchmark, a server that runs until
  stopped, the test suite itself).
- ``console`` blocks: lines starting with ``$ `` are commands; the lines after a command, up to
  the next ``$``, are its output and must appear, in order, in what it prints.
- ``python`` blocks: ``# ...`` comment lines right after a ``print(...)`` line are that print's
  output, a Python literal; the printed literal must have the same structure, equal integers and
  strings, and floats equal to the digits shown (e.g. ``1039.28`` means 1039.275..1039.285).

The model card is rendered by ``halsr-hf push-to-hub model --dry-run`` from the bundled model,
with the dry-run folder as its repository id, so its ``trust_remote_code=True`` snippets load
the folder that would be published, offline.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from .conftest import DATA_DIR, REPO_ROOT

DOCUMENTS = ["README.md"] + sorted(p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "docs").glob("*.md"))
MODEL_CARD = "model card"
SKIP_CATEGORIES = ("network", "gpu", "long")
MARKER = re.compile(r"^<!--\s*skip-test:\s*(?P<reason>.+?)\s*-->$")
FENCE = re.compile(r"^```(?P<lang>[\w+-]*)\s*$")
RUNNABLE = {"python": "python", "bash": "shell", "sh": "shell", "shell": "shell", "console": "console"}
INSTALL = re.compile(r"^\s*(?:python3?\s+-m\s+)?pip3?\s+install\b")
NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.])")
COMMAND_TIMEOUT = 600


@dataclass
class Block:
    source: str
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    skip: str | None = None

    @property
    def where(self) -> str:
        return f"{self.source}, block at line {self.line}"


@dataclass
class Command:
    command: str
    expected_output: list = field(default_factory=list)


def extract_blocks(text: str, source: str) -> list[Block]:
    """Fenced code blocks with their language and the skip marker right before them (blank lines allowed)."""
    blocks, lines, index = [], text.splitlines(), 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        start = index
        index += 1
        body = []
        while index < len(lines) and lines[index].rstrip() != "```":
            body.append(lines[index])
            index += 1
        index += 1
        previous = start - 1
        while previous >= 0 and not lines[previous].strip():
            previous -= 1
        marker = MARKER.match(lines[previous].strip()) if previous >= 0 else None
        blocks.append(Block(source, start + 1, match.group("lang").lower(), "\n".join(body),
                            marker.group("reason") if marker else None))
    return blocks


def without_install(command: str) -> str | None:
    """The command without leading ``pip install ...`` parts of an ``&&`` chain (None if nothing is left)."""
    parts = [part.strip() for part in command.split("&&")]
    while parts and INSTALL.match(parts[0]):
        parts.pop(0)
    return " && ".join(parts) or None


def shell_commands(block: Block) -> list[Command]:
    """One command per logical line (backslash continuations joined); comments and blank lines dropped."""
    commands, current = [], ""
    for raw in block.text.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip() and not current.strip().startswith("#"):
            commands.append(Command(current.strip()))
        current = ""
    return commands


def console_commands(block: Block) -> list[Command]:
    commands = []
    for line in block.text.splitlines():
        if line.startswith("$ "):
            commands.append(Command(line[2:].strip()))
        elif commands and line.strip():
            commands[-1].expected_output.append(line.rstrip())
    return commands


def expected_prints(code: str) -> list:
    """For each ``print(`` line of a python block, the literal shown in the comment lines after it (or None)."""
    lines, shown = code.splitlines(), []
    for index, line in enumerate(lines):
        if not line.lstrip().startswith("print("):
            continue
        comments = []
        for following in lines[index + 1:]:
            if not following.lstrip().startswith("#"):
                break
            comments.append(following.lstrip()[1:].strip())
        text = " ".join(comments)
        try:
            ast.literal_eval(text)
        except (ValueError, SyntaxError):
            text = None
        shown.append(text)
    return shown


def same_literal(expected: str, actual: str) -> str | None:
    """None when ``actual`` (printed) matches ``expected`` (shown in the document), else why not."""
    skeleton = lambda text: re.sub(r"\s+", "", NUMBER.sub("#", text))  # noqa: E731
    if skeleton(expected) != skeleton(actual):
        return f"structure differs:\n  shown:   {expected}\n  printed: {actual}"
    for shown, printed in zip(NUMBER.findall(expected), NUMBER.findall(actual)):
        if "." in shown and "e" not in shown.lower():
            decimals = len(shown.split(".")[1])
            if abs(float(printed) - float(shown)) > 0.5 * 10.0 ** -decimals + 1e-9:
                return f"{printed} is not {shown} to {decimals} decimals\n  shown:   {expected}\n  printed: {actual}"
        elif float(printed) != float(shown):
            return f"{printed} != {shown}\n  shown:   {expected}\n  printed: {actual}"
    return None


# ---- the sandbox -------------------------------------------------------------------------------


def write_fixture_volumes(sandbox: Path) -> None:
    """ED/ES placeholders of the documents from ACDC patient001 (frame01 = ED, frame02 = ES)."""
    import h5py
    import nibabel as nib

    affine = np.diag([1.5625, 1.5625, 10.0, 1.0])
    frames = []
    for phase, frame in (("ED", 1), ("ES", 2)):
        with h5py.File(DATA_DIR / "acdc-ssl4mis" / "data" / f"patient001_frame{frame:02d}.h5", "r") as f:
            volume = f["image"][()].astype(np.float32)  # (Z, H, W)
        data = np.ascontiguousarray(volume.transpose(2, 1, 0))  # the pipeline reads slices as data[:, :, k].T
        frames.append(data)
        for name in (phase, phase.lower()):
            nib.save(nib.Nifti1Image(data, affine), sandbox / f"{name}.nii.gz")
    nib.save(nib.Nifti1Image(np.stack(frames, axis=-1), affine), sandbox / "scan.nii.gz")


def make_sandbox(root: Path) -> tuple[Path, dict]:
    sandbox = root / "work"
    sandbox.mkdir(parents=True)
    (sandbox / "space").symlink_to(REPO_ROOT / "space")
    shutil.copyfile(REPO_ROOT / "space" / "examples" / "SCD0000101_48.dcm", sandbox / "slice.dcm")
    if DATA_DIR.is_dir():
        (root / "shared").mkdir()
        (root / "shared" / "data").symlink_to(DATA_DIR.resolve())
        write_fixture_volumes(sandbox)
    shims = root / "bin"
    shims.mkdir()
    for name, target in (("halsr-hf", f'"{sys.executable}" -m halsr_hf.cli'), ("python", f'"{sys.executable}"'),
                         ("python3", f'"{sys.executable}"')):
        (shims / name).write_text(f'#!/bin/sh\nexec {target} "$@"\n')
        (shims / name).chmod(0o755)
    env = dict(os.environ)
    env.update(
        PATH=f"{shims}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT / "src")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])),
        HF_HOME=str(root / "hf-home"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1",
        GRADIO_ANALYTICS_ENABLED="False", PYTHONDONTWRITEBYTECODE="1",
    )
    return sandbox, env


def needs_data(blocks: list[Block]) -> bool:
    names = ("../shared/data", "ED.nii.gz", "ES.nii.gz", "ed.nii.gz", "es.nii.gz", "scan.nii.gz")
    return any(b.skip is None and b.lang in RUNNABLE and any(n in b.text for n in names) for b in blocks)


def run(command: str, sandbox: Path, env: dict, where: str) -> subprocess.CompletedProcess:
    result = subprocess.run(["bash", "-c", command], cwd=sandbox, env=env, capture_output=True, text=True,
                            timeout=COMMAND_TIMEOUT, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, (
        f"{where}: `{command}` exited with {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n"
        f"--- stderr\n{result.stderr[-3000:]}"
    )
    return result


def run_block(block: Block, sandbox: Path, env: dict) -> None:
    kind = RUNNABLE[block.lang]
    if kind == "python":
        script = sandbox / f".block_{Path(block.source).stem}_{block.line}.py"
        script.write_text(block.text + "\n")
        result = run(f'python "{script.name}"', sandbox, env, block.where)
        printed = result.stdout.splitlines()
        for index, shown in enumerate(expected_prints(block.text)):
            if shown is None:
                continue
            assert index < len(printed), f"{block.where}: print number {index + 1} printed nothing"
            problem = same_literal(shown, printed[index])
            assert problem is None, f"{block.where}: the output shown differs from the output: {problem}"
        return
    for command in shell_commands(block) if kind == "shell" else console_commands(block):
        text = without_install(command.command)
        if text is None:
            continue
        result = run(text, sandbox, env, block.where)
        lines = [line.rstrip() for line in result.stdout.splitlines()]
        position = 0
        for expected in command.expected_output:
            while position < len(lines) and lines[position] != expected:
                position += 1
            assert position < len(lines), (
                f"{block.where}: `{command.command}` did not print the line shown in the document:\n  {expected}\n"
                f"--- it printed:\n{result.stdout[-3000:]}"
            )
            position += 1


def run_document(blocks: list[Block], sandbox: Path, env: dict) -> int:
    ran = 0
    for block in blocks:
        if block.lang not in RUNNABLE or block.skip is not None:
            continue
        run_block(block, sandbox, env)
        ran += 1
    return ran


# ---- the tests --------------------------------------------------------------------------------


def document_blocks(name: str) -> list[Block]:
    return extract_blocks((REPO_ROOT / name).read_text(encoding="utf-8"), name)


#: Documents with at least one block to run (the others hold only skip-marked blocks, e.g. a server
#: that runs until stopped; test_skip_markers_name_a_category_and_a_reason checks their markers).
RUNNABLE_DOCUMENTS = [name for name in DOCUMENTS
                      if any(b.lang in RUNNABLE and b.skip is None for b in document_blocks(name))]


@pytest.mark.slow
@pytest.mark.parametrize("document", RUNNABLE_DOCUMENTS)
def test_document_blocks_run_as_written(document, tmp_path):
    blocks = document_blocks(document)
    if needs_data(blocks) and not DATA_DIR.is_dir():
        pytest.skip(f"{document} uses the real data, not found at {DATA_DIR}")
    sandbox, env = make_sandbox(tmp_path)
    assert run_document(blocks, sandbox, env)


@pytest.fixture(scope="module")
def rendered_model_card(tmp_path_factory):
    """The card of the bundled model as ``push-to-hub model --dry-run`` writes it, with the dry-run
    folder as repository id (so its snippets load what would be published, offline)."""
    from halsr_hf import default_model_dir
    from halsr_hf.cli import main

    try:
        model_dir = default_model_dir()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    repo = tmp_path_factory.mktemp("card") / "repo"
    assert main(["push-to-hub", "model", "--model-dir", str(model_dir), "--repo-id", str(repo), "--dry-run", str(repo)]) == 0
    return repo


@pytest.mark.slow
def test_model_card_blocks_run_as_written(rendered_model_card, tmp_path):
    card = (rendered_model_card / "README.md").read_text(encoding="utf-8")
    blocks = extract_blocks(card, MODEL_CARD)
    assert {b.lang for b in blocks} >= {"python", "bash"}
    assert any("ef --ed" in b.text for b in blocks) and "trust_remote_code=True" in card
    if needs_data(blocks) and not DATA_DIR.is_dir():
        pytest.skip(f"the model card uses the real data, not found at {DATA_DIR}")
    sandbox, env = make_sandbox(tmp_path)
    assert run_document(blocks, sandbox, env) >= 3


def test_skip_markers_name_a_category_and_a_reason(rendered_model_card):
    documents = {name: (REPO_ROOT / name).read_text(encoding="utf-8") for name in DOCUMENTS}
    documents[MODEL_CARD] = (rendered_model_card / "README.md").read_text(encoding="utf-8")
    for name, text in documents.items():
        for block in extract_blocks(text, name):
            if block.skip is None:
                continue
            category, _, why = block.skip.partition(":")
            assert category.strip().split()[0].lower() in SKIP_CATEGORIES and why.strip(), (
                f"{block.where}: skip-test marker {block.skip!r} must read 'network|GPU|long...: why'")
        # a marker always precedes a block
        for match in re.finditer(r"^<!--\s*skip-test:", text, re.MULTILINE):
            rest = text[match.end():].split("-->", 1)[1].lstrip()
            assert rest.startswith("```"), f"{name}: a skip-test marker not followed by a code block"


def test_readme_test_command_is_what_ci_runs():
    quickstart = [b for b in document_blocks("README.md") if b.lang == "bash"][:2]
    assert quickstart[0].text.startswith("pip install . && halsr-hf segment ")
    test_command = quickstart[1].text.strip()
    assert "pytest" in test_command and quickstart[1].skip
    ci = (REPO_ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in [line.strip() for line in ci], ".ci/run must run exactly the README's test command"


def test_helpers_read_the_conventions():
    text = "\n".join([
        "<!-- skip-test: network: uploads -->", "", "```bash", "pip install x && halsr-hf info \\", "  --presets",
        "# a comment", "```", "```console", "$ halsr-hf info", "halsr-hf 0.1.0", "```", "```python",
        "print({'a': 1.5, 'mm2': [2, 3]})", "# {'a': 1.50,", "#  'mm2': [2, 3]}", "```",
    ])
    blocks = extract_blocks(text, "t.md")
    assert [(b.lang, b.skip) for b in blocks] == [("bash", "network: uploads"), ("console", None), ("python", None)]
    assert [c.command for c in shell_commands(blocks[0])] == ["pip install x && halsr-hf info    --presets"]
    assert without_install("pip install x && halsr-hf info") == "halsr-hf info" and without_install("pip install .") is None
    assert console_commands(blocks[1])[0].expected_output == ["halsr-hf 0.1.0"]
    shown = expected_prints(blocks[2].text)[0]
    assert same_literal(shown, "{'a': 1.504, 'mm2': [2, 3]}") is None
    assert same_literal(shown, "{'a': 1.51, 'mm2': [2, 3]}") is not None
    assert same_literal(shown, "{'a': 1.5, 'mm2': [2, 4]}") is not None
    assert same_literal(shown, "{'a': np.float64(1.5), 'mm2': [2, 3]}") is not None


def test_readme_test_command_reports_skip_reasons_and_says_what_the_data_tests_need():
    """Issue 26: under ``-q`` 80 tests were skipped without a word, and HALSR_DATA_DIR existed only
    in tests/conftest.py."""
    quickstart = [b for b in document_blocks("README.md") if b.lang == "bash"][:2]
    assert re.search(r"\bpytest\b.* -rs\b", quickstart[1].text), quickstart[1].text
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    tests_part = readme[readme.index("## Quickstart"):readme.index("## Usage")]
    assert "HALSR_DATA_DIR" in tests_part and "../shared/data" in tests_part and "minutes" in tests_part


def test_quickstart_runs_again_as_written_and_quietly(tmp_path):
    """Issue 26: the Quickstart's second run failed (``measurements.json: already exists``), and
    every read of the bundled example printed pydicom's ``Invalid value for VR UI`` warning."""
    first = [b for b in document_blocks("README.md") if b.lang == "bash"][0]
    command = without_install(first.text.strip())
    assert command.startswith("halsr-hf segment space/examples/")
    sandbox, env = make_sandbox(tmp_path)
    for attempt in (1, 2):
        result = subprocess.run(["bash", "-c", command], cwd=sandbox, env=env, capture_output=True, text=True,
                                timeout=COMMAND_TIMEOUT, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, f"run {attempt}: {result.stderr[-2000:]}"
        assert "Warning" not in result.stderr and "Invalid value" not in result.stderr, result.stderr[-2000:]
    assert (sandbox / "halsr-output" / "measurements.json").is_file()


def test_documents_agree_on_the_bundled_model_and_the_cost_of_tta(capsys):
    """Issue 26: TTA was "8x slower" in predict/segment --help and "3x the time" in the README;
    space/README.md described an "LV ROI regressor" where the bundled model has a localiser;
    docs/space.md's timings were measured with random weights."""
    from halsr_hf.cli import TTA_HELP, main

    for command in ("segment", "predict"):
        assert main([command, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "8x" not in text and " ".join(TTA_HELP.split()) in text
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    performance = (REPO_ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    assert "## Test-time augmentation: its cost" in performance
    for match in re.finditer(r"\d+x the time", readme):  # every figure of TTA's cost points to the one place
        after = " ".join(readme[match.start():match.start() + 160].split())
        assert "67 s against 22 s" in after or "docs/performance.md" in after, after
    space_readme = (REPO_ROOT / "space" / "README.md").read_text(encoding="utf-8")
    assert "ROI regressor" not in space_readme and "localiser" in space_readme
    space_doc = (REPO_ROOT / "docs" / "space.md").read_text(encoding="utf-8")
    timings = space_doc[space_doc.index("## Timings"):]
    assert "**bundled model**" in timings and "| one DICOM slice" in timings
    assert "random weights" not in timings.split("| Input |")[0]  # the table's numbers are the bundled model's
    usage = readme[readme.index("## Usage"):readme.index("### Data")]
    assert 'out["slices"]' in usage and 'out["volumes_ml"]' in usage  # a volume's result is shown (and run)
