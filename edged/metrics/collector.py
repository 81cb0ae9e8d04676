"""The daemon's metrics, read from its state at scrape time.

Nothing here runs per frame: the capture supervisors, inference workers, the
sink dispatcher and the MQTT client already count what happens; a scrape
copies those counters into metric families. Labels stay low-cardinality --
``stream``, ``model``, ``stage``, ``outcome``, ``result``, ``state``,
``command``, ``sink``, ``reason`` -- never a pid, seq or request id (Prometheus naming practice:
unbounded label values make unbounded series).

Names and what they read:

* ``edged_frames_total{stream,outcome}``: ``inferred`` (worker) and
  ``dropped_before_inference`` (latest-frame slot replaced a frame the worker
  had not taken); ``edged_stream_captured_frames_total{stream}``.
* ``edged_stream_fps``, ``edged_stream_up``, ``edged_stream_state{state}`` (one
  series per state, 0/1), ``edged_stream_state_age_seconds``,
  ``edged_stream_last_frame_age_seconds``, ``edged_stream_reconnects_total``,
  ``edged_stream_stalls_total``, ``edged_stream_frozen_total``,
  ``edged_stream_open_failures_total``, ``edged_stream_info{stream,model}``.
* ``edged_model_info{model,version,sha256,precision,backend,task}``,
  ``edged_inference_batches_total{model}``, ``edged_inference_errors_total{model}``,
  ``edged_inference_in_progress{model}``.
* ``edged_result_queue_dropped_total``, ``edged_result_queue_depth``,
  ``edged_result_queue_capacity``, ``edged_results_delivered_total``,
  ``edged_sink_failures_total{sink}``, ``edged_config_reloads_total{result}``.
* ``edged_mqtt_*`` from ``daemon.mqtt.stats()`` when MQTT is configured (absent otherwise).
* ``edged_engine_*`` from ``daemon.engines.stats()`` (TensorRT engine cache).
* ``edged_update_*`` from ``daemon.updates`` when ``update.enabled`` (docs/model-updates.md).
* ``edged_build_info{version,python}``; ``edged_metrics_collect_errors_total``.
"""

import functools
import logging
import platform
from typing import Any, Callable, Dict, Iterator, List, Optional

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .. import __version__
from ..daemon_view import DaemonReader, DaemonSnapshot
from ..sources.supervisor import STATES, STREAMING

logger = logging.getLogger(__name__)

#: The MQTT client's stats() keys -> (metric name, type, help).
MQTT_STATS = (
    ("connected", "edged_mqtt_connected", "gauge", "1 while connected to the MQTT broker."),
    (
        "outbox_messages",
        "edged_mqtt_outbox_messages",
        "gauge",
        "Messages in the durable outbox, not yet acknowledged by the broker.",
    ),
    ("outbox_bytes", "edged_mqtt_outbox_bytes", "gauge", "Bytes held by the durable outbox."),
    (
        "published_total",
        "edged_mqtt_published",
        "counter",
        "Messages the broker acknowledged (QoS 1) or that were sent (QoS 0).",
    ),
    (
        "publish_failed_total",
        "edged_mqtt_publish_failed",
        "counter",
        "Publish attempts that failed or timed out (the message stays in the outbox).",
    ),
    (
        "dropped_total",
        "edged_mqtt_dropped",
        "counter",
        "Messages dropped: the outbox was full (oldest first) or a payload was too large.",
    ),
    (
        "results_not_durable_total",
        "edged_mqtt_results_not_durable",
        "counter",
        "Results sent to the broker from memory only: the disk was full (a crash loses them).",
    ),
    (
        "outbox_durable",
        "edged_mqtt_outbox_durable",
        "gauge",
        "0 while the outbox cannot write to disk (full): results are kept in memory.",
    ),
    (
        "outbox_disk_bytes",
        "edged_mqtt_outbox_disk_bytes",
        "gauge",
        "Disk space the outbox's files take (database, WAL, wal-index); at most max_bytes.",
    ),
    (
        "outbox_memory_messages",
        "edged_mqtt_outbox_memory_messages",
        "gauge",
        "Results held in memory only (the disk was full), waiting for the broker.",
    ),
    (
        "reconnects_total",
        "edged_mqtt_reconnects",
        "counter",
        "Connections to the broker after the first.",
    ),
    (
        "auth_failures_total",
        "edged_mqtt_auth_failures",
        "counter",
        "Connections the broker refused: bad credentials or not authorised.",
    ),
    (
        "client_id_conflict",
        "edged_mqtt_client_id_conflict",
        "gauge",
        "1 while the broker keeps dropping new connections: another client probably uses "
        "the same client id (edged then waits minutes between attempts).",
    ),
    (
        "client_id_conflicts_total",
        "edged_mqtt_client_id_conflicts",
        "counter",
        "Times a client id conflict was suspected (see edged_mqtt_client_id_conflict).",
    ),
)


