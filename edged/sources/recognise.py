"""What each source kind's string looks like: one recogniser per kind, pure string work.

A recogniser answers ``None`` (not this kind), a :class:`Target` (this kind, opened at
``location``) or raises :class:`~edged.errors.ConfigError` (this kind, but malformed: one
line, the password never in it). The kinds table (``kinds.py``) tries them in order. Only
the path kinds touch the filesystem (an existing directory means ``images``), and only they
resolve a relative path, against the config file's directory.

No error repeats what :func:`urllib.parse.urlsplit` says: its messages quote the raw
netloc ("Port could not be cast to integer value as 'Pa55'"), the head of a password that
holds a ``/``, ``#`` or ``?``.
"""

import os
import re
from typing import NamedTuple, Optional
from urllib.parse import SplitResult, unquote, urlsplit

from ..errors import ConfigError
from ..redact import redact
from .gst_formats import appsink_caps_format, lookup

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtp", "rtmp", "rtmps", "http", "https", "udp", "srt")
GST_PREFIXES = ("gst:", "gstreamer:")
MAX_SENSOR_ID = 15  # Argus numbers sensors 0..N-1 in device-tree order

# A network or camera scheme whose "://" is mistyped: rtsp//, rtsp:/, rtsp:host
_MISTYPED_SCHEME = re.compile(
    r"^(?P<scheme>rtsps?|rtmps?|rtp|https?|udp|srt|csi|file|v4l2)(?::/?(?!/)|//)", re.I
)
# "user:password@" with no scheme before it (the password may hold "/" or spaces)
_STARTS_WITH_USER_INFO = re.compile(r"^[^\s/@:]+:.*@", re.S)
# A device or sensor index: ASCII digits only ("²".isdigit() is true, int("²") fails), and
# few of them (int() of thousands of digits is refused from Python 3.11 on).
_INDEX = re.compile(r"[0-9]{1,6}\Z")
_URL_EXAMPLES = {"csi": "csi://0", "file": "file:///videos/a.mp4", "v4l2": "v4l2:///dev/video0"}
ENCODE_HINT = (
    "percent-encode special characters of the user name and password "
    "(/ as %2F, # as %23, ? as %3F, @ as %40, space as %20)"
)


class Target(NamedTuple):
    """What a recogniser found: where to open, and the CSI sensor id (None elsewhere)."""

    location: str
    sensor_id: Optional[int] = None


def recognise_gstreamer(source: str, key: str, base_dir: Optional[str]) -> Optional[Target]:
    """``gst:PIPELINE`` or ``gstreamer:PIPELINE``; the pipeline must end in an appsink."""
    lower = source.lower()
    prefix = next((p for p in GST_PREFIXES if lower.startswith(p)), None)
    if prefix is None:
        return None
    pipeline = source[len(prefix) :].strip()
    if not pipeline:
        raise ConfigError(f"{key}: gst: needs a GStreamer pipeline after the prefix")
    # OpenCV's GStreamer backend pulls frames from an appsink; without one it
    # fails with an opaque message at open (or silently plays nowhere).
    if "appsink" not in pipeline:
        raise ConfigError(
            f"{key}: a GStreamer source must end in an appsink, e.g. '... ! videoconvert ! "
            "video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false'"
        )
    # Any raw format edged reads is taken as it is (I420 and NV12 straight from nvvidconv or
    # a decoder: no CPU videoconvert); one it does not read is refused now, not at open.
    caps_format = appsink_caps_format(pipeline)
    if caps_format is not None:
        lookup(caps_format, key)
    return Target(pipeline)


def recognise_v4l2(source: str, key: str, base_dir: Optional[str]) -> Optional[Target]:
    """``0`` (OpenCV's habit: a bare index means /dev/videoN), ``/dev/...``, ``v4l2://...``."""
    if _INDEX.match(source):
        return Target(f"/dev/video{int(source)}")
    if source.startswith("/dev/"):
        return Target(source)
    if not source.lower().startswith("v4l2://"):
        return None
    rest = source[len("v4l2://") :]
    if _INDEX.match(rest):
        return Target(f"/dev/video{int(rest)}")
    path = unquote(_split(source, key).path) or ""
    if not path.startswith("/"):
        raise ConfigError(f"{key}: v4l2 source must name a device like v4l2:///dev/video0")
    return Target(path)


