"""The MQTT service against a REAL Mosquitto: delivery, a broker SIGKILLed for
10 s during a 50 msg/s stream, a broker that stops acknowledging, TLS with a test CA, a wrong
password, commands. The results are synthetic (the service is driven in-process, so every seq
handed to it is known exactly); tests/test_mqtt_daemon.py runs the real ``edged run``."""

import json
import logging
import threading
import time

import jsonschema
import pytest

from edged.config import parse_config
from edged.mqtt.control import DaemonControl
from edged.mqtt.payloads import load_schema
from edged.mqtt.service import STATS_KEYS, MqttService
from edged.pipeline.results import InferenceResult
from edged.tasks.detection import Detection

from .mosquitto import Mosquitto, Subscriber, TestCA, seq_report, stop_all_brokers, wait_for

DEVICE = "dev1"
RESULTS = f"edged/{DEVICE}/v1/streams/+/detections"
# Timings shrunk for tests (the defaults are 1..60 s backoff, 10 s ack timeout).
FAST = (
    "backoff_initial_s: 0.2, backoff_max_s: 1.0, ack_timeout_s: 1.5, connect_timeout_s: 1.5, "
    "keepalive_s: 5"
)

pytestmark = pytest.mark.timeout(120)


class StreamsOnlyDaemon(DaemonControl):
    """Stands in for the daemon (tests/test_mqtt_daemon.py runs the real one): one stream whose
    capture state the test sets."""

    def __init__(self):
        self.state = "streaming"
        self.running = True

    def stream_ids(self):
        return ["cam"] if self.running else []

    def stream_states(self):
        if not self.running:
            return {}
        status = {
            "stream_id": "cam",
            "state": self.state,
            "state_age_s": 1.0,
            "source": "clip.avi",
            "fps": 25.0,
            "frames": 10,
            "reconnects": 0,
            "last_error": None,
            "source_size": [320, 240],
        }
        return {"cam": (status, "tiny")}


def make_service(broker, tmp_path, extra="", control=None, stop=None):
    text = (
        f"device_id: {DEVICE}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, {FAST}, "
        f"outbox: {{path: {tmp_path / 'outbox.sqlite3'}, commit_interval_ms: 20}}{extra}}}\n"
    )
    config = parse_config(text)
    stop = stop if stop is not None else threading.Event()  # the daemon's shared stop event
    return MqttService(config.mqtt, DEVICE, control or StreamsOnlyDaemon(), stop)


def result(seq, stream="cam"):
    return InferenceResult(
        stream,
        seq,
        time.monotonic(),
        time.time(),
        (320, 240),
        "tiny",
        "detection",
        [Detection(0, "person", 0.8, (10, 20, 60, 200))],
        {"total": 5.0},
    )


class Feeder(threading.Thread):
    """Hands results to the service at ``rate`` per second, like the daemon's sinks thread."""

    def __init__(self, service, rate=50.0):
        super().__init__(name="test-feeder", daemon=True)
        self.service = service
        self.period = 1.0 / rate
        self.seqs = []
        self.stop = threading.Event()

    def run(self):
        next_at = time.monotonic()
        frame = 0
        while not self.stop.is_set():
            seq = self.service.enqueue_result(result(frame))
            assert seq is not None
            self.seqs.append(seq)
            frame += 1
            next_at += self.period
            self.stop.wait(max(0.0, next_at - time.monotonic()))


@pytest.fixture(autouse=True)
def _no_broker_outlives_its_test():
    yield
    stop_all_brokers()


@pytest.fixture
def broker(tmp_path):
    b = Mosquitto(str(tmp_path / "broker")).start()
    yield b
    b.stop()


def seqs_of(subscriber):
    return [m["seq"] for m in subscriber.json("/detections")]


def test_results_status_and_stream_state_reach_an_independent_subscriber(broker, tmp_path):
    subscriber = Subscriber(broker, [f"edged/{DEVICE}/#"])
    subscriber.wait_subscribed()
    control = StreamsOnlyDaemon()
    stop = threading.Event()
    service = make_service(broker, tmp_path, control=control, stop=stop)
    service.start()
    try:
        wait_for(lambda: service.connected, 10, "the service to connect")
        for i in range(30):
            service.enqueue_result(result(i))
        wait_for(lambda: len(seqs_of(subscriber)) >= 30, 10, "30 results")
        control.state = "stalled"
        wait_for(
            lambda: any(s["state"] == "stalled" for s in subscriber.json("/cam/state")),
            10,
            "the stalled state",
        )
        stats = service.stats()
    finally:
        stop.set()  # the daemon: stop event, streams stopped, sinks drained, then MQTT
        control.running = False
        service.stop()
    wait_for(
        lambda: any(s["state"] == "stopped" for s in subscriber.json("/status")), 10, "stopped"
    )
    subscriber.close()

    assert seqs_of(subscriber) == list(range(30))  # in order, none lost, none twice
    validator = jsonschema.Draft7Validator(load_schema("result"))
    for message in subscriber.json("/detections"):
        validator.validate(message)
    statuses = [s["state"] for s in subscriber.json("/status")]
    assert statuses[0] == "online" and statuses[-1] == "stopped"
    states = [s["state"] for s in subscriber.json("/cam/state")]
    assert states[:2] == ["streaming", "stalled"] and states[-1] == "stopped"
    for s in subscriber.json("/status"):
        jsonschema.validate(s, load_schema("status"))
    for s in subscriber.json("/cam/state"):
        jsonschema.validate(s, load_schema("stream-state"))
    assert set(stats) == set(STATS_KEYS)
    assert stats["connected"] is True and stats["published_total"] == 30
    assert (stats["outbox_messages"], stats["outbox_bytes"], stats["dropped_total"]) == (0, 0, 0)

    late = Subscriber(
        broker, [f"edged/{DEVICE}/status", f"edged/{DEVICE}/v1/streams/cam/state"], client_id="late"
    )
    wait_for(lambda: len(late.received()) >= 2, 10, "the retained status and state")
    late.close()
    assert all(m.retain for m in late.received())
    assert json.loads(late.received("/status")[0].payload)["state"] == "stopped"


