"""The build child process (``edged build --worker``): one request in, JSON lines out.

The parent side, the protocol and the exit codes are :mod:`edged.engine.runner`'s. The child
raises its own ``oom_score_adj`` so that on a 4 GB Nano the kernel kills the build, not the
daemon, and sends a progress line at least every :data:`HEARTBEAT_S` while TensorRT is silent.
"""

import json
import logging
import os
import signal
import threading
from typing import IO, Any, Callable, Dict

from ..errors import EdgedError, EngineError
from .errors import EngineCancelled
from .runner import EXIT_BUILD_FAILED, EXIT_CANCELLED, EXIT_INPUT, EXIT_OK, BuildRequest

logger = logging.getLogger(__name__)

#: A progress line at least this often, even while TensorRT is silent.
HEARTBEAT_S = 5.0


class JsonLines:
    """Thread-safe JSON-lines writer (the worker's stdout)."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, event: str, **fields: Any) -> None:
        fields["event"] = event
        line = json.dumps(fields, sort_keys=True)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


def prefer_oom_kill(path: str = "/proc/self/oom_score_adj", score: int = 1000) -> None:
    """Make this process the OOM killer's first choice (raising one's own score needs no
    privilege): on a 4 GB Nano the build, not the daemon, is what dies."""
    try:
        with open(path, "w") as f:
            f.write(str(score))
    except OSError as e:
        logger.debug("cannot set %s: %s", path, e)


def worker_main(stdin: IO[str], stdout: IO[str]) -> int:
    """``edged build --worker``: one request on stdin, JSON lines on stdout, exit code."""
    from .service import get_or_build

    out = JsonLines(stdout)
    cancel = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: cancel.set())
    prefer_oom_kill()
    out.send("started", pid=os.getpid())
    try:
        request = BuildRequest.from_json(stdin.read())
        context = _WorkerContext(request, out, cancel)
        outcome = context.run(get_or_build)
    except EngineCancelled as e:
        out.send("error", kind=type(e).__name__, message=str(e))
        return EXIT_CANCELLED
    except EngineError as e:
        out.send("error", kind=type(e).__name__, message=str(e))
        return EXIT_BUILD_FAILED
    except EdgedError as e:
        out.send("error", kind=type(e).__name__, message=str(e))
        return EXIT_INPUT
    except (ValueError, KeyError, TypeError) as e:
        out.send("error", kind="BadRequest", message=f"malformed build request: {e}")
        return EXIT_INPUT
    out.send("result", **outcome_fields(outcome))
    return EXIT_OK


def outcome_fields(outcome: Any) -> Dict[str, Any]:
    manifest = outcome.entry.manifest
    return {
        "result": outcome.result,
        "entry": outcome.entry.path,
        "name": outcome.entry.name,
        "fingerprint": outcome.entry.fingerprint,
        "precision_obtained": manifest.get("precision_obtained"),
        "device_obtained": manifest.get("device_obtained"),
        "engine_bytes": manifest.get("engine_bytes"),
        "build_seconds": round(outcome.seconds, 3),
        "notes": manifest.get("notes", []),
        "waited": outcome.waited,
    }


class _WorkerContext:
    def __init__(self, request: BuildRequest, out: JsonLines, cancel: threading.Event) -> None:
        self.request = request
        self.out = out
        self.cancel = cancel

    def run(self, get_or_build: Callable[..., Any]) -> Any:
        from ..backends.tensorrt_api import import_tensorrt
        from ..modelfile import load_model_artifact
        from .builder import EngineBuilder
        from .cache import EngineCache
        from .platform import LivePlatform, PlatformInfo
        from .progress import ProgressTracker

        req = self.request
        artifact = load_model_artifact(req.model_path, req.key)
        trt = import_tensorrt(req.tensorrt_module)
        tracker = ProgressTracker(lambda e: self.out.send("progress", **e.to_dict()), self.cancel)
        beat = threading.Thread(
            target=self._heartbeat, args=(tracker,), name="engine-heartbeat", daemon=True
        )
        beat.start()
        platform = PlatformInfo(**req.platform) if req.platform else LivePlatform()(trt)
        return get_or_build(
            artifact,
            req.options,
            EngineCache(req.cache_dir, req.cache_max_bytes),
            EngineBuilder(trt),
            platform,
            key=req.key,
            model_name=req.model_name,
            tracker=tracker,
            force=req.force,
            lock_timeout_s=req.lock_timeout_s,
            stop=self.cancel,
            on_wait=lambda path: self.out.send("waiting", lock=path),
        )

    def _heartbeat(self, tracker: Any) -> None:
        while not self.cancel.wait(HEARTBEAT_S):
            tracker.heartbeat()
