"""Camera passwords of any characters never reach any output (seeded fuzz; a failure prints the
seed and the input). A password may hold ``/ # ? @ : %``, spaces and unicode, unencoded; every
URL form a config may hold (right, mistyped, malformed) goes through the source parser, the
config loader, ``edged check-config`` (the real CLI) and a running daemon's log and MQTT reload
reply (a real Mosquitto). ``EDGED_FUZZ_RUNS`` scales the in-process part (default 1500).

Each password is made of marker words (``zq`` + five of ``jxvkw``, found in no message) and
hostile characters between them; the output must hold neither the password nor any marker,
so a leaked head or tail of a password fails as surely as the whole of it.
"""

import json
import os
import random
import re
import signal

import pytest
import yaml

from edged.config import parse_config
from edged.errors import ConfigError
from edged.mqtt.control import redact_config
from edged.redact import redact
from edged.sources.uri import parse_source

from .conftest import run_cli
from .mosquitto import Mosquitto, Subscriber, stop_all_brokers, wait_for
from .test_daemon import Edged
from .test_mqtt_daemon import BASE, write_config

RUNS = int(os.environ.get("EDGED_FUZZ_RUNS", "1500"))
HOSTILE = list("/#?@:% ") + [
    "%2F", "://", "é", "密", "\u00a0", "\uff0f", "\uff20", "\u200b", "'", '"', "\\", "!", "&",
    "=", "[", "]", "{", "}", "*", ";", ",", "$", "~", "`", "<", ">", "|", "^", "+", "-", ".",
]  # fmt: skip
MARKER = re.compile(r"zq[jxvkw]{5}")
TEMPLATES = [
    "rtsp://admin:{pw}@cam.local:554/stream1",
    "rtsps://admin:{pw}@10.0.0.5/h264?channel=1",
    "http://admin:{pw}@cam/video.cgi",
    "rtsp://admin:{pw}@cam:99999/x",
    "rtsp://admin:{pw}@[::1/x",
    "rtsp://admin:{pw}@cam:port/x",
    "ftp://admin:{pw}@cam/x",
    "rtsp//admin:{pw}@cam/x",
    "rtsp:/admin:{pw}@cam/x",
    "RTSP:admin:{pw}@cam/x",
    "admin:{pw}@cam:554/x",
    "rtsp://:{pw}@cam/x",
    "gst:rtspsrc location=rtsp://admin:{pw}@cam/x ! decodebin ! videoconvert ! appsink",
]


@pytest.fixture(autouse=True)
def _no_broker_outlives_its_test():
    yield
    stop_all_brokers()


def password(rng):
    """Two to five pieces, at least one marker word, hostile characters around them."""
    pieces = ["zq" + "".join(rng.choice("jxvkw") for _ in range(5))]
    for _ in range(rng.randint(1, 4)):
        if rng.random() < 0.4:
            pieces.append("zq" + "".join(rng.choice("jxvkw") for _ in range(5)))
        else:
            pieces.append("".join(rng.choice(HOSTILE) for _ in range(rng.randint(1, 3))))
    rng.shuffle(pieces)
    return "".join(pieces)


def assert_no_leak(secret, text, context):
    assert secret not in text, (context, text)
    leaked = [m for m in MARKER.findall(secret) if m in text]
    assert not leaked, (context, leaked, text)


def test_random_passwords_never_leak_from_the_source_parser():
    rng = random.Random(23)
    for i in range(RUNS * 2):
        secret = password(rng)
        source = rng.choice(TEMPLATES).format(pw=secret)
        context = f"run {i} (seed 23): {source!r}"
        try:
            spec = parse_source(source, key="streams.front.source")
            shown = spec.display + repr(spec)
        except ConfigError as e:
            shown = str(e)
            assert "\n" not in shown, context
        assert_no_leak(secret, shown, context)
        # the same URL inside a longer text: a capture error, a GStreamer pipeline
        for text in (f"cannot open {source} (Connection refused)", f"rtspsrc location={source}"):
            assert_no_leak(secret, redact(text), context)


