"""The daemon's services besides its streams and models: MQTT (``edged.mqtt``) and the
Prometheus metrics server (``edged.metrics``), each when its config section asks for it, and
the progress watchdog (``edged.watchdog``)."""

import logging
import os
import threading
from typing import TYPE_CHECKING, Any, Callable, Optional

from .config import Config
from .daemon_view import DaemonReader
from .metrics import MetricsService
from .pipeline.sinks import SinkDispatcher
from .sdnotify import Notifier
from .watchdog import HEALTH_FILE_ENV, HealthFile, ProgressWatchdog

if TYPE_CHECKING:  # imported when needed: engines at start-up, MQTT when configured
    from .engine.manager import EngineManager
    from .mqtt.service import MqttService

logger = logging.getLogger("edged.daemon")


def start_mqtt(
    config: Config, daemon: DaemonReader, stop_event: threading.Event
) -> "Optional[MqttService]":
    """The started MQTT service, or None without an ``mqtt`` section. A broker that is down
    is no error; an unusable outbox, TLS file or password source is."""
    if config.mqtt is None:
        return None
    from .mqtt.control import DaemonAdapter
    from .mqtt.service import MqttService

    mqtt = MqttService(config.mqtt, config.device_id, DaemonAdapter(daemon, stop_event), stop_event)
    mqtt.start()
    return mqtt


def start_metrics(
    config: Config,
    daemon: DaemonReader,
    dispatcher: SinkDispatcher,
    stop_event: threading.Event,
) -> Optional[MetricsService]:
    """The started metrics server (before the models load, so a slow load or engine build can
    be watched; read at scrape time, plus one latency sink), or None when turned off."""
    if not config.metrics.enabled:
        logger.info("metrics off (metrics.enabled: false)")
        return None
    metrics = MetricsService(daemon, config.metrics, stop_event)
    dispatcher.add(metrics.sink)  # no results flow yet: no worker has started
    metrics.start()
    return metrics


def make_watchdog(
    notifier: Notifier,
    stop_event: threading.Event,
    interval_s: Optional[float],
    status: Callable[[], str],
) -> ProgressWatchdog:
    """The watchdog (not started), writing the health file that ``EDGED_HEALTH_FILE`` names
    (containers: docker/healthcheck.py reads it)."""
    health_path = os.environ.get(HEALTH_FILE_ENV)
    health_file = HealthFile(health_path) if health_path else None
    return ProgressWatchdog(
        notifier, stop_event, interval_s, status=status, health_file=health_file
    )


def make_engines(
    config: Config, notifier: Notifier, stop_event: threading.Event
) -> "EngineManager":
    """The TensorRT engine manager (builds stop when ``stop_event`` is set)."""
    from .engine import EngineManager  # local: the engine package is only needed here

    return EngineManager(config.engine, notifier=notifier, cancel=stop_event)


def start_outputs(daemon: Any) -> None:
    """Start-up steps "start mqtt", "start result sinks", "start metrics server" of
    :class:`~edged.daemon.Daemon`, each with its undo step.

    MQTT comes before the sinks: undo runs in reverse, so it stops after they drained and the
    last results reach the outbox. The metrics server reads the dispatcher, so it comes last.
    """
    config = daemon.config
    daemon.mqtt = start_mqtt(config, daemon, daemon.stop_event)
    if daemon.mqtt is not None:
        daemon._undo.append(("stop mqtt", daemon.mqtt.stop))
        daemon._extra_sinks.append(daemon.mqtt.sink)  # the dispatcher is made next, with it
        daemon._extra_sinks.append(daemon.mqtt.counts.sink)  # counts and counting events
    daemon.dispatcher = SinkDispatcher(
        [daemon.latest] + daemon._extra_sinks, daemon.stop_event, config.pipeline.result_queue
    )
    daemon.dispatcher.start()
    daemon._undo.append(("drain result sinks", daemon._drain_sinks))
    daemon.metrics = start_metrics(config, daemon, daemon.dispatcher, daemon.stop_event)
    if daemon.metrics is not None:
        daemon._undo.append(("stop metrics server", daemon.metrics.stop))
