"""Prometheus metrics of the daemon, served on 127.0.0.1:9108 by default.

:class:`MetricsService` puts it together for one daemon: a per-daemon registry,
the scrape-time :class:`DaemonCollector`, the per-stage latency histograms fed
by :class:`MetricsSink` on the sinks thread, the Jetson telemetry gauges, and
the :class:`MetricsServer` (thread ``metrics-http``). Every name starts with
``edged_`` (or ``jetson_``, ``process_``, ``python_``) and carries its unit;
``dashboards/edged.json`` charts them.
"""

from .collector import DaemonCollector
from .jetson import JetsonCollector, jetson_families
from .latency import STAGE_BUCKETS_S, LatencyHistograms, MetricsSink
from .server import MetricsServer
from .service import MetricsService

__all__ = [
    "DaemonCollector",
    "JetsonCollector",
    "LatencyHistograms",
    "MetricsServer",
    "MetricsService",
    "MetricsSink",
    "STAGE_BUCKETS_S",
    "jetson_families",
]
