"""The durable MQTT outbox: results survive broker outages and ``kill -9`` (issue 5 item 3).

paho keeps unsent messages only in memory ("we don't have (on disk) persistence
for the session", paho#284, #382; reliability.md 3.1), so zero loss across a
daemon crash needs edged's own store. This is one SQLite file in WAL mode:

* ``messages``: topic, payload, QoS, ordered by an AUTOINCREMENT id (ids are
  never reused, so "everything after id N" stays meaningful after deletes).
  A message is deleted only after its PUBACK arrived; after a reconnect or a
  restart everything left is sent again, oldest first (at least once).
* ``sequences``: the last ``seq`` of every stream, written in the same
  transaction as the message that used it, so ``seq`` keeps counting across
  restarts and never repeats for a message that left the process.
* Bounded bytes: when full, the OLDEST messages are dropped and counted.

Durability bound: writes are batched. A transaction commits when it holds
``commit_batch`` writes or is ``commit_interval_s`` old; the publisher thread
calls :meth:`Outbox.flush_if_due` at least every ``commit_interval_s``, so a
message handed to :meth:`append_result` is on disk (survives ``kill -9``)
within about ``commit_interval_s`` (default 50 ms; ``tests/test_mqtt_outbox.py``).
Only committed messages are handed to the publisher, so nothing is published
that a crash could take back. ``synchronous=NORMAL`` (``fsync: false``) survives
a process crash but a power cut may lose the last transactions; ``fsync: true``
(``synchronous=FULL``) syncs every commit. SQLite features are limited to
what JetPack 4.6's SQLite 3.22 has (no UPSERT, no RETURNING).

One process per outbox file: an exclusive ``flock`` on ``<path>.lock``.
"""

import contextlib
import errno
import fcntl
import logging
import os
import sqlite3
import threading
import time
from typing import Callable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from ..errors import PublishError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_MAX_BYTES = 64 << 20
DEFAULT_COMMIT_INTERVAL_S = 0.05
DEFAULT_COMMIT_BATCH = 100
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


