"""The one exception type for bad user input, and how messages name arguments.

Kept dependency-free (standard library only) so that it can be copied, with the model code, into
a Hub repository that is loaded with ``trust_remote_code=True`` (the code files import it relatively).

Messages that tell the user which argument to change name it the way the current front end spells
it: ``frame=`` / ``overwrite=True`` from Python, ``--frame`` / ``--overwrite`` on the command line.
The command line sets that with :func:`argument_names`; code that builds a message calls
:func:`argument`.
"""

import contextlib
import contextvars

#: ``None`` (Python keywords) or a dict {python_name: cli_flag}; a name missing from the dict is
#: spelt ``--name-with-dashes``.
_ARGUMENT_NAMES = contextvars.ContextVar("halsr_hf_argument_names", default=None)


class InputError(ValueError):
    """Raised for input that the package cannot process: a wrong shape, an unreadable or
    unsupported file, an empty/constant/non-finite image, an image over the size limit, an
    unknown keyword argument, a missing optional reader...

    The message always names the input (file name or a short description) and what is wrong.
    It subclasses :class:`ValueError` so ``except ValueError`` keeps working.
    """


def argument(name: str, value=None) -> str:
    """How the current front end spells argument ``name`` (with ``value`` when given).

    >>> argument("frame"), argument("overwrite", True), argument("frame", 5)
    ('frame=', 'overwrite=True', 'frame=5')

    Inside ``with argument_names():`` (the command line): ``--frame``, ``--overwrite``, ``--frame 5``.
    """
    names = _ARGUMENT_NAMES.get()
    if names is None:
        return f"{name}=" if value is None else f"{name}={value!r}"
    flag = names.get(name) or "--" + name.replace("_", "-")
    return flag if value is None or value is True else f"{flag} {value}"


def front_end(python: str, command_line: str) -> str:
    """``python`` from Python, ``command_line`` inside ``with argument_names():`` (the command line):
    for advice that has no one-to-one flag, e.g. ``front_end("use_roi=False", "--no-roi")``."""
    return python if _ARGUMENT_NAMES.get() is None else command_line


@contextlib.contextmanager
def argument_names(**flags):
    """Within this block, messages name arguments as command-line flags: ``--name-with-dashes``
    by default, or the flag given here (``argument_names(frame="--ed-frame")``)."""
    current = _ARGUMENT_NAMES.get() or {}
    token = _ARGUMENT_NAMES.set({**current, **flags})
    try:
        yield
    finally:
        _ARGUMENT_NAMES.reset(token)


def check_no_unknown_kwargs(kwargs: dict, where: str, known=()) -> None:
    """Raise :class:`InputError` naming the first unknown keyword argument of ``where`` (with the
    closest known name as a suggestion), if ``kwargs`` is not empty."""
    if not kwargs:
        return
    import difflib

    names = sorted(kwargs)
    hints = []
    for name in names:
        close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    plural = "s" if len(names) > 1 else ""
    accepted = f"; accepted: {', '.join(known)}" if known else ""
    raise InputError(f"{where}: unknown keyword argument{plural} {', '.join(hints)}{accepted}")
