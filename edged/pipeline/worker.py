"""One inference worker per model: latest frames of its streams -> task -> results.

The worker waits on one condition shared by the latest-frame slots of every
stream that uses its model, takes the newest frame of up to ``max_batch``
streams (round-robin, so one busy camera cannot starve another), runs
pre-process -> backend -> post-process, and hands each :class:`InferenceResult`
to a non-blocking ``emit`` callable (the sink dispatcher, which never blocks
inference). Frames that arrive while it is busy replace older ones in the
slots and are counted there as drops: latency stays bounded when inference is
slower than the cameras.

With ``overlap`` (the default) the three steps run on three threads
(``prep-<model>``, ``infer-<model>``, ``post-<model>``) joined by one-batch
handoffs, so the model is not idle while the CPU pre-processes the next batch
or post-processes and publishes the last one -- DeepStream's pipelining
(benchmarks/README.md compares it with ``overlap: false``). The pre-processing thread takes frames
only once the inference thread has taken the previous batch, so at most one
batch waits, and it is at most one inference old. Without ``overlap`` one
thread runs the steps in turn.

The task can be swapped while the worker runs (:meth:`InferenceWorker.swap_task`, used
by :class:`~edged.pipeline.slots.ModelSlots`): each batch takes the task current when
its pre-processing starts and keeps it through inference and post-processing, so a
batch never mixes two models' tensors, no frame waiting in a slot is lost, and the
next batch runs the new task. The worker counts the batches in flight per task, so
the caller can wait until the old task is free (:meth:`InferenceWorker.wait_released`)
before closing it.
"""

import logging
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

import numpy as np

from ..sources.frame import Frame
from ..sources.slot import LatestSlot
from ..tasks.base import Task, stack_batch
from .results import InferenceResult

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a worker thread waits for a frame or a handoff before re-checking the stop event.
WAIT_S = 0.2


STEPS = ("preprocess", "inference", "postprocess")


class Batch:
    """Frames on their way through the steps, with the step times (the worker's clock)."""

    __slots__ = ("frames", "task", "tensors", "outputs", "started", "preprocessed",
                 "infer_start", "inferred")  # fmt: skip

    def __init__(self, frames: List[Frame], task: Task, started: float) -> None:
        self.frames = frames
        self.task = task  # all three steps of a batch run the same task
        # the task's input: one N x 3 x H x W array (the CPU path's stack_batch, or a
        # pre-processor's batch in its own buffer, not copied: edged/gpu/preprocessor.py
        # HOST_RING), or a PrefilledBatch already in the backend's input buffer
        self.tensors: Any = []
        self.outputs: List[Dict[str, np.ndarray]] = []
        self.started = started
        self.preprocessed = started
        self.infer_start = started
        self.inferred = started


class WorkerStats:
    """Counters of one worker; read from other threads without a lock (ints and floats)."""

    def __init__(self) -> None:
        self.frames = {}  # type: Dict[str, int]  # per stream
        self.batches = 0
        self.errors = 0
        # frames whose model outputs held NaN or infinity: a model update's probation reads it
        self.nonfinite = 0
        # when the running call of each step began (None: not running); with overlap the
        # three run at once, and a hang in any of them stalls the others behind it
        self.step_started = dict.fromkeys(STEPS)  # type: Dict[str, Optional[float]]

    @property
    def busy_since(self) -> Optional[float]:
        """Start of the oldest step call still running, or None when idle: the watchdog's
        probe (a hung model call, or a hung post-processing that the model then waits on)."""
        started = [t for t in list(self.step_started.values()) if t is not None]
        return min(started) if started else None


