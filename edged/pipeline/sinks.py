"""Result sinks behind a bounded queue, so a slow sink never blocks inference.

Inference workers call :meth:`SinkDispatcher.offer`, which never blocks: when
the queue is full the result is dropped and counted. The ``sinks`` thread
hands each result to every :class:`ResultSink` in turn; a sink that raises
is logged and counted, and the others still get the result. On shutdown
:meth:`SinkDispatcher.drain` delivers what is queued within a time bound.
"""

import abc
import logging
import queue
import threading
import time
from typing import Dict, List, Optional, Sequence

from .results import InferenceResult

logger = logging.getLogger(__name__)

#: Results queued between inference and the sinks (a few seconds of a busy device).
DEFAULT_CAPACITY = 256


class ResultSink(abc.ABC):
    """Receives every result, in order, on the sinks thread."""

    name = "sink"

    @abc.abstractmethod
    def handle(self, result: InferenceResult) -> None:
        """Deliver one result; should return quickly (durable sinks append to an outbox)."""

    def close(self) -> None:  # noqa: B027 - optional hook: most sinks hold nothing to release
        """Called once at shutdown, after the last result."""


class LatestResults(ResultSink):
    """Keeps the newest result of every stream (summaries, status, snapshots)."""

    name = "latest"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: Dict[str, InferenceResult] = {}

    def handle(self, result: InferenceResult) -> None:
        with self._lock:
            self._latest[result.stream_id] = result

    def get(self, stream_id: str) -> Optional[InferenceResult]:
        with self._lock:
            return self._latest.get(stream_id)


class SinkDispatcher:
    """The bounded queue between inference and the sinks, and the thread that empties it."""

    def __init__(
        self,
        sinks: Sequence[ResultSink],
        stop: threading.Event,
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        self._sinks = list(sinks)
        self._stop = stop
        self._queue = queue.Queue(maxsize=capacity)  # type: queue.Queue
        self._thread = None  # type: Optional[threading.Thread]
        self.dropped = 0
        self.delivered = 0
        self.failures = {}  # type: Dict[str, int]

    def add(self, sink: ResultSink) -> None:
        self._sinks.append(sink)

    def offer(self, result: InferenceResult) -> bool:
        """Queue ``result`` without blocking; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(result)
            return True
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.warning("result queue full: %d results dropped so far", self.dropped)
            return False

    def pending(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sinks", daemon=True)
        self._thread.start()

    def _deliver(self, result: InferenceResult) -> None:
        for sink in self._sinks:
            try:
                sink.handle(result)
            except Exception:  # noqa: BLE001 - one broken sink must not starve the others
                self.failures[sink.name] = self.failures.get(sink.name, 0) + 1
                logger.exception("sink %s failed on a result of stream %s", sink.name,
                                 result.stream_id)  # fmt: skip
        self.delivered += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                result = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            self._deliver(result)

    def drain(self, timeout: float) -> int:
        """After the stop event: deliver what is still queued, for at most ``timeout`` s.

        Returns how many results were left undelivered.
        """
        if self._thread is not None:
            self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                result = self._queue.get_nowait()
            except queue.Empty:
                break
            self._deliver(result)
        left = self._queue.qsize()
        if left:
            logger.warning("shutdown: %d results not delivered within %.1f s", left, timeout)
        for sink in self._sinks:
            try:
                sink.close()
            except Exception:  # noqa: BLE001 - shutdown goes on whatever one sink does
                logger.exception("sink %s failed to close", sink.name)
        return left

    @property
    def sinks(self) -> List[ResultSink]:
        return list(self._sinks)
