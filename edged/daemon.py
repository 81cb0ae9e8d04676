"""The edged daemon: config -> models -> inference workers -> streams, supervised (issue 4).

Start-up runs :data:`STARTUP_STEPS` in order and shutdown undoes them in
reverse. Signal handlers only set events: SIGTERM/SIGINT stop the daemon
(capture stops, in-flight results drain within ``pipeline.drain_timeout_s``,
exit 0); SIGHUP reloads the config on the main thread -- streams whose
config or model changed restart, untouched ones keep running, and an invalid
new config is rejected with one log line while the old one stays.

systemd: ``READY=1`` once models are loaded and streams started;
``EXTEND_TIMEOUT_USEC`` while models load; ``STATUS=`` a person can read;
``WATCHDOG=1`` only while every capture and inference progresses
(:class:`~edged.watchdog.ProgressWatchdog`).
"""

import logging
import os
import signal
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from . import sdnotify
from .config import Config, ModelConfig, StreamConfig, load_config
from .errors import EdgedError
from .metrics import MetricsService
from .pipeline import preprocessors
from .pipeline.results import InferenceResult
from .pipeline.sinks import ResultSink, SinkDispatcher
from .pipeline.worker import InferenceWorker
from .sources import STREAMING, SourceSupervisor, SupervisionPolicy, build_source
from .sources.supervisor import CONNECTING
from .tasks.base import Task
from .tasks.loader import load_task
from .watchdog import HEALTH_FILE_ENV, HealthFile, ProgressWatchdog

logger = logging.getLogger(__name__)

STARTUP_STEPS = (
    "load config",
    "start mqtt",
    "start result sinks",
    "start metrics server",
    "load models and start inference workers",
    "start streams",
    "notify ready",
    "start watchdog",
)

#: How long shutdown waits for each capture or inference thread.
SHUTDOWN_JOIN_S = 5.0
#: systemd start-timeout headroom requested while models load.
MODEL_LOAD_EXTEND_S = 120.0
#: Slack added to a stream's own timeouts before its capture thread counts as wedged.
CAPTURE_SLACK_S = 5.0


class LatestResults(ResultSink):
    """Keeps the newest result of every stream (summaries, status, snapshots)."""

    name = "latest"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest = {}  # type: Dict[str, InferenceResult]

    def handle(self, result: InferenceResult) -> None:
        with self._lock:
            self._latest[result.stream_id] = result

    def get(self, stream_id: str) -> Optional[InferenceResult]:
        with self._lock:
            return self._latest.get(stream_id)


