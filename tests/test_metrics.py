"""Prometheus metrics: latency histograms, the shut-downable server, the scrape-time
collector over a real in-process daemon, the metrics config keys and the Grafana dashboard."""

import json
import logging
import os
import re
import socket
import subprocess
import threading
import time
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edged.config import MetricsConfig, build_config
from edged.daemon import Daemon
from edged.errors import ConfigError
from edged.metrics import (
    STAGE_BUCKETS_S,
    DaemonCollector,
    JetsonCollector,
    LatencyHistograms,
    MetricsServer,
    MetricsService,
    MetricsSink,
)
from edged.pipeline.results import InferenceResult
from edged.telemetry import parse_line

from .conftest import REPO
from .test_daemon import make_clip, write_config
from .test_telemetry import promtool, sample_line  # noqa: F401 - promtool is a fixture

DASHBOARD = os.path.join(REPO, "dashboards", "edged.json")

MQTT_STATS = {
    "connected": True,
    "outbox_messages": 3,
    "outbox_bytes": 2048,
    "published_total": 120,
    "publish_failed_total": 2,
    "dropped_total": 1,
    "results_lost_total": {
        "outbox_full": 1,
        "too_large": 0,
        "disk_full": 7,
        "write_error": 0,
        "not_durable_at_exit": 0,
    },
    "results_not_durable_total": 40,
    "outbox_durable": False,
    "outbox_disk_bytes": 90112,
    "outbox_memory_messages": 2,
    "reconnects_total": 4,
    "auth_failures_total": 1,
    "client_id_conflict": False,
    "client_id_conflicts_total": 0,
    "commands_total": {("ping", "ok"): 5, ("reload", "error"): 1},
}


class StatsOnlyMqtt:
    """Stands in for the MQTT client (edged/mqtt/service.py): only its
    ``stats()`` contract, with exactly the keys the collector reads."""

    def __init__(self, stats=None, error=None):
        self._stats = stats
        self._error = error

    def stats(self):
        if self._error is not None:
            raise self._error
        return dict(self._stats)


