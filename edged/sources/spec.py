"""What a parsed source is: the kind names and :class:`SourceSpec`, shared by the recognisers,
the kinds table and the OpenCV backends (a leaf module, so none of them imports another)."""

from dataclasses import dataclass, field
from typing import Optional

FILE = "file"
IMAGES = "images"
V4L2 = "v4l2"
NETWORK = "network"
CSI = "csi"
GSTREAMER = "gstreamer"
KINDS = (FILE, IMAGES, V4L2, NETWORK, CSI, GSTREAMER)


@dataclass(frozen=True)
class SourceSpec:
    """What to open and how; immutable, safe to log (``repr`` is redacted).

    Attributes:
        kind: one of :data:`KINDS`.
        location: what is opened: a path, device path, URL (WITH its password)
            or GStreamer pipeline. Never log it; use :attr:`display`.
        display: the redacted, human-readable form of the source.
        width, height, fps: wanted capture size/rate (V4L2, CSI); for ``file``
            and ``images`` ``fps`` overrides the pacing rate.
        loop: ``file``/``images``: start again at the end instead of ending.
        realtime: ``file``/``images``: deliver at the native (or ``fps``) rate
            like a camera; False reads as fast as decoding allows.
        transport: ``network`` RTSP: ``tcp`` (default: survives lossy links) or ``udp``.
        open_timeout_s, read_timeout_s: FFmpeg timeouts for ``network`` sources
            (and GStreamer ones where OpenCV >= 4.7 supports them). A read that
            times out ends the connection (stalled -> backoff -> reconnect); keep
            ``read_timeout_s`` below the supervisor's ``stall_timeout_s``.
        fourcc: V4L2 pixel format to request, e.g. ``MJPG`` or ``YUYV``.
        sensor_id, flip_method: CSI ``nvarguscamerasrc sensor-id`` and ``nvvidconv flip-method``.
        gpu_frames: not a config key: set by the daemon when the stream's model pre-processes
            on CUDA, so a CSI camera hands over the format the GPU reads (I420) instead of
            BGR made by a CPU ``videoconvert`` (edged/sources/gst_formats.py).
    """

    kind: str
    location: str = field(repr=False)
    display: str
    width: Optional[int] = None
    height: Optional[int] = None
    fps: Optional[float] = None
    loop: bool = True
    realtime: bool = True
    transport: str = "tcp"
    open_timeout_s: float = 10.0
    read_timeout_s: float = 5.0
    fourcc: Optional[str] = None
    sensor_id: Optional[int] = None
    flip_method: int = 0
    gpu_frames: bool = False

    @property
    def is_live(self) -> bool:
        """True for cameras and streams (frames arrive at their own pace)."""
        return self.kind not in (FILE, IMAGES)
