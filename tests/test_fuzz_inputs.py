"""Hostile and random input at the boundaries: a config, a camera URL
and an MQTT command get a typed error with a reason -- never another exception, never a hang.

Known attacks first (alias bombs, deep nesting, huge numbers, unhashable keys), then seeded
random mutations of the shipped reference config, structural and byte-level, and of command
payloads. ``EDGED_FUZZ_RUNS`` scales the random part (default 1500 per family; e.g. 100000
for a long local run). A failure prints the seed and the input that broke it.
"""

import copy
import json
import os
import random
import subprocess
import sys

import pytest
import yaml

from edged.config import parse_config
from edged.config.yamlfile import MAX_DEPTH, _StrictLoader, load_yaml
from edged.errors import ConfigError
from edged.mqtt.commands import CommandProcessor
from edged.mqtt.control import DaemonControl
from edged.sources.uri import parse_source

from .conftest import REPO

RUNS = int(os.environ.get("EDGED_FUZZ_RUNS", "1500"))
REFERENCE = os.path.join(REPO, "configs", "edged.yaml")
# No duration is asserted here (how fast each is refused: `python -m benchmarks --only config`);
# a hang still ends a known-input test at this generous safety timeout (pytest-timeout).
SAFETY_TIMEOUT = pytest.mark.timeout(300)