def test_random_passwords_never_leak_from_the_config_loader_or_get_config():
    rng = random.Random(29)
    accepted = 0
    for i in range(RUNS // 3):
        secret = password(rng)
        source = rng.choice(TEMPLATES).format(pw=secret)
        data = {
            "models": {"m": {"path": "m.onnx"}},
            "streams": {"a": {"source": source, "model": "m"}},
        }
        context = f"run {i} (seed 29): {source!r}"
        try:
            config = parse_config(yaml.safe_dump(data, allow_unicode=True), base_dir="/etc/edged")
        except ConfigError as e:
            assert "\n" not in str(e), context
            assert_no_leak(secret, str(e), context)
            continue
        accepted += 1
        # what get_config replies over MQTT, and what the logs show of the stream
        shown = json.dumps(redact_config(config), ensure_ascii=False) + repr(config)
        assert_no_leak(secret, shown, context)
    assert accepted > 0  # some hostile passwords are valid in a valid URL: both paths ran


@pytest.mark.parametrize(
    "template",
    [
        "streams: {{a: {{source: [{url}], model: m}}}}",  # a list where a string belongs
        "streams: {{a: {{source: {url}, model: m, transport: {url}}}}}",  # not one of tcp, udp
        "streams: {{{url}: {{source: a.mp4, model: m}}}}",  # a URL as a stream id
        "streams:\n  source: {url}\n",  # mis-indented: "source" became a stream id
    ],
)
def test_schema_errors_that_show_a_value_never_show_its_password(template):
    """The validator shows at most 60 characters of a bad value: cut before the "@", the
    head of a long password used to be shown whole."""
    secret = "zqjjjjj" + "x" * 80 + "zqkkkkk"
    url = json.dumps(f"rtsp://admin:{secret}@cam/x")
    with pytest.raises(ConfigError) as raised:
        parse_config("models: {m: {path: m.onnx}}\n" + template.format(url=url))
    assert "rtsp://admin:***@cam/x" in str(raised.value)
    assert_no_leak(secret, str(raised.value), template)
    assert "xxxxxxxxxx" not in str(raised.value)


@pytest.mark.timeout(120)  # a safety net, not a measurement: quadratic patterns took hours
def test_redact_scans_a_megabyte_of_hostile_text_in_one_pass():
    for text in ("a" * 2**20, "rtsp://" + "a" * 2**20, "a:" * 2**19 + "@", "a/" * 2**19 + "@",
                 "rtsp://a:b" * 2**17 + "@h", "rtsp:/" * 2**17):  # fmt: skip
        assert len(redact(text)) <= len(text)


def _config_texts(rng, count):
    """(text, secret): quoted as yaml.safe_dump writes it, or unquoted as a person types it
    (then "#" after a space starts a YAML comment and ": " breaks the mapping)."""
    for _ in range(count):
        secret = password(rng)
        source = rng.choice(TEMPLATES).format(pw=secret)
        if rng.random() < 0.5:
            value = json.dumps(source, ensure_ascii=rng.random() < 0.5)  # YAML double quotes
        else:
            value = source
        yield (
            f"models:\n  m: {{path: m.onnx}}\nstreams:\n  a:\n    model: m\n    source: {value}\n",
            secret,
        )


def test_check_config_never_prints_a_password(tmp_path):
    rng = random.Random(31)
    refused = 0
    for i, (text, secret) in enumerate(_config_texts(rng, 16)):
        path = tmp_path / f"edged-{i}.yaml"
        path.write_text(text, encoding="utf-8")
        result = run_cli(["check-config", str(path)])
        output = result.stdout + result.stderr
        context = f"run {i} (seed 31): {text!r}"
        assert result.returncode in (0, 2), (context, output)
        assert "Traceback" not in output, (context, output)
        assert_no_leak(secret, output, context)
        refused += result.returncode == 2
        if result.returncode == 2:
            assert result.stderr.count("\n") == 1, (context, output)
    assert refused > 0


def test_a_running_daemon_logs_and_replies_to_reload_without_a_password(tmp_path):
    """Reload over MQTT with a stream whose URL holds a hostile password: refused ones reply
    with the error, accepted ones start a stream that cannot connect (a closed port) and log
    why; neither the reply, the get_config reply nor any log line carries the password."""
    broker = Mosquitto(str(tmp_path / "broker")).start()
    operator = Subscriber(broker, [BASE + "/cmd/+/reply"], client_id="operator")
    operator.wait_subscribed()
    config = str(tmp_path / "edged.yaml")
    write_config(config, broker, tmp_path)
    with open(config) as f:
        base = f.read()
    closed_port = 9  # discard: nothing listens on the test machine's loopback
    rng = random.Random(37)
    cases = []
    for i in range(8):
        secret = password(rng)
        if i % 2:  # a URL that parses: a password without "/ # ? @" or spaces
            secret = re.sub(r"[/#?@\s\uff0f\uff20]", "", secret)
            source = f"rtsp://admin:{secret}@127.0.0.1:{closed_port}/x"
        else:
            source = rng.choice(TEMPLATES).format(pw=secret)
        cases.append((secret, source))
    edged = Edged(config)
    replies = []
    try:
        edged.wait_for("edged ready")
        for i, (secret, source) in enumerate(cases):
            text = base.replace(
                "streams:\n", f"streams:\n  bad: {{source: {json.dumps(source)}, model: tiny}}\n"
            )
            with open(config, "w", encoding="utf-8") as f:
                f.write(text)
            operator.publish(BASE + "/cmd/reload", {"request_id": f"r{i}"})
            operator.publish(BASE + "/cmd/get_config", {"request_id": f"g{i}"})
            for request_id in (f"r{i}", f"g{i}"):
                found = wait_for(
                    lambda rid=request_id: [
                        r for r in operator.json("/reply") if r["request_id"] == rid
                    ],
                    60, f"the reply to {request_id}",
                )  # fmt: skip
                replies.append((secret, source, found[0]))
        code = edged.stop(signal.SIGTERM)
    finally:
        if edged.proc.poll() is None:
            edged.stop(signal.SIGKILL)
        operator.close()
        broker.stop()
    assert code == 0
    outcomes = [reply["ok"] for _, _, reply in replies[0::2]]
    assert True in outcomes and False in outcomes, outcomes  # both paths were taken
    log = "\n".join(edged.lines)
    for secret, source, reply in replies:
        context = f"seed 37: {source!r}"
        assert_no_leak(secret, json.dumps(reply, ensure_ascii=False), context)
        assert_no_leak(secret, log, context)
    assert "stream bad" in log  # an accepted URL was tried and its failure logged
    assert "Traceback" not in log
