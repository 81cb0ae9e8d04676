"""The outbox's SQLite file: its rows, sequences, open transaction and disk budget.

:class:`OutboxFile` does what the file holds and what SQLite says; where a message
goes when the file cannot take it is :class:`~.outbox.Outbox`'s business.
:func:`take_lock` takes an exclusive ``flock`` on ``<path>.lock`` (one process per
outbox file), :func:`open_database` opens the database in WAL mode with the pragmas of its
:class:`~.diskspace.Budget`, and moves a damaged file aside (an unattended device
must start; the file is kept for inspection). A file that cannot be written (a
full disk, a read-only file system) is no damage and is left alone.
"""

import errno
import fcntl
import logging
import os
import sqlite3
import time
import urllib.parse
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Set, Tuple  # noqa: F401

from ..errors import PublishError
from .diskspace import Budget

logger = logging.getLogger("edged.mqtt.outbox")

SCHEMA_VERSION = 1
#: How many oldest rows one look-up considers when making room.
DROP_CHUNK = 256

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS messages ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB NOT NULL,"
    " qos INTEGER NOT NULL, size INTEGER NOT NULL, created REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sequences (stream TEXT PRIMARY KEY, seq INTEGER NOT NULL)",
)


class OutboxMessage(NamedTuple):
    id: int
    topic: str
    payload: bytes
    qos: int
    size: int


