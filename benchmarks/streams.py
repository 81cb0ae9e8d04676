"""Benchmark 7, many streams into one detector: edged against N naive processes and the runtime.

For each stream count N (1, 2, 4, 8 by default; ``--quick``: 1, 2) the demo clip is read N
times at full speed (``realtime: false``) and every result published at QoS 1 to a local
Mosquitto. Contenders, window by window (benchmarks/validity.py's :func:`interleaved`):

* ``edged_b1`` / ``edged_bN``: one ``edged run`` process, N streams into one model with
  ``pipeline.max_batch`` 1 and N (one inference call for up to N streams' frames);
* ``naive``: N processes of benchmarks/naive_stream.py, one per stream: the loop a user
  writes, run once per camera;
* ``runtime_b1`` / ``runtime_bN``: ``session.run`` alone on batches of 1 and N pre-processed
  frames in this process: the limit for edged at that batch (frames/s = batch x calls/s).

The demo ONNX has a fixed batch of 1, so every contender runs a copy whose batch dimension is
made dynamic (same weights, same graph: it is Conv/ReLU/Sigmoid only) -- without it
``max_batch`` N would mean N calls of batch 1 (edged/tasks/base.py ``Task.infer``).

Per window: total fps and fps per stream counted by an independent subscriber (results that
arrived in the window), CPU per frame (the contender's processes' CPU ticks over the window
/ frames), RSS (``VmRSS``) at the end of the window, and latency from capture to arrival at
the subscriber (``captured_at_ms`` in the payload, the subscriber's wall clock: same machine).
*RSS per added stream*: (RSS with N streams - RSS with 1) / (N - 1) for edged; a naive process'
whole RSS (each stream is a process of its own).
"""

import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .common import (
    DEMO_ONNX,
    REPO,
    BenchError,
    Broker,
    median,
    new_paho_client,
    read_frames,
    rss_mb,
    stream_ids,
    wait_for,
    write_config,
)
from .validity import Probe, interleaved, own_ticks, verdict

