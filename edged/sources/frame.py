"""What a capture thread hands to the pipeline: one :class:`Frame` per delivered image.

Frames carry stream id, a per-stream sequence number, capture time on both
clocks and the source size, so an inference worker that
resizes the image still knows how to map boxes back, and end-to-end latency
is measured from ``captured_mono``.
"""

from dataclasses import dataclass, field
from typing import Tuple

import numpy as np


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
        image: BGR ``uint8`` array of shape ``(height, width, 3)``; owned by the
            frame (never reused by the capture thread), treat it as read-only.
        connection: which (re)connection of the source delivered it: a change tells a
            tracker that positions no longer follow on from the previous frame.
    """

    stream_id: str
    seq: int
    captured_mono: float
    captured_wall: float
    source_size: Tuple[int, int]
    image: np.ndarray = field(repr=False)
    connection: int = 0

    @property
    def width(self) -> int:
        return self.source_size[0]

    @property
    def height(self) -> int:
        return self.source_size[1]