class InferenceWorker:
    """Runs one :class:`Task` for the streams attached to it."""

    def __init__(
        self,
        model_name: str,
        task: Task,
        emit: Callable[[InferenceResult], object],  # SinkDispatcher.offer (never blocks)
        stop: threading.Event,
        max_batch: int = 1,
        clock: Callable[[], float] = time.monotonic,
        overlap: bool = True,
        preprocessor: Any = None,
        preprocessor_factory: Optional[Callable[[Task], Any]] = None,
    ) -> None:
        self.model_name = model_name
        self._task = task
        # guards _task and _in_flight; notified when a batch releases its task
        self._task_lock = threading.Condition()
        self._in_flight: Dict[int, int] = {}  # id(task) -> batches using it
        # edged.pipeline.preprocessors (pipeline.preprocess); None: the task's own CPU path.
        # Built for one task (its input contract): a replaced task gets its own from
        # preprocessor_factory, made and closed on the pre-processing thread, the only one that
        # uses it; join() closes the last once that thread is gone.
        self.preprocessor = preprocessor
        self._preprocessor_factory = preprocessor_factory
        self._preprocessor_task: Any = task
        # (task, pre-processor) replaced while batches of that task were in flight: a batch
        # may still read the pre-processor's buffers, so it is closed once the task is released
        self._retired: List[Tuple[Task, Any]] = []
        self._emit = emit
        self._stop = stop  # the daemon's shared stop event
        self._local_stop = threading.Event()  # this worker alone (a model replaced by a reload)
        self._max_batch = max(1, max_batch)
        self._clock = clock
        self._condition = threading.Condition()
        self._slots = {}  # type: Dict[str, LatestSlot[Frame]]
        self._order = []  # type: List[str]
        self._next = 0
        self._overlap = overlap
        # one-batch handoffs between the steps (overlap only); capacity 1 and a producer that
        # waits for room, so nothing is ever dropped between steps
        self._prepared = LatestSlot(1)  # type: LatestSlot[Batch]
        self._inferred = LatestSlot(1)  # type: LatestSlot[Batch]
        self._threads = []  # type: List[threading.Thread]
        self.stats = WorkerStats()
        # newest (frame, result) per stream: the MQTT snapshot command draws one
        self.latest: Dict[str, Tuple[Frame, InferenceResult]] = {}
        # the model's TrackingStage (edged/pipeline/tracking.py) when it tracks
        self.tracking: Optional[Any] = None

    # -- the task ----------------------------------------------------------------------------

    @property
    def task(self) -> Task:
        """The task the next batch runs."""
        with self._task_lock:
            return self._task

    def swap_task(self, task: Task) -> Task:
        """Make ``task`` the one the next batch runs; returns the previous task at once
        (batches already in flight finish with it: see :meth:`wait_released`)."""
        with self._task_lock:
            old, self._task = self._task, task
        return old

    def in_use(self, task: Task) -> int:
        """How many batches in flight run ``task``."""
        with self._task_lock:
            return self._in_flight.get(id(task), 0)

    def wait_released(self, task: Task, timeout: float) -> bool:
        """Wait until no batch in flight runs ``task``; False if one still does at ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._task_lock:
            while self._in_flight.get(id(task), 0):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._task_lock.wait(remaining)
        return True

    def _acquire_task(self) -> Task:
        with self._task_lock:
            task = self._task
            self._in_flight[id(task)] = self._in_flight.get(id(task), 0) + 1
            return task

    def _release_task(self, task: Task) -> None:
        with self._task_lock:
            left = self._in_flight.get(id(task), 0) - 1
            if left > 0:
                self._in_flight[id(task)] = left
            else:
                self._in_flight.pop(id(task), None)
            self._task_lock.notify_all()

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
        name = self.model_name
        if self._overlap:
            loops = [(self._prepare_loop, "prep-" + name), (self._infer_loop, "infer-" + name),
                     (self._finish_loop, "post-" + name)]  # fmt: skip
        else:
            loops = [(self._run, "infer-" + name)]
        self._threads = [threading.Thread(target=f, name=n, daemon=True) for f, n in loops]
        for thread in self._threads:
            thread.start()
        logger.info("inference worker for model %s started (%s)", name,
                    "pre-processing, inference and post-processing overlap" if self._overlap
                    else "one thread")  # fmt: skip

    def stop(self) -> None:
        """Ask this worker alone to stop after its current batch (see :meth:`join`)."""
        self._local_stop.set()

    def _stopping(self) -> bool:
        return self._stop.is_set() or self._local_stop.is_set()

    def join(self, timeout: float) -> bool:
        """Wait for the threads to end (after a stop); False if one did not in time."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self._threads):
            return False
        pre, self.preprocessor = self.preprocessor, None
        if pre is not None:
            pre.close()
        for _, old in self._retired:
            old.close()
        self._retired = []
        return True

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

    # -- one thread: the steps in turn --------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping():
            frames = self._collect()
            if frames:
                self._guarded(self.process, frames)
        logger.info("inference worker for model %s stopped", self.model_name)

    def process(self, frames: List[Frame]) -> List[InferenceResult]:
        """Run one batch of frames through the task and emit one result per frame."""
        return self._finish(self._infer(self._prepare(frames)))

    # -- overlap: one thread per step ---------------------------------------------------------

    def _prepare_loop(self) -> None:
        while not self._stopping():
            # take frames only when inference can take them next: the freshest we can run
            if not self._prepared.wait_for_room(WAIT_S):
                continue
            frames = self._collect()
            if not frames:
                continue
            batch = self._guarded(self._prepare, frames)
            if batch is not None:
                self._prepared.put(batch)

    def _infer_loop(self) -> None:
        while not self._stopping():
            batch = self._prepared.get(WAIT_S)
            if batch is None:
                continue
            if self._guarded(self._infer, batch) is None:
                continue
            while not self._inferred.wait_for_room(WAIT_S):
                if self._stopping():
                    return
            self._inferred.put(batch)
        logger.info("inference worker for model %s stopped", self.model_name)

    def _finish_loop(self) -> None:
        infer_thread = self._threads[1]
        while True:
            batch = self._inferred.get(WAIT_S)
            if batch is not None:
                self._guarded(self._finish, batch)
            elif self._stopping() and not infer_thread.is_alive():
                return  # a batch inferred while stopping is still delivered

    def _guarded(self, step: Callable[..., T], arg: object) -> Optional[T]:
        try:
            return step(arg)
        except Exception:  # noqa: BLE001 - top of a worker loop: log, count, go on
            self.stats.errors += 1
            logger.exception("inference failed on model %s; frames dropped", self.model_name)
            return None

    # -- the steps ------------------------------------------------------------------------------

    # Each step that raises releases the batch's task: the batch is dropped (_guarded).

    def _preprocessor_for(self, task: Task) -> Any:
        """The pre-processor for ``task`` (pre-processing thread only); None: the task's own."""
        if task is not self._preprocessor_task:
            old, self.preprocessor = self.preprocessor, None
            if old is not None:
                self._retired.append((self._preprocessor_task, old))
            self._preprocessor_task = task
            if self._preprocessor_factory is not None:
                self.preprocessor = self._preprocessor_factory(task)
        for retired in [r for r in self._retired if not self.in_use(r[0])]:
            self._retired.remove(retired)
            retired[1].close()
        return self.preprocessor

    def _prepare(self, frames: List[Frame]) -> Batch:
        batch = Batch(frames, self._acquire_task(), self._clock())
        self.stats.step_started["preprocess"] = batch.started
        try:
            pre = self._preprocessor_for(batch.task)
            if pre is not None:
                # each frame in its source's own format: the CUDA kernel reads them all
                batch.tensors = pre.run([f.image for f in frames],
                                        [f.pixel_format for f in frames])  # fmt: skip
            else:
                # stacked here, on the pre-processing thread, not by Task.infer on the
                # inference thread; and one copy of the batch in memory, not two
                batch.tensors = stack_batch([f.bgr() for f in frames], batch.task.preprocess)
        except BaseException:
            self._release_task(batch.task)
            raise
        finally:
            self.stats.step_started["preprocess"] = None
        batch.preprocessed = self._clock()
        return batch

    def _infer(self, batch: Batch) -> Batch:
        batch.infer_start = self._clock()
        self.stats.step_started["inference"] = batch.infer_start
        try:
            batch.outputs = batch.task.infer(batch.tensors)
        except BaseException:
            self._release_task(batch.task)
            raise
        finally:
            self.stats.step_started["inference"] = None
        self.stats.nonfinite += sum(1 for out in batch.outputs if not _finite(out))
        batch.inferred = self._clock()
        batch.tensors = []  # the input buffers can go before post-processing
        return batch

    def _finish(self, batch: Batch) -> List[InferenceResult]:
        frames = batch.frames
        task = batch.task
        post_start = self.stats.step_started["postprocess"] = self._clock()
        try:
            items = [task.postprocess(o, f.source_size) for o, f in zip(batch.outputs, frames)]
        finally:
            self.stats.step_started["postprocess"] = None
            self._release_task(task)  # the results below no longer need the model
        done = self._clock()
        n = float(len(frames))
        steps = {
            "preprocess": 1000.0 * (batch.preprocessed - batch.started) / n,
            "inference": 1000.0 * (batch.inferred - batch.infer_start) / n,
            "postprocess": 1000.0 * (done - post_start) / n,
        }
        results = []
        for frame, found in zip(frames, items):
            total = 1000.0 * (done - frame.captured_mono)
            latency = dict(steps)
            # waiting in the slot and between the steps: what the steps do not explain
            latency["queue"] = max(0.0, total - sum(steps.values()))
            latency["total"] = total
            result = InferenceResult(
                stream_id=frame.stream_id,
                seq=frame.seq,
                captured_monotonic=frame.captured_mono,
                captured_wall=frame.captured_wall,
                frame_size=frame.source_size,
                model=self.model_name,
                task=task.kind,  # a detector swapped for a classifier: per batch
                items=found,
                latency_ms=latency,
            )
            if self.tracking is not None:
                result = self.tracking.apply(frame, result)
            results.append(result)
            # a stream detached while its frame was in flight is not brought back
            if frame.stream_id in self._slots:
                self.stats.frames[frame.stream_id] = self.stats.frames.get(frame.stream_id, 0) + 1
                self.latest[frame.stream_id] = (frame, result)  # one reference per stream
            self._emit(result)
        self.stats.batches += 1
        return results


def _finite(outputs: Dict[str, np.ndarray]) -> bool:
    """No NaN or infinity in one frame's outputs (float outputs only)."""
    return all(bool(np.isfinite(v).all()) for v in outputs.values() if v.dtype.kind == "f")
