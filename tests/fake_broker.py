"""A STAND-IN broker behind edged's :class:`~edged.mqtt.transport.Transport` (no sockets).

For fast tests of the in-flight window, ack timeouts, resends, birth and
``stopped`` on a fake clock. It models only what edged sees through the
transport interface: CONNACK (with an optional MQTT 5 Receive Maximum),
PUBACKs (automatic, or held back and released by the test), retained messages,
the will on a lost connection, subscriptions and messages sent to edged. The
real broker, end to end, is tests/mosquitto.py (tests/test_mqtt_broker.py and
the other test_mqtt_*.py files).
"""

import threading
import time
from typing import List, Optional

from edged.mqtt.compat import topic_matches
from edged.mqtt.transport import Transport, TransportEvents

#: How long one fake ``loop()`` really sleeps: keeps the network thread from spinning.
LOOP_SLEEP_S = 0.002


class Publication:
    """One PUBLISH the broker received."""

    def __init__(
        self, connection: int, topic: str, payload: bytes, qos: int, retain: bool, mid: int
    ):
        self.connection = connection  # index into FakeBroker.connections
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.mid = mid

    def __repr__(self) -> str:
        return f"Publication({self.connection}, {self.topic!r}, {self.payload[:40]!r})"


class FakeBroker:
    """Accepts every connection; ``auto_ack`` False holds PUBACKs until :meth:`ack`."""

    def __init__(
        self,
        receive_maximum: Optional[int] = None,
        auto_ack: bool = True,
        counted: str = "#",
    ) -> None:
        self.receive_maximum = receive_maximum
        self.auto_ack = auto_ack
        self.counted = counted  # the topic filter whose unacknowledged messages most_unacked counts
        self.lock = threading.RLock()
        self.connections = []  # type: List[FakeTransport]
        self.published = []  # type: List[Publication]
        self.retained = {}  # topic -> payload
        self.most_unacked = 0  # the most counted QoS 1 messages unacknowledged at once

    # -- the transport factory edged calls (edged.mqtt.transport.TransportFactory) --------

    def factory(
        self, events: TransportEvents, will_topic: str, will_payload: bytes
    ) -> "FakeTransport":
        return FakeTransport(self, events, will_topic, will_payload)

    # -- what the test does --------------------------------------------------------------

    @property
    def current(self) -> Optional["FakeTransport"]:
        with self.lock:
            live = [c for c in self.connections if c.connected]
            return live[-1] if live else None

    def drop(self) -> None:
        """The network fails: the live connection ends without DISCONNECT (the will fires)."""
        connection = self.current
        if connection is not None:
            connection.lose()

    def ack(self, n: Optional[int] = None) -> int:
        """Send the PUBACKs held back on the live connection, oldest first (``n`` of them)."""
        connection = self.current
        return connection.release(n) if connection is not None else 0

    def send(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """A message from another client to edged (delivered when a subscription matches)."""
        connection = self.current
        assert connection is not None, "edged is not connected"
        with self.lock:
            connection.inbound.append((topic, payload, retain))

    def on(self, topic: str, connection: Optional[int] = None) -> List[Publication]:
        with self.lock:
            return [
                p
                for p in self.published
                if p.topic == topic and (connection is None or p.connection == connection)
            ]

    def unacked(self) -> int:
        connection = self.current
        return len(connection.unacked) if connection is not None else 0


class FakeTransport(Transport):
    """One client connection as the stand-in broker sees it."""

    def __init__(self, broker: FakeBroker, events: TransportEvents, will_topic: str, will: bytes):
        self.broker = broker
        self.events = events
        self.will = (will_topic, will)
        self.index = -1
        self.connected = False
        self.clean = False  # ended by DISCONNECT
        self.subscriptions = []  # type: List[str]
        self.inflight_limit = None  # type: Optional[int]
        self.unacked = []  # type: List[int]
        self.counted_unacked = set()  # message ids
        self.inbound = []  # type: List[tuple]
        self._next_mid = 0

    def connect(self) -> None:
        with self.broker.lock:
            self.index = len(self.broker.connections)
            self.broker.connections.append(self)
            self.connected = True
        self.events.connack(0, self.broker.receive_maximum)

    def loop(self, timeout_s: float) -> bool:
        time.sleep(min(timeout_s, LOOP_SLEEP_S))
        if not self.connected:
            return False
        if self.broker.auto_ack:
            self.release(None)
        with self.broker.lock:
            inbound, self.inbound = self.inbound, []
        for topic, payload, retain in inbound:
            if any(topic_matches(f, topic) for f in self.subscriptions):
                self.events.message(topic, payload, retain)
        return True

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> Optional[int]:
        with self.broker.lock:
            if not self.connected:
                return None
            self._next_mid += 1
            mid = self._next_mid
            self.broker.published.append(Publication(self.index, topic, payload, qos, retain, mid))
            if retain:
                if payload:
                    self.broker.retained[topic] = payload
                else:
                    self.broker.retained.pop(topic, None)
            if qos == 0:
                self.events.acked(mid)  # paho reports a QoS 0 publish as soon as it is written
            else:
                self.unacked.append(mid)
                if topic_matches(self.broker.counted, topic):
                    self.counted_unacked.add(mid)
                    most = max(self.broker.most_unacked, len(self.counted_unacked))
                    self.broker.most_unacked = most
        return mid

    def subscribe(self, topic_filter: str) -> None:
        self.subscriptions.append(topic_filter)
        self.events.subscribed(True)

    def limit_inflight(self, limit: int) -> None:
        self.inflight_limit = limit

    def disconnect(self) -> None:
        with self.broker.lock:
            if self.connected:
                self.clean = True
                self.connected = False
        self.events.disconnected()

    def close(self) -> None:
        self.lose()

    # -- the broker's side ---------------------------------------------------------------

    def release(self, n: Optional[int]) -> int:
        with self.broker.lock:
            if not self.connected:
                return 0
            mids = self.unacked if n is None else self.unacked[:n]
            self.unacked = self.unacked[len(mids) :]
            self.counted_unacked.difference_update(mids)
        for mid in mids:
            self.events.acked(mid)
        return len(mids)

    def lose(self) -> None:
        with self.broker.lock:
            if not self.connected:
                return
            self.connected = False
            topic, payload = self.will
            self.broker.retained[topic] = payload
            self.broker.published.append(Publication(self.index, topic, payload, 1, True, 0))
        self.events.disconnected()
