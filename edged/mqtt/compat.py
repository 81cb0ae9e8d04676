"""paho-mqtt 1.6 (the Python 3.6 line, JetPack 4.6) and 2.x behind one small surface.

Differences handled here (paho.mqtt.python ``src/paho/mqtt/client.py`` of each line), detected
by feature, not version:

* 2.x requires ``callback_api_version``; edged asks for ``VERSION2`` (VERSION1 is
  deprecated there) and 1.6 has no such argument.
* Callback signatures differ (``on_connect`` gets an int ``rc`` in 1.6 and a
  ``ReasonCode`` in 2.x VERSION2; ``on_publish``/``on_disconnect`` gain
  arguments): :func:`attach` takes ``*args`` and normalises.
* The connect timeout is a property in 2.x and a private attribute in 1.6.
* MQTT 5 (both lines, paho >= 1.5): no ``clean_session`` argument (``clean_start``
  in ``connect()`` instead), CONNECT properties and subscription options; a paho
  without ``paho.mqtt.subscribeoptions`` cannot speak it (:data:`HAS_MQTT5`).

:class:`PahoTransport` puts it behind :class:`.transport.Transport`. The callbacks only
ENQUEUE (paho#177, #354, #527: publishing or taking
application locks inside a callback can deadlock against paho's own mutexes).
"""

import ssl
from typing import Any, Optional

import paho.mqtt
import paho.mqtt.client as mqtt

from .transport import Transport, TransportEvents

#: CONNACK refusals that mean "wrong credentials or not allowed": MQTT 3.1.1 codes 4 and 5,
#: and the MQTT 5 reason codes paho 2.x reports for them (134 bad user name or password,
#: 135 not authorised).
AUTH_FAILURE_CODES = frozenset([4, 5, 134, 135])

CONNACK_MEANINGS = {
    # edged speaks MQTT 5 by default; a broker that only knows 3.1.1 refuses it this way
    1: 'unacceptable protocol version (a broker without MQTT 5: set mqtt.protocol: "3.1.1")',
    132: 'unsupported protocol version (set mqtt.protocol: "3.1.1" for this broker)',
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
    134: "bad user name or password",
    135: "not authorised",
}

PAHO_VERSION = str(paho.mqtt.__version__)
HAS_CALLBACK_API_VERSION = hasattr(mqtt, "CallbackAPIVersion")

try:  # paho >= 1.5 (1.6.1 on Python 3.6, 2.x): MQTT 5 properties and subscription options
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    from paho.mqtt.subscribeoptions import SubscribeOptions

    HAS_MQTT5 = hasattr(mqtt, "MQTTv5")
except ImportError:  # pragma: no cover - paho < 1.5 is not in constraints/
    HAS_MQTT5 = False

#: Extra in-flight room in paho for status, state and reply messages besides results.
INFLIGHT_HEADROOM = 64
#: Room for a command's PUBLISH header (topic, packet id, properties) beyond its payload.
COMMAND_PACKET_HEADROOM = 8192

MQTT5 = "5"
MQTT311 = "3.1.1"
#: ``mqtt.protocol`` values and paho's protocol constants.
PROTOCOLS = {MQTT311: mqtt.MQTTv311, MQTT5: getattr(mqtt, "MQTTv5", None)}


def code_value(rc: Any) -> int:
    """An int from a 1.6 ``rc`` or a 2.x ``ReasonCode``."""
    value = getattr(rc, "value", rc)
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def max_command_packet(max_command_bytes: int) -> int:
    """The MQTT 5 Maximum Packet Size edged asks for: only commands come to edged, so a
    packet larger than the largest command and its header is refused by the broker
    (docs/mqtt.md, "Command size")."""
    return int(max_command_bytes) + COMMAND_PACKET_HEADROOM


def describe_connack(code: int) -> str:
    return CONNACK_MEANINGS.get(code, f"refused with code {code}")


def protocol_problem(protocol: str) -> Optional[str]:
    """Why ``mqtt.protocol`` cannot be used with the installed paho, or None."""
    if protocol == MQTT5 and not HAS_MQTT5:
        return f"MQTT 5 needs paho-mqtt >= 1.5 (installed: {PAHO_VERSION}); set protocol: 3.1.1"
    return None


def new_client(client_id: str, connect_timeout_s: float, protocol: str = MQTT311) -> "mqtt.Client":
    """A fresh client (edged keeps its own outbox): a clean session on 3.1.1; on MQTT 5 the
    clean start is asked for in :func:`connect`."""
    kwargs = {"client_id": client_id, "protocol": PROTOCOLS[protocol]}  # type: dict
    if protocol != MQTT5:  # paho refuses clean_session for MQTT 5
        kwargs["clean_session"] = True
    if HAS_CALLBACK_API_VERSION:
        kwargs["callback_api_version"] = mqtt.CallbackAPIVersion.VERSION2
    client = mqtt.Client(**kwargs)
    if isinstance(getattr(type(client), "connect_timeout", None), property):
        client.connect_timeout = connect_timeout_s
    else:  # paho 1.6.1: only the attribute (socket.create_connection's timeout)
        client._connect_timeout = connect_timeout_s
    return client


def connect(
    client: "mqtt.Client",
    protocol: str,
    host: str,
    port: int,
    keepalive: int,
    max_packet_bytes: int,
) -> None:
    """``client.connect``; on MQTT 5 with a clean start, no session kept after the connection
    (Session Expiry Interval 0) and the Maximum Packet Size edged accepts (MQTT 5.0 section
    3.1.2.11.4: the broker must not send a larger packet, it discards it instead), so an
    oversized command never reaches paho, which would read all of it into memory first."""
    if protocol != MQTT5:
        client.connect(host, port, keepalive)
        return
    properties = Properties(PacketTypes.CONNECT)
    properties.MaximumPacketSize = int(max_packet_bytes)
    client.connect(host, port, keepalive, clean_start=True, properties=properties)


