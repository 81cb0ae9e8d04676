"""The edged daemon: config -> models -> inference workers -> streams, supervised.

Start-up runs :data:`STARTUP_STEPS` in order and shutdown undoes them in
reverse. Signal handlers only set events: SIGTERM/SIGINT stop the daemon
(capture stops, in-flight results drain within ``pipeline.drain_timeout_s``,
exit 0); SIGHUP reloads the config on the main thread as
:func:`~edged.reload_plan.plan_reload` says -- streams whose config changed
restart, a changed model is replaced in its slot while its streams run on
(:class:`~edged.pipeline.slots.ModelSlots`), an invalid new config is rejected
with one log line while the old one stays. Other threads read :meth:`Daemon.snapshot`.

systemd: ``READY=1`` once models are loaded and streams started;
``EXTEND_TIMEOUT_USEC`` while models load; ``STATUS=`` a person can read;
``WATCHDOG=1`` only while every capture and inference progresses
(:class:`~edged.watchdog.ProgressWatchdog`).
"""

import logging
import signal
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from . import sdnotify
from .config import Config, ModelConfig, StreamConfig, check_reloadable, load_config
from .daemon_models import ModelWorkers, load_tasks
from .daemon_report import StreamSummaries, status_line
from .daemon_services import make_engines, make_watchdog, start_outputs
from .daemon_streams import RunningStreams
from .daemon_tracking import TrackingStages
from .daemon_view import DaemonSnapshot, ModelView, take_snapshot
from .errors import EdgedError
from .metrics import MetricsService
from .pipeline.sinks import LatestResults, ResultSink, SinkDispatcher
from .pipeline.slots import ModelSlotError, ModelSlots
from .reload_plan import ReloadPlan, models_needed, plan_reload
from .sources import build_source
from .tasks.base import Task
from .tasks.loader import load_task
from .update.wiring import start_updates
from .watchdog import ProgressWatchdog

if TYPE_CHECKING:  # imported when needed: engines at start-up, MQTT when configured
    from .engine.manager import EngineManager
    from .mqtt.service import MqttService

logger = logging.getLogger(__name__)

STARTUP_STEPS = (
    "load config",
    "start mqtt",
    "start result sinks",
    "start metrics server",
    "load models and start inference workers",
    "start streams",
    "start model updates",
    "notify ready",
    "start watchdog",
)

#: How long shutdown waits for each capture or inference thread.
SHUTDOWN_JOIN_S = 5.0


