"""The MQTT contract without a broker: topics, payloads against the published JSON Schemas,
publish modes, and the config section."""

import filecmp
import json
import os

import jsonschema
import pytest

from edged.config import parse_config
from edged.errors import ConfigError
from edged.mqtt import payloads
from edged.mqtt.policy import PublishPolicy, signature
from edged.mqtt.topics import Topics, parse_stream_topic, prefix_problem, topic_problem
from edged.pipeline.results import InferenceResult
from edged.tasks.classification import Classification
from edged.tasks.detection import Detection

from .conftest import REPO


def validator(kind):
    return jsonschema.Draft7Validator(payloads.load_schema(kind))


def detection_result(n=2, stream="cam", seq=7, wall=1705314600.1234, size=(640, 480)):
    items = [
        Detection(
            i % 3, ["person", "bag", "face"][i % 3], 0.9 - 0.001 * i, (10.0 + i, 20.0, 110.0, 220.5)
        )
        for i in range(n)
    ]
    latency = {
        "queue": 1.5,
        "preprocess": 2.25,
        "inference": 10.0,
        "postprocess": 0.5,
        "total": 14.25,
    }
    return InferenceResult(stream, seq, 100.0, wall, size, "peoplenet", "detection", items, latency)


def classification_result():
    items = [Classification(3, "3", 0.97), Classification(8, "8", 0.02)]
    return InferenceResult(
        "digits", 1, 1.0, 1705314600.0, (8, 8), "resnet", "classification", items, {}
    )


MODEL = payloads.model_dict("peoplenet", "2.6.1", "ab" * 32, "fp32", "onnxruntime", "detection")


def encode_result(result, max_bytes=65536, reason="frame"):
    data = payloads.result_payload(result, "jetson-01", "0" * 32, 42, MODEL, reason, max_bytes)
    return data, json.loads(data.decode())


# -- topics -------------------------------------------------------------------------------


def test_topics_put_the_device_near_the_front_and_version_the_results():
    t = Topics("edged", "jetson-01")
    assert t.status == "edged/jetson-01/status"
    assert t.results("cam", "detection") == "edged/jetson-01/v1/streams/cam/detections"
    assert t.results("cam", "classification") == "edged/jetson-01/v1/streams/cam/classifications"
    assert t.stream_state("cam") == "edged/jetson-01/v1/streams/cam/state"
    assert t.command("ping") == "edged/jetson-01/cmd/ping"
    assert t.reply("ping") == "edged/jetson-01/cmd/ping/reply"
    assert t.command_filter == "edged/jetson-01/cmd/+"  # replies (one level deeper) do not match


def test_command_name_is_read_only_from_this_devices_command_topics():
    t = Topics("site/a", "dev")
    assert t.command_name("site/a/dev/cmd/reload") == "reload"
    assert t.command_name("site/a/dev/cmd/reload/reply") is None
    assert t.command_name("site/a/other/cmd/reload") is None


def test_parse_stream_topic_reads_prefix_device_stream_and_kind():
    assert parse_stream_topic("a/b/dev/v1/streams/cam/detections") == (
        "a/b",
        "dev",
        "cam",
        "detections",
    )
    assert parse_stream_topic("edged/dev/v1/streams/cam/state") == ("edged", "dev", "cam", "state")
    assert parse_stream_topic("edged/dev/status") is None


@pytest.mark.parametrize(
    "topic, problem",
    [
        ("", "is empty"),
        ("a/\x00b", "contains NUL"),
        ("a/\x07", "contains a control character"),
        ("a/\x85", "contains a control character"),
        ("a/\ufffe", "contains a Unicode non-character"),
        ("a/+", "contains a wildcard (+ or #)"),
        ("a/#", "contains a wildcard (+ or #)"),
        ("x" * 65536, "is longer than 65535 bytes"),
        ("a/\udc80", "is not valid UTF-8"),
    ],
)
def test_invalid_topics_are_named_with_the_reason(topic, problem):
    assert topic_problem(topic) == problem


def test_prefix_rejects_empty_levels_and_dollar_topics():
    assert prefix_problem("site/edged") is None
    assert "empty level" in prefix_problem("/edged")
    assert "empty level" in prefix_problem("edged/")
    assert "reserved" in prefix_problem("$SYS")


def test_a_stream_id_with_a_slash_cannot_make_a_topic():
    with pytest.raises(ValueError, match="contains '/'"):
        Topics("edged", "dev").results("a/b", "detection")


