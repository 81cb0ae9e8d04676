"""The in-flight window, ack timeouts, resends, birth and ``stopped`` on a STAND-IN broker
(tests/fake_broker.py) and a fake clock: fast and exact. The same behaviour against a real
Mosquitto, end to end, is in tests/test_mqtt_broker.py."""

import json
import queue
import threading

import pytest

from edged.config import parse_config
from edged.mqtt.compat import INFLIGHT_HEADROOM
from edged.mqtt.control import DaemonControl
from edged.mqtt.inflight import InflightWindow, ResultSender
from edged.mqtt.link import BrokerLink, Connection
from edged.mqtt.outbox import Outbox
from edged.mqtt.service import MqttService
from edged.mqtt.topics import Topics
from edged.mqtt.transport import TransportEvents

from .fake_broker import FakeBroker
from .helpers import FakeClock, wait_for

DEVICE = "dev1"
TOPICS = Topics("edged", DEVICE)
STATUS = TOPICS.status
RESULTS = TOPICS.results("cam", "detection")
ACK_TIMEOUT_S = 10.0
#: A step of the fake clock that floats add exactly (2**-10 s).
EPS = 2.0**-10

pytestmark = pytest.mark.timeout(60)


def mqtt_config(tmp_path, max_inflight=4, extra=""):
    text = (
        f"device_id: {DEVICE}\n"
        f"mqtt: {{host: 127.0.0.1, port: 1883, ack_timeout_s: {ACK_TIMEOUT_S}, "
        "backoff_initial_s: 0.01, backoff_max_s: 0.02, "
        f"max_inflight: {max_inflight}, "
        f"outbox: {{path: {tmp_path / 'outbox.sqlite3'}, commit_interval_ms: 20}}{extra}}}\n"
    )
    return parse_config(text).mqtt


def add(outbox, n, start=0):
    payloads = [f"result {i}".encode() for i in range(start, start + n)]
    for payload in payloads:
        assert outbox.append(RESULTS, payload, 1)
    outbox.flush()
    return payloads


def sent_results(broker, connection=None):
    return [p.payload for p in broker.on(RESULTS, connection)]


class Rig:
    """The publisher thread's parts, driven tick by tick by the test (no threads)."""

    def __init__(self, tmp_path, broker, max_inflight=4):
        self.clock = FakeClock()
        self.broker = broker
        config = mqtt_config(tmp_path, max_inflight)
        self.outbox = Outbox(config.outbox.path, clock=self.clock)
        self.outbox.open()
        self.wake = threading.Event()
        topics = Topics(config.topic_prefix, DEVICE)
        self.link = BrokerLink(
            config, "c", topics, lambda s: s.encode(), self.ignore, self.wake, self.clock
        )
        self.counts = {"published_total": 0, "publish_failed_total": 0}
        window = InflightWindow(config.max_inflight, config.ack_timeout_s, self.clock)
        self.sender = ResultSender(self.outbox, self.link, window, self.count)
        self.connection = None
        self.generation = 0

    @staticmethod
    def ignore(topic, payload, retain):
        pass

    def count(self, name, n):
        self.counts[name] += n

    def connect(self):
        """A new connection, as the network thread makes one after the old one went."""
        events = TransportEvents(self.wake, self.ignore)
        transport = self.broker.factory(events, STATUS, b"offline")
        transport.connect()
        self.generation += 1
        new = Connection(transport, events, self.generation)
        self.sender.switch(self.connection, new)
        self.connection = new
        if self.connection.transport is not self.broker.current:
            raise AssertionError("the stand-in broker lost the connection")

    def tick(self):
        return self.sender.send(self.connection)


@pytest.fixture
def rig(tmp_path):
    made = []

    def make(**kwargs):
        broker = FakeBroker(auto_ack=False, **kwargs.pop("broker", {}))
        made.append(Rig(tmp_path, broker, **kwargs))
        return made[-1]

    yield make
    for r in made:
        r.outbox.close()


def test_an_unacknowledged_message_forces_a_reconnect_exactly_after_ack_timeout_s(rig):
    r = rig()
    payloads = add(r.outbox, 3)
    r.connect()
    assert r.tick() and sent_results(r.broker, 0) == payloads
    r.clock.advance(ACK_TIMEOUT_S - EPS)
    assert r.tick() and not r.link.replacing(r.connection)
    assert r.counts["publish_failed_total"] == 0
    r.clock.advance(EPS)
    assert not r.tick()  # overdue: nothing more on this connection
    assert r.link.replacing(r.connection)
    assert r.counts["publish_failed_total"] == 3
    assert not r.tick()  # still being replaced: nothing sent, nothing counted twice
    assert r.counts["publish_failed_total"] == 3 and len(sent_results(r.broker)) == 3
    r.broker.drop()
    r.connect()
    assert r.tick()
    assert sent_results(r.broker, 1) == payloads  # the same messages again, oldest first
    r.broker.ack()
    r.tick()
    assert r.outbox.messages == 0 and r.counts["published_total"] == 3


