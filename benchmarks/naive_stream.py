"""One naive loop in a process of its own: the streams benchmark runs N of these for N streams.

``python -m benchmarks.naive_stream --port P --topic T --threads N`` loads the demo detector,
prints ``ready`` and runs :class:`~benchmarks.pipeline.NaiveLoop` (capture -> ORT -> decode ->
paho publish QoS 1) on the demo clip until SIGTERM: what a user who wants N cameras without a
daemon runs, one process per camera.
"""

import argparse
import signal
import sys
import tempfile
import threading
from collections import namedtuple

from .pipeline import NaiveLoop, load_demo_task

Address = namedtuple("Address", "host port")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.naive_stream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with tempfile.TemporaryDirectory(prefix="edged-naive-") as directory:
        task = load_demo_task(directory, args.threads)
    client_id = "bench-" + args.topic.replace("/", "-")
    loop = NaiveLoop(Address(args.host, args.port), args.threads, task, client_id, args.topic)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    i = 0
    try:
        while not stop.is_set():
            loop.step(i)
            i += 1
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
