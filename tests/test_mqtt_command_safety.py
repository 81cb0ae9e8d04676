"""Commands against a REAL Mosquitto: stale and retained commands never run (MQTT 3.1.1 and 5),
an oversized command never reaches edged's memory (MQTT 5 Maximum Packet Size), a burst of
commands gets one reply each (ok or busy), and the shipped ACL (docs/mosquitto/acl) keeps
devices and anonymous clients from commanding a device. Also on MQTT 5: edged keeps within the
broker's Receive Maximum."""

import collections
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from edged.config import parse_config
from edged.errors import ConfigError
from edged.mqtt import compat, inbox
from edged.mqtt.control import DaemonControl
from edged.mqtt.service import MqttService
from edged.pipeline.results import InferenceResult
from edged.tasks.detection import Detection

from .mosquitto import Mosquitto, Subscriber, require_tool, stop_all_brokers, wait_for

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = "backoff_initial_s: 0.2, backoff_max_s: 1.0, connect_timeout_s: 1.5, keepalive_s: 5"
TWO_MINUTES_MS = 120 * 1000

pytestmark = pytest.mark.timeout(180)


class ReloadCounter(DaemonControl):
    """Stands in for the daemon (tests/test_mqtt_daemon.py runs the real one): counts reloads,
    has one stream."""

    def __init__(self):
        self.reloads = 0

    def reload(self, timeout):
        self.reloads += 1
        return True, "configuration reloaded"

    def stream_ids(self):
        return ["cam"]


def config_text(broker, tmp_path, device, extra=""):
    return (
        f"device_id: {device}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, {FAST}, "
        f"outbox: {{path: {tmp_path / (device + '.sqlite3')}, commit_interval_ms: 20}}{extra}}}\n"
    )


def make_service(broker, tmp_path, device="dev1", extra="", control=None):
    config = parse_config(config_text(broker, tmp_path, device, extra))
    return MqttService(config.mqtt, device, control or ReloadCounter(), threading.Event())


def now_ms():
    return int(time.time() * 1000)


def replies(client, request_id):
    return [r for r in client.json("/reply") if r["request_id"] == request_id]


@pytest.fixture(autouse=True)
def _no_broker_outlives_its_test():
    yield
    stop_all_brokers()


@pytest.fixture
def broker(tmp_path):
    b = Mosquitto(str(tmp_path / "broker")).start()
    yield b
    b.stop()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_retained_and_stale_commands_never_run(broker, tmp_path, protocol):
    base = "edged/dev1/cmd/"
    daemon = ReloadCounter()
    operator = Subscriber(broker, [base + "+/reply"], client_id="operator")
    operator.wait_subscribed()
    # retained before edged connects, with a current issue time (frigate#4414)
    operator.publish(base + "reload", {"request_id": "before", "issued_at_ms": now_ms()}, True)
    extra = f', protocol: "{protocol}", command_max_age_s: 30'
    service = make_service(broker, tmp_path, extra=extra, control=daemon)
    service.start()
    try:
        wait_for(lambda: service.stats()["commands_total"].get(("reload", "ignored")), 10,
                 "the retained command to be ignored")  # fmt: skip
        # retained while edged is connected: a 3.1.1 broker forwards it with the retain flag clear
        old = now_ms() - TWO_MINUTES_MS
        operator.publish(base + "reload", {"request_id": "while-old", "issued_at_ms": old}, True)
        operator.publish(base + "reload", {"request_id": "while-bare"}, True)
        operator.publish(base + "reload", {"request_id": "old", "issued_at_ms": old})
        operator.publish(base + "reload", {"request_id": "fresh", "issued_at_ms": now_ms()})
        operator.publish(base + "ping", {"request_id": "bare"})
        operator.publish(base + "ping", {"request_id": "last", "issued_at_ms": now_ms()})
        wait_for(lambda: replies(operator, "last"), 10, "the reply to the last ping")
        stats = service.stats()["commands_total"]
    finally:
        service.stop()
        operator.publish(base + "reload", b"", retain=True)  # delete the retained command
        operator.close()
    assert daemon.reloads == 1  # only "fresh"
    assert replies(operator, "fresh")[0]["ok"] is True
    assert replies(operator, "last")[0]["ok"] is True
    assert replies(operator, "before") == []
    (stale,) = replies(operator, "old")
    assert stale["ok"] is False and stale["error"].startswith("stale: issued 120 s ago")
    if protocol == "5":  # Retain As Published: retained commands are known as such
        assert replies(operator, "while-old") == replies(operator, "while-bare") == []
        assert replies(operator, "bare")[0]["ok"] is True  # no issue time needed on MQTT 5
        assert stats[("reload", "ignored")] == 3
    else:  # the issue time decides: a retained stale one is stale, none at all is refused
        assert replies(operator, "while-old")[0]["error"].startswith("stale: ")
        for request_id in ("while-bare", "bare"):
            (reply,) = replies(operator, request_id)
            assert reply["ok"] is False and reply["error"].startswith("issued_at_ms required")
        assert stats[("reload", "ignored")] == 1
    assert stats[("reload", "stale")] == 2 if protocol == "3.1.1" else 1


