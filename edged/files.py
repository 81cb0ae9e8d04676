"""Reading a user-named file (config, model, labels) with a size bound and one clear error."""

import os
from typing import Type

from .errors import EdgedError


def read_bounded(path: str, max_bytes: int, what: str, error: Type[EdgedError]) -> bytes:
    """The bytes of ``path``, or ``error`` naming the file and what went wrong.

    Args:
        what: the kind of file for messages ("config file", "model file", ...).
        error: the EdgedError subclass to raise (ConfigError, ModelError, ...).
    """
    try:
        size = os.path.getsize(path)
        if size > max_bytes:
            raise error(f"{path}: {what} is {size} bytes, more than the {max_bytes} edged accepts")
        with open(path, "rb") as f:
            return f.read(max_bytes + 1)
    except FileNotFoundError as e:
        raise error(f"{path}: {what} not found") from e
    except IsADirectoryError as e:
        raise error(f"{path}: is a directory, expected a {what}") from e
    except OSError as e:
        raise error(f"{path}: cannot read {what} ({e.strerror or e})") from e
