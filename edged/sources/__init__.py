"""Camera and stream sources with supervision.

The pipeline's entry points::

    spec = parse_source("rtsp://user:pw@cam/stream", key="streams.front.source")
    source = build_source(spec)          # SourceError: no backend, missing file
    sup = SourceSupervisor("front", source, stop_event, SupervisionPolicy())
    sup.start()
    frame = sup.slot.get(timeout=0.5)                 # Frame or None
    sup.status().to_dict()                            # for status topic / metrics
    sup.stop()

Modules: ``uri`` (parse_source), ``spec`` (SourceSpec, kind names), ``kinds`` (the table
kind -> recogniser, factory; build_source), ``recognise`` (what each kind's string looks
like), ``backends`` (OpenCV sources and backend choice), ``images`` (image directories),
``base`` (FrameSource), ``supervisor`` (SourceSupervisor), ``status`` (states,
SupervisionPolicy, SourceStatus), ``slot`` (LatestSlot), ``frame`` (Frame), ``backoff``
(Backoff).
"""

from .backends import (
    OpenCvCapabilities,
    OpenCvSource,
    capture_plan,
    csi_pipeline,
    opencv_capabilities,
)
from .backoff import Backoff
from .base import FrameSource
from .frame import Frame
from .images import ImageDirectorySource
from .kinds import build_source, classify
from .slot import LatestSlot
from .supervisor import (
    BACKOFF,
    CONNECTING,
    ENDED,
    STALLED,
    STATES,
    STOPPED,
    STREAMING,
    SourceStatus,
    SourceSupervisor,
    SupervisionPolicy,
)
from .uri import KINDS, SourceSpec, parse_source, redact

__all__ = [
    "BACKOFF",
    "CONNECTING",
    "ENDED",
    "KINDS",
    "STALLED",
    "STATES",
    "STOPPED",
    "STREAMING",
    "Backoff",
    "Frame",
    "FrameSource",
    "ImageDirectorySource",
    "LatestSlot",
    "OpenCvCapabilities",
    "OpenCvSource",
    "SourceSpec",
    "SourceStatus",
    "SourceSupervisor",
    "SupervisionPolicy",
    "build_source",
    "capture_plan",
    "classify",
    "csi_pipeline",
    "opencv_capabilities",
    "parse_source",
    "redact",
]
