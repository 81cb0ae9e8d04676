"""Engine builds in a child process, so an out-of-memory kill stops the build, not the daemon.

Nano builds get OOM-killed (dusty-nv/jetson-inference#649) and a
TensorRT build blocks in C for minutes. The daemon therefore runs
``python -m edged build --worker``: the request -- model
path, options, cache directory and the ``.etlt`` key -- goes in as one JSON
document on the child's stdin (never on its command line, where ``ps`` shows
it); the child answers with JSON lines on stdout (``started``, ``waiting``,
``progress``, then ``result`` or ``error``) and logs on stderr. The child
raises its own ``oom_score_adj`` so the kernel picks it over the daemon.

:class:`BuildRunner` is the parent side; :func:`edged.engine.worker.worker_main` the child side.
Child exit codes: 0 engine ready (built or found), 2 bad input (model, key,
options), 3 TensorRT could not build, 4 cancelled. Signals: SIGTERM asks the
child to cancel (TensorRT >= 10 stops at the next step; older ones finish
the build and exit), then SIGKILL after a grace period.
"""

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from typing import IO, Any, Callable, Deque, Dict, List, NamedTuple, Optional

from ..errors import EngineError
from .options import BuildOptions
from .progress import ProgressEvent

logger = logging.getLogger(__name__)

PROTOCOL = 1
EXIT_OK = 0
EXIT_INPUT = 2
EXIT_BUILD_FAILED = 3
EXIT_CANCELLED = 4

#: Parent: after SIGTERM, wait this long before SIGKILL.
TERM_GRACE_S = 10.0
STDERR_TAIL_LINES = 40

# Outcome results (the `result` label of edged_engine_builds_total).
HIT, BUILT, FAILED, CANCELLED, KILLED, TIMEOUT = (
    "hit",
    "built",
    "failed",
    "cancelled",
    "killed",
    "timeout",
)


class BuildRequest(NamedTuple):
    """What the child builds. ``key`` is a secret: it travels only on the child's stdin."""

    model_path: str
    options: BuildOptions
    cache_dir: str
    model_name: str = ""
    key: Optional[str] = None
    cache_max_bytes: int = 0
    tensorrt_module: str = "auto"
    force: bool = False
    lock_timeout_s: Optional[float] = None
    #: the parent's PlatformInfo values, so both sides compute the same fingerprint
    platform: Optional[Dict[str, str]] = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "protocol": PROTOCOL,
                "model_path": self.model_path,
                "model_name": self.model_name,
                "key": self.key,
                "options": self.options.to_dict(),
                "cache_dir": self.cache_dir,
                "cache_max_bytes": self.cache_max_bytes,
                "tensorrt_module": self.tensorrt_module,
                "force": self.force,
                "lock_timeout_s": self.lock_timeout_s,
                "platform": self.platform,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> "BuildRequest":
        data = json.loads(text)
        if data.pop("protocol", None) != PROTOCOL:
            raise EngineError(f"build request: unsupported protocol (expected {PROTOCOL})")
        data["options"] = BuildOptions.from_dict(data["options"])
        return cls(**data)

    def __repr__(self) -> str:  # never show the key
        return f"BuildRequest({self.model_path!r}, {self.options!r}, cache {self.cache_dir!r})"


class ChildOutcome(NamedTuple):
    result: str  # HIT, BUILT, FAILED, CANCELLED, KILLED, TIMEOUT
    message: str
    returncode: Optional[int]
    info: Dict[str, Any]  # the child's result line (entry, fingerprint, precision, ...)
    seconds: float  # wall time of the child
    stderr_tail: List[str]

    @property
    def ok(self) -> bool:
        return self.result in (HIT, BUILT)


# -- parent side ------------------------------------------------------------------------------


