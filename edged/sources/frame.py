"""What a capture thread hands to the pipeline: one :class:`Frame` per delivered image.

Frames carry stream id, a per-stream sequence number, capture time on both
clocks and the source size, so an inference worker that
resizes the image still knows how to map boxes back, and end-to-end latency
is measured from ``captured_mono``. A frame keeps the pixel format its source
delivered (``pixel_format``): the CUDA pre-processor reads it as is, and whatever on the
CPU needs BGR asks :meth:`Frame.bgr`, which converts once (:mod:`edged.pixels`).
"""

from dataclasses import dataclass, field
from typing import Any, List, Tuple

import numpy as np

from .. import pixels


# eq=False: a frame is an event, compared by identity; comparing images
# element-wise would be expensive and ambiguous (numpy truth value).
@dataclass(frozen=True, eq=False)
class Frame:
    """One captured image of one stream.

    Attributes:
        stream_id: the stream's configured id.
        seq: 0, 1, 2, ... counting frames DELIVERED to the slot for this stream
            (monotonic across reconnects; a gap seen by the consumer means drops).
        captured_mono: ``time.monotonic()`` when ``read()`` returned the image.
        captured_wall: ``time.time()`` at the same moment (for result timestamps).
        source_size: ``(width, height)`` of the image as the source delivered it.
        image: ``uint8`` array in ``pixel_format`` (BGR: ``(height, width, 3)``; I420:
            ``(height * 3/2, width)``, ...); owned by the frame (never reused by the
            capture thread), treat it as read-only.
        connection: which (re)connection of the source delivered it: a change tells a
            tracker that positions no longer follow on from the previous frame.
        pixel_format: the layout of ``image``, a name of ``edged/pixels.py``.
    """

    stream_id: str
    seq: int
    captured_mono: float
    captured_wall: float
    source_size: Tuple[int, int]
    image: np.ndarray = field(repr=False)
    connection: int = 0
    pixel_format: str = "bgr"
    # the BGR conversion, made by the first caller of bgr() (a list: the dataclass is frozen)
    _bgr: List[Any] = field(default_factory=list, init=False, repr=False)

    def bgr(self) -> np.ndarray:
        """``image`` as BGR: the image itself when it is BGR, else converted once and kept.

        Two threads asking at once may both convert; both get equal arrays.
        """
        if self.pixel_format == "bgr":
            return self.image
        if not self._bgr:
            self._bgr.append(pixels.to_bgr(self.image, self.pixel_format))
        return self._bgr[0]

    @property
    def width(self) -> int:
        return self.source_size[0]

    @property
    def height(self) -> int:
        return self.source_size[1]
