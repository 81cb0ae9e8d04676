"""``edged run`` with ``pipeline.preprocess: cuda`` on a real GPU (marker ``gpu``).

* The daemon on the demo clip (file source, ``realtime: false``: no frame dropped) and on
  digit images, with ``cpu`` and with ``cuda``, for the demo detector (models/peoplenet-demo)
  and the demo classifier (models/resnet18-digits): the same boxes within 1 px and the same
  classes, frame by frame; exit 0 on SIGTERM; no pycuda clean-up warning.
  The results are the daemon's own MQTT result messages: the lent GPU machine has no broker,
  so ``mqtt`` points at a closed loopback port and every result waits in the durable outbox
  (edged/mqtt/outbox.py: "What was not sent stays on disk for the next start"), read here
  from the SQLite file after the daemon exited.
* 100 reloads by SIGHUP, each with a changed model config (``version``), so that
  :meth:`ModelSlots.replace` swaps a new task in and the worker makes a new CUDA
  pre-processor for it (and closes the old one) on its next batch: device memory flat,
  no "could not be cleaned up" in the log.
"""

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.request

import pytest

from .conftest import REPO
from .gpu_support import requires_gpu
from .test_daemon import Edged

pytestmark = requires_gpu + [pytest.mark.timeout(300)]

DETECTOR = os.path.join(REPO, "models", "peoplenet-demo")
CLASSIFIER = os.path.join(REPO, "models", "resnet18-digits")
CLIP = os.path.join(REPO, "tests", "data", "vtest", "holdout.mp4")
DIGITS = os.path.join(REPO, "tests", "data", "digits", "test")
DIGIT_STREAMS = ("3", "7")
CLEANUP_WARNING = "could not be cleaned up"
RELOADS = 100
WARMUP_RELOADS = 5
#: Device memory a reload cycle may leave behind, in total over RELOADS cycles. The CUDA
#: driver hands out device memory in 2 MiB pages for small allocations, so the free figure
#: moves in 2 MiB steps; one CUDA pre-processor of the demo detector holds about 8 MiB
#: (a 3x544x960 float32 output, the frame's staging buffer, the module), so one leaked per
#: reload would lose >= 200 MiB over 100 reloads. 8 MiB (4 pages) leaves room for allocator
#: rounding and still catches any leak above 84 KiB per reload.
MEMORY_BOUND = 8 << 20
METRICS_LINE = re.compile(r"metrics at (http://[0-9.]+:\d+/metrics)")


def _closed_port():
    """A loopback port nothing listens on: the daemon's broker connection is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _need_paho():
    try:
        import paho.mqtt  # noqa: F401 -- edged's MQTT client
    except ImportError:
        pytest.skip("paho-mqtt is not installed (carry its wheel: tools/gpu_check.sh WHEELS)")


def _write(path, text):
    """Atomically: a reload must never read a half-written config."""
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
    return path


def _outbox_results(path):
    """{(stream, frame_seq): payload} of every result message in the outbox file."""
    db = sqlite3.connect(path, timeout=10)
    try:
        rows = db.execute("SELECT topic, payload FROM messages ORDER BY id").fetchall()
    finally:
        db.close()
    out = {}
    for topic, payload in rows:
        if topic.endswith(("/detections", "/classifications")):
            message = json.loads(bytes(payload).decode("ascii"))
            key = (message["stream_id"], message["frame_seq"])
            assert key not in out, f"frame {key} published twice"
            out[key] = message
    return out


def _count_frames(path):
    import cv2

    cap = cv2.VideoCapture(path)
    count = 0
    while cap.read()[0]:
        count += 1
    cap.release()
    return count


def _run_to_end(tmp_path, mode, models_yaml, streams, expected):
    """An ``edged run`` over finite sources with ``preprocess: mode``; its results once all
    ``expected`` frames are in the outbox and it exited on SIGTERM."""
    work = tmp_path / mode
    work.mkdir()
    outbox = str(work / "outbox.sqlite3")
    stream_yaml = "".join(
        f"  {name}: {{source: {source}, model: {model}, loop: false, realtime: false}}\n"
        for name, (source, model) in streams.items()
    )
    config = _write(str(work / "edged.yaml"), (
        "device_id: gpu-check\nlog_level: info\nmodels:\n" + models_yaml
        + "streams:\n" + stream_yaml
        + f"pipeline: {{preprocess: {mode}, summary_interval_s: 2, drain_timeout_s: 2}}\n"
        "metrics: {enabled: false}\n"
        f"mqtt: {{host: 127.0.0.1, port: {_closed_port()}, backoff_initial_s: 0.5, "
        f"backoff_max_s: 2, outbox: {{path: {outbox}}}}}\n"
    ))  # fmt: skip
    edged = Edged(config)
    try:
        edged.wait_for("edged ready", timeout=180)
        if mode == "cuda":
            edged.wait_for("pre-processing on CUDA (preprocess: cuda)", timeout=10)
        deadline = time.monotonic() + 180
        while sum(" -> ended: end of source" in line for line in edged.lines) < len(streams):
            assert time.monotonic() < deadline, "\n".join(edged.lines[-50:])
            assert edged.proc.poll() is None, "\n".join(edged.lines[-50:])
            time.sleep(0.2)
        time.sleep(1.0)  # the last frames through the pipeline and the outbox's 50 ms commit
    finally:
        code = edged.stop(signal.SIGTERM, timeout=60)
    log = "\n".join(edged.lines)
    assert code == 0, log[-5000:]
    assert CLEANUP_WARNING not in log and "Traceback" not in log, log[-5000:]
    assert f"MQTT stopped: {expected} messages left in the outbox" in log, log[-3000:]
    results = _outbox_results(outbox)
    assert len(results) == expected, (len(results), expected)
    return results


def _distance(a, b):
    """Largest coordinate difference of two detections' boxes, in source pixels."""
    return max(abs(a["bbox"][k] - b["bbox"][k]) for k in ("x1", "y1", "x2", "y2"))