def take_lock(path: str) -> int:
    """Make the directory and take the one-process lock; returns its file descriptor.

    Raises:
        PublishError: the directory cannot be made or another process holds the lock.
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as e:
        raise PublishError(
            f"mqtt.outbox.path: cannot create directory {directory} ({e.strerror})"
        ) from e
    return _take_lock(path)


def open_database(path: str, max_bytes: int, fsync: bool) -> Tuple[sqlite3.Connection, Budget]:
    """(connection, budget) of the outbox at ``path``; a damaged file is moved aside.

    Raises:
        PublishError: SQLite cannot open or write it (its cause: the sqlite3 error).
    """
    try:
        return _connect(path, max_bytes, fsync)
    except sqlite3.OperationalError as e:  # a full disk, a read-only file system
        raise PublishError(f"mqtt.outbox.path: {path}: {e}") from e
    except sqlite3.DatabaseError as e:
        _move_aside(path, e)
        try:
            return _connect(path, max_bytes, fsync)
        except sqlite3.DatabaseError as e2:
            raise PublishError(f"mqtt.outbox.path: {path}: {e2}") from e2


def _move_aside(path: str, error: Exception) -> None:
    aside = f"{path}.corrupt-{int(time.time())}"
    logger.error(
        "MQTT outbox %s is not a usable SQLite database (%s); moved to %s, "
        "starting with an empty outbox",
        path,
        error,
        aside,
    )
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.replace(path + suffix, aside + suffix)


def _take_lock(path: str) -> int:
    lock_path = path + ".lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise PublishError(f"mqtt.outbox.path: cannot create {lock_path} ({e.strerror})") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES):
            raise PublishError(
                f"mqtt.outbox.path: {path} is in use by another edged process; give each "
                "process its own outbox"
            ) from e
        raise PublishError(f"mqtt.outbox.path: cannot lock {lock_path} ({e.strerror})") from e
    return fd


def _connect(path: str, max_bytes: int, fsync: bool) -> Tuple[sqlite3.Connection, Budget]:
    db = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
    try:
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
        budget = Budget.split(max_bytes, int(page_size))
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous={}".format("FULL" if fsync else "NORMAL"))
        db.execute(f"PRAGMA journal_size_limit={budget.wal_bytes}")
        db.execute(f"PRAGMA wal_autocheckpoint={budget.autocheckpoint_pages}")
        db.execute(f"PRAGMA max_page_count={budget.max_page_count}")
        for statement in _SCHEMA:
            db.execute(statement)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()  # a WAL left large by older edged
    except BaseException:
        db.close()
        raise
    return db, budget


class OutboxFile:
    """The SQLite file of one outbox. Not thread-safe: :class:`~.outbox.Outbox` holds its lock.

    Counters (``count``, ``bytes``) include the open transaction; ``committed_id`` is the
    newest id known to be on disk. :meth:`rollback` says what the transaction held.
    """

    def __init__(self, path: str, max_bytes: int, fsync: bool, clock: Callable[[], float]) -> None:
        self.path = path
        self.max_bytes = int(max_bytes)
        self.fsync = fsync
        self.budget = Budget.split(self.max_bytes, 4096)  # again with the file's page size
        self._clock = clock
        self._db = None  # type: Optional[sqlite3.Connection]
        self._lock_fd = None  # type: Optional[int]
        self.in_tx = False
        self.tx_started = 0.0
        self.tx_writes = 0
        self.tx_bytes = 0
        self._uncommitted = []  # type: List[OutboxMessage]
        self._tx_removed = []  # type: List[int]
        self._tx_seqs = set()  # type: Set[str]
        self.count = 0
        self.bytes = 0
        self.newest_id = 0
        self.committed_id = 0
        self.commits = 0

    def open(self) -> Dict[str, int]:
        """Take the lock (once) and open the database; returns the last seq of each stream.

        Raises:
            PublishError: see :func:`take_lock` and :func:`open_database`.
        """
        if self._lock_fd is None:
            self._lock_fd = take_lock(self.path)
        self._db, self.budget = open_database(self.path, self.max_bytes, self.fsync)
        return self.read_counters()

    def read_only(self, error: PublishError) -> Dict[str, int]:
        """The last seqs of a file :meth:`open` could not write (a full disk), read without
        writing (SQLite's ``immutable`` URI, https://sqlite.org/uri.html). Only a file closed
        cleanly (no WAL left) is read so: a WAL may hold newer seqs. Raises ``error``
        (and lets the lock go) otherwise."""
        wal = self.path + "-wal"
        try:
            if self._lock_fd is None or not isinstance(error.__cause__, sqlite3.OperationalError):
                raise error
            if os.path.exists(wal) and os.path.getsize(wal) > 0:
                raise error
            if not os.path.exists(self.path) or os.path.getsize(self.path) == 0:
                return {}  # no outbox yet: seqs start at 0
            uri = f"file:{urllib.parse.quote(os.path.abspath(self.path))}?immutable=1"
            db = sqlite3.connect(uri, uri=True)
            try:
                (newest,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()
                seqs = {str(s): int(n) for s, n in db.execute("SELECT stream, seq FROM sequences")}
            finally:
                db.close()
        except (PublishError, OSError, sqlite3.Error):
            self.close()
            raise error from error.__cause__
        self.newest_id = max(self.newest_id, int(newest))
        return seqs

    def close(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            finally:
                self._db = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    @property
    def is_open(self) -> bool:
        return self._db is not None

    def conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise PublishError(f"the MQTT outbox {self.path} is not open")
        return self._db

    def read_counters(self) -> Dict[str, int]:
        """Count, bytes and newest id as on disk; returns the last seq of each stream."""
        db = self.conn()
        count, total, newest = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(MAX(id), 0) FROM messages"
        ).fetchone()
        self.count, self.bytes = int(count), int(total)
        self.newest_id = max(self.newest_id, int(newest))
        self.committed_id = max(self.committed_id, int(newest))
        return {str(s): int(n) for s, n in db.execute("SELECT stream, seq FROM sequences")}

    def begin(self) -> None:
        if not self.in_tx:
            self.conn().execute("BEGIN")
            self.in_tx = True
            self.tx_started = self._clock()
            self.tx_writes = 0
            self.tx_bytes = 0

    def insert(self, message: OutboxMessage) -> None:
        self.begin()
        self._uncommitted.append(message)  # a failure below: rollback() hands it back
        self.conn().execute(
            "INSERT INTO messages (id, topic, payload, qos, size, created) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (message.id, message.topic, sqlite3.Binary(message.payload), message.qos,
             message.size, time.time()),
        )  # fmt: skip
        self.newest_id = max(self.newest_id, message.id)
        self.count += 1
        self.bytes += message.size
        self.tx_writes += 1
        self.tx_bytes += message.size

    def write_seq(self, stream: str, seq: int) -> None:
        self.begin()
        self._tx_seqs.add(stream)
        self.conn().execute(
            "INSERT OR REPLACE INTO sequences (stream, seq) VALUES (?, ?)", (stream, seq)
        )

    def delete(self, ids: Sequence[int]) -> List[int]:
        """Delete the rows of ``ids`` that exist; returns their ids."""
        db = self.conn()
        marks = ",".join("?" * len(ids))
        rows = db.execute(
            f"SELECT id, size FROM messages WHERE id IN ({marks})", list(ids)
        ).fetchall()
        found = [int(i) for i, _ in rows]
        if found:
            self.begin()
            db.execute("DELETE FROM messages WHERE id IN ({})".format(",".join("?" * len(found))),
                       found)  # fmt: skip
            self._tx_removed.extend(found)
            if self._uncommitted and self._uncommitted[0].id <= max(found):
                gone = set(found)
                self._uncommitted = [m for m in self._uncommitted if m.id not in gone]
            self.count -= len(found)
            self.bytes -= sum(int(size) for _, size in rows)
            self.tx_writes += 1
        return found

    def drop_oldest(self, size: int) -> List[int]:
        """Delete the oldest rows until ``size`` more bytes fit in the rows' budget."""
        dropped = []  # type: List[int]
        limit = self.budget.data_bytes
        while self.bytes + size > limit and self.count > 0:
            rows = (
                self.conn()
                .execute("SELECT id, size FROM messages ORDER BY id LIMIT ?", (DROP_CHUNK,))
                .fetchall()
            )
            victims = []  # type: List[int]
            room = self.bytes + size
            for row_id, row_size in rows:
                if room <= limit:
                    break
                victims.append(int(row_id))
                room -= int(row_size)
            if not victims:
                break
            dropped.extend(self.delete(victims))
        return dropped

    def commit(self) -> None:
        if not self.in_tx:
            return
        self.conn().execute("COMMIT")
        self.in_tx = False
        if self._uncommitted:
            self.committed_id = max([self.committed_id] + [m.id for m in self._uncommitted])
        self._uncommitted, self._tx_removed = [], []
        self._tx_seqs.clear()
        self.commits += 1
        self._keep_wal_in_budget()

    def _keep_wal_in_budget(self) -> None:
        """A WAL past its budget (one large transaction) is checkpointed and truncated."""
        try:
            if os.path.getsize(self.path + "-wal") > self.budget.wal_bytes:
                self.conn().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except (OSError, sqlite3.Error) as e:
            logger.debug("MQTT outbox: checkpoint not done: %s", e)

    def rollback(self) -> Tuple[List[OutboxMessage], List[int], Set[str]]:
        """Back to what is on disk: (messages, deleted ids, streams' seqs) the transaction held."""
        if self.in_tx:
            try:
                self.conn().execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite may have rolled back already
            self.in_tx = False
        held = (self._uncommitted, self._tx_removed, set(self._tx_seqs))
        self._uncommitted, self._tx_removed = [], []
        self._tx_seqs.clear()
        try:
            if self.is_open:
                self.read_counters()
        except sqlite3.Error as e:
            logger.debug("MQTT outbox: counters not re-read: %s", e)
        return held

    def at_page_limit(self) -> bool:
        """True when the database has all the pages its budget allows."""
        try:
            (pages,) = self.conn().execute("PRAGMA page_count").fetchone()
        except sqlite3.Error:
            return False
        return int(pages) >= self.budget.max_page_count - 1

    def rows(self, after_id: int, limit: int) -> List[OutboxMessage]:
        """Up to ``limit`` committed rows with ids above ``after_id``, oldest first."""
        rows = (
            self.conn()
            .execute(
                "SELECT id, topic, payload, qos, size FROM messages WHERE id > ? AND id <= ? "
                "ORDER BY id LIMIT ?",
                (int(after_id), self.committed_id, int(limit)),
            )
            .fetchall()
        )
        return [OutboxMessage(int(i), str(t), bytes(p), int(q), int(s)) for i, t, p, q, s in rows]

    def checkpoint(self) -> None:
        """Copy the WAL into the database (needs no new space when the database has free
        pages); the next transaction then writes the WAL from its start."""
        self.conn().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def touch(self) -> None:
        """A write of one page in the open transaction (probes whether writes work)."""
        self.begin()
        self.conn().execute(f"PRAGMA user_version={SCHEMA_VERSION}")
