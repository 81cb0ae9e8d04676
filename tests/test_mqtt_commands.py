"""Commands without a broker: hostile input, replies, request-id replay, snapshot."""

import base64
import json
import threading
import time

import cv2
import jsonschema
import numpy as np
import pytest

from edged.config import parse_config
from edged.mqtt.commands import CommandProcessor
from edged.mqtt.control import DaemonControl, redact_config
from edged.mqtt.inbox import CommandInbox
from edged.mqtt.payloads import load_schema
from edged.mqtt.topics import Topics
from edged.pipeline.results import InferenceResult
from edged.tasks.detection import Detection

REPLY = jsonschema.Draft7Validator(load_schema("command-reply"))


class StandInDaemon(DaemonControl):
    """Stands in for the running daemon behind DaemonControl (tests/test_mqtt_daemon.py has the
    real one): one stream with a frame and a result, a reload that applies or not."""

    def __init__(self, reload_ok=True):
        self.reloads = 0
        self.reload_ok = reload_ok
        self.image = np.full((240, 320, 3), 90, np.uint8)
        self.result = InferenceResult(
            "cam",
            5,
            1.0,
            1705314600.0,
            (320, 240),
            "m",
            "detection",
            [Detection(0, "person", 0.8, (40, 30, 160, 200))],
            {},
        )

    def stream_ids(self):
        return ["cam"]

    def effective_config(self):
        return {"device_id": "d", "mqtt": {"password": "***"}}

    def reload(self, timeout):
        self.reloads += 1
        return (True, "configuration reloaded") if self.reload_ok else (False, "reload rejected: x")

    def latest(self, stream_id):
        return (self.image, self.result) if stream_id == "cam" else None


def run(processor, name, body, retain=False):
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    label, result, reply = processor.process(name, payload, retain)
    message = json.loads(reply.decode()) if reply is not None else None
    if message is not None:
        REPLY.validate(message)
    return label, result, message


@pytest.fixture
def processor():
    return CommandProcessor(StandInDaemon(), "b" * 32, max_bytes=64 * 1024)


def test_ping_replies_with_the_request_id(processor):
    label, result, reply = run(processor, "ping", {"request_id": "r1"})
    assert (label, result) == ("ping", "ok")
    assert reply["request_id"] == "r1" and reply["ok"] is True
    assert reply["result"]["pong"] is True and reply["result"]["boot_id"] == "b" * 32


def test_a_retained_command_is_ignored_without_a_reply():
    daemon = StandInDaemon()
    processor = CommandProcessor(daemon, "b" * 32)
    assert run(processor, "reload", {"request_id": "old"}, retain=True) == (
        "reload",
        "ignored",
        None,
    )
    assert daemon.reloads == 0  # frigate#4414: a stale retained command never runs


@pytest.mark.parametrize(
    "name, payload, error",
    [
        ("ping", b"x" * (300 * 1024), "command too large: 307200 bytes (limit 65536)"),
        ("ping", b"{not json", "invalid JSON"),
        ("ping", b"\xff\xfe", "not UTF-8"),
        ("ping", b"[1, 2]", "must be a JSON object"),
        ("ping", b"{}", "request_id missing or invalid"),
        ("ping", b'{"request_id": true}', "request_id missing or invalid"),
        ("ping", b"[" * 60000, "nested too deeply"),  # deep JSON
        (
            "ping",
            b'{"request_id": 1, "a": ' + b"[" * 30000 + b"]" * 30000 + b"}",
            "nested too deeply",
        ),
    ],  # fmt: skip
)
def test_unreadable_commands_get_an_error_reply_without_a_request_id(
    processor, name, payload, error
):
    label, result, reply = run(processor, name, payload)
    assert result == "error" and reply["ok"] is False and reply["request_id"] is None
    assert error in reply["error"]


def test_an_unknown_command_gets_an_error_and_is_counted_as_unknown(processor):
    label, result, reply = run(processor, "format_disk", {"request_id": 7})
    assert (label, result) == ("unknown", "error")
    assert reply["request_id"] == 7
    assert (
        reply["error"]
        == "unknown command format_disk; commands: get_config, ping, reload, snapshot"
    )


def test_a_repeated_request_id_gets_the_first_reply_and_runs_once():
    daemon = StandInDaemon()
    processor = CommandProcessor(daemon, "b" * 32)
    first = run(processor, "reload", {"request_id": "once"})
    again = run(processor, "reload", {"request_id": "once"})
    assert first == again and first[2]["result"]["applied"] is True
    assert daemon.reloads == 1  # a QoS 1 redelivery does not reload twice


def test_a_rejected_reload_is_an_error_reply_with_the_reason():
    processor = CommandProcessor(StandInDaemon(reload_ok=False), "b" * 32)
    _, result, reply = run(processor, "reload", {"request_id": 1})
    assert result == "error" and reply["error"] == "reload rejected: x"