def subscribe(client: "mqtt.Client", protocol: str, topic_filter: str) -> None:
    """Subscribe at QoS 1; on MQTT 5 with Retain As Published (MQTT 5.0 section 3.8.3.1): the
    broker keeps the retain flag of a message forwarded while connected, which a 3.1.1 broker
    clears (MQTT 3.1.1 section 3.3.1.3), so a retained command is known as one."""
    if protocol != MQTT5:
        client.subscribe(topic_filter, qos=1)
        return
    client.subscribe(topic_filter, options=SubscribeOptions(qos=1, retainAsPublished=True))


def limit_inflight(client: "mqtt.Client", limit: int) -> None:
    """Lower paho's in-flight limit right after CONNACK, before anything is published.

    paho 2.x refuses ``max_inflight_messages_set`` on an open connection (its changes
    between 0 and a positive limit are untested); nothing is in flight yet here and the
    limit stays positive, so the attribute both lines keep is set directly.
    """
    client._max_inflight_messages = max(1, int(limit))


def attach(client: "mqtt.Client", events: TransportEvents) -> None:
    """Route a client's callbacks, whatever their paho signature, to ``events`` (which only
    enqueue)."""

    def on_connect(client: Any, userdata: Any, flags: Any, rc: Any, *rest: Any) -> None:
        # MQTT 5 CONNACK: the broker's Receive Maximum (MQTT 5.0 section 3.2.2.3.3), which
        # paho (1.6 and 2.x) does not apply to its own in-flight limit
        properties = rest[0] if rest else None
        events.connack(code_value(rc), getattr(properties, "ReceiveMaximum", None))

    def on_disconnect(client: Any, userdata: Any, *rest: Any) -> None:
        events.disconnected()

    def on_publish(client: Any, userdata: Any, mid: int, *rest: Any) -> None:
        events.acked(int(mid))

    def on_subscribe(client: Any, userdata: Any, mid: int, granted: Any, *rest: Any) -> None:
        codes = [code_value(g) for g in (granted or [])]
        events.subscribed(bool(codes) and all(0 <= c < 0x80 for c in codes))

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        try:
            topic = str(message.topic)
        except UnicodeDecodeError:  # paho 1.6 decodes on access; a broker should have refused it
            topic = ""
        events.message(topic, bytes(message.payload), bool(message.retain))

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_publish = on_publish
    client.on_subscribe = on_subscribe
    client.on_message = on_message


class PahoTransport(Transport):
    """:class:`~.transport.Transport` on a fresh paho client: clean session, retained will,
    writes left to :meth:`loop` (:func:`quiet_writes`)."""

    def __init__(
        self,
        config: Any,
        client_id: str,
        password: Optional[str],
        tls: Optional[ssl.SSLContext],
        events: TransportEvents,
        will_topic: str,
        will_payload: bytes,
    ) -> None:
        self._config = config  # an edged.config.MqttConfig
        self.client = new_client(client_id, config.connect_timeout_s, config.protocol)
        attach(self.client, events)
        quiet_writes(self.client)
        self.client.max_inflight_messages_set(config.max_inflight + INFLIGHT_HEADROOM)
        if config.username is not None:
            self.client.username_pw_set(config.username, password)
        if tls is not None:
            self.client.tls_set_context(tls)
        self.client.will_set(will_topic, will_payload, qos=1, retain=True)

    def connect(self) -> None:
        config = self._config
        connect(
            self.client,
            config.protocol,
            config.host,
            config.port,
            int(round(config.keepalive_s)),
            max_command_packet(config.max_command_bytes),
        )

    def loop(self, timeout_s: float) -> bool:
        return loop_ok(self.client.loop(timeout_s))

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> Optional[int]:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        return int(info.mid) if loop_ok(info.rc) else None

    def subscribe(self, topic_filter: str) -> None:
        subscribe(self.client, self._config.protocol, topic_filter)

    def limit_inflight(self, limit: int) -> None:
        limit_inflight(self.client, limit)

    def disconnect(self) -> None:
        self.client.disconnect()

    def close(self) -> None:
        dispose(self.client)


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT wildcard matching (``+`` one level, ``#`` the rest), as the broker does it."""
    return bool(mqtt.topic_matches_sub(topic_filter, topic))


def loop_ok(rc: Any) -> bool:
    return code_value(rc) == mqtt.MQTT_ERR_SUCCESS


def dispose(client: "mqtt.Client") -> None:
    """Close a client's socket and its wake-up socket pair now.

    edged makes a fresh client per connection (so paho's in-memory session never
    resends behind the outbox's back); without this, each discarded client would
    hold its file descriptors until garbage collection. ``_reset_sockets`` is what
    paho's own ``__del__`` calls, in 1.6 and 2.x alike.
    """
    reset = getattr(client, "_reset_sockets", None)
    if reset is not None:
        reset()


def quiet_writes(client: "mqtt.Client") -> None:
    """Make ``publish()`` from any thread only QUEUE the packet; the network thread writes.

    Without a loop thread of its own paho writes to the socket from whichever thread
    publishes, and two threads writing at once could interleave partial packets.
    A registered ``on_socket_register_write`` makes paho leave writing to ``loop()``
    (it also wakes ``loop()``'s select through its socket pair).
    """
    client.on_socket_register_write = _ignore


def _ignore(*args: Any) -> None:
    """Nothing to do: the network thread's ``loop()`` writes whatever is queued."""
