"""Source descriptions: parse a stream's ``source`` string into a :class:`SourceSpec`.

One string names the source and decides its kind (issue 4, item 1):

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

The other fields come from the stream's config keys (size, fps, loop, ...).
Malformed values raise :class:`~edged.errors.ConfigError` naming the key; no
message, ``repr`` or log line ever carries a password: :func:`redact` masks
``user:***@``, secret-looking query parameters and ``user-pw=`` properties.
"""

import os
import re
from dataclasses import dataclass, field
from typing import Optional, Tuple
from urllib.parse import SplitResult, unquote, urlsplit

from ..errors import ConfigError

FILE = "file"
IMAGES = "images"
V4L2 = "v4l2"
NETWORK = "network"
CSI = "csi"
GSTREAMER = "gstreamer"
KINDS = (FILE, IMAGES, V4L2, NETWORK, CSI, GSTREAMER)

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtp", "rtmp", "rtmps", "http", "https", "udp", "srt")
GST_PREFIXES = ("gst:", "gstreamer:")

# CSI defaults: 1920x1080@30 is a mode of every common Jetson CSI sensor (IMX219,
# IMX477); jetson-utils' gstCamera uses the same as its default.
CSI_DEFAULT_SIZE = (1920, 1080)
CSI_DEFAULT_FPS = 30.0
MAX_SENSOR_ID = 15  # Argus numbers sensors 0..N-1 in device-tree order (reliability.md 5.2)
MAX_DIMENSION = 16384
MAX_FPS = 1000.0
MAX_TIMEOUT_S = 3600.0
TRANSPORTS = ("tcp", "udp")

# Greedy password part: an unencoded "@" inside a password must not leak its tail.
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s/@:]*):(?P<pw>[^\s/]*)@")
# The same without a scheme ("rtsp//user:pw@cam", "user:pw@cam:554/x"): typos must not leak either.
_BARE_USERINFO = re.compile(r"(?<=[^\s/@:]):(?P<pw>[^\s/]*)@")
_STARTS_WITH_USERINFO = re.compile(r"^[^\s/@:]+:[^\s/]*@")
# A network or camera scheme whose "://" is mistyped: rtsp//, rtsp:/, rtsp:host
_MISTYPED_SCHEME = re.compile(
    r"^(?P<scheme>rtsps?|rtmps?|rtp|https?|udp|srt|csi|file|v4l2)(?::/?(?!/)|//)", re.I
)
# GStreamer element properties (rtspsrc user-pw=...); not URL query parameters, handled below.
_SECRET_PROPERTY = re.compile(
    r"(?P<head>(?<![?&])\b(user-pw|password|passwd|pass|pwd)\s*=\s*)(?P<v>\"[^\"]*\"|'[^']*'|[^\s!]+)",
    re.I,
)
_SECRET_QUERY = re.compile(
    r"(?P<head>[?&](pass(word|wd)?|pwd|token|secret|key|auth|api_?key)=)(?P<v>[^&#\s]*)", re.I
)


