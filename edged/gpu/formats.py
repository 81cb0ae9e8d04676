"""The source pixel formats the fused pre-processing kernel reads: defined in :mod:`edged.pixels`.

They live there because the capture side (``edged.sources``) needs them too and must not
import ``edged.gpu`` (whose modules import ``edged.tasks``, which imports ``edged.config``,
which imports ``edged.sources``: tests/test_import_cycles.py). This module keeps the
kernel's modules and their tests reading them as ``edged.gpu.formats``.
"""

from ..pixels import (  # noqa: F401 - re-exported
    PixelFormat,
    Planes,
    get,
    guess,
    names,
    planes,
    register,
    resolve,
)