def samples_of(text):
    """{(sample name, ((label, value), ...)): value} of an exposition."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def names_of(text):
    return {name for name, _ in samples_of(text)}


def scrape(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return response.read().decode()


def wait_until(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


# -- latency histograms and their sink ------------------------------------------------------


def test_histogram_buckets_are_cumulative_with_inclusive_upper_bounds():
    h = LatencyHistograms(buckets=(0.001, 0.01, 0.1))
    for seconds in (0.001, 0.0011, 0.05, 0.1, 7.0):
        h.observe("cam", "m", "total", seconds)
    values = samples_of(generate_latest(registry_with(h)).decode())

    def bucket(le):
        key = (("le", le), ("model", "m"), ("stage", "total"), ("stream", "cam"))
        return values[("edged_inference_stage_seconds_bucket", key)]

    assert [bucket("0.001"), bucket("0.01"), bucket("0.1"), bucket("+Inf")] == [1, 2, 4, 5]
    labels = (("model", "m"), ("stage", "total"), ("stream", "cam"))
    assert values[("edged_inference_stage_seconds_count", labels)] == 5
    assert values[("edged_inference_stage_seconds_sum", labels)] == pytest.approx(7.1521)
    assert h.count("cam", "m", "total") == 5


def test_default_buckets_span_one_millisecond_to_five_seconds():
    assert STAGE_BUCKETS_S[0] == 0.001 and STAGE_BUCKETS_S[-1] == 5.0
    assert list(STAGE_BUCKETS_S) == sorted(set(STAGE_BUCKETS_S))


def test_histograms_refuse_unsorted_buckets():
    with pytest.raises(ValueError):
        LatencyHistograms(buckets=(0.1, 0.01))


def test_the_sink_files_every_stage_of_a_result_by_stream_and_model():
    h = LatencyHistograms()
    sink = MetricsSink(h)
    result = InferenceResult(
        stream_id="door",
        seq=7,
        captured_monotonic=0.0,
        captured_wall=0.0,
        frame_size=(640, 480),
        model="peoplenet",
        task="detection",
        items=[],
        latency_ms={
            "queue": 2.0,
            "preprocess": 3.0,
            "inference": 40.0,
            "postprocess": 1.0,
            "total": 46.0,
        },
    )
    sink.handle(result)
    sink.handle(result)
    for stage in ("queue", "preprocess", "inference", "postprocess", "total"):
        assert h.count("door", "peoplenet", stage) == 2
    values = samples_of(generate_latest(registry_with(h)).decode())
    key = (("model", "peoplenet"), ("stage", "inference"), ("stream", "door"))
    assert values[("edged_inference_stage_seconds_sum", key)] == pytest.approx(0.08)
    assert sink.name == "metrics"


def registry_with(*collectors):
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    return registry


# -- the HTTP server ------------------------------------------------------------------------


def test_the_server_binds_loopback_by_default_serves_and_shuts_down():
    registry = CollectorRegistry()
    Gauge("edged_test_value", "A test gauge.", registry=registry).set(42)
    server = MetricsServer(registry, port=0)
    server.start()
    try:
        assert server._server.server_address[0] == "127.0.0.1"
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        assert "edged_test_value 42.0" in scrape(server.url)
        assert [t for t in threading.enumerate() if t.name == "metrics-http"]
        port = server.port
    finally:
        server.stop()
    server.stop()  # twice is harmless
    assert not [t for t in threading.enumerate() if t.name == "metrics-http"]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_busy_port_is_a_config_error_naming_the_key():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        with pytest.raises(
            ConfigError, match=rf"metrics\.port: cannot listen on 127\.0\.0\.1:{port}"
        ):
            MetricsServer(CollectorRegistry(), port=port).start()
    finally:
        holder.close()


def test_a_service_whose_port_is_busy_logs_one_error_and_still_collects(caplog):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    config = MetricsConfig(port=holder.getsockname()[1], telemetry_interval_s=0)
    service = MetricsService(None, config, threading.Event())
    try:
        with caplog.at_level(logging.INFO, logger="edged"):
            service.start()
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and errors[0].startswith("metrics off: metrics.port")
        assert not service.serving
        assert "process_resident_memory_bytes" in service.exposition().decode()
    finally:
        service.stop()
        holder.close()


# -- config keys -----------------------------------------------------------------------------


def test_metrics_config_defaults_to_loopback_9108_with_telemetry_every_second():
    config = build_config({})
    assert config.metrics == MetricsConfig(
        enabled=True, host="127.0.0.1", port=9108, telemetry_interval_s=1
    )


@pytest.mark.parametrize(
    "metrics, message",
    [
        ({"port": 70000}, "metrics.port"),
        ({"port": -1}, "metrics.port"),
        ({"host": "a b"}, "metrics.host"),
        ({"host": ""}, "metrics.host"),
        ({"enabled": "yes"}, "metrics.enabled"),
        ({"telemetry_interval_s": -1}, "metrics.telemetry"),
        ({"prot": 1}, "prot"),
    ],
)
def test_invalid_metrics_keys_are_config_errors_naming_the_key(metrics, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_config({"metrics": metrics})


def test_port_zero_and_an_ipv6_host_are_accepted():
    config = build_config({"metrics": {"host": "::", "port": 0, "telemetry_interval_s": 0}})
    assert (config.metrics.host, config.metrics.port) == ("::", 0)


# -- a real daemon, in process ---------------------------------------------------------------


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """edged's Daemon on a 12 s clip with the digits model and metrics on a free port."""
    directory = tmp_path_factory.mktemp("metrics-daemon")
    clip = make_clip(str(directory / "clip.avi"), frames=300)
    config = str(directory / "edged.yaml")
    write_config(config, {"cam": clip}, pipeline="summary_interval_s: 0, drain_timeout_s: 2")
    d = Daemon(config)
    d.start()
    try:
        assert wait_until(lambda: d.metrics.histograms.count("cam", "digits", "total") >= 5)
        yield d
    finally:
        d.shutdown()


def test_a_live_daemon_exports_frames_fps_state_and_stage_latencies(daemon):
    values = samples_of(scrape(daemon.metrics.server.url))
    cam = (("stream", "cam"),)
    inferred = values[("edged_frames_total", (("outcome", "inferred"), ("stream", "cam")))]
    dropped = values[
        ("edged_frames_total", (("outcome", "dropped_before_inference"), ("stream", "cam")))
    ]
    assert inferred > 0 and dropped >= 0
    assert values[("edged_stream_captured_frames_total", cam)] >= inferred
    assert values[("edged_stream_fps", cam)] > 0
    assert values[("edged_stream_up", cam)] == 1
    assert values[("edged_stream_state", (("state", "streaming"), ("stream", "cam")))] == 1
    assert values[("edged_stream_state", (("state", "stalled"), ("stream", "cam")))] == 0
    assert values[("edged_stream_reconnects_total", cam)] == 0
    assert values[("edged_stream_info", (("model", "digits"), ("stream", "cam")))] == 1
    for stage in ("queue", "preprocess", "inference", "postprocess", "total"):
        key = (("model", "digits"), ("stage", stage), ("stream", "cam"))
        assert values[("edged_inference_stage_seconds_count", key)] > 0
    assert values[("edged_inference_batches_total", (("model", "digits"),))] > 0
    assert values[("edged_result_queue_capacity", ())] == 256
    assert values[("edged_sink_failures_total", (("sink", "metrics"),))] == 0
    assert values[("edged_config_reloads_total", (("result", "applied"),))] == 0
    assert values[("process_resident_memory_bytes", ())] > 0
    assert values[("edged_metrics_collect_errors_total", ())] == 0


