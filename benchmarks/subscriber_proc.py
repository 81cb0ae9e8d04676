"""An independent subscriber in its own process: counts result messages, prints one JSON line.

``python -m benchmarks.subscriber_proc --port P --expect N --timeout S`` prints ``subscribed``
once its subscription is acknowledged, then, when ``N`` distinct seqs arrived (or after
``S`` seconds), a JSON line with ``count``, ``unique``, ``first_at`` and ``last_at``
(``time.monotonic()``, which is system-wide on Linux, so the benchmark compares it with its
own clock). Its own process, so that its paho thread does not compete with edged's threads
for the benchmark process's GIL.
"""

import argparse
import json
import sys
import time
from collections import namedtuple

from .common import RESULTS_TOPIC, Subscriber

Address = namedtuple("Address", "host port")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--topic", default=RESULTS_TOPIC)
    parser.add_argument("--client-id", default="bench-sub-proc")
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--timeout", type=float, required=True)
    args = parser.parse_args()
    subscriber = Subscriber(Address(args.host, args.port), args.topic, args.client_id)
    sys.stdout.write("subscribed\n")
    sys.stdout.flush()
    deadline = time.monotonic() + args.timeout
    while subscriber.unique() < args.expect and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.2)  # late duplicates are counted too
    subscriber.close()
    report = {
        "count": subscriber.count(),
        "unique": subscriber.unique(),
        "first_at": subscriber.first_at,
        "last_at": subscriber.last_at,
    }
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
