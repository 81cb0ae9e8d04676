#!/usr/bin/env python3
"""Measure engine build times and sizes with the installed TensorRT.

Builds each model ``--repeat`` times into a fresh temporary cache (``--force``
after the first) through edged's own builder, and prints one line per model:
median and range of the build seconds, engine bytes, precision obtained and
the builder's notes. Uses whatever ``edged.backends.tensorrt_api.import_tensorrt``
finds (TensorRT-RTX in CI, the full TensorRT on a Jetson).

    python tools/engine_build_times.py models/resnet18-digits/resnet18.onnx \
        models/peoplenet-demo/peoplenet_demo.onnx --repeat 5
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from edged.backends.tensorrt_api import import_tensorrt, module_name, version_of  # noqa: E402
from edged.engine.builder import EngineBuilder  # noqa: E402
from edged.engine.cache import EngineCache  # noqa: E402
from edged.engine.options import BuildOptions  # noqa: E402
from edged.engine.platform import LivePlatform  # noqa: E402
from edged.engine.service import get_or_build  # noqa: E402
from edged.modelfile import load_model_artifact  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--precision", default="fp16", choices=("fp32", "fp16", "int8"))
    p.add_argument("--key", default=None, help=".etlt key")
    args = p.parse_args()
    trt = import_tensorrt()
    platform = LivePlatform()(trt)
    gpu = f"GPU {platform.gpu_name} (sm {platform.compute_capability})"
    print(f"{module_name(trt)} {version_of(trt)}; {gpu}; {os.cpu_count()} CPUs")
    for path in args.models:
        artifact = load_model_artifact(path, args.key)
        times, manifest = [], {}
        with tempfile.TemporaryDirectory() as cache_dir:
            cache = EngineCache(cache_dir)
            for i in range(args.repeat):
                t0 = time.monotonic()
                outcome = get_or_build(
                    artifact,
                    BuildOptions(precision=args.precision),
                    cache,
                    EngineBuilder(trt),
                    platform,
                    force=i > 0,
                )
                times.append(time.monotonic() - t0)
                manifest = outcome.entry.manifest
        print(
            json.dumps(
                {
                    "model": path,
                    "model_bytes": len(artifact.data),
                    "build_seconds_median": round(statistics.median(times), 3),
                    "build_seconds_min": round(min(times), 3),
                    "build_seconds_max": round(max(times), 3),
                    "engine_bytes": manifest["engine_bytes"],
                    "precision": "{} -> {}".format(
                        manifest["precision_requested"], manifest["precision_obtained"]
                    ),
                    "notes": manifest["notes"],
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
