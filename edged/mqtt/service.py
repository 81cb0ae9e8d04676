"""The MQTT service: outbox -> broker with zero loss, status, stream states, commands (issue 5).

Threads (all named, bounded, polling with ``time.monotonic()``, one shared stop event):

* ``sinks`` (the daemon's): :class:`MqttSink` decides per stream whether a result
  is published (:mod:`.policy`), encodes it and appends it to the durable
  :class:`~.outbox.Outbox`. It never waits for the network.
* ``mqtt-network``: the connection, its reconnect loop, the birth after every
  connect, the will and ``stopped`` (:class:`~.link.BrokerLink`).
* ``mqtt-publisher``: commits the outbox on time (the durability bound), sends
  committed messages oldest first with at most ``max_inflight`` unacknowledged,
  deletes each one when its PUBACK arrives, and after a reconnect starts again
  from the oldest message left (at least once; consumers dedupe by seq). A
  message unacknowledged for ``ack_timeout_s`` forces a reconnect, because
  paho never resends while connected (paho commit 9a47140). It also publishes
  the retained per-stream state when a stream's capture state changes, and the
  birth again when a reload changed models or streams.
* ``mqtt-commands`` and ``mqtt-replies``: run commands (:mod:`.commands`) off the
  paho thread and answer those that did not fit the queue (:mod:`.inbox`).

paho callbacks only append to queues (:mod:`.compat`). Shutdown
(:meth:`MqttService.stop`, after the sinks drained): send what the outbox
holds for up to ``drain_timeout_s``, publish the final stream states, then
``stopped`` and a clean disconnect, close the outbox. What was not sent stays
on disk for the next start.
"""

import collections
import logging
import os
import random
import threading
import time
import uuid
from typing import Any, Callable, Dict, Optional, Tuple

from ..config import MqttConfig
from ..errors import ConfigError, PublishError
from ..pipeline.results import InferenceResult
from ..pipeline.sinks import ResultSink
from ..statepaths import default_outbox_path  # noqa: F401 - re-exported
from . import compat
from .commands import CommandProcessor
from .control import DaemonControl
from .counting import CountsPublisher
from .inbox import CommandInbox
from .link import BrokerLink, Connection, resolve_password, tls_context
from .outbox import LOSS_REASONS, Outbox
from .payloads import result_payload, status_payload, stream_state_payload
from .policy import PolicyBook
from .topics import Topics

logger = logging.getLogger(__name__)

#: The publisher's longest sleep: ack timeouts and state changes are noticed this fast.
PUBLISHER_TICK_S = 0.1
#: How often stream states and the birth information are compared with what was published.
STATE_POLL_S = 0.5
#: On shutdown: how long to keep sending the outbox.
DRAIN_TIMEOUT_S = 2.0
#: Thread joins on shutdown.
JOIN_TIMEOUT_S = 5.0

STATS_KEYS = (
    "connected",
    "outbox_messages",
    "outbox_bytes",
    "published_total",
    "publish_failed_total",
    "dropped_total",
    "results_lost_total",
    "results_not_durable_total",
    "outbox_durable",
    "outbox_disk_bytes",
    "outbox_memory_messages",
    "reconnects_total",
    "auth_failures_total",
    "client_id_conflict",
    "client_id_conflicts_total",
    "commands_total",
)


class MqttSink(ResultSink):
    """Appends published results to the outbox (runs on the daemon's ``sinks`` thread)."""

    name = "mqtt"

    def __init__(self, service: "MqttService") -> None:
        self._service = service

    def handle(self, result: InferenceResult) -> None:
        self._service.enqueue_result(result)

    def close(self) -> None:
        self._service.outbox.flush()


