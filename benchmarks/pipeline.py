"""Benchmarks 1 and 2 (benchmarks/README.md): pipeline efficiency (fps), CPU cost outside inference.

Pipeline efficiency compares, in windows of the same length taken round-robin in one
invocation, the first contender rotating each repeat (so drift of a shared machine hits every
contender alike), each window bracketed by benchmarks/validity.py's load probe:

* ``runtime``: ``session.run`` alone on pre-decoded, pre-processed frames -- the limit;
* ``runtime_nospin``: the same with ONNX Runtime's pool threads not busy-waiting, as edged's
  backend sets them: the limit for edged's own session options;
* ``edged``: the Daemon in-process on the demo video (``realtime: false``, read as fast as
  possible), publishing every result at QoS 1 through its outbox to a local Mosquitto;
  fps = inferred frames counted by the worker over the window;
* ``naive``: the single-threaded loop a user writes: ``cv2.VideoCapture`` -> resize/normalise
  -> ONNX Runtime -> the same DetectNet_v2 decode -> ``json.dumps`` -> paho publish QoS 1
  (paho's own network thread, no wait for the PUBACK);
* ``cv2_dnn``: OpenCV's DNN module as the runtime, on the same tensors as ``runtime``.

ONNX Runtime gets the same intra-op thread count everywhere (``--threads``), inter-op 1,
as edged's backend sets it.
"""

import json
import os
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from .common import (
    DEMO_ONNX,
    DEMO_VIDEO,
    STREAM_ID,
    BenchError,
    Broker,
    median,
    new_paho_client,
    read_frames,
    wait_for,
    write_config,
)
from .validity import Probe, interleaved, verdict

#: Frames kept pre-decoded for the runtime-limit and cost measurements.
PREDECODED_FRAMES = 32


def load_demo_task(directory: str, threads: int) -> Any:
    """The demo detector as edged loads it (load_config + load_task), no broker needed."""
    from edged.config import load_config
    from edged.tasks.loader import load_task

    config = load_config(
        write_config(os.path.join(directory, "task.yaml"), None, threads, "", model="onnx")
    )
    return load_task(config.models["peoplenet"])


def ort_session(threads: int, spinning: bool = True) -> Any:
    """A bare ONNX Runtime session with edged's options (intra-op ``threads``, inter-op 1).

    ``spinning``: ONNX Runtime's default busy-waiting pool threads (the fastest for a loop
    that does nothing else); edged turns it off (edged/backends/onnxruntime_backend.py).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(DEMO_ONNX, sess_options=options, providers=["CPUExecutionProvider"])


def timed_loop(step: Callable[[int], None], window_s: float) -> float:
    """Calls per second of ``step(i)`` over at least ``window_s`` seconds (at least 2 calls)."""
    n = 0
    start = time.perf_counter()
    end = start + window_s
    while True:
        step(n)
        n += 1
        now = time.perf_counter()
        if now >= end and n >= 2:
            return n / (now - start)


class RuntimeLimit:
    """``session.run`` alone, cycling over pre-processed tensors."""

    def __init__(self, tensors: List[np.ndarray], threads: int, spinning: bool = True) -> None:
        self.session = ort_session(threads, spinning)
        self.input = self.session.get_inputs()[0].name
        self.tensors = [t[np.newaxis] for t in tensors]

    def step(self, i: int) -> None:
        self.session.run(None, {self.input: self.tensors[i % len(self.tensors)]})


class CvDnn:
    """OpenCV's DNN module (readNetFromONNX) as the runtime, same tensors and thread count."""

    def __init__(self, tensors: List[np.ndarray], threads: int) -> None:
        import cv2

        self.cv2 = cv2
        self.net = cv2.dnn.readNetFromONNX(DEMO_ONNX)
        self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        self.names = list(self.net.getUnconnectedOutLayersNames())
        self.tensors = [t[np.newaxis] for t in tensors]
        self.threads = threads

    def step(self, i: int) -> None:
        self.net.setInput(self.tensors[i % len(self.tensors)])
        self.net.forward(self.names)

    def run(self, window_s: float, probe: Optional[Probe] = None) -> float:
        previous = self.cv2.getNumThreads()
        self.cv2.setNumThreads(self.threads)
        try:
            if probe is None:
                return timed_loop(self.step, window_s)
            with probe.measuring("cv2_dnn"):
                return timed_loop(self.step, window_s)
        finally:
            self.cv2.setNumThreads(previous)


