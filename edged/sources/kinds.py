"""The source kinds, one table: kind -> (recogniser, factory), in the order they are tried.

The config loader (through :func:`~edged.sources.uri.parse_source`) asks :func:`classify`
what a ``source`` string is, and :func:`build_source` asks the same table how to open it,
so the two can never disagree (``source: "0"`` is ``/dev/video0`` in both). Adding a
source kind is its recogniser, its factory and one :func:`register` call here. Nothing
here imports OpenCV: the factories import it when a source is built.
"""

import re
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from ..errors import ConfigError
from ..redact import redact
from .backends import OpenCvCapabilities, OpenCvSource, open_file
from .base import FrameSource
from .images import open_images
from .recognise import (
    GST_PREFIXES,
    NETWORK_SCHEMES,
    Target,
    recognise_csi,
    recognise_file,
    recognise_gstreamer,
    recognise_images,
    recognise_network,
    recognise_v4l2,
)
from .spec import CSI, FILE, GSTREAMER, IMAGES, NETWORK, V4L2, SourceSpec

#: (source, config key for errors, directory relative paths resolve against) -> Target or None
Recogniser = Callable[[str, str, Optional[str]], Optional[Target]]
#: (spec, cv2 module or None for the installed one, its capabilities or None) -> FrameSource
Factory = Callable[[SourceSpec, Any, Optional[OpenCvCapabilities]], FrameSource]


class SourceKind(NamedTuple):
    """One row of the table."""

    name: str
    recognise: Recogniser
    factory: Factory


_PLAIN_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]{0,15}$")  # RFC 3986 section 3.1
_TABLE: List[SourceKind] = []
_BY_NAME: Dict[str, SourceKind] = {}


def register(kind: SourceKind) -> None:
    """Add ``kind`` after those registered so far (earlier rows are asked first)."""
    if kind.name in _BY_NAME:
        raise ValueError(f"source kind {kind.name!r} is registered twice")
    _TABLE.append(kind)
    _BY_NAME[kind.name] = kind


def kinds() -> Tuple[str, ...]:
    """The registered kind names, in the order they are tried."""
    return tuple(k.name for k in _TABLE)


def classify(
    source: str, key: str = "source", base_dir: Optional[str] = None
) -> Tuple[str, Target]:
    """(kind, target) of ``source``; a relative path resolves against ``base_dir`` (if given)
    only once a path kind has claimed it.

    Raises:
        ConfigError: malformed for its kind, or no kind claims it (one line, redacted).
    """
    for kind in _TABLE:
        target = kind.recognise(source, key, base_dir)
        if target is not None:
            return kind.name, target
    scheme = source.split("://", 1)[0]  # only a URL of an unknown scheme is left unclaimed
    named = f"scheme {scheme!r} in " if _PLAIN_SCHEME.match(scheme) else ""  # else: a password?
    raise ConfigError(
        "{}: unsupported source {}{}; expected a file or directory path, /dev/video*, {}, "
        "csi://N or {}<pipeline>".format(
            key, named, redact(source), "://, ".join(NETWORK_SCHEMES) + "://", GST_PREFIXES[0]
        )
    )


def build_source(
    spec: SourceSpec, cv2: Any = None, caps: Optional[OpenCvCapabilities] = None
) -> FrameSource:
    """The :class:`FrameSource` for ``spec``, from its kind's factory.

    Raises:
        SourceError: the OpenCV backend the source needs is missing, or a file /
            image directory does not exist (devices and streams are NOT required
            to be present: they are retried by the supervisor).
    """
    return _BY_NAME[spec.kind].factory(spec, cv2, caps)


register(SourceKind(GSTREAMER, recognise_gstreamer, OpenCvSource))
register(SourceKind(V4L2, recognise_v4l2, OpenCvSource))
register(SourceKind(NETWORK, recognise_network, OpenCvSource))
register(SourceKind(CSI, recognise_csi, OpenCvSource))
register(SourceKind(IMAGES, recognise_images, open_images))
register(SourceKind(FILE, recognise_file, open_file))  # last: any other path is a file
