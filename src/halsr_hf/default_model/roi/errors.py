"""The one exception type for bad user input.

Kept dependency-free so that it can be copied, with the model code, into a Hub repository
that is loaded with ``trust_remote_code=True`` (the code files import it relatively).
"""


class InputError(ValueError):
    """Raised for input that the package cannot process: a wrong shape, an unreadable or
    unsupported file, an empty/constant/non-finite image, an image over the size limit...

    The message always names the input (file name or a short description) and what is wrong.
    It subclasses :class:`ValueError` so ``except ValueError`` keeps working.
    """
