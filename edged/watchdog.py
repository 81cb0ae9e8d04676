"""Progress-gated systemd watchdog: ``WATCHDOG=1`` only while work really progresses.

A thread that pings unconditionally proves only that the thread is alive; a hung inference or a
wedged capture loop would keep the service "healthy" forever (systemd.service(5), WatchdogSec=:
the ping is how systemd learns that the service still works). Here every long-lived component
registers a *progress probe*, a callable returning the monotonic time of its last progress (the
daemon wraps its workers' progress counters). The ``watchdog`` thread checks every probe each
tick and pings only while each one is fresh; one stale probe withholds the pings, so systemd's
``WatchdogSec=`` expires and ``Restart=`` brings the daemon back (tests/test_daemon_watchdog.py:
a hung inference stops the pings).

What "progress" means is the component's choice, and it must not confuse an
outage with a hang: a capture supervisor beats on every frame AND every
reconnect/backoff step (a camera that is down is handled by reconnecting, not
by restarting the daemon); an inference worker beats when an inference
finishes AND when it wakes up with nothing to do, so only a call that never
returns makes it stale.

Stale and recovered transitions are logged once each, and a ``STATUS=`` line
built by a caller-supplied function is refreshed every tick so that
``systemctl status edged`` says what the daemon is doing.
"""

import json
import logging
import os
import threading
import time
from typing import Callable, Dict, List, Optional

from edged.fsutil import atomic_write
from edged.sdnotify import FieldValue, Notifier

logger = logging.getLogger(__name__)

# How often probes are checked and STATUS refreshed when systemd asks for no
# faster ping; small enough that a recovery shows up quickly in the status.
DEFAULT_TICK_S = 5.0

ProgressProbe = Callable[[], Optional[float]]
StatusBuilder = Callable[[], str]


# Where `edged run` writes the health file when this variable is set (the
# container image sets it; docker/healthcheck.py reads the same variable).
HEALTH_FILE_ENV = "EDGED_HEALTH_FILE"


