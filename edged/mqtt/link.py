"""The connection to the broker: the ``mqtt-network`` thread.

One thread owns the connection and is the only one that touches the socket
(other threads' ``publish()`` only queue, :func:`.compat.quiet_writes`). The
client is a :class:`~.transport.Transport` made by a factory (paho's by default,
a stand-in broker's in the fast tests). Its own
reconnect loop backs off exponentially with +-20 % jitter up to a cap (paho's
``reconnect_delay_set`` doubles without jitter: paho.mqtt.python ``client.py``) and resets
after a connection that stayed up :data:`STABLE_CONNECTION_S`. Each attempt
makes a FRESH client with a clean session (paho's in-memory session would
resend behind the outbox's back), registers the retained will ``offline``,
waits for CONNACK, subscribes to the command topics (and to those other
components added with :meth:`BrokerLink.subscribe`) and publishes the retained
birth ``online``: after EVERY connect (Frigate's ``frigate/comms/mqtt.py`` does the same).
On MQTT 5 (the default
``mqtt.protocol``) the CONNECT carries a Maximum Packet Size and the command
subscription asks for Retain As Published (:mod:`.compat`, docs/mqtt.md).

A refused CONNACK for bad credentials or a failed TLS handshake counts as an
authentication failure and backs off like any failure (no tight loop, M8).
Each distinct failure is logged once at WARNING, repeats at DEBUG; the password
is never logged. On :meth:`BrokerLink.stop` the thread publishes the retained
``stopped``, waits for its PUBACK and disconnects cleanly, which suppresses
the will.
"""

import collections
import functools
import logging
import os
import random
import ssl
import threading
import time
from typing import Callable, Deque, List, Optional

from ..config import MqttConfig
from ..errors import ConfigError
from ..sources.backoff import Backoff
from . import compat
from .takeover import TakeoverDetector
from .topics import Topics
from .transport import MessageHandler, Transport, TransportEvents, TransportFactory

logger = logging.getLogger(__name__)

#: How long one ``client.loop()`` waits for traffic (the network thread's tick).
LOOP_TIMEOUT_S = 0.05
#: A connection that lasted this long resets the reconnect backoff.
STABLE_CONNECTION_S = 10.0
#: On a clean exit: how long to wait for the PUBACK of "stopped".
STOPPED_ACK_TIMEOUT_S = 2.0
JOIN_TIMEOUT_S = 5.0


def resolve_password(config: MqttConfig) -> Optional[str]:
    """The broker password from the config, its environment variable or its file.

    Raises:
        ConfigError: the variable is unset or the file unreadable (the value is never shown).
    """
    if config.password is not None:
        return config.password
    if config.password_env is not None:
        value = os.environ.get(config.password_env)
        if value is None:
            raise ConfigError(
                f"mqtt.password_env: environment variable {config.password_env} is not set"
            )
        return value
    if config.password_file is not None:
        try:
            with open(config.password_file) as f:
                return f.readline().rstrip("\r\n")
        except OSError as e:
            raise ConfigError(
                f"mqtt.password_file: cannot read {config.password_file} ({e.strerror or e})"
            ) from e
    return None


def tls_context(config: MqttConfig) -> Optional[ssl.SSLContext]:
    """The TLS context for the broker (certificate and host name verified), or None.

    Raises:
        ConfigError: a CA, certificate or key file cannot be loaded.
    """
    tls = config.tls
    if not tls.enabled:
        return None
    try:
        context = ssl.create_default_context(cafile=tls.ca_file)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"mqtt.tls.ca_file: cannot load {tls.ca_file} ({e})") from e
    if tls.cert_file:
        key = tls.key_file or "(key in the same file)"
        try:
            context.load_cert_chain(tls.cert_file, tls.key_file)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(
                f"mqtt.tls.cert_file: cannot load {tls.cert_file} / {key} ({e})"
            ) from e
    return context


class Connection:
    """One live connection: its transport and event queues (a new one per connect)."""

    def __init__(self, transport: Transport, events: TransportEvents, generation: int) -> None:
        self.transport = transport
        self.events = events
        self.generation = generation

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> Optional[int]:
        """Queue a message (any thread); its message id, or None when it was not queued."""
        try:
            return self.transport.publish(topic, payload, qos, retain)
        except (OSError, ValueError) as e:  # the network thread just closed this transport
            logger.debug("MQTT: publish to %s failed: %s", topic, e)
            return None


