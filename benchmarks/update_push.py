"""Model push benchmark: a 50 MB model pushed with ``edged push`` to a running daemon.

Not part of ``python -m benchmarks`` (the README table): run ``python -m benchmarks.update_push``
(about a minute). A daemon serves the digits classifier on the demo clip at its frame rate
(``realtime``, as a camera), publishing every result over MQTT to a local Mosquitto; after a
steady-state window, ``edged push`` (a child process) sends a signed manifest for a 50 MB ONNX
model (the same classifier with a 50 MB initializer beside it). Figures: results/s published
before and during the transfer (goal: during >= 0.9 x before: the transfer never starves
result publishing), and the time from the push to the new model serving (goal: engine build
time + 10 s; ONNX Runtime builds no engine, so 10 s).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict

from .common import DEMO_VIDEO, REPO, BenchError, Broker, wait_for

MODEL_MB = 50
BEFORE_S = 10.0
DIGITS = os.path.join(REPO, "models", "resnet18-digits")


def big_model(path: str, megabytes: int) -> None:
    """The digits classifier with an extra initializer of ``megabytes`` MB (random, so that it
    does not compress on the way)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(os.path.join(DIGITS, "resnet18.onnx"))
    padding = np.random.default_rng(0).random(megabytes * (1 << 20) // 4, dtype=np.float32)
    model.graph.initializer.append(numpy_helper.from_array(padding, "padding"))
    onnx.save(model, path)


def published(daemon: Any) -> int:
    return int(daemon.mqtt.stats()["published_total"])


def run(directory: str) -> Dict[str, Any]:
    from edged.daemon import Daemon
    from edged.signing import canonical, keys

    with Broker(os.path.join(directory, "broker")) as broker:
        ops = os.path.join(directory, "operator")
        os.makedirs(ops)
        pair = keys.generate()
        keys.write_private(os.path.join(ops, "op.key"), pair)
        keylist = keys.sign_keylist(keys.make_keylist([pair.public], 1, 1), [pair])
        with open(os.path.join(directory, "keys.json"), "wb") as f:
            f.write(canonical.encode(keylist))
        big_model(os.path.join(ops, "digits-big.onnx"), MODEL_MB)
        shutil.copy(os.path.join(DIGITS, "labels.txt"), ops)  # edged push finds files here
        subprocess.run(
            [sys.executable, "-m", "edged", "sign", "--model", "digits", "--version", "2",
             "--file", "model=digits-big.onnx", "--file", "labels=labels.txt",
             "--device", "bench", "--key", "op.key", "-o", "v2.json"],
            cwd=ops, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        config = os.path.join(directory, "edged.yaml")
        with open(config, "w") as f:
            f.write("\n".join([
                "device_id: bench",
                "models:",
                f"  digits: {{path: {DIGITS}/resnet18.onnx, labels: {DIGITS}/labels.txt}}",
                "streams:",
                f"  cam: {{source: {DEMO_VIDEO}, model: digits}}",
                "pipeline: {summary_interval_s: 0}",
                "metrics: {enabled: false}",
                f"mqtt: {{host: 127.0.0.1, port: {broker.port}, outbox: "
                f"{{path: {directory}/outbox.sqlite3}}}}",
                f"update: {{enabled: true, keys_file: {directory}/keys.json, "
                f"state_dir: {directory}/state, probation_s: 2}}",
            ]) + "\n")  # fmt: skip
        daemon = Daemon(config)
        daemon.start()
        try:
            wait_for(lambda: published(daemon) > 0, 60, "the first published result")
            time.sleep(2.0)  # past start-up
            n0, t0 = published(daemon), time.monotonic()
            time.sleep(BEFORE_S)
            before = (published(daemon) - n0) / (time.monotonic() - t0)
            updater = daemon.updates.updater
            push = subprocess.Popen(
                [sys.executable, "-m", "edged", "push", os.path.join(ops, "v2.json"),
                 "--port", str(broker.port), "--timeout", "300"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
            )  # fmt: skip
            start = time.monotonic()
            wait_for(lambda: updater.journal.state == "RECEIVING" or push.poll() is not None, 60,
                     "the transfer")  # fmt: skip
            if push.poll() is not None:
                raise BenchError(f"edged push exited: {push.communicate()[1].strip()}")
            n1, t1 = published(daemon), time.monotonic()
            wait_for(lambda: updater.journal.state != "RECEIVING", 300, "the last chunk")
            during = (published(daemon) - n1) / (time.monotonic() - t1)
            transfer_s = time.monotonic() - t1
            wait_for(lambda: updater.journal.state in ("PROBATION", "COMMITTED", "ROLLED_BACK"),
                     300, "the switch")  # fmt: skip
            serving_s = time.monotonic() - start
            out, err = push.communicate(timeout=300)
            state = updater.journal.state
        finally:
            daemon.shutdown()
    return {
        "model_mb": MODEL_MB,
        "results_per_s_before": round(before, 1),
        "results_per_s_during_transfer": round(during, 1),
        "during / before": round(during / before, 3) if before else None,
        "transfer_s": round(transfer_s, 1),
        "push_to_serving_s": round(serving_s, 1),
        "end_state": state,
        "push_exit": push.returncode,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edged-bench-push-") as directory:
        figures = run(directory)
    ok = (figures["during / before"] or 0) >= 0.9 and figures["push_to_serving_s"] <= 10
    sys.stdout.write(json.dumps(figures, indent=2) + "\n")
    sys.stdout.write(f"goal (during >= 0.9 x before, serving within 10 s): "
                     f"{'met' if ok else 'missed'}\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
