"""``edged push`` against a real Mosquitto and a device-side updater on its own MQTT connection.

The device is a real :class:`~edged.update.updater.Updater` with the real
:class:`~edged.update.mqtt_transport.MqttTransport`, real files and journals; only the model
slots are a stand-in (tests/update_standins.py). ``edged push`` runs as a user runs it (a
child process), except where a chunk must be damaged on the way (in-process, its chunk server
wrapped). Refusals are asserted to come before any chunk is asked for.
"""

import hashlib
import os
import subprocess
import sys
import time

import pytest

from edged.config.model import Config, MqttConfig, UpdateConfig
from edged.signing import keys
from edged.update.manifest import FileEntry, make, sign_manifest
from edged.update.mqtt_transport import MqttTransport
from edged.update.store import SlotStore
from edged.update.updater import Updater
from edged.update.wiring import settings_from_config
from tests.conftest import REPO
from tests.mosquitto import Mosquitto, Subscriber, stop_all_brokers, wait_for
from tests.update_standins import StandInDeployer

CHUNK = 1024
DEVICE = "jetson-1"
SAFETY_S = 60  # generous safety timeouts, never assertions about speed


@pytest.fixture
def broker(tmp_path):
    b = Mosquitto(str(tmp_path / "broker")).start()
    yield b
    stop_all_brokers()


@pytest.fixture(scope="module")
def operator():
    return keys.generate()


class Operator:
    """The operator's workspace: keys, model files, signed manifests."""

    def __init__(self, directory, pair):
        self.dir = directory
        self.pair = pair
        self.model = os.urandom(120 * CHUNK + 5)
        with open(os.path.join(directory, "det.onnx"), "wb") as f:
            f.write(self.model)

    def manifest(self, name, version, signer=None, created=None, expires=None, **changes):
        now = int(time.time())
        values = dict(
            model="det", version=version,
            files=[FileEntry("det.onnx", "model", len(self.model),
                             hashlib.sha256(self.model).hexdigest())],
            config={"task": "detection"}, devices=[DEVICE], groups=[],
            created=created or now, expires=expires or now + 3600, chunk_bytes=CHUNK,
        )  # fmt: skip
        values.update(changes)
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(sign_manifest(make(**values), [signer or self.pair]))
        return path


@pytest.fixture
def op(tmp_path, operator):
    directory = tmp_path / "operator"
    directory.mkdir()
    return Operator(str(directory), operator)


class Device:
    def __init__(self, broker, state_dir, trusted, groups=(), window=4, device_id=DEVICE,
                 models=("det",), username=None, password=None):  # fmt: skip
        self.deployer = StandInDeployer(models=models)
        self.transport = MqttTransport(MqttConfig(host=broker.host, port=broker.port,
                                                  backoff_initial_s=0.2, backoff_max_s=1,
                                                  username=username, password=password),
                                       device_id)  # fmt: skip
        config = Config(device_id=device_id, update=UpdateConfig(state_dir=state_dir))
        settings = settings_from_config(config)._replace(
            prefix="edged", groups=tuple(groups), probation_s=0.3, window=window,
            request_timeout_s=1.0)  # fmt: skip
        self.updater = Updater(settings, trusted, self.transport, self.deployer)
        self.transport.handler = self.updater.on_message

    def start(self):
        self.transport.start()
        self.updater.start()
        wait_for(lambda: self.transport.connected, SAFETY_S, "the device's connection")
        return self

    def stop(self):
        self.updater.stop()
        self.transport.stop()


@pytest.fixture
def device_factory(tmp_path, operator, broker):
    trusted = keys.make_keylist([operator.public], 1, 1)
    made = []

    def factory(**kwargs):
        kwargs.setdefault("trusted", trusted)
        device = Device(broker, str(tmp_path / "state"), **kwargs)
        made.append(device)
        return device

    yield factory
    for device in made:
        device.stop()


def push_cmd(broker, manifest, *extra):
    return [sys.executable, "-m", "edged", "push", manifest, "--host", broker.host,
            "--port", str(broker.port), "--timeout", str(SAFETY_S), *extra]  # fmt: skip


def run_push(broker, manifest, *extra):
    return subprocess.run(push_cmd(broker, manifest, *extra), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=SAFETY_S * 2)  # fmt: skip


def requests_seen(broker):
    watcher = Subscriber(broker, ["edged/+/update/request"], client_id="test-requests")
    watcher.wait_subscribed()
    return watcher