# -- payloads against the published schemas ------------------------------------------------


def test_detection_payload_validates_against_the_published_schema():
    _, message = encode_result(detection_result(3))
    validator("result").validate(message)
    assert message["captured_at"] == "2024-01-15T10:30:00.123Z"
    assert message["captured_at_ms"] == 1705314600123
    assert message["seq"] == 42 and message["frame_seq"] == 7
    assert message["frame"] == {"width": 640, "height": 480}
    assert message["model"]["sha256"] == "ab" * 6
    assert message["latency_ms"]["inference"] == 10.0
    first = message["detections"][0]
    assert first["bbox"] == {"x1": 10.0, "y1": 20.0, "x2": 110.0, "y2": 220.5}
    assert first["bbox_norm"] == {"x1": 0.0156, "y1": 0.0417, "x2": 0.1719, "y2": 0.4594}
    assert message["count"] == 3 and message["truncated"] is False


def test_classification_payload_validates_against_the_published_schema():
    model = payloads.model_dict("resnet", "", "", "fp32", "onnxruntime", "classification")
    data = payloads.result_payload(classification_result(), "d", "f" * 32, 0, model, "change", 4096)
    message = json.loads(data.decode())
    validator("result").validate(message)
    assert [c["label"] for c in message["classifications"]] == ["3", "8"]
    assert "detections" not in message


def test_schema_rejects_a_payload_without_items_or_with_both_kinds():
    _, message = encode_result(detection_result(1))
    del message["detections"]
    with pytest.raises(jsonschema.ValidationError):
        validator("result").validate(message)
    _, message = encode_result(detection_result(1))
    message["classifications"] = []
    with pytest.raises(jsonschema.ValidationError):
        validator("result").validate(message)


def test_oversized_result_keeps_the_most_confident_detections_and_says_truncated():
    data, message = encode_result(detection_result(400), max_bytes=4096)
    assert len(data) <= 4096
    validator("result").validate(message)
    assert message["truncated"] is True and message["count"] == 400
    kept = message["detections"]
    assert 0 < len(kept) < 400
    confidences = [d["confidence"] for d in kept]
    assert confidences == sorted(confidences, reverse=True)
    assert confidences[0] == 0.9  # the best one is kept
    one_more = payloads.encode(dict(message, detections=kept + [kept[-1]]))
    assert len(one_more) > 4096  # as many as fit


def test_status_state_and_reply_payloads_validate():
    boot = "a" * 32
    online = json.loads(payloads.status_payload("online", "d", boot, 0.0, [MODEL], ["cam"]))
    for state in ("offline", "stopped"):
        validator("status").validate(json.loads(payloads.status_payload(state, "d", boot, 0.0)))
    validator("status").validate(online)
    assert online["models"][0]["name"] == "peoplenet" and online["streams"] == ["cam"]
    status = {
        "stream_id": "cam",
        "state": "streaming",
        "state_age_s": 2.0,
        "source": "rtsp://u:***@h/",
        "fps": 14.9,
        "frames": 10,
        "reconnects": 1,
        "last_error": None,
        "source_size": [640, 480],
    }
    state = json.loads(payloads.stream_state_payload("d", status, "peoplenet", 100.0))
    validator("stream-state").validate(state)
    assert state["since"] == "1970-01-01T00:01:38.000Z" and state["frame"] == {
        "width": 640,
        "height": 480,
    }
    validator("command-reply").validate(json.loads(payloads.reply_payload("r1", True, {"x": 1})))
    validator("command-reply").validate(
        json.loads(payloads.reply_payload(None, False, error="bad"))
    )


def test_published_schema_copies_are_the_package_schemas():
    for kind in payloads.SCHEMA_NAMES:
        published = os.path.join(REPO, "docs", "schemas", f"{kind}.v1.json")
        assert filecmp.cmp(payloads.schema_path(kind), published, shallow=False), published
        jsonschema.Draft7Validator.check_schema(payloads.load_schema(kind))


# -- publish modes --------------------------------------------------------------------------


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def result_with(labels):
    items = [Detection(0, label, 0.9, (0, 0, 10, 10)) for label in labels]
    return InferenceResult("cam", 0, 0.0, 0.0, (10, 10), "m", "detection", items, {})


def test_every_frame_publishes_every_result():
    policy = PublishPolicy("every_frame", clock=FakeClock())
    assert [policy.decide(result_with(["person"])) for _ in range(3)] == ["frame"] * 3


