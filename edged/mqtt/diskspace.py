"""How the outbox shares its disk budget, and how a full disk is logged.

:class:`Budget` splits ``mqtt.outbox.max_bytes`` (the bound on the outbox's
files together: database, ``-wal`` and ``-shm``) between SQLite's parts:

* the WAL: at most ``wal_bytes`` (a quarter of the budget, at most 4 MiB).
  SQLite's default checkpoints only after 1000 pages (about 4 MB) and never
  shrinks the file; ``wal_autocheckpoint`` at half the WAL budget and
  ``journal_size_limit`` at the budget keep it inside (SQLite's pragma docs,
  https://sqlite.org/pragma.html#pragma_journal_size_limit). After a checkpoint
  the next transaction writes the WAL from its start again, in space the file
  already holds, so a full disk does not stop those writes.
* the wal-index ``-shm``: 32 KiB per 4062 WAL frames (https://sqlite.org/walformat.html).
* the database: the rest, as SQLite's ``max_page_count``; rows are limited to
  three quarters of it (``data_bytes``), the rest is b-tree and row overhead, so
  the oldest rows are dropped before SQLite runs into the page limit.

:class:`FullDiskLog`: a full disk fails every write (before this existed, each
result logged an ERROR with a traceback); it logs one line when writing starts
failing, a summary with counts every ``summary_interval_s`` (60 s) and one line
when writes work again: 1 + 1 per minute + 1 lines (``edged run`` at 25 fps on a
full 2 MiB tmpfs for 75 s: the start line and one summary).
"""

import logging
import os
import time
from typing import Callable, NamedTuple, Optional

logger = logging.getLogger("edged.mqtt.outbox")

#: The WAL's share of the budget is capped here (SQLite's default autocheckpoint size).
WAL_MAX_BYTES = 4 << 20
#: The wal-index for a WAL of up to 4062 frames (16 MB at 4 KiB pages).
SHM_BYTES = 32 << 10
#: Bytes of WAL per page: the page plus a 24-byte frame header.
FRAME_OVERHEAD = 24
#: How often a full disk is summarised in the log.
SUMMARY_INTERVAL_S = 60.0


class Budget(NamedTuple):
    total_bytes: int  # mqtt.outbox.max_bytes: database + WAL + wal-index
    wal_bytes: int  # journal_size_limit
    autocheckpoint_pages: int  # wal_autocheckpoint
    max_page_count: int  # the database's pages, at most
    data_bytes: int  # topic + payload bytes of the rows, at most

    @classmethod
    def split(cls, total_bytes: int, page_size: int) -> "Budget":
        wal = min(WAL_MAX_BYTES, total_bytes // 4)
        frames = max(2, wal // (page_size + FRAME_OVERHEAD))
        db_bytes = total_bytes - wal - SHM_BYTES
        pages = max(8, db_bytes // page_size)
        return cls(total_bytes, wal, max(1, frames // 2), pages, db_bytes * 3 // 4)


def disk_bytes(path: str) -> int:
    """Bytes the outbox's files take on disk now (allocated blocks, as ``du`` counts)."""
    total = 0
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            total += os.stat(path + suffix).st_blocks * 512
        except OSError:
            pass  # not there (yet)
    return total


def free_bytes(path: str) -> int:
    """Bytes an unprivileged writer may still use on the file system holding ``path``."""
    try:
        st = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


class FullDiskLog:
    """Start line, periodic summaries and end line of one full-disk episode at a time."""

    def __init__(
        self,
        path: str,
        summary_interval_s: float = SUMMARY_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.summary_interval_s = float(summary_interval_s)
        self._clock = clock
        self.since: Optional[float] = None
        self._next_summary = 0.0
        self._not_durable = 0  # in this episode
        self._lost = 0
        self._not_durable_window = 0  # since the last summary
        self._lost_window = 0

    @property
    def active(self) -> bool:
        return self.since is not None

    def started(self, error: str, memory_max_bytes: int) -> None:
        if self.since is not None:
            return
        now = self._clock()
        self.since = now
        self._next_summary = now + self.summary_interval_s
        self._not_durable = self._lost = self._not_durable_window = self._lost_window = 0
        logger.error(
            "MQTT outbox %s: cannot write (%s); results go to the broker from memory, not "
            "durable (at most %d bytes held), until the disk has room again",
            self.path,
            error,
            memory_max_bytes,
        )

    def counted(self, not_durable: int = 0, lost: int = 0) -> None:
        self._not_durable += not_durable
        self._lost += lost
        self._not_durable_window += not_durable
        self._lost_window += lost

    def tick(self) -> None:
        """The summary, when one is due (called often; cheap)."""
        if self.since is None or self._clock() < self._next_summary:
            return
        now = self._clock()
        logger.warning(
            "MQTT outbox %s: disk still full after %.0f s; in the last %.0f s %d results sent "
            "not durable, %d lost (%d and %d since it filled)",
            self.path,
            now - self.since,
            self.summary_interval_s,
            self._not_durable_window,
            self._lost_window,
            self._not_durable,
            self._lost,
        )
        self._not_durable_window = self._lost_window = 0
        self._next_summary = now + self.summary_interval_s

    def ended(self) -> None:
        if self.since is None:
            return
        logger.warning(
            "MQTT outbox %s: writing again after %.0f s of a full disk; %d results were sent "
            "not durable, %d lost",
            self.path,
            self._clock() - self.since,
            self._not_durable,
            self._lost,
        )
        self.since = None
