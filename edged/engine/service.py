"""Get an engine from the cache or build it, in this process, once per fingerprint.

This is what ``edged build`` and the build child process run (the daemon
never builds in its own process: edged.engine.runner). Under the
fingerprint's lock: remove leftovers of interrupted builds, look the entry up
(an invalid one is quarantined), else build, publish crash-safely and save
the timing cache; after the lock, evict least recently used entries beyond
the size cap. Two processes asking for the same engine therefore build it
once: the second waits on the lock and then finds the first one's entry.
"""

import logging
import os
import re
import socket
import threading
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional

from .. import __version__
from ..errors import EngineError
from ..tasks.registry import calibration_contract
from .builder import BuildResult, CalibrationInput, EngineBuilder
from .cache import CacheEntry, EngineCache
from .calibration import ImageBatches, image_paths, pycuda_uploader
from .entryfiles import MANIFEST_VERSION
from .fingerprint import entry_name, fingerprint_inputs, fingerprint_of
from .options import BuildOptions
from .platform import PlatformInfo
from .progress import ProgressTracker

logger = logging.getLogger(__name__)

HIT = "hit"
BUILT = "built"


class Target(NamedTuple):
    """One engine to get: its inputs document, fingerprint and entry name."""

    inputs: Dict[str, Any]
    fingerprint: str
    name: str


class Outcome(NamedTuple):
    result: str  # HIT or BUILT
    entry: CacheEntry
    waited: bool  # another process held the lock first
    seconds: float  # build seconds (0 for a hit)
    build: Optional[BuildResult]


def target_for(
    artifact: Any,
    options: BuildOptions,
    platform: PlatformInfo,
    key: Optional[str] = None,
) -> Target:
    """Compute the cache key of ``artifact`` built with ``options`` on ``platform``."""
    inputs = fingerprint_inputs(artifact.sha256, artifact.format, options, platform, key)
    fingerprint = fingerprint_of(inputs)
    return Target(inputs, fingerprint, entry_name(inputs, fingerprint))


def timing_cache_key(platform: PlatformInfo) -> str:
    """TensorRT version + GPU: a timing cache is only valid for both (TensorRT developer guide,
    "Timing Cache"); a file name, so unsafe characters become ``_``."""
    raw = "-".join(
        (
            platform.tensorrt_module,
            platform.tensorrt_version,
            platform.gpu_name,
            "sm" + platform.compute_capability,
        )
    )
    return re.sub(r"[^A-Za-z0-9._-]+", "_", raw)[:120]


def get_or_build(
    artifact: Any,
    options: BuildOptions,
    cache: EngineCache,
    builder: EngineBuilder,
    platform: PlatformInfo,
    key: Optional[str] = None,
    model_name: str = "",
    tracker: Optional[ProgressTracker] = None,
    force: bool = False,
    lock_timeout_s: Optional[float] = None,
    stop: Optional[threading.Event] = None,
    on_wait: Optional[Callable[[str], None]] = None,
    clock: Callable[[], float] = time.monotonic,
) -> Outcome:
    """Return the cached engine for ``artifact`` or build and cache it.

    Raises:
        EngineBuildError: TensorRT refused (nothing is published).
        LockTimeout: another process held the build lock longer than ``lock_timeout_s``.
        EngineError: the cache cannot be written.
    """
    tracker = tracker or ProgressTracker()
    tracker.phase("prepare")
    target = target_for(artifact, options, platform, key)
    waited = []

    def note_wait(path: str) -> None:
        waited.append(path)
        if on_wait is not None:
            on_wait(path)

    with cache.lock(target.fingerprint, lock_timeout_s, note_wait, stop):
        cache.clean_tmp(target.fingerprint)
        if force:
            cache.quarantine(target.name, "rebuild forced (edged build --force)")
        else:
            entry = cache.lookup(target.name, target.fingerprint, target.inputs)
            if entry is not None:
                logger.info("engine cache hit for %s: %s", model_name or artifact.path, entry.path)
                tracker.phase("done")
                return Outcome(HIT, entry, bool(waited), 0.0, None)
        timing_key = timing_cache_key(platform)
        timing = cache.read_blob("timing", timing_key) if options.timing_cache else None
        calibration = prepare_calibration(options, cache, target.inputs, artifact.path)
        result = builder.build(artifact, options, tracker, timing, calibration, clock=clock)
        manifest = make_manifest(target, artifact, options, result, model_name)
        entry = cache.publish(target.name, target.fingerprint, result.engine, manifest)
        if result.timing_cache:
            cache.write_blob("timing", timing_key, result.timing_cache)
    cache.evict(protect=[entry.name])
    tracker.phase("done")
    return Outcome(BUILT, entry, bool(waited), result.seconds, result)


