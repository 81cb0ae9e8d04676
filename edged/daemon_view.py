"""The daemon's read model: frozen views of its streams, models and workers.

:meth:`edged.daemon.Daemon.snapshot` returns one :class:`DaemonSnapshot`, taken
in one step while no reload changes the daemon, so its parts agree (every
stream's model is among its models and workers, and the config is the one they
run). The metrics collector, the MQTT control and the systemd status and
summary lines read it -- from any thread -- instead of the daemon's internals.
:class:`DaemonReader` is what they may use of a daemon.
"""

import types
from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple

from typing_extensions import Protocol

from .config import Config, StreamConfig
from .pipeline.results import InferenceResult
from .pipeline.sinks import LatestResults, SinkDispatcher
from .pipeline.slots import ModelView
from .pipeline.worker import InferenceWorker
from .sources.frame import Frame
from .sources.supervisor import SourceStatus

__all__ = [
    "DaemonReader",
    "DaemonSnapshot",
    "ModelView",
    "ResultQueueView",
    "StreamView",
    "WorkerView",
    "empty_snapshot",
    "frozen_map",
    "take_snapshot",
]


class StreamView(NamedTuple):
    """One running stream."""

    stream_id: str
    model: str
    config: StreamConfig
    status: SourceStatus  # capture: state, fps, drops, reconnects...
    inferred: int  # frames its model has inferred
    last_result: Optional[InferenceResult]  # the newest result handed to the outputs
    last_inferred: Optional[Tuple[Frame, InferenceResult]]  # newest frame with its result


class WorkerView(NamedTuple):
    """The inference worker of one model."""

    model: str
    streams: Tuple[str, ...]
    batches: int
    errors: int
    busy_since: Optional[float]  # start of the oldest step running (monotonic), None: idle
    inferring: bool  # an inference call is running now


class ResultQueueView(NamedTuple):
    """The bounded queue between inference and the outputs (sinks)."""

    capacity: int
    depth: int
    dropped: int
    delivered: int
    failures: Mapping[str, int]  # per sink, every sink listed


class DaemonSnapshot(NamedTuple):
    """Everything the readers show, at one moment. Mappings are read-only."""

    config: Optional[Config]  # None before start-up loaded it
    streams: Mapping[str, StreamView]
    # what runs: after a model update swapped a task in, models[name].config is the update's
    # while config.models[name] is still the file's
    models: Mapping[str, ModelView]
    workers: Mapping[str, WorkerView]
    results: Optional[ResultQueueView]  # None before the sinks started
    reloads_applied: int
    reloads_rejected: int
    last_reload_error: Optional[str]


def frozen_map(items: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only mapping over a private copy of ``items``."""
    return types.MappingProxyType(dict(items))


def empty_snapshot(config: Optional[Config] = None) -> DaemonSnapshot:
    """A daemon with nothing running (yet)."""
    empty = frozen_map({})
    return DaemonSnapshot(config, empty, empty, empty, None, 0, 0, None)


class StatsSource(Protocol):
    """A part that counts for the metrics (the MQTT service)."""

    def stats(self) -> Dict[str, Any]: ...


class EngineStates(Protocol):
    """The TensorRT engine manager as readers see it."""

    def stats(self) -> Dict[str, Any]: ...

    def states(self) -> Dict[str, Dict[str, Any]]: ...


class DaemonReader(Protocol):
    """What the metrics collector and the MQTT control use of a daemon."""

    @property
    def mqtt(self) -> Optional[StatsSource]:
        """None while MQTT is off."""

    @property
    def engines(self) -> Optional[EngineStates]:
        """None until start-up made the engine manager."""

    def snapshot(self) -> DaemonSnapshot: ...

    def model_view(self, name: str) -> Optional[ModelView]: ...

    def request_reload(self, *_: Any) -> None: ...


def take_snapshot(
    config: Optional[Config],
    streams: Mapping[str, Any],  # stream id -> edged.daemon_streams.RunningStream
    workers: Mapping[str, InferenceWorker],
    models: Mapping[str, ModelView],
    latest: Optional[LatestResults],
    dispatcher: Optional[SinkDispatcher],
    reloads: Mapping[str, int],
    last_reload_error: Optional[str],
) -> DaemonSnapshot:
    """Freeze what the daemon holds, read in one step by :meth:`Daemon.snapshot`."""
    stream_views = {}  # type: Dict[str, StreamView]
    for stream_id, running in streams.items():
        worker = workers.get(running.model)
        frames = worker.stats.frames if worker is not None else {}
        held = worker.latest.get(stream_id) if worker is not None else None
        stream_views[stream_id] = StreamView(
            stream_id=stream_id,
            model=running.model,
            config=running.config,
            status=running.supervisor.status(),
            inferred=frames.get(stream_id, 0),
            last_result=latest.get(stream_id) if latest is not None else None,
            last_inferred=held,
        )
    worker_views = {}  # type: Dict[str, WorkerView]
    for name, worker in workers.items():
        stats = worker.stats
        worker_views[name] = WorkerView(
            model=name,
            # the streams of this snapshot: a stream being stopped is in neither
            streams=tuple(sorted(s for s, v in stream_views.items() if v.model == name)),
            batches=stats.batches,
            errors=stats.errors,
            busy_since=stats.busy_since,
            inferring=stats.step_started.get("inference") is not None,
        )
    return DaemonSnapshot(
        config=config,
        streams=frozen_map(stream_views),
        models=frozen_map(models),
        workers=frozen_map(worker_views),
        results=_results_view(dispatcher, config),
        reloads_applied=reloads.get("applied", 0),
        reloads_rejected=reloads.get("rejected", 0),
        last_reload_error=last_reload_error,
    )


def _results_view(
    dispatcher: Optional[SinkDispatcher], config: Optional[Config]
) -> Optional[ResultQueueView]:
    if dispatcher is None or config is None:
        return None
    failures = dict(dispatcher.failures)
    for sink in dispatcher.sinks:
        failures.setdefault(sink.name, 0)  # every output has a series from the start
    return ResultQueueView(
        capacity=config.pipeline.result_queue,
        depth=dispatcher.pending(),
        dropped=dispatcher.dropped,
        delivered=dispatcher.delivered,
        failures=frozen_map(failures),
    )