CHILD = r"""
import json, resource, sys, threading, time
from edged.config import parse_config
from edged.mqtt.control import DaemonControl
from edged.mqtt.service import MqttService

config = parse_config(sys.argv[1])
service = MqttService(config.mqtt, "dev1", DaemonControl(), threading.Event())
service.start()
while not service.connected:
    time.sleep(0.05)
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
print(json.dumps({"connected_kib": peak()}), flush=True)
sys.stdin.readline()
print(json.dumps({"peak_kib": peak()}), flush=True)
service.stop()
"""


def test_a_huge_command_is_refused_by_the_broker_not_read_into_memory(broker, tmp_path):
    """MQTT 5 Maximum Packet Size: a 100 MB command raised edged's peak RSS by ~300 MB when
    paho read it whole; now the broker does not send it. The bound is generous (50 MiB)."""
    mosquitto_pub = require_tool("mosquitto_pub")
    huge = tmp_path / "huge.json"
    with open(str(huge), "wb") as f:
        f.write(b'{"request_id": "huge", "pad": "' + b"x" * (100 * 1000 * 1000) + b'"}')
    operator = Subscriber(broker, ["edged/dev1/cmd/+/reply"], client_id="operator")
    operator.wait_subscribed()
    env = dict(os.environ, PYTHONPATH=REPO)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, config_text(broker, tmp_path, "dev1")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, universal_newlines=True,
    )  # fmt: skip
    try:
        connected = json.loads(child.stdout.readline())["connected_kib"]
        subprocess.run(
            [mosquitto_pub, "-h", broker.host, "-p", str(broker.port), "-q", "1",
             "-t", "edged/dev1/cmd/ping", "-f", str(huge)],
            check=True, timeout=120,
        )  # fmt: skip
        operator.publish("edged/dev1/cmd/ping", {"request_id": "normal"})
        wait_for(lambda: replies(operator, "normal"), 30, "the reply to a normal ping")
        child.stdin.write("\n")
        child.stdin.flush()
        peak = json.loads(child.stdout.readline())["peak_kib"]
        assert child.wait(30) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        operator.close()
    assert replies(operator, "normal")[0]["ok"] is True
    assert replies(operator, "huge") == [] and replies(operator, None) == []
    growth_mib = (peak - connected) / 1024.0
    assert growth_mib < 50, f"peak RSS grew by {growth_mib:.0f} MiB after a 100 MB command"


def test_a_burst_of_commands_gets_exactly_one_reply_each(broker, tmp_path, monkeypatch):
    monkeypatch.setattr(inbox, "COMMAND_QUEUE", 4)  # a small queue: busy replies for sure
    service = make_service(broker, tmp_path)
    operator = Subscriber(broker, ["edged/dev1/cmd/+/reply"], client_id="operator")
    operator.wait_subscribed()
    service.start()
    try:
        wait_for(lambda: service.connected, 10, "edged connected")
        time.sleep(0.5)  # the command subscription follows the CONNACK
        sent = [
            operator.client.publish("edged/dev1/cmd/ping", json.dumps({"request_id": i}), qos=1)
            for i in range(1000)
        ]
        for info in sent:
            info.wait_for_publish()
        wait_for(lambda: len(operator.json("/reply")) >= 1000, 60, "1000 replies")
        time.sleep(0.5)  # a second reply to any of them would arrive now
        stats = service.stats()["commands_total"]
    finally:
        service.stop()
        operator.close()
    got = operator.json("/reply")
    per_id = collections.Counter(r["request_id"] for r in got)
    assert sorted(per_id) == list(range(1000)) and set(per_id.values()) == {1}
    busy = [r for r in got if not r["ok"]]
    assert busy and all(r["error"].startswith("busy: 4 commands are waiting") for r in busy)
    assert stats == {("ping", "ok"): 1000 - len(busy), ("ping", "busy"): len(busy)}