def recognise_network(source: str, key: str, base_dir: Optional[str]) -> Optional[Target]:
    """``rtsp://``, ``http(s)://`` and the other :data:`NETWORK_SCHEMES`, with a host."""
    if _scheme(source) not in NETWORK_SCHEMES:
        return None
    shown = redact(source)
    if any(c.isspace() for c in source):
        raise ConfigError(f"{key}: URL contains whitespace: {shown}; {ENCODE_HINT}")
    parts = _split(source, key)
    host_port = parts.netloc.rpartition("]")[2]  # after an IPv6 host's brackets
    bad_port = ":" in host_port and not host_port.rpartition(":")[2].isdigit()
    if bad_port and "@" not in parts.netloc and "@" in source:
        # rtsp://user:pa/ss@host: the "/" (or "#", "?") ended the host part at "user:pa"
        raise ConfigError(
            f"{key}: in {shown} a '/', '#' or '?' ends the host part before the '@': {ENCODE_HINT}"
        )
    try:
        port = parts.port
    except ValueError as e:  # its message quotes the raw port: maybe part of a password
        host_port = parts.netloc.rpartition("@")[2].rpartition("]")[2]
        if host_port.rpartition(":")[2].isdigit():
            raise ConfigError(f"{key}: URL port out of range: {shown}") from e
        raise ConfigError(f"{key}: URL port is not a number 1..65535 in {shown}") from e
    if not parts.hostname:
        raise ConfigError(f"{key}: URL has no host: {shown}")
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"{key}: URL port out of range: {shown}")
    return Target(source)


def recognise_csi(source: str, key: str, base_dir: Optional[str]) -> Optional[Target]:
    """``csi://N``: Argus sensor N."""
    if _scheme(source) != "csi":
        return None
    rest = source.split("://", 1)[1].rstrip("/")
    if not _INDEX.match(rest) or int(rest) > MAX_SENSOR_ID:
        raise ConfigError(
            f"{key}: CSI source must be csi://N with sensor id 0..{MAX_SENSOR_ID}, "
            f"got {redact(source)}"
        )
    return Target(source, int(rest))


def recognise_images(source: str, key: str, base_dir: Optional[str]) -> Optional[Target]:
    """A directory of images: it exists, or the path ends in ``/``."""
    path = _path(source, key, base_dir)
    if path is None or not (path.endswith("/") or os.path.isdir(path)):
        return None
    return Target(path)


def recognise_file(source: str, key: str, base_dir: Optional[str]) -> Optional[Target]:
    """Any other path (a video file; it need not exist yet), or ``file:///path``."""
    path = _path(source, key, base_dir)
    return None if path is None else Target(path)


def _path(source: str, key: str, base_dir: Optional[str]) -> Optional[str]:
    """The filesystem path ``source`` names, relative ones resolved against ``base_dir``."""
    if _scheme(source) == "file":
        return _file_url_path(source, key)
    _refuse_url_typos(source, key)  # before a typo is taken for a file name or unknown scheme
    if "://" in source:
        return None
    path = os.path.expanduser(source)
    if base_dir is None or os.path.isabs(path):
        return path
    resolved = os.path.normpath(os.path.join(base_dir, path))
    return resolved + "/" if path.endswith("/") else resolved


def _scheme(source: str) -> Optional[str]:
    return source.split("://", 1)[0].lower() if "://" in source else None


def _refuse_url_typos(source: str, key: str) -> None:
    """A URL with a typo would otherwise be taken for a file name and fail only when opened,
    with the password in the path: refuse it now, in one line."""
    typo = _MISTYPED_SCHEME.match(source)
    if typo:
        scheme = typo.group("scheme").lower()
        example = _URL_EXAMPLES.get(scheme, f"{scheme}://user:pass@host:port/path")
        raise ConfigError(
            f"{key}: {redact(source)} is not a valid URL: write {scheme}:// (e.g. {example})"
        )
    if "://" not in source and _STARTS_WITH_USER_INFO.match(source):
        raise ConfigError(
            f"{key}: {redact(source)} looks like a URL without its scheme: write "
            "rtsp://user:pass@host/path (or the camera's scheme)"
        )


def _split(source: str, key: str) -> SplitResult:
    try:
        return urlsplit(source)
    except ValueError as e:  # the message quotes the raw netloc: never repeat it
        raise ConfigError(f"{key}: {redact(source)} is not a valid URL: {_why(source)}") from e


def _why(source: str) -> str:
    if "[" in source or "]" in source:
        return "an IPv6 host needs both brackets, e.g. rtsp://[fe80::1]:554/x"
    return ENCODE_HINT


def _file_url_path(source: str, key: str) -> str:
    parts = _split(source, key)
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(f"{key}: file URL must be file:///absolute/path, got {redact(source)}")
    path = unquote(parts.path)
    if not path:
        raise ConfigError(f"{key}: file URL has no path: {redact(source)}")
    return path