def test_broker_sigkilled_for_10_s_during_a_50_msg_s_stream_loses_no_seq(tmp_path, capsys):
    broker = Mosquitto(str(tmp_path / "broker"), persistence=True).start()
    # a persistent session: the broker (persistence on, saved every second) keeps the
    # subscription across its SIGKILL, so the test sees what edged sends while it reconnects
    subscriber = Subscriber(broker, [RESULTS], client_id="loss-check", clean_session=False)
    subscriber.wait_subscribed()
    time.sleep(1.5)  # one autosave with the subscription in it
    service = make_service(broker, tmp_path)
    service.start()
    feeder = Feeder(service, rate=50.0)
    try:
        wait_for(lambda: service.connected, 10, "the service to connect")
        feeder.start()
        time.sleep(3.0)
        broker.kill()
        killed_at = time.monotonic()
        held = wait_for(lambda: service.stats()["outbox_messages"] >= 100, 10, "results to queue")
        time.sleep(max(0.0, 10.0 - (time.monotonic() - killed_at)))
        during = service.stats()
        broker.start()
        restarted_at = time.monotonic()
        down_s = restarted_at - killed_at
        wait_for(lambda: service.stats()["outbox_messages"] < 10, 30, "the backlog to drain")
        drained_s = time.monotonic() - restarted_at
        time.sleep(max(0.0, 3.0 - drained_s))
        feeder.stop.set()
        feeder.join(5)
        sent = list(feeder.seqs)
        wait_for(lambda: service.stats()["outbox_messages"] == 0, 30, "the outbox to empty")
        wait_for(lambda: set(sent) <= set(seqs_of(subscriber)), 30, "every seq at the subscriber")
        stats = service.stats()
    finally:
        feeder.stop.set()
        service.stop()
        subscriber.close()
        broker.stop()
    report = seq_report(seqs_of(subscriber), range(len(sent)))
    with capsys.disabled():
        held_n = during["outbox_messages"]
        print(
            f"\nbroker SIGKILL: down {down_s:.1f} s at 50 msg/s; outbox held {held_n} messages, "
            f"replayed within {drained_s:.1f} s of the restart; {report}; "
            f"reconnects {stats['reconnects_total']}"
        )
    assert held and down_s >= 10.0
    assert sent == list(range(len(sent)))
    assert report["lost"] == 0
    assert stats["reconnects_total"] >= 1 and stats["dropped_total"] == 0


def test_a_broker_that_stops_acknowledging_forces_a_reconnect_and_nothing_is_lost(broker, tmp_path):
    subscriber = Subscriber(broker, [RESULTS])
    subscriber.wait_subscribed()
    service = make_service(broker, tmp_path)
    service.start()
    try:
        wait_for(lambda: service.connected, 10, "the service to connect")
        broker.proc.send_signal(19)  # SIGSTOP: the TCP connection stays up, no PUBACK comes
        for i in range(20):
            service.enqueue_result(result(i))
        wait_for(lambda: service.stats()["publish_failed_total"] > 0, 15, "the ack timeout")
        assert service.stats()["outbox_messages"] == 20  # still held: not acknowledged
        broker.proc.send_signal(18)  # SIGCONT
        wait_for(lambda: service.stats()["outbox_messages"] == 0, 30, "the outbox to empty")
        wait_for(lambda: set(range(20)) <= set(seqs_of(subscriber)), 15, "every seq")
        # the PUBACKs may come on the old connection after SIGCONT, before the new one is up
        wait_for(lambda: service.stats()["reconnects_total"] >= 1, 30, "the forced reconnect")
        stats = service.stats()
    finally:
        broker.proc.send_signal(18)
        service.stop()
        subscriber.close()
    assert stats["reconnects_total"] >= 1


def tls_settings(ca_file, ca):
    files = f"ca_file: {ca_file}, cert_file: {ca.client_cert}, key_file: {ca.client_key}"
    return f", tls: {{enabled: true, {files}}}"


