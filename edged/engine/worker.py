"""The engine-build child process: ``python -m edged build --worker``.

It reads one :class:`~edged.engine.buildproto.BuildRequest` on stdin, builds (or finds) the
engine with :func:`edged.engine.service.get_or_build`, reports progress as JSON lines on stdout
and exits with a code the parent classifies (:mod:`edged.engine.buildproto`).
"""

import logging
import os
import signal
import threading
from typing import IO, Any, Callable

from ..errors import EdgedError, EngineError
from .buildproto import (
    EXIT_BUILD_FAILED,
    EXIT_CANCELLED,
    EXIT_INPUT,
    EXIT_OK,
    BuildRequest,
    JsonLines,
    outcome_fields,
)
from .errors import EngineCancelled

logger = logging.getLogger(__name__)

#: Child: a progress line at least this often, even while TensorRT is silent.
HEARTBEAT_S = 5.0


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


class _WorkerContext:
    def __init__(self, request: BuildRequest, out: JsonLines, cancel: threading.Event) -> None:
        self.request = request
        self.out = out
        self.cancel = cancel

    def run(self, get_or_build: Callable[..., Any]) -> Any:
        from ..modelfile import load_model_artifact
        from .builder import EngineBuilder
        from .cache import EngineCache
        from .platform import LivePlatform, PlatformInfo
        from .progress import ProgressTracker
        from .tensorrt_api import import_tensorrt

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
