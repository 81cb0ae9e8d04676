"""A stand-in for a Jetson CSI camera (CI and the lent GPU machine have none), and the frames
it delivers through the real capture supervisor into a worker's slot."""

import threading

import numpy as np

from edged.sources import ENDED, SourceSupervisor
from edged.sources.base import FrameSource

from .frames import from_bgr


def picture(width=64, height=48, seed=3):
    """A real-looking BGR picture (smooth gradients and a block), even width and height."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], -1)
    image = image.astype(np.uint8)
    image[height // 4 : height // 2, width // 4 : width // 2] = rng.integers(0, 256, 3)
    return image


class FakeCsiCamera(FrameSource):
    """A stand-in for a Jetson CSI camera (none in CI): each open delivers ``images`` in
    ``pixel_format``, as nvvidconv hands them to OpenCV, then ends."""

    display = "csi://0 (fake)"

    def __init__(self, images, pixel_format):
        self._images = list(images)
        self._format = pixel_format
        self._left = []

    @property
    def pixel_format(self):
        return self._format

    @property
    def ended(self):
        return not self._left

    def open(self):
        self._left = list(self._images)

    def read(self):
        return self._left.pop(0) if self._left else None

    def close(self):
        pass


def capture(worker, fmt, pictures):
    """Frames of ``pictures`` (BGR) delivered by a :class:`FakeCsiCamera` in ``fmt`` through
    the real supervisor into ``worker``'s slot for stream ``cam``, none dropped."""
    slot = worker.attach("cam", capacity=len(pictures))
    images = [from_bgr(p, fmt) for p in pictures]
    supervisor = SourceSupervisor("cam", FakeCsiCamera(images, fmt), threading.Event(), slot=slot,
                                  live=True)  # fmt: skip
    supervisor.start()
    supervisor._thread.join(30)
    assert supervisor.status().state == ENDED and supervisor.status().drops == 0
    frames = [slot.get_nowait() for _ in pictures]
    assert supervisor.stop() is True
    return frames
