"""A supervised RTSP source against a REAL RTSP server that is killed and restarted.

The server is GStreamer's RTSP server (tests/rtsp_server.py) run by Debian's
/usr/bin/python3, serving a libx264 MP4 made by the ffmpeg CLI, on a free
127.0.0.1 port; the client is OpenCV's FFmpeg backend in this interpreter.
Missing system packages FAIL these tests with the command
that installs them; nothing is skipped.

Timings are shrunk through the supervisor's and the source's constructor
arguments (stall 2 s, backoff 0.2 -> 0.5 s, open/read timeouts 2 s) so 20
kill/restart cycles take about a minute. Durations are printed (pytest -s) for
the record, never asserted.
"""

import os
import select
import signal
import subprocess
import sys
import threading
import time

import cv2
import pytest

from edged.sources import STREAMING, SourceSupervisor, SupervisionPolicy, build_source, parse_source

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER_SCRIPT = os.path.join(HERE, "rtsp_server.py")
SYSTEM_PYTHON = "/usr/bin/python3"
APT_HINT = (
    "apt-get install -y python3-gi gir1.2-gst-rtsp-server-1.0 "
    "gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly ffmpeg"
)
PASSWORD = "s3cretpw"
POLICY = SupervisionPolicy(
    stall_timeout_s=2.0,
    backoff_initial_s=0.2,
    backoff_max_s=0.5,
    backoff_reset_s=1.0,
    join_timeout_s=10.0,
)
TIMEOUTS = dict(open_timeout_s=2.0, read_timeout_s=2.0)
CYCLES = 20
FD_SLACK = 4
THREAD_SLACK = 2


