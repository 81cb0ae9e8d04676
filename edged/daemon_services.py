"""The daemon's optional services, each started when its config section asks for it:
MQTT (``edged.mqtt``) and the Prometheus metrics server (``edged.metrics``)."""

import logging
import threading
from typing import TYPE_CHECKING, Optional

from .config import Config
from .daemon_view import DaemonReader
from .metrics import MetricsService
from .pipeline.sinks import SinkDispatcher

if TYPE_CHECKING:  # the MQTT package is imported only when MQTT is configured
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