def prepare_calibration(
    options: BuildOptions, cache: EngineCache, inputs: Dict[str, Any], model_path: str = ""
) -> CalibrationInput:
    """The calibration data for an INT8 request, if any.

    A given cache file is used as is; images are calibrated once and the
    cache TensorRT writes is kept under their hash, so the next build replays it.
    Images are pre-processed in the input contract of the task the registry recognises
    in the parsed network (``task: auto`` included), as inference will.
    """
    calib = inputs["build"].get("calibration") or {}
    kind = calib.get("kind")
    if kind == "cache":
        assert options.calibration_cache is not None  # kind "cache" is set from it
        with open(options.calibration_cache, "rb") as f:
            return CalibrationInput(cache=f.read())
    if kind == "images":
        stored = cache.read_blob("calibration", calib["sha256"])
        if stored is not None:
            return CalibrationInput(cache=stored)
        assert options.calibration_images is not None  # kind "images" is set from it
        paths = image_paths(options.calibration_images, options.calibration_max_images)
        if len(paths) < options.calibration_batch_size:
            raise EngineError(
                f"{options.calibration_images}: {len(paths)} calibration images, fewer than "
                f"one batch of {options.calibration_batch_size}"
            )

        def batches(io: List[Dict[str, Any]]) -> ImageBatches:
            request = options.calibration_preprocess
            contract = calibration_contract(request, io, model_path)
            logger.info("INT8 calibration pre-processing: %s", contract)
            return ImageBatches(paths, contract, options.calibration_batch_size)

        def write(data: bytes) -> None:
            cache.write_blob("calibration", calib["sha256"], data)

        return CalibrationInput(batches=batches, upload=_LazyUpload(), write_cache=write)
    return CalibrationInput()


class _LazyUpload:
    """pycuda is imported only when TensorRT actually asks for a calibration batch."""

    def __init__(self) -> None:
        self._upload = None  # type: Any

    def __call__(self, batch: Any) -> int:
        if self._upload is None:
            self._upload = pycuda_uploader()
        return int(self._upload(batch))


def make_manifest(
    target: Target,
    artifact: Any,
    options: BuildOptions,
    result: BuildResult,
    model_name: str,
) -> Dict[str, Any]:
    """Everything ``manifest.json`` records (README, "TensorRT engines")."""
    import hashlib

    now = time.time()
    return {
        "manifest_version": MANIFEST_VERSION,
        "fingerprint": target.fingerprint,
        "inputs": target.inputs,
        "model_name": model_name or artifact.name,
        "model_path": os.path.abspath(artifact.path),
        "precision_requested": options.precision,
        "precision_obtained": result.precision_obtained,
        "device_obtained": result.device_obtained,
        "builder_flags": list(result.builder_flags),
        "notes": list(result.notes),
        "io": result.io,
        "tensorrt_features": list(result.features),
        "engine_file": "model.engine",
        "engine_bytes": len(result.engine),
        "engine_sha256": hashlib.sha256(result.engine).hexdigest(),
        "build_seconds": round(result.seconds, 3),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "built_at_epoch": round(now, 3),
        "built_by": f"edged {__version__}",
        "built_on": socket.gethostname(),
        "pid": os.getpid(),
    }
