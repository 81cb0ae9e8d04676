"""Engine builds in a child process, so an out-of-memory kill stops the build, not the daemon.

Nano builds get OOM-killed (tao-tensorrt.md 7; jetson-inference#649) and a
TensorRT build blocks in C for minutes. The daemon therefore runs
``python -m edged build --worker`` (issue 6 item 3): the request -- model
path, options, cache directory and the ``.etlt`` key -- goes in as one JSON
document on the child's stdin (never on its command line, where ``ps`` shows
it); the child answers with JSON lines on stdout (``started``, ``waiting``,
``progress``, then ``result`` or ``error``) and logs on stderr. The child
raises its own ``oom_score_adj`` so the kernel picks it over the daemon.

:class:`BuildRunner` is the parent side (here); :func:`~edged.engine.worker.worker_main`
the child side; :mod:`edged.engine.buildproto` what both agree on.
Child exit codes: 0 engine ready (built or found), 2 bad input (model, key,
options), 3 TensorRT could not build, 4 cancelled. Signals: SIGTERM asks the
child to cancel (TensorRT >= 10 stops at the next step; older ones finish
the build and exit), then SIGKILL after a grace period.
"""

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from typing import IO, Any, Callable, Deque, Dict, List, Optional

from ..errors import EngineError
from .buildproto import (  # noqa: F401  (re-exported: callers import the protocol from here)
    BUILT,
    CANCELLED,
    FAILED,
    HIT,
    KILLED,
    TIMEOUT,
    BuildRequest,
    ChildOutcome,
    classify,
    outcome_fields,
    parse_line,
)
from .progress import ProgressEvent
from .worker import worker_main  # noqa: F401  (re-exported for ``edged build --worker``)

logger = logging.getLogger(__name__)

#: Parent: after SIGTERM, wait this long before SIGKILL.
TERM_GRACE_S = 10.0
STDERR_TAIL_LINES = 40


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
        try:
            proc.stdin.write(request.to_json().encode("utf-8") + b"\n")
            proc.stdin.close()
        except BrokenPipeError:
            pass  # the child died at once; its exit code tells why
        final = {}  # type: Dict[str, Any]
        for raw in proc.stdout:
            event = parse_line(raw)
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
        return classify(returncode, final, watch.why, list(stderr_tail), self._clock() - t0)


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
