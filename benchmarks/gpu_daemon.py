"""The daemon's CPU time per frame with ``pipeline.preprocess: cuda`` against ``cpu``, end to end.

    python -m benchmarks.gpu_daemon --out DIR [--seconds S] [--clips demo,1080p] [--modes cpu,cuda]

What runs: edged's own ``run`` command (:func:`edged.cli.main`) in a fresh process per
measurement, on the demo detector (models/peoplenet-demo, 960x544 input) reading one clip in a
loop as fast as inference takes it (``realtime: false``: no frame is dropped), for

* ``demo``: the demo clip (tests/data/vtest/holdout.mp4, 768x576);
* ``1080p``: the same frames scaled to 1920x1080 with OpenCV and written with its VideoWriter
  (``mp4v``) into a temporary folder on the machine that measures.

MQTT is off (no broker on the GPU machine): publishing costs the same for both pre-processors
(its cost is benchmarks 2 and 3, benchmarks/README.md). Metrics are on: the frame count comes
from ``edged_frames_total{outcome="inferred"}`` scraped from the daemon's own endpoint.

Method (CPU time, not wall time):

* ONNX Runtime runs on ONE intra-op thread (``models.<name>.threads: 1``): it then computes on
  the thread that calls ``session.run``, edged's ``infer-<model>`` thread, and starts no pool
  of its own (onnxruntime's SessionOptions.intra_op_num_threads);
* the measured process is ``python -m benchmarks.gpu_daemon child NAMES CONFIG``: edged's CLI
  with one extra thread that writes ``{native thread id: Python thread name}`` to NAMES every
  ``NAMES_INTERVAL_S`` (Linux does not see Python's thread names). Its cost (one
  ``threading.enumerate()`` and a small file every 0.5 s) is counted in the process figure;
* after ``--warmup`` seconds (model load, kernel compile and first frames excluded),
  snapshots ``--seconds`` apart (and ``--windows`` - 1 between them) read the process's CPU
  ticks (``/proc/PID/stat`` utime + stime, every thread, ended ones included; proc(5)), each
  thread's ticks (``/proc/PID/task/TID/stat``) and the inferred-frame counter; the figures
  are over the whole span, and outside inference per window shows how steady it was;
* **process** = process ticks / frames; **inference** = the ``infer-<model>`` thread's ticks /
  frames (``session.run`` plus the batch hand-off around it, a few Python statements);
  **outside inference** = process - inference. Everything else the daemon does per frame
  (decode, pre- and post-processing, sinks, metrics, the GPU's host-side waits) is outside.

Tick resolution is 1/``SC_CLK_TCK`` s (10 ms); a window of several seconds over hundreds of
frames keeps its error under a few per cent. The goal: outside inference with ``cuda`` at most
half of ``cpu`` on each clip. Writes gpu_daemon.md and gpu_daemon.json into --out.
"""

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .common import DEMO_LABELS, DEMO_ONNX, DEMO_VIDEO, REPO, BenchError, cpu_model, wait_for

CLIPS = ("demo", "1080p")
MODES = ("cpu", "cuda")
MODEL = "people"
STREAM = "clip"
INFER_THREAD = "infer-" + MODEL
HD_SIZE = (1920, 1080)
#: How often the measured process writes its thread names.
NAMES_INTERVAL_S = 0.5
#: The measured time is cut into this many windows; their spread is reported.
WINDOWS = 3
#: Start-up (imports, model load, kernel compile) must end within this long.
START_TIMEOUT_S = 120.0
#: outside inference with cuda / with cpu, at most (issue goal: at least halved).
GOAL_RATIO = 0.5
METRICS_LINE = re.compile(r"metrics at http://([0-9.]+):(\d+)/metrics")
INFERRED = re.compile(
    r'^edged_frames_total\{(?=[^}]*stream="' + STREAM + r'")(?=[^}]*outcome="inferred")[^}]*\}'
    r"\s+([0-9.e+]+)",
    re.M,
)


# -- the measured process ------------------------------------------------------------------


def _write_names(path: str, stop: threading.Event) -> None:
    last = None
    while not stop.wait(NAMES_INTERVAL_S):
        names = {str(t.native_id): t.name for t in threading.enumerate()}
        if names != last:
            with open(path + ".tmp", "w") as f:
                json.dump(names, f)
            os.replace(path + ".tmp", path)
            last = names


def child(names_path: str, config: str) -> int:
    """``edged run -c CONFIG`` in this process, with the thread-name writer beside it."""
    from edged.cli import main

    stop = threading.Event()
    threading.Thread(target=_write_names, args=(names_path, stop), name="bench-thread-names",
                     daemon=True).start()  # fmt: skip
    try:
        return main(["run", "-c", config])
    finally:
        stop.set()


# -- reading /proc -------------------------------------------------------------------------


