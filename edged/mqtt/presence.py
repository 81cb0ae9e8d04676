"""What edged says about itself: the status payloads and the retained stream states.

The status topic carries ``online`` (the birth, with the models and streams
running), ``offline`` (the will) and ``stopped`` (a clean exit), all retained;
:meth:`Presence.status` builds them and :class:`~.link.BrokerLink` publishes
them at the right moments (the will at every connect, the birth after every
connect, ``stopped`` before a clean DISCONNECT). On the publisher thread,
:meth:`Presence.poll` publishes each stream's retained state when its capture
or engine state changed, all of them after a connect, clears the retained
state of a stream that went away (``stopped`` instead while edged shuts down),
and publishes the birth again when a reload changed models or streams.
"""

import logging
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..config import MqttConfig
from .control import DaemonControl
from .link import Connection
from .payloads import status_payload, stream_state_payload
from .topics import Topics

logger = logging.getLogger(__name__)


class Presence:
    """Status payloads and per-stream retained states of one device."""

    def __init__(
        self,
        config: MqttConfig,
        device_id: str,
        boot_id: str,
        topics: Topics,
        control: DaemonControl,
        stop_event: threading.Event,
    ) -> None:
        self._config = config
        self._device_id = device_id
        self._boot_id = boot_id
        self._topics = topics
        self._control = control
        self._stop = stop_event  # the daemon's: set while edged shuts down
        self._warned_mqtt_change = False
        # what was published per stream: stream -> (state key, status dict, model)
        self._published_states: Dict[str, Tuple[Any, Dict[str, Any], Optional[str]]] = {}
        self._published_birth: Optional[Tuple[Any, ...]] = None
        self._pollers: List[Callable[[Connection, bool], None]] = []

    def also_poll(self, poller: Callable[[Connection, bool], None]) -> None:
        """Run ``poller(connection, force)`` on every poll too, after the stream states (other
        retained per-stream messages: :mod:`.counting`'s counts)."""
        self._pollers.append(poller)

    def status(self, state: str) -> bytes:
        """The status payload (``online`` with the models and streams running now)."""
        if state != "online":
            return status_payload(state, self._device_id, self._boot_id, time.time())
        models, streams = self._control.models(), self._control.stream_ids()
        return status_payload(state, self._device_id, self._boot_id, time.time(), models, streams)

    def poll(self, connection: Connection, force: bool) -> None:
        """Publish changed stream states (retained) and a changed birth; ``force`` right after
        a connect (the link just published the birth)."""
        now = time.time()
        states = self._control.stream_states()
        for stream_id, (status, model) in sorted(states.items()):
            previous = self._published_states.get(stream_id)
            engine = status.get("engine") or {}
            key = (status["state"], engine.get("state"), engine.get("fraction"))
            if force or previous is None or previous[0] != key:
                payload = stream_state_payload(self._device_id, status, model, now)
                self._publish(connection, self._topics.stream_state(stream_id), payload)
            self._published_states[stream_id] = (key, status, model)
        for stream_id in sorted(set(self._published_states) - set(states)):
            self._retire_state(connection, stream_id, now)
        for poller in self._pollers:
            poller(connection, force)
        birth = (
            tuple(str(sorted(m.items())) for m in self._control.models()),
            tuple(self._control.stream_ids()),
        )
        if force:
            self._published_birth = birth
        elif birth != self._published_birth:
            self._published_birth = birth
            self._publish(connection, self._topics.status, self.status("online"))
        self._check_mqtt_config()

    def final(self, connection: Optional[Connection]) -> None:
        """On shutdown: the last stream states (``stopped`` for streams that went away)."""
        if connection is None:
            return
        try:
            self.poll(connection, force=False)
        except Exception:  # noqa: BLE001 - shutdown goes on
            logger.exception("MQTT: final stream states not published")

    def _retire_state(self, connection: Connection, stream_id: str, now: float) -> None:
        """A stream went away: ``stopped`` while edged shuts down, else clear the retained state."""
        _, status, model = self._published_states.pop(stream_id)
        if self._stop.is_set():
            stopped = dict(status, state="stopped", state_age_s=0.0, fps=0.0)
            payload = stream_state_payload(self._device_id, stopped, model, now)
        else:
            payload = b""  # an empty retained message deletes the retained state
        self._publish(connection, self._topics.stream_state(stream_id), payload)

    def _check_mqtt_config(self) -> None:
        current = self._control.mqtt_config()
        if current is not None and current != self._config and not self._warned_mqtt_change:
            self._warned_mqtt_change = True
            logger.warning(
                "MQTT: the mqtt section changed in the reloaded config; restart edged "
                "to apply it (the running connection keeps the old settings)"
            )

    @staticmethod
    def _publish(connection: Connection, topic: str, payload: bytes) -> bool:
        return connection.publish(topic, payload, 1, True) is not None
