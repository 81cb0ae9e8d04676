"""The MQTT service: wires the outbox, the broker link, the in-flight window, presence and
commands together and runs their lifecycle.

The parts, one job each: :mod:`.link` (the connection, over a :mod:`.transport`),
:mod:`.inflight` (results out, acks, timeouts, resends), :mod:`.presence` (status
and retained stream states), :mod:`.inbox`/:mod:`.commands` (commands),
:mod:`.outbox` (the durable queue), :mod:`.policy` (which results are published).

Other components talk to the broker through :meth:`MqttService.subscribe` (a
topic filter and a callback that must only enqueue; subscribed on every connect)
and :meth:`MqttService.publish` (best effort, not through the outbox).

Threads (all named, bounded, polling with ``time.monotonic()``, one shared stop event):

* ``sinks`` (the daemon's): :class:`MqttSink` decides per stream whether a result
  is published (:mod:`.policy`), encodes it and appends it to the durable
  :class:`~.outbox.Outbox`. It never waits for the network.
* ``mqtt-network``: the connection, its reconnect loop, the birth after every
  connect, the will and ``stopped`` (:class:`~.link.BrokerLink`).
* ``mqtt-publisher``: commits the outbox on time (the durability bound), sends
  committed messages through the in-flight window (:mod:`.inflight`), and
  publishes the retained per-stream states and a changed birth (:mod:`.presence`).
* ``mqtt-commands`` and ``mqtt-replies``: run commands (:mod:`.commands`) off the
  paho thread and answer those that did not fit the queue (:mod:`.inbox`).

paho callbacks only append to queues (:mod:`.compat`). Shutdown
(:meth:`MqttService.stop`, after the sinks drained): send what the outbox
holds for up to ``drain_timeout_s``, publish the final stream states, then
``stopped`` and a clean disconnect, close the outbox. What was not sent stays
on disk for the next start.
"""

import logging
import os
import random
import threading
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Tuple

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
from .inflight import InflightWindow, ResultSender
from .link import BrokerLink, Connection, resolve_password, tls_context
from .outbox import LOSS_REASONS, Outbox
from .payloads import result_payload
from .policy import PolicyBook
from .presence import Presence
from .topics import Topics
from .transport import MessageHandler, TransportFactory

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
        transport_factory: Optional[TransportFactory] = None,
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
        self.inbox = CommandInbox(processor, self.topics, self.publish, self._commands_stop)
        self.presence = Presence(config, device_id, self.boot_id, self.topics, control, stop_event)
        self.presence.also_poll(self.counts.poll)
        self._subscribers: Tuple[Tuple[str, MessageHandler], ...] = ()
        self._wake = threading.Event()  # new outbox data, acks, connection changes
        self.link = BrokerLink(
            config,
            self.client_id,
            self.topics,
            self.presence.status,
            self._on_message,
            self._wake,
            clock,
            rng,
            transport_factory,
        )
        window = InflightWindow(config.max_inflight, config.ack_timeout_s, clock)
        self.sender = ResultSender(self.outbox, self.link, window, self._count)
        # shutdown is ordered: the publisher first (final states), then the network thread
        self._publisher_stop = threading.Event()
        self._lock = threading.Lock()  # counters
        self._threads: List[threading.Thread] = []
        self._stopped = False
        self._counters = {"published_total": 0, "publish_failed_total": 0}

    # -- for other components ---------------------------------------------------------------

    def subscribe(self, topic_filter: str, callback: MessageHandler) -> None:
        """Receive the messages matching ``topic_filter`` (MQTT wildcards allowed) from now
        on, across reconnects.

        ``callback(topic, payload, retain)`` runs on the ``mqtt-network`` thread and must
        only enqueue (a bounded queue, ``put_nowait``, ``queue.Full`` caught: an exception
        there drops the connection): paho's locks are held there. Call
        it before or after :meth:`start`. Messages on the command topics go to the
        commands, not here.
        """
        self._subscribers = self._subscribers + ((topic_filter, callback),)
        self.link.subscribe(topic_filter)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> bool:
        """Best effort, any thread: QoS 1 on the current connection, not through the outbox.
        False when not connected or the message was not queued (it is not retried)."""
        connection = self.link.current()
        return connection is not None and connection.publish(topic, payload, 1, retain) is not None

    def _on_message(self, topic: str, payload: bytes, retain: bool) -> None:
        """On the network thread: route a message to the commands or a subscriber (enqueue only)."""
        taken = False
        if not compat.topic_matches(self.topics.command_filter, topic):
            for topic_filter, callback in self._subscribers:
                if compat.topic_matches(topic_filter, topic):
                    callback(topic, payload, retain)
                    taken = True
        if not taken:  # commands, and what no subscriber matched (as before: to the inbox)
            self.inbox.on_message(topic, payload, retain)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Resolve credentials and TLS, open the outbox, start the threads.

        A broker that is down is no error (edged starts and stays healthy without it,
        Azure/iotedge#1105); bad credentials sources, TLS files
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

    # -- stats (the Prometheus metrics: edged/metrics/collector.py) -------------------------

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

    def _publisher_main(self) -> None:
        connection: Optional[Connection] = None
        next_poll = 0.0
        while not self._publisher_stop.is_set():
            due = self.outbox.next_due_in()
            self._wake.wait(PUBLISHER_TICK_S if due is None else min(due, PUBLISHER_TICK_S))
            self._wake.clear()
            try:
                self.outbox.flush_if_due()
                current = self.link.current()
                if current is not connection:
                    self.sender.switch(connection, current)
                    connection = current
                    if connection is not None:
                        self.presence.poll(connection, force=True)
                        next_poll = self._clock() + STATE_POLL_S
                if connection is None or not self.sender.send(connection):
                    continue
                if self._clock() >= next_poll:
                    self.presence.poll(connection, force=False)
                    next_poll = self._clock() + STATE_POLL_S
            except Exception:  # noqa: BLE001 - top of the publisher loop: log, go on
                logger.exception("MQTT publisher failed; retrying")
                self._stop.wait(PUBLISHER_TICK_S)
        self.presence.final(self.link.current())
        logger.debug("MQTT publisher thread stopped")

    def _publish(self, connection: Connection, topic: str, payload: bytes, retain: bool) -> bool:
        """QoS 1 on ``connection`` (:mod:`.counting` sends the retained counts with it)."""
        return connection.publish(topic, payload, 1, retain) is not None

    # -- commands (:mod:`.inbox`) ------------------------------------------------------------

    def _commands_stop(self) -> bool:
        return self._stop.is_set() or self.link.stopping


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
