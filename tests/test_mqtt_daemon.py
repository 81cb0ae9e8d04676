"""``edged run`` as a real process with a REAL Mosquitto: results
replayed after a ``kill -9`` with the broker down, the will on a crash, commands against the
running daemon, and ``edged watch``. The model is a tiny DetectNet_v2-shaped ONNX graph (one
constant person box), so every frame yields one detection."""

import base64
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys

import cv2
import jsonschema
import numpy as np
import pytest

from edged.mqtt.payloads import load_schema

from . import onnx_models
from .conftest import REPO
from .mosquitto import Mosquitto, Subscriber, seq_report, stop_all_brokers, wait_for
from .test_daemon import Edged

DEVICE = "cam-box"
BASE = f"edged/{DEVICE}"
RESULTS = BASE + "/v1/streams/+/detections"
FAST = (
    "backoff_initial_s: 0.2, backoff_max_s: 1.0, ack_timeout_s: 2, connect_timeout_s: 2, "
    "keepalive_s: 5"
)

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(autouse=True)
def _no_broker_outlives_its_test():
    yield
    stop_all_brokers()


def make_clip(path, frames=50, size=(160, 120)):
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 25.0, size)
    for i in range(frames):
        image = np.full((size[1], size[0], 3), (40 + 4 * i) % 255, np.uint8)
        cv2.putText(image, str(i), (50, 70), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (255, 255, 255), 2)
        writer.write(image)
    writer.release()
    return path


def make_detector(path):
    """One person box at grid cell (row 5, column 8) of a 320x192 network input."""
    cov = np.zeros((3, 12, 20), np.float32)
    bbox = np.zeros((12, 12, 20), np.float32)
    cov[0, 5, 8] = 0.9
    bbox[0:4, 5, 8] = 1.0
    return onnx_models.write(path, onnx_models.detectnet(3, 320, 192, cov=cov, bbox=bbox))


def write_config(path, broker, tmp_path, mqtt_extra=""):
    model = make_detector(str(tmp_path / "tiny.onnx"))
    clip = make_clip(str(tmp_path / "clip.avi"))
    outbox = tmp_path / "outbox.sqlite3"
    text = f"""
device_id: {DEVICE}
log_level: info
models:
  tiny: {{path: {model}, task: detection, class_names: [person, bag, face], threads: 1}}
streams:
  cam: {{source: {clip}, model: tiny}}
pipeline: {{summary_interval_s: 0, drain_timeout_s: 2}}
metrics: {{enabled: false}}
mqtt: {{host: 127.0.0.1, port: {broker.port}, {FAST}, outbox: {{path: {outbox}}}{mqtt_extra}}}
"""
    with open(path, "w") as f:
        f.write(text)
    return str(outbox)


def outbox_state(path):
    """(messages waiting, last seq of stream cam) read from the outbox file itself."""
    db = sqlite3.connect(path, timeout=5)
    try:
        (count,) = db.execute("SELECT COUNT(*) FROM messages").fetchone()
        row = db.execute("SELECT seq FROM sequences WHERE stream = 'cam'").fetchone()
        return count, (row[0] if row else -1)
    finally:
        db.close()


def results(subscriber):
    return subscriber.json("/detections")


