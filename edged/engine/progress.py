"""Build progress: one overall fraction from edged's phases and TensorRT's nested ones.

First builds take minutes with no output and get killed by supervisors
(roboflow/inference PR#2703). TensorRT >= 10 reports nested
phases through ``IProgressMonitor`` (``phase_start(name, parent, num_steps)``,
``step_complete(name, step) -> keep going``, ``phase_finish(name)``); older
releases report nothing, so edged's own phases (prepare, parse, build, publish)
are logged either way and a heartbeat says the build is still alive.
:class:`ProgressTracker` folds both into :class:`ProgressEvent` values;
renderers turn them into a terminal bar or plain lines (``edged build``) and
the child-process protocol sends them to the daemon (edged.engine.runner).
"""

import logging
import sys
import threading
import time
from typing import IO, Any, Callable, Dict, List, NamedTuple, Optional

logger = logging.getLogger(__name__)

#: edged's phases and their share of the bar. TensorRT's own phases fill "build".
PHASES = (("prepare", 0.03), ("parse", 0.07), ("build", 0.85), ("publish", 0.05))
_PHASE_START = {}  # type: Dict[str, float]
_PHASE_SHARE = dict(PHASES)
_acc = 0.0
for _name, _share in PHASES:
    _PHASE_START[_name] = _acc
    _acc += _share
del _acc, _name, _share

#: An event is emitted when the fraction grows by this much (or the phase changes).
MIN_STEP = 0.01


class ProgressEvent(NamedTuple):
    """Where a build is: ``fraction`` 0..1 overall, edged's ``phase``, TensorRT's ``detail``."""

    phase: str
    fraction: float
    detail: str
    elapsed_s: float

    def to_dict(self) -> Dict[str, Any]:
        return {
            "phase": self.phase,
            "fraction": round(self.fraction, 4),
            "detail": self.detail,
            "elapsed_s": round(self.elapsed_s, 2),
        }


ProgressSink = Callable[[ProgressEvent], None]


class ProgressTracker:
    """Receives phase and step reports and calls ``sink`` with monotonic overall progress.

    ``cancel`` (an Event) makes :meth:`trt_step` return False, which asks TensorRT
    (>= 10) to abandon the build.
    """

    def __init__(
        self,
        sink: Optional[ProgressSink] = None,
        cancel: Optional[threading.Event] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sink = sink
        self._cancel = cancel
        self._clock = clock
        self._t0 = clock()
        self._lock = threading.Lock()
        self._phase = "prepare"
        self._stack: List[List[Any]] = []  # [name, num_steps, steps_done]
        self._fraction = 0.0
        self._sent_fraction = -1.0
        self._sent_key = ("", "")
        self.trt_reports = False  # True once TensorRT's monitor called us

    @property
    def fraction(self) -> float:
        return self._fraction

    @property
    def cancelled(self) -> bool:
        return self._cancel is not None and self._cancel.is_set()

    def phase(self, name: str, detail: str = "") -> None:
        """Enter one of :data:`PHASES` (``done`` ends at 100 %)."""
        with self._lock:
            self._phase = name
            self._stack = []
            self._advance(1.0 if name == "done" else _PHASE_START[name], detail, force=True)

    def heartbeat(self) -> None:
        """Re-send the current state (proof of life while TensorRT is silent)."""
        with self._lock:
            self._emit(self._detail(), force=True)

    # -- TensorRT IProgressMonitor callbacks (edged.engine.progress.make_progress_monitor) ----

    def trt_phase_start(self, name: str, parent: Optional[str], num_steps: int) -> None:
        with self._lock:
            self.trt_reports = True
            # A phase whose parent is not on the stack starts a new branch at that depth.
            while self._stack and parent is not None and self._stack[-1][0] != parent:
                self._stack.pop()
            if parent is None:
                self._stack = []
            self._stack.append([name, max(int(num_steps), 1), 0])
            self._advance(self._build_fraction(), name)

    def trt_step(self, name: str, step: int) -> bool:
        with self._lock:
            for level in reversed(self._stack):
                if level[0] == name:
                    level[2] = max(level[2], int(step) + 1)
                    break
            self._advance(self._build_fraction(), self._detail())
        return not self.cancelled

    def trt_phase_finish(self, name: str) -> None:
        with self._lock:
            for i in range(len(self._stack) - 1, -1, -1):
                if self._stack[i][0] == name:
                    self._stack[i][2] = self._stack[i][1]
                    fraction = self._build_fraction()
                    del self._stack[i:]
                    self._advance(fraction, self._detail())
                    break

    # -- internals ------------------------------------------------------------------------

    def _build_fraction(self) -> float:
        within, scale = 0.0, 1.0
        for _, total, done in self._stack:
            within += scale * min(done, total) / float(total)
            scale /= float(total)
        start = _PHASE_START.get(self._phase, 0.0)
        return start + _PHASE_SHARE.get(self._phase, 0.0) * min(within, 1.0)

    def _detail(self) -> str:
        return self._stack[-1][0] if self._stack else ""

    def _advance(self, fraction: float, detail: str, force: bool = False) -> None:
        self._fraction = max(self._fraction, min(fraction, 1.0))
        self._emit(detail, force)

    def _emit(self, detail: str, force: bool) -> None:
        key = (self._phase, self._stack[0][0] if self._stack else "")
        if not force and key == self._sent_key and self._fraction - self._sent_fraction < MIN_STEP:
            return
        self._sent_key = key
        self._sent_fraction = self._fraction
        if self._sink is not None:
            self._sink(ProgressEvent(self._phase, self._fraction, detail, self._clock() - self._t0))


def make_progress_monitor(trt: Any, tracker: ProgressTracker) -> Any:
    """A ``trt.IProgressMonitor`` forwarding to ``tracker`` (only where the API has one)."""

    class _Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: Optional[str], num_steps: int) -> None:
            tracker.trt_phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return tracker.trt_step(phase_name, step)

        def phase_finish(self, phase_name: str) -> None:
            tracker.trt_phase_finish(phase_name)

    return _Monitor()


