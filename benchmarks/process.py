"""Benchmarks 4 and 5 (benchmarks/README.md: start-up, memory) and the profile, on `edged run`s.

Start-up is measured from ``Popen`` (or ``Daemon.start()`` in-process) to the first result
an independent subscriber receives from the broker:

* ``cold``: the first process of the invocation, with edged's bytecode cache redirected to an
  empty folder (``PYTHONPYCACHEPREFIX``, Python >= 3.8) so edged's modules compile; the OS
  page cache is not dropped (that needs privileges a CI runner lacks);
* ``warm``: later fresh processes (bytecode and page cache warm) -- a systemd restart;
* ``in_process``: ``Daemon.start()`` in a process that already imported everything -- what a
  reload or an in-process restart costs.

With ONNX Runtime there is no engine cache: "warm" here is the warm ONNX case of the issue.
"""

import collections
import os
import re
import signal
import subprocess
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

from .common import (
    STREAM_ID,
    BenchError,
    Broker,
    Subscriber,
    edged_command,
    median,
    rss_mb,
    wait_for,
    write_config,
)

#: First result must arrive within this long of the start.
FIRST_RESULT_TIMEOUT_S = 120.0


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _spawn(config: str, log_path: str, env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
    full = dict(os.environ)
    full.update(env or {})
    from .common import REPO

    log = open(log_path, "a")
    try:
        return subprocess.Popen(edged_command(config), cwd=REPO, env=full, stdout=log,
                                stderr=subprocess.STDOUT)  # fmt: skip
    finally:
        log.close()


def _first_result(proc: subprocess.Popen, subscriber: Subscriber, log_path: str) -> float:
    def arrived() -> bool:
        if proc.poll() is not None:
            with open(log_path) as f:
                tail = f.read()[-2000:]
            raise BenchError(f"edged run exited with {proc.returncode}:\n{tail}")
        return subscriber.first_at is not None

    wait_for(arrived, FIRST_RESULT_TIMEOUT_S, "the first published result", poll=0.002)
    assert subscriber.first_at is not None
    return subscriber.first_at


def process_start(broker: Broker, workdir: str, threads: int, env: Dict[str, str]) -> float:
    """Seconds from Popen of ``edged run`` to the first result at the subscriber."""
    directory = tempfile.mkdtemp(dir=workdir)
    config = write_config(os.path.join(directory, "edged.yaml"), broker, threads,
                          os.path.join(directory, "outbox.sqlite3"), realtime=True)  # fmt: skip
    log_path = os.path.join(directory, "edged.log")
    subscriber = Subscriber(broker, client_id="bench-start")
    try:
        start = time.monotonic()
        proc = _spawn(config, log_path, env)
        try:
            first = _first_result(proc, subscriber, log_path)
        finally:
            _stop(proc)
    finally:
        subscriber.close()
    return first - start


def in_process_start(broker: Broker, workdir: str, threads: int) -> float:
    """Seconds from ``Daemon.start()`` (everything imported) to the first result at the broker."""
    from edged.daemon import Daemon

    directory = tempfile.mkdtemp(dir=workdir)
    config = write_config(os.path.join(directory, "edged.yaml"), broker, threads,
                          os.path.join(directory, "outbox.sqlite3"), realtime=True)  # fmt: skip
    subscriber = Subscriber(broker, client_id="bench-start-inproc")
    daemon = Daemon(config)
    try:
        start = time.monotonic()
        daemon.start()
        wait_for(lambda: subscriber.first_at is not None, FIRST_RESULT_TIMEOUT_S,
                 "the first published result", poll=0.002)  # fmt: skip
        assert subscriber.first_at is not None
        return subscriber.first_at - start
    finally:
        daemon.shutdown()
        subscriber.close()


def run_startup(broker: Broker, workdir: str, threads: int, repeats: int) -> Dict[str, Any]:
    cold_env = {"PYTHONPYCACHEPREFIX": tempfile.mkdtemp(dir=workdir, prefix="pycache-")}
    cold = process_start(broker, workdir, threads, cold_env)
    warm = [process_start(broker, workdir, threads, {}) for _ in range(repeats)]
    in_process = [in_process_start(broker, workdir, threads) for _ in range(repeats)]
    return {
        "cold_s": cold,
        "warm_runs_s": warm,
        "warm_s": median(warm),
        "in_process_runs_s": in_process,
        "in_process_s": median(in_process),
        "repeats": repeats,
    }


# -- memory ----------------------------------------------------------------------------------

_MODEL_SHARE_SCRIPT = r"""
import os, sys, json
sys.path.insert(0, sys.argv[1])
from benchmarks.common import rss_mb, read_frames
from benchmarks.pipeline import load_demo_task
import tempfile
import edged.daemon, edged.mqtt.service, cv2, numpy, onnxruntime  # everything edged run imports
frames = read_frames(2)
before = rss_mb(os.getpid())
task = load_demo_task(tempfile.mkdtemp(), int(sys.argv[2]))
loaded = rss_mb(os.getpid())
for f in frames:
    task.run([f])
inferred = rss_mb(os.getpid())
print(json.dumps({"before_mb": before, "loaded_mb": loaded, "after_inference_mb": inferred}))
"""


def model_share(threads: int) -> Dict[str, float]:
    """RSS the model adds in a fresh process: load (weights, session) + first inferences (arena).

    Measured in a separate process that imported everything ``edged run`` imports first, so
    the difference is the model's alone.
    """
    import json
    import sys

    from .common import DEMO_ONNX, REPO

    out = subprocess.check_output(
        [sys.executable, "-c", _MODEL_SHARE_SCRIPT, REPO, str(threads)], cwd=REPO
    )
    data = json.loads(out.decode().strip().splitlines()[-1])
    data["weights_file_mb"] = os.path.getsize(DEMO_ONNX) / 2**20
    data["model_share_mb"] = data["after_inference_mb"] - data["before_mb"]
    return data


def _slope_mb_per_min(samples: List[Tuple[float, float]]) -> float:
    """Theil-Sen slope of RSS over time: the median of the slopes between every two samples.

    A leak is a steady climb (a staircase of allocator chunks); a one-time step (an arena or
    a cache growing once) is not. A least-squares line turns one step into a slope: the full
    run at commit e4ff375 (benchmarks/results) grew 1.5 MB once, between 130 s and 200 s, and
    then 0.05 MB in 400 s, which least squares read as 0.103 MB/min after the first 20 %
    ("missed") and the median of pairwise slopes reads as 0.011.
    """
    slopes = sorted(
        (r2 - r1) / (t2 - t1)
        for i, (t1, r1) in enumerate(samples)
        for t2, r2 in samples[i + 1 :]
        if t2 > t1
    )
    return 60.0 * median(slopes) if slopes else 0.0


def run_memory(
    broker: Broker, workdir: str, threads: int, duration_s: float, interval_s: float
) -> Dict[str, Any]:
    """RSS of ``edged run`` (one stream, ``realtime: false``: the most frames per minute, so a
    leak per frame shows soonest; MQTT QoS 1 with the outbox) sampled every ``interval_s``.

    The slope is fitted after the first 20 % of the run (imports, arena growth, caches
    filling) and the result also holds the slope over the whole run.
    """
    directory = tempfile.mkdtemp(dir=workdir)
    config = write_config(os.path.join(directory, "edged.yaml"), broker, threads,
                          os.path.join(directory, "outbox.sqlite3"), realtime=False)  # fmt: skip
    log_path = os.path.join(directory, "edged.log")
    subscriber = Subscriber(broker, client_id="bench-memory")
    samples = []  # type: List[Tuple[float, float]]
    proc = _spawn(config, log_path)
    try:
        start = _first_result(proc, subscriber, log_path)
        first_count = subscriber.count()
        while True:
            now = time.monotonic()
            samples.append((now - start, rss_mb(proc.pid)))
            if now - start >= duration_s:
                break
            time.sleep(max(0.0, min(interval_s, start + duration_s - now)))
        results = subscriber.count() - first_count
        elapsed = time.monotonic() - start
    finally:
        _stop(proc)
        subscriber.close()
    settled = [s for s in samples if s[0] >= 0.2 * duration_s] or samples
    rss = [r for _, r in settled]
    return {
        "duration_s": duration_s,
        "interval_s": interval_s,
        "samples": samples,
        "results_received": results,
        "results_per_s": results / elapsed if elapsed > 0 else 0.0,
        "rss_median_mb": median(rss),
        "rss_max_mb": max(r for _, r in samples),
        "rss_first_mb": samples[0][1],
        "rss_last_mb": samples[-1][1],
        "slope_mb_per_min": _slope_mb_per_min(settled),
        "slope_whole_run_mb_per_min": _slope_mb_per_min(samples),
    }


# -- profile ---------------------------------------------------------------------------------

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _frame_name(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``func (file.py)``: lines folded per function."""
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    return "{} ({})".format(m.group("func"), os.path.basename(m.group("file")))


def summarise_profile(raw_path: str, top: int = 15) -> Dict[str, Any]:
    """Top functions by own time and by inclusive time from py-spy's ``--format raw`` output."""
    own = collections.Counter()  # type: collections.Counter
    inclusive = collections.Counter()  # type: collections.Counter
    total = 0
    with open(raw_path) as f:
        for line in f:
            line = line.rstrip("\n")
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = [_frame_name(x) for x in stack.split(";") if x]
            if frames:
                own[frames[-1]] += n
            for name in set(frames):
                inclusive[name] += n
    pct = (lambda n: 100.0 * n / total) if total else (lambda n: 0.0)
    return {
        "samples": total,
        "top_own": [[name, round(pct(n), 1)] for name, n in own.most_common(top)],
        "top_inclusive": [[name, round(pct(n), 1)] for name, n in inclusive.most_common(top)],
    }


_DUMP_THREAD = re.compile(r'^Thread (?P<tid>\d+) \([^)]*\): "(?P<name>.*)"$')
#: ticks per second of /proc/*/stat times (USER_HZ, proc(5))
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def thread_ticks(pid: int) -> Dict[int, Tuple[str, int]]:
    """tid -> (the kernel's thread name, utime + stime ticks) of every thread of ``pid``."""
    out = {}  # type: Dict[int, Tuple[str, int]]
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # ended meanwhile
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        rest = stat[stat.rindex(")") + 2 :].split()
        out[int(tid)] = (comm, int(rest[11]) + int(rest[12]))
    return out


def dump_thread_names(dump: str) -> Dict[int, str]:
    """tid -> Python thread name from ``py-spy dump`` (``Thread 1234 (idle): "name"``) (pure)."""
    names = {}
    for line in dump.splitlines():
        m = _DUMP_THREAD.match(line.strip())
        if m:
            names[int(m.group("tid"))] = m.group("name")
    return names


def cpu_by_thread(before: Dict[int, Tuple[str, int]], after: Dict[int, Tuple[str, int]],
                  names: Dict[int, str], frames: int) -> List[List[Any]]:  # fmt: skip
    """[[thread, CPU ms per frame], ...], most first (pure). Threads Python did not start
    (ONNX Runtime's pool, OpenCV's, FFmpeg's decoders) go by their kernel name."""
    per = collections.Counter()  # type: collections.Counter
    for tid, (comm, ticks) in after.items():
        name = names.get(tid) or "native: " + comm
        per[name] += ticks - before.get(tid, (comm, 0))[1]
    scale = 1000.0 / _CLK_TCK / max(1, frames)
    return [[name, round(t * scale, 2)] for name, t in per.most_common() if t > 0]


def run_profile(broker: Broker, workdir: str, threads: int, duration_s: float,
                out_dir: str) -> Dict[str, Any]:  # fmt: skip
    """py-spy (sampling, non-blocking) on ``edged run`` at full speed for ``duration_s``."""
    import shutil
    import sys

    pyspy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(pyspy):
        return {"error": "py-spy is not installed (pip install py-spy)"}
    directory = tempfile.mkdtemp(dir=workdir)
    config = write_config(os.path.join(directory, "edged.yaml"), broker, threads,
                          os.path.join(directory, "outbox.sqlite3"), realtime=False)  # fmt: skip
    log_path = os.path.join(directory, "edged.log")
    raw = os.path.join(out_dir, "profile_edged_run.txt")
    subscriber = Subscriber(broker, client_id="bench-profile")
    proc = _spawn(config, log_path)
    try:
        _first_result(proc, subscriber, log_path)
        time.sleep(min(2.0, duration_s))  # past start-up
        cmd = [pyspy, "record", "--pid", str(proc.pid), "--duration", str(max(1, int(duration_s))),
               "--rate", "200", "--nonblocking", "--format", "raw", "--output", raw]  # fmt: skip
        # the CPU each thread spent over the same window: py-spy's samples say where a thread
        # is, not whether it had the CPU (a thread woken in Condition.wait and waiting for a
        # core counts as active)
        ticks0, results0 = thread_ticks(proc.pid), subscriber.count()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        text, _ = p.communicate(timeout=duration_s + 60)
        ticks1, results1 = thread_ticks(proc.pid), subscriber.count()
        dump = subprocess.run([pyspy, "dump", "--pid", str(proc.pid), "--nonblocking"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=60).stdout.decode("utf-8", "replace")  # fmt: skip
    finally:
        _stop(proc)
        subscriber.close()
    if p.returncode != 0 or not os.path.exists(raw):
        return {"error": "py-spy failed ({}): {}".format(
            p.returncode, text.decode("utf-8", "replace").strip()[-500:])}  # fmt: skip
    summary = summarise_profile(raw)
    summary["raw"] = os.path.basename(raw)
    summary["duration_s"] = duration_s
    summary["stream"] = STREAM_ID
    summary["results"] = results1 - results0
    summary["cpu_ms_per_result_by_thread"] = cpu_by_thread(
        ticks0, ticks1, dump_thread_names(dump), results1 - results0
    )
    return summary
