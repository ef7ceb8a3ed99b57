"""halsr_hf.atomic: the one helper behind every atomic file and folder write."""

import shutil

import pytest

from halsr_hf.atomic import atomic_file, atomic_folder, check_output_folder
from halsr_hf.errors import InputError


def test_atomic_folder_replaces_on_success_and_leaves_the_target_on_failure(tmp_path):
    out = tmp_path / "report"
    with atomic_folder(out) as staged:
        (staged / "a.txt").write_text("first")
    assert (out / "a.txt").read_text() == "first"
    with pytest.raises(RuntimeError):
        with atomic_folder(out) as staged:
            (staged / "a.txt").write_text("half")
            raise RuntimeError("writer failed")
    assert (out / "a.txt").read_text() == "first"
    with atomic_folder(out) as staged:
        (staged / "b.txt").write_text("second")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]  # replaced, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no temporary folder left
    with atomic_folder(None) as staged:  # no target: the caller keeps (and removes) the folder
        (staged / "c.txt").write_text("upload")
    assert (staged / "c.txt").is_file()
    shutil.rmtree(staged)


def test_atomic_file_and_output_folder_checks(tmp_path):
    path = atomic_file(tmp_path / "sub" / "mask.nii.gz", lambda tmp: open(tmp, "w").write(tmp))
    assert path.read_text().endswith(".nii.gz")  # the writer saw the target's suffix
    assert sorted(p.name for p in path.parent.iterdir()) == ["mask.nii.gz"]
    check_output_folder(tmp_path / "new", overwrite=False, flag="--out-dir")
    with pytest.raises(InputError, match="--out-dir .*not empty; pass --overwrite"):
        check_output_folder(tmp_path, overwrite=False, flag="--out-dir")
    check_output_folder(tmp_path, overwrite=True, flag="--out-dir")
    with pytest.raises(InputError, match="not a folder"):
        check_output_folder(path, overwrite=True, flag="--out-dir")