# -- renderers --------------------------------------------------------------------------------


def describe(event: ProgressEvent) -> str:
    """``45% build (Building engine)`` -- the text both renderers show."""
    text = f"{event.fraction * 100.0:3.0f}% {event.phase}"
    if event.detail:
        text += f" ({event.detail})"
    return text


class TerminalBar:
    """A one-line bar redrawn in place (``edged build`` on a terminal)."""

    WIDTH = 28

    def __init__(self, label: str, stream: Optional[IO[str]] = None, min_interval_s: float = 0.1):
        self._label = label
        self._stream = stream if stream is not None else sys.stderr
        self._min_interval_s = min_interval_s
        self._last = -1e9
        self._drawn = False

    def __call__(self, event: ProgressEvent) -> None:
        now = time.monotonic()
        if now - self._last < self._min_interval_s and event.fraction < 1.0:
            return
        self._last = now
        filled = int(round(event.fraction * self.WIDTH))
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        line = f"{self._label} [{bar}] {describe(event)} {event.elapsed_s:4.0f}s"
        self._stream.write("\r\033[K" + line[:160])
        self._stream.flush()
        self._drawn = True

    def finish(self) -> None:
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False


class PlainLines:
    """Progress as plain lines (a pipe, a log): a line per phase and per ``step`` of progress."""

    def __init__(
        self,
        label: str,
        stream: Optional[IO[str]] = None,
        step: float = 0.1,
        heartbeat_s: float = 30.0,
    ) -> None:
        self._label = label
        self._stream = stream if stream is not None else sys.stderr
        self._step = step
        self._heartbeat_s = heartbeat_s
        self._last_bucket = -1
        self._last_phase = ""
        self._last_time = -1e9

    def __call__(self, event: ProgressEvent) -> None:
        bucket = int(event.fraction / self._step)
        now = time.monotonic()
        if (
            event.phase != self._last_phase
            or bucket > self._last_bucket
            or now - self._last_time >= self._heartbeat_s
        ):
            self._last_phase, self._last_bucket, self._last_time = event.phase, bucket, now
            self._stream.write(f"{self._label}: {describe(event)} {event.elapsed_s:.0f}s\n")
            self._stream.flush()

    def finish(self) -> None:
        """Nothing to close (lines are complete)."""


class LogProgress:
    """Progress into the log (the daemon): one INFO line per phase and per 10 %."""

    def __init__(self, label: str, log: Optional[logging.Logger] = None, step: float = 0.1):
        self._label = label
        self._log = log or logger
        self._step = step
        self._last = (-1, "")

    def __call__(self, event: ProgressEvent) -> None:
        key = (int(event.fraction / self._step), event.phase)
        if key != self._last:
            self._last = key
            self._log.info("engine %s: %s, %.0f s", self._label, describe(event), event.elapsed_s)
