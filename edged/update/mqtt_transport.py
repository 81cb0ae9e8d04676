"""The updater's MQTT transport: a second connection built from the device's ``mqtt`` config.

Why a connection of its own rather than the result connection (edged/mqtt/service.py): that
one's publisher owns the in-flight budget (``mqtt.max_inflight``) and the outbox's ack
bookkeeping, and its client is replaced on every reconnect; chunk traffic on it would take
in-flight slots from results. Here model chunks have their own budget (the update window) and
results keep theirs. The client id is ``<mqtt.client_id or edged-<device>>-update``; topics
stay under the device's subtree, so the broker ACL pattern for the device covers both
(docs/mqtt.md "Access control").

paho's network thread runs the callbacks, which only hand messages to the updater's queue;
paho reconnects with backoff, and every connect subscribes again (clean session).
"""

import logging
import threading
from typing import Any, Callable, List, Optional, Sequence

from ..config.model import MqttConfig
from ..errors import PublishError
from ..mqtt import compat
from ..mqtt.link import resolve_password, tls_context
from .seams import Transport

logger = logging.getLogger(__name__)


class MqttTransport(Transport):
    def __init__(self, config: MqttConfig, device_id: str) -> None:
        self.config = config
        self.client_id = (config.client_id or f"edged-{device_id}") + "-update"
        self.handler: Optional[Callable[[str, bytes], None]] = None
        self._topics: List[str] = []
        self._connected = threading.Event()
        self._client: Any = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        """Connect in the background (paho's thread keeps reconnecting)."""
        config = self.config
        client = compat.new_client(self.client_id, config.connect_timeout_s)
        if config.username:
            client.username_pw_set(config.username, resolve_password(config))
        context = tls_context(config)
        if context is not None:
            client.tls_set_context(context)
        client.reconnect_delay_set(
            max(1, int(config.backoff_initial_s)), max(1, int(config.backoff_max_s))
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        client.connect_async(config.host, config.port, int(config.keepalive_s))
        client.loop_start()

    def stop(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            compat.dispose(self._client)

    def subscribe(self, topics: Sequence[str]) -> None:
        self._topics = list(topics)
        if self._client is not None and self.connected:
            self._client.subscribe([(t, 1) for t in self._topics])

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        if self._client is None:
            raise PublishError("update transport: not started")
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if not compat.loop_ok(info.rc) and compat.code_value(info.rc) != 4:  # 4: not connected
            raise PublishError(f"update transport: publish failed (rc {info.rc})")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, *rest: Any) -> None:
        code = compat.code_value(rc)
        if code != 0:
            logger.warning("update transport: %s", compat.describe_connack(code))
            return
        self._connected.set()
        if self._topics:
            client.subscribe([(t, 1) for t in self._topics])

    def _on_disconnect(self, client: Any, userdata: Any, *rest: Any) -> None:
        self._connected.clear()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        if self.handler is not None:
            self.handler(str(message.topic), bytes(message.payload))