class _Stream:
    """A running stream: its config, capture supervisor and the worker it feeds."""

    def __init__(self, config: StreamConfig, supervisor: SourceSupervisor, worker: str) -> None:
        self.config = config
        self.supervisor = supervisor
        self.worker = worker


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
        engines: Optional[Any] = None,
        source_builder: Callable[[Any], Any] = build_source,
        watchdog_interval_s: Optional[float] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config_path = config_path
        self.notifier = notifier if notifier is not None else sdnotify.from_environment()
        self.stop_event = stop_event if stop_event is not None else threading.Event()
        self._reload = threading.Event()
        self._wake = threading.Event()
        # default: load_task with this daemon's engine manager (TensorRT engines, issue 6)
        self._task_loader = task_loader or (lambda model: load_task(model, self.engines))
        self.engines = engines  # type: Optional[Any]  # edged.engine.EngineManager; made at start
        self._source_builder = source_builder
        self._watchdog_interval_s = (
            watchdog_interval_s if watchdog_interval_s is not None else sdnotify.watchdog_interval()
        )
        self._clock = clock
        self.latest = LatestResults()
        self._extra_sinks = list(sinks or [])
        self.config = None  # type: Optional[Config]
        self.workers = {}  # type: Dict[str, InferenceWorker]
        self._worker_configs = {}  # type: Dict[str, ModelConfig]
        self.streams = {}  # type: Dict[str, _Stream]
        self.dispatcher = None  # type: Optional[SinkDispatcher]
        self.watchdog = None  # type: Optional[ProgressWatchdog]
        self.metrics = None  # type: Optional[MetricsService]
        self.mqtt = None  # type: Optional[Any]  # edged.mqtt.service.MqttService (issue 5)
        self._undo = []  # type: List[Tuple[str, Callable[[], None]]]
        self.reloads = {"applied": 0, "rejected": 0}
        self.last_reload_error = None  # type: Optional[str]
        self._summary_counts = {}  # type: Dict[str, Tuple[float, int]]

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
        self._start_mqtt()

        self.dispatcher = SinkDispatcher(
            [self.latest] + self._extra_sinks, self.stop_event, self.config.pipeline.result_queue
        )
        self.dispatcher.start()
        self._undo.append(("drain result sinks", self._drain_sinks))
        self._start_metrics()

        health_path = os.environ.get(HEALTH_FILE_ENV)  # containers: docker/healthcheck.py
        self.watchdog = ProgressWatchdog(
            self.notifier,
            self.stop_event,
            self._watchdog_interval_s,
            status=self.status_line,
            health_file=HealthFile(health_path) if health_path else None,
        )
        from .engine import EngineManager  # local: the engine package is only needed here

        if self.engines is None:
            self.engines = EngineManager(
                self.config.engine, notifier=self.notifier, cancel=self.stop_event
            )
        self._undo.append(("cancel engine builds", self.engines.cancel_all))
        self._undo.append(("stop inference workers", self._stop_all_workers))
        needed = _models_needed(self.config)
        for name in sorted(needed):
            self._start_worker(name, self._load(self.config.models[name], len(needed)))
        for name in sorted(set(self.config.models) - needed):
            logger.info("model %s is not used by any enabled stream: not loaded", name)

        self._undo.append(("stop streams", self._stop_all_streams))
        for _, stream in sorted(self.config.streams.items()):
            if stream.enabled:
                self._start_stream(stream)
        if not self.streams:
            logger.warning("no enabled streams in %s: nothing to do until a reload adds one",
                           self.config_path)  # fmt: skip

        self.notifier.ready(self.status_line())
        self._undo.append(("notify stopping", lambda: self.notifier.stopping("stopping")))
        self.watchdog.start()
        self._undo.append(("stop watchdog", self._join_watchdog))
        logger.info("edged ready: %d models, %d streams", len(self.workers), len(self.streams))

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

    def _start_metrics(self) -> None:
        """Prometheus metrics (issue 5 item 4): up before the models load, so a slow load
        or engine build can be watched; read at scrape time, plus one latency sink."""
        assert self.config is not None and self.dispatcher is not None
        if not self.config.metrics.enabled:
            logger.info("metrics off (metrics.enabled: false)")
            return
        self.metrics = MetricsService(self, self.config.metrics, self.stop_event)
        self.dispatcher.add(self.metrics.sink)  # no results flow yet: no worker has started
        self.metrics.start()
        self._undo.append(("stop metrics server", self.metrics.stop))

    def _start_mqtt(self) -> None:
        """MQTT (issue 5, edged/mqtt): started BEFORE the sinks so that it stops after they
        drained (undo runs in reverse) and the last results reach the outbox. A broker that
        is down is no error; an unusable outbox, TLS file or password source is."""
        assert self.config is not None
        if self.config.mqtt is None:
            return
        from .mqtt.control import DaemonAdapter
        from .mqtt.service import MqttService

        self.mqtt = MqttService(
            self.config.mqtt, self.config.device_id, DaemonAdapter(self, self.stop_event),
            self.stop_event,
        )  # fmt: skip
        self.mqtt.start()
        self._undo.append(("stop mqtt", self.mqtt.stop))
        self._extra_sinks.append(self.mqtt.sink)  # the dispatcher is made next, with it

    # -- models and workers ---------------------------------------------------------------

    def _load(self, model: ModelConfig, total: int) -> Task:
        status = f"loading model {model.name} ({total} to load)"
        with sdnotify.TimeoutExtender(self.notifier, status, extend_s=MODEL_LOAD_EXTEND_S):
            return self._task_loader(model)

    def _start_worker(self, name: str, task: Task) -> None:
        assert self.config is not None and self.dispatcher is not None
        pipeline = self.config.pipeline
        pre = preprocessors.for_task(pipeline.preprocess, task, pipeline.max_batch, name)
        worker = InferenceWorker(
            name, task, self.dispatcher.offer, self.stop_event, pipeline.max_batch,
            overlap=pipeline.overlap, preprocessor=pre,
        )  # fmt: skip
        worker.start()
        self.workers[name] = worker
        self._worker_configs[name] = self.config.models[name]
        if self.watchdog is not None:
            self.watchdog.register("inference:" + name, _inference_probe(worker, self._clock),
                                   self.config.pipeline.inference_timeout_s)  # fmt: skip

    def _stop_worker(self, name: str) -> None:
        worker = self.workers.pop(name)
        self._worker_configs.pop(name, None)
        if self.watchdog is not None:
            self.watchdog.unregister("inference:" + name)
        worker.stop()
        if not worker.join(SHUTDOWN_JOIN_S):
            logger.warning("model %s: inference still running after %.0f s; left behind",
                           name, SHUTDOWN_JOIN_S)  # fmt: skip
            return  # never free a backend an inference may still be using
        worker.task.backend.close()

    def _stop_all_workers(self) -> None:
        for name in sorted(self.workers):
            self._stop_worker(name)

    # -- streams --------------------------------------------------------------------------

    def _start_stream(self, stream: StreamConfig) -> None:
        worker = self.workers[stream.model]
        policy = SupervisionPolicy(
            stall_timeout_s=stream.stall_timeout_s,
            frozen_timeout_s=stream.frozen_timeout_s,
            backoff_initial_s=stream.backoff_initial_s,
            backoff_max_s=stream.backoff_max_s,
            join_timeout_s=SHUTDOWN_JOIN_S,
        )
        supervisor = SourceSupervisor(
            stream.name,
            self._source_builder(stream.source),
            self.stop_event,
            policy,
            slot=worker.attach(stream.name),
            live=stream.source.is_live,
        )
        supervisor.start()
        self.streams[stream.name] = _Stream(stream, supervisor, stream.model)
        # the first summary's rate counts from here, not from a later first look
        self._summary_counts[stream.name] = (self._clock(), worker.stats.frames.get(stream.name, 0))
        if self.watchdog is not None:
            spec = stream.source
            max_stale = (stream.stall_timeout_s + spec.open_timeout_s + 2 * spec.read_timeout_s
                         + CAPTURE_SLACK_S)  # fmt: skip
            self.watchdog.register("capture:" + stream.name,
                                   _capture_probe(supervisor, self._clock), max_stale)  # fmt: skip
        logger.info("stream %s started: %s -> model %s", stream.name, stream.source.display,
                    stream.model)  # fmt: skip

    def _stop_stream(self, stream_id: str) -> None:
        stream = self.streams.pop(stream_id)
        if self.watchdog is not None:
            self.watchdog.unregister("capture:" + stream_id)
        stream.supervisor.stop(SHUTDOWN_JOIN_S)
        worker = self.workers.get(stream.worker)
        if worker is not None:
            worker.detach(stream_id)
        self._summary_counts.pop(stream_id, None)

    def _stop_all_streams(self) -> None:
        for stream_id in sorted(self.streams):
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
            tasks = self._load_changed_models(new)
        except EdgedError as e:
            if self.stop_event.is_set():  # SIGTERM during the reload's engine build
                logger.info("reload abandoned: stopping (%s)", e)
                return False
            self.reloads["rejected"] += 1
            self.last_reload_error = str(e)  # the MQTT reload command replies with it
            logger.error("reload rejected, keeping the running configuration: %s", e)
            self.notifier.ready(self.status_line())
            return False
        needed = _models_needed(new)
        for stream_id in sorted(self.streams):
            old = self.streams[stream_id]
            wanted = new.streams.get(stream_id)
            if (
                wanted is None
                or not wanted.enabled
                or wanted != old.config
                or wanted.model in tasks
            ):
                logger.info("reload: stopping stream %s", stream_id)
                self._stop_stream(stream_id)
        for name in sorted(self.workers):
            if name in tasks or name not in needed:
                logger.info("reload: stopping model %s", name)
                self._stop_worker(name)
        _apply_log_level(new.log_level)
        self.config = new
        for name, task in sorted(tasks.items()):
            self._start_worker(name, task)
        for stream_id, stream in sorted(new.streams.items()):
            if stream.enabled and stream_id not in self.streams:
                self._start_stream(stream)
        self.reloads["applied"] += 1
        logger.info("reload applied: %d models, %d streams", len(self.workers), len(self.streams))
        self.notifier.ready(self.status_line())
        return True

    def _load_changed_models(self, new: Config) -> Dict[str, Task]:
        """Load every model the new config needs that is new or changed (all or nothing)."""
        tasks = {}  # type: Dict[str, Task]
        try:
            for name in sorted(_models_needed(new)):
                if name in self.workers and self._worker_configs.get(name) == new.models[name]:
                    continue
                tasks[name] = self._load(new.models[name], 1)
        except BaseException:
            for task in tasks.values():
                task.backend.close()
            raise
        return tasks

    # -- reporting ------------------------------------------------------------------------

    def stream_summaries(self) -> List[Dict[str, Any]]:
        """Per stream: capture status plus inference rate since the previous call."""
        now = self._clock()
        summaries = []
        for stream_id, stream in sorted(self.streams.items()):
            status = stream.supervisor.status()
            worker = self.workers.get(stream.worker)
            inferred = worker.stats.frames.get(stream_id, 0) if worker else 0
            since, before = self._summary_counts.get(stream_id, (now, inferred))
            self._summary_counts[stream_id] = (now, inferred)
            rate = (inferred - before) / (now - since) if now > since else 0.0
            latest = self.latest.get(stream_id)
            summaries.append(
                {
                    "stream": stream_id,
                    "state": status.state,
                    "fps_in": status.fps,
                    "inferred_per_s": rate,
                    "inferred": inferred,
                    "dropped": status.drops,
                    "reconnects": status.reconnects,
                    "model": stream.worker,
                    "last": _describe_items(latest.items) if latest else "no result yet",
                }
            )
        return summaries

    def log_summaries(self) -> None:
        for s in self.stream_summaries():
            logger.info(
                "stream %s: %s, %.1f fps in, %.1f inferred/s, %d dropped, %d reconnects, "
                "model %s, last: %s",
                s["stream"], s["state"], s["fps_in"], s["inferred_per_s"], s["dropped"],
                s["reconnects"], s["model"], s["last"],
            )  # fmt: skip

    def status_line(self) -> str:
        """The ``STATUS=`` text for ``systemctl status``."""
        states = {}  # type: Dict[str, int]
        fps = 0.0
        dropped = 0
        for stream in self.streams.values():
            status = stream.supervisor.status()
            states[status.state] = states.get(status.state, 0) + 1
            fps += status.fps
            dropped += status.drops
        parts = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none"
        return (
            f"{len(self.streams)} streams ({parts}); {fps:.1f} fps in; "
            f"{dropped} frames dropped; {len(self.workers)} models"
        )


def _models_needed(config: Config) -> set:
    return {s.model for s in config.streams.values() if s.enabled}


def _inference_probe(worker: InferenceWorker, clock: Callable[[], float]) -> Callable[[], float]:
    """Fresh while idle; while a step of the worker runs, the oldest start (a hung call goes
    stale: the model, or a post-processing the model then waits on)."""

    def probe() -> float:
        busy = worker.stats.busy_since
        return busy if busy is not None else clock()

    return probe


def _capture_probe(supervisor: SourceSupervisor, clock: Callable[[], float]) -> Callable[[], float]:
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


def _describe_items(items: List[Any]) -> str:
    if not items:
        return "nothing"
    if not hasattr(items[0], "bbox"):  # classification: the top class
        return f"{items[0].label} ({100 * items[0].confidence:.0f}%)"
    counts = {}  # type: Dict[str, int]
    for item in items:
        counts[item.label] = counts.get(item.label, 0) + 1
    return ", ".join(f"{n} {label}" for label, n in sorted(counts.items()))


def _apply_log_level(level: str) -> None:
    logging.getLogger("edged").setLevel(level.upper())