def _counter(name: str, doc: str, labels: Optional[List[str]] = None) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=labels)


def _gauge(name: str, doc: str, labels: Optional[List[str]] = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


class DaemonCollector:
    """A custom collector over one :class:`~edged.daemon.Daemon`'s live state.

    It reads one :meth:`~edged.daemon.Daemon.snapshot` per scrape, and the
    ``stats()`` of the daemon's ``mqtt`` (None when MQTT is off) and ``engines``;
    a part that raises is logged (once at WARNING, then DEBUG), counted in
    ``edged_metrics_collect_errors_total`` and left out of that scrape only.
    """

    def __init__(self, daemon: DaemonReader) -> None:
        self._daemon = daemon
        self.errors = 0

    def collect(self) -> Iterator[Metric]:
        yield from self._section("build_info", self._build_info)
        snapshot = None  # type: Optional[DaemonSnapshot]
        try:
            # one frozen read per scrape: a reload meanwhile changes nothing in it
            snapshot = self._daemon.snapshot()
        except Exception:  # noqa: BLE001 - one broken section must not fail the whole scrape
            self._failed("snapshot")
        if snapshot is not None:
            yield from self._section("streams", functools.partial(self._streams, snapshot))
            yield from self._section("models", functools.partial(self._models, snapshot))
            yield from self._section("results", functools.partial(self._results, snapshot))
        yield from self._section("mqtt", self._mqtt)
        yield from self._section("engines", self._engines)
        yield from self._section("updates", self._updates)
        errors = _counter(
            "edged_metrics_collect_errors",
            "Parts of a scrape of edged's metrics that could not be read (see the log).",
        )
        errors.add_metric([], self.errors)
        yield errors

    def _section(self, name: str, section: Callable[[], Iterator[Metric]]) -> List[Metric]:
        """The families of one section, or none when it raised (logged and counted)."""
        try:
            return list(section())
        except Exception:  # noqa: BLE001 - one broken section must not fail the whole scrape
            self._failed(name)
            return []

    def _failed(self, name: str) -> None:
        self.errors += 1
        level = logging.WARNING if self.errors == 1 else logging.DEBUG
        logger.log(
            level, "metrics: %s failed; its series are left out of this scrape", name, exc_info=True
        )

    # -- sections -------------------------------------------------------------------------

    def _build_info(self) -> Iterator[Metric]:
        info = _gauge(
            "edged_build_info", "edged's version and Python's; always 1.", ["version", "python"]
        )
        info.add_metric([__version__, platform.python_version()], 1)
        yield info

    def _snapshot(self, view: List[DaemonSnapshot]) -> Iterator[Metric]:
        view[0] = self._daemon.snapshot()  # frozen: a reload meanwhile changes nothing in it
        return iter([])

    def _streams(self, snapshot: DaemonSnapshot) -> Iterator[Metric]:
        frames = _counter(
            "edged_frames",
            "Frames per stream by what became of them: "
            "inferred, or dropped_before_inference (a newer frame replaced it "
            "while the model was busy).",
            ["stream", "outcome"],
        )
        captured = _counter(
            "edged_stream_captured_frames",
            "Frames the stream delivered to its model's queue.",
            ["stream"],
        )
        fps = _gauge("edged_stream_fps", "Frames per second captured (recent window).", ["stream"])
        up = _gauge(
            "edged_stream_up", "1 while the stream is delivering frames (streaming).", ["stream"]
        )
        state = _gauge(
            "edged_stream_state",
            "1 for the stream's current capture state, 0 for the others.",
            ["stream", "state"],
        )
        state_age = _gauge(
            "edged_stream_state_age_seconds",
            "Time the stream has been in its current state.",
            ["stream"],
        )
        frame_age = _gauge(
            "edged_stream_last_frame_age_seconds",
            "Time since the stream's last frame (absent before the first).",
            ["stream"],
        )
        reconnects = _counter(
            "edged_stream_reconnects", "Connection attempts after the first.", ["stream"]
        )
        stalls = _counter(
            "edged_stream_stalls",
            "Times the stream stalled: no frame for stall_timeout_s, a read error, or frozen.",
            ["stream"],
        )
        frozen = _counter(
            "edged_stream_frozen", "Stalls where identical frames kept arriving.", ["stream"]
        )
        open_failures = _counter(
            "edged_stream_open_failures", "Times the source could not be opened.", ["stream"]
        )
        info = _gauge(
            "edged_stream_info", "The model each stream runs; always 1.", ["stream", "model"]
        )
        for stream_id, stream in sorted(snapshot.streams.items()):
            status = stream.status
            frames.add_metric([stream_id, "inferred"], stream.inferred)
            frames.add_metric([stream_id, "dropped_before_inference"], status.drops)
            captured.add_metric([stream_id], status.frames)
            fps.add_metric([stream_id], status.fps)
            up.add_metric([stream_id], 1 if status.state == STREAMING else 0)
            for name in STATES:
                state.add_metric([stream_id, name], 1 if status.state == name else 0)
            state_age.add_metric([stream_id], status.state_age_s)
            if status.last_frame_age_s is not None:
                frame_age.add_metric([stream_id], status.last_frame_age_s)
            reconnects.add_metric([stream_id], status.reconnects)
            stalls.add_metric([stream_id], status.stalls)
            frozen.add_metric([stream_id], status.frozen)
            open_failures.add_metric([stream_id], status.open_failures)
            info.add_metric([stream_id, stream.model], 1)
        return iter(
            [
                frames,
                captured,
                fps,
                up,
                state,
                state_age,
                frame_age,
                reconnects,
                stalls,
                frozen,
                open_failures,
                info,
            ]
        )

    def _models(self, snapshot: DaemonSnapshot) -> Iterator[Metric]:
        info = _gauge(
            "edged_model_info",
            "Each loaded model: version, sha256 of the model file, "
            "precision, backend and task; always 1.",
            ["model", "version", "sha256", "precision", "backend", "task"],
        )
        batches = _counter(
            "edged_inference_batches", "Inference calls (one batch of frames each).", ["model"]
        )
        errors = _counter(
            "edged_inference_errors",
            "Batches whose inference raised (their frames were dropped).",
            ["model"],
        )
        busy = _gauge(
            "edged_inference_in_progress", "1 while the model is running an inference.", ["model"]
        )
        for name, model in sorted(snapshot.models.items()):
            info.add_metric(
                [name, model.version, model.sha256, model.precision, model.backend, model.kind], 1
            )
        for name, worker in sorted(snapshot.workers.items()):
            batches.add_metric([name], worker.batches)
            errors.add_metric([name], worker.errors)
            busy.add_metric([name], 1 if worker.inferring else 0)
        return iter([info, batches, errors, busy])

    def _results(self, snapshot: DaemonSnapshot) -> Iterator[Metric]:
        reloads = _counter(
            "edged_config_reloads",
            "Configuration reloads (SIGHUP) by result: "
            "applied, or rejected (invalid; the old one kept).",
            ["result"],
        )
        reloads.add_metric(["applied"], snapshot.reloads_applied)
        reloads.add_metric(["rejected"], snapshot.reloads_rejected)
        queue = snapshot.results
        if queue is None:
            return iter([reloads])
        dropped = _counter(
            "edged_result_queue_dropped",
            "Results dropped because the queue to the outputs was full (inference never waits).",
        )
        dropped.add_metric([], queue.dropped)
        depth = _gauge("edged_result_queue_depth", "Results waiting for the outputs.")
        depth.add_metric([], queue.depth)
        capacity = _gauge(
            "edged_result_queue_capacity",
            "Results the queue to the outputs holds (pipeline.result_queue).",
        )
        capacity.add_metric([], queue.capacity)
        delivered = _counter("edged_results_delivered", "Results handed to every output.")
        delivered.add_metric([], queue.delivered)
        failures = _counter("edged_sink_failures", "Results an output (sink) raised on.", ["sink"])
        for sink_name, n in sorted(queue.failures.items()):  # every output, from the start
            failures.add_metric([sink_name], n)
        return iter([reloads, dropped, depth, capacity, delivered, failures])

    def _mqtt(self) -> Iterator[Metric]:
        mqtt = self._daemon.mqtt
        if mqtt is None:  # MQTT not configured: no edged_mqtt_* series at all
            return iter([])
        stats: Dict[str, Any] = mqtt.stats()
        families = []  # type: List[Metric]
        for key, name, kind, doc in MQTT_STATS:
            family = (_gauge if kind == "gauge" else _counter)(name, doc)
            family.add_metric([], float(stats[key]))
            families.append(family)
        commands = _counter(
            "edged_mqtt_commands",
            "Commands received over MQTT by command and result (ok, error, ignored: retained, "
            "stale: issued too long ago, busy: the queue was full, busy_unsent).",
            ["command", "result"],
        )
        for (command, result), n in sorted(stats["commands_total"].items()):
            commands.add_metric([command, result], n)
        families.append(commands)
        lost = _counter(
            "edged_mqtt_results_lost",
            "Results lost by reason (each leaves a gap in seq): outbox_full (the oldest "
            "dropped), too_large, disk_full or write_error (the disk and the memory for "
            "results were full), not_durable_at_exit (held in memory at the stop).",
            ["reason"],
        )
        for reason, n in sorted(stats["results_lost_total"].items()):
            lost.add_metric([reason], n)
        families.append(lost)
        return iter(families)

    def _updates(self) -> Iterator[Metric]:
        """Model updates over MQTT (``edged.update``), read from ``daemon.updates``."""
        updates = getattr(self._daemon, "updates", None)
        if updates is None:  # update.enabled is off: no edged_update_* series
            return iter([])
        updater = updates.updater
        journal, status = updater.journal, updater.status
        state = _gauge("edged_update_state", "The current (or last) model update: 1 for its "
                       "state (docs/model-updates.md).", ["model", "version", "state"])  # fmt: skip
        if journal.model:
            state.add_metric([journal.model, str(journal.version), journal.state], 1)
        chunks = _gauge("edged_update_chunks", "Chunks of the update being received.", ["kind"])
        chunks.add_metric(["total"], float(status.get("chunks", 0)))
        chunks.add_metric(["received"], float(status.get("received", 0)))
        outcomes = _counter("edged_update_outcomes", "Model updates by outcome: committed, "
                            "rolled_back, refused (before any chunk).", ["result"])  # fmt: skip
        for result, n in sorted(updater.outcomes.items()):
            outcomes.add_metric([result], n)
        refused = _counter("edged_update_chunks_refused", "Chunk frames refused (damaged, "
                           "malformed) and asked for again.")  # fmt: skip
        refused.add_metric([], updater.damaged)
        dropped = _counter("edged_update_messages_dropped", "Update messages dropped on a "
                           "full queue (asked for again).")  # fmt: skip
        dropped.add_metric([], updater.dropped)
        return iter([state, chunks, outcomes, refused, dropped])

    def _engines(self) -> Iterator[Metric]:
        """TensorRT engine builds, read from ``daemon.engines.stats()``:
        ``edged_engine_cache_hits_total``, ``edged_engine_cache_misses_total``,
        ``edged_engine_builds_total{result}``, ``edged_engine_build_seconds_total``,
        ``edged_engine_build_seconds{model}`` (the last build), ``edged_engine_building{model}``
        and ``edged_engine_quarantined_total``."""
        engines = self._daemon.engines
        if engines is None:
            return iter([])
        stats: Dict[str, Any] = engines.stats()
        hits = _counter("edged_engine_cache_hits", "Engines loaded from the engine cache.")
        hits.add_metric([], stats["cache_hits"])
        misses = _counter("edged_engine_cache_misses", "Engine lookups that needed a build.")
        misses.add_metric([], stats["cache_misses"])
        quarantined = _counter(
            "edged_engine_quarantined", "Cached engines moved aside as unusable (then rebuilt)."
        )
        quarantined.add_metric([], stats["quarantined"])
        builds = _counter(
            "edged_engine_builds",
            "Engine builds in a child process by result (built, hit, failed, cancelled, "
            "killed, timeout).",
            ["result"],
        )
        for result, n in sorted(stats["builds"].items()):
            builds.add_metric([result], n)
        seconds_total = _counter(
            "edged_engine_build_seconds", "Seconds spent building engines, all models."
        )
        seconds_total.add_metric([], stats["build_seconds_total"])
        last = _gauge(
            "edged_engine_last_build_seconds", "Duration of each model's last build.", ["model"]
        )
        for model, seconds in sorted(stats["build_seconds_last"].items()):
            last.add_metric([model], seconds)
        building = _gauge("edged_engine_building", "1 while a model's engine builds.", ["model"])
        for model in stats["building"]:
            building.add_metric([model], 1)
        return iter([hits, misses, quarantined, builds, seconds_total, last, building])