class NaiveLoop:
    """The loop a user writes: capture -> preprocess -> ORT -> decode -> publish, one thread.

    ``broker`` is anything with ``host`` and ``port`` (a :class:`Broker`, or its address in a
    naive process of its own: benchmarks/naive_stream.py). The payload carries the capture
    time (``captured_at_ms``, as edged's results do) for latency at a subscriber.
    """

    def __init__(self, broker: Any, threads: int, task: Any, client_id: str = "bench-naive",
                 topic: str = f"naive/{STREAM_ID}/detections") -> None:  # fmt: skip
        import cv2

        self.cv2 = cv2
        self.cap = cv2.VideoCapture(DEMO_VIDEO)
        if not self.cap.isOpened():
            raise BenchError(f"cv2.VideoCapture cannot open {DEMO_VIDEO}")
        self.session = ort_session(threads)
        self.input = self.session.get_inputs()[0].name
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.task = task  # its postprocess: the same decode + NMS as edged (a fair comparison)
        self.topic = topic
        self.client = new_paho_client(client_id)
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()

    def step(self, i: int) -> None:
        cv2 = self.cv2
        ok, frame = self.cap.read()
        if not ok:  # the clip ended: loop, as edged's `loop: true`
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self.cap.read()
        captured_ms = int(time.time() * 1000.0)
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        x = cv2.resize(rgb, (self.task.width, self.task.height)).astype(np.float32) / 255.0
        x = np.ascontiguousarray(x.transpose(2, 0, 1)[np.newaxis])
        values = self.session.run(self.outputs, {self.input: x})
        found = self.task.postprocess(
            {k: v[0] for k, v in zip(self.outputs, values)}, (frame.shape[1], frame.shape[0])
        )
        payload = json.dumps({"seq": i, "captured_at_ms": captured_ms,
                              "detections": [d.to_dict() for d in found]})  # fmt: skip
        self.client.publish(self.topic, payload, qos=1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
        self.cap.release()


def edged_window(config_path: str, warmup_s: float, window_s: float, probe: Probe,
                 name: str) -> Dict[str, float]:  # fmt: skip
    """Start the Daemon in-process, wait for results, count inferred frames over ``window_s``."""
    from edged.daemon import Daemon

    daemon = Daemon(config_path)
    daemon.start()
    try:

        def inferred() -> int:
            return daemon.snapshot().streams[STREAM_ID].inferred

        wait_for(lambda: inferred() > 0, 60, "edged's first result")
        time.sleep(warmup_s)
        with probe.measuring(name):
            n0, t0 = inferred(), time.perf_counter()
            time.sleep(window_s)
            n1, t1 = inferred(), time.perf_counter()
        status = daemon.snapshot().streams[STREAM_ID].status
        return {"fps": (n1 - n0) / (t1 - t0), "fps_in": float(status.fps)}
    finally:
        daemon.shutdown()


def run_pipeline(
    broker: Broker, workdir: str, threads: int, repeats: int, window_s: float, warmup_s: float
) -> Dict[str, Any]:
    """Benchmark 1: medians of fps and of per-repeat ratios."""
    task = load_demo_task(workdir, threads)
    frames = read_frames(PREDECODED_FRAMES)
    tensors = [task.preprocess(f) for f in frames]
    runtime = RuntimeLimit(tensors, threads)
    # edged's own session options: how much of the gap is ORT's configuration, not the pipeline
    runtime_nospin = RuntimeLimit(tensors, threads, spinning=False)
    naive = NaiveLoop(broker, threads, task)
    dnn = None  # type: Optional[CvDnn]
    dnn_error = None  # type: Optional[str]
    try:
        dnn = CvDnn(tensors, threads)
        dnn.step(0)
    except Exception as e:  # noqa: BLE001 - any cv2.dnn failure is a result to report
        dnn, dnn_error = None, f"{type(e).__name__}: {str(e).strip().splitlines()[-1]}"
    config = write_config(
        os.path.join(workdir, "pipeline.yaml"), broker, threads,
        os.path.join(tempfile.mkdtemp(dir=workdir), "outbox.sqlite3"),
    )  # fmt: skip
    serial_config = write_config(
        os.path.join(workdir, "pipeline-serial.yaml"), broker, threads,
        os.path.join(tempfile.mkdtemp(dir=workdir), "outbox.sqlite3"), overlap=False,
    )  # fmt: skip
    probe = Probe()

    def loop(name: str, step: Callable[[int], None]) -> Callable[[], float]:
        def measure() -> float:
            timed_loop(step, warmup_s)  # warm each contender for a moment, then measure
            with probe.measuring(name):
                return timed_loop(step, window_s)

        return measure

    contenders = [
        ("runtime", loop("runtime", runtime.step)),
        ("runtime_nospin", loop("runtime_nospin", runtime_nospin.step)),
        ("naive", loop("naive", naive.step)),
    ]
    if dnn is not None:
        cv_dnn = dnn

        def dnn_window() -> float:
            cv_dnn.run(warmup_s)
            return cv_dnn.run(window_s, probe)

        contenders.append(("cv2_dnn", dnn_window))
    contenders += [
        ("edged", lambda: edged_window(config, warmup_s, window_s, probe, "edged")),
        ("edged_serial", lambda: edged_window(serial_config, warmup_s, window_s, probe,
                                              "edged_serial")),
    ]  # fmt: skip
    try:
        raw = interleaved(contenders, repeats)
    finally:
        naive.close()
    runs = []  # type: List[Dict[str, float]]
    for r in raw:
        run = dict(r)  # type: Dict[str, float]
        run["edged"] = r["edged"]["fps"]
        run["edged_fps_in"] = r["edged"]["fps_in"]
        run["edged_serial"] = r["edged_serial"]["fps"]
        run["edged_vs_runtime"] = run["edged"] / run["runtime"]
        run["edged_vs_runtime_nospin"] = run["edged"] / run["runtime_nospin"]
        run["edged_vs_naive"] = run["edged"] / run["naive"]
        # edged cannot beat the runtime alone: this is the most "edged / naive" can be
        run["runtime_vs_naive"] = run["runtime"] / run["naive"]
        if dnn is not None:
            run["cv2_dnn_vs_runtime"] = run["cv2_dnn"] / run["runtime"]
        runs.append(run)
    keys = sorted(runs[0])
    return {
        "threads": threads,
        "window_s": window_s,
        "repeats": repeats,
        "runs": runs,
        "median": {k: median([r[k] for r in runs]) for k in keys},
        "cv2_dnn_error": dnn_error,
        "validity": verdict(probe.windows, runs),
    }


def run_cpu_cost(
    broker: Broker, workdir: str, threads: int, repeats: int, frames_per_repeat: int
) -> Dict[str, Any]:
    """Benchmark 2: ms per frame of pre-processing, post-processing and publishing at 768x576.

    Publishing is :meth:`MqttService.enqueue_result` -- the publish decision, the payload
    build and the durable outbox append -- with the service not started (no network: the
    network threads' cost is benchmark 3's).
    """
    import cv2

    from edged.config import load_config
    from edged.mqtt.control import DaemonControl
    from edged.mqtt.service import MqttService
    from edged.pipeline.results import InferenceResult

    task = load_demo_task(workdir, threads)
    frames = read_frames(min(frames_per_repeat, PREDECODED_FRAMES * 4))
    size = (frames[0].shape[1], frames[0].shape[0])
    outbox = os.path.join(tempfile.mkdtemp(dir=workdir), "outbox.sqlite3")
    config = load_config(write_config(os.path.join(workdir, "cost.yaml"), broker, threads, outbox))
    service = MqttService(config.mqtt, "bench", DaemonControl(), __import__("threading").Event())
    service.outbox.open()
    stages = ("decode", "preprocess", "inference", "postprocess", "publish")
    runs = []  # type: List[Dict[str, float]]
    detections = []  # type: List[int]
    cap = cv2.VideoCapture(DEMO_VIDEO)
    seq = 0
    try:
        for _ in range(repeats):
            totals = dict.fromkeys(stages, 0.0)
            for _ in range(frames_per_repeat):
                t0 = time.perf_counter()
                ok, image = cap.read()
                if not ok:
                    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    ok, image = cap.read()
                t1 = time.perf_counter()
                tensor = task.preprocess(image)
                t2 = time.perf_counter()
                outputs = task.infer([tensor])[0]
                t3 = time.perf_counter()
                items = task.postprocess(outputs, size)
                t4 = time.perf_counter()
                result = InferenceResult(
                    stream_id=STREAM_ID, seq=seq, captured_monotonic=t0,
                    captured_wall=time.time(), frame_size=size, model="peoplenet",
                    task="detection", items=items,
                    latency_ms={"preprocess": 1.0, "inference": 7.0, "postprocess": 0.5},
                )  # fmt: skip
                service.enqueue_result(result)
                t5 = time.perf_counter()
                seq += 1
                detections.append(len(items))
                for name, (a, b) in zip(stages, ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5))):
                    totals[name] += b - a
            run = {k: 1000.0 * v / frames_per_repeat for k, v in totals.items()}
            run["outside_inference"] = run["preprocess"] + run["postprocess"] + run["publish"]
            runs.append(run)
    finally:
        cap.release()
        service.outbox.close()
    keys = list(stages) + ["outside_inference"]
    return {
        "frame_size": list(size),
        "network_size": [task.width, task.height],
        "frames_per_repeat": frames_per_repeat,
        "repeats": repeats,
        "mean_detections_per_frame": float(np.mean(detections)) if detections else 0.0,
        "runs": runs,
        "median_ms": {k: median([r[k] for r in runs]) for k in keys},
    }
