"""Where the memory of many streams goes: RSS of one ``edged run`` by stream count and batch.

``python -m benchmarks.streams_memory --runs 1x1,4x1,4x4`` starts ``edged run`` on the demo
clip (N streams into one detector, ``max_batch`` M, the dynamic-batch copy of the demo ONNX
that benchmarks/streams.py uses, no MQTT), lets it run ``--settle`` seconds at full speed and
prints its RSS (``/proc/<pid>/smaps_rollup``), its anonymous memory and its threads by name
(FFmpeg's decoder threads are ``av:<codec>:df<i>``). Extra environment variables for the
daemon (``--env OPENCV_FFMPEG_THREADS=1``) show what a library setting changes.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Tuple

from .common import REPO, write_config
from .streams import dynamic_batch_model


def smaps_rollup_mb(pid: int) -> Dict[str, float]:
    out = {}  # type: Dict[str, float]
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[-1] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1]) / 1024.0
    return out


def thread_names(pid: int) -> Dict[str, int]:
    names = {}  # type: Dict[str, int]
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            name = f.read().strip()
        names[name] = names.get(name, 0) + 1
    return names


def measure(workdir: str, model: str, streams: int, max_batch: int, settle_s: float,
            env: Dict[str, str]) -> Tuple[float, float, float, Dict[str, int]]:  # fmt: skip
    """(RSS, peak RSS, anonymous MB, threads by name) of ``edged run`` after ``settle_s``."""
    directory = tempfile.mkdtemp(dir=workdir)
    config = write_config(os.path.join(directory, "edged.yaml"), None, os.cpu_count() or 1,
                          os.path.join(directory, "outbox.sqlite3"), model="onnx",
                          streams=streams, max_batch=max_batch, onnx_path=model)  # fmt: skip
    with open(os.path.join(directory, "edged.log"), "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "edged", "run", "-c", config], cwd=REPO,
                                stdout=log, stderr=subprocess.STDOUT,
                                env=dict(os.environ, **env))  # fmt: skip
    try:
        peak = 0.0
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if proc.poll() is not None:
                raise SystemExit(f"edged run exited with {proc.returncode}: see {directory}")
            peak = max(peak, smaps_rollup_mb(proc.pid)["Rss"])
        figures = smaps_rollup_mb(proc.pid)
        return (
            figures["Rss"],
            max(peak, figures["Rss"]),
            figures["Anonymous"],
            thread_names(proc.pid),
        )
    finally:
        proc.terminate()
        proc.wait(20)


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="1x1,4x1,4x4", help="STREAMSxMAX_BATCH, comma-separated")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds before measuring")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    env = dict(e.split("=", 1) for e in args.env)
    workdir = tempfile.mkdtemp(prefix="edged-streams-memory-")
    model = dynamic_batch_model(workdir)
    base = None
    out = sys.stdout
    out.write("streams x max_batch | RSS MB (peak) | anonymous MB | per added stream MB ")
    out.write("| threads\n")
    for run in args.runs.split(","):
        streams, max_batch = (int(v) for v in run.split("x"))
        rss, peak, anon, threads = measure(workdir, model, streams, max_batch, args.settle, env)
        if streams == 1 and max_batch == 1:
            base = rss
        added = f"{(rss - base) / (streams - 1):.1f}" if base and streams > 1 else ""
        out.write(f"{streams} x {max_batch} | {rss:.0f} ({peak:.0f}) | {anon:.0f} | {added} | ")
        out.write(f"{threads}\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
