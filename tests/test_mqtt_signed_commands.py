"""Signed commands (``mqtt.commands.require_signature``): only the operators' keys command.

MQTT does not tell a subscriber who published; the signature does. Against a REAL Mosquitto
with the MQTT service (the daemon behind it is the stand-in of test_mqtt_command_safety.py,
which counts reloads), real Ed25519 signatures from ``edged sign-command``: a signed command
runs once; unsigned, mis-signed, unknown-key, other-device, other-command, stale and replayed
ones get an error reply and run nothing.
"""

import json
import os
import subprocess
import sys
import time

import pytest

from edged.config import parse_config
from edged.errors import ConfigError
from edged.mqtt.signedcmd import CommandVerifier, sign_command
from edged.signing import canonical, keys

from .mosquitto import Subscriber, wait_for
from .test_mqtt_command_safety import ReloadCounter, broker, make_service, replies  # noqa: F401

pytestmark = pytest.mark.timeout(180)
NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def operator_keys():
    return keys.generate()


def keylist_file(tmp_path, pair):
    trusted = keys.make_keylist([pair.public], threshold=1, version=1)
    path = tmp_path / "keys.json"
    path.write_bytes(canonical.encode(keys.sign_keylist(trusted, [pair])))
    return str(path)


def verifier(pair, device="cam-1"):
    trusted = keys.make_keylist([pair.public], threshold=1, version=1)
    return CommandVerifier(trusted, device, 60, wall_clock=lambda: NOW)


def unwrap(v, name, payload):
    return v.unwrap(name, json.loads(payload))


def signed(pair, name="reload", device="cam-1", request_id="r1", at=None, **arguments):
    at = int(NOW * 1000) if at is None else at
    return sign_command(name, device, request_id, [pair], arguments, issued_at_ms=at)


def test_verifier_accepts_once_and_refuses_every_other_case(operator_keys):
    v = verifier(operator_keys)
    request, problem = unwrap(v, "reload", signed(operator_keys, timeout_s=5))
    assert problem is None and request["request_id"] == "r1" and request["timeout_s"] == 5
    cases = {
        "replayed": signed(operator_keys),
        "another device": signed(operator_keys, device="cam-2", request_id="r2"),
        "another command": signed(operator_keys, name="snapshot", request_id="r3"),
        "maximum age": signed(operator_keys, request_id="r4", at=int(NOW * 1000) - 61_000),
        "trusted key": signed(keys.generate(), request_id="r5"),
    }
    for why, payload in cases.items():
        request, problem = unwrap(v, "reload", payload)
        assert request == {} and why in problem, (why, problem)
    tampered = json.loads(signed(operator_keys, request_id="r6"))
    tampered["signed"]["device"] = "cam-1"
    tampered["signed"]["timeout_s"] = 999  # an argument changed after signing
    assert "trusted key" in v.unwrap("reload", tampered)[1]
    assert "unsigned command refused" in v.unwrap("reload", {"request_id": "x"})[1]


def test_a_replay_is_forgotten_only_once_it_is_stale_anyway(operator_keys):
    clock = [NOW]
    trusted = keys.make_keylist([operator_keys.public], threshold=1, version=1)
    v = CommandVerifier(trusted, "cam-1", 60, wall_clock=lambda: clock[0])
    payload = signed(operator_keys)
    assert unwrap(v, "reload", payload)[1] is None
    clock[0] = NOW + 59
    assert "replayed" in unwrap(v, "reload", payload)[1]
    clock[0] = NOW + 61
    assert "maximum age" in unwrap(v, "reload", payload)[1]


def test_config_needs_the_key_list_with_require_signature():
    with pytest.raises(ConfigError, match="mqtt.commands.keys_file: required"):
        parse_config("mqtt: {host: h, commands: {require_signature: true}}")


def test_only_signed_commands_run_through_a_real_broker(broker, tmp_path, operator_keys):  # noqa: F811
    (tmp_path / "op.key").write_text(operator_keys.private.hex() + "\n")
    os.chmod(str(tmp_path / "op.key"), 0o600)
    keys_file = keylist_file(tmp_path, operator_keys)
    extra = f", commands: {{require_signature: true, keys_file: {keys_file}}}"
    daemon = ReloadCounter()
    service = make_service(broker, tmp_path, device="cam-1", extra=extra, control=daemon)
    base = "edged/cam-1/cmd/"
    operator = Subscriber(broker, [base + "+/reply"], client_id="operator")
    operator.wait_subscribed()
    service.start()
    try:
        wait_for(lambda: service.connected, 10, "edged to connect")
        cli = subprocess.run(
            [sys.executable, "-m", "edged", "sign-command", "reload", "--device", "cam-1",
             "--key", str(tmp_path / "op.key"), "--request-id", "good"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=60,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        good = cli.stdout.strip().encode()
        operator.publish(base + "reload", good)
        operator.publish(base + "reload", good)  # a replay of the same signed message
        operator.publish(base + "reload", {"request_id": "unsigned"})
        now = int(time.time() * 1000)
        stranger = sign_command("reload", "cam-1", "stranger", [keys.generate()], {}, now)
        operator.publish(base + "reload", stranger)
        other = sign_command("reload", "cam-2", "other", [operator_keys], {}, now)
        operator.publish(base + "reload", other)
        operator.publish(base + "ping", sign_command("ping", "cam-1", "last", [operator_keys]))
        wait_for(lambda: replies(operator, "last"), 10, "the reply to the last ping")
        wait_for(lambda: len(operator.json("/reply")) >= 6, 10, "every reply")
    finally:
        service.stop()
        operator.close()
    assert daemon.reloads == 1  # only the first "good"
    everything = operator.json("/reply")
    oks = [r for r in everything if r["ok"]]
    assert sorted(r["request_id"] for r in oks) == ["good", "last"]
    errors = sorted(r["error"] for r in everything if not r["ok"])
    assert len(errors) == 4 and all(e for e in errors)
    assert any("replayed" in e for e in errors) and any("unsigned" in e for e in errors)
    assert any("another device" in e for e in errors) and any("trusted key" in e for e in errors)