#: Stream counts (full run, --quick).
STREAM_COUNTS = ((1, 2, 4, 8), (1, 2))
#: How long the contender's processes may take to publish their first result on every stream.
FIRST_RESULTS_TIMEOUT_S = 120.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def dynamic_batch_model(directory: str) -> str:
    """A copy of the demo ONNX whose batch dimension (input and outputs) is ``batch``."""
    import onnx

    model = onnx.load(DEMO_ONNX)
    for value in list(model.graph.input) + list(model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    path = os.path.join(directory, "peoplenet_demo_dynamic_batch.onnx")
    onnx.save(model, path)
    return path


class ArrivalLog:
    """An independent paho client: when each result arrived and when its frame was captured."""

    def __init__(self, broker: Broker) -> None:
        self._lock = threading.Lock()
        self.arrivals = []  # type: List[Tuple[float, str, int]]  # (time, topic, captured ms)
        self._subscribed = threading.Event()
        self.client = new_paho_client("bench-streams")
        self.client.on_connect = lambda c, *a: c.subscribe([("edged/#", 1), ("naive/#", 1)])
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise BenchError("the streams benchmark's subscriber did not subscribe")

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        import json

        now = time.time()
        try:
            captured = int(json.loads(message.payload.decode("utf-8"))["captured_at_ms"])
        except (ValueError, KeyError, TypeError):
            return  # not a result (edged's status and state messages share the prefix)
        with self._lock:
            self.arrivals.append((now, message.topic, captured))

    def streams_seen(self, prefix: str) -> int:
        with self._lock:
            return len({t for _, t, _ in self.arrivals if t.startswith(prefix)})

    def take(self, prefix: str, start: float, end: float) -> List[Tuple[float, str, int]]:
        """Arrivals under ``prefix`` between ``start`` and ``end``; forgets everything older."""
        with self._lock:
            chosen = [a for a in self.arrivals if a[1].startswith(prefix) and start <= a[0] < end]
            self.arrivals = [a for a in self.arrivals if a[0] >= end]
        return chosen

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _stop_all(procs: Sequence[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


class StreamsRun:
    """The contenders for one stream count, each a callable measuring one window."""

    def __init__(self, broker: Broker, log: ArrivalLog, workdir: str, model: str, threads: int,
                 count: int, warmup_s: float, window_s: float, probe: Probe) -> None:  # fmt: skip
        self.broker, self.log, self.workdir, self.model = broker, log, workdir, model
        self.threads, self.count = threads, count
        self.warmup_s, self.window_s, self.probe = warmup_s, window_s, probe
        self.windows = 0

    def _measure(self, name: str, procs: Sequence[subprocess.Popen], prefix: str) -> Dict[str, Any]:
        """Wait for results on every stream, warm up, then measure one window of ``procs``."""

        def all_streams_publish() -> bool:
            for proc in procs:
                if proc.poll() is not None:
                    raise BenchError(f"{name}: a contender process exited with {proc.returncode}")
            return self.log.streams_seen(prefix) >= self.count

        wait_for(all_streams_publish, FIRST_RESULTS_TIMEOUT_S, f"{name}'s first results")
        time.sleep(self.warmup_s)
        with self.probe.measuring(f"{name} x{self.count}"):
            ticks0 = sum(own_ticks(p.pid) for p in procs)
            start = time.time()
            time.sleep(self.window_s)
            end = time.time()
            ticks1 = sum(own_ticks(p.pid) for p in procs)
        rss = [rss_mb(p.pid) for p in procs]
        arrivals = self.log.take(prefix, start, end)
        seconds = end - start
        per_stream = {}  # type: Dict[str, int]
        for _, topic, _ in arrivals:
            per_stream[topic] = per_stream.get(topic, 0) + 1
        latencies = [1000.0 * t - captured for t, _, captured in arrivals]
        frames = len(arrivals)
        fps = [per_stream.get(t, 0) / seconds for t in self._topics(prefix)]
        return {
            "fps": frames / seconds,
            "fps_per_stream": fps,
            "cpu_ms_per_frame": 1000.0 * (ticks1 - ticks0) / _CLK_TCK / frames if frames else None,
            "rss_mb": rss,
            "latency_p50_ms": _percentile(latencies, 50),
            "latency_p99_ms": _percentile(latencies, 99),
        }

    def _topics(self, prefix: str) -> List[str]:
        if prefix.startswith("naive/"):
            return [f"{prefix}{i}/detections" for i in range(self.count)]
        return [f"{prefix}v1/streams/{s}/detections" for s in stream_ids(self.count)]

    def edged(self, max_batch: int) -> Callable[[], Dict[str, Any]]:
        def window() -> Dict[str, Any]:
            self.windows += 1
            device = f"bench-s{self.count}-b{max_batch}-w{self.windows}"
            directory = tempfile.mkdtemp(dir=self.workdir)
            config = write_config(
                os.path.join(directory, "edged.yaml"), self.broker, self.threads,
                os.path.join(directory, "outbox.sqlite3"), model="onnx", streams=self.count,
                max_batch=max_batch, device_id=device, onnx_path=self.model,
            )  # fmt: skip
            log = open(os.path.join(directory, "edged.log"), "a")
            proc = subprocess.Popen([sys.executable, "-m", "edged", "run", "-c", config],
                                    cwd=REPO, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
            log.close()
            try:
                return self._measure(f"edged max_batch {max_batch}", [proc], f"edged/{device}/")
            finally:
                _stop_all([proc])

        return window

    def runtime(self, runtime: "BatchedRuntime", batch: int) -> Callable[[], Dict[str, Any]]:
        name = f"runtime_b{batch} x{self.count}"
        return lambda: runtime.window(batch, self.warmup_s, self.window_s, self.probe, name)

    def naive(self) -> Dict[str, Any]:
        self.windows += 1
        prefix = f"naive/s{self.count}-w{self.windows}/"
        command = [sys.executable, "-m", "benchmarks.naive_stream", "--host", self.broker.host,
                   "--port", str(self.broker.port), "--threads", str(self.threads)]  # fmt: skip
        procs = [
            subprocess.Popen(
                command + ["--topic", f"{prefix}{i}/detections"],
                cwd=REPO,
                stdout=subprocess.DEVNULL,
            )
            for i in range(self.count)
        ]
        try:
            return self._measure("naive processes", procs, prefix)
        finally:
            _stop_all(procs)


class BatchedRuntime:
    """``session.run`` alone on a batch of pre-processed frames: the limit at that batch."""

    def __init__(self, model: str, tensors: List[np.ndarray], threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # ONNX Runtime's pool threads not spinning, as edged runs them: spinning threads read
        # 91-131 fps instead of 165 in windows where anything else woke (the broker still
        # delivering the last contender's results; run of 2026-12-06), and a limit that
        # collapses flags edged "above ceiling" on a quiet machine
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(model, sess_options=options,
                                            providers=["CPUExecutionProvider"])  # fmt: skip
        self.input = self.session.get_inputs()[0].name
        self.tensors = tensors

    def window(self, batch: int, warmup_s: float, window_s: float, probe: Probe,
               name: str) -> Dict[str, Any]:  # fmt: skip
        from .pipeline import timed_loop

        x = np.stack([self.tensors[i % len(self.tensors)] for i in range(batch)])

        def step(i: int) -> None:
            self.session.run(None, {self.input: x})

        timed_loop(step, warmup_s)
        with probe.measuring(name):
            cpu0 = time.process_time()
            calls = timed_loop(step, window_s)
            cpu = time.process_time() - cpu0
        fps = batch * calls
        return {"fps": fps, "cpu_ms_per_frame": 1000.0 * cpu / (fps * window_s)}


def run_streams(broker: Broker, workdir: str, threads: int, repeats: int, window_s: float,
                warmup_s: float, counts: Sequence[int]) -> Dict[str, Any]:  # fmt: skip
    """Benchmark 7: per stream count, the medians over repeats of every contender's figures."""
    from .pipeline import load_demo_task

    model = dynamic_batch_model(tempfile.mkdtemp(dir=workdir))
    task = load_demo_task(workdir, threads)
    tensors = [task.preprocess(f) for f in read_frames(8)]
    runtime = BatchedRuntime(model, tensors, threads)
    log = ArrivalLog(broker)
    probe = Probe()
    by_count = {}  # type: Dict[str, Any]
    ceilings = []  # type: List[Tuple[str, str]]
    all_runs = []  # type: List[Dict[str, float]]
    try:
        for n in counts:
            run = StreamsRun(broker, log, workdir, model, threads, n, warmup_s, window_s, probe)
            contenders = [
                ("runtime_b1", run.runtime(runtime, 1)),
                ("edged_b1", run.edged(1)),
                ("naive", run.naive),
            ]  # type: List[Tuple[str, Callable[[], Any]]]
            if n > 1:
                contenders.insert(1, ("runtime_bN", run.runtime(runtime, n)))
                contenders.insert(3, ("edged_bN", run.edged(n)))
            runs = interleaved(contenders, repeats)
            by_count[str(n)] = _summarise(runs)
            # edged cannot beat the runtime alone at its batch (figures keyed per count)
            pairs = [("edged_b1", "runtime_b1")] + ([("edged_bN", "runtime_bN")] if n > 1 else [])
            ceilings += [(f"{a}@{n}", f"{b}@{n}") for a, b in pairs]
            all_runs += [{f"{k}@{n}": v["fps"] for k, v in r.items()} for r in runs]
    finally:
        log.close()
    _rss_per_added_stream(by_count)
    return {
        "threads": threads,
        "window_s": window_s,
        "repeats": repeats,
        "counts": list(counts),
        "model": "peoplenet_demo.onnx with a dynamic batch dimension",
        "by_count": by_count,
        "validity": verdict(probe.windows, _merge(all_runs, repeats), ceilings),
    }


def _merge(runs: List[Dict[str, float]], repeats: int) -> List[Dict[str, float]]:
    """Per-count runs (repeat i of every count in turn) as one figure set per repeat."""
    merged = [{} for _ in range(repeats)]  # type: List[Dict[str, float]]
    for i, run in enumerate(runs):
        merged[i % repeats].update(run)
    return merged


def _summarise(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    out = {}  # type: Dict[str, Any]
    for name in runs[0]:
        windows = [r[name] for r in runs]
        summary = {"runs": windows}  # type: Dict[str, Any]
        for key in ("fps", "cpu_ms_per_frame", "latency_p50_ms", "latency_p99_ms"):
            values = [w[key] for w in windows if w.get(key) is not None]
            summary[key] = median(values) if values else None
        if "fps_per_stream" in windows[0]:
            summary["fps_per_stream_min"] = median([min(w["fps_per_stream"]) for w in windows])
            summary["fps_per_stream_mean"] = median(
                [sum(w["fps_per_stream"]) / len(w["fps_per_stream"]) for w in windows])  # fmt: skip
            summary["rss_mb_total"] = median([sum(w["rss_mb"]) for w in windows])
            summary["rss_mb_per_process"] = median([max(w["rss_mb"]) for w in windows])
        out[name] = summary
    return out


def _rss_per_added_stream(by_count: Dict[str, Any]) -> None:
    """edged: (RSS at N - RSS at 1) / (N - 1); naive: one process' RSS (a process per stream)."""
    base = by_count.get("1", {}).get("edged_b1", {}).get("rss_mb_total")
    for n, contenders in by_count.items():
        for name, figures in contenders.items():
            if name.startswith("edged") and base is not None and int(n) > 1:
                figures["rss_mb_per_added_stream"] = (figures["rss_mb_total"] - base) / (int(n) - 1)
            elif name == "naive":
                figures["rss_mb_per_added_stream"] = figures["rss_mb_per_process"]


def stream_counts(quick: bool) -> Tuple[int, ...]:
    return STREAM_COUNTS[1] if quick else STREAM_COUNTS[0]


def best_edged(figures: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The faster of edged's two batch settings at one stream count."""
    edged = [figures[k] for k in ("edged_b1", "edged_bN") if k in figures]
    return max(edged, key=lambda f: f["fps"]) if edged else None
