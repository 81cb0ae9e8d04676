"""The systemd notify protocol (sd_notify(3)) without a library.

edged runs as a ``Type=notify`` unit (systemd/edged.service): it says ``READY=1``
once models are loaded and streams started, writes ``STATUS=`` lines a person
reads in ``systemctl status``, pings ``WATCHDOG=1`` while work progresses
(edged/watchdog.py decides when) and sends ``EXTEND_TIMEOUT_USEC=`` while a long
engine build runs (sd_notify(3)). The protocol is one datagram of
``KEY=value`` lines to the ``AF_UNIX`` socket named by ``$NOTIFY_SOCKET``, so
no python-systemd binding is needed (there is none for JetPack's Python 3.6
without building it). Outside systemd the variable is unset and every call is
a silent no-op; a failing socket is logged once and never stops the daemon.
"""

import logging
import os
import re
import socket
import threading
import time
from typing import Callable, Dict, Mapping, Optional, Union

logger = logging.getLogger(__name__)

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"

# Field names are upper-case words (sd_notify(3): READY, STATUS, WATCHDOG, ...).
_FIELD_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")

FieldValue = Union[str, int, float]


def format_message(fields: Mapping[str, FieldValue]) -> bytes:
    """Encode notify fields as newline-separated ``KEY=value`` lines.

    Values are single lines: a newline inside a value would start a new
    assignment, so newlines become spaces (a STATUS text is never split).
    """
    lines = []
    for name, value in fields.items():
        if not _FIELD_NAME.match(name):
            raise ValueError(f"sd_notify field name {name!r} is not an upper-case word")
        text = str(value).replace("\r", " ").replace("\n", " ")
        lines.append(f"{name}={text}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def socket_address(value: str) -> Optional[str]:
    """Translate ``$NOTIFY_SOCKET`` into an AF_UNIX address, or None if unusable.

    A leading ``@`` names a socket in the abstract namespace, which the kernel
    spells with a leading NUL byte (sd_notify(3)). Anything that is neither an
    absolute path nor abstract (e.g. systemd 254's ``vsock:``) is not supported.
    """
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def extend_timeout_usec(seconds: float) -> int:
    """The ``EXTEND_TIMEOUT_USEC=`` value for ``seconds`` (whole microseconds, >= 1)."""
    if seconds <= 0:
        raise ValueError(f"timeout extension must be positive, got {seconds!r} s")
    return max(1, int(round(seconds * 1000000)))


def watchdog_interval(
    environ: Optional[Mapping[str, str]] = None, pid: Optional[int] = None
) -> Optional[float]:
    """Seconds between ``WATCHDOG=1`` pings, or None when systemd's watchdog is off.

    Mirrors sd_watchdog_enabled(3): ``$WATCHDOG_USEC`` is the watchdog timeout;
    when ``$WATCHDOG_PID`` is set it must be this process (otherwise the
    variables were inherited from a parent and the watchdog is not ours).
    systemd asks for a ping "in every half the time interval" (sd_notify(3)),
    so this returns half the timeout.
    """
    env = os.environ if environ is None else environ
    raw_usec = env.get(WATCHDOG_USEC_ENV)
    if not raw_usec:
        return None
    raw_pid = env.get(WATCHDOG_PID_ENV)
    if raw_pid:
        own_pid = os.getpid() if pid is None else pid
        try:
            watched_pid = int(raw_pid)
        except ValueError:
            logger.warning("ignoring %s=%r: not a process id", WATCHDOG_PID_ENV, raw_pid)
            return None
        if watched_pid != own_pid:
            return None
    try:
        usec = int(raw_usec)
    except ValueError:
        logger.warning("ignoring %s=%r: not a number of microseconds", WATCHDOG_USEC_ENV, raw_usec)
        return None
    if usec <= 0:
        logger.warning("ignoring %s=%r: not a positive timeout", WATCHDOG_USEC_ENV, raw_usec)
        return None
    return usec / 1000000.0 / 2.0


class Notifier:
    """What the daemon tells its service manager. This base class does nothing.

    It is the null notifier (no systemd, tests that do not care) and the
    interface: :class:`SystemdNotifier` overrides :meth:`notify`; every
    convenience method goes through it.
    """

    @property
    def enabled(self) -> bool:
        """Whether messages go anywhere."""
        return False

    def notify(self, **fields: FieldValue) -> bool:
        """Send ``KEY=value`` fields in one message; True if it was delivered."""
        return False

    def ready(self, status: Optional[str] = None) -> bool:
        """``READY=1``: start-up finished (models loaded, streams started)."""
        fields: Dict[str, FieldValue] = {"READY": 1}
        if status is not None:
            fields["STATUS"] = status
        return self.notify(**fields)

    def status(self, text: str) -> bool:
        """``STATUS=``: one line shown by ``systemctl status``."""
        return self.notify(STATUS=text)

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: proof of progress. Call through edged.watchdog, not directly."""
        return self.notify(WATCHDOG=1)

    def extend_timeout(self, seconds: float, status: Optional[str] = None) -> bool:
        """``EXTEND_TIMEOUT_USEC=``: the current start/stop timeout (and the watchdog)
        ends no earlier than ``seconds`` from now (systemd >= 236). Must be sent
        again before it runs out while the slow step lasts (sd_notify(3)).
        """
        fields: Dict[str, FieldValue] = {"EXTEND_TIMEOUT_USEC": extend_timeout_usec(seconds)}
        if status is not None:
            fields["STATUS"] = status
        return self.notify(**fields)

    def reloading(self, status: Optional[str] = None) -> bool:
        """``RELOADING=1`` at the start of a SIGHUP reload; send :meth:`ready` when done.

        ``MONOTONIC_USEC`` is required by ``Type=notify-reload`` (systemd >= 253)
        and ignored by older managers. ``time.monotonic`` is CLOCK_MONOTONIC on Linux.
        """
        fields: Dict[str, FieldValue] = {
            "RELOADING": 1,
            "MONOTONIC_USEC": int(time.monotonic() * 1000000),
        }
        if status is not None:
            fields["STATUS"] = status
        return self.notify(**fields)

    def stopping(self, status: Optional[str] = None) -> bool:
        """``STOPPING=1``: shutdown began (SIGTERM received)."""
        fields: Dict[str, FieldValue] = {"STOPPING": 1}
        if status is not None:
            fields["STATUS"] = status
        return self.notify(**fields)

    def close(self) -> None:
        """Release the socket, if any."""


class SystemdNotifier(Notifier):
    """Sends each message as one datagram to ``$NOTIFY_SOCKET``.

    ``address`` defaults to the environment at construction time. Unset or
    unusable -> every call is a no-op. A send error is logged once per run of
    failures (a watchdog pinging every 15 s must not fill the journal) and
    reported by the return value; it never raises.
    """

    def __init__(self, address: Optional[str] = None) -> None:
        raw = os.environ.get(NOTIFY_SOCKET_ENV, "") if address is None else address
        self._raw_address = raw
        self._address = socket_address(raw) if raw else None
        if raw and self._address is None:
            logger.warning(
                "%s=%r is neither an absolute path nor '@abstract'; not notifying systemd",
                NOTIFY_SOCKET_ENV,
                raw,
            )
        self._lock = threading.Lock()
        self._sock: Optional[socket.socket] = None
        self._failing = False

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, **fields: FieldValue) -> bool:
        if self._address is None:
            return False
        message = format_message(fields)
        # One lock: several threads (watchdog, reload, engine build) share the
        # socket and the "already logged" flag.
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._sock.setblocking(False)  # never stall the daemon on systemd
                self._sock.sendto(message, self._address)
            except OSError as e:
                self._note_failure(e)
                return False
            if self._failing:
                self._failing = False
                logger.info("systemd notify socket %s works again", self._raw_address)
            return True

    def _note_failure(self, error: OSError) -> None:
        if not self._failing:
            self._failing = True
            logger.warning(
                "cannot notify systemd via %s: %s (further failures not logged until it works)",
                self._raw_address,
                error,
            )
        if self._sock is not None:
            # A fresh socket next time: the old one may be in a bad state.
            self._sock.close()
            self._sock = None

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def from_environment() -> Notifier:
    """The notifier for this process: a real one under systemd, else the no-op one."""
    if os.environ.get(NOTIFY_SOCKET_ENV):
        return SystemdNotifier()
    return Notifier()


class TimeoutExtender:
    """Keeps systemd's start (or stop) timeout extended while a slow step runs.

    A TensorRT engine build blocks in C for seconds to minutes;
    ``TimeoutStartSec=120`` would kill it. systemd wants
    ``EXTEND_TIMEOUT_USEC`` repeated before each extension runs out, so a named
    thread resends it every ``period_s`` with ``extend_s`` of headroom, up to
    ``max_total_s`` in all: a build that hangs forever still ends in a timeout.
    Use as a context manager::

        with TimeoutExtender(notifier, "building engine peoplenet (1/2)"):
            build_engine(...)
    """

    def __init__(
        self,
        notifier: Notifier,
        status: Optional[str] = None,
        extend_s: float = 60.0,
        period_s: Optional[float] = None,
        max_total_s: float = 1800.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if extend_s <= 0 or max_total_s <= 0:
            raise ValueError("extend_s and max_total_s must be positive")
        self._notifier = notifier
        self._status = status
        self._extend_s = extend_s
        # A third of the extension: two resends may be late before it lapses.
        self._period_s = period_s if period_s is not None else extend_s / 3.0
        self._max_total_s = max_total_s
        self._clock = clock
        self._done = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "TimeoutExtender":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> None:
        self._done.clear()
        self._notifier.extend_timeout(self._extend_s, status=self._status)
        self._thread = threading.Thread(target=self._run, name="sd-extend-timeout", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        deadline = self._clock() + self._max_total_s
        while not self._done.wait(self._period_s):
            remaining = deadline - self._clock()
            if remaining <= 0:
                logger.warning(
                    "slow step %r exceeded %.0f s; no longer extending systemd's timeout",
                    self._status,
                    self._max_total_s,
                )
                return
            self._notifier.extend_timeout(min(self._extend_s, remaining))