def test_snapshot_returns_an_annotated_jpeg_of_the_stream(processor):
    _, result, reply = run(
        processor, "snapshot", {"request_id": "s", "max_width": 160, "quality": 90}
    )
    assert result == "ok"
    snap = reply["result"]
    assert (snap["stream_id"], snap["frame_seq"], snap["content_type"]) == ("cam", 5, "image/jpeg")
    image = cv2.imdecode(np.frombuffer(base64.b64decode(snap["data"]), np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (120, 160, 3) == (snap["height"], snap["width"], 3)
    plain = cv2.resize(np.full((240, 320, 3), 90, np.uint8), (160, 120))
    assert np.abs(image.astype(int) - plain).max() > 60  # the box and label are drawn on it
    assert snap["items"][0]["label"] == "person"


@pytest.mark.parametrize(
    "body, error",
    [
        ({"request_id": 1, "stream": "nope"}, 'snapshot: no running stream "nope" (streams: cam)'),
        ({"request_id": 1, "quality": 0}, "quality must be an integer 1..100, got 0"),
        ({"request_id": 1, "max_width": "big"}, 'max_width must be an integer 16..8192, got "big"'),
    ],
)
def test_bad_snapshot_arguments_are_error_replies(processor, body, error):
    _, result, reply = run(processor, "snapshot", body)
    assert result == "error" and reply["error"] == error


def test_get_config_redacts_secrets_and_url_passwords():
    config = parse_config(
        """
models: {m: {path: m.etlt, key: tlt_encode}}
streams: {cam: {source: "rtsp://admin:hunter2@10.0.0.5/stream", model: m}}
mqtt: {host: h, username: u, password: s3cret}
"""
    )
    text = json.dumps(redact_config(config))
    for secret in ("tlt_encode", "hunter2", "s3cret"):
        assert secret not in text
    redacted = redact_config(config)
    assert redacted["mqtt"]["password"] == "***" and redacted["models"]["m"]["key"] == "***"
    assert redacted["mqtt"]["username"] == "u"
    assert "rtsp://admin:***@10.0.0.5/stream" in text


NOW_S = 1705314600.0


@pytest.mark.parametrize(
    "issued_at_ms, require, result, error",
    [
        (int(NOW_S * 1000) - 61000, False, "stale", "stale: issued 61 s ago (max age 60 s)"),
        (int(NOW_S * 1000) + 61000, False, "stale", "stale: issued 61 s ahead of edged's clock"),
        ("2024-01-15", False, "error", "issued_at_ms must be an integer"),
        (True, False, "error", "issued_at_ms must be an integer"),
        (None, True, "error", "issued_at_ms required: on MQTT 3.1.1"),
    ],
)
def test_a_command_out_of_its_time_is_refused_and_does_not_run(
    issued_at_ms, require, result, error
):
    daemon = StandInDaemon()
    processor = CommandProcessor(
        daemon, "b" * 32, max_age_s=60, require_issue_time=require, wall_clock=lambda: NOW_S
    )
    body = {"request_id": "r"}
    if issued_at_ms is not None:
        body["issued_at_ms"] = issued_at_ms
    label, got, reply = run(processor, "reload", body)
    assert (label, got) == ("reload", result) and reply["request_id"] == "r"
    assert reply["ok"] is False and reply["error"].startswith(error)
    assert daemon.reloads == 0


@pytest.mark.parametrize("require", [False, True])
def test_a_command_issued_within_the_max_age_runs(require):
    daemon = StandInDaemon()
    processor = CommandProcessor(
        daemon, "b" * 32, max_age_s=60, require_issue_time=require, wall_clock=lambda: NOW_S
    )
    body = {"request_id": "r", "issued_at_ms": int(NOW_S * 1000) - 59000}
    assert run(processor, "reload", body)[1] == "ok" and daemon.reloads == 1


def test_a_command_without_issue_time_runs_where_the_retain_flag_is_trusted(processor):
    assert run(processor, "ping", {"request_id": "r"})[1] == "ok"  # MQTT 5, not retained


def test_commands_beyond_the_queue_get_a_busy_reply_and_are_counted():
    """The broker test (tests/test_mqtt_command_safety.py) bursts 1000; here each path once."""
    sent = []
    stop = threading.Event()
    box = CommandInbox(
        CommandProcessor(StandInDaemon(), "b" * 32),
        Topics("edged", "d"),
        lambda topic, payload: sent.append((topic, json.loads(payload.decode()))) or True,
        stop.is_set,
        queue_size=1,
        busy_queue_size=2,
    )
    topic = "edged/d/cmd/ping"
    box.on_message(topic, b'{"request_id": "queued"}', False)  # fills the command queue
    box.on_message(topic, b'{"request_id": "b1"}', False)
    box.on_message(topic, b'{"request_id": "big", "pad": "' + b"x" * 5000 + b'"}', False)
    box.on_message(topic, b'{"request_id": "b3"}', False)  # the busy queue is full too
    replies = threading.Thread(target=dict(box.threads())["mqtt-replies"], name="test-replies")
    replies.start()
    deadline = time.monotonic() + 10
    while len(sent) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    replies.join(10)
    for _, reply in sent:
        REPLY.validate(reply)
    assert [(t, r["request_id"], r["ok"]) for t, r in sent] == [
        (topic + "/reply", "b1", False),
        (topic + "/reply", None, False),  # over 4 KiB: its request_id was not kept
    ]
    assert sent[0][1]["error"] == "busy: 1 commands are waiting; send it again later"
    assert box.counts() == {("ping", "busy"): 2, ("ping", "busy_unsent"): 1}
