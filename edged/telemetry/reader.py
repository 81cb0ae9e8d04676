"""Runs ``tegrastats`` in the background and keeps its newest parsed line.

Feature-detected: on a machine without the ``tegrastats`` binary (anything that
is not a Jetson) :meth:`TegrastatsReader.start` logs one INFO line and does
nothing else. On a Jetson the ``telemetry`` thread reads one line per interval
from ``tegrastats --interval MS``; if the program exits it is started again
after a jittered, capped backoff (logged once, then at DEBUG). A snapshot older
than a few intervals is reported as None, so a stuck reader shows as missing
metrics rather than frozen ones.
"""

import logging
import os
import shutil
import subprocess
import threading
import time
from typing import Any, Callable, List, Optional

from ..sources.backoff import Backoff
from .tegrastats import JetsonStats, parse_line

logger = logging.getLogger(__name__)

#: Where JetPack installs it, for PATHs (systemd's, sudo's) that lack /usr/bin.
DEFAULT_PATHS = ("/usr/bin/tegrastats",)
#: A snapshot older than this many intervals is stale (tegrastats stopped printing).
STALE_INTERVALS = 3.0
#: Restart delays after tegrastats exits: 5 s doubling to 5 min.
RESTART_INITIAL_S = 5.0
RESTART_MAX_S = 300.0
#: How long stop() waits for tegrastats and the thread.
STOP_TIMEOUT_S = 5.0


def find_tegrastats() -> Optional[str]:
    """The tegrastats executable, or None on machines that are not Jetsons."""
    found = shutil.which("tegrastats")
    if found:
        return found
    for path in DEFAULT_PATHS:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


class TegrastatsReader:
    """Owns one ``tegrastats`` process and the ``telemetry`` thread that reads it.

    ``locate``, ``popen``, ``clock`` and the restart delays are injectable so the
    not-a-Jetson path and restarts are tested without a Jetson.
    """

    def __init__(
        self,
        stop: threading.Event,
        interval_s: float = 1.0,
        locate: Callable[[], Optional[str]] = find_tegrastats,
        popen: Callable[..., Any] = subprocess.Popen,
        clock: Callable[[], float] = time.monotonic,
        restart_initial_s: float = RESTART_INITIAL_S,
        restart_max_s: float = RESTART_MAX_S,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        self.interval_s = interval_s
        self._stop = stop  # the daemon's shared stop event
        self._local_stop = threading.Event()
        self._locate = locate
        self._popen = popen
        self._clock = clock
        self._backoff = Backoff(restart_initial_s, restart_max_s)
        self._lock = threading.Lock()
        self._latest = None  # type: Optional[JetsonStats]
        self._latest_at = 0.0
        self._proc = None  # type: Optional[Any]
        self._thread = None  # type: Optional[threading.Thread]
        self.binary = None  # type: Optional[str]
        self.lines = 0  # parsed lines
        self.unparsed = 0  # lines that held nothing recognisable
        self.restarts = 0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def command(self) -> List[str]:
        assert self.binary is not None
        return [self.binary, "--interval", str(max(1, int(round(self.interval_s * 1000))))]

    def start(self) -> bool:
        """Start reading; False (one INFO line, nothing started) when there is no tegrastats."""
        self.binary = self._locate()
        if self.binary is None:
            logger.info("no tegrastats: Jetson telemetry off")
            return False
        self._thread = threading.Thread(target=self._run, name="telemetry", daemon=True)
        self._thread.start()
        logger.info("Jetson telemetry: %s every %.1f s", self.binary, self.interval_s)
        return True

    def _stopping(self) -> bool:
        return self._stop.is_set() or self._local_stop.is_set()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """End tegrastats and the thread (also safe when never started)."""
        self._local_stop.set()
        self._terminate()
        if self._thread is not None:
            self._thread.join(timeout)

    def _terminate(self) -> None:
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()  # its stdout closes, which ends the read loop

    def latest(self) -> Optional[JetsonStats]:
        """The newest snapshot, or None before the first line or when it is stale."""
        with self._lock:
            if self._latest is None:
                return None
            if self._clock() - self._latest_at > STALE_INTERVALS * self.interval_s:
                return None
            return self._latest

    def feed(self, line: str) -> Optional[JetsonStats]:
        """Parse one line of output and keep it when it held anything (the thread's step)."""
        stats = parse_line(line)
        if stats.empty:
            self.unparsed += 1
            return None
        with self._lock:
            self._latest = stats
            self._latest_at = self._clock()
        self.lines += 1
        return stats

    def _run(self) -> None:
        while not self._stopping():
            started = self._clock()
            reason = self._read_once()
            if self._stopping():
                break
            if self._clock() - started > self._backoff.max_s:
                self._backoff.reset()  # it ran fine for a while: start again quickly
            delay = self._backoff.next_delay()
            self.restarts += 1
            level = logging.WARNING if self.restarts == 1 else logging.DEBUG
            logger.log(level, "tegrastats %s; restarting in %.0f s", reason, delay)
            self._local_stop.wait(delay)

    def _read_once(self) -> str:
        """Run tegrastats until it exits; returns why it ended, for the log."""
        try:
            proc = self._popen(
                self.command(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                universal_newlines=True,
                start_new_session=True,  # a terminal's Ctrl-C goes to edged, which stops it
            )
        except OSError as e:
            return f"could not start ({e.strerror or e})"
        with self._lock:
            self._proc = proc
        last_other = ""
        try:
            if self._stopping():
                proc.terminate()
            for line in proc.stdout:
                if self.feed(line) is None and line.strip():
                    last_other = line.strip()[:200]
        finally:
            proc.stdout.close()
            try:
                code = proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            with self._lock:
                self._proc = None
        return "exited with code {}{}".format(code, ": " + last_other if last_other else "")
