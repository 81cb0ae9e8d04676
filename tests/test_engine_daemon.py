"""The daemon with `backend: tensorrt`: the first start builds the engine for real (TensorRT-RTX),
a second start hits the cache, and the metrics count both.

Executing a TensorRT engine is impossible here (TensorRT-RTX cannot deserialize without a
supported GPU), so the engine manager's backend factory is ``OrtStandInForTensorRT``: it checks
the cached engine is the one built for this model, then runs the same model on ONNX Runtime.
Everything else -- the build in a child process, the fingerprint, the cache, the metrics -- is real.
"""

import platform
import sys
import time
import urllib.request

import pytest

if sys.version_info < (3, 10) or platform.machine() != "x86_64":
    pytest.skip(
        "not applicable on Python {}.{} {}: TensorRT-RTX wheels need Python >= 3.10 on x86_64 "
        "(the 3.11 run builds real engines)".format(*sys.version_info[:2], platform.machine()),
        allow_module_level=True,
    )

import tensorrt_rtx_bindings  # noqa: E402,F401 - required on >= 3.10: a missing module fails

from edged.backends.onnxruntime_backend import OnnxRuntimeBackend  # noqa: E402
from edged.config import load_config  # noqa: E402
from edged.daemon import Daemon  # noqa: E402
from edged.engine import EngineManager  # noqa: E402
from edged.modelfile import load_model_artifact  # noqa: E402

from .test_daemon import DIGITS, make_clip  # noqa: E402

MODEL = DIGITS + "/resnet18.onnx"


class OrtStandInForTensorRT(OnnxRuntimeBackend):
    """Stands in for TensorRT execution, which this machine cannot do (named as such)."""

    name = "tensorrt"

    def __init__(self, entry):
        artifact = load_model_artifact(MODEL)
        built_for = entry.manifest["inputs"]["model"]["sha256"]
        assert built_for == artifact.sha256  # the cached engine is the one built for this model
        super().__init__(artifact)


def write_config(tmp_path, clip):
    path = tmp_path / "edged.yaml"
    path.write_text(
        "models:\n"
        f"  digits: {{path: {MODEL}, labels: {DIGITS}/labels.txt, backend: tensorrt}}\n"
        f"streams:\n  cam: {{source: {clip}, model: digits}}\n"
        "pipeline: {summary_interval_s: 0}\n"
        "metrics: {port: 0, telemetry_interval_s: 0}\n"
        f"engine: {{cache_dir: {tmp_path / 'engines'}}}\n"
    )
    return str(path)


def scrape(daemon):
    with urllib.request.urlopen(daemon.metrics.server.url, timeout=10) as reply:
        return reply.read().decode()


def series(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the scrape")


def run_once(config):
    config_obj = load_config(config)
    engines = EngineManager(config_obj.engine, backend_factory=OrtStandInForTensorRT)
    daemon = Daemon(config, engines=engines)
    daemon.start()
    try:
        deadline = time.monotonic() + 30
        while not daemon.snapshot().streams["cam"].inferred and time.monotonic() < deadline:
            time.sleep(0.05)
        assert daemon.snapshot().streams["cam"].inferred, "no inference ran"
        return scrape(daemon)
    finally:
        daemon.shutdown()


def test_first_start_builds_second_start_hits_the_cache_and_metrics_count_it(tmp_path):
    config = write_config(tmp_path, make_clip(str(tmp_path / "clip.avi")))
    first = run_once(config)
    assert series(first, "edged_engine_cache_misses_total") == 1
    assert series(first, 'edged_engine_builds_total{result="built"}') == 1
    assert series(first, "edged_engine_cache_hits_total") == 0
    second = run_once(config)
    assert series(second, "edged_engine_cache_hits_total") == 1
    assert series(second, "edged_engine_cache_misses_total") == 0
    assert series(second, 'edged_engine_builds_total{result="built"}') == 0
