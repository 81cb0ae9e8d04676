"""The daemon's loaded models, one slot per model name: its config and its inference worker.

Everything that changes which task a model name runs goes through here:
:meth:`ModelSlots.replace` swaps a loaded task into a running worker in one step
and hands the old one back, for SIGHUP reloads (``edged.daemon``) and for model
updates (whose rollback is the same call with the old task). The streams attached
to the worker keep running: frames waiting in their slots go to the new task, and
batches already in flight finish on the old one, which ``replace`` waits for, so
the caller may close the old task's backend as soon as it returns.

Readers on other threads (metrics, MQTT) get frozen :class:`ModelView` values.
"""

import threading
from typing import Any, ContextManager, Dict, List, NamedTuple, Optional

from ..config import ModelConfig
from ..errors import EdgedError
from ..tasks.base import Task
from .worker import InferenceWorker

#: How long :meth:`ModelSlots.replace` waits for the batches in flight on the old task
#: (a batch is one inference: milliseconds; a hung model is the watchdog's to handle).
RELEASE_TIMEOUT_S = 30.0


class ModelSlotError(EdgedError):
    """No model of that name is loaded, or its old task is still busy."""


class ModelView(NamedTuple):
    """What a loaded model is, as metrics, MQTT payloads and status lines show it."""

    name: str
    kind: str  # the task: detection, classification
    version: str
    sha256: str
    precision: str  # the backend's (TensorRT fp16/int8), else the model's own fp32
    backend: str
    config: ModelConfig


class _Slot(NamedTuple):
    config: ModelConfig
    worker: InferenceWorker


def model_view(name: str, task: Task, config: Optional[ModelConfig] = None) -> ModelView:
    """The frozen description of ``task`` loaded as model ``name`` (``config``: the slot's)."""
    config = config if config is not None else task.config
    backend = task.backend
    return ModelView(
        name=name,
        kind=task.kind or "unknown",
        version=getattr(config, "version", "") or "",
        sha256=task.model_sha256 or "",
        precision=str(getattr(backend, "precision", "") or "fp32"),
        backend=getattr(backend, "name", "") or "unknown",
        config=config,
    )


class ModelSlots:
    """Model name -> (config, running worker); thread-safe."""

    def __init__(self, lock: Optional[ContextManager[Any]] = None) -> None:
        # the daemon passes its state lock, so that a snapshot reads streams and models at once
        self._lock = lock if lock is not None else threading.RLock()
        self._slots = {}  # type: Dict[str, _Slot]

    def add(self, name: str, config: ModelConfig, worker: InferenceWorker) -> None:
        """Hold a started worker for model ``name`` (one that is not held yet)."""
        with self._lock:
            if name in self._slots:
                raise ModelSlotError(f"model {name} already has a slot")
            self._slots[name] = _Slot(config, worker)

    def remove(self, name: str) -> InferenceWorker:
        """Take model ``name``'s worker out (the caller stops it and closes its task)."""
        with self._lock:
            return self._take(name).worker

    def _take(self, name: str) -> _Slot:
        slot = self._slots.pop(name, None)
        if slot is None:
            raise ModelSlotError(f"no model named {name!r} is loaded")
        return slot

    def replace(
        self,
        name: str,
        task: Task,
        config: Optional[ModelConfig] = None,
        timeout: float = RELEASE_TIMEOUT_S,
    ) -> Task:
        """Make ``task`` model ``name``'s task, atomically; return the old task once no batch
        uses it any more (the caller closes it, or passes it to ``replace`` again to roll back).

        ``config`` is the model's new config (default: ``task.config``). The worker's next
        batch runs ``task``; its streams stay attached, and results name the new task's kind
        (a detector replaced by a classifier publishes classifications from then on).
        Raises :class:`ModelSlotError` if ``name`` is not loaded, or if a batch still runs the
        old task after ``timeout`` s (``task`` stays in place; the old one must not be closed).
        """
        with self._lock:
            slot = self._slots.get(name)
            if slot is None:
                raise ModelSlotError(f"no model named {name!r} is loaded")
            old = slot.worker.swap_task(task)
            self._slots[name] = _Slot(config if config is not None else task.config, slot.worker)
        if old is not task and not slot.worker.wait_released(old, timeout):
            raise ModelSlotError(
                f"model {name}: the replaced task still runs a batch after {timeout:.0f} s"
            )
        return old

    def worker(self, name: str) -> Optional[InferenceWorker]:
        with self._lock:
            slot = self._slots.get(name)
        return slot.worker if slot is not None else None

    def config(self, name: str) -> Optional[ModelConfig]:
        with self._lock:
            slot = self._slots.get(name)
        return slot.config if slot is not None else None

    def task(self, name: str) -> Optional[Task]:
        worker = self.worker(name)
        return worker.task if worker is not None else None

    def workers(self) -> Dict[str, InferenceWorker]:
        """A copy: name -> worker."""
        with self._lock:
            return {name: slot.worker for name, slot in self._slots.items()}

    def names(self) -> List[str]:
        with self._lock:
            return sorted(self._slots)

    def view(self, name: str) -> Optional[ModelView]:
        with self._lock:
            slot = self._slots.get(name)
            if slot is None:
                return None
            return model_view(name, slot.worker.task, slot.config)

    def views(self) -> Dict[str, ModelView]:
        """Every loaded model, read in one step (a replace is either in all of it or not)."""
        with self._lock:
            return {n: model_view(n, s.worker.task, s.config) for n, s in self._slots.items()}

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._slots

    def __len__(self) -> int:
        with self._lock:
            return len(self._slots)