def _bomb():
    """Nine anchors of nine references each: 9^9 values once expanded, 300 bytes of text."""
    lol = '["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'
    items = ["&l0 " + lol] + [f"&l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)]
    return "[" + ", ".join(items) + "]"


KNOWN = {
    "deep flow list": "models: " + "[" * 50000,
    "deep closed list": "models: " + "[" * 3000 + "]" * 3000,
    "deep block mapping": "models:\n" + "".join(" " * i + "b:\n" for i in range(1, 2000)),
    "alias to itself": "models: &a [*a]",
    "list as a key": "? [a, b]\n: 1\n",
    "mapping as a key": "? {a: 1}\n: 1\n",
    "bomb in streams": "streams: {a: BOMB}",
    "bomb as streams": "streams: BOMB",
    "bomb in labels": "models: {m: {path: a.onnx, labels: BOMB}}",
    "bomb in class settings": "models: {m: {path: a.onnx, detection: {classes: {p: BOMB}}}}",
    "bomb in a profile": "models: {m: {path: a.onnx, engine: {profiles: {x: {min: BOMB}}}}}",
    "bomb in publish": "mqtt: {publish: {streams: BOMB}}",
    "bomb as device_id": "device_id: BOMB",
    "python tag": "device_id: !!python/object/apply:os.system [ls]",
    "binary": "device_id: !!binary aGVsbG8=",
    "set": "device_id: !!set {a, b}",
    "timestamp": "device_id: 2001-12-14t21:59:43.10-05:00",
    "nan": "pipeline: {max_batch: .nan}",
    "infinity": "pipeline: {drain_timeout_s: .inf}",
    "5000-digit number": "pipeline: {max_batch: " + "9" * 5000 + "}",
    "huge float": "pipeline: {drain_timeout_s: 1e400}",
    "NUL in a string": 'device_id: "a\\0b"',
    "100 kB key": "x" * 100000 + ": 1",
    "number keys": "models: {1: {path: a.onnx}}",
    "null key": "~: 2",
    "two documents": "a: 1\n---\nb: 2",
    "a bare string": "hello",
    "tab indentation": "models:\n\t- a",
}


def hostile_configs():
    """The known hostile configs by name, bombs filled in (also timed by benchmarks/)."""
    return {name: text.replace("BOMB", _bomb()) for name, text in KNOWN.items()}


def parse_or_config_error(text):
    """None when accepted, the ConfigError's message when refused; anything else fails."""
    try:
        parse_config(text)
        outcome = None
    except ConfigError as e:
        outcome = str(e)
        assert "\n" not in outcome, outcome  # one line
    return outcome


@SAFETY_TIMEOUT
@pytest.mark.parametrize("name", sorted(KNOWN))
def test_known_hostile_configs_are_refused_with_one_line(name):
    message = parse_or_config_error(hostile_configs()[name])
    assert message, "accepted"
    assert len(message) < 400


@SAFETY_TIMEOUT
@pytest.mark.parametrize(
    "name, where",
    [("deep flow list", "line 1, column 40"), ("deep closed list", "line 1, column 40"),
     ("deep block mapping", "line 33, column 34")],
)  # fmt: skip
def test_deep_nesting_is_refused_while_scanning_where_the_33rd_level_opens(
    name, where, monkeypatch
):
    # the composer recurses once per level: it must never get deeper than the limit, i.e. the
    # scanner refuses the document before the composer walks into the deep part
    deepest = [0]
    compose_node = _StrictLoader.compose_node

    def counting(loader, parent, index):
        loader.compose_depth = getattr(loader, "compose_depth", 0) + 1
        deepest[0] = max(deepest[0], loader.compose_depth)
        try:
            return compose_node(loader, parent, index)
        finally:
            loader.compose_depth -= 1

    monkeypatch.setattr(_StrictLoader, "compose_node", counting)
    with pytest.raises(ConfigError) as raised:
        load_yaml(KNOWN[name])
    assert str(raised.value) == f"{where}: nested deeper than {MAX_DEPTH} levels"
    assert deepest[0] <= MAX_DEPTH + 1  # + 1: a scalar inside the deepest collection


@pytest.mark.parametrize("flow", [True, False])
def test_nesting_exactly_at_the_limit_is_accepted(flow):
    levels = MAX_DEPTH - 1  # below the top-level mapping
    if flow:
        text = "models: " + "[" * levels + "1" + "]" * levels
    else:
        lines = [" " * i + "b:" for i in range(1, levels + 1)] + [" " * (levels + 1) + "1"]
        text = "models:\n" + "\n".join(lines)
    data = load_yaml(text)
    depth = 0
    while isinstance(data, (dict, list)):
        data = next(iter(data.values())) if isinstance(data, dict) else data[0]
        depth += 1
    assert depth == MAX_DEPTH and data == 1


def test_a_config_bomb_is_one_line_and_exit_2_from_the_cli(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(KNOWN["bomb in streams"].replace("BOMB", _bomb()))
    result = subprocess.run(
        [sys.executable, "-m", "edged", "check-config", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "expands to more than" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_yaml_anchors_and_merge_keys_used_a_few_times_are_still_fine():
    config = parse_config(
        "models: {m: {path: a.onnx}}\n"
        "streams:\n"
        "  a: &cam {source: a.mp4, model: m, realtime: false}\n"
        "  b: {<<: *cam, source: b.mp4}\n"  # a written key overrides the merged one
    )
    b = config.streams["b"].source
    assert b.location.endswith("b.mp4") and b.realtime is False


def test_a_key_written_twice_is_still_refused_next_to_a_merge_key():
    with pytest.raises(ConfigError, match="line 1: duplicate key 'source'"):
        parse_config("streams: {b: {source: x.mp4, <<: {model: m}, source: y.mp4}}")


# -- random mutations of the reference config -------------------------------------------------

VALUES = [
    None, True, False, 0, -1, 1, 2**31, -(2**63), 10**30, 0.5, -0.0, float("nan"), float("inf"),
    "", " ", "a", "x" * 5000, "../../etc/passwd", "rtsp://u:p@h/x", "\x00", "é", "{}", [],
    [1, "a", None], {}, {"a": 1}, {"path": "m.onnx"}, [[[[]]]],
]  # fmt: skip


def _paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, path + (i,))


def _fresh(value):
    # a copy: a later edit inside an inserted list or mapping must not change VALUES itself
    # (an edit could then put a value inside itself: a cycle, and a RecursionError here)
    return copy.deepcopy(value)


def _mutate(data, rng):
    """One to three random edits: replace a value, delete a key, add an unknown key."""
    for _ in range(rng.randint(1, 3)):
        paths = [p for p in _paths(data) if p]
        path = rng.choice(paths)
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        action = rng.random()
        if action < 0.6:
            parent[path[-1]] = _fresh(rng.choice(VALUES))
        elif action < 0.8 and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            key = rng.choice(["bogus", "x" * 70, "1", "path", "model"])
            parent[key] = _fresh(rng.choice(VALUES))
    return data


def test_random_structural_mutations_of_the_reference_config():
    with open(REFERENCE) as f:
        base = json.dumps(yaml.safe_load(f))
    rng = random.Random(7)
    refused = 0
    for i in range(RUNS):
        data = _mutate(json.loads(base), rng)
        text = yaml.safe_dump(data, allow_unicode=True)
        try:
            refused += parse_or_config_error(text) is not None
        except AssertionError:
            raise  # parse_or_config_error's own checks: already say what failed
        except Exception as e:  # noqa: BLE001 - the point: name the input that broke it
            raise AssertionError(f"run {i} (seed 7): {type(e).__name__}: {e}\n{text}") from e
    assert refused > RUNS // 2  # most random edits are wrong, and each was a ConfigError


def test_random_byte_mutations_of_the_reference_config():
    with open(REFERENCE, "rb") as f:
        base = f.read()
    rng = random.Random(11)
    alphabet = b"[]{}:&*!|>-?,#'\"\\\n\t %@`~0123456789.eE+xyz\x00\xff"
    for i in range(RUNS):
        data = bytearray(base)
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(len(data))
            roll = rng.random()
            if roll < 0.4:
                data[at] = rng.choice(alphabet)
            elif roll < 0.7:
                data[at:at] = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 4)))
            else:
                del data[at : at + rng.randint(1, 40)]
        text = bytes(data).decode("utf-8", "replace")
        try:
            parse_or_config_error(text)
        except AssertionError:
            raise
        except Exception as e:  # noqa: BLE001 - the point: name the input that broke it
            raise AssertionError(f"run {i} (seed 11): {type(e).__name__}: {e}") from e