def test_a_push_is_served_committed_and_summarised(broker, op, device_factory):
    device = device_factory().start()
    done = run_push(broker, op.manifest("v2.json", 2))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "COMMITTED" in done.stdout.splitlines()[-1] and DEVICE in done.stdout
    assert "[####################] 121/121 chunks" in done.stdout
    assert device.deployer.serving == "v2"
    assert SlotStore(device.updater.settings.state_dir, "det").installed().version == 2


def test_refusals_come_before_any_chunk(broker, op, device_factory, tmp_path):
    device = device_factory().start()
    assert run_push(broker, op.manifest("v2.json", 2)).returncode == 0
    downgrade_then = int(time.time()) - 600
    stranger = keys.generate()
    bad_sig = op.manifest("bad.json", 3)
    with open(bad_sig, "rb") as f:
        data = bytearray(f.read())
    at = data.index(b'"sig":"') + 10
    data[at] = ord("0") if data[at] != ord("0") else ord("1")
    with open(bad_sig, "wb") as f:
        f.write(bytes(data))
    cases = [
        (bad_sig, "a bad signature"),
        (op.manifest("stranger.json", 3, signer=stranger), "unknown keys"),
        (op.manifest("old.json", 1), "not newer"),
        (op.manifest("replay.json", 1, downgrade=True, created=downgrade_then), "a replay"),
        (op.manifest("expired.json", 3, created=int(time.time()) - 7200,
                     expires=int(time.time()) - 1), "expired"),
    ]  # fmt: skip
    watcher = requests_seen(broker)
    try:
        for path, reason in cases:
            done = run_push(broker, path)
            assert done.returncode == 1, done.stdout + done.stderr
            last = done.stdout.strip().splitlines()[-1]
            assert "REFUSED" in last and reason in last, done.stdout
        assert watcher.received() == []  # not one chunk asked for
    finally:
        watcher.close()
    assert device.deployer.serving == "v2"


