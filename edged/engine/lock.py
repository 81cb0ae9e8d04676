"""An inter-process lock on a file (``fcntl.flock``), with a timeout and a "waiting" hook.

The engine cache takes one lock per fingerprint so that two processes asking for
the same engine build it once: the second waits, then finds the first one's
engine in the cache. ``flock`` locks belong to
the open file description and the kernel drops them when the process dies, so a
build killed by SIGKILL or the OOM killer never leaves a stale lock behind.
Lock files are never deleted: unlinking a lock file someone else has open would
let a third process lock a fresh file with the same name while the first still
holds the old one.
"""

import errno
import fcntl
import logging
import os
import threading
import time
from typing import Callable, Optional

from ..errors import EngineError

logger = logging.getLogger(__name__)

#: How often a waiting process retries (flock itself cannot time out).
POLL_S = 0.1


class LockTimeout(EngineError):
    """The lock was not acquired within the timeout."""


class FileLock:
    """An exclusive lock on ``path`` (created if missing). Not re-entrant.

    Args:
        path: the lock file.
        timeout_s: give up after this long (None: wait forever).
        on_wait: called once, with the path, when the lock is busy and we start waiting.
        stop: when set while waiting, :meth:`acquire` gives up (LockTimeout).
        poll_s: retry interval while waiting.
    """

    def __init__(
        self,
        path: str,
        timeout_s: Optional[float] = None,
        on_wait: Optional[Callable[[str], None]] = None,
        stop: Optional[threading.Event] = None,
        poll_s: float = POLL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._timeout_s = timeout_s
        self._on_wait = on_wait
        self._stop = stop
        self._poll_s = poll_s
        self._clock = clock
        self._fd = None  # type: Optional[int]

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock. Returns False only when ``blocking`` is False and it is busy.

        Raises:
            LockTimeout: blocking, and the timeout passed or ``stop`` was set.
            EngineError: the lock file cannot be opened.
        """
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this object")
        fd = self._open()
        deadline = None if self._timeout_s is None else self._clock() + self._timeout_s
        waited = False
        while True:
            if _try_flock(fd, self.path):
                self._fd = fd
                return True
            if not blocking:
                os.close(fd)
                return False
            if not waited:
                waited = True
                logger.info("waiting for %s (another process holds it)", self.path)
                if self._on_wait is not None:
                    self._on_wait(self.path)
            if (deadline is not None and self._clock() >= deadline) or (
                self._stop is not None and self._stop.is_set()
            ):
                os.close(fd)
                raise LockTimeout(
                    f"{self.path}: still locked by another process after {self._timeout_s} s"
                )
            time.sleep(self._poll_s)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> "FileLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise EngineError(f"{self.path}: cannot open lock file ({e.strerror or e})") from e


def _try_flock(fd: int, path: str) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise EngineError(f"{path}: cannot lock ({e.strerror or e})") from e
    return True
