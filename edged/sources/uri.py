"""Source descriptions: parse a stream's ``source`` string into a :class:`SourceSpec`.

One string names the source and decides its kind:

=================================================  ============  =====================
source string                                      kind          opened with
=================================================  ============  =====================
``/videos/a.mp4``, ``file:///videos/a.mp4``        ``file``      FFmpeg
``/images/``, an existing directory                ``images``    cv2.imread, sorted
``/dev/video0``, ``/dev/v4l/by-id/...``, ``v4l2:///dev/video0``, ``0``
                                                   ``v4l2``      V4L2
``rtsp://user:pass@host/path``, ``rtsps``, ``rtp``, ``rtmp``, ``http(s)``, ``udp``
                                                   ``network``   FFmpeg, timeouts
``csi://0`` (Argus sensor id)                      ``csi``       GStreamer
``gst:...`` / ``gstreamer:...`` (ends in appsink)  ``gstreamer`` GStreamer
=================================================  ============  =====================

Which row a string belongs to is decided by the kinds table (``kinds.py``, recognisers in
``recognise.py``), the same table that builds the source; the other fields come from the
stream's config keys (size, fps, loop, ...).
Malformed values raise :class:`~edged.errors.ConfigError` naming the key; no
message, ``repr`` or log line ever carries a password: :func:`redact` masks
``user:***@``, secret-looking query parameters and ``user-pw=`` properties.
"""

import re
from typing import Optional

from ..errors import ConfigError
from ..redact import redact
from .kinds import classify
from .recognise import GST_PREFIXES, MAX_SENSOR_ID, NETWORK_SCHEMES
from .spec import CSI, FILE, GSTREAMER, IMAGES, KINDS, NETWORK, V4L2, SourceSpec

# CSI defaults: 1920x1080@30 is a mode of every common Jetson CSI sensor (IMX219,
# IMX477); jetson-utils' gstCamera uses the same as its default.
CSI_DEFAULT_SIZE = (1920, 1080)
CSI_DEFAULT_FPS = 30.0
MAX_DIMENSION = 16384
MAX_FPS = 1000.0
MAX_TIMEOUT_S = 3600.0
TRANSPORTS = ("tcp", "udp")

__all__ = [
    "CSI", "FILE", "GSTREAMER", "GST_PREFIXES", "IMAGES", "KINDS", "MAX_SENSOR_ID", "NETWORK",
    "NETWORK_SCHEMES", "V4L2", "SourceSpec", "parse_source", "redact",
]  # fmt: skip


def parse_source(
    source: str,
    width: Optional[int] = None,
    height: Optional[int] = None,
    fps: Optional[float] = None,
    loop: bool = True,
    realtime: bool = True,
    transport: str = "tcp",
    open_timeout_s: float = 10.0,
    read_timeout_s: float = 5.0,
    fourcc: Optional[str] = None,
    flip_method: int = 0,
    key: str = "source",
    base_dir: Optional[str] = None,
) -> SourceSpec:
    """Parse ``source`` and its options into a :class:`SourceSpec`.

    ``key`` is the config key path used in error messages (e.g.
    ``streams.front.source``); a relative file or directory path resolves against
    ``base_dir`` when given (the config file's directory), after the kinds table
    (``kinds.py``) has classified the string, so ``0`` stays ``/dev/video0`` and a
    mistyped URL is refused instead of becoming a file name. Only the kind of a
    plain path depends on the filesystem (an existing directory, or a trailing
    ``/``, means images); files and devices are not required to exist yet: the
    file kind's factory checks that when the source is built.

    Raises:
        ConfigError: the string or an option is malformed (one line, redacted).
    """
    if not isinstance(source, str) or not source.strip():
        raise ConfigError(f"{key}: expected a non-empty source string")
    source = source.strip()
    if source.lower().startswith(GST_PREFIXES):
        # a pipeline written over several YAML lines (``|``): line breaks are spaces to GStreamer
        source = re.sub(r"\s*[\r\n]\s*", " ", source).replace("\t", " ")
    for at, char in enumerate(source):
        if ord(char) < 32 or ord(char) == 127:  # would break the one-line error and the log line
            raise ConfigError(
                f"{key}: contains a control character (code {ord(char)}) at position {at + 1}"
            )
    _check_size(width, height, key)
    _check_range(fps, 0.0, MAX_FPS, key, "fps", exclusive_low=True)
    _check_range(open_timeout_s, 0.0, MAX_TIMEOUT_S, key, "open_timeout_s", exclusive_low=True)
    _check_range(read_timeout_s, 0.0, MAX_TIMEOUT_S, key, "read_timeout_s", exclusive_low=True)
    if transport not in TRANSPORTS:
        raise ConfigError(
            "{}: transport must be one of {}, got {!r}".format(
                key, ", ".join(TRANSPORTS), transport
            )
        )
    if fourcc is not None and (not isinstance(fourcc, str) or len(fourcc) != 4):
        raise ConfigError(f"{key}: fourcc must be 4 characters like MJPG or YUYV, got {fourcc!r}")
    if not isinstance(flip_method, int) or not 0 <= flip_method <= 7:
        raise ConfigError(f"{key}: flip_method must be 0..7 (nvvidconv), got {flip_method!r}")

    kind, (location, sensor_id) = classify(source, key, base_dir)
    if kind == CSI:
        width = width or CSI_DEFAULT_SIZE[0]
        height = height or CSI_DEFAULT_SIZE[1]
        fps = fps or CSI_DEFAULT_FPS
    return SourceSpec(
        kind=kind,
        location=location,
        display=redact(source if kind == GSTREAMER else location),
        width=width,
        height=height,
        fps=fps,
        loop=bool(loop),
        realtime=bool(realtime),
        transport=transport,
        open_timeout_s=float(open_timeout_s),
        read_timeout_s=float(read_timeout_s),
        fourcc=fourcc.upper() if fourcc else None,
        sensor_id=sensor_id,
        flip_method=flip_method,
    )


def _check_size(width: Optional[int], height: Optional[int], key: str) -> None:
    if (width is None) != (height is None):
        raise ConfigError(f"{key}: give both width and height, or neither")
    for name, value in (("width", width), ("height", height)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_DIMENSION:
            raise ConfigError(f"{key}: {name} must be an integer 1..{MAX_DIMENSION}, got {value!r}")


def _check_range(
    value: Optional[float],
    low: float,
    high: float,
    key: str,
    name: str,
    exclusive_low: bool = False,
) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}: {name} must be a number, got {value!r}")
    too_low = value <= low if exclusive_low else value < low
    if too_low or value > high:
        raise ConfigError(
            "{}: {} must be in {}{}, {}], got {!r}".format(
                key, name, "(" if exclusive_low else "[", low, high, value
            )
        )