def redact(text: str) -> str:
    """``text`` with passwords masked: ``rtsp://user:***@host``, ``password=***``.

    Works on a bare URL and on any text that embeds one (a GStreamer pipeline,
    an error message), so every log line and error in this package passes
    through it.
    """
    text = _USERINFO.sub(lambda m: m.group("head") + ":***@", text)
    text = _BARE_USERINFO.sub(":***@", text)
    text = _SECRET_PROPERTY.sub(lambda m: m.group("head") + "***", text)
    return _SECRET_QUERY.sub(lambda m: m.group("head") + "***", text)


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
        transport: ``network`` RTSP: ``tcp`` (default, reliability.md 5.2) or ``udp``.
        open_timeout_s, read_timeout_s: FFmpeg timeouts for ``network`` sources
            (and GStreamer ones where OpenCV >= 4.7 supports them). A read that
            times out ends the connection (stalled -> backoff -> reconnect); keep
            ``read_timeout_s`` below the supervisor's ``stall_timeout_s``.
        fourcc: V4L2 pixel format to request, e.g. ``MJPG`` or ``YUYV``.
        sensor_id, flip_method: CSI ``nvarguscamerasrc sensor-id`` and ``nvvidconv flip-method``.
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

    @property
    def is_live(self) -> bool:
        """True for cameras and streams (frames arrive at their own pace)."""
        return self.kind not in (FILE, IMAGES)


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
) -> SourceSpec:
    """Parse ``source`` and its options into a :class:`SourceSpec`.

    ``key`` is the config key path used in error messages (e.g.
    ``streams.front.source``). Only the kind of a plain path depends on the
    filesystem (an existing directory, or a trailing ``/``, means images); files
    and devices are not required to exist yet: see ``backends.preflight``.

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

    kind, location, sensor_id = _classify(source, key)
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


def _classify(source: str, key: str) -> Tuple[str, str, Optional[int]]:
    lower = source.lower()
    for prefix in GST_PREFIXES:
        if lower.startswith(prefix):
            return GSTREAMER, _gst_pipeline(source[len(prefix) :], key), None
    if source.isdigit():  # OpenCV's habit: a bare index means /dev/videoN
        return V4L2, f"/dev/video{int(source)}", None
    if "://" not in source:
        _refuse_url_typos(source, key)
        return _classify_path(source), source, None

    scheme = lower.split("://", 1)[0]
    if scheme in NETWORK_SCHEMES:
        return NETWORK, _network_url(source, key), None
    if scheme == "csi":
        return CSI, source, _sensor_id(source, key)
    if scheme == "file":
        return _classify_path(_file_url_path(source, key)), _file_url_path(source, key), None
    if scheme == "v4l2":
        path = unquote(_split(source, key).path) or ""
        rest = source[len("v4l2://") :]
        if rest.isdigit():
            return V4L2, f"/dev/video{int(rest)}", None
        if not path.startswith("/"):
            raise ConfigError(f"{key}: v4l2 source must name a device like v4l2:///dev/video0")
        return V4L2, path, None
    raise ConfigError(
        "{}: unsupported source scheme {!r} in {}; expected a file or directory path, /dev/video*, "
        "{}, csi://N or gst:<pipeline>".format(
            key, redact(scheme), redact(source), "://, ".join(NETWORK_SCHEMES) + "://"
        )
    )


_URL_EXAMPLES = {"csi": "csi://0", "file": "file:///videos/a.mp4", "v4l2": "v4l2:///dev/video0"}


def _refuse_url_typos(source: str, key: str) -> None:
    """A URL with a typo would otherwise be taken for a file name and fail only when opened,
    with the password in the path (issue 4: bad camera URLs get a clear error up front)."""
    typo = _MISTYPED_SCHEME.match(source)
    if typo:
        scheme = typo.group("scheme").lower()
        example = _URL_EXAMPLES.get(scheme, f"{scheme}://user:pass@host:port/path")
        raise ConfigError(
            f"{key}: {redact(source)} is not a valid URL: write {scheme}:// (e.g. {example})"
        )
    if _STARTS_WITH_USERINFO.match(source):
        raise ConfigError(
            f"{key}: {redact(source)} looks like a URL without its scheme: write "
            "rtsp://user:pass@host/path (or the camera's scheme)"
        )


def _classify_path(path: str) -> str:
    if path.startswith("/dev/"):
        return V4L2
    if path.endswith("/") or os.path.isdir(path):
        return IMAGES
    return FILE


def _split(source: str, key: str) -> SplitResult:
    try:
        return urlsplit(source)
    except ValueError as e:  # "Invalid IPv6 URL" for an unclosed "["
        raise ConfigError(f"{key}: malformed URL {redact(source)}: {redact(str(e))}") from e


def _file_url_path(source: str, key: str) -> str:
    parts = _split(source, key)
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(f"{key}: file URL must be file:///absolute/path, got {redact(source)}")
    path = unquote(parts.path)
    if not path:
        raise ConfigError(f"{key}: file URL has no path: {redact(source)}")
    return path


def _network_url(source: str, key: str) -> str:
    try:
        parts = urlsplit(source)
        port = parts.port  # raises ValueError for a non-numeric port
    except ValueError as e:
        raise ConfigError(f"{key}: malformed URL {redact(source)}: {redact(str(e))}") from e
    if not parts.hostname:
        raise ConfigError(f"{key}: URL has no host: {redact(source)}")
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"{key}: URL port out of range: {redact(source)}")
    if any(c.isspace() for c in source):
        raise ConfigError(f"{key}: URL contains whitespace: {redact(source)}")
    return source


def _sensor_id(source: str, key: str) -> int:
    rest = source.split("://", 1)[1].rstrip("/")
    if not rest.isdigit() or int(rest) > MAX_SENSOR_ID:
        raise ConfigError(
            f"{key}: CSI source must be csi://N with sensor id 0..{MAX_SENSOR_ID}, "
            f"got {redact(source)}"
        )
    return int(rest)


def _gst_pipeline(pipeline: str, key: str) -> str:
    pipeline = pipeline.strip()
    if not pipeline:
        raise ConfigError(f"{key}: gst: needs a GStreamer pipeline after the prefix")
    # OpenCV's GStreamer backend pulls frames from an appsink; without one it
    # fails with an opaque message at open (or silently plays nowhere).
    if "appsink" not in pipeline:
        raise ConfigError(
            f"{key}: a GStreamer source must end in an appsink, e.g. '... ! videoconvert ! "
            "video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false'"
        )
    return pipeline


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
