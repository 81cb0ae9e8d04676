"""Notices a second client using our MQTT client id, and stops the two taking turns (M6).

An MQTT 3.1.1 broker closes the older connection when another client connects
with the same client id, and says nothing about why (Mosquitto
``07-will-takeover``; MQTT 5 would send reason 0x8E). Two Jetsons cloned from one
image keep the same ``device_id``: each reconnect takes the session from the other
and fires the other's will, so the status topic flaps online/offline and the two
devices' results interleave under one id, forever.

The sign is connections the broker accepts and then drops within seconds, again
and again. After :data:`SHORT_CONNECTIONS` in a row edged raises an alarm (one
ERROR line naming the client id, a metric) and waits :data:`HOLDOFF_S` (+-20 %)
before each further attempt, so the other client keeps a stable connection
instead of both flapping. A connection that stays up ``stable_s`` clears the
alarm. Results wait in the durable outbox meanwhile, so a false alarm (a link
that drops every few seconds for another reason) delays them but loses nothing.
"""

import logging
import random
from typing import Optional

logger = logging.getLogger(__name__)

#: Connections dropped by the broker within ``stable_s``, in a row, that raise the alarm.
SHORT_CONNECTIONS = 3
#: Wait between attempts while the alarm is up (+-20 % jitter).
HOLDOFF_S = 120.0


class TakeoverDetector:
    """Counts short connections of one client id; says how long to wait before the next."""

    def __init__(
        self,
        client_id: str,
        stable_s: float,
        short_connections: Optional[int] = None,
        holdoff_s: Optional[float] = None,
        rng: Optional[random.Random] = None,
    ) -> None:
        self.client_id = client_id
        self.stable_s = stable_s
        # module constants read here, not bound at import, so tests can shrink them
        self.short_connections = short_connections or SHORT_CONNECTIONS
        self.holdoff_s = HOLDOFF_S if holdoff_s is None else holdoff_s
        self._rng = rng or random.Random()
        self._short = 0
        self.suspected = False
        self.alarms = 0  # times the alarm was raised

    def connection_ended(self, lasted_s: float) -> None:
        """A connection the broker (not we) ended after ``lasted_s`` seconds."""
        if lasted_s >= self.stable_s:
            self.connection_stable()
            return
        self._short += 1
        if self._short >= self.short_connections and not self.suspected:
            self.suspected = True
            self.alarms += 1
            logger.error(
                "MQTT: the broker dropped %d connections in a row within %.0f s of accepting "
                "them: another client is probably connected with client id %s (two devices "
                "with the same device_id?). Waiting about %.0f s between attempts so that the "
                "other keeps its connection; give each device its own device_id or "
                "mqtt.client_id",
                self._short,
                self.stable_s,
                self.client_id,
                self.holdoff_s,
            )

    def connection_stable(self) -> None:
        """A connection stayed up ``stable_s``: whatever was wrong is over."""
        if self.suspected:
            logger.warning("MQTT: connection as %s is stable again; alarm cleared", self.client_id)
        self.suspected = False
        self._short = 0

    def delay(self, backoff_s: float) -> float:
        """The wait before the next attempt: the backoff's, or the hold-off while suspected."""
        if not self.suspected:
            return backoff_s
        return max(backoff_s, self.holdoff_s * self._rng.uniform(0.8, 1.2))
