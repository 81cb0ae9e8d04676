"""What edged needs of one MQTT client connection, as a small interface.

:class:`Transport` is one connection attempt's client: the network thread
(:mod:`.link`) connects it, runs its loop and disconnects it; any thread may
:meth:`~Transport.publish` on it (that only queues, the loop writes). What the
broker sends back arrives as calls on :class:`TransportEvents`, which only append
to queues and set the wake event (paho#177, #354, #527: work inside a paho
callback can deadlock against paho's own locks).

The real implementation is :class:`.compat.PahoTransport`; the tests drive the
same link, in-flight window and presence code through a stand-in broker
(``tests/fake_broker.py``) on a fake clock.
"""

import collections
import threading
from typing import Any, Callable, Deque, Optional, Tuple

#: ``on_message(topic, payload, retain)``: runs on the network thread, must only enqueue.
MessageHandler = Callable[[str, bytes, bool], None]


class TransportEvents:
    """What the broker said on one connection, queued for the network and publisher threads.

    ``events`` gets ``("connack", code)``, ``("disconnect", None)`` and
    ``("suback", granted_ok)``; ``acks`` gets the message id of every completed
    publish; ``receive_maximum`` is the broker's MQTT 5 Receive Maximum from the
    CONNACK (MQTT 5.0 section 3.2.2.3.3), None on 3.1.1 or when not given.
    """

    def __init__(self, wake: threading.Event, on_message: MessageHandler) -> None:
        self.events: Deque[Tuple[str, Any]] = collections.deque()
        self.acks: Deque[int] = collections.deque()
        self.receive_maximum: Optional[int] = None
        self._wake = wake
        self._on_message = on_message

    def connack(self, code: int, receive_maximum: Optional[int] = None) -> None:
        self.receive_maximum = receive_maximum
        self.events.append(("connack", int(code)))

    def disconnected(self) -> None:
        self.events.append(("disconnect", None))
        self._wake.set()

    def acked(self, mid: int) -> None:
        self.acks.append(int(mid))
        self._wake.set()

    def subscribed(self, granted_ok: bool) -> None:
        self.events.append(("suback", bool(granted_ok)))

    def message(self, topic: str, payload: bytes, retain: bool) -> None:
        self._on_message(topic, payload, retain)


class Transport:
    """One client connection to the broker (a fresh one per connection attempt).

    Errors: :meth:`connect` raises ``OSError``/``ValueError`` (``ssl.SSLError`` and
    ``ssl.CertificateError`` for TLS); :meth:`loop` and :meth:`publish` may raise
    ``OSError``/``ValueError`` once the socket is gone.
    """

    def connect(self) -> None:
        """Open the connection and send CONNECT; the CONNACK comes as an event."""
        raise NotImplementedError

    def loop(self, timeout_s: float) -> bool:
        """Read and write for up to ``timeout_s``; False when the connection is lost."""
        raise NotImplementedError

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> Optional[int]:
        """Queue a message; its message id (acknowledged through ``acks``), or None if refused."""
        raise NotImplementedError

    def subscribe(self, topic_filter: str) -> None:
        """Subscribe at QoS 1; the SUBACK comes as an event."""
        raise NotImplementedError

    def limit_inflight(self, limit: int) -> None:
        """Never more than ``limit`` unacknowledged QoS 1 messages on the wire."""
        raise NotImplementedError

    def disconnect(self) -> None:
        """Queue a clean DISCONNECT (the broker then drops the will)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the socket now (the transport is not used again)."""
        raise NotImplementedError


#: ``factory(events, will_topic, will_payload)``: a new, unconnected transport whose
#: broker publishes the retained will when the connection is lost without DISCONNECT.
TransportFactory = Callable[[TransportEvents, str, bytes], Transport]