def _same_boxes(key, a, b):
    """Each CPU detection has a CUDA detection of the same label within 1 px, counts equal
    (equal confidences may swap order, so boxes are paired greedily, nearest first)."""
    assert a["count"] == b["count"], (key, a["detections"], b["detections"])
    left = list(b["detections"])
    for da in a["detections"]:
        near = [db for db in left if db["label"] == da["label"]]
        assert near, (key, da, b["detections"])
        best = min(near, key=lambda db: _distance(da, db))
        assert _distance(da, best) <= 1.0, (key, da, best)
        left.remove(best)


def test_daemon_detector_cuda_equals_cpu_frame_by_frame(tmp_path):
    _need_paho()
    models = (
        f"  people: {{path: {os.path.join(DETECTOR, 'peoplenet_demo.onnx')}, "
        f"labels: {os.path.join(DETECTOR, 'labels.txt')}, task: detection}}\n"
    )
    frames = _count_frames(CLIP)
    assert frames > 100
    streams = {"clip": (CLIP, "people")}
    cpu = _run_to_end(tmp_path, "cpu", models, streams, frames)
    cuda = _run_to_end(tmp_path, "cuda", models, streams, frames)
    assert sorted(cpu) == sorted(cuda)
    boxes = 0
    for key in sorted(cpu):
        _same_boxes(key, cpu[key], cuda[key])
        boxes += cpu[key]["count"]
    assert boxes > frames, "the demo clip shows people in most frames"


def test_daemon_classifier_cuda_equals_cpu_frame_by_frame(tmp_path):
    _need_paho()
    models = (
        f"  digits: {{path: {os.path.join(CLASSIFIER, 'resnet18.onnx')}, "
        f"labels: {os.path.join(CLASSIFIER, 'labels.txt')}, task: classification}}\n"
    )
    streams = {f"d{d}": (os.path.join(DIGITS, d), "digits") for d in DIGIT_STREAMS}
    expected = sum(len(os.listdir(os.path.join(DIGITS, d))) for d in DIGIT_STREAMS)
    cpu = _run_to_end(tmp_path, "cpu", models, streams, expected)
    cuda = _run_to_end(tmp_path, "cuda", models, streams, expected)
    assert sorted(cpu) == sorted(cuda)
    for key in sorted(cpu):
        top_cpu, top_cuda = cpu[key]["classifications"][0], cuda[key]["classifications"][0]
        assert top_cpu["label"] == top_cuda["label"], (key, top_cpu, top_cuda)
        close = abs(top_cpu["confidence"] - top_cuda["confidence"]) <= 0.02
        assert close, (key, top_cpu, top_cuda)


