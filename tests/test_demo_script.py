"""tools/demo.sh as a real shell run (its own Mosquitto, the real edged): a broken config, an
edged that dies after starting, a busy metrics port, and Ctrl-C. The happy path is in
tests/test_mqtt_daemon.py."""

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request

from .conftest import REPO
from .mosquitto import wait_for
from .test_mqtt_daemon import make_clip, make_detector

DEMO = os.path.join(REPO, "tools", "demo.sh")
METRICS_LINE = re.compile(r"metrics: (http://127\.0\.0\.1:(\d+)/metrics) \((\d+) was busy\)")
CONFIG = (
    "device_id: demo-box\n"
    "models: {{tiny: {{path: {model}, task: detection, class_names: [person, bag, face]}}}}\n"
    "streams: {{cam: {{source: clip.avi, model: tiny, loop: true}}}}\n"
    "metrics: {metrics}\n"
    "mqtt: {{host: unused.invalid, publish: {{mode: every_frame}}}}\n"
)


def demo_config(tmp_path, model="tiny.onnx", metrics="{enabled: false}"):
    make_detector(str(tmp_path / "tiny.onnx"))
    make_clip(str(tmp_path / "clip.avi"))
    path = tmp_path / "demo.yaml"
    path.write_text(CONFIG.format(model=model, metrics=metrics))
    return path


def start_demo(tmp_path, config, *args):
    return subprocess.Popen(
        [DEMO, "--config", str(config)] + list(args),
        cwd=str(tmp_path), env=dict(os.environ, PYTHON=sys.executable, TMPDIR=str(tmp_path)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )  # fmt: skip


def run_demo(tmp_path, config, *args):
    demo = start_demo(tmp_path, config, *args)
    try:
        out, err = demo.communicate(timeout=180)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGTERM)
    return demo.returncode, out, err


def kept_log(err):
    match = re.search(r"edged log: (\S+) \(kept\)", err)
    assert match, err
    return match.group(1)


def test_a_broken_config_stops_the_demo_at_once_naming_the_users_file(tmp_path):
    config = demo_config(tmp_path)
    config.write_text(config.read_text().replace("task: detection", "tsk: detection"))
    code, out, err = run_demo(tmp_path, config, "--count", "3", "--timeout", "60")
    assert code == 2, err
    assert f"edged: error: {config}: models.tiny.tsk: unknown key (did you mean 'task'?)" in err
    assert ".demo-run" not in out + err
    assert not any(p.name.startswith(".demo-run") for p in tmp_path.iterdir())


def test_an_edged_that_dies_stops_the_demo_with_its_log_kept(tmp_path):
    (tmp_path / "cut.onnx").write_bytes(b"\x08\x07" * 40)  # passes check-config, fails to load
    config = demo_config(tmp_path, model="cut.onnx")
    # --count without --timeout: before, the demo waited here forever for results.
    code, out, err = run_demo(tmp_path, config, "--count", "3")
    assert code == 2, err  # edged's own exit code
    assert "edged exited with code 2" in err
    assert "not a valid ONNX model" in err
    log = kept_log(err)
    with open(log) as f:
        text = f.read()
    assert "cut.onnx: not a valid ONNX model" in text
    assert ".demo-run" not in text + err
    assert not any(p.name.startswith(".demo-run") for p in tmp_path.iterdir())


def test_a_busy_metrics_port_is_replaced_by_a_free_one_that_serves(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    config = demo_config(tmp_path, metrics=f"{{port: {port}}}")
    demo = start_demo(tmp_path, config, "--count", "3", "--timeout", "120")
    try:
        for line in demo.stderr:
            match = METRICS_LINE.search(line)
            if match:
                break
        assert match, "no metrics line"
        url, used, was = match.group(1), int(match.group(2)), int(match.group(3))
        assert was == port and used != port

        def scrape():
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    return r.read().decode()
            except OSError:
                return None

        assert "edged_" in wait_for(scrape, 60, f"edged metrics at {url}")
        demo.stdout.read()
        assert demo.wait(180) == 0
    finally:
        busy.close()
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGTERM)
            demo.wait(60)


def test_ctrl_c_stops_everything_and_keeps_the_log(tmp_path):
    config = demo_config(tmp_path)
    demo = start_demo(tmp_path, config)
    try:
        for line in demo.stdout:
            if "demo-box cam #" in line:
                break  # edged runs and results arrive
        os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C sends to the foreground job
        err = demo.communicate(timeout=120)[1]
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
    assert demo.returncode == 130, err
    assert "stopping edged" in err
    with open(kept_log(err)) as f:
        text = f.read()
    assert "edged.daemon: shutdown" in text  # edged stopped cleanly, and the log says so
    assert ".demo-run" not in text
    assert not any(p.name.startswith((".demo-run", "edged-demo.")) for p in tmp_path.iterdir())
