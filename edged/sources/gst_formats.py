"""Which raw formats OpenCV's GStreamer backend hands over, and in which edged pixel format.

What OpenCV accepts at its appsink (``modules/videoio/src/cap_gstreamer.cpp`` of
opencv/opencv, ``GStreamerCapture::open`` and ``retrieveFrame``):

* since 3.3 (PR #8914) up to and including 4.10 -- JetPack 4.6's 4.1.1, JetPack 5's 4.5.4,
  JetPack 6's 4.8: the appsink caps are ``video/x-raw, format={BGR, GRAY8}`` (plus Bayer and
  JPEG); for a pipeline of one's own whose last caps do not intersect those, OpenCV sets
  ``{UYVY, YUY2, YVYU, NV12, NV21, YV12, I420}`` instead. BGR comes back as H x W x 3, GRAY8
  as H x W, YUY2 as H x W x 2, NV12 and I420 as ONE (H * 3/2) x W array (the Y plane, then
  the chroma). BGRx/BGRA is refused: the pipeline does not start (opencv#11059).
* from 4.11 (PR #25602, merged June 2024 after 4.10.0: "Jetson Orin provides BGRx stream"):
  ``{BGRA, RGBA, BGRx, RGBx}`` too, as H x W x 4.

Older versions wrap the buffer as if its rows were packed (no stride): a width that
GStreamer pads (I420 chroma rows are padded to 4 bytes) comes out sheared; widths that are a
multiple of 8 never are.
"""

import re
from typing import Dict, NamedTuple, Optional, Tuple

import numpy as np

from ..errors import ConfigError, InputError, SourceError
from ..pixels import frame_size


class GstFormat(NamedTuple):
    """One raw format at OpenCV's appsink."""

    caps: str  # the caps' format name, e.g. "BGRx"
    pixel_format: str  # edged/pixels.py
    since: Tuple[int, int, int]  # first OpenCV whose GStreamer backend hands it over


_BY_CAPS: Dict[str, GstFormat] = {}


def register(fmt: GstFormat) -> None:
    _BY_CAPS[fmt.caps.upper()] = fmt


register(GstFormat("BGR", "bgr", (3, 0, 0)))
register(GstFormat("GRAY8", "gray", (3, 0, 0)))
register(GstFormat("YUY2", "yuyv", (3, 3, 0)))
register(GstFormat("NV12", "nv12", (3, 3, 0)))
register(GstFormat("I420", "i420", (3, 3, 0)))
register(GstFormat("BGRx", "bgrx", (4, 11, 0)))
register(GstFormat("BGRA", "bgrx", (4, 11, 0)))
register(GstFormat("RGBx", "rgbx", (4, 11, 0)))
register(GstFormat("RGBA", "rgbx", (4, 11, 0)))

#: What a Jetson CSI pipeline ends in when its frames go to the CUDA pre-processor. I420:
#: every OpenCV since 3.3 takes it (BGRx only from 4.11, and no JetPack ships that), it is
#: 1.5 bytes a pixel where BGRx is 4 (OpenCV copies every frame once and the CUDA
#: pre-processor's staging copies it again: 2.7x fewer bytes on the Nano's CPU), and NVIDIA's
#: nvvidconv writes it from Argus's NV12 on the VIC, not the CPU.
CSI_GPU_CAPS = "I420"
#: ... and when they go to the CPU: BGR, converted from BGRx by GStreamer's videoconvert.
CSI_CPU_CAPS = "BGR"

# the last "format=" of a caps string: format=BGRx, format=(string)I420, format="NV12"
_FORMAT = re.compile(r"format\s*=\s*(?:\(string\))?\s*\"?([A-Za-z0-9_]+)")


def appsink_caps_format(pipeline: str) -> Optional[str]:
    """The ``format`` of the raw caps right before the pipeline's appsink, None when the
    element before it is not such a caps filter (OpenCV then negotiates BGR)."""
    elements = [e.strip() for e in pipeline.split("!")]
    sink = next((i for i, e in enumerate(elements) if e.split(" ", 1)[0] == "appsink"), None)
    if sink is None or sink == 0:
        return None
    caps = elements[sink - 1]
    if not caps.lower().startswith("video/x-raw"):
        return None
    found = _FORMAT.findall(caps)
    return found[-1] if found else None


def lookup(caps_format: str, key: str) -> GstFormat:
    """The registered format of an appsink's caps.

    Raises:
        ConfigError: a format edged does not read (one line naming those it does).
    """
    fmt = _BY_CAPS.get(caps_format.upper())
    if fmt is None:
        known = ", ".join(sorted(f.caps for f in _BY_CAPS.values()))
        raise ConfigError(
            f"{key}: a GStreamer source's appsink caps format={caps_format} is not one edged "
            f"reads; end the pipeline in one of {known}"
        )
    return fmt


def pipeline_pixel_format(
    pipeline: str, opencv: Tuple[int, int, int], origin: str, display: str
) -> str:
    """The edged pixel format of what ``pipeline``'s appsink hands this OpenCV.

    Raises:
        SourceError: the format is one this OpenCV's GStreamer backend refuses.
    """
    caps = appsink_caps_format(pipeline)
    if caps is None:
        return "bgr"
    try:
        fmt = lookup(caps, display)
    except ConfigError as e:
        raise SourceError(str(e)) from e
    if opencv < fmt.since:
        raise SourceError(
            "{}: {} refuses appsink caps format={} (OpenCV's GStreamer backend takes it from "
            "{}); end the pipeline in I420, NV12 or BGR".format(
                display, origin, caps, ".".join(str(n) for n in fmt.since)
            )
        )
    return fmt.pixel_format


def checked_raw(image: np.ndarray, pixel_format: str, display: str) -> np.ndarray:
    """``image`` as the appsink handed it over, once it fits ``pixel_format``.

    Raises:
        SourceError: it does not (the source is broken, e.g. caps renegotiated).
    """
    try:
        frame_size(image, pixel_format)
    except InputError as e:
        raise SourceError(f"source {display}: {e}") from e
    return image