def _inferred(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode("utf-8", "replace")
    total = 0.0
    for line in text.splitlines():
        if line.startswith("edged_frames_total{") and 'outcome="inferred"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _device_free(ctx):
    with ctx.activated():
        return ctx.cuda.mem_get_info()[0]


def _process_used_mib(pid):
    """Device memory of ``pid`` as nvidia-smi lists it (MiB), or None where it lists no such
    process (inside a container nvidia-smi may show host pids or none)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory",
             "--format=csv,noheader,nounits"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True,
            timeout=30,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) == 2 and fields[0] == str(pid) and fields[1].isdigit():
            return int(fields[1])
    return None


def _reload_config(path, version, mode):
    return _write(path, (
        "log_level: info\nmodels:\n"
        f"  people: {{path: {os.path.join(DETECTOR, 'peoplenet_demo.onnx')}, "
        f"labels: {os.path.join(DETECTOR, 'labels.txt')}, task: detection, version: r{version}}}\n"
        f"streams:\n  clip: {{source: {CLIP}, model: people, loop: true, realtime: false}}\n"
        f"pipeline: {{preprocess: {mode}, summary_interval_s: 0, drain_timeout_s: 2}}\n"
        "metrics: {port: 0, telemetry_interval_s: 0}\n"
    ))  # fmt: skip


def _reload(edged, config, mode, url, number):
    """Reload ``number`` (1, 2, ...): the config rewritten, SIGHUP, "reload applied", then
    frames inferred by the new task."""
    _reload_config(config, number, mode)
    edged.proc.send_signal(signal.SIGHUP)
    while sum("reload applied" in line for line in edged.lines) < number:
        assert not any("reload rejected" in line for line in edged.lines), edged.lines[-5:]
        assert edged.proc.poll() is None, "\n".join(edged.lines[-50:])
        time.sleep(0.02)
    # the old task was released before "reload applied": every frame inferred from now on
    # ran the new task, pre-processed by the pre-processor made for it (the pipeline holds at
    # most 3 batches of 1 frame)
    start = _inferred(url)
    deadline = time.monotonic() + 60
    while _inferred(url) < start + 3:
        assert time.monotonic() < deadline, f"no frame inferred after reload {number}"
        time.sleep(0.02)


def _start_looping(tmp_path, mode):
    """A daemon on the demo clip in a loop; (Edged, config path, metrics URL) once it infers."""
    config = _reload_config(str(tmp_path / "edged.yaml"), 0, mode)
    edged = Edged(config)
    at = edged.wait_for("metrics at http://", timeout=120)
    url = METRICS_LINE.search(edged.lines[at]).group(1)
    deadline = time.monotonic() + 120
    while _inferred(url) < 3:
        assert time.monotonic() < deadline, "\n".join(edged.lines[-50:])
        assert edged.proc.poll() is None, "\n".join(edged.lines[-50:])
        time.sleep(0.1)
    return edged, config, url


def test_device_memory_flat_over_100_model_reloads_with_cuda(tmp_path):
    """Each reload (SIGHUP, the model's ``version`` changed) replaces the model's task; the
    worker's next batch makes a new CUDA pre-processor and closes the old one. Measured as the
    device's free memory (cuMemGetInfo, device-wide: the lent GPU runs nothing else) and, where
    nvidia-smi lists the daemon's pid, the process's own figure."""
    from edged.cudacontext import shared_context

    ctx = shared_context()
    edged, config, url = _start_looping(tmp_path, "cuda")
    figures = []
    try:
        assert any("pre-processing on CUDA (preprocess: cuda)" in line for line in edged.lines)
        for number in range(1, WARMUP_RELOADS + 1):
            _reload(edged, config, "cuda", url, number)
        before = (_device_free(ctx), _process_used_mib(edged.proc.pid))
        for number in range(WARMUP_RELOADS + 1, WARMUP_RELOADS + RELOADS + 1):
            _reload(edged, config, "cuda", url, number)
            if number % 25 == 0:
                figures.append((number, _device_free(ctx), _process_used_mib(edged.proc.pid)))
        after = (_device_free(ctx), _process_used_mib(edged.proc.pid))
    finally:
        code = edged.stop(signal.SIGTERM, timeout=60)
    log = "\n".join(edged.lines)
    print(
        f"device free before {before[0]}, after {RELOADS} reloads {after[0]} bytes; "
        f"nvidia-smi used by the daemon (MiB): {before[1]} -> {after[1]}; every 25: {figures}"
    )
    assert code == 0, log[-5000:]
    assert CLEANUP_WARNING not in log and "Traceback" not in log, log[-5000:]
    assert log.count("reload: replacing model people") == WARMUP_RELOADS + RELOADS
    assert after[0] >= before[0] - MEMORY_BOUND, f"{before[0] - after[0]} bytes of device lost"
    if before[1] is not None and after[1] is not None:
        assert after[1] - before[1] <= MEMORY_BOUND >> 20, (before[1], after[1])
