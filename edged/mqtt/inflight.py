"""Results from the outbox to the broker: the in-flight window, acknowledgements, timeouts.

Committed outbox messages go out oldest first with at most ``max_inflight``
unacknowledged (fewer when the broker's MQTT 5 Receive Maximum is smaller,
MQTT 5.0 section 3.3.4: a client must not have more QoS 1 publications in
flight than that); each one is deleted from the outbox when its PUBACK arrives.
After a reconnect sending starts again from the oldest message left (at least
once; consumers dedupe by seq). A message unacknowledged for ``ack_timeout_s``
forces a reconnect, because paho never resends while connected (paho commit
9a47140): the new connection resends it.

:class:`InflightWindow` is the bookkeeping over an injected clock;
:class:`ResultSender` is what the ``mqtt-publisher`` thread does with it on each
tick. Neither touches a socket: they publish through a :class:`~.link.Connection`
(whose transport only queues) and ask the :class:`~.link.BrokerLink` to replace
a connection whose acknowledgements are overdue.
"""

import collections
import logging
from typing import Callable, Dict, List, Optional

from .link import BrokerLink, Connection
from .outbox import Outbox

logger = logging.getLogger(__name__)


class InflightWindow:
    """Outbox messages handed to the current connection and not yet acknowledged.

    ``cursor`` is the id of the newest message sent on this connection (the next
    ones to send come after it); :meth:`reset` (a new connection) sets it back to 0.
    """

    def __init__(self, max_inflight: int, ack_timeout_s: float, clock: Callable[[], float]) -> None:
        self.max_inflight = int(max_inflight)
        self.ack_timeout_s = float(ack_timeout_s)
        self._clock = clock
        self.capacity = self.max_inflight
        self.cursor = 0
        self._sent_at: Dict[int, float] = collections.OrderedDict()  # outbox id -> sent, in order
        self._by_mid: Dict[int, int] = {}  # MQTT message id -> outbox id

    def __len__(self) -> int:
        return len(self._sent_at)

    def reset(self, receive_maximum: Optional[int] = None) -> None:
        """A new connection: nothing in flight, resend from the oldest message."""
        self._sent_at.clear()
        self._by_mid.clear()
        self.cursor = 0
        self.capacity = self.max_inflight
        if receive_maximum:
            self.capacity = max(1, min(self.max_inflight, int(receive_maximum)))

    def room(self) -> int:
        return max(0, self.capacity - len(self._sent_at))

    def sent(self, message_id: int, mid: int) -> None:
        self._sent_at[message_id] = self._clock()
        self._by_mid[mid] = message_id
        self.cursor = message_id

    def acked(self, mid: int) -> Optional[int]:
        """The outbox id a PUBACK completes, or None (a status, state or reply message)."""
        message_id = self._by_mid.pop(mid, None)
        if message_id is not None:
            self._sent_at.pop(message_id, None)
        return message_id

    def overdue(self) -> bool:
        """True once the oldest message in flight waited ``ack_timeout_s`` for its PUBACK."""
        if not self._sent_at:
            return False
        oldest_sent = next(iter(self._sent_at.values()))
        return self._clock() - oldest_sent >= self.ack_timeout_s

    def expire(self) -> int:
        """Give up waiting (the connection is replaced); how many were in flight. A PUBACK
        that still arrives on the old connection still deletes its message."""
        count = len(self._sent_at)
        self._sent_at.clear()
        return count


class ResultSender:
    """One tick of the publisher thread for results: acks in, timeouts, new messages out.

    ``count(name, n)`` adds to the service's ``published_total`` and
    ``publish_failed_total`` counters.
    """

    def __init__(
        self,
        outbox: Outbox,
        link: BrokerLink,
        window: InflightWindow,
        count: Callable[[str, int], None],
    ) -> None:
        self._outbox = outbox
        self._link = link
        self.window = window
        self._count = count

    def switch(self, old: Optional[Connection], new: Optional[Connection]) -> None:
        """The connection changed: take the acks that came before the old one went, then
        start again from the oldest message on the new one."""
        if old is not None:
            self.take_acks(old)
        receive_maximum = new.events.receive_maximum if new is not None else None
        self.window.reset(receive_maximum)

    def send(self, connection: Connection) -> bool:
        """Acks, the timeout check, then as many messages as the window has room for.

        Returns False when nothing more goes on this connection (being replaced)."""
        self.take_acks(connection)
        if self._expire_overdue(connection):
            return False
        if self._link.replacing(connection):
            return False  # this connection is being replaced: send nothing more on it
        self._dispatch(connection)
        return True

    def take_acks(self, connection: Connection) -> None:
        acks = connection.events.acks
        done: List[int] = []
        while acks:
            message_id = self.window.acked(acks.popleft())
            if message_id is not None:
                done.append(message_id)
        if done:
            self._outbox.remove(done)
            self._count("published_total", len(done))

    def _expire_overdue(self, connection: Connection) -> bool:
        """True (and a reconnect requested) when the oldest in-flight message waited too long."""
        if not self.window.overdue():
            return False
        expired = self.window.expire()
        self._count("publish_failed_total", expired)
        logger.warning(
            "MQTT: %d messages unacknowledged for %.0f s: forcing a reconnect",
            expired,
            self.window.ack_timeout_s,
        )
        self._link.replace(connection)
        return True

    def _dispatch(self, connection: Connection) -> None:
        room = self.window.room()
        if room <= 0:
            return
        for message in self._outbox.pending(self.window.cursor, room):
            mid = connection.publish(message.topic, message.payload, message.qos, False)
            if mid is None:
                self._count("publish_failed_total", 1)
                break  # the connection is going; the network thread notices
            self.window.sent(message.id, mid)