def test_tls_with_a_test_ca_and_a_client_certificate(tmp_path):
    ca = TestCA(str(tmp_path / "ca"))
    broker = Mosquitto(str(tmp_path / "broker"), tls=ca, require_client_cert=True).start()
    subscriber = Subscriber(broker, [RESULTS])
    subscriber.wait_subscribed()
    service = make_service(broker, tmp_path, tls_settings(ca.ca_cert, ca))
    service.start()
    try:
        wait_for(lambda: service.connected, 10, "a TLS connection")
        for i in range(5):
            service.enqueue_result(result(i))
        wait_for(lambda: len(seqs_of(subscriber)) >= 5, 10, "5 results over TLS")
    finally:
        service.stop()
        subscriber.close()

    # a broker certificate from another CA is refused, counted, retried with backoff
    other = TestCA(str(tmp_path / "other-ca"))
    (tmp_path / "second").mkdir()
    service = make_service(broker, tmp_path / "second", tls_settings(other.ca_cert, ca))
    service.start()
    try:
        wait_for(lambda: service.stats()["auth_failures_total"] >= 2, 10, "TLS failures")
        assert not service.connected
    finally:
        service.stop()
        broker.stop()
    assert seqs_of(subscriber) == list(range(5))


def test_a_wrong_password_backs_off_is_counted_and_never_logged(tmp_path, caplog):
    broker = Mosquitto(str(tmp_path / "broker"), users={"edged": "right-password"}).start()
    caplog.set_level(logging.DEBUG, logger="edged")
    service = make_service(broker, tmp_path, ", username: edged, password: wrong-password-123")
    service.start()
    try:
        time.sleep(4.0)
        stats = service.stats()
    finally:
        service.stop()
        broker.stop()
    attempts = broker.count_in_log("not authorised")
    # backoff 0.2 s doubling to 1 s (+-20 %): about 6 attempts in 4 s; a tight loop makes thousands
    assert 2 <= stats["auth_failures_total"] <= 12
    assert attempts == stats["auth_failures_total"]
    assert stats["connected"] is False and stats["reconnects_total"] >= 1
    assert "bad user name or password" in caplog.text or "not authorised" in caplog.text
    assert "wrong-password-123" not in caplog.text


def test_the_password_can_come_from_a_file_or_an_environment_variable(tmp_path, monkeypatch):
    broker = Mosquitto(str(tmp_path / "broker"), users={"edged": "from-elsewhere"}).start()
    secret = tmp_path / "mqtt.password"
    secret.write_text("from-elsewhere\n")
    monkeypatch.setenv("EDGED_TEST_MQTT_PASSWORD", "from-elsewhere")
    try:
        for n, source in enumerate(
            [f"password_file: {secret}", "password_env: EDGED_TEST_MQTT_PASSWORD"]
        ):
            (tmp_path / str(n)).mkdir()
            service = make_service(broker, tmp_path / str(n), ", username: edged, " + source)
            service.start()
            try:
                wait_for(lambda s=service: s.connected, 10, "a connection with " + source)
            finally:
                service.stop()
    finally:
        broker.stop()


def test_commands_get_replies_and_a_retained_command_is_ignored(broker, tmp_path):
    client = Subscriber(broker, [f"edged/{DEVICE}/cmd/+/reply"], client_id="operator")
    client.wait_subscribed()
    # a stale retained command (frigate#4414) waits on the broker before edged connects
    client.publish(f"edged/{DEVICE}/cmd/ping", {"request_id": "stale"}, retain=True)
    service = make_service(broker, tmp_path, ", max_command_bytes: 65536")
    service.start()
    try:
        wait_for(
            lambda: service.stats()["commands_total"].get(("ping", "ignored")),
            10,
            "the retained command to be ignored",
        )
        client.publish(f"edged/{DEVICE}/cmd/ping", {"request_id": "live"})
        client.publish(f"edged/{DEVICE}/cmd/ping", b"x" * (66 * 1024))  # < the packet limit
        client.publish(f"edged/{DEVICE}/cmd/ping", b"{oops")
        client.publish(f"edged/{DEVICE}/cmd/selfdestruct", {"request_id": "u"})
        wait_for(lambda: len(client.json("/reply")) >= 4, 10, "4 replies")
        stats = service.stats()
    finally:
        service.stop()
        client.close()
    replies = client.json("/reply")
    validator = jsonschema.Draft7Validator(load_schema("command-reply"))
    for reply in replies:
        validator.validate(reply)
    assert [r["request_id"] for r in replies if r["ok"]] == ["live"]
    errors = sorted(r["error"] for r in replies if not r["ok"])
    assert errors[0] == "command too large: 67584 bytes (limit 65536)"
    assert errors[1].startswith("invalid JSON")
    assert errors[2].startswith("unknown command selfdestruct")
    assert "stale" not in [r["request_id"] for r in replies]
    assert stats["commands_total"] == {
        ("ping", "ignored"): 1,
        ("ping", "ok"): 1,
        ("ping", "error"): 2,
        ("unknown", "error"): 1,
    }
