"""Shared parts of the benchmark suite: paths, machine description, a real Mosquitto, a subscriber.

Everything here is real: the broker is a ``mosquitto`` child process on a free loopback port,
the subscriber an independent paho client (not edged code) that counts what arrived, so
"lost" in the results is what a consumer would see. Kept 3.6-clean: the smoke test
(tests/test_benchmarks_smoke.py) runs this code under Python 3.6, 3.8 and 3.11 in CI.
"""

import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_DIR = os.path.join(REPO, "models", "peoplenet-demo")
DEMO_ONNX = os.path.join(DEMO_DIR, "peoplenet_demo.onnx")
DEMO_ETLT = os.path.join(DEMO_DIR, "peoplenet_demo.etlt")
DEMO_LABELS = os.path.join(DEMO_DIR, "labels.txt")
DEMO_KEY = "tlt_encode"  # NVIDIA's public PeopleNet-family key (configs/demo.yaml)
DEMO_VIDEO = os.path.join(REPO, "tests", "data", "vtest", "holdout.mp4")
DEVICE_ID = "bench"
STREAM_ID = "vtest"
RESULTS_TOPIC = f"edged/{DEVICE_ID}/v1/streams/+/detections"

#: How long to wait for a broker to accept connections.
BROKER_READY_S = 10.0


class BenchError(Exception):
    """A benchmark could not run (a missing tool, a broker that did not start)."""


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, poll: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")


