"""One inference worker per model: latest frames of its streams -> task -> results.

The worker thread (``infer-<model>``) waits on one condition shared by the
latest-frame slots of every stream that uses its model, takes the newest
frame of up to ``max_batch`` streams (round-robin, so one busy camera cannot
starve another), runs pre-process -> backend -> post-process, and hands each
:class:`InferenceResult` to a non-blocking ``emit`` callable (the sink
dispatcher, which never blocks inference). Frames that arrive while it is
busy replace older ones in the slots and are counted there as drops: latency
stays bounded when inference is slower than the cameras (issue 4 item 3).
"""

import logging
import threading
import time
from typing import Callable, List

from ..sources.frame import Frame
from ..sources.slot import LatestSlot
from ..tasks.base import Task
from .results import InferenceResult

logger = logging.getLogger(__name__)

#: How long the worker waits for a frame before re-checking the stop event.
WAIT_S = 0.2


class WorkerStats:
    """Counters of one worker; read from other threads without a lock (ints and floats)."""

    def __init__(self) -> None:
        self.frames = {}  # type: Dict[str, int]  # per stream
        self.batches = 0
        self.errors = 0
        self.last_progress = time.monotonic()  # last completed inference (or start)
        self.busy_since = None  # type: Optional[float]  # inference in progress since
        self.last_latency_ms = {}  # type: Dict[str, float]


class InferenceWorker:
    """Runs one :class:`Task` for the streams attached to it."""

    def __init__(
        self,
        model_name: str,
        task: Task,
        emit: Callable[[InferenceResult], None],
        stop: threading.Event,
        max_batch: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model_name = model_name
        self.task = task
        self._emit = emit
        self._stop = stop  # the daemon's shared stop event
        self._local_stop = threading.Event()  # this worker alone (a model replaced by a reload)
        self._max_batch = max(1, max_batch)
        self._clock = clock
        self._condition = threading.Condition()
        self._slots = {}  # type: Dict[str, LatestSlot[Frame]]
        self._order = []  # type: List[str]
        self._next = 0
        self._thread = None  # type: Optional[threading.Thread]
        self.stats = WorkerStats()
        # newest (frame, result) per stream: the MQTT snapshot command draws one (issue 5)
        self.latest = {}  # type: Dict[str, Tuple[Frame, InferenceResult]]

    # -- streams --------------------------------------------------------------------------

    def attach(self, stream_id: str, capacity: int = 1) -> "LatestSlot[Frame]":
        """A new latest-frame slot for ``stream_id`` that wakes this worker on every put."""
        slot = LatestSlot(capacity, condition=self._condition)  # type: LatestSlot[Frame]
        with self._condition:
            self._slots[stream_id] = slot
            self._order = sorted(self._slots)
        return slot

    def detach(self, stream_id: str) -> None:
        with self._condition:
            self._slots.pop(stream_id, None)
            self._order = sorted(self._slots)
            self.stats.frames.pop(stream_id, None)
            self.latest.pop(stream_id, None)

    @property
    def streams(self) -> List[str]:
        with self._condition:
            return list(self._order)

    # -- thread ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"infer-{self.model_name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Ask this worker alone to stop after its current batch (see :meth:`join`)."""
        self._local_stop.set()

    def _stopping(self) -> bool:
        return self._stop.is_set() or self._local_stop.is_set()

    def join(self, timeout: float) -> bool:
        """Wait for the thread to end (after a stop); False if it did not in time."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _collect(self) -> List[Frame]:
        """Newest frames of up to max_batch streams, waiting up to WAIT_S for the first."""
        with self._condition:
            if not any(len(s) for s in self._slots.values()):
                self._condition.wait(WAIT_S)
            order = self._order
            if not order:
                return []
            start = self._next % len(order)
            rotated = order[start:] + order[:start]
            frames = []  # type: List[Frame]
            for stream_id in rotated:
                slot = self._slots[stream_id]
                # the slots share our condition (an RLock): get_nowait re-enters it
                frame = slot.get_nowait()
                if frame is not None:
                    frames.append(frame)
                    if len(frames) == self._max_batch:
                        break
            self._next = start + 1
            return frames

    def _run(self) -> None:
        logger.info("inference worker for model %s started", self.model_name)
        while not self._stopping():
            frames = self._collect()
            if not frames:
                self.stats.last_progress = self._clock()  # idle is not hung
                continue
            try:
                self.process(frames)
            except Exception:  # noqa: BLE001 - top of a worker loop: log, count, go on
                self.stats.errors += 1
                logger.exception("inference failed on model %s; frames dropped", self.model_name)
            finally:
                self.stats.busy_since = None
        logger.info("inference worker for model %s stopped", self.model_name)

    def process(self, frames: List[Frame]) -> List[InferenceResult]:
        """Run one batch of frames through the task and emit one result per frame."""
        clock = self._clock
        started = clock()
        self.stats.busy_since = started
        tensors = [self.task.preprocess(f.image) for f in frames]
        preprocessed = clock()
        outputs = self.task.infer(tensors)
        inferred = clock()
        items = [self.task.postprocess(o, f.source_size) for o, f in zip(outputs, frames)]
        done = clock()
        n = float(len(frames))
        results = []
        for frame, found in zip(frames, items):
            latency = {
                "queue": 1000.0 * (started - frame.captured_mono),
                "preprocess": 1000.0 * (preprocessed - started) / n,
                "inference": 1000.0 * (inferred - preprocessed) / n,
                "postprocess": 1000.0 * (done - inferred) / n,
                "total": 1000.0 * (done - frame.captured_mono),
            }
            result = InferenceResult(
                stream_id=frame.stream_id,
                seq=frame.seq,
                captured_monotonic=frame.captured_mono,
                captured_wall=frame.captured_wall,
                frame_size=frame.source_size,
                model=self.model_name,
                task=self.task.kind,
                items=found,
                latency_ms=latency,
            )
            self.stats.frames[frame.stream_id] = self.stats.frames.get(frame.stream_id, 0) + 1
            self.stats.last_latency_ms = latency
            results.append(result)
            self.latest[frame.stream_id] = (frame, result)  # one reference per stream
            self._emit(result)
        self.stats.batches += 1
        self.stats.last_progress = done
        return results
