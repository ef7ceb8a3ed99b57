"""Atomic writes: build a file or a folder under a temporary name beside its target, then rename it
into place, so that nobody sees a half-written result and a failure leaves the target as it was.

Used for masks (``image_io.save_mask``), JSON outputs (``halsr-hf segment``), converted datasets
(``data.card.save_dataset``), evaluation reports (``halsr-hf evaluate``) and Hub folders
(``hub``). A code file of saved model folders (``image_io`` imports it): relative imports only.
"""

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError


def check_output_folder(out, overwrite: bool, flag: str) -> None:
    """Refuse an output folder that is a file, or that holds files unless ``overwrite``; ``flag``
    names the option in the message (``--out-dir``)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{flag} {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{flag} {out}: exists and is not empty; pass --overwrite to replace it")


def _temporary_name(path: Path) -> str:
    return f".{path.name}.tmp-"


@contextmanager
def atomic_folder(out):
    """Yield a new empty folder; when the block ends normally it becomes ``out`` (an existing
    ``out`` is renamed aside first and deleted after), with the permissions ``mkdir`` would give;
    when the block raises, it is deleted and ``out`` is untouched. ``out=None``: the folder is made
    in the system temporary directory and left to the caller (who deletes it)."""
    if out is None:
        staged = Path(tempfile.mkdtemp(prefix="halsr-hf-"))
    else:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=_temporary_name(out), dir=out.parent))
    try:
        yield staged
        if out is not None:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(staged, 0o777 & ~umask)  # mkdtemp made it 0700
            old = None
            if out.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
                os.replace(out, old / out.name)
            os.replace(staged, out)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def default_file_mode() -> int:
    """The mode of a newly created file under the process's umask (``0o666 & ~umask``)."""
    try:  # Linux: read it without changing it (os.umask would, for a moment, in every thread)
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_file(path, write) -> Path:
    """Call ``write(temporary_path)`` (a name beside ``path`` with the same suffix, so writers that
    choose the format from it work), then rename the result to ``path``; returns ``path``. The file
    gets the permissions of a normally created one (``mkstemp`` alone would leave it 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix
    fd, tmp = tempfile.mkstemp(prefix=_temporary_name(path), suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