def test_daemon_sigkilled_with_results_queued_replays_them_after_restart(tmp_path, capsys):
    broker = Mosquitto(str(tmp_path / "broker")).start()
    subscriber = Subscriber(broker, [RESULTS, BASE + "/status"], client_id="loss-check")
    subscriber.wait_subscribed()
    config = str(tmp_path / "edged.yaml")
    outbox = write_config(config, broker, tmp_path)
    first = Edged(config)
    second = None
    try:
        wait_for(lambda: len(results(subscriber)) >= 10, 60, "results from edged run")
        broker.kill()
        wait_for(lambda: outbox_state(outbox)[0] >= 100, 60, "100 results queued in the outbox")
        first.stop(signal.SIGKILL)
        queued, last_seq = outbox_state(outbox)  # exactly what survived on disk
        broker.start()
        wait_for(lambda: subscriber.connects >= 2 and subscriber.subscribed.is_set(), 15,
                 "the subscriber to reconnect")  # fmt: skip
        second = Edged(config)
        wanted = set(range(last_seq + 1))
        wait_for(lambda: wanted <= {m["seq"] for m in results(subscriber)}, 60, "the replay")
        wait_for(lambda: max(m["seq"] for m in results(subscriber)) > last_seq + 10, 60,
                 "new results after the replay")  # fmt: skip
        assert second.stop(signal.SIGTERM) == 0
    finally:
        for edged in (first, second):
            if edged is not None and edged.proc.poll() is None:
                edged.stop(signal.SIGKILL)
        subscriber.close()
        broker.stop()

    messages = results(subscriber)
    report = seq_report([m["seq"] for m in messages], range(last_seq + 1))
    with capsys.disabled():
        print(f"\ndaemon kill -9 with the broker down: {queued} results queued on disk "
              f"(seq 0..{last_seq}); {report}")  # fmt: skip
    assert queued >= 100 and report["lost"] == 0
    validator = jsonschema.Draft7Validator(load_schema("result"))
    for message in messages:
        validator.validate(message)
    # the replayed messages are the first process's (its boot_id, its frame numbers); the new
    # process continues the stream's seq right after the last one that reached the disk
    first_boot = messages[0]["boot_id"]
    assert {m["boot_id"] for m in messages if m["seq"] <= last_seq} == {first_boot}
    fresh = [m for m in messages if m["seq"] > last_seq]
    assert first_boot not in {m["boot_id"] for m in fresh}
    assert min(m["seq"] for m in fresh) == last_seq + 1
    assert fresh[0]["detections"][0]["label"] == "person"
    states = [s["state"] for s in subscriber.json("/status")]
    assert states[0] == "online" and states[-1] == "stopped"
    assert not any("Traceback" in line for line in first.lines + second.lines), second.log()


def test_a_crashed_daemon_is_announced_offline_by_its_will(tmp_path):
    broker = Mosquitto(str(tmp_path / "broker")).start()
    subscriber = Subscriber(broker, [BASE + "/status"], client_id="status-watch")
    subscriber.wait_subscribed()
    config = str(tmp_path / "edged.yaml")
    write_config(config, broker, tmp_path)
    edged = Edged(config)
    try:
        # the first birth comes at connect, before the models load; it is published again
        # with models and streams once they run
        wait_for(lambda: [s for s in subscriber.json("/status") if s.get("streams")], 60, "online")
        edged.stop(signal.SIGKILL)
        wait_for(lambda: subscriber.json("/status")[-1]["state"] == "offline", 20, "the will")
    finally:
        if edged.proc.poll() is None:
            edged.stop(signal.SIGKILL)
        subscriber.close()
        broker.stop()
    online, offline = subscriber.json("/status")[-2:]
    assert (online["state"], offline["state"]) == ("online", "offline")
    assert online["boot_id"] == offline["boot_id"]
    assert online["streams"] == ["cam"] and online["models"][0]["name"] == "tiny"