def test_the_shipped_acl_lets_only_the_operator_command_a_device(tmp_path):
    users = {"cam1": "pw-cam1", "cam2": "pw-cam2", "operator": "pw-op"}
    acl = os.path.join(REPO, "docs", "mosquitto", "acl")
    # anonymous clients are let in on purpose: the ACL alone must keep them out
    broker = Mosquitto(str(tmp_path / "broker"), users, acl_file=acl, allow_anonymous=True)
    broker.start()
    operator = Subscriber(broker, ["edged/+/cmd/+/reply", "edged/+/status", "edged/+/v1/#"],
                          client_id="ops", username="operator", password="pw-op")  # fmt: skip
    other = Subscriber(broker, ["edged/cam1/#"], client_id="cam2-spy", username="cam2",
                       password="pw-cam2")  # fmt: skip
    anonymous = Subscriber(broker, ["edged/#"], client_id="anon")
    for client in (operator, other, anonymous):
        client.wait_subscribed()
    service = make_service(broker, tmp_path, "cam1", ", username: cam1, password: pw-cam1")
    service.start()
    try:
        wait_for(lambda: service.connected, 10, "cam1 connected")
        time.sleep(0.5)  # the command subscription follows the CONNACK
        other.publish("edged/cam1/cmd/ping", {"request_id": "from-cam2"})
        other.publish("edged/cam1/status", {"state": "forged"}, retain=True)
        anonymous.publish("edged/cam1/cmd/ping", {"request_id": "from-anonymous"})
        operator.publish("edged/cam1/cmd/ping", {"request_id": "from-operator"})
        wait_for(lambda: replies(operator, "from-operator"), 10, "the operator's reply")
        service.enqueue_result(InferenceResult("cam", 1, time.monotonic(), time.time(),
                               (320, 240), "m", "detection",
                               [Detection(0, "person", 0.9, (1, 2, 30, 40))], {}))  # fmt: skip
        wait_for(lambda: operator.received("/detections"), 10, "cam1's result at the operator")
        stats = service.stats()["commands_total"]
    finally:
        service.stop()
        for client in (operator, other, anonymous):
            client.close()
    assert stats == {("ping", "ok"): 1}  # only the operator's command reached cam1
    assert [r["request_id"] for r in operator.json("/reply")] == ["from-operator"]
    states = [m["state"] for m in operator.json("edged/cam1/status")]
    assert "online" in states and "forged" not in states  # cam1 publishes its own status
    assert other.received() == [] and anonymous.received() == []  # they read nothing of cam1
    log = broker.log_text()
    assert "Denied PUBLISH from cam2-spy" in log and "Denied PUBLISH from anon" in log


def test_mqtt5_in_flight_messages_stay_within_the_brokers_receive_maximum(tmp_path):
    broker = Mosquitto(str(tmp_path / "broker"), extra_conf=["max_inflight_messages 5"]).start()
    service = make_service(broker, tmp_path)  # max_inflight 20 (+ headroom for replies)
    operator = Subscriber(broker, ["edged/dev1/cmd/+/reply"], client_id="operator")
    operator.wait_subscribed()
    service.start()
    try:
        wait_for(lambda: service.connected, 10, "edged connected")
        # the CONNACK says Receive Maximum 5; paho (1.6 and 2.x) would not apply it by itself
        assert service.link.current().transport.client._max_inflight_messages == 5
        time.sleep(0.5)  # the command subscription follows the CONNACK
        for i in range(20):
            operator.client.publish("edged/dev1/cmd/ping", json.dumps({"request_id": i}), qos=1)
        wait_for(lambda: len(operator.json("/reply")) >= 20, 30, "20 replies")
    finally:
        service.stop()
        operator.close()
    assert sorted(r["request_id"] for r in operator.json("/reply")) == list(range(20))


def test_mqtt5_with_a_paho_that_lacks_it_is_a_one_line_config_error(tmp_path, monkeypatch):
    monkeypatch.setattr(compat, "HAS_MQTT5", False)  # as paho < 1.5 (constraints/ pin 1.6.1+)
    config = parse_config(f"mqtt: {{host: 127.0.0.1, outbox: {{path: {tmp_path / 'o.db'}}}}}")
    service = MqttService(config.mqtt, "dev1", ReloadCounter(), threading.Event())
    with pytest.raises(ConfigError) as error:
        service.start()
    assert str(error.value) == (
        f"mqtt.protocol: MQTT 5 needs paho-mqtt >= 1.5 (installed: {compat.PAHO_VERSION}); "
        "set protocol: 3.1.1"
    )
    assert not (tmp_path / "o.db").exists()  # refused before anything was opened
