"""What the pipeline produces per frame: one :class:`InferenceResult`."""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple


@dataclass(frozen=True)
class InferenceResult:
    """The results of one frame of one stream, with where and when it came from.

    ``seq`` is the frame's per-stream sequence number from capture, so gaps show
    frames dropped before inference; ``latency_ms`` has one entry per stage
    (``queue``: waiting in the frame slot and between the steps, ``preprocess``,
    ``inference``, ``postprocess``; they add up to) ``total`` from capture to result.
    """

    stream_id: str
    seq: int
    captured_monotonic: float
    captured_wall: float
    frame_size: Tuple[int, int]  # (width, height) of the source frame
    model: str
    task: str
    items: List[Any]  # Detection or Classification, each with to_dict()
    latency_ms: Dict[str, float] = field(default_factory=dict)
    # a TrackingUpdate (edged/pipeline/tracking.py) when the model tracks; None otherwise
    tracking: Optional[Any] = None
