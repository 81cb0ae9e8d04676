"""A model pushed with ``edged push`` to a running daemon over a real Mosquitto.

Real daemon (a clip stream on the digits classifier, ONNX Runtime), real broker, real
``edged push`` child process, real files, journal and model switch through the daemon's
model slots: the classifier is replaced by a detector while the stream runs on; a model that
outputs NaN is refused by the canary and the old model keeps serving; after a restart the
committed version serves again.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from edged.daemon import Daemon
from edged.metrics.collector import DaemonCollector
from edged.signing import canonical, keys

from . import onnx_models
from .mosquitto import Mosquitto, Subscriber, stop_all_brokers
from .test_daemon import DIGITS, make_clip

SAFETY_S = 60  # generous safety timeouts, never assertions about speed
DEVICE = "jetson-1"


def wait_until(predicate, timeout=SAFETY_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def setup(tmp_path):
    broker = Mosquitto(str(tmp_path / "broker")).start()
    ops = tmp_path / "operator"
    ops.mkdir()
    pair = keys.generate()
    keys.write_private(str(ops / "op.key"), pair)
    keylist = keys.sign_keylist(keys.make_keylist([pair.public], 1, 1), [pair])
    (tmp_path / "keys.json").write_bytes(canonical.encode(keylist))
    clip = make_clip(str(tmp_path / "clip.avi"), frames=2000)
    config = tmp_path / "edged.yaml"
    config.write_text("\n".join([
        f"device_id: {DEVICE}",
        "models:",
        f"  digits: {{path: {DIGITS}/resnet18.onnx, labels: {DIGITS}/labels.txt, version: '1'}}",
        "streams:",
        f"  cam: {{source: {clip}, model: digits}}",
        "pipeline: {summary_interval_s: 0, drain_timeout_s: 2}",
        "metrics: {enabled: false}",
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, backoff_initial_s: 0.2, "
        f"backoff_max_s: 1, outbox: {{path: {tmp_path}/outbox.sqlite3}}}}",
        f"update: {{enabled: true, keys_file: {tmp_path}/keys.json, "
        f"state_dir: {tmp_path}/state, probation_s: 1, request_timeout_s: 1}}",
    ]) + "\n")  # fmt: skip
    yield broker, str(config), ops
    stop_all_brokers()


def padded(model_bytes, megabytes):
    """The model with an unused initializer of ``megabytes`` MB: a transfer that takes a while."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(model_bytes)
    padding = np.random.default_rng(0).random(megabytes * (1 << 20) // 4, dtype=np.float32)
    model.graph.initializer.append(numpy_helper.from_array(padding, "padding"))
    return model.SerializeToString()


def sign(ops, model_bytes, version, config, canary=None):
    (ops / "model.onnx").write_bytes(model_bytes)
    (ops / "canary.json").write_text(json.dumps(canary or {}))
    (ops / "labels.txt").write_text("person\nbag\nface\n")
    (ops / "task.json").write_text(json.dumps(config))
    done = subprocess.run(
        [sys.executable, "-m", "edged", "sign", "--model", "digits", "--version", str(version),
         "--file", "model=model.onnx", "--file", "labels=labels.txt", "--config", "task.json",
         "--device", DEVICE, "--key", "op.key", "--chunk-kib", "16", "-o", f"v{version}.json",
         "--canary", "canary.json"],
        cwd=str(ops), stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return str(ops / f"v{version}.json")


def push(broker, manifest):
    return subprocess.run(
        [sys.executable, "-m", "edged", "push", manifest, "--port", str(broker.port),
         "--timeout", str(SAFETY_S)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
        timeout=SAFETY_S * 2,
    )  # fmt: skip


def started(config):
    daemon = Daemon(config)
    daemon.start()
    assert wait_until(lambda: daemon.snapshot().streams["cam"].inferred > 0)
    return daemon


def test_a_pushed_detector_replaces_the_classifier_while_the_stream_runs(setup):
    broker, config, ops = setup
    detector = onnx_models.detectnet(3, width=128, height=64)
    canary = {"shapes": {"output_cov/Sigmoid": [3, 4, 8], "output_bbox/BiasAdd": [12, 4, 8]},
              "latency_ms": 5000}  # fmt: skip
    manifest = sign(ops, detector, 2, {"task": "detection"}, canary)
    daemon = started(config)
    try:
        running = daemon.streams.get("cam").supervisor
        done = push(broker, manifest)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "COMMITTED" in done.stdout.splitlines()[-1]
        model = daemon.snapshot().models["digits"]
        assert (model.kind, model.version) == ("detection", "2")
        assert daemon.streams.get("cam").supervisor is running  # the stream never restarted
        inferred = daemon.snapshot().streams["cam"].inferred
        assert wait_until(lambda: daemon.snapshot().streams["cam"].inferred > inferred)
        assert daemon.snapshot().workers["digits"].errors == 0
        series = {(x.name, tuple(sorted(x.labels.items()))): x.value
                  for f in DaemonCollector(daemon).collect() for x in f.samples}  # fmt: skip
        assert series[("edged_update_outcomes_total", (("result", "committed"),))] == 1
        labels = (("model", "digits"), ("state", "COMMITTED"), ("version", "2"))
        assert series[("edged_update_state", labels)] == 1
    finally:
        daemon.shutdown()
    again = started(config)  # a restart serves the committed version, not the YAML's
    try:
        assert again.snapshot().models["digits"].kind == "detection"
    finally:
        again.shutdown()


def test_a_model_that_outputs_nan_is_refused_by_the_canary(setup):
    broker, config, ops = setup
    nan = np.full((3, 4, 8), np.nan, np.float32)
    manifest = sign(ops, onnx_models.detectnet(3, width=128, height=64, cov=nan), 2,
                    {"task": "detection"})  # fmt: skip
    daemon = started(config)
    try:
        done = push(broker, manifest)
        assert done.returncode == 1, done.stdout + done.stderr
        last = done.stdout.splitlines()[-1]
        assert "ROLLED_BACK" in last and "NaN" in last, done.stdout
        assert daemon.snapshot().models["digits"].kind == "classification"
        inferred = daemon.snapshot().streams["cam"].inferred
        assert wait_until(lambda: daemon.snapshot().streams["cam"].inferred > inferred)
    finally:
        daemon.shutdown()


def test_kill_9_of_edged_run_mid_transfer_resumes_after_the_restart(setup, tmp_path):
    broker, config, ops = setup
    with open(config) as f:
        text = f.read()
    with open(config, "w") as f:  # one chunk in flight: the transfer takes a while
        f.write(text.replace("probation_s: 1,", "probation_s: 1, window: 1,"))
    detector = padded(onnx_models.detectnet(3, width=128, height=64), 4)
    manifest = sign(ops, detector, 2, {"task": "detection"})
    statuses = Subscriber(broker, [f"edged/{DEVICE}/update/status"], client_id="t-status")
    requests = Subscriber(broker, [f"edged/{DEVICE}/update/request"], client_id="t-requests")
    run = [sys.executable, "-m", "edged", "run", "-c", config]
    daemon = subprocess.Popen(run, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pusher = subprocess.Popen(
        [sys.executable, "-m", "edged", "push", manifest, "--port", str(broker.port),
         "--timeout", str(SAFETY_S * 2)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
    )  # fmt: skip
    try:

        def received():
            got = [s.get("received", 0) for s in statuses.json() if s.get("state") == "RECEIVING"]
            return max(got or [0])

        assert wait_until(lambda: received() >= 64), "the transfer did not start"
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        on_disk = received()
        asked_before = len(requests.received())
        daemon = subprocess.Popen(run, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out, err = pusher.communicate(timeout=SAFETY_S * 3)
        assert pusher.returncode == 0, out + err
    finally:
        for proc in (daemon, pusher):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
        statuses.close()
        requests.close()
    journal = json.loads((tmp_path / "state" / "updates" / "digits" / "journal.json").read_text())
    assert journal["state"] == "COMMITTED"
    assert ["RECEIVING", "resumed after a restart"] in journal["history"]
    total = max(s.get("chunks", 0) for s in statuses.json())
    asked_after = len(requests.received()) - asked_before  # one chunk per request (window 1)
    assert on_disk > 0 and asked_after <= total - on_disk + 16  # resumed, not started over


def test_a_pushed_etlt_decrypts_with_the_devices_own_key_which_is_never_echoed(setup, caplog):
    import logging
    import shutil

    broker, config, ops = setup
    secret = "tlt_encode"  # the demo model's key, in the device's config only
    with open(config) as f:
        text = f.read()
    with open(config, "w") as f:
        f.write(text.replace("version: '1'}", f"version: '1', key: {secret}}}"))
    demo = os.path.join(os.path.dirname(DIGITS), "peoplenet-demo")
    shutil.copy(os.path.join(demo, "peoplenet_demo.etlt"), str(ops))
    shutil.copy(os.path.join(demo, "labels.txt"), str(ops))
    (ops / "task.json").write_text(json.dumps({"task": "detection"}))
    done = subprocess.run(
        [sys.executable, "-m", "edged", "sign", "--model", "digits", "--version", "2",
         "--file", "model=peoplenet_demo.etlt", "--file", "labels=labels.txt",
         "--config", "task.json", "--device", DEVICE, "--key", "op.key", "-o", "etlt.json"],
        cwd=str(ops), stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    statuses = Subscriber(broker, ["edged/#"], client_id="t-all")
    caplog.set_level(logging.DEBUG, logger="edged")
    daemon = started(config)
    try:
        pushed = push(broker, str(ops / "etlt.json"))
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
        assert daemon.snapshot().models["digits"].kind == "detection"
    finally:
        daemon.shutdown()
        statuses.close()
    seen = [m.payload for m in statuses.received()]
    assert any(b"COMMITTED" in p for p in seen)
    manifest = (ops / "etlt.json").read_bytes()
    for text in [caplog.text, pushed.stdout, pushed.stderr, manifest.decode()] + [
        p.decode("utf-8", "replace") for p in seen
    ]:
        assert secret not in text