def stat_ticks(text: str) -> int:
    """utime + stime from the text of a /proc stat file (fields 14 and 15, proc(5)); the
    command name (field 2) may hold spaces and parentheses, so fields count from its last ')'."""
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def _read_ticks(path: str) -> Optional[int]:
    try:
        with open(path) as f:
            return stat_ticks(f.read())
    except (OSError, ValueError):
        return None  # a thread that ended between listing and reading


def snapshot(pid: int, names_path: str, frames: float) -> Dict[str, Any]:
    """CPU ticks of process ``pid`` and of each of its threads, by Python thread name."""
    with open(names_path) as f:
        names = json.load(f)
    threads = {}  # type: Dict[str, int]
    for tid in os.listdir(f"/proc/{pid}/task"):
        ticks = _read_ticks(f"/proc/{pid}/task/{tid}/stat")
        if ticks is not None:
            name = names.get(tid, "native")  # threads Python did not start (runtimes, CUDA)
            threads[name] = threads.get(name, 0) + ticks
    process = _read_ticks(f"/proc/{pid}/stat")
    if process is None:
        raise BenchError(f"edged run (pid {pid}) ended during the measurement")
    return {"time": time.monotonic(), "frames": frames, "process": process, "threads": threads}


def figures(a: Dict[str, Any], b: Dict[str, Any], tick_s: float) -> Dict[str, Any]:
    """Per-frame CPU milliseconds between snapshots ``a`` and ``b``."""
    frames = b["frames"] - a["frames"]
    if frames <= 0:
        raise BenchError("no frame inferred during the measurement window")

    def ms(ticks: int) -> float:
        return 1000.0 * ticks * tick_s / frames

    per_thread = {name: ms(t - a["threads"].get(name, 0)) for name, t in b["threads"].items()}
    process = ms(b["process"] - a["process"])
    if INFER_THREAD not in per_thread:
        raise BenchError(f"no thread named {INFER_THREAD} in the measured process")
    inference = per_thread[INFER_THREAD]
    return {
        "frames": frames,
        "seconds": b["time"] - a["time"],
        "fps": frames / (b["time"] - a["time"]),
        "process_ms": process,
        "inference_ms": inference,
        "outside_inference_ms": process - inference,
        "threads_ms": dict(sorted(per_thread.items(), key=lambda kv: -kv[1])),
    }


# -- one measurement -----------------------------------------------------------------------


def write_config(path: str, clip: str, mode: str) -> str:
    with open(path, "w") as f:
        f.write(f"""log_level: info
models:
  {MODEL}: {{path: {DEMO_ONNX}, labels: {DEMO_LABELS}, task: detection, threads: 1}}
streams:
  {STREAM}: {{source: {clip}, model: {MODEL}, loop: true, realtime: false}}
pipeline: {{preprocess: {mode}, summary_interval_s: 0, drain_timeout_s: 2}}
metrics: {{port: 0, telemetry_interval_s: 0}}
""")
    return path


def scrape_inferred(url: str) -> float:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode("utf-8", "replace")
    except OSError as e:  # URLError, refused, reset: the daemon is starting or going away
        raise BenchError(f"cannot read {url}: {e}") from e
    found = INFERRED.search(text)
    return float(found.group(1)) if found else 0.0


def _log_text(path: str) -> str:
    with open(path, errors="replace") as f:
        return f.read()


def measure(
    clip: str, mode: str, workdir: str, warmup_s: float, seconds: float, windows: int = 1
) -> Dict[str, Any]:
    """One fresh daemon on ``clip`` with ``preprocess: mode``; its per-frame figures over
    ``seconds``, and outside inference in each of ``windows`` equal parts (the spread)."""
    tag = f"{os.path.splitext(os.path.basename(clip))[0]}-{mode}"
    config = write_config(os.path.join(workdir, tag + ".yaml"), clip, mode)
    names = os.path.join(workdir, tag + ".names.json")
    log_path = os.path.join(workdir, tag + ".log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.gpu_daemon", "child", names, config],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:

        def alive() -> bool:
            if proc.poll() is not None:
                raise BenchError(f"edged run exited with {proc.returncode} before measuring")
            return True

        def inferred_yet() -> bool:
            try:
                return scrape_inferred(url) > 0
            except BenchError:
                return False  # an exit is what alive() reports on the next poll

        found = wait_for(lambda: alive() and METRICS_LINE.search(_log_text(log_path)),
                         START_TIMEOUT_S, "the metrics endpoint", poll=0.1)  # fmt: skip
        url = "http://{}:{}/metrics".format(*found.groups())
        wait_for(lambda: alive() and inferred_yet(), START_TIMEOUT_S,
                 "a first inferred frame", poll=0.2)  # fmt: skip
        time.sleep(warmup_s)
        wait_for(lambda: os.path.exists(names), 10, "the thread names", poll=0.1)
        snaps = [snapshot(proc.pid, names, scrape_inferred(url))]
        for _ in range(windows):
            time.sleep(seconds / windows)
            snaps.append(snapshot(proc.pid, names, scrape_inferred(url)))
    except BenchError as e:
        raise BenchError(f"{e}; log tail:\n{_log_text(log_path)[-3000:]}") from e
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(10)
    tick_s = 1.0 / os.sysconf("SC_CLK_TCK")
    result = figures(snaps[0], snaps[-1], tick_s)
    result["windows_outside_inference_ms"] = [
        figures(a, b, tick_s)["outside_inference_ms"] for a, b in zip(snaps, snaps[1:])
    ]
    log = _log_text(log_path)
    result.update({
        "mode": mode,
        "exit_code": code,
        "cuda_chosen": "pre-processing on CUDA" in log,
        "cleanup_warning": "could not be cleaned up" in log,
    })  # fmt: skip
    if mode == "cuda" and not result["cuda_chosen"]:
        raise BenchError(f"preprocess: cuda but no 'pre-processing on CUDA' in {log_path}")
    return result