def test_on_change_publishes_label_or_count_changes_and_heartbeats():
    clock = FakeClock()
    policy = PublishPolicy("on_change", heartbeat_s=10, clock=clock)
    decisions = []
    for t, labels in [
        (0, ["person"]),
        (1, ["person"]),
        (2, ["person", "person"]),
        (3, ["bag", "person"]),
        (4, ["person", "bag"]),
        (12.9, ["person", "bag"]),
        (13, ["person", "bag"]),
        (15, []),
    ]:
        clock.now = t
        decisions.append(policy.decide(result_with(labels)))
    assert decisions == ["change", None, "change", "change", None, None, "heartbeat", "change"]
    assert policy.suppressed == 3


def test_rate_cap_limits_messages_and_a_held_back_change_follows_later():
    clock = FakeClock()
    policy = PublishPolicy("on_change", heartbeat_s=60, max_rate=2, clock=clock)
    assert policy.decide(result_with(["person"])) == "change"
    clock.now = 0.1
    assert policy.decide(result_with([])) is None  # a change, but within 0.5 s of the last
    clock.now = 0.5
    assert policy.decide(result_with([])) == "change"  # not forgotten
    every = PublishPolicy("every_frame", max_rate=10, clock=clock)
    published = 0
    for i in range(100):  # 1 s at 100 results/s
        clock.now = 1.0 + i / 100.0
        published += every.decide(result_with(["person"])) is not None
    assert published == 10


def test_signature_counts_labels_regardless_of_order():
    assert signature(result_with(["b", "a", "a"]).items) == (("a", 2), ("b", 1))


# -- the mqtt config section ----------------------------------------------------------------


def test_mqtt_is_off_without_a_section_and_gets_documented_defaults_with_one():
    assert parse_config("device_id: d").mqtt is None
    mqtt = parse_config("mqtt: {host: broker.local}").mqtt
    assert (mqtt.port, mqtt.qos, mqtt.topic_prefix, mqtt.client_id) == (1883, 1, "edged", None)
    assert (mqtt.max_inflight, mqtt.ack_timeout_s, mqtt.backoff_max_s) == (20, 10.0, 60.0)
    assert mqtt.outbox.max_bytes == 64 << 20 and mqtt.outbox.commit_interval_ms == 50
    assert parse_config("mqtt: {host: h, tls: {enabled: true}}").mqtt.port == 8883


def test_per_stream_publish_settings_inherit_the_defaults():
    text = """
models: {m: {path: m.onnx}}
streams: {cam: {source: clip.mp4, model: m}}
mqtt:
  host: h
  publish: {mode: on_change, heartbeat_s: 5}
  streams: {cam: {max_rate: 2}}
"""
    mqtt = parse_config(text).mqtt
    assert (
        mqtt.streams["cam"].mode,
        mqtt.streams["cam"].heartbeat_s,
        mqtt.streams["cam"].max_rate,
    ) == ("on_change", 5, 2)


@pytest.mark.parametrize(
    "section, message",
    [
        ("{}", "mqtt.host: missing required key 'host'"),
        ("{host: h, password: p}", "mqtt.password: a password needs mqtt.username"),
        ("{host: h, username: u, password: p, password_env: E}", "set only one of password"),
        ("{host: h, topic_prefix: 'a/+'}", "mqtt.topic_prefix: 'a/+' contains a wildcard"),
        (
            "{host: h, tls: {ca_file: ca.pem}}",
            "mqtt.tls.ca_file: set, but mqtt.tls.enabled is false",
        ),
        ("{host: h, streams: {nope: {}}}", "mqtt.streams.nope: no stream named 'nope'"),
        ("{host: h, qos: 2}", "mqtt.qos: got 2; expected one of: 0, 1"),
        ("{host: h, publish: {mode: onchange}}", "did you mean 'on_change'"),
        ("{host: h, backoff_initial_s: 9, backoff_max_s: 2}", "mqtt.backoff_max_s: 2 is less than"),
    ],
)
def test_bad_mqtt_settings_are_config_errors_naming_the_key(section, message):
    with pytest.raises(ConfigError, match=None) as caught:
        parse_config("mqtt: " + section)
    assert message in str(caught.value)


def test_the_password_is_not_in_the_config_repr():
    mqtt = parse_config("mqtt: {host: h, username: u, password: s3cret}").mqtt
    assert "s3cret" not in repr(mqtt)
