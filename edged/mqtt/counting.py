"""Counts and counting events over MQTT (edged/tracking, edged/pipeline/tracking.py).

* ``.../v1/streams/<s>/counts``, retained: occupancy per zone and label, the running in/out
  totals per line and label. Sent by the publisher thread when they changed (within
  ``STATE_POLL_S``) and again on every (re)connect, like the stream states: the retained
  message always ends up as the newest counts, whatever the broker went through.
* ``.../v1/streams/<s>/events``, QoS 1 through the durable outbox: one message per line
  crossing, zone enter and zone leave, each with its own per-stream ``seq`` (kept in the
  outbox with the message, under the key ``<stream>#events``: ``#`` is never in a stream id),
  so a broker outage or a restart loses none and a gap in ``seq`` is a lost event.
* the ``reset_counts`` command: totals of one stream (``stream``) or all back to 0.
"""

import logging
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from ..errors import PublishError
from ..pipeline.results import InferenceResult
from ..pipeline.sinks import ResultSink
from .payloads import encode, timestamp

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
#: The outbox sequence key of a stream's events.
EVENTS_KEY = "{}#events"


def counts_payload(device_id: str, stream_id: str, counts: Dict[str, Any], at: float) -> bytes:
    at_text, at_ms = timestamp(at)
    body = {"schema_version": SCHEMA_VERSION, "device_id": device_id, "stream_id": stream_id,
            "at": at_text, "at_ms": at_ms}  # fmt: skip
    body.update(counts)
    return encode(body)


def event_payload(device_id: str, boot_id: str, stream_id: str, seq: int,
                  event: Dict[str, Any], at: float) -> bytes:  # fmt: skip
    at_text, at_ms = timestamp(at)
    body = {"schema_version": SCHEMA_VERSION, "device_id": device_id, "stream_id": stream_id,
            "seq": seq, "boot_id": boot_id, "at": at_text, "at_ms": at_ms}  # fmt: skip
    body.update(event)
    return encode(body)


class CountsSink(ResultSink):
    """Hands each tracked result's events and counts to the :class:`CountsPublisher`."""

    name = "mqtt-counts"

    def __init__(self, publisher: "CountsPublisher") -> None:
        self._publisher = publisher

    def handle(self, result: InferenceResult) -> None:
        self._publisher.offer(result)


class CountsPublisher:
    """The counts and events of one :class:`~edged.mqtt.service.MqttService`."""

    def __init__(self, service: Any) -> None:
        self._service = service
        self._lock = threading.Lock()  # the sinks thread offers, the publisher thread polls
        self._latest = {}  # type: Dict[str, Tuple[Dict[str, Any], float]]
        self._changed = set()  # type: set
        self._announced: Optional[List[Tuple[str, bytes]]] = None  # HA discovery
        self.events_queued = 0
        self.events_failed = 0
        self.sink = CountsSink(self)

    # -- the sinks thread ---------------------------------------------------------------------

    def offer(self, result: InferenceResult) -> None:
        update = result.tracking
        if update is None:
            return
        for event in update.events:
            self._queue_event(result.stream_id, event, result.captured_wall)
        if update.counts_changed:
            with self._lock:
                self._latest[result.stream_id] = (update.counts, result.captured_wall)
                self._changed.add(result.stream_id)
        if update.events or update.counts_changed:
            self._service._wake.set()

    def _queue_event(self, stream_id: str, event: Dict[str, Any], at: float) -> None:
        service = self._service
        topic = service.topics.events(stream_id)

        def build(seq: int) -> Tuple[str, bytes]:
            return topic, event_payload(service.device_id, service.boot_id, stream_id, seq,
                                        event, at)  # fmt: skip

        try:
            service.outbox.append_result(EVENTS_KEY.format(stream_id), build, 1)
            self.events_queued += 1
        except PublishError as e:
            self.events_failed += 1
            if self.events_failed == 1 or self.events_failed % 1000 == 0:
                logger.warning("MQTT: a counting event of stream %s was not queued (%d so "
                               "far): %s", stream_id, self.events_failed, e)  # fmt: skip

    # -- the publisher thread -----------------------------------------------------------------

    def poll(self, connection: Any, force: bool) -> None:
        """Send the changed counts (all of them when ``force``: a new connection), retained."""
        if getattr(self._service.config, "home_assistant", False):
            self._announce(connection, force)
        with self._lock:
            names = sorted(self._latest) if force else sorted(self._changed)
            todo = [(s, self._latest[s]) for s in names]
            self._changed.clear()
        for stream_id, (counts, at) in todo:
            payload = counts_payload(self._service.device_id, stream_id, counts, at)
            topic = self._service.topics.counts(stream_id)
            if not self._service._publish(connection, topic, payload, True):
                with self._lock:  # the connection is going: the next one sends them all
                    self._changed.add(stream_id)

    def _announce(self, connection: Any, force: bool) -> None:
        """Home Assistant discovery: on every connect and when the zones or lines changed."""
        from .discovery import sensor_configs

        layout = {}  # type: Dict[str, Any]
        for stage in self._service._control.tracking_stages():
            layout.update(stage.layout())
        configs = sensor_configs(self._service.topics, self._service.device_id, layout)
        if not force and configs == self._announced:
            return
        gone = {t for t, _ in self._announced or []} - {t for t, _ in configs}
        for topic in sorted(gone):  # an empty retained config removes the sensor
            self._service._publish(connection, topic, b"", True)
        sent = all([self._service._publish(connection, t, p, True) for t, p in configs])
        self._announced = configs if sent else None

    # -- the command ------------------------------------------------------------------------

    def reset_counts(self, request: Dict[str, Any]) -> Dict[str, Any]:
        """``{"stream": id}`` (optional): totals of that stream, or of all, back to 0."""
        from .commands import CommandError

        stream = request.get("stream")
        if stream is not None and not isinstance(stream, str):
            raise CommandError("stream must be a stream id (a string)")
        reset: List[str] = []
        for stage in self._service._control.tracking_stages():
            names = stage.reset_counts(stream)
            now = stage.counts()
            with self._lock:  # publish the zeros now, not at the stream's next frame
                for name in names:
                    self._latest[name] = (now[name], time.time())
                    self._changed.add(name)
            reset += names
        self._service._wake.set()
        if not reset:
            raise CommandError(
                f"no counting stream named {stream!r}" if stream is not None
                else "no stream counts (no model has tracking.enabled)"
            )  # fmt: skip
        logger.info("counts reset on stream(s) %s", ", ".join(reset))
        return {"reset": sorted(reset)}