class Outbox:
    """A bounded, ordered, crash-safe queue of MQTT messages; safe to use from several threads."""

    def __init__(
        self,
        path: str,
        max_bytes: int = DEFAULT_MAX_BYTES,
        commit_interval_s: float = DEFAULT_COMMIT_INTERVAL_S,
        commit_batch: int = DEFAULT_COMMIT_BATCH,
        fsync: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.max_bytes = int(max_bytes)
        self.commit_interval_s = float(commit_interval_s)
        self.commit_batch = max(1, int(commit_batch))
        self.fsync = fsync
        self._clock = clock
        self._lock = threading.RLock()
        self._db = None  # type: Optional[sqlite3.Connection]
        self._lock_fd = None  # type: Optional[int]
        self._in_tx = False
        self._tx_started = 0.0
        self._tx_writes = 0
        self._last_id = 0  # newest id written (maybe not committed yet)
        self._committed_id = 0  # newest id known to be on disk
        self._count = 0
        self._bytes = 0
        self._seqs = {}  # type: Dict[str, int]
        self.dropped = 0  # messages dropped because the outbox was full
        self.commits = 0

    # -- lifecycle ------------------------------------------------------------------------

    def open(self) -> None:
        """Open (or create) the file, take the lock, load counters and sequences.

        Raises:
            PublishError: the directory cannot be made, the file is locked by another
                process, or SQLite cannot open it.
        """
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as e:
            raise PublishError(
                f"mqtt.outbox.path: cannot create directory {directory} ({e.strerror})"
            ) from e
        self._take_lock()
        try:
            self._connect()
        except sqlite3.DatabaseError as e:
            # A damaged file must not keep an unattended device from starting: keep it for
            # inspection and begin with an empty outbox (loud, once).
            self._close_db()
            aside = f"{self.path}.corrupt-{int(time.time())}"
            logger.error(
                "MQTT outbox %s is not a usable SQLite database (%s); moved to %s, "
                "starting with an empty outbox",
                self.path,
                e,
                aside,
            )
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(self.path + suffix):
                    os.replace(self.path + suffix, aside + suffix)
            try:
                self._connect()
            except sqlite3.DatabaseError as e2:
                self._release_lock()
                raise PublishError(f"mqtt.outbox.path: {self.path}: {e2}") from e2
        logger.info(
            "MQTT outbox %s: %d messages (%d bytes) waiting", self.path, self._count, self._bytes
        )

    def _take_lock(self) -> None:
        lock_path = self.path + ".lock"
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
                    f"mqtt.outbox.path: {self.path} is in use by another edged process; give each "
                    "process its own outbox"
                ) from e
            raise PublishError(f"mqtt.outbox.path: cannot lock {lock_path} ({e.strerror})") from e
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def _connect(self) -> None:
        db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
        self._db = db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous={}".format("FULL" if self.fsync else "NORMAL"))
        for statement in _SCHEMA:
            db.execute(statement)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._read_counters(db)

    def _read_counters(self, db: sqlite3.Connection) -> None:
        """Message count, bytes, newest id and per-stream seqs as they are on disk."""
        count, total, newest = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(MAX(id), 0) FROM messages"
        ).fetchone()
        self._count, self._bytes = int(count), int(total)
        self._last_id = self._committed_id = int(newest)
        self._seqs = {str(s): int(n) for s, n in db.execute("SELECT stream, seq FROM sequences")}

    def _close_db(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            finally:
                self._db = None

    def close(self) -> None:
        """Commit what is pending, close the file and release the lock."""
        with self._lock:
            if self._db is None:
                return
            try:
                self.flush()
            finally:
                self._close_db()
                self._release_lock()

    # -- writing --------------------------------------------------------------------------

    def _begin(self) -> None:
        if not self._in_tx:
            self._conn().execute("BEGIN")
            self._in_tx = True
            self._tx_started = self._clock()
            self._tx_writes = 0

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise PublishError(f"the MQTT outbox {self.path} is not open")
        return self._db

    def append(self, topic: str, payload: bytes, qos: int) -> bool:
        """Queue one message; False (and counted as dropped) if it can never fit."""
        with self._lock, self._guard("writing a message"):
            return self._insert(topic, payload, qos)

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """SQLite failures (disk full, I/O error) become one PublishError; the open
        transaction is rolled back so the outbox stays what is on disk."""
        try:
            yield
        except sqlite3.Error as e:
            self._recover()
            raise PublishError(f"MQTT outbox {self.path}: {what} failed ({e})") from e

    def _recover(self) -> None:
        before = self._count
        if self._in_tx:
            try:
                self._conn().execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite may have rolled back already
            self._in_tx = False
        self._read_counters(self._conn())
        lost = max(0, before - self._count)
        self.dropped += lost  # never published: only committed messages are handed out
        logger.error(
            "MQTT outbox %s: a write failed; %d uncommitted messages rolled back", self.path, lost
        )

    def append_result(
        self, stream_id: str, build: Callable[[int], Tuple[str, bytes]], qos: int
    ) -> int:
        """Queue the message ``build(seq)`` makes with the stream's next ``seq``; returns ``seq``.

        ``seq`` and the message are written in one transaction. If ``build`` raises,
        nothing is written and the sequence does not advance.
        """
        with self._lock:
            seq = self._seqs.get(stream_id, -1) + 1
            topic, payload = build(seq)
            with self._guard("writing a message"):
                self._insert(topic, payload, qos)
                self._conn().execute(
                    "INSERT OR REPLACE INTO sequences (stream, seq) VALUES (?, ?)", (stream_id, seq)
                )
                self._seqs[stream_id] = seq
                self._maybe_commit()
            return seq

    def _insert(self, topic: str, payload: bytes, qos: int) -> bool:
        size = len(payload) + len(topic.encode("utf-8"))
        if size > self.max_bytes:
            self.dropped += 1
            logger.warning(
                "MQTT outbox: a %d-byte message to %s is larger than the whole outbox "
                "(%d bytes): dropped",
                size,
                topic,
                self.max_bytes,
            )
            return False
        self._begin()
        if self._bytes + size > self.max_bytes:
            self._make_room(size)
        cursor = self._conn().execute(
            "INSERT INTO messages (topic, payload, qos, size, created) VALUES (?, ?, ?, ?, ?)",
            (topic, sqlite3.Binary(payload), int(qos), size, time.time()),
        )
        self._last_id = int(cursor.lastrowid)
        self._count += 1
        self._bytes += size
        self._tx_writes += 1
        return True

    def _make_room(self, size: int) -> None:
        """Drop the oldest messages until ``size`` more bytes fit."""
        db = self._conn()
        dropped = 0
        while self._bytes + size > self.max_bytes and self._count > 0:
            rows = db.execute(
                "SELECT id, size FROM messages ORDER BY id LIMIT ?", (DROP_CHUNK,)
            ).fetchall()
            if not rows:
                break
            victims = []  # type: List[int]
            for row_id, row_size in rows:
                if self._bytes + size <= self.max_bytes:
                    break
                victims.append(int(row_id))
                self._bytes -= int(row_size)
                self._count -= 1
            db.execute(
                "DELETE FROM messages WHERE id IN ({})".format(",".join("?" * len(victims))),
                victims,
            )
            dropped += len(victims)
        self.dropped += dropped
        if dropped:
            if self.dropped == dropped or self.dropped // 1000 != (self.dropped - dropped) // 1000:
                logger.warning(
                    "MQTT outbox full (%d bytes): dropped the %d oldest messages, %d so far",
                    self.max_bytes,
                    dropped,
                    self.dropped,
                )

    def remove(self, ids: Sequence[int]) -> int:
        """Delete acknowledged messages (unknown ids are ignored); returns how many went."""
        if not ids:
            return 0
        with self._lock, self._guard("deleting acknowledged messages"):
            db = self._conn()
            marks = ",".join("?" * len(ids))
            rows = db.execute(
                f"SELECT id, size FROM messages WHERE id IN ({marks})", list(ids)
            ).fetchall()
            if not rows:
                return 0
            self._begin()
            db.execute(f"DELETE FROM messages WHERE id IN ({marks})", list(ids))
            self._count -= len(rows)
            self._bytes -= sum(int(size) for _, size in rows)
            self._tx_writes += 1
            self._maybe_commit()
            return len(rows)

    def _maybe_commit(self) -> None:
        if self._in_tx and self._tx_writes >= self.commit_batch:
            self.flush()

    def flush(self) -> None:
        """Commit the open transaction now (on disk afterwards)."""
        with self._lock, self._guard("a commit"):
            if self._in_tx:
                self._conn().execute("COMMIT")
                self._in_tx = False
                self._committed_id = self._last_id
                self.commits += 1

    def flush_if_due(self) -> bool:
        """Commit when the open transaction is ``commit_interval_s`` old; True if it committed."""
        with self._lock:
            if self._in_tx and self._clock() - self._tx_started >= self.commit_interval_s:
                self.flush()
                return True
            return False

    def next_due_in(self) -> Optional[float]:
        """Seconds until :meth:`flush_if_due` would commit (None: nothing pending)."""
        with self._lock:
            if not self._in_tx:
                return None
            return max(0.0, self._tx_started + self.commit_interval_s - self._clock())

    # -- reading --------------------------------------------------------------------------

    def pending(self, after_id: int, limit: int) -> List[OutboxMessage]:
        """Up to ``limit`` COMMITTED messages with ids above ``after_id``, oldest first."""
        with self._lock:
            rows = (
                self._conn()
                .execute(
                    "SELECT id, topic, payload, qos, size FROM messages WHERE id > ? AND id <= ? "
                    "ORDER BY id LIMIT ?",
                    (int(after_id), self._committed_id, int(limit)),
                )
                .fetchall()
            )
        return [OutboxMessage(int(i), str(t), bytes(p), int(q), int(s)) for i, t, p, q, s in rows]

    @property
    def committed_id(self) -> int:
        return self._committed_id

    def seq(self, stream_id: str) -> Optional[int]:
        """The last ``seq`` given to ``stream_id`` (None: none yet)."""
        with self._lock:
            return self._seqs.get(stream_id)

    @property
    def messages(self) -> int:
        return self._count

    @property
    def bytes(self) -> int:
        return self._bytes
