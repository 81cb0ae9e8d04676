"""The capture seam: :class:`FrameSource`, what the supervisor drives.

A frame source is opened, read until it fails or ends, closed, and opened
again by :class:`~edged.sources.supervisor.SourceSupervisor`; it never retries
or sleeps on its own. The real one is OpenCV (``backends.OpenCvSource``,
``images.ImageDirectorySource``); tests inject fakes. All methods are called
from the one capture thread that owns the source.
"""

import abc
from typing import Optional

import numpy as np


class FrameSource(abc.ABC):
    """open() -> read()* -> close(), repeatable.

    ``read`` returns a uint8 image in :attr:`pixel_format` (BGR unless the source says
    otherwise), or None for "no frame this time" (the
    supervisor's stall timer keeps running). A source that is definitely broken
    (device gone, stream closed, read timeout) raises
    :class:`~edged.errors.SourceError`; a finite source that has nothing more
    to give (a file played once) returns None and sets :attr:`ended`.
    """

    #: redacted description for logs and status (never contains a password)
    display = "source"

    @abc.abstractmethod
    def open(self) -> None:
        """Connect / open the device. Raises SourceError when that fails."""

    @abc.abstractmethod
    def read(self) -> Optional[np.ndarray]:
        """The next image, or None; raises SourceError when the source broke."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release everything open() acquired; safe to call twice or unopened."""

    @property
    def ended(self) -> bool:
        """True once a finite source has delivered its last frame."""
        return False

    @property
    def pixel_format(self) -> str:
        """The layout of the images ``read`` returns (a name of ``edged/pixels.py``)."""
        return "bgr"

    @property
    def pace_fps(self) -> Optional[float]:
        """Rate the supervisor should pace reads at; None for live sources that pace themselves."""
        return None