class Daemon:
    """One edged process. Use :meth:`run` from the main thread, or :meth:`start` /
    :meth:`serve_once` / :meth:`shutdown` step by step in tests."""

    def __init__(
        self,
        config_path: str,
        notifier: Optional[sdnotify.Notifier] = None,
        stop_event: Optional[threading.Event] = None,
        sinks: Optional[List[ResultSink]] = None,
        task_loader: Optional[Callable[[ModelConfig], Task]] = None,
        engines: "Optional[EngineManager]" = None,
        source_builder: Callable[[Any], Any] = build_source,
        watchdog_interval_s: Optional[float] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config_path = config_path
        self.notifier = notifier if notifier is not None else sdnotify.from_environment()
        self.stop_event = stop_event if stop_event is not None else threading.Event()
        self._reload = threading.Event()
        self._wake = threading.Event()
        # default: load_task with this daemon's engine manager (TensorRT engines)
        self._task_loader = task_loader or (lambda model: load_task(model, self.engines))
        self.engines = engines  # made at start-up unless given
        self._watchdog_interval_s = (
            watchdog_interval_s if watchdog_interval_s is not None else sdnotify.watchdog_interval()
        )
        self._clock = clock
        self.latest = LatestResults()
        self._extra_sinks = list(sinks or [])
        self.config: Optional[Config] = None
        # held while the set of running streams and models changes; snapshot() reads under it
        self._state = threading.RLock()
        self.models = ModelSlots(self._state)  # replace(): reloads and model updates
        self.workers = ModelWorkers(self.models, self.stop_event, clock, SHUTDOWN_JOIN_S)
        self.streams = RunningStreams(self.stop_event, source_builder, clock, SHUTDOWN_JOIN_S,
                                      self._state)  # fmt: skip
        self._summaries = StreamSummaries()
        self.dispatcher: Optional[SinkDispatcher] = None
        self.watchdog: Optional[ProgressWatchdog] = None
        self.metrics: Optional[MetricsService] = None
        self.mqtt: Optional[MqttService] = None
        self.updates: Optional[Any] = None  # edged.update.wiring.Updates when update.enabled
        self.tracking = TrackingStages()  # edged/daemon_tracking.py
        self._undo: List[Tuple[str, Callable[[], object]]] = []
        self.reloads = {"applied": 0, "rejected": 0}
        self.last_reload_error: Optional[str] = None

    # -- signals (handlers only set events) ----------------------------------------------

    def request_stop(self, *_: Any) -> None:
        self.stop_event.set()
        self._wake.set()

    def request_reload(self, *_: Any) -> None:
        self._reload.set()
        self._wake.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)

    # -- start-up and shutdown ------------------------------------------------------------

    def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT, shut down; returns the exit code (0)."""
        from .engine.errors import EngineCancelled  # local, as EngineManager in _start

        self.install_signal_handlers()
        try:
            try:
                self.start()
            except EngineCancelled:
                if not self.stop_event.is_set():
                    raise
                # SIGTERM while an engine built at start-up: the build was stopped, not failed
                logger.info("stopped during start-up: engine build cancelled")
                return 0
            while not self.stop_event.is_set():
                self.serve_once()
        finally:
            self.shutdown()
        return 0

    def start(self) -> None:
        """Run :data:`STARTUP_STEPS`; on an error, what was started is undone and it re-raises."""
        try:
            self._start()
        except BaseException:
            self.shutdown()
            raise

    def _start(self) -> None:
        logger.info("start-up: %s", ", ".join(STARTUP_STEPS))
        self.config = load_config(self.config_path)
        _apply_log_level(self.config.log_level)
        start_outputs(self)  # MQTT, result sinks, metrics (edged/daemon_services.py)

        self.watchdog = make_watchdog(
            self.notifier, self.stop_event, self._watchdog_interval_s, self.status_line
        )
        self.streams.watchdog = self.workers.watchdog = self.watchdog
        if self.engines is None:
            self.engines = make_engines(self.config, self.notifier, self.stop_event)
        self._undo.append(("cancel engine builds", self.engines.cancel_all))
        self._undo.append(("stop inference workers", self.workers.stop_all))
        needed = models_needed(self.config)
        for name in sorted(needed):  # one at a time: a worker starts before the next loads
            model = self.config.models[name]
            tasks = load_tasks(self._task_loader, [model], self.notifier, len(needed))
            self._start_worker(name, tasks[name], model)
        for name in sorted(set(self.config.models) - needed):
            logger.info("model %s is not used by any enabled stream: not loaded", name)

        self._undo.append(("stop streams", self._stop_all_streams))
        for _, stream in sorted(self.config.streams.items()):
            if stream.enabled:
                self._start_stream(stream)
        if not self.streams:
            logger.warning("no enabled streams in %s: nothing to do until a reload adds one",
                           self.config_path)  # fmt: skip

        self.updates = start_updates(self.config, self)  # after the models: it may swap one
        if self.updates is not None:
            self._undo.append(("stop model updates", self.updates.stop))
        self.notifier.ready(self.status_line())
        self._undo.append(("notify stopping", lambda: self.notifier.stopping("stopping")))
        self.watchdog.start()
        self._undo.append(("stop watchdog", self._join_watchdog))
        logger.info("edged ready: %d models, %d streams", len(self.models), len(self.streams))

    def shutdown(self) -> None:
        """Undo the start-up steps that ran, in reverse. Safe to call more than once."""
        self.stop_event.set()
        self._wake.set()
        while self._undo:
            name, undo = self._undo.pop()
            logger.info("shutdown: %s", name)
            try:
                undo()
            except Exception:  # noqa: BLE001 - every later step must still run
                logger.exception("shutdown step %r failed", name)

    def _join_watchdog(self) -> None:
        if self.watchdog is not None:
            self.watchdog.join(SHUTDOWN_JOIN_S)

    def _drain_sinks(self) -> None:
        if self.dispatcher is not None and self.config is not None:
            self.dispatcher.drain(self.config.pipeline.drain_timeout_s)

    # -- models, workers and streams ------------------------------------------------------

    def load_model(self, model: ModelConfig) -> Task:
        """Load ``model`` with this daemon's loader and engine manager; it serves nothing yet."""
        return self._task_loader(model)

    def replace_model(self, name: str, task: Task) -> Task:
        """Swap ``task`` into running model ``name`` (see :meth:`ModelSlots.replace`); the old
        task comes back for the caller to close, or to swap in again to roll back."""
        with self._state:  # not in the middle of a reload
            return self.models.replace(name, task)

    def _start_worker(self, name: str, task: Task, model: ModelConfig) -> None:
        assert self.config is not None and self.dispatcher is not None
        worker = self.workers.start(name, task, model, self.config.pipeline, self.dispatcher.offer)
        self.tracking.attach(self.config, name, task, worker)

    def _start_stream(self, stream: StreamConfig) -> None:
        worker = self.models.worker(stream.model)
        assert worker is not None, stream.model
        if worker.tracking is not None:
            worker.tracking.add_stream(stream)
        self.streams.start(stream, worker)
        self._summaries.start(stream.name, self._clock(), worker.stats.frames.get(stream.name, 0))

    def _stop_stream(self, stream_id: str) -> None:
        running = self.streams.get(stream_id)
        assert running is not None, stream_id
        worker = self.models.worker(running.model)
        self.streams.stop(stream_id, worker)
        if worker is not None and worker.tracking is not None:
            worker.tracking.remove_stream(stream_id)
        self._summaries.forget(stream_id)

    def _stop_all_streams(self) -> None:
        for stream_id in self.streams.ids():
            self._stop_stream(stream_id)

    # -- serving --------------------------------------------------------------------------

    def serve_once(self, timeout: Optional[float] = None) -> None:
        """Wait for a signal or the next summary; handle a pending reload; log summaries."""
        assert self.config is not None
        interval = self.config.pipeline.summary_interval_s
        wait = timeout if timeout is not None else (interval if interval > 0 else 1.0)
        self._wake.wait(wait)
        self._wake.clear()
        if self.stop_event.is_set():
            return
        if self._reload.is_set():
            self._reload.clear()
            self.reload()
        if interval > 0 and timeout is None:
            self.log_summaries()

    def reload(self) -> bool:
        """Apply the config file again; False (old config kept) when it is invalid."""
        assert self.config is not None
        logger.info("reload: reading %s", self.config_path)
        self.notifier.reloading("reloading configuration")
        try:
            new = load_config(self.config_path)
            check_reloadable(new, self.config_path)
            plan = plan_reload(self.config, new)
            tasks = load_tasks(self._task_loader, [new.models[n] for n in plan.load_models],
                               self.notifier)  # fmt: skip
        except EdgedError as e:
            if self.stop_event.is_set():  # SIGTERM during the reload's engine build
                logger.info("reload abandoned: stopping (%s)", e)
                return False
            self.reloads["rejected"] += 1
            self.last_reload_error = str(e)  # the MQTT reload command replies with it
            logger.error("reload rejected, keeping the running configuration: %s", e)
            self.notifier.ready(self.status_line())
            return False
        self._apply(new, plan, tasks)
        self.reloads["applied"] += 1
        logger.info("reload applied: %d models, %d streams", len(self.models), len(self.streams))
        self.notifier.ready(self.status_line())
        return True

    def _apply(self, new: Config, plan: ReloadPlan, tasks: Dict[str, Task]) -> None:
        """Carry out ``plan``; the models it loads are in ``tasks``."""
        for stream_id in sorted(plan.stop_streams + plan.restart_streams):
            logger.info("reload: stopping stream %s", stream_id)
            self._stop_stream(stream_id)
        for name in plan.stop_models:
            logger.info("reload: stopping model %s", name)
            self.workers.stop(name)
        with self._state:
            _apply_log_level(new.log_level)
            self.config = new
            for name in plan.start_models:
                self._start_worker(name, tasks[name], new.models[name])
            for name in plan.replace_models:
                logger.info("reload: replacing model %s; its streams keep running", name)
                before = self.models.config(name)
                try:
                    old = self.models.replace(name, tasks[name], new.models[name])
                except ModelSlotError as e:  # a hung batch: the watchdog restarts edged
                    logger.error("reload: %s; its backend is left open", e)
                    continue
                old.backend.close()
                self.tracking.replaced(new, name, tasks[name], before, self.models.worker(name),
                                       self.streams.items().items())  # fmt: skip
        for stream_id in sorted(plan.start_streams + plan.restart_streams):
            self._start_stream(new.streams[stream_id])

    # -- reporting ------------------------------------------------------------------------

    def snapshot(self) -> DaemonSnapshot:
        """Frozen views of the running streams, models and workers, taken in one step."""
        with self._state:
            return take_snapshot(
                self.config, self.streams.items(), self.models.workers(), self.models.views(),
                self.latest, self.dispatcher, self.reloads, self.last_reload_error,
            )  # fmt: skip

    def model_view(self, name: str) -> Optional[ModelView]:
        """One loaded model (per result: cheaper than a whole snapshot)."""
        return self.models.view(name)

    def log_summaries(self) -> None:
        self._summaries.log(self.snapshot(), self._clock())

    def status_line(self) -> str:
        """The ``STATUS=`` text for ``systemctl status``."""
        return status_line(self.snapshot())


def _apply_log_level(level: str) -> None:
    logging.getLogger("edged").setLevel(level.upper())
