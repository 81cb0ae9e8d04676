"""What supervision of a stream is made of: its states, its timings (:class:`SupervisionPolicy`)
and the snapshot it reports (:class:`SourceStatus`); the loop itself is ``supervisor.py``."""

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

CONNECTING = "connecting"
STREAMING = "streaming"
STALLED = "stalled"
BACKOFF = "backoff"
STOPPED = "stopped"
ENDED = "ended"
STATES = (CONNECTING, STREAMING, STALLED, BACKOFF, STOPPED, ENDED)


@dataclass(frozen=True)
class SupervisionPolicy:
    """Timings of one stream's supervision; every field maps to a config key.

    Attributes:
        stall_timeout_s: no frame for this long -> stalled, reconnect (Frigate: 20 s).
        frozen_timeout_s: identical frames for this long -> stalled; 0 disables.
            None picks :data:`DEFAULT_FROZEN_TIMEOUT_S` for live sources and 0 for
            files and image directories (which may legitimately hold still scenes).
        backoff_initial_s, backoff_max_s, backoff_jitter: reconnect delays
            (1 s doubling to 30 s, +-20 %).
        backoff_reset_s: streaming this long makes the next failure start at
            ``backoff_initial_s`` again.
        fps_window_s: window of the fps figure in :meth:`SourceSupervisor.status`.
        idle_poll_s: pause after a read that returned no frame (no busy loop).
        join_timeout_s: how long ``stop()`` waits for the thread by default.
    """

    stall_timeout_s: float = 20.0
    frozen_timeout_s: Optional[float] = None
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    backoff_jitter: float = 0.2
    backoff_reset_s: float = 30.0
    fps_window_s: float = 5.0
    idle_poll_s: float = 0.02
    join_timeout_s: float = 15.0

    def __post_init__(self) -> None:
        positive = (
            "stall_timeout_s",
            "backoff_initial_s",
            "backoff_max_s",
            "fps_window_s",
            "idle_poll_s",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.frozen_timeout_s is not None and self.frozen_timeout_s < 0:
            raise ValueError(
                f"frozen_timeout_s must be >= 0 (0 disables), got {self.frozen_timeout_s!r}"
            )
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be >= backoff_initial_s")
        if not 0 <= self.backoff_jitter < 1:
            raise ValueError("backoff_jitter must be in [0, 1)")
        if self.backoff_reset_s < 0 or self.join_timeout_s < 0:
            raise ValueError("backoff_reset_s and join_timeout_s must be >= 0")


DEFAULT_FROZEN_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class SourceStatus:
    """A consistent snapshot of one stream's capture, for status topics, metrics and logs."""

    stream_id: str
    source: str  # redacted
    state: str
    state_age_s: float  # time in the current state
    fps: float  # delivered frames per second over the last fps_window_s
    frames: int  # frames delivered to the slot
    drops: int  # frames the slot dropped because the consumer was slower
    reconnects: int  # connection attempts after the first
    stalls: int  # times the stream stalled (no frames, read error or frozen)
    frozen: int  # of those, times it was frozen
    open_failures: int
    last_error: Optional[str]  # redacted
    last_frame_age_s: Optional[float]  # None before the first frame
    source_size: Optional[Tuple[int, int]]  # (width, height) of the last frame
    transitions: Dict[str, int] = field(default_factory=dict)  # "streaming->stalled": n

    def to_dict(self) -> Dict[str, object]:
        return {
            "stream_id": self.stream_id,
            "source": self.source,
            "state": self.state,
            "state_age_s": round(self.state_age_s, 3),
            "fps": round(self.fps, 2),
            "frames": self.frames,
            "drops": self.drops,
            "reconnects": self.reconnects,
            "stalls": self.stalls,
            "frozen": self.frozen,
            "open_failures": self.open_failures,
            "last_error": self.last_error,
            "last_frame_age_s": None
            if self.last_frame_age_s is None
            else round(self.last_frame_age_s, 3),
            "source_size": list(self.source_size) if self.source_size else None,
            "transitions": dict(self.transitions),
        }
