"""Starting and stopping the inference worker of each loaded model, held in :class:`ModelSlots`.

A worker starts with its model's task and a watchdog probe; stopping it waits
for its threads and only then closes the task's backend (never free a backend an
inference may still be using). Swapping a task into a running worker is
:meth:`ModelSlots.replace`'s.
"""

import logging
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence

from . import sdnotify
from .config import ModelConfig, PipelineConfig
from .pipeline import preprocessors
from .pipeline.results import InferenceResult
from .pipeline.slots import ModelSlots
from .pipeline.worker import InferenceWorker
from .tasks.base import Task
from .watchdog import ProgressWatchdog

logger = logging.getLogger(__name__)

#: systemd start-timeout headroom requested while models load.
MODEL_LOAD_EXTEND_S = 120.0


class ModelWorkers:
    """The workers of ``slots``: :meth:`start` one per model, :meth:`stop` it again."""

    def __init__(
        self,
        slots: ModelSlots,
        stop_event: threading.Event,
        clock: Callable[[], float],
        join_timeout_s: float,
    ) -> None:
        self.slots = slots
        self._stop_event = stop_event
        self._clock = clock
        self._join_timeout_s = join_timeout_s
        self.watchdog: Optional[ProgressWatchdog] = None

    def start(
        self,
        name: str,
        task: Task,
        model: ModelConfig,
        pipeline: PipelineConfig,
        emit: Callable[[InferenceResult], object],
    ) -> InferenceWorker:
        def preprocessor(for_task: Task) -> Any:  # pipeline.preprocess, per task's contract
            return preprocessors.for_task(pipeline.preprocess, for_task, pipeline.max_batch, name)

        worker = InferenceWorker(
            name, task, emit, self._stop_event, pipeline.max_batch, overlap=pipeline.overlap,
            preprocessor=preprocessor(task), preprocessor_factory=preprocessor,
        )  # fmt: skip
        worker.start()
        self.slots.add(name, model, worker)
        if self.watchdog is not None:
            self.watchdog.register("inference:" + name, inference_probe(worker, self._clock),
                                   pipeline.inference_timeout_s)  # fmt: skip
        return worker

    def stop(self, name: str) -> None:
        worker = self.slots.remove(name)
        if self.watchdog is not None:
            self.watchdog.unregister("inference:" + name)
        worker.stop()
        if not worker.join(self._join_timeout_s):
            logger.warning("model %s: inference still running after %.0f s; left behind",
                           name, self._join_timeout_s)  # fmt: skip
            return  # never free a backend an inference may still be using
        worker.task.backend.close()

    def stop_all(self) -> None:
        for name in self.slots.names():
            self.stop(name)

    def names(self) -> List[str]:
        return self.slots.names()


def load_tasks(
    loader: Callable[[ModelConfig], Task],
    models: Sequence[ModelConfig],
    notifier: sdnotify.Notifier,
    total: Optional[int] = None,
) -> Dict[str, Task]:
    """Load ``models`` in turn, all or nothing, extending systemd's start timeout meanwhile
    (``total``: how many the status line says are loading, default ``len(models)``)."""
    tasks: Dict[str, Task] = {}
    try:
        for model in models:
            status = f"loading model {model.name} ({total or len(models)} to load)"
            with sdnotify.TimeoutExtender(notifier, status, extend_s=MODEL_LOAD_EXTEND_S):
                tasks[model.name] = loader(model)
    except BaseException:
        for task in tasks.values():
            task.backend.close()
        raise
    return tasks


def inference_probe(worker: InferenceWorker, clock: Callable[[], float]) -> Callable[[], float]:
    """Fresh while idle; while a step of the worker runs, the oldest start (a hung call goes
    stale: the model, or a post-processing the model then waits on)."""

    def probe() -> float:
        busy = worker.stats.busy_since
        return busy if busy is not None else clock()

    return probe
