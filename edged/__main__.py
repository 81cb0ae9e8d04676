"""``python -m edged``: the same as the ``edged`` command."""

from .cli import entry_point

entry_point()
