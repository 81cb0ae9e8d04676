"""A directory of images as a frame source: its sorted image files, read with ``cv2.imread``,
once or looping; the ``images`` kind's factory (see ``kinds.py``)."""

import logging
import os
from typing import Any, List, Optional

import numpy as np

from ..errors import SourceError
from ..media import IMAGE_EXTENSIONS
from .backends import DEFAULT_IMAGE_FPS, _import_cv2, as_bgr
from .base import FrameSource
from .spec import SourceSpec

logger = logging.getLogger(__name__)


class ImageDirectorySource(FrameSource):
    """The sorted image files of one directory (not recursive), once or looping."""

    def __init__(self, spec: SourceSpec, cv2: Any = None) -> None:
        self._cv2 = cv2 if cv2 is not None else _import_cv2()
        self.spec = spec
        self.display = spec.display
        self._files = []  # type: List[str]
        self._next = 0
        self._ended = False
        self._bad = set()  # type: set

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def pace_fps(self) -> Optional[float]:
        return (self.spec.fps or DEFAULT_IMAGE_FPS) if self.spec.realtime else None

    def files(self) -> List[str]:
        """The image files in delivery order (re-listed at every open and every loop)."""
        try:
            names = sorted(os.listdir(self.spec.location))
        except OSError as e:
            raise SourceError(f"cannot list image directory {self.display}: {e.strerror}") from e
        return [
            os.path.join(self.spec.location, n)
            for n in names
            if n.lower().endswith(IMAGE_EXTENSIONS)
            and os.path.isfile(os.path.join(self.spec.location, n))
        ]

    def open(self) -> None:
        self._files = self.files()
        self._next = 0
        self._ended = False
        if not self._files:
            raise SourceError(
                "image directory {} has no {} files".format(
                    self.display, "/".join(IMAGE_EXTENSIONS)
                )
            )

    def read(self) -> Optional[np.ndarray]:
        if self._next >= len(self._files):
            if not self.spec.loop:
                self._ended = True
                return None
            self.open()  # new files dropped into the directory join the next round
        path = self._files[self._next]
        self._next += 1
        image = self._cv2.imread(path, self._cv2.IMREAD_COLOR)
        if image is None:
            if path not in self._bad:  # warn once per file, not once per loop
                self._bad.add(path)
                logger.warning("source %s: skipping unreadable image %s", self.display, path)
            return None
        return as_bgr(image, self._cv2, self.display)

    def close(self) -> None:
        self._files = []
        self._next = 0


def open_images(spec: SourceSpec, cv2: Any = None, caps: Any = None) -> FrameSource:
    """A directory of images, refused now when it does not exist."""
    if not os.path.isdir(spec.location):
        raise SourceError(f"image directory {spec.display} does not exist")
    return ImageDirectorySource(spec, cv2)