def require_system_packages():
    if not os.path.exists(SYSTEM_PYTHON):
        pytest.fail(
            f"{SYSTEM_PYTHON} is missing; the RTSP tests need Debian's python3 ({APT_HINT})"
        )
    probe = subprocess.Popen(
        [
            SYSTEM_PYTHON,
            "-c",
            "import gi; gi.require_version('GstRtspServer', '1.0'); "
            "from gi.repository import GstRtspServer",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, err = probe.communicate(timeout=60)
    if probe.returncode != 0:
        pytest.fail(
            "GStreamer's RTSP server is not importable by {}: {}\ninstall: {}".format(
                SYSTEM_PYTHON, err.decode(errors="replace").strip().splitlines()[-1:], APT_HINT
            )
        )


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 4 s, 160x120, 15 fps H.264 MP4 with a moving test pattern (every frame differs)."""
    require_system_packages()
    path = str(tmp_path_factory.mktemp("rtsp") / "clip.mp4")
    command = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", "testsrc=size=160x120:rate=15",
        "-t", "4", "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
        "-g", "15", "-pix_fmt", "yuv420p", path,
    ]  # fmt: skip
    try:
        done = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as e:
        pytest.fail(f"the ffmpeg CLI is needed to make the test clip ({APT_HINT}): {e}")
    _, err = done.communicate(timeout=120)
    if done.returncode != 0:
        pytest.fail("ffmpeg could not make an H.264 clip: {}".format(err.decode(errors="replace")))
    return path


class RtspServer:
    """tests/rtsp_server.py as a child process; keeps its port across restarts."""

    def __init__(self, clip_path):
        self.clip = clip_path
        self.port = 0
        self.proc = None
        self.url = None

    def start(self, deadline_s=15.0):
        deadline = time.monotonic() + deadline_s
        last_error = ""
        while time.monotonic() < deadline:
            self.proc = subprocess.Popen(
                [SYSTEM_PYTHON, SERVER_SCRIPT, "--file", self.clip, "--port", str(self.port)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            line = self._ready_line(deadline)
            if line.startswith("READY "):
                self.url = line.split(" ", 1)[1].strip()
                self.port = int(self.url.split(":")[2].split("/")[0])
                return self
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            last_error = err.decode(errors="replace").strip()
            if "cannot listen" not in last_error:  # a port still held is worth retrying
                break
            time.sleep(0.2)
        pytest.fail(f"RTSP server did not start: {last_error}\n({APT_HINT})")

    def _ready_line(self, deadline):
        fd = self.proc.stdout.fileno()
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                return self.proc.stdout.readline().decode(errors="replace")
            if self.proc.poll() is not None:
                return ""
        return ""

    def url_with_password(self):
        return self.url.replace("rtsp://", f"rtsp://viewer:{PASSWORD}@", 1)

    def signal(self, signum):
        self.proc.send_signal(signum)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        if self.proc is not None:
            self.proc.communicate(timeout=10)  # reaps it and closes our pipe ends
        self.proc = None


@pytest.fixture()
def server(clip):
    srv = RtspServer(clip).start()
    yield srv
    srv.kill()


def wait_for(predicate, timeout, what, supervisor):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout} s waiting for {what}; status: {supervisor.status()}")


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def native_threads():
    return len(os.listdir("/proc/self/task"))


def start_supervisor(url, stop, stream_id="cam"):
    supervisor = SourceSupervisor(
        stream_id, build_source(parse_source(url, **TIMEOUTS)), stop, POLICY
    )
    supervisor.start()
    return supervisor


def test_frames_flow_from_a_real_rtsp_server_and_the_clip_loops(server):
    stop = threading.Event()
    supervisor = start_supervisor(server.url, stop)
    try:
        # 80 frames at 15 fps is more than the 4 s (60 frame) clip: the server loops
        wait_for(lambda: supervisor.status().frames >= 80, 30, "80 frames", supervisor)
        frame = supervisor.slot.get(timeout=5)
        status = supervisor.status()
    finally:
        stop.set()
        assert supervisor.stop() is True
    assert frame is not None and frame.image.shape == (120, 160, 3)
    assert frame.source_size == (160, 120) and frame.stream_id == "cam"
    assert status.state == STREAMING and status.reconnects == 0 and status.stalls == 0
    assert status.frozen == 0


def test_killed_and_restarted_server_20_times_reconnects_without_leaking(server, caplog, capfd):
    stop = threading.Event()
    supervisor = start_supervisor(server.url_with_password(), stop)
    fds, threads, py_threads, recoveries = [], [], [], []
    started = time.monotonic()
    try:
        wait_for(lambda: supervisor.state == STREAMING, 30, "first streaming", supervisor)
        for cycle in range(CYCLES):
            wanted = supervisor.status().frames + 3
            wait_for(
                lambda wanted=wanted: supervisor.status().frames >= wanted,
                30,
                f"frames in cycle {cycle}",
                supervisor,
            )
            fds.append(open_fds())
            threads.append(native_threads())
            py_threads.append(threading.active_count())

            server.kill()  # SIGKILL mid-stream
            wait_for(lambda: supervisor.state != STREAMING, 30, "the stall", supervisor)
            time.sleep(0.5)  # the server stays down a while
            server.start()
            restarted = time.monotonic()  # the server listens again from here
            wait_for(lambda: supervisor.state == STREAMING, 30, "reconnect", supervisor)
            recoveries.append(time.monotonic() - restarted)
        status = supervisor.status()
    finally:
        stop.set()
        assert supervisor.stop() is True
    elapsed = time.monotonic() - started

    assert status.reconnects >= CYCLES and status.stalls >= CYCLES
    assert status.transitions["streaming->stalled"] >= CYCLES
    # no growth: the late cycles use no more than the early ones, plus a small constant
    warm = 2  # FFmpeg/GLib allocate a few things on first use
    assert max(fds[-5:]) <= max(fds[warm : warm + 5]) + FD_SLACK, fds
    assert max(threads[-5:]) <= max(threads[warm : warm + 5]) + THREAD_SLACK, threads
    assert max(py_threads) == min(py_threads), py_threads
    # the password never reaches a log line, the status, or OpenCV/FFmpeg's own stderr
    assert PASSWORD not in caplog.text
    assert PASSWORD not in repr(status)
    out, err = capfd.readouterr()
    assert PASSWORD not in out + err
    print(
        f"\nPython {sys.version.split()[0]}, OpenCV {cv2.__version__}: {CYCLES} kill/restart "
        f"cycles in {elapsed:.1f} s; streaming again after the server listens: "
        f"min {min(recoveries):.2f} s, max {max(recoveries):.2f} s; "
        f"fds {fds}; native threads {threads}"
    )


def test_a_silent_server_is_detected_by_the_read_timeout_and_stop_is_bounded(server):
    """SIGSTOP keeps the TCP connection open but sends nothing: a dead camera behind a
    live switch. Only FFmpeg's read timeout can notice; after SIGCONT frames flow again."""
    stop = threading.Event()
    supervisor = start_supervisor(server.url, stop)
    try:
        wait_for(lambda: supervisor.state == STREAMING, 30, "streaming", supervisor)
        frozen_at = time.monotonic()
        server.signal(signal.SIGSTOP)
        wait_for(lambda: supervisor.state != STREAMING, 30, "the read timeout", supervisor)
        detected = time.monotonic() - frozen_at
        assert "no frame from" in supervisor.status().last_error

        time.sleep(3.0)  # reconnect attempts now hang in open() until the open timeout
        server.signal(signal.SIGCONT)
        wait_for(lambda: supervisor.state == STREAMING, 30, "recovery after SIGCONT", supervisor)

        server.signal(signal.SIGSTOP)  # and stop while a read is blocked on the silent server
        time.sleep(0.5)
        asked = time.monotonic()
        stop.set()
        stopped = supervisor.stop(timeout=POLICY.join_timeout_s)
        stop_took = time.monotonic() - asked
    finally:
        stop.set()
        server.signal(signal.SIGCONT)
        supervisor.stop()
    assert stopped is True
    print(
        "\nsilent server detected after {:.2f} s (read timeout {} s); stop took {:.2f} s".format(
            detected, TIMEOUTS["read_timeout_s"], stop_took
        )
    )