def test_a_broker_restart_mid_transfer_resumes(broker, op, device_factory):
    device = device_factory(window=1).start()
    proc = subprocess.Popen(push_cmd(broker, op.manifest("v2.json", 2)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True)  # fmt: skip
    try:
        wait_for(lambda: device.updater.status.get("received", 0) >= 20, SAFETY_S, "20 chunks")
        broker.kill()
        time.sleep(0.5)
        broker.start()
        out, err = proc.communicate(timeout=SAFETY_S * 2)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out + err
    journal = device.updater.journal
    assert [h[0] for h in journal.history].count("RECEIVING") == 1  # resumed, not restarted
    assert journal.state == "COMMITTED" and device.deployer.serving == "v2"


def test_a_damaged_chunk_is_refused_and_asked_for_again(broker, op, device_factory,
                                                        monkeypatch):  # fmt: skip
    from edged.cli import main
    from edged.cli import push as push_module

    device = device_factory().start()
    original = push_module.ChunkServer.frames
    flipped = []

    def flipping(self, device_id, payload):
        frames = original(self, device_id, payload)
        if frames and not flipped:
            topic, frame = frames[0]
            frames[0] = (topic, frame[:-1] + bytes([frame[-1] ^ 0x01]))
            flipped.append(topic)
        return frames

    monkeypatch.setattr(push_module.ChunkServer, "frames", flipping)
    watcher = requests_seen(broker)
    try:
        code = main(["push", op.manifest("v2.json", 2), "--host", broker.host, "--port",
                     str(broker.port), "--timeout", str(SAFETY_S)])  # fmt: skip
    finally:
        watcher.close()
    assert code == 0 and flipped and device.updater.damaged == 1
    first = [m.payload for m in watcher.received()]
    assert any(b'"ranges":[[0,' in p for p in first[1:]), "chunk 0 was not asked for again"
    assert device.deployer.serving == "v2"


def test_an_offline_device_converges_from_the_retained_desired_state(broker, op,
                                                                     device_factory):  # fmt: skip
    manifest = op.manifest("group.json", 2, devices=[], groups=["site-a"])
    proc = subprocess.Popen(push_cmd(broker, manifest, "--expect", DEVICE),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)  # fmt: skip
    try:
        retained = Subscriber(broker, ["edged/groups/site-a/update/desired"], client_id="t-ret")
        wait_for(lambda: retained.received(), SAFETY_S, "the retained desired state")
        retained.close()
        device = device_factory(groups=["site-a"]).start()  # connects after the push
        out, err = proc.communicate(timeout=SAFETY_S * 2)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out + err
    assert device.deployer.serving == "v2"


def readme_commands():
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    section = text[text.index("## Push a model to a fleet") :]
    block = section[section.index("```sh") + 5 : section.index("```", section.index("```sh") + 5)]
    return [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip()]


def test_the_readme_commands_work_as_written(tmp_path, broker, device_factory):
    work = tmp_path / "laptop"
    work.mkdir()
    os.symlink(os.path.join(REPO, "models"), str(work / "models"))
    commands = readme_commands()
    assert [c.split()[1] for c in commands if c.startswith("edged ")] == [
        "keygen", "keys", "sign", "push"]  # fmt: skip
    edged = f'edged() {{ "{sys.executable}" -m edged "$@"; }}; '  # as if installed
    for command in commands:
        if command.startswith("edged push"):
            break
        done = subprocess.run(["bash", "-c", edged + command], cwd=str(work),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True)  # fmt: skip
        assert done.returncode == 0, (command, done.stderr)
    trusted = keys.read_keylist(str(work / "keys.json"), int(time.time()))
    device = device_factory(trusted=trusted, device_id="jetson-01", groups=["site-a"],
                            models=("peoplenet",)).start()  # fmt: skip
    command = command.replace("--timeout 600", "--timeout 60")
    done = subprocess.run(["bash", "-c", f"{edged}{command} --port {broker.port}"], cwd=str(work),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=SAFETY_S * 2)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "COMMITTED" in done.stdout.splitlines()[-1]
    assert device.deployer.serving == "v2"


def test_the_shipped_acl_carries_a_push_and_keeps_other_devices_out(tmp_path, op, operator):
    users = {DEVICE: "pw-dev", "jetson-2": "pw-2", "operator": "pw-op"}
    acl = os.path.join(REPO, "docs", "mosquitto", "acl")
    broker = Mosquitto(str(tmp_path / "acl-broker"), users, acl_file=acl).start()
    trusted = keys.make_keylist([operator.public], 1, 1)
    device = Device(broker, str(tmp_path / "state"), trusted, username=DEVICE, password="pw-dev")
    spy = Subscriber(broker, [f"edged/{DEVICE}/update/#"], client_id="spy", username="jetson-2",
                     password="pw-2")  # fmt: skip
    try:
        device.start()
        spy.wait_subscribed()
        # another device cannot push to this one (the broker drops its desired state)
        spy.publish(f"edged/{DEVICE}/update/desired", b"forged", retain=True)
        env = dict(os.environ, PUSH_PW="pw-op")
        done = subprocess.run(push_cmd(broker, op.manifest("v2.json", 2), "--username",
                                       "operator", "--password-env", "PUSH_PW"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                              universal_newlines=True, timeout=SAFETY_S * 2)  # fmt: skip
    finally:
        spy.close()
        device.stop()
        stop_all_brokers()
    assert done.returncode == 0, done.stdout + done.stderr
    assert device.deployer.serving == "v2"
    assert spy.received() == []  # it read nothing of this device's update
    assert "Denied PUBLISH from spy" in broker.log_text()


def test_one_push_updates_a_group_across_a_bridge_with_one_member_offline(tmp_path, op, operator):
    """The site-gateway topology: jetson-a on the central broker, jetson-b behind a second
    Mosquitto bridged to it, jetson-c offline while the push starts."""
    central = Mosquitto(str(tmp_path / "central")).start()
    site = Mosquitto(str(tmp_path / "site"), extra_conf=[
        "connection central", f"address 127.0.0.1:{central.port}", "topic edged/# both 1",
        "cleansession true", "restart_timeout 1"]).start()  # fmt: skip
    trusted = keys.make_keylist([operator.public], 1, 1)
    devices = {}
    for name, broker in (("jetson-a", central), ("jetson-b", site), ("jetson-c", central)):
        devices[name] = Device(broker, str(tmp_path / name), trusted, groups=["site-a"],
                               device_id=name)  # fmt: skip
    manifest = op.manifest("group.json", 2, devices=[], groups=["site-a"])
    expect = [arg for name in sorted(devices) for arg in ("--expect", name)]
    try:
        devices["jetson-a"].start()
        devices["jetson-b"].start()
        time.sleep(1.0)  # the bridge connects
        proc = subprocess.Popen(push_cmd(central, manifest, *expect), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, universal_newlines=True)  # fmt: skip
        wait_for(lambda: devices["jetson-a"].updater.status.get("state"), SAFETY_S, "a start")
        devices["jetson-c"].start()  # comes online during the push: the retained state
        out, err = proc.communicate(timeout=SAFETY_S * 2)
    finally:
        for device in devices.values():
            device.stop()
        stop_all_brokers()
    assert proc.returncode == 0, out + err
    table = out.splitlines()[-3:]
    assert all("COMMITTED" in row for row in table), out
    assert all(d.deployer.serving == "v2" for d in devices.values())