def test_model_and_build_info_name_what_runs(daemon):
    values = samples_of(scrape(daemon.metrics.server.url))
    task = daemon.models.task("digits")
    info = dict(next(labels for name, labels in values if name == "edged_model_info"))
    assert info == {
        "model": "digits",
        "version": "",
        "sha256": task.model_sha256,
        "precision": "fp32",
        "backend": "onnxruntime",
        "task": "classification",
    }
    assert re.match(r"^[0-9a-f]{64}$", info["sha256"])
    build = dict(next(labels for name, labels in values if name == "edged_build_info"))
    assert set(build) == {"version", "python"}


def test_no_label_carries_an_id_a_pid_or_a_sequence_number(daemon):
    allowed = {
        "stream",
        "model",
        "stage",
        "outcome",
        "result",
        "state",
        "command",
        "sink",
        "reason",
        "le",
        "version",
        "python",
        "sha256",
        "precision",
        "backend",
        "task",
        # prometheus_client's own python_info
        "implementation",
        "major",
        "minor",
        "patchlevel",
    }
    daemon.mqtt = StatsOnlyMqtt(MQTT_STATS)
    try:
        labels = {
            k for _, pairs in samples_of(daemon.metrics.exposition().decode()) for k, _ in pairs
        }
    finally:
        daemon.mqtt = None
    assert labels <= allowed, labels - allowed


def test_without_mqtt_there_are_no_mqtt_series(daemon):
    assert getattr(daemon, "mqtt", None) is None
    assert not [n for n in names_of(scrape(daemon.metrics.server.url)) if "mqtt" in n]


def test_mqtt_stats_become_edged_mqtt_series(daemon):
    daemon.mqtt = StatsOnlyMqtt(MQTT_STATS)
    try:
        values = samples_of(scrape(daemon.metrics.server.url))
    finally:
        daemon.mqtt = None
    assert values[("edged_mqtt_connected", ())] == 1
    assert values[("edged_mqtt_outbox_messages", ())] == 3
    assert values[("edged_mqtt_outbox_bytes", ())] == 2048
    assert values[("edged_mqtt_published_total", ())] == 120
    assert values[("edged_mqtt_publish_failed_total", ())] == 2
    assert values[("edged_mqtt_dropped_total", ())] == 1
    assert values[("edged_mqtt_reconnects_total", ())] == 4
    assert values[("edged_mqtt_auth_failures_total", ())] == 1
    assert values[("edged_mqtt_commands_total", (("command", "ping"), ("result", "ok")))] == 5
    assert values[("edged_mqtt_commands_total", (("command", "reload"), ("result", "error")))] == 1
    assert values[("edged_mqtt_results_lost_total", (("reason", "disk_full"),))] == 7
    assert values[("edged_mqtt_results_lost_total", (("reason", "outbox_full"),))] == 1
    assert values[("edged_mqtt_results_not_durable_total", ())] == 40
    assert values[("edged_mqtt_outbox_durable", ())] == 0
    assert values[("edged_mqtt_outbox_disk_bytes", ())] == 90112
    assert values[("edged_mqtt_outbox_memory_messages", ())] == 2


def test_a_part_that_cannot_be_read_is_left_out_and_counted(daemon, caplog):
    collector = DaemonCollector(daemon)
    daemon.mqtt = StatsOnlyMqtt(error=RuntimeError("outbox locked"))
    try:
        with caplog.at_level(logging.DEBUG, logger="edged"):
            text = generate_latest(registry_with(collector)).decode()
            generate_latest(registry_with(collector))
    finally:
        daemon.mqtt = None
    values = samples_of(text)
    assert values[("edged_metrics_collect_errors_total", ())] == 1
    assert ("edged_stream_up", (("stream", "cam"),)) in values
    assert not [name for name, _ in values if "mqtt" in name]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1  # the second failure is logged at DEBUG


def full_exposition(daemon):
    """The daemon's scrape plus the MQTT series and a Jetson's gauges: every name edged exports."""
    daemon.mqtt = StatsOnlyMqtt(MQTT_STATS)
    try:
        text = daemon.metrics.exposition().decode()
    finally:
        daemon.mqtt = None
    snapshot = parse_line(sample_line("orin_jp6_jetson_stats_624"))
    jetson = registry_with(JetsonCollector(lambda: snapshot))
    return text + generate_latest(jetson).decode()


def test_promtool_accepts_everything_edged_can_export(daemon, promtool):  # noqa: F811
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=full_exposition(daemon),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        universal_newlines=True,
        timeout=60,
    )
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout


# -- the Grafana dashboard ------------------------------------------------------------------


def dashboard_exprs():
    with open(DASHBOARD) as f:
        dashboard = json.load(f)
    exprs = []
    for panel in dashboard["panels"]:
        for child in [panel] + panel.get("panels", []):
            exprs.extend(t["expr"] for t in child.get("targets", []))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return dashboard, exprs


def test_the_dashboard_is_valid_json_with_panels_and_queries():
    dashboard, exprs = dashboard_exprs()
    assert dashboard["title"] and dashboard["uid"]
    assert len(exprs) >= 20
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_every_metric_the_dashboard_queries_is_exported(daemon):
    _, exprs = dashboard_exprs()
    exported = names_of(full_exposition(daemon))
    queried = set()
    for expr in exprs:
        queried.update(re.findall(r"\b((?:edged|jetson|process)_[a-z0-9_]+)", expr))
    assert queried, "no metric names found in the dashboard"
    assert queried <= exported, sorted(queried - exported)
    # the list: per-stream fps, drops, state, latency percentiles, MQTT, RSS/CPU, Jetson
    for needed in (
        "edged_stream_fps",
        "edged_frames_total",
        "edged_stream_up",
        "edged_inference_stage_seconds_bucket",
        "edged_mqtt_connected",
        "edged_mqtt_outbox_messages",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "jetson_gpu_load_ratio",
        "jetson_emc_load_ratio",
        "jetson_temperature_celsius",
        "jetson_power_milliwatts",
    ):
        assert needed in queried, needed
    assert any("histogram_quantile" in e for e in exprs)


# -- wiring into the daemon ----------------------------------------------------------------


def daemon_config(tmp_path, metrics):
    clip = make_clip(str(tmp_path / "clip.avi"), frames=60)
    config = str(tmp_path / "edged.yaml")
    write_config(config, {"cam": clip}, pipeline="summary_interval_s: 0, drain_timeout_s: 2",
                 metrics=metrics.strip("{}"))  # fmt: skip
    return config


def test_metrics_disabled_means_no_server_and_no_shutdown_step(tmp_path):
    def servers():
        return len([t for t in threading.enumerate() if t.name == "metrics-http"])

    before = servers()  # the module's daemon may be serving
    d = Daemon(daemon_config(tmp_path, "{enabled: false}"))
    d.start()
    try:
        assert d.metrics is None
        assert "stop metrics server" not in [name for name, _ in d._undo]
        assert servers() == before
    finally:
        d.shutdown()


def test_a_busy_metrics_port_does_not_stop_inference(tmp_path):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    d = Daemon(daemon_config(tmp_path, f"{{port: {port}}}"))
    try:
        d.start()
        assert not d.metrics.serving
        assert wait_until(lambda: d.metrics.histograms.count("cam", "digits", "total") > 0)
    finally:
        d.shutdown()
        holder.close()


def test_shutdown_stops_the_server_between_the_workers_and_the_sinks(tmp_path):
    d = Daemon(daemon_config(tmp_path, "{port: 0, telemetry_interval_s: 0}"))
    d.start()
    try:
        steps = [name for name, _ in d._undo]
        assert steps.index("drain result sinks") < steps.index("stop metrics server")
        assert steps.index("stop metrics server") < steps.index("stop inference workers")
        url = d.metrics.server.url
        assert "edged_build_info" in scrape(url)
    finally:
        d.shutdown()
    with pytest.raises(OSError):
        scrape(url)


def test_a_daemon_whose_broker_is_down_shows_mqtt_disconnected_with_a_growing_outbox(tmp_path):
    """The real MQTT service behind the collector, with no broker listening."""
    nobody = socket.socket()
    nobody.bind(("127.0.0.1", 0))  # reserved, never listening: connections are refused
    port = nobody.getsockname()[1]
    outbox = tmp_path / "outbox.sqlite3"
    config = daemon_config(tmp_path, "{port: 0, telemetry_interval_s: 0}")
    with open(config, "a") as f:
        f.write(f"mqtt: {{host: 127.0.0.1, port: {port}, outbox: {{path: {outbox}}}}}\n")
    d = Daemon(config)
    try:
        d.start()
        assert wait_until(lambda: d.mqtt.stats()["outbox_messages"] > 0)
        values = samples_of(scrape(d.metrics.server.url))
    finally:
        d.shutdown()
        nobody.close()
    assert values[("edged_mqtt_connected", ())] == 0
    assert values[("edged_mqtt_outbox_messages", ())] > 0
    assert values[("edged_mqtt_outbox_bytes", ())] > 0
    assert values[("edged_mqtt_published_total", ())] == 0
    assert values[("edged_sink_failures_total", (("sink", "mqtt"),))] == 0