class MqttService:
    """Connects edged to one broker. :meth:`start`, hand results to :attr:`sink`, :meth:`stop`."""

    def __init__(
        self,
        config: MqttConfig,
        device_id: str,
        control: DaemonControl,
        stop_event: threading.Event,
        boot_id: Optional[str] = None,
        clock: Callable[[], float] = time.monotonic,
        rng: Optional[random.Random] = None,
        drain_timeout_s: float = DRAIN_TIMEOUT_S,
    ) -> None:
        self.config = config
        self.device_id = device_id
        self.boot_id = boot_id or uuid.uuid4().hex
        self.topics = Topics(config.topic_prefix, device_id)
        self.client_id = config.client_id or f"edged-{device_id}"
        self._control = control
        self._stop = stop_event  # the daemon's shared stop event
        self._clock = clock
        self._drain_timeout_s = drain_timeout_s
        self.outbox = Outbox(
            config.outbox.path or default_outbox_path(device_id),
            max_bytes=config.outbox.max_bytes,
            commit_interval_s=config.outbox.commit_interval_ms / 1000.0,
            commit_batch=config.outbox.commit_batch,
            fsync=config.outbox.fsync,
            clock=clock,
        )
        self.sink = MqttSink(self)
        self._policies = PolicyBook(
            _publish_settings(config.publish),
            {k: _publish_settings(v) for k, v in config.streams.items()},
            clock,
        )
        processor = CommandProcessor(
            control,
            self.boot_id,
            config.max_command_bytes,
            clock,
            max_age_s=config.command_max_age_s,
            require_issue_time=config.protocol != compat.MQTT5,
            verifier=_command_verifier(config, device_id, self.outbox.path),
        )
        self.counts = CountsPublisher(self)  # edged/mqtt/counting.py
        processor.handlers["reset_counts"] = self.counts.reset_counts
        self.inbox = CommandInbox(processor, self.topics, self._send_reply, self._commands_stop)
        self._wake = threading.Event()  # new outbox data, acks, connection changes
        self.link = BrokerLink(
            config,
            self.client_id,
            self.topics,
            self._status,
            self.inbox.on_message,
            self._wake,
            clock,
            rng,
        )
        # shutdown is ordered: the publisher first (final states), then the network thread
        self._publisher_stop = threading.Event()
        self._lock = threading.Lock()  # counters
        self._threads = []  # type: List[threading.Thread]
        self._stopped = False
        self._warned_mqtt_change = False
        self._counters = {"published_total": 0, "publish_failed_total": 0}
        # the publisher's view of per-stream states: stream -> (state, status dict, model)
        self._published_states = {}  # type: Dict[str, Tuple[str, Dict[str, Any], Optional[str]]]
        self._published_birth = None  # type: Optional[Tuple[Any, ...]]

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Resolve credentials and TLS, open the outbox, start the threads.

        A broker that is down is no error (edged starts and stays healthy without it,
        Azure/iotedge#1105 in reliability.md 3.5); bad credentials sources, TLS files
        or an unusable outbox are.

        Raises:
            ConfigError: password variable/file or TLS files unusable.
            PublishError: the outbox cannot be opened.
        """
        problem = compat.protocol_problem(self.config.protocol)
        if problem:
            raise ConfigError("mqtt.protocol: " + problem)
        password = resolve_password(self.config)
        tls = tls_context(self.config)
        self.outbox.open()
        logger.info(
            "MQTT: broker %s:%d%s as client id %s%s; topics under %s/; paho-mqtt %s",
            self.config.host,
            self.config.port,
            " (TLS)" if tls else "",
            self.client_id,
            ", user " + self.config.username if self.config.username else "",
            self.topics.base,
            compat.PAHO_VERSION,
        )
        self.link.start(password, tls)
        for name, target in [("mqtt-publisher", self._publisher_main)] + self.inbox.threads():
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Drain, publish ``stopped``, disconnect, close the outbox. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        self.outbox.flush()
        if self._threads:
            self._drain()
        else:
            self.link.stop()  # never started; nothing else to stop
        self._publisher_stop.set()
        self._wake.set()
        self._join("mqtt-publisher")
        self.link.stop()
        self._join("mqtt-commands")
        self._join("mqtt-replies")
        self.outbox.close()
        logger.info(
            "MQTT stopped: %d messages left in the outbox for the next start", self.outbox.messages
        )

    def _drain(self) -> None:
        """Keep publishing until the outbox is empty, for at most the drain timeout."""

        def waiting() -> int:
            return self.outbox.messages + self.outbox.memory_messages

        if not self.connected or not waiting():
            return
        deadline = self._clock() + self._drain_timeout_s
        while self._clock() < deadline and waiting() and self.connected:
            self._wake.set()
            self._publisher_stop.wait(0.02)  # not set yet: a short sleep

    def _join(self, name: str) -> None:
        for thread in self._threads:
            if thread.name == name:
                thread.join(JOIN_TIMEOUT_S)
                if thread.is_alive():
                    logger.warning(
                        "MQTT thread %s still running after %.0f s", name, JOIN_TIMEOUT_S
                    )

    # -- stats (Prometheus, issue 5 item 4) ------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.link.current() is not None

    def stats(self) -> Dict[str, Any]:
        """Counters for the metrics: exactly the keys of :data:`STATS_KEYS`."""
        with self._lock:
            counters = dict(self._counters)
        commands = self.inbox.counts()
        connected = self.connected
        return {
            "connected": connected,
            "outbox_messages": int(self.outbox.messages),
            "outbox_bytes": int(self.outbox.bytes),
            "published_total": counters["published_total"],
            "publish_failed_total": counters["publish_failed_total"],
            "dropped_total": int(self.outbox.dropped),
            "results_lost_total": {r: int(self.outbox.lost[r]) for r in LOSS_REASONS},
            "results_not_durable_total": int(self.outbox.not_durable),
            "outbox_durable": bool(self.outbox.durable),
            "outbox_disk_bytes": int(self.outbox.disk_bytes()),
            "outbox_memory_messages": int(self.outbox.memory_messages),
            "reconnects_total": int(self.link.reconnects),
            "auth_failures_total": int(self.link.auth_failures),
            "client_id_conflict": bool(self.link.takeover.suspected),
            "client_id_conflicts_total": int(self.link.takeover.alarms),
            "commands_total": commands,
        }

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counters[name] += n

    # -- results (sinks thread) ------------------------------------------------------------

    def enqueue_result(self, result: InferenceResult) -> Optional[int]:
        """Publish decision + outbox append; returns the message's seq, or None if not published."""
        reason = self._policies.for_stream(result.stream_id).decide(result)
        if reason is None:
            return None
        topic = self.topics.results(result.stream_id, result.task)
        model = dict(self._control.model_info(result.model), task=result.task)

        def build(seq: int) -> Tuple[str, bytes]:
            payload = result_payload(
                result,
                self.device_id,
                self.boot_id,
                seq,
                model,
                reason,
                self.config.max_payload_bytes,
            )
            return topic, payload

        try:
            seq = self.outbox.append_result(result.stream_id, build, self.config.qos)
        except PublishError as e:
            self._count("publish_failed_total")
            failed = self._counters["publish_failed_total"]
            if failed == 1 or failed % 1000 == 0:  # a full disk fails every result: no log flood
                logger.warning(
                    "MQTT: a result of stream %s was not queued (%d so far): %s",
                    result.stream_id,
                    failed,
                    e,
                )
            return None
        self._wake.set()
        return seq

    # -- publisher thread -------------------------------------------------------------------

    def _status(self, state: str) -> bytes:
        """The status payload (``online`` with the models and streams running now)."""
        if state != "online":
            return status_payload(state, self.device_id, self.boot_id, time.time())
        models, streams = self._control.models(), self._control.stream_ids()
        return status_payload(state, self.device_id, self.boot_id, time.time(), models, streams)

    def _publisher_main(self) -> None:
        inflight = collections.OrderedDict()  # type: collections.OrderedDict
        by_mid = {}  # type: Dict[int, int]
        cursor = 0
        connection = None  # type: Optional[Connection]
        next_poll = 0.0
        while not self._publisher_stop.is_set():
            due = self.outbox.next_due_in()
            self._wake.wait(PUBLISHER_TICK_S if due is None else min(due, PUBLISHER_TICK_S))
            self._wake.clear()
            try:
                self.outbox.flush_if_due()
                current = self.link.current()
                if current is not connection:
                    if connection is not None:  # acks that came in before the connection went
                        self._take_acks(connection, by_mid, inflight)
                    inflight.clear()
                    by_mid.clear()
                    cursor = 0  # resend everything still in the outbox, oldest first
                    connection = current
                    if connection is not None:
                        self._poll_states(connection, force=True)
                        next_poll = self._clock() + STATE_POLL_S
                if connection is None:
                    continue
                self._take_acks(connection, by_mid, inflight)
                if self._overdue(connection, inflight):
                    continue
                if self.link.replacing(connection):
                    continue  # this connection is being replaced: send nothing more on it
                cursor = self._dispatch(connection, inflight, by_mid, cursor)
                if self._clock() >= next_poll:
                    self._poll_states(connection, force=False)
                    next_poll = self._clock() + STATE_POLL_S
            except Exception:  # noqa: BLE001 - top of the publisher loop: log, go on
                logger.exception("MQTT publisher failed; retrying")
                self._stop.wait(PUBLISHER_TICK_S)
        self._final_states()
        logger.debug("MQTT publisher thread stopped")

    def _take_acks(
        self, connection: Connection, by_mid: Dict[int, int], inflight: "collections.OrderedDict"
    ) -> None:
        acks = connection.callbacks.acks
        done = []  # type: List[int]
        while acks:
            message_id = by_mid.pop(acks.popleft(), None)
            if message_id is not None:  # not a status, state or reply message
                inflight.pop(message_id, None)
                done.append(message_id)
        if done:
            self.outbox.remove(done)
            self._count("published_total", len(done))

    def _overdue(self, connection: Connection, inflight: "collections.OrderedDict") -> bool:
        """True (and a reconnect requested) when the oldest in-flight message waited too long."""
        if not inflight:
            return False
        oldest_sent = next(iter(inflight.values()))
        if self._clock() - oldest_sent < self.config.ack_timeout_s:
            return False
        self._count("publish_failed_total", len(inflight))
        logger.warning(
            "MQTT: %d messages unacknowledged for %.0f s: forcing a reconnect",
            len(inflight),
            self.config.ack_timeout_s,
        )
        inflight.clear()
        self.link.replace(connection)
        return True

    def _dispatch(
        self,
        connection: Connection,
        inflight: "collections.OrderedDict",
        by_mid: Dict[int, int],
        cursor: int,
    ) -> int:
        room = self.config.max_inflight - len(inflight)
        if room <= 0:
            return cursor
        for message in self.outbox.pending(cursor, room):
            info = self._send(connection, message.topic, message.payload, message.qos, False)
            if info is None:
                self._count("publish_failed_total")
                break  # the connection is going; the network thread notices
            inflight[message.id] = self._clock()
            by_mid[info.mid] = message.id
            cursor = message.id
        return cursor

    def _poll_states(self, connection: Connection, force: bool) -> None:
        """Publish changed stream states (retained) and a changed birth."""
        now = time.time()
        states = self._control.stream_states()
        for stream_id, (status, model) in sorted(states.items()):
            previous = self._published_states.get(stream_id)
            engine = status.get("engine") or {}
            key = (status["state"], engine.get("state"), engine.get("fraction"))
            if force or previous is None or previous[0] != key:
                payload = stream_state_payload(self.device_id, status, model, now)
                self._publish(connection, self.topics.stream_state(stream_id), payload, True)
            self._published_states[stream_id] = (key, status, model)
        for stream_id in sorted(set(self._published_states) - set(states)):
            self._retire_state(connection, stream_id, now)
        self.counts.poll(connection, force)
        birth = (
            tuple(str(sorted(m.items())) for m in self._control.models()),
            tuple(self._control.stream_ids()),
        )
        if force:
            self._published_birth = birth
        elif birth != self._published_birth:
            self._published_birth = birth
            self._publish(connection, self.topics.status, self._status("online"), True)
        self._check_mqtt_config()

    def _retire_state(self, connection: Optional[Connection], stream_id: str, now: float) -> None:
        """A stream went away: ``stopped`` while edged shuts down, else clear the retained state."""
        _, status, model = self._published_states.pop(stream_id)
        if self._stop.is_set():
            stopped = dict(status, state="stopped", state_age_s=0.0, fps=0.0)
            payload = stream_state_payload(self.device_id, stopped, model, now)
        else:
            payload = b""  # an empty retained message deletes the retained state
        if connection is not None:
            self._publish(connection, self.topics.stream_state(stream_id), payload, True)

    def _final_states(self) -> None:
        connection = self.link.current()
        if connection is None:
            return
        try:
            self._poll_states(connection, force=False)
        except Exception:  # noqa: BLE001 - shutdown goes on
            logger.exception("MQTT: final stream states not published")

    def _check_mqtt_config(self) -> None:
        current = self._control.mqtt_config()
        if current is not None and current != self.config and not self._warned_mqtt_change:
            self._warned_mqtt_change = True
            logger.warning(
                "MQTT: the mqtt section changed in the reloaded config; restart edged "
                "to apply it (the running connection keeps the old settings)"
            )

    def _publish(self, connection: Connection, topic: str, payload: bytes, retain: bool) -> bool:
        return self._send(connection, topic, payload, 1, retain) is not None

    @staticmethod
    def _send(connection: Connection, topic: str, payload: bytes, qos: int, retain: bool) -> Any:
        """``client.publish`` (only queues: :func:`.compat.quiet_writes`); None if it failed."""
        try:
            info = connection.client.publish(topic, payload, qos=qos, retain=retain)
        except (OSError, ValueError) as e:  # the network thread just closed this client
            logger.debug("MQTT: publish to %s failed: %s", topic, e)
            return None
        return info if compat.loop_ok(info.rc) else None

    # -- commands (:mod:`.inbox`) ------------------------------------------------------------

    def _commands_stop(self) -> bool:
        return self._stop.is_set() or self.link.stopping

    def _send_reply(self, topic: str, payload: bytes) -> bool:
        connection = self.link.current()
        return connection is not None and self._publish(connection, topic, payload, False)


def _publish_settings(publish: Any) -> Dict[str, Any]:
    return {"mode": publish.mode, "heartbeat_s": publish.heartbeat_s, "max_rate": publish.max_rate}


def _command_verifier(config: MqttConfig, device_id: str, outbox_path: str) -> Optional[Any]:
    """mqtt.commands.require_signature: a verifier over the operator keys, pinned beside the
    outbox, else None."""
    if not config.commands.require_signature:
        return None
    from .signedcmd import load_verifier

    pin_dir = os.path.join(os.path.dirname(os.path.abspath(outbox_path)), "command-keys")
    return load_verifier(
        str(config.commands.keys_file), pin_dir, device_id, config.command_max_age_s
    )