def test_commands_on_a_running_daemon_and_bad_ones_leave_it_healthy(tmp_path):
    broker = Mosquitto(
        str(tmp_path / "broker"), users={"edged": "pw-edged", "ops": "pw-ops"}
    ).start()
    operator = Subscriber(broker, [BASE + "/cmd/+/reply", RESULTS], client_id="operator",
                          username="ops", password="pw-ops")  # fmt: skip
    operator.wait_subscribed()
    # a stale retained reload waits on the broker: it must never run (frigate#4414)
    operator.publish(BASE + "/cmd/reload", {"request_id": "stale"}, retain=True)
    secret = tmp_path / "mqtt.pw"
    secret.write_text("pw-edged\n")
    config = str(tmp_path / "edged.yaml")
    write_config(config, broker, tmp_path, f", username: edged, password_file: {secret}")
    edged = Edged(config)

    def reply(request_id, timeout=30):
        found = wait_for(
            lambda: [r for r in operator.json("/reply") if r["request_id"] == request_id], timeout,
            f"the reply to {request_id}",
        )  # fmt: skip
        return found[0]

    try:
        edged.wait_for("ignored a retained command on cmd/reload")
        wait_for(lambda: results(operator), 60, "results")
        send = operator.publish
        send(BASE + "/cmd/ping", {"request_id": "p1"})
        send(BASE + "/cmd/get_config", {"request_id": "g1"})
        send(BASE + "/cmd/snapshot", {"request_id": "s1", "stream": "cam"})
        send(BASE + "/cmd/ping", b"{" + b" " * (66 * 1024) + b"}")  # 66 KiB
        send(BASE + "/cmd/ping", b"not json at all")
        send(BASE + "/cmd/launch_missiles", {"request_id": "u1"})
        send(BASE + "/cmd/reload", {"request_id": "r1"})
        ping, config_reply, snapshot = reply("p1"), reply("g1"), reply("s1")
        reload_ok = reply("r1", timeout=60)
        with open(config, "a") as f:
            f.write("bogus_key: 1\n")
        send(BASE + "/cmd/reload", {"request_id": "r2"})
        reload_bad = reply("r2", timeout=60)
        before = max(m["seq"] for m in results(operator))
        send(BASE + "/cmd/ping", {"request_id": "p2"})
        ping_after = reply("p2")
        wait_for(lambda: max(m["seq"] for m in results(operator)) > before + 5, 30,
                 "results after the bad commands")  # fmt: skip

        def nameless_replies():
            return [r for r in operator.json("/reply") if r["request_id"] is None]

        wait_for(lambda: len(nameless_replies()) >= 2, 30, "the two unreadable-command replies")
        nameless = nameless_replies()
        unknown = reply("u1")
        code = edged.stop(signal.SIGTERM)
    finally:
        if edged.proc.poll() is None:
            edged.stop(signal.SIGKILL)
        operator.close()
        broker.stop()

    validator = jsonschema.Draft7Validator(load_schema("command-reply"))
    for message in operator.json("/reply"):
        validator.validate(message)
    assert code == 0
    assert "stale" not in [r["request_id"] for r in operator.json("/reply")]
    assert (
        ping["ok"]
        and ping_after["ok"]
        and ping["result"]["boot_id"] == ping_after["result"]["boot_id"]
    )
    effective = config_reply["result"]
    assert effective["device_id"] == DEVICE and effective["mqtt"]["password"] is None
    assert effective["mqtt"]["password_file"] == str(secret)
    assert "pw-edged" not in json.dumps(config_reply) and "pw-edged" not in "\n".join(edged.lines)
    image = cv2.imdecode(np.frombuffer(base64.b64decode(snapshot["result"]["data"]), np.uint8), 1)
    assert image.shape == (120, 160, 3) and snapshot["result"]["items"][0]["label"] == "person"
    applied = {"applied": True, "message": "configuration reloaded"}
    assert reload_ok == {"schema_version": 1, "request_id": "r1", "ok": True, "result": applied}
    assert not reload_bad["ok"]
    assert reload_bad["error"].startswith("reload rejected, the running configuration is kept")
    errors = sorted(r["error"] for r in nameless)
    assert errors[0].startswith("command too large: 67586 bytes") and "invalid JSON" in errors[1]
    assert unknown["error"].startswith("unknown command launch_missiles")
    assert not any("Traceback" in line for line in edged.lines), "\n".join(edged.lines)


