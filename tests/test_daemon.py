"""`edged run` as a real process: sd_notify on a real socket, SIGTERM, SIGHUP reloads, summaries."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from .conftest import REPO

DIGITS = os.path.join(REPO, "models", "resnet18-digits")


def make_clip(path, frames=40, size=(160, 120)):
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 25.0, size)
    for i in range(frames):
        image = np.full((size[1], size[0], 3), (i * 5) % 255, np.uint8)
        cv2.putText(image, str(i % 10), (60, 80), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
        writer.write(image)
    writer.release()
    return path


def write_config(
    path, streams, pipeline="summary_interval_s: 0.5, drain_timeout_s: 2", metrics="port: 0"
):
    lines = [
        "log_level: info",
        "models:",
        "  digits:",
        "    path: {}".format(os.path.join(DIGITS, "resnet18.onnx")),
        "    labels: {}".format(os.path.join(DIGITS, "labels.txt")),
        "streams:",
    ]
    for name, source in streams.items():
        stream = dict(source) if isinstance(source, dict) else {"source": source}
        stream.setdefault("model", "digits")
        lines.append(f"  {name}: {json.dumps(stream)}")  # JSON is YAML
    lines.append("pipeline: {" + pipeline + "}")
    lines.append("metrics: {" + metrics + "}")  # port 0: a free port, tests never collide
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


class NotifySocket:
    """A real AF_UNIX datagram socket standing where systemd's NOTIFY_SOCKET would be."""

    def __init__(self, directory):
        self.path = os.path.join(str(directory), "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="test-notify", daemon=True)
        self._thread.start()

    def _read(self):
        while not self._stop.is_set():
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                continue

    def fields(self, name):
        out = []
        for message in list(self.messages):
            for line in message.splitlines():
                if line.startswith(name + "="):
                    out.append(line[len(name) + 1 :])
        return out

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


class Edged:
    """`python -m edged run -c CONFIG` with its log captured line by line."""

    def __init__(self, config, env=None):
        full = dict(os.environ)
        full.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edged", "run", "-c", config],
            cwd=REPO, env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            universal_newlines=True,
        )  # fmt: skip
        self.lines = []
        self._reader = threading.Thread(target=self._read, name="test-edged-log", daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text, timeout=60.0, after=0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, line in enumerate(self.lines[after:], after):
                if text in line:
                    return i
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError("no log line with {!r}; log:\n{}".format(text, "\n".join(self.lines)))

    def wait(self, timeout=30):
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code


@pytest.fixture
def clip(tmp_path):
    return make_clip(str(tmp_path / "clip.avi"))


def test_ready_status_watchdog_and_stopping_reach_the_notify_socket(tmp_path, clip):
    config = str(tmp_path / "edged.yaml")
    write_config(config, {"cam": clip})
    notify = NotifySocket(tmp_path)
    edged = Edged(config, {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "2000000"})
    try:
        edged.wait_for("edged ready")
        edged.wait_for("stream cam: streaming")
        deadline = time.monotonic() + 10
        while len(notify.fields("WATCHDOG")) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        code = edged.stop()
        time.sleep(0.3)
        notify.close()
    assert code == 0
    assert notify.fields("READY") == ["1"]
    assert notify.fields("EXTEND_TIMEOUT_USEC")  # while the model loaded
    assert len(notify.fields("WATCHDOG")) >= 2  # pinged while frames and inferences progress
    assert notify.fields("STOPPING") == ["1"]
    assert any("streams" in s and "fps in" in s for s in notify.fields("STATUS"))


def test_sigterm_drains_and_exits_0_with_steps_in_reverse(tmp_path, clip):
    config = str(tmp_path / "edged.yaml")
    write_config(config, {"cam": clip})
    edged = Edged(config)
    edged.wait_for("stream cam: streaming")
    assert edged.stop(signal.SIGTERM) == 0
    steps = [line.split("shutdown: ", 1)[1] for line in edged.lines if "shutdown: " in line]
    expected_order = [
        "stop watchdog", "notify stopping", "stop streams", "stop inference workers",
        "drain result sinks",
    ]  # fmt: skip
    # shutdown undoes start-up in reverse: capture stops before inference, which stops before
    # the sinks drain the last results (other steps, e.g. metrics, may sit in between)
    assert [step for step in steps if step in expected_order] == expected_order
    assert not any("Traceback" in line for line in edged.lines)


def test_sigint_also_stops_cleanly(tmp_path, clip):
    config = str(tmp_path / "edged.yaml")
    write_config(config, {"cam": clip})
    edged = Edged(config)
    edged.wait_for("edged ready")
    assert edged.stop(signal.SIGINT) == 0


def test_sighup_with_a_broken_config_keeps_the_old_streams_running(tmp_path, clip):
    config = str(tmp_path / "edged.yaml")
    write_config(config, {"cam": clip})
    edged = Edged(config)
    try:
        edged.wait_for("stream cam: streaming")
        with open(config, "a") as f:
            f.write("bogus_key: 1\n")
        edged.proc.send_signal(signal.SIGHUP)
        rejected = edged.wait_for("reload rejected, keeping the running configuration")
        assert "bogus_key: unknown key" in edged.lines[rejected]
        # the stream keeps delivering inferences after the rejected reload
        edged.wait_for("stream cam: streaming", after=rejected + 1)
        later = edged.wait_for("inferred/s", after=rejected + 1)
        assert "stream cam: streaming" in edged.lines[later]
        assert not any("stopping stream cam" in line for line in edged.lines)
    finally:
        assert edged.stop() == 0


def test_sighup_with_an_empty_or_streamless_config_keeps_serving_the_old_one(tmp_path, clip):
    config = str(tmp_path / "edged.yaml")
    write_config(config, {"cam": clip})
    edged = Edged(config)
    try:
        edged.wait_for("stream cam: streaming")
        after = 0
        # an empty file (a truncated write), then models without streams
        for text, missing in (("", "no models and no streams"), (None, "no streams")):
            if text is None:
                write_config(config, {})
                with open(config) as f:
                    text = f.read().replace("streams:\n", "streams: {}\n")
            with open(config, "w") as f:
                f.write(text)
            edged.proc.send_signal(signal.SIGHUP)
            after = edged.wait_for("reload rejected, keeping the running config", after=after)
            assert f"{config}: {missing}: a reload would stop every stream" in edged.lines[after]
            after += 1
            # still serving the old config: the stream keeps delivering inferences
            later = edged.wait_for("inferred/s", after=after)
            assert "stream cam: streaming" in edged.lines[later]
        assert not any("reload: stopping" in line for line in edged.lines), "\n".join(edged.lines)
        assert not any("reload applied" in line for line in edged.lines)
    finally:
        assert edged.stop() == 0


def test_sighup_restarts_only_the_streams_that_changed(tmp_path, clip):
    other = make_clip(str(tmp_path / "other.avi"), frames=20)
    config = str(tmp_path / "edged.yaml")
    write_config(config, {"keep": clip, "change": clip})
    edged = Edged(config)
    try:
        edged.wait_for("stream keep: streaming")
        edged.wait_for("stream change: streaming")
        write_config(config, {"keep": clip, "change": other, "added": clip})
        edged.proc.send_signal(signal.SIGHUP)
        applied = edged.wait_for("reload applied")
        reload_lines = "\n".join(edged.lines[: applied + 1])
        assert "reload: stopping stream change" in reload_lines
        assert "reload: stopping stream keep" not in reload_lines
        assert "reload: stopping model digits" not in reload_lines  # same model: not reloaded
        assert "stream added started" in reload_lines
        edged.wait_for("stream added: streaming", after=applied)
    finally:
        assert edged.stop() == 0


def test_an_invalid_config_at_start_is_one_line_and_exit_2(tmp_path):
    config = str(tmp_path / "edged.yaml")
    with open(config, "w") as f:
        f.write("streams:\n  cam: {source: x.mp4, model: nope}\n")
    edged = Edged(config)
    assert edged.wait() == 2
    assert edged.lines[-1] == (
        f"edged: error: {config}: streams.cam.model: no model named 'nope' (models: none)"
    )


def test_the_health_file_says_healthy_while_streams_progress(tmp_path, clip):
    config = str(tmp_path / "edged.yaml")
    write_config(config, {"cam": clip})
    health = str(tmp_path / "health.json")
    edged = Edged(config, {"EDGED_HEALTH_FILE": health})
    try:
        edged.wait_for("stream cam: streaming")
        deadline = time.monotonic() + 15
        while not os.path.exists(health) and time.monotonic() < deadline:
            time.sleep(0.1)
        with open(health) as f:
            report = json.load(f)
        assert report["healthy"] is True and report["stale"] == []
        result = subprocess.run(
            [sys.executable, os.path.join(REPO, "docker", "healthcheck.py")],
            env=dict(os.environ, EDGED_HEALTH_FILE=health),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout
    finally:
        assert edged.stop() == 0
