"""The daemon's running streams: one capture supervisor each, feeding its model's worker.

:class:`RunningStreams` starts a stream (source -> supervisor -> the worker's
latest-frame slot, plus a watchdog probe) and stops it again; it holds no
policy of its own: which streams run is the daemon's reload plan.
"""

import dataclasses
import logging
import threading
from typing import Any, Callable, ContextManager, Dict, List, NamedTuple, Optional

from .config import StreamConfig
from .pipeline.worker import InferenceWorker
from .sources import SourceSupervisor, SupervisionPolicy
from .sources.spec import SourceSpec
from .sources.supervisor import CONNECTING, STREAMING
from .watchdog import ProgressWatchdog

logger = logging.getLogger(__name__)

#: Slack added to a stream's own timeouts before its capture thread counts as wedged.
CAPTURE_SLACK_S = 5.0


class RunningStream(NamedTuple):
    config: StreamConfig
    supervisor: SourceSupervisor

    @property
    def model(self) -> str:
        return self.config.model


class RunningStreams:
    """Stream id -> :class:`RunningStream`. Starting and stopping happen on the main thread;
    :meth:`items` may be read from any thread."""

    def __init__(
        self,
        stop_event: threading.Event,
        source_builder: Callable[[Any], Any],
        clock: Callable[[], float],
        join_timeout_s: float,
        lock: Optional[ContextManager[Any]] = None,
    ) -> None:
        self._stop_event = stop_event
        self._source_builder = source_builder
        self._clock = clock
        self._join_timeout_s = join_timeout_s
        # the daemon's state lock: a snapshot sees a stream and its model together or neither
        self._lock = lock if lock is not None else threading.RLock()
        self._streams: Dict[str, RunningStream] = {}
        self.watchdog: Optional[ProgressWatchdog] = None

    def start(self, stream: StreamConfig, worker: InferenceWorker) -> RunningStream:
        """Open ``stream``'s source under a supervisor that feeds ``worker``."""
        policy = SupervisionPolicy(
            stall_timeout_s=stream.stall_timeout_s,
            frozen_timeout_s=stream.frozen_timeout_s,
            backoff_initial_s=stream.backoff_initial_s,
            backoff_max_s=stream.backoff_max_s,
            join_timeout_s=self._join_timeout_s,
        )
        supervisor = SourceSupervisor(
            stream.name,
            self._source_builder(source_for(stream.source, worker)),
            self._stop_event,
            policy,
            slot=worker.attach(stream.name),
            live=stream.source.is_live,
        )
        supervisor.start()
        running = RunningStream(stream, supervisor)
        with self._lock:
            self._streams[stream.name] = running
        if self.watchdog is not None:
            spec = stream.source
            max_stale = (stream.stall_timeout_s + spec.open_timeout_s + 2 * spec.read_timeout_s
                         + CAPTURE_SLACK_S)  # fmt: skip
            self.watchdog.register("capture:" + stream.name,
                                   capture_probe(supervisor, self._clock), max_stale)  # fmt: skip
        logger.info("stream %s started: %s -> model %s", stream.name, stream.source.display,
                    stream.model)  # fmt: skip
        return running

    def stop(self, stream_id: str, worker: Optional[InferenceWorker]) -> None:
        """Stop the capture of ``stream_id`` and detach it from ``worker`` (its model's)."""
        with self._lock:
            stream = self._streams.pop(stream_id)
        if self.watchdog is not None:
            self.watchdog.unregister("capture:" + stream_id)
        stream.supervisor.stop(self._join_timeout_s)
        if worker is not None:
            worker.detach(stream_id)

    def get(self, stream_id: str) -> Optional[RunningStream]:
        with self._lock:
            return self._streams.get(stream_id)

    def items(self) -> Dict[str, RunningStream]:
        """A copy: stream id -> running stream."""
        with self._lock:
            return dict(self._streams)

    def ids(self) -> List[str]:
        with self._lock:
            return sorted(self._streams)

    def __contains__(self, stream_id: object) -> bool:
        with self._lock:
            return stream_id in self._streams

    def __len__(self) -> int:
        with self._lock:
            return len(self._streams)


def source_for(spec: SourceSpec, worker: InferenceWorker) -> SourceSpec:
    """``spec`` as ``worker`` wants its frames: in the format the GPU reads (``gpu_frames``)
    when its model pre-processes on CUDA, else BGR.

    The rule, one stream feeding one model: the worker's pre-processor when the stream
    starts decides. Everything else that reads the frames on the CPU (a snapshot, a task
    swapped in by a reload that pre-processes on the CPU) converts them to BGR itself
    (:meth:`edged.sources.frame.Frame.bgr`), so a frame in the GPU's format is always
    correct, and only its CPU cost moves.
    """
    if getattr(worker.preprocessor, "name", "cpu") != "cuda":
        return spec
    return dataclasses.replace(spec, gpu_frames=True)


def capture_probe(supervisor: SourceSupervisor, clock: Callable[[], float]) -> Callable[[], float]:
    """A healthy capture thread changes state within its own timeouts; one that does not is wedged.

    Streaming: progress is the last frame. Connecting: the state's start (opening is
    bounded by the open timeout). Stalled, backoff, ended: the supervisor is handling
    an outage or is done, which is not a hang (a dead camera must not restart edged).
    """

    def probe() -> float:
        status = supervisor.status()
        now = clock()
        if status.state == STREAMING and status.last_frame_age_s is not None:
            return now - status.last_frame_age_s
        if status.state == CONNECTING:
            return now - status.state_age_s
        return now

    return probe