class BrokerLink:
    """Keeps one connection to the broker up; :meth:`current` is the live one or None.

    ``status(state)`` makes the status payload for ``online``, ``offline`` and
    ``stopped``; ``on_message(topic, payload, retain)`` receives commands on the
    network thread and must only enqueue; ``wake`` is set on every connection
    change and every acknowledgement; ``transport_factory`` makes each
    connection's client (default: paho, :class:`.compat.PahoTransport`).
    """

    def __init__(
        self,
        config: MqttConfig,
        client_id: str,
        topics: Topics,
        status: Callable[[str], bytes],
        on_message: MessageHandler,
        wake: threading.Event,
        clock: Callable[[], float] = time.monotonic,
        rng: Optional[random.Random] = None,
        transport_factory: Optional[TransportFactory] = None,
    ) -> None:
        self.config = config
        self.client_id = client_id
        self.topics = topics
        self._status = status
        self._on_message = on_message
        self._wake = wake
        self._clock = clock
        self._backoff = Backoff(config.backoff_initial_s, config.backoff_max_s, rng=rng)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._connection = None  # type: Optional[Connection]
        self._generation = 0
        self._replace_generation = -1
        self._thread = None  # type: Optional[threading.Thread]
        self._make_transport = transport_factory
        # topic filters subscribed on every connect; new ones wait for the network thread
        self._subscriptions: List[str] = [topics.command_filter]
        self._new_subscriptions: Deque[str] = collections.deque()
        self._last_error = None  # type: Optional[str]
        self.reconnects = 0  # connection attempts after the first
        self.auth_failures = 0  # refused credentials and failed TLS handshakes
        # a second client with our id (Mosquitto's test 07-will-takeover shows the takeover)
        self.takeover = TakeoverDetector(client_id, STABLE_CONNECTION_S, rng=rng)

    # -- control (any thread) -------------------------------------------------------------

    def start(self, password: Optional[str], tls: Optional[ssl.SSLContext]) -> None:
        if self._make_transport is None:
            self._make_transport = functools.partial(
                compat.PahoTransport, self.config, self.client_id, password, tls
            )
        self._thread = threading.Thread(target=self._run, name="mqtt-network", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Publish ``stopped`` (when connected), disconnect, end the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(JOIN_TIMEOUT_S + STOPPED_ACK_TIMEOUT_S)
            if self._thread.is_alive():
                logger.warning("MQTT network thread still running after stop")

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def current(self) -> Optional[Connection]:
        with self._lock:
            return self._connection

    def replace(self, connection: Connection) -> None:
        """Drop ``connection`` and connect again (an acknowledgement timed out)."""
        self._replace_generation = connection.generation

    def replacing(self, connection: Connection) -> bool:
        return self._replace_generation == connection.generation

    def subscribe(self, topic_filter: str) -> None:
        """Subscribe to ``topic_filter`` now (when connected) and after every connect; its
        messages reach ``on_message``."""
        with self._lock:
            if topic_filter in self._subscriptions:
                return
            self._subscriptions.append(topic_filter)
        self._new_subscriptions.append(topic_filter)

    # -- the network thread ---------------------------------------------------------------

    def _run(self) -> None:
        first = True
        while not self._stop.is_set():
            if not first:
                self.reconnects += 1
            first = False
            try:
                connection = self._connect()
                if connection is not None:
                    since = self._clock()
                    dropped = self._serve(connection)
                    lasted = self._clock() - since
                    if lasted >= STABLE_CONNECTION_S:
                        self._backoff.reset()
                    if dropped:
                        self.takeover.connection_ended(lasted)
            except Exception:  # noqa: BLE001 - top of the network loop: log, back off, retry
                logger.exception("MQTT network loop failed; reconnecting")
                self._set_connection(None)
            if self._stop.is_set():
                break
            delay = self.takeover.delay(self._backoff.next_delay())
            logger.debug("MQTT: next connection attempt in %.2f s", delay)
            self._stop.wait(delay)
        logger.debug("MQTT network thread stopped")

    def _failed(self, reason: str, auth: bool = False) -> None:
        """Log a failed attempt once per distinct reason (then DEBUG), count auth failures."""
        if auth:
            self.auth_failures += 1
        level = logging.DEBUG if reason == self._last_error else logging.WARNING
        self._last_error = reason
        logger.log(
            level,
            "MQTT: cannot connect to %s:%d: %s; retrying with backoff (up to %.0f s)",
            self.config.host,
            self.config.port,
            reason,
            self.config.backoff_max_s,
        )

    def _connect(self) -> Optional[Connection]:
        """One attempt: TCP (+TLS) connect, CONNACK, subscribe, birth. None when it failed."""
        assert self._make_transport is not None, "start() first"
        events = TransportEvents(self._wake, self._on_message)
        transport = self._make_transport(events, self.topics.status, self._status("offline"))
        try:
            transport.connect()
        except (ssl.SSLError, ssl.CertificateError) as e:
            # TLS is mutual authentication: a rejected certificate (either side) counts
            transport.close()
            self._failed(f"TLS handshake failed ({e})", auth=True)
            return None
        except (OSError, ValueError) as e:
            transport.close()
            self._failed(str(e) or type(e).__name__)
            return None
        code = self._wait_connack(transport, events)
        if code != 0:
            transport.close()
            if code is None:
                self._failed(f"no CONNACK within {self.config.connect_timeout_s:.1f} s")
            else:
                auth = code in compat.AUTH_FAILURE_CODES
                self._failed(f"broker refused: {compat.describe_connack(code)}", auth=auth)
            return None
        if events.receive_maximum:  # never more unacknowledged messages than the broker takes
            limit = self.config.max_inflight + compat.INFLIGHT_HEADROOM
            transport.limit_inflight(min(limit, int(events.receive_maximum)))
        with self._lock:
            subscriptions = list(self._subscriptions)
        for topic_filter in subscriptions:
            transport.subscribe(topic_filter)
        transport.publish(self.topics.status, self._status("online"), 1, True)
        connection = self._set_connection(transport, events)
        logger.info(
            "MQTT connected to %s:%d as %s; online published to %s",
            self.config.host,
            self.config.port,
            self.client_id,
            self.topics.status,
        )
        self._last_error = None
        return connection

    def _wait_connack(self, transport: Transport, events: TransportEvents) -> Optional[int]:
        deadline = self._clock() + self.config.connect_timeout_s
        while not self._stop.is_set() and self._clock() < deadline:
            ok = transport.loop(LOOP_TIMEOUT_S)
            while events.events:
                kind, value = events.events.popleft()
                if kind == "connack":
                    return int(value)
            if not ok:
                return None
        return None

    def _set_connection(
        self, transport: Optional[Transport], events: Optional[TransportEvents] = None
    ) -> Optional[Connection]:
        with self._lock:
            self._generation += 1
            if transport is None or events is None:
                self._connection = None
            else:
                self._connection = Connection(transport, events, self._generation)
            connection = self._connection
        self._wake.set()
        return connection

    def _serve(self, connection: Connection) -> bool:
        """Run the connection until it is lost, a reconnect is forced, or shutdown.

        Returns True when the broker or the network ended it, False when edged did.
        """
        transport, events = connection.transport, connection.events
        reason = "connection lost"
        dropped = True
        stable_at: Optional[float] = self._clock() + STABLE_CONNECTION_S
        while True:
            if self._stop.is_set():
                self._say_stopped(transport, events)
                return False
            if self.replacing(connection):
                reason, dropped = "acknowledgements overdue", False
                break
            if stable_at is not None and self._clock() >= stable_at:
                self.takeover.connection_stable()  # clears an alarm while still connected
                stable_at = None
            while self._new_subscriptions:
                transport.subscribe(self._new_subscriptions.popleft())
            try:
                lost = not transport.loop(LOOP_TIMEOUT_S)
            except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
                lost, reason = True, f"connection lost ({e})"
            while events.events:
                kind, value = events.events.popleft()
                if kind == "disconnect":
                    lost = True
                elif kind == "suback" and not value:
                    logger.warning(
                        "MQTT: the broker refused a subscription (commands under %s "
                        "may not arrive; check the ACL)",
                        self.topics.command_filter,
                    )
            if lost:
                break
        self._set_connection(None)
        logger.warning(
            "MQTT disconnected from %s:%d (%s); reconnecting",
            self.config.host,
            self.config.port,
            reason,
        )
        try:
            transport.disconnect()  # a forced reconnect: say goodbye if the socket still works
            transport.loop(LOOP_TIMEOUT_S)
        except (OSError, ValueError):
            pass
        transport.close()
        return dropped

    def _say_stopped(self, transport: Transport, events: TransportEvents) -> None:
        """Clean exit: retained ``stopped``, wait for its PUBACK, DISCONNECT (no will)."""
        connection = Connection(transport, events, -1)
        mid = connection.publish(self.topics.status, self._status("stopped"), 1, True)
        deadline = self._clock() + STOPPED_ACK_TIMEOUT_S
        acked = False
        while mid is not None and self._clock() < deadline and not acked:
            if not transport.loop(LOOP_TIMEOUT_S):
                break
            acked = mid in events.acks
        self._set_connection(None)
        try:
            transport.disconnect()
            for _ in range(3):  # write the DISCONNECT
                if not transport.loop(LOOP_TIMEOUT_S):
                    break
        except (OSError, ValueError):
            pass  # the socket went meanwhile: the broker publishes the will instead
        transport.close()
        logger.info(
            "MQTT: %s published %s, disconnected",
            self.topics.status,
            "stopped" if acked else "stopped (unacknowledged)",
        )