def make_hd_clip(src: str, dst: str, size: Tuple[int, int] = HD_SIZE) -> str:
    """``src``'s frames scaled to ``size`` (OpenCV, bilinear), written as mp4v."""
    import cv2

    cap = cv2.VideoCapture(src)
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    writer = cv2.VideoWriter(dst, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise BenchError(f"OpenCV cannot write {dst} (mp4v)")
    count = 0
    try:
        while True:
            ok, image = cap.read()
            if not ok:
                break
            writer.write(cv2.resize(image, size, interpolation=cv2.INTER_LINEAR))
            count += 1
    finally:
        cap.release()
        writer.release()
    if not count:
        raise BenchError(f"no frame read from {src}")
    return dst


# -- the report ----------------------------------------------------------------------------


def ratios(runs: Dict[str, Dict[str, Dict[str, Any]]]) -> Dict[str, Dict[str, float]]:
    """cuda / cpu per clip, for the process and outside inference."""
    out = {}
    for clip, modes in runs.items():
        cpu, cuda = modes.get("cpu", {}), modes.get("cuda", {})
        if "process_ms" in cpu and "process_ms" in cuda:  # both measured (no "error")
            out[clip] = {
                key: cuda[key] / cpu[key] if cpu[key] > 0 else float("nan")
                for key in ("process_ms", "outside_inference_ms")
            }
    return out


def _spread(run: Dict[str, Any]) -> str:
    values = run.get("windows_outside_inference_ms") or []
    return f"{min(values):.2f}-{max(values):.2f}" if values else "-"


def markdown(report: Dict[str, Any]) -> str:
    machine, settings = report["machine"], report["settings"]
    lines = [
        "# edged run: CPU per frame, preprocess cuda against cpu",
        "",
        f"Run {machine['date_utc']} on {machine['gpu']} with {machine['cpu_model']} "
        f"({machine['cpu_cores']} cores), Python {machine['python']}, commit "
        f"`{machine['commit']}`. Demo detector (960x544), ONNX Runtime on one thread, "
        f"{settings['seconds']:g} s measured after {settings['warmup']:g} s warm-up; "
        "method: benchmarks/gpu_daemon.py.",
        "",
        "| clip | preprocess | frames | fps | process ms/frame | inference ms/frame "
        "| outside inference ms/frame | its windows, min-max | exit |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for clip, modes in report["runs"].items():
        for mode, r in modes.items():
            if "error" in r:
                first = r["error"].splitlines()[0] if r["error"] else "?"
                lines.append(f"| {report['clips'][clip]} | {mode} | FAILED: {first} | | | | | | |")
                continue
            lines.append(
                f"| {report['clips'][clip]} | {mode} | {r['frames']:.0f} | {r['fps']:.1f} "
                f"| {r['process_ms']:.2f} | {r['inference_ms']:.2f} "
                f"| {r['outside_inference_ms']:.2f} | {_spread(r)} | {r['exit_code']} |"
            )
    lines += ["", "| clip | cuda / cpu, process | cuda / cpu, outside inference | goal |",
              "|---|---|---|---|"]  # fmt: skip
    for clip, r in report["ratios"].items():
        met = "met" if r["outside_inference_ms"] <= GOAL_RATIO else "NOT met"
        lines.append(
            f"| {report['clips'][clip]} | {r['process_ms']:.2f} | {r['outside_inference_ms']:.2f} "
            f"| <= {GOAL_RATIO} ({met}) |"
        )
    lines += ["", "CPU by thread, ms/frame, largest first (native: threads Python did not start):",
              ""]  # fmt: skip
    for clip, modes in report["runs"].items():
        for mode, r in modes.items():
            if "error" in r:
                continue
            top = ", ".join(f"{n} {v:.2f}" for n, v in list(r["threads_ms"].items())[:6])
            lines.append(f"- {report['clips'][clip]}, {mode}: {top}")
    return "\n".join(lines) + "\n"


def write_report(report: Dict[str, Any], out: str) -> Tuple[str, str]:
    os.makedirs(out, exist_ok=True)
    md, js = os.path.join(out, "gpu_daemon.md"), os.path.join(out, "gpu_daemon.json")
    with open(md, "w") as f:
        f.write(markdown(report))
    with open(js, "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)
    return md, js


def gpu_name() -> str:
    try:
        out = subprocess.check_output(["nvidia-smi", "--query-gpu=name,driver_version",
                                       "--format=csv,noheader"], stderr=subprocess.DEVNULL,
                                      timeout=30)  # fmt: skip
        return out.decode().strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "no GPU found by nvidia-smi"


def commit() -> str:
    try:
        out = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                      stderr=subprocess.DEVNULL)  # fmt: skip
        return out.decode().strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def run(args: argparse.Namespace) -> Dict[str, Any]:
    # daemon logs, configs and the 1080p clip stay out of --out (a log tail comes with errors)
    workdir = tempfile.mkdtemp(prefix="edged-gpu-daemon-")
    paths = {"demo": DEMO_VIDEO}
    if "1080p" in args.clips:
        paths["1080p"] = make_hd_clip(DEMO_VIDEO, os.path.join(workdir, "holdout_1080p.mp4"))
    clips = {"demo": "768x576 (demo clip)", "1080p": "1920x1080 (demo clip scaled)"}
    runs = {}  # type: Dict[str, Dict[str, Dict[str, Any]]]
    for clip in args.clips:
        runs[clip] = {}
        for mode in args.modes:
            _say(f"gpu_daemon: {clip} {mode} ...")
            try:
                r = measure(paths[clip], mode, workdir, args.warmup, args.seconds, args.windows)
            except BenchError as e:  # the other runs still measure; the report says which failed
                runs[clip][mode] = {"mode": mode, "error": str(e)}
                sys.stderr.write(f"gpu_daemon: {clip} {mode}: {e}\n")
                continue
            runs[clip][mode] = r
            _say(f"  {r['frames']:.0f} frames, process {r['process_ms']:.2f} ms/frame, "
                 f"outside inference {r['outside_inference_ms']:.2f}")  # fmt: skip
    return {
        "machine": {
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "gpu": gpu_name(),
            "cpu_model": cpu_model(),
            "cpu_cores": os.cpu_count(),
            "python": platform.python_version(),
            "commit": commit(),
        },
        "settings": {
            "seconds": args.seconds,
            "warmup": args.warmup,
            "windows": args.windows,
            "ort_threads": 1,
            "goal_ratio": GOAL_RATIO,
        },  # fmt: skip
        "clips": {c: clips[c] for c in args.clips},
        "runs": runs,
        "ratios": ratios(runs),
    }


def _names(kind: str, allowed: Sequence[str]) -> Any:
    def parse(text: str) -> List[str]:
        names = [n for n in text.split(",") if n]
        bad = [n for n in names if n not in allowed]
        if bad or not names:
            raise argparse.ArgumentTypeError(
                "{} must be a comma-separated list of {} (got {!r})".format(
                    kind, ", ".join(allowed), text
                )
            )
        return names

    return parse


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_daemon",
                                     description=__doc__.split("\n")[0])  # fmt: skip
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"),
                        help="folder for gpu_daemon.md and gpu_daemon.json")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per run")
    parser.add_argument("--warmup", type=float, default=4.0,
                        help="seconds after the first inferred frame before measuring")  # fmt: skip
    parser.add_argument("--windows", type=int, default=WINDOWS,
                        help="equal parts of --seconds; their spread is in the table")  # fmt: skip
    parser.add_argument("--clips", type=_names("--clips", CLIPS), default=list(CLIPS))
    parser.add_argument("--modes", type=_names("--modes", MODES), default=list(MODES))
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.warmup < 0 or args.windows < 1:
        parser.error("--seconds must be > 0, --warmup >= 0 and --windows >= 1")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:
        if len(argv) != 3:
            sys.stderr.write("usage: python -m benchmarks.gpu_daemon child NAMES CONFIG\n")
            return 2
        return child(argv[1], argv[2])
    args = parse_args(argv)
    try:
        report = run(args)
    except BenchError as e:
        sys.stderr.write(f"gpu_daemon: {e}\n")
        return 1
    md, _ = write_report(report, args.out)
    with open(md) as f:
        _say(f.read())
    failed = [f"{c} {m}" for c, modes in report["runs"].items() for m, r in modes.items()
              if "error" in r]  # fmt: skip
    if failed:
        sys.stderr.write("gpu_daemon: failed: {}\n".format(", ".join(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
