"""Which results of a stream are published: publish modes and a rate cap.

* ``every_frame``: every result (reason ``frame``).
* ``on_change``: a result whose labels or per-label counts differ from the last
  PUBLISHED one (reason ``change``), plus the current result every
  ``heartbeat_s`` while nothing changes (reason ``heartbeat``), so a consumer
  can tell "still nothing" from "edged is gone".
* ``max_rate``: at most this many messages per second (0: no cap). A change held
  back by the cap is not forgotten: it is compared against the last published
  result, so the next result after the pause carries it.

Decisions use ``time.monotonic()`` (injectable) and never block.
"""

import collections
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from ..pipeline.results import InferenceResult

EVERY_FRAME = "every_frame"
ON_CHANGE = "on_change"
MODES = (EVERY_FRAME, ON_CHANGE)

Signature = Tuple[Tuple[str, int], ...]


def signature(items: Sequence[Any]) -> Signature:
    """What "changed" compares: each label with how often it occurs."""
    counts = collections.Counter(item.label for item in items)
    return tuple(sorted(counts.items()))


class PublishPolicy:
    """The publish decision of ONE stream (called on the sinks thread only)."""

    def __init__(
        self,
        mode: str = EVERY_FRAME,
        heartbeat_s: float = 10.0,
        max_rate: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"publish mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.heartbeat_s = float(heartbeat_s)
        self.min_interval_s = 1.0 / max_rate if max_rate > 0 else 0.0
        self._clock = clock
        self._last_at = None  # type: Optional[float]
        self._last_signature = None  # type: Optional[Signature]
        self.suppressed = 0  # results not published (unchanged, or over the rate cap)

    def decide(self, result: InferenceResult) -> Optional[str]:
        """The reason to publish ``result`` ("frame", "change", "heartbeat"), or None."""
        now = self._clock()
        if self._last_at is not None and now - self._last_at < self.min_interval_s:
            self.suppressed += 1
            return None
        if self.mode == EVERY_FRAME:
            reason = "frame"  # type: Optional[str]
        else:
            current = signature(result.items)
            if current != self._last_signature:
                reason = "change"
            elif self._last_at is None or now - self._last_at >= self.heartbeat_s:
                reason = "heartbeat"
            else:
                reason = None
        if reason is None:
            self.suppressed += 1
            return None
        self._last_at = now
        self._last_signature = signature(result.items) if self.mode == ON_CHANGE else None
        return reason


class PolicyBook:
    """One :class:`PublishPolicy` per stream, made on first use from per-stream settings."""

    def __init__(
        self,
        default: Dict[str, Any],
        per_stream: Optional[Dict[str, Dict[str, Any]]] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._default = dict(default)
        self._per_stream = dict(per_stream or {})
        self._clock = clock
        self._policies = {}  # type: Dict[str, PublishPolicy]

    def for_stream(self, stream_id: str) -> PublishPolicy:
        policy = self._policies.get(stream_id)
        if policy is None:
            settings = self._per_stream.get(stream_id, self._default)
            policy = PublishPolicy(clock=self._clock, **settings)
            self._policies[stream_id] = policy
        return policy