class BuildRunner:
    """Runs one build request in a child process and reports its progress.

    Args:
        python: interpreter for the child (this one by default).
        timeout_s: a build running longer is stopped (result ``timeout``).
        term_grace_s: SIGTERM -> SIGKILL delay when stopping.
        env: extra environment for the child.
    """

    def __init__(
        self,
        python: str = sys.executable,
        timeout_s: float = 3600.0,
        term_grace_s: float = TERM_GRACE_S,
        env: Optional[Dict[str, str]] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._python = python
        self._timeout_s = timeout_s
        self._term_grace_s = term_grace_s
        self._env = env or {}
        self._clock = clock

    def command(self) -> List[str]:
        return [self._python, "-m", "edged", "build", "--worker"]

    def _child_env(self) -> Dict[str, str]:
        env = dict(os.environ)
        # A source checkout run from elsewhere: make the child import this same edged. An
        # installed edged is on the interpreter's own path (prepending site-packages to
        # PYTHONPATH would put it before the standard library).
        package_parent = os.path.dirname(
            os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        )
        if package_parent not in {os.path.abspath(p or ".") for p in sys.path}:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (package_parent, env.get("PYTHONPATH", "")) if p
            )
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self._env)
        return env

    def run(
        self,
        request: BuildRequest,
        on_progress: Optional[Callable[[ProgressEvent], None]] = None,
        cancel: Optional[threading.Event] = None,
    ) -> ChildOutcome:
        """Start the child, follow it to the end. Never raises for a failed build.

        Raises:
            EngineError: the child process cannot be started at all.
        """
        t0 = self._clock()
        try:
            proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self._child_env(),
                start_new_session=True,  # a Ctrl-C on the daemon's terminal is the daemon's
                close_fds=True,
            )
        except OSError as e:
            raise EngineError(
                f"cannot start the engine build process {self._python} ({e.strerror or e})"
            ) from e
        stderr_tail = deque(maxlen=STDERR_TAIL_LINES)  # type: Deque[str]
        err_thread = threading.Thread(
            target=_pump_stderr,
            args=(proc.stderr, stderr_tail),
            name="engine-build-stderr",
            daemon=True,
        )
        err_thread.start()
        watch = _Watch(proc, cancel, self._timeout_s, self._term_grace_s, self._clock)
        watch.start()
        assert proc.stdin is not None and proc.stdout is not None  # both are PIPEs
        try:
            proc.stdin.write(request.to_json().encode("utf-8") + b"\n")
            proc.stdin.close()
        except BrokenPipeError:
            pass  # the child died at once; its exit code tells why
        final = {}  # type: Dict[str, Any]
        for raw in proc.stdout:
            event = _parse_line(raw)
            if event is None:
                continue
            kind = event.get("event")
            if kind == "progress" and on_progress is not None:
                on_progress(
                    ProgressEvent(
                        str(event.get("phase", "")),
                        float(event.get("fraction", 0)),
                        str(event.get("detail", "")),
                        float(event.get("elapsed_s", 0)),
                    )
                )
            elif kind == "waiting":
                logger.info(
                    "engine %s: waiting for another build of the same engine", request.model_name
                )
            elif kind in ("result", "error"):
                final = event
        proc.stdout.close()
        returncode = proc.wait()
        watch.stop()
        err_thread.join(timeout=5.0)
        return _classify(returncode, final, watch.why, list(stderr_tail), self._clock() - t0)


class _Watch:
    """Stops the child on cancel or timeout: SIGTERM, then SIGKILL after the grace period."""

    def __init__(
        self,
        proc: Any,
        cancel: Optional[threading.Event],
        timeout_s: float,
        grace_s: float,
        clock: Callable[[], float],
    ) -> None:
        self._proc = proc
        self._cancel = cancel or threading.Event()
        self._deadline = clock() + timeout_s
        self._grace_s = grace_s
        self._clock = clock
        self._done = threading.Event()
        self.why = None  # type: Optional[str]
        self._thread = threading.Thread(target=self._run, name="engine-build-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while not self._done.is_set() and self._proc.poll() is None:
            if self._cancel.is_set():
                self.why = CANCELLED
            elif self._clock() >= self._deadline:
                self.why = TIMEOUT
            if self.why is not None:
                self._stop_child()
                return
            self._done.wait(0.2)

    def _stop_child(self) -> None:
        logger.warning("stopping engine build process %d (%s)", self._proc.pid, self.why)
        _signal(self._proc, signal.SIGTERM)
        end = self._clock() + self._grace_s
        while self._proc.poll() is None and self._clock() < end:
            time.sleep(0.1)
        if self._proc.poll() is None:
            _signal(self._proc, signal.SIGKILL)


def _signal(proc: Any, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass


def _pump_stderr(stream: IO[bytes], tail: Deque[str]) -> None:
    for raw in stream:
        line = raw.decode("utf-8", "replace").rstrip()
        if line:
            tail.append(line)
            logger.debug("build child: %s", line)
    stream.close()


def _parse_line(raw: bytes) -> Optional[Dict[str, Any]]:
    try:
        event = json.loads(raw.decode("utf-8"))
    except ValueError:
        logger.debug("build child printed a non-protocol line: %r", raw[:200])
        return None
    return event if isinstance(event, dict) else None


def _classify(
    returncode: int, final: Dict[str, Any], why: Optional[str], tail: List[str], seconds: float
) -> ChildOutcome:
    if returncode == EXIT_OK and final.get("event") == "result":
        result = HIT if final.get("result") == HIT else BUILT
        return ChildOutcome(result, f"engine {result}", returncode, final, seconds, tail)
    message = str(final.get("message") or "")
    if why is not None:
        result = why
        message = message or ("build cancelled" if why == CANCELLED else "build timed out")
    elif returncode == EXIT_CANCELLED:
        result = CANCELLED
    elif returncode is not None and returncode < 0:
        result = KILLED
        name = _signal_name(-returncode)
        message = "build process killed by {}{}".format(
            name, " (out of memory? see `dmesg`)" if -returncode == signal.SIGKILL else ""
        )
    else:
        result = FAILED
        if not message:
            message = "build process exited with code {}: {}".format(
                returncode, tail[-1] if tail else "no output"
            )
    return ChildOutcome(result, message, returncode, final, seconds, tail)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