def _version(module: str) -> str:
    try:
        mod = __import__(module)
    except ImportError:
        return "not installed"
    return str(getattr(mod, "__version__", "unknown"))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(threads: int) -> Dict[str, Any]:
    """What the numbers were measured on (results.json ``machine``)."""
    import paho.mqtt

    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    try:
        out = subprocess.check_output([mosquitto, "-h"], stderr=subprocess.STDOUT)
    except subprocess.CalledProcessError as e:  # mosquitto -h exits 3 and prints its version
        out = e.output
    except OSError:
        out = b"not installed"
    return {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "onnxruntime": _version("onnxruntime"),
        "opencv": _version("cv2"),
        "paho_mqtt": str(getattr(paho.mqtt, "__version__", "unknown")),
        "mosquitto": out.decode("utf-8", "replace").splitlines()[0] if out else "unknown",
        "ort_threads": threads,
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (VmRSS from /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise BenchError(f"no VmRSS for pid {pid}")


class Broker:
    """A real Mosquitto on a free 127.0.0.1 port, no persistence, anonymous."""

    def __init__(self, directory: str) -> None:
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(self.binary):
            raise BenchError("mosquitto is not installed: apt-get install -y mosquitto")
        os.makedirs(directory, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.conf = os.path.join(directory, "mosquitto.conf")
        self.log = os.path.join(directory, "mosquitto.log")
        import getpass

        with open(self.conf, "w") as f:
            f.write(
                "\n".join(
                    [
                        f"listener {self.port} 127.0.0.1",
                        f"user {getpass.getuser()}",
                        "allow_anonymous true",
                        "persistence false",
                        # a fast publisher must not lose messages queued for the subscriber
                        "max_queued_messages 1000000",
                        "max_inflight_messages 100",
                        "log_type error",
                        "log_type warning",
                    ]
                )
                + "\n"
            )
        self.proc = None  # type: Optional[subprocess.Popen]

    def __enter__(self) -> "Broker":
        log = open(self.log, "a")
        self.proc = subprocess.Popen([self.binary, "-c", self.conf], stdout=log, stderr=log)
        log.close()
        wait_for(self._accepting, BROKER_READY_S, f"mosquitto on port {self.port}")
        return self

    def _accepting(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"mosquitto exited with {self.proc.returncode}")
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def new_paho_client(client_id: str) -> Any:
    import paho.mqtt.client as mqtt

    kwargs = {"client_id": client_id, "clean_session": True}  # type: Dict[str, Any]
    if hasattr(mqtt, "CallbackAPIVersion"):  # paho 2.x
        kwargs["callback_api_version"] = mqtt.CallbackAPIVersion.VERSION2
    return mqtt.Client(**kwargs)


class Subscriber:
    """An independent paho client counting result messages by ``seq`` (QoS 1 subscription)."""

    def __init__(self, broker: Broker, topic: str = RESULTS_TOPIC, client_id: str = "bench-sub"):
        self.topic = topic
        self.seqs = []  # type: List[int]
        self.first_at = None  # type: Optional[float]
        self.last_at = None  # type: Optional[float]
        self.subscribed = threading.Event()
        self._lock = threading.Lock()
        self.client = new_paho_client(client_id)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            self.close()
            raise BenchError("the benchmark subscriber did not subscribe")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, *rest: Any) -> None:
        client.subscribe(self.topic, 1)

    def _on_subscribe(self, *args: Any) -> None:
        self.subscribed.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        now = time.monotonic()
        try:
            seq = int(json.loads(message.payload.decode("utf-8"))["seq"])
        except (ValueError, KeyError):
            seq = -1
        with self._lock:
            if self.first_at is None:
                self.first_at = now
            self.last_at = now
            self.seqs.append(seq)

    def count(self) -> int:
        with self._lock:
            return len(self.seqs)

    def unique(self) -> int:
        with self._lock:
            return len(set(self.seqs))

    def close(self) -> None:
        self.client.loop_stop()
        try:
            self.client.disconnect()
        except Exception:  # noqa: BLE001 - best effort at the end of a measurement
            pass


def write_config(
    path: str,
    broker: Optional[Broker],
    threads: int,
    outbox: str,
    realtime: bool = False,
    model: str = "etlt",
    qos: int = 1,
    overlap: bool = True,
    streams: int = 1,
    max_batch: int = 1,
    device_id: str = DEVICE_ID,
    onnx_path: str = DEMO_ONNX,
) -> str:
    """An ``edged run`` config: the demo detector on the demo video, looping, MQTT to ``broker``.

    ``streams`` > 1 reads the clip that many times (:func:`stream_ids`), all into the one
    model, up to ``max_batch`` frames per inference call. Metrics are off (no port to collide
    on); the summary log is off so it costs nothing.
    """
    model_lines = (
        [f"    path: {json.dumps(DEMO_ETLT)}", f"    key: {DEMO_KEY}"]
        if model == "etlt"
        else [f"    path: {json.dumps(onnx_path)}"]
    )
    pipeline = "{{summary_interval_s: 0, drain_timeout_s: 2, overlap: {}, max_batch: {}}}".format(
        "true" if overlap else "false", max_batch
    )
    stream_lines = []  # type: List[str]
    for stream_id in stream_ids(streams):
        stream_lines += [
            f"  {stream_id}:",
            f"    source: {json.dumps(DEMO_VIDEO)}",
            "    model: peoplenet",
            "    loop: true",
            "    realtime: {}".format("true" if realtime else "false"),
        ]
    lines = (
        [
            f"device_id: {device_id}",
            "log_level: warning",
            "models:",
            "  peoplenet:",
        ]
        + model_lines
        + [
            f"    labels: {json.dumps(DEMO_LABELS)}",
            "    task: detection",
            "    version: demo-1",
            f"    threads: {threads}",
            "streams:",
        ]
        + stream_lines
        + [
            "pipeline: " + pipeline,
            "metrics: {enabled: false}",
        ]
    )
    if broker is not None:
        lines += [
            "mqtt:",
            f"  host: {broker.host}",
            f"  port: {broker.port}",
            f"  qos: {qos}",
            f"  outbox: {{path: {json.dumps(outbox)}}}",
        ]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def stream_ids(count: int) -> List[str]:
    """``[STREAM_ID]`` for one stream, ``vtest0 .. vtest<count-1>`` for more."""
    return [STREAM_ID] if count == 1 else [f"{STREAM_ID}{i}" for i in range(count)]


def edged_command(config: str) -> List[str]:
    return [sys.executable, "-m", "edged", "run", "-c", config]


def read_frames(count: int, path: str = DEMO_VIDEO) -> List[Any]:
    """The first ``count`` frames of ``path`` (BGR, 768x576 for the demo video)."""
    import cv2

    cap = cv2.VideoCapture(path)
    frames = []
    try:
        while len(frames) < count:
            ok, frame = cap.read()
            if not ok:
                if not frames:
                    raise BenchError(f"cannot read frames from {path}")
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                continue
            frames.append(frame)
    finally:
        cap.release()
    return frames