# -- camera URLs ---------------------------------------------------------------------------------

SOURCE_PARTS = [
    "rtsp://", "rtsps://", "http://", "https://", "rtp://", "file://", "csi://", "gst:",
    "/dev/video", "/dev/v4l/by-id/", "rtsp//", "rtsp:/", "rtsp:", "@", "[::1]", "[", "]", ":",
    ":99999", ":-1", "/", "?", "#", "%", "%zz", " ", "\x00", "\n", "é", "..", "0", "65536",
    "appsink", "!", "a" * 300,
]  # fmt: skip
SECRET = "hunter2"


def test_random_camera_urls_are_accepted_or_refused_without_leaking_the_password():
    """Random strings, each with a password where a URL puts one (after "user:", before "@"):
    a ConfigError or a spec, and the password in neither the message nor the display."""
    rng = random.Random(5)
    for i in range(RUNS * 2):
        parts = [rng.choice(SOURCE_PARTS) for _ in range(rng.randint(0, 5))]
        parts.insert(rng.randint(0, len(parts)), f"admin:{SECRET}@cam")
        source = "".join(parts)
        try:
            shown = parse_source(source).display
        except ConfigError as e:
            shown = str(e)
            assert "\n" not in shown
        except Exception as e:  # noqa: BLE001 - the point: name the input that broke it
            raise AssertionError(f"run {i} (seed 5): {type(e).__name__}: {e} for {source!r}") from e
        if source.startswith(("admin:", "rtsp", "http", "file", "csi", "/", "gst:")):
            assert SECRET not in shown, (source, shown)


# -- MQTT command payloads ---------------------------------------------------------------------


def test_random_command_payloads_always_get_a_verdict():
    processor = CommandProcessor(DaemonControl(), "b" * 32, max_bytes=64 * 1024)
    rng = random.Random(3)
    seeds = [
        b'{"request_id": 1}', b'{"request_id": "a", "stream": "cam", "quality": 80}',
        b'{"request_id": 1, "max_width": 1e999}', b"[" * 2000, b'{"request_id": [1]}',
    ]  # fmt: skip
    for i in range(RUNS * 2):
        payload = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(0, 6)):
            at = rng.randrange(len(payload) + 1)
            payload[at:at] = bytes([rng.randrange(256)])
        name = rng.choice(["ping", "get_config", "reload", "snapshot", "nope", "", None, "\x00"])
        try:
            label, result, reply = processor.process(name, bytes(payload), rng.random() < 0.05)
        except Exception as e:  # noqa: BLE001 - the point: name the input that broke it
            raise AssertionError(
                f"run {i} (seed 3): {type(e).__name__}: {e} for {payload!r}"
            ) from e
        assert result in ("ok", "error", "ignored"), result
        if reply is not None:
            assert isinstance(json.loads(reply.decode("utf-8")), dict)