def test_a_reload_command_with_an_empty_or_streamless_config_keeps_serving(tmp_path):
    broker = Mosquitto(str(tmp_path / "broker")).start()
    operator = Subscriber(broker, [BASE + "/cmd/+/reply", RESULTS], client_id="operator")
    operator.wait_subscribed()
    config = str(tmp_path / "edged.yaml")
    write_config(config, broker, tmp_path)
    with open(config) as f:
        streamless = re.sub(r"streams:\n  cam: .*\n", "streams: {}\n", f.read())
    assert "source:" not in streamless
    edged = Edged(config)
    replies = {}
    try:
        wait_for(lambda: results(operator), 60, "results")
        for request_id, text in (("empty", ""), ("streamless", streamless)):
            with open(config, "w") as f:
                f.write(text)
            operator.publish(BASE + "/cmd/reload", {"request_id": request_id})
            replies[request_id] = wait_for(
                lambda wanted=request_id: [
                    r for r in operator.json("/reply") if r["request_id"] == wanted
                ],
                60, f"the reply to {request_id}",
            )[0]  # fmt: skip
            before = max(m["seq"] for m in results(operator))
            wait_for(lambda seq=before: max(m["seq"] for m in results(operator)) > seq + 5, 30,
                     "results after the refused reload")  # fmt: skip
        code = edged.stop(signal.SIGTERM)
    finally:
        if edged.proc.poll() is None:
            edged.stop(signal.SIGKILL)
        operator.close()
        broker.stop()

    assert code == 0
    for request_id, missing in (("empty", "no models and no streams"),
                                ("streamless", "no streams")):  # fmt: skip
        reply = replies[request_id]
        assert reply["ok"] is False, reply
        assert reply["error"] == (
            "reload rejected, the running configuration is kept: "
            f"{config}: {missing}: a reload would stop every stream and model (an empty or "
            "truncated file?); to stop edged, stop its service"
        )
    log = "\n".join(edged.lines)
    assert log.count("reload rejected, keeping the running configuration") == 2, log
    assert "reload: stopping" not in log and "reload applied" not in log


def test_edged_watch_prints_live_detections(tmp_path):
    broker = Mosquitto(str(tmp_path / "broker")).start()
    config = str(tmp_path / "edged.yaml")
    write_config(config, broker, tmp_path)
    edged = Edged(config)
    try:
        watch = subprocess.run(
            [sys.executable, "-m", "edged", "watch", "--port", str(broker.port), "--device", DEVICE,
             "--count", "5", "--timeout", "60"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
            timeout=120,
        )  # fmt: skip
    finally:
        edged.stop(signal.SIGTERM)
        broker.stop()
    assert watch.returncode == 0, watch.stderr
    lines = watch.stdout.splitlines()
    assert lines[0].startswith(f"# connected to 127.0.0.1:{broker.port}")
    detections = [line for line in lines if " cam #" in line]
    assert len(detections) == 5
    assert all(f"{DEVICE} cam #" in line and "1 object: person 90%" in line for line in detections)
    assert any(f"{DEVICE} status online" in line for line in lines)


def test_demo_script_starts_a_broker_runs_edged_and_shows_detections(tmp_path):
    """tools/demo.sh with a stand-in demo config (the tiny detector; the real one is
    configs/demo.yaml): its own mosquitto, the injected mqtt section, edged watch, cleanup."""
    config = tmp_path / "demo.yaml"
    make_detector(str(tmp_path / "tiny.onnx"))
    make_clip(str(tmp_path / "clip.avi"))
    config.write_text(
        "device_id: demo-box\n"
        "models: {tiny: {path: tiny.onnx, task: detection, class_names: [person, bag, face]}}\n"
        "streams: {cam: {source: clip.avi, model: tiny}}\n"
        "metrics: {enabled: false}\n"
        "mqtt: {host: unused.invalid, publish: {mode: every_frame}}\n"
    )
    demo = subprocess.run(
        [os.path.join(REPO, "tools", "demo.sh"), "--config", str(config), "--count", "3",
         "--timeout", "60"],
        cwd=str(tmp_path), env=dict(os.environ, PYTHON=sys.executable), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, universal_newlines=True, timeout=180,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout + demo.stderr
    detections = [line for line in demo.stdout.splitlines() if "demo-box cam #" in line]
    assert len(detections) == 3 and all("person 90%" in line for line in detections)
    assert "mosquitto on 127.0.0.1:" in demo.stderr and "metrics: (metrics disabled" in demo.stderr
    assert "stopping edged" in demo.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi", "demo.yaml", "tiny.onnx"]