def test_the_timeout_counts_from_the_oldest_message_still_unacknowledged(rig):
    r = rig()
    add(r.outbox, 2)
    r.connect()
    r.tick()
    r.clock.advance(6.0)
    add(r.outbox, 1, start=2)
    r.broker.ack(2)  # the first two are acknowledged; the third was sent 6 s later
    assert r.tick() and len(sent_results(r.broker)) == 3
    r.clock.advance(ACK_TIMEOUT_S - EPS)
    assert r.tick() and not r.link.replacing(r.connection)
    r.clock.advance(EPS)
    assert not r.tick() and r.link.replacing(r.connection)


def test_the_window_never_holds_more_than_max_inflight_and_sends_in_order(rig):
    r = rig(max_inflight=4)
    payloads = add(r.outbox, 20)
    r.connect()
    for _ in range(40):
        r.tick()
        assert r.broker.unacked() <= 4
        r.broker.ack(1)
    r.tick()
    assert r.broker.most_unacked == 4
    assert sent_results(r.broker) == payloads  # each once, oldest first
    assert r.outbox.messages == 0 and r.counts["published_total"] == 20


def test_the_window_never_exceeds_the_brokers_receive_maximum(rig):
    r = rig(max_inflight=8, broker={"receive_maximum": 3})
    payloads = add(r.outbox, 12)
    r.connect()
    for _ in range(30):
        r.tick()
        r.broker.ack(2)
    assert r.broker.most_unacked == 3
    assert sent_results(r.broker) == payloads and r.outbox.messages == 0


def test_a_reconnect_resends_what_was_not_acknowledged_oldest_first_then_the_rest(rig):
    r = rig(max_inflight=4)
    payloads = add(r.outbox, 6)
    r.connect()
    r.tick()
    assert sent_results(r.broker, 0) == payloads[:4]
    r.broker.ack(2)  # results 0 and 1 arrive; 2 and 3 are in flight when the link drops
    r.tick()
    assert sent_results(r.broker, 0) == payloads[:6]
    r.broker.drop()
    r.connect()
    r.broker.auto_ack = True
    for _ in range(4):
        r.tick()
        r.broker.ack()
    assert sent_results(r.broker, 1) == payloads[2:]  # nothing acknowledged is sent again
    assert r.outbox.messages == 0 and r.counts["published_total"] == 6


def test_an_ack_from_the_replaced_connection_still_deletes_its_message(rig):
    r = rig()
    add(r.outbox, 2)
    r.connect()
    r.tick()
    r.clock.advance(ACK_TIMEOUT_S)
    assert not r.tick()
    r.broker.ack()  # late PUBACKs before the connection goes
    r.broker.drop()
    r.connect()
    r.tick()
    assert r.outbox.messages == 0 and sent_results(r.broker, 1) == []


def test_the_window_bookkeeping_alone():
    clock = FakeClock()
    window = InflightWindow(3, 5.0, clock)
    window.reset(receive_maximum=2)
    assert window.capacity == 2 and window.room() == 2
    window.sent(10, mid=1)
    window.sent(11, mid=2)
    assert window.room() == 0 and window.cursor == 11
    assert window.acked(99) is None  # a status message's PUBACK
    assert window.acked(1) == 10 and window.room() == 1
    window.reset()
    assert window.capacity == 3 and window.cursor == 0 and len(window) == 0


# -- the whole service, threads and all, on the stand-in broker ------------------------------


class OneStream(DaemonControl):
    def stream_ids(self):
        return ["cam"]

    def stream_states(self):
        status = {"stream_id": "cam", "state": "streaming", "state_age_s": 1.0, "fps": 25.0}
        return {"cam": (status, "tiny")}


@pytest.fixture
def service(tmp_path):
    made = []

    def make(broker, max_inflight=4):
        clock = FakeClock()
        config = mqtt_config(tmp_path, max_inflight)
        made.append(
            MqttService(
                config,
                DEVICE,
                OneStream(),
                threading.Event(),
                clock=clock,
                transport_factory=broker.factory,
            )
        )
        made[-1].clock = clock
        made[-1].broker = broker
        return made[-1]

    yield make
    for s in made:
        s.broker.auto_ack = True  # "stopped" waits for its PUBACK on the (frozen) fake clock
        s.stop()


def statuses(broker, connection=None):
    return [json.loads(p.payload)["state"] for p in broker.on(STATUS, connection) if p.payload]


