"""Everything metrics for one daemon: registry, collectors, latency sink, server, telemetry.

One :class:`~prometheus_client.CollectorRegistry` per daemon (never the global
``REGISTRY``), so tests can run several. It holds the process collector
(``process_cpu_seconds_total``, ``process_resident_memory_bytes``, ... on
Linux), the platform collector (``python_info``), the daemon's scrape-time
collector, the latency histograms and -- on a Jetson -- the tegrastats gauges.
A metrics port that cannot be bound is logged as an error and edged runs on
without metrics: inference and MQTT matter more than their dashboard.
"""

import logging
import threading
from typing import Optional

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.exposition import generate_latest

from ..config import MetricsConfig
from ..daemon_view import DaemonReader
from ..errors import ConfigError
from ..telemetry import TegrastatsReader
from .collector import DaemonCollector
from .jetson import JetsonCollector
from .latency import LatencyHistograms, MetricsSink
from .server import MetricsServer
from .tracking import TrackingCollector

logger = logging.getLogger(__name__)


class MetricsService:
    """Build with the daemon, add :attr:`sink` to its result sinks, :meth:`start`, :meth:`stop`.

    Other parts (the TensorRT engine cache) add their collectors with
    ``service.registry.register(collector)``.
    """

    def __init__(
        self,
        daemon: DaemonReader,
        config: MetricsConfig,
        stop: threading.Event,
        telemetry: Optional[TegrastatsReader] = None,
    ) -> None:
        self.config = config
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.histograms = LatencyHistograms()
        self.sink = MetricsSink(self.histograms)
        self.registry.register(self.histograms)
        self.collector = DaemonCollector(daemon)
        self.registry.register(self.collector)
        self.registry.register(TrackingCollector(daemon))  # zones and lines (edged/tracking)
        if telemetry is None and config.telemetry_interval_s > 0:
            telemetry = TegrastatsReader(stop, config.telemetry_interval_s)
        self.telemetry = telemetry
        if telemetry is not None:
            self.registry.register(JetsonCollector(telemetry.latest))
        self.server = MetricsServer(self.registry, config.host, config.port)
        self.serving = False

    def start(self) -> None:
        """Serve /metrics and start telemetry; a port that cannot be bound is logged, not raised."""
        try:
            self.server.start()
            self.serving = True
            logger.info("metrics at %s", self.server.url)
        except ConfigError as e:
            logger.error("metrics off: %s", e)
        if self.telemetry is not None:
            self.telemetry.start()

    def stop(self) -> None:
        if self.telemetry is not None:
            self.telemetry.stop()
        self.server.stop()
        self.serving = False

    def exposition(self) -> bytes:
        """The text a scrape would get now."""
        return generate_latest(self.registry)