class HealthFile:
    """The watchdog's verdict as a small JSON file, rewritten every tick.

    For places without systemd's watchdog: a container HEALTHCHECK
    (docker/healthcheck.py) calls the daemon unhealthy when the file says so
    or stops being rewritten (the watchdog thread itself hung or died).
    Written to a temporary name and renamed, so a reader never sees half a
    file. Write errors are logged once per run of failures.
    """

    def __init__(self, path: str, wall_clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._wall_clock = wall_clock
        self._failing = False

    def write(self, healthy: bool, stale: List[str], status: Optional[str]) -> bool:
        report = {
            "healthy": healthy,
            "stale": stale,
            "status": status,
            "written_at": self._wall_clock(),
            "pid": os.getpid(),
        }
        data = (json.dumps(report, sort_keys=True) + "\n").encode()
        try:
            # Rewritten every interval; after a power cut the next write replaces it anyway.
            atomic_write(self.path, data, durable=False)
        except OSError as e:
            if not self._failing:
                self._failing = True
                logger.warning("cannot write health file %s: %s", self.path, e)
            return False
        self._failing = False
        return True


class _Probe:
    """One registered probe and its last verdict (for log-once transitions)."""

    def __init__(
        self, name: str, probe: ProgressProbe, max_stale_s: float, grace_s: float, since: float
    ) -> None:
        self.name = name
        self.probe = probe
        self.max_stale_s = max_stale_s
        self.grace_s = grace_s
        self.registered_at = since
        self.stale = False
        self.stale_since: Optional[float] = None
        self.probe_failed = False


class ProgressWatchdog:
    """Pings systemd's watchdog while every registered probe is fresh.

    ``notifier`` receives ``WATCHDOG=1`` and ``STATUS=``; ``stop_event`` is the
    daemon's one shared stop event; ``ping_interval_s`` is normally
    :func:`edged.sdnotify.watchdog_interval` (half of ``WatchdogSec=``), and
    None means systemd runs no watchdog: probes are still checked, stalls
    still logged and STATUS still sent, but no ping goes out. ``status`` builds
    the STATUS text (e.g. "2 streams streaming, 14.8 fps, 0 stalled").
    ``health_file``, if given, gets the verdict every tick (containers).
    With no probe registered every tick pings: register one probe per
    capture supervisor and per inference worker.

    Start the thread after ``READY=1``: systemd arms the watchdog when the
    service becomes ready, and a ping sent earlier would arm it during a long
    start-up; while an engine builds, use edged.sdnotify.TimeoutExtender, whose
    ``EXTEND_TIMEOUT_USEC`` also postpones the watchdog deadline.
    """

    def __init__(
        self,
        notifier: Notifier,
        stop_event: threading.Event,
        ping_interval_s: Optional[float],
        status: Optional[StatusBuilder] = None,
        tick_s: Optional[float] = None,
        clock: Callable[[], float] = time.monotonic,
        health_file: Optional[HealthFile] = None,
    ) -> None:
        if ping_interval_s is not None and ping_interval_s <= 0:
            raise ValueError(f"ping interval must be positive or None, got {ping_interval_s!r} s")
        self._notifier = notifier
        self._stop = stop_event
        self._ping_interval_s = ping_interval_s
        self._status_builder = status
        if tick_s is None:
            tick_s = DEFAULT_TICK_S
            if ping_interval_s is not None:
                tick_s = min(tick_s, ping_interval_s)
        if tick_s <= 0:
            raise ValueError(f"watchdog tick must be positive, got {tick_s!r} s")
        self._tick_s = tick_s
        self._clock = clock
        self._health_file = health_file
        self._lock = threading.Lock()
        self._probes: Dict[str, _Probe] = {}
        self._last_status: Optional[str] = None
        self._status_failed = False
        self._thread: Optional[threading.Thread] = None
        self.pings_sent = 0
        self.pings_withheld = 0

    @property
    def ping_interval_s(self) -> Optional[float]:
        return self._ping_interval_s

    def register(
        self,
        name: str,
        probe: ProgressProbe,
        max_stale_s: float,
        grace_s: Optional[float] = None,
    ) -> None:
        """Watch ``probe``: stale when its last progress is older than ``max_stale_s``.

        Until the probe first reports progress (returns None), it has
        ``grace_s`` (default ``max_stale_s``) from registration, e.g. for a
        first inference that includes CUDA warm-up. Re-registering a name
        replaces the old probe (a stream restarted by a reload).
        """
        if max_stale_s <= 0:
            raise ValueError(f"max_stale_s for {name} must be positive, got {max_stale_s!r}")
        grace = max_stale_s if grace_s is None else grace_s
        with self._lock:
            self._probes[name] = _Probe(name, probe, max_stale_s, grace, self._clock())

    def unregister(self, name: str) -> None:
        """Stop watching ``name`` (a stream removed by a reload). Unknown names are ignored."""
        with self._lock:
            self._probes.pop(name, None)

    def names(self) -> List[str]:
        with self._lock:
            return sorted(self._probes)

    def stale_probes(self) -> List[str]:
        """Names of the probes that were stale at the last check."""
        with self._lock:
            return sorted(p.name for p in self._probes.values() if p.stale)

    @property
    def healthy(self) -> bool:
        """True when no probe was stale at the last check."""
        return not self.stale_probes()

    def check(self) -> List[str]:
        """Evaluate every probe now; log transitions once; return the stale names."""
        now = self._clock()
        with self._lock:
            probes = list(self._probes.values())
        stale = []
        for entry in probes:
            if self._evaluate(entry, now):
                stale.append(entry.name)
        return sorted(stale)

    def tick(self) -> bool:
        """One round: check probes, ping if all are fresh, refresh STATUS.

        Returns whether ``WATCHDOG=1`` was due (all probes fresh, watchdog on);
        ``pings_sent`` counts the ones the socket accepted.
        """
        stale = self.check()
        fields: Dict[str, FieldValue] = {}
        status_text = self._build_status(stale)
        if status_text is not None and status_text != self._last_status:
            fields["STATUS"] = status_text
        ping = not stale and self._ping_interval_s is not None
        if ping:
            fields["WATCHDOG"] = "1"
        elif stale:
            self.pings_withheld += 1
        if self._health_file is not None:
            self._health_file.write(not stale, stale, status_text)
        if fields:
            delivered = self._notifier.notify(**fields)
            if delivered and "STATUS" in fields:
                self._last_status = status_text
            if delivered and ping:
                self.pings_sent += 1
        return ping

    def start(self) -> None:
        """Start the ``watchdog`` thread; it ends when the stop event is set."""
        if self._thread is not None:
            raise RuntimeError("watchdog thread already started")
        logger.info(
            "watchdog: checking %d probe(s) every %.1f s, %s",
            len(self.names()),
            self._tick_s,
            "pinging systemd while all progress"
            if self._ping_interval_s is not None
            else "systemd watchdog off (no WATCHDOG_USEC)",
        )
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        self._thread.start()

    def join(self, timeout: Optional[float] = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:  # noqa: BLE001 -- top of a long-lived loop: log, keep watching
                logger.exception("watchdog tick failed")
            if self._stop.wait(self._tick_s):
                return

    def _evaluate(self, entry: _Probe, now: float) -> bool:
        last = self._read_probe(entry)
        if last is _PROBE_FAILED:
            age = None
            limit = entry.max_stale_s
            is_stale = True
        elif last is None:
            age = now - entry.registered_at
            limit = entry.grace_s
            is_stale = age > limit
        else:
            age = now - last
            limit = entry.max_stale_s
            is_stale = age > limit
        self._log_transition(entry, is_stale, age, limit, now)
        return is_stale

    def _read_probe(self, entry: _Probe):
        try:
            value = entry.probe()
        except Exception:  # noqa: BLE001 -- a broken probe must not kill the watchdog; it is stale
            if not entry.probe_failed:
                entry.probe_failed = True
                logger.exception("watchdog: probe %s raised; treating it as stale", entry.name)
            return _PROBE_FAILED
        entry.probe_failed = False
        return value

    def _log_transition(
        self, entry: _Probe, is_stale: bool, age: Optional[float], limit: float, now: float
    ) -> None:
        if is_stale and not entry.stale:
            entry.stale = True
            # Measured from the last progress, so the recovery line tells the whole gap.
            entry.stale_since = now if age is None else now - age
            logger.error(
                "watchdog: %s made no progress for %s (limit %.1f s); withholding WATCHDOG=1 "
                "so that systemd restarts edged if it does not recover",
                entry.name,
                "unknown time" if age is None else f"{age:.1f} s",
                limit,
            )
        elif not is_stale and entry.stale:
            gap = now - entry.stale_since if entry.stale_since is not None else 0.0
            entry.stale = False
            entry.stale_since = None
            logger.warning(
                "watchdog: %s progresses again after %.1f s without progress; pinging resumes",
                entry.name,
                gap,
            )

    def _build_status(self, stale: List[str]) -> Optional[str]:
        text = None
        if self._status_builder is not None:
            try:
                text = self._status_builder()
            except Exception:  # noqa: BLE001 -- status is cosmetic; never stop the watchdog for it
                if not self._status_failed:
                    self._status_failed = True
                    logger.exception("watchdog: status builder raised")
            else:
                self._status_failed = False
        if stale:
            prefix = "STALLED: " + ", ".join(stale)
            return prefix if not text else f"{prefix}; {text}"
        return text


# Sentinel for "the probe raised" (distinct from None, "no progress yet").
_PROBE_FAILED = object()