def test_birth_after_every_connect_and_the_will_when_the_link_is_lost(service):
    broker = FakeBroker()
    svc = service(broker)
    svc.start()
    wait_for(lambda: svc.connected, 10, "connected")
    for connections in (2, 3):
        broker.drop()
        wait_for(lambda n=connections: len(broker.connections) == n and svc.connected, 10, "up")
    for index, connection in enumerate(broker.connections):
        first = broker.published[[p.connection for p in broker.published].index(index)]
        assert first.topic == STATUS and first.retain  # the birth comes first on every connection
        assert json.loads(first.payload)["state"] == "online"
        assert connection.subscriptions == [TOPICS.command_filter]
        assert connection.will[0] == STATUS and json.loads(connection.will[1])["state"] == "offline"
    assert statuses(broker, 0) == ["online", "offline"]  # the will, fired by the broker
    assert statuses(broker, 1) == ["online", "offline"]
    wait_for(lambda: broker.on(TOPICS.stream_state("cam"), 2), 10, "stream state")


def test_stopped_on_a_clean_exit_and_no_will(service):
    broker = FakeBroker()
    svc = service(broker)
    svc.start()
    wait_for(lambda: svc.connected, 10, "connected")
    svc.stop()
    (connection,) = broker.connections
    assert connection.clean and not connection.connected
    assert statuses(broker) == ["online", "stopped"]
    assert json.loads(broker.retained[STATUS])["state"] == "stopped"


def test_an_overdue_ack_reconnects_and_resends_then_all_are_delivered(service):
    broker = FakeBroker(auto_ack=False, receive_maximum=3)
    svc = service(broker, max_inflight=4)
    svc.start()
    wait_for(lambda: svc.connected, 10, "connected")
    assert broker.current.inflight_limit == 3  # min(max_inflight + headroom, Receive Maximum)
    payloads = add(svc.outbox, 5)
    wait_for(lambda: len(sent_results(broker, 0)) == 3, 10, "3 results in flight")
    svc.clock.advance(ACK_TIMEOUT_S)
    wait_for(lambda: len(broker.connections) == 2 and svc.connected, 10, "a forced reconnect")
    assert broker.connections[0].clean  # edged ended it: DISCONNECT, no will
    broker.auto_ack = True
    wait_for(lambda: svc.outbox.messages == 0, 10, "the outbox emptied")
    assert sent_results(broker, 1) == payloads  # resent from the oldest
    stats = svc.stats()
    assert stats["published_total"] == 5 and stats["publish_failed_total"] == 3


def test_the_receive_maximum_headroom_when_the_broker_allows_more(service):
    broker = FakeBroker(receive_maximum=1000)
    svc = service(broker, max_inflight=4)
    svc.start()
    wait_for(lambda: svc.connected, 10, "connected")
    assert broker.current.inflight_limit == 4 + INFLIGHT_HEADROOM


def test_other_components_subscribe_through_the_service_and_get_messages_after_reconnects(
    service,
):
    broker = FakeBroker()
    svc = service(broker)
    received = queue.Queue(maxsize=10)
    svc.subscribe(f"edged/{DEVICE}/update/#", lambda *m: received.put_nowait(m))
    svc.start()
    wait_for(lambda: svc.connected, 10, "connected")
    broker.send(f"edged/{DEVICE}/update/model", b"new", retain=True)
    assert received.get(timeout=10) == (f"edged/{DEVICE}/update/model", b"new", True)
    broker.drop()
    wait_for(lambda: len(broker.connections) == 2 and svc.connected, 10, "reconnected")
    assert f"edged/{DEVICE}/update/#" in broker.current.subscriptions
    late = queue.Queue(maxsize=10)
    svc.subscribe(f"edged/{DEVICE}/late", lambda *m: late.put_nowait(m))  # while connected
    wait_for(lambda: f"edged/{DEVICE}/late" in broker.current.subscriptions, 10, "subscribed")
    broker.send(f"edged/{DEVICE}/late", b"x")
    assert late.get(timeout=10) == (f"edged/{DEVICE}/late", b"x", False)
    assert svc.publish(f"edged/{DEVICE}/update/ack", b"ok")
    assert broker.on(f"edged/{DEVICE}/update/ack")[0].payload == b"ok"
    assert received.empty()  # edged's own publication does not come back here


def test_commands_go_to_the_commands_even_when_a_subscriber_filter_matches_them(service):
    broker = FakeBroker()
    svc = service(broker)
    received = queue.Queue(maxsize=10)
    svc.subscribe(f"edged/{DEVICE}/#", lambda *m: received.put_nowait(m))
    svc.start()
    wait_for(lambda: svc.connected, 10, "connected")
    broker.send(f"edged/{DEVICE}/cmd/ping", json.dumps({"request_id": 7}).encode())
    reply = wait_for(lambda: broker.on(f"edged/{DEVICE}/cmd/ping/reply"), 10, "the ping reply")
    assert json.loads(reply[0].payload)["request_id"] == 7
    broker.send(f"edged/{DEVICE}/other", b"y")
    assert received.get(timeout=10) == (f"edged/{DEVICE}/other", b"y", False)
    assert received.empty()  # the command went to the commands only
