"""Benchmark 3 of benchmarks/README.md: sustained results/s to a local Mosquitto, QoS 0 and QoS 1.

edged's :class:`~edged.mqtt.service.MqttService` (durable SQLite outbox on, as deployed)
gets ``messages`` results as fast as its sink accepts them (the sinks thread's work:
publish decision, payload, outbox append); its own threads commit and publish. The rate
is ``messages / (last arrival - first hand-over)`` as seen by an independent subscriber in
its own process (benchmarks/subscriber_proc.py; in this process its paho thread would take
the GIL from edged's), and ``lost`` counts the seqs it never received (must be 0).
"""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List

from .common import REPO, STREAM_ID, BenchError, Broker, median, wait_for, write_config

#: Detections per synthetic result: a typical busy frame of the demo clip.
DETECTIONS_PER_RESULT = 5
#: After the last hand-over, how long to wait for the subscriber to see everything.
DRAIN_TIMEOUT_S = 60.0


def _results(count: int) -> List[Any]:
    from edged.pipeline.results import InferenceResult
    from edged.tasks.detection import Detection

    items = [
        Detection(0, "person", 0.9 - 0.1 * k, (10.0 + 50 * k, 20.0, 60.0 + 50 * k, 180.0))
        for k in range(DETECTIONS_PER_RESULT)
    ]
    now = time.time()
    return [
        InferenceResult(
            stream_id=STREAM_ID,
            seq=i,
            captured_monotonic=float(i),
            captured_wall=now,
            frame_size=(768, 576),
            model="peoplenet",
            task="detection",
            items=items,
            latency_ms={"preprocess": 1.0, "inference": 7.0, "postprocess": 0.5, "total": 9.0},
        )  # fmt: skip
        for i in range(count)
    ]


def _start_subscriber(broker: Broker, qos: int, messages: int) -> subprocess.Popen:
    """The independent subscriber, in its own process (benchmarks/subscriber_proc.py)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.subscriber_proc", "--host", broker.host,
         "--port", str(broker.port), "--client-id", f"bench-sub-qos{qos}",
         "--expect", str(messages), "--timeout", str(DRAIN_TIMEOUT_S + messages / 100.0)],
        cwd=REPO, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    if line != "subscribed":
        proc.kill()
        proc.wait()
        raise BenchError(f"the subscriber process did not subscribe (said {line!r})")
    return proc


def _one_run(broker: Broker, workdir: str, qos: int, messages: int) -> Dict[str, float]:
    import dataclasses

    from edged.config import load_config
    from edged.mqtt.control import DaemonControl
    from edged.mqtt.service import MqttService

    outbox = os.path.join(tempfile.mkdtemp(dir=workdir), "outbox.sqlite3")
    config = load_config(
        write_config(os.path.join(workdir, f"mqtt-qos{qos}.yaml"), broker, 1, outbox)
    )
    mqtt_config = dataclasses.replace(config.mqtt, qos=qos)
    results = _results(messages)
    subscriber = _start_subscriber(broker, qos, messages)
    stop = threading.Event()
    service = MqttService(mqtt_config, "bench", DaemonControl(), stop)
    service.start()
    try:
        wait_for(lambda: service.connected, 10, "edged's MQTT connection")
        start = time.monotonic()
        for result in results:
            service.sink.handle(result)
        handed_over = time.monotonic()
        service.outbox.flush()
        out, _ = subscriber.communicate(timeout=DRAIN_TIMEOUT_S + messages / 100.0 + 30)
    finally:
        stop.set()
        service.stop()
        if subscriber.poll() is None:
            subscriber.kill()
            subscriber.wait()
    seen = json.loads(out.decode().strip().splitlines()[-1])
    last = seen["last_at"] or time.monotonic()
    unique, received = seen["unique"], seen["count"]
    return {
        "rate_per_s": messages / (last - start) if last > start else 0.0,
        "append_rate_per_s": messages / (handed_over - start),
        "sent": float(messages),
        "received": float(received),
        "lost": float(messages - unique),
        "duplicates": float(received - unique),
    }


def run_mqtt(broker: Broker, workdir: str, repeats: int, messages: int) -> Dict[str, Any]:
    out = {"messages": messages, "repeats": repeats, "detections_per_result":
           DETECTIONS_PER_RESULT}  # type: Dict[str, Any]  # fmt: skip
    for qos in (0, 1):
        runs = [_one_run(broker, workdir, qos, messages) for _ in range(repeats)]
        out[f"qos{qos}"] = {
            "runs": runs,
            "median_rate_per_s": median([r["rate_per_s"] for r in runs]),
            "median_append_rate_per_s": median([r["append_rate_per_s"] for r in runs]),
            "lost_total": sum(r["lost"] for r in runs),
            "duplicates_total": sum(r["duplicates"] for r in runs),
        }
    return out
