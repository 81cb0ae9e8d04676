"""Camera and stream sources with supervision (issue 4, items 1-2).

The pipeline's entry points::

    spec = parse_source("rtsp://user:pw@cam/stream", key="streams.front.source")
    source = build_source(spec)                       # SourceError: missing backend/file
    sup = SourceSupervisor("front", source, stop_event, SupervisionPolicy(), live=spec.is_live)
    sup.start()
    frame = sup.slot.get(timeout=0.5)                 # Frame or None
    sup.status().to_dict()                            # for status topic / metrics
    sup.stop()

Modules: ``uri`` (SourceSpec, parse_source, redact), ``backends`` (OpenCV
sources and backend choice), ``base`` (FrameSource), ``supervisor``
(SourceSupervisor, SupervisionPolicy, SourceStatus), ``slot`` (LatestSlot),
``frame`` (Frame), ``backoff`` (Backoff).
"""

from .backends import (
    ImageDirectorySource,
    OpenCvCapabilities,
    OpenCvSource,
    build_source,
    capture_plan,
    csi_pipeline,
    opencv_capabilities,
)
from .backoff import Backoff
from .base import FrameSource
from .frame import Frame
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
    "csi_pipeline",
    "opencv_capabilities",
    "parse_source",
    "redact",
]
