"""The durable MQTT outbox: results survive broker outages, ``kill -9`` and a full disk.

paho keeps unsent messages only in memory ("we don't have (on disk) persistence
for the session", paho#284, #382), so zero loss across a daemon crash needs
edged's own store, one SQLite file in WAL mode (:mod:`.outboxfile`):

* ``messages``: topic, payload, QoS, ordered by id (edged numbers them; ids are
  never reused while the process runs, so "everything after id N" stays
  meaningful after deletes). A message is deleted only after its PUBACK arrived;
  after a reconnect or a restart everything left is sent again, oldest first.
* ``sequences``: the last ``seq`` of every stream, written in the same
  transaction as the message that used it, so ``seq`` keeps counting across
  restarts and never repeats for a message that left the process.
* Bounded disk use: ``max_bytes`` bounds the files together (database, WAL,
  wal-index; :class:`~.diskspace.Budget`). When the rows reach their share, the
  OLDEST messages are dropped and counted.

A full disk (or an I/O error) rolls the open transaction back; its messages and
every later one are kept in memory (at most ``memory_max_bytes``) and sent from
there, counted in :attr:`Outbox.not_durable`. Every ``probe_interval_s`` the
file system is checked; once it has room and a write commits, messages go to
disk again; the same when the file cannot be written at the start (see
:meth:`.outboxfile.OutboxFile.read_only`). A message kept nowhere is lost and counted by reason in
:attr:`Outbox.lost`; its ``seq`` stays used, so consumers see the gap
(docs/mqtt.md). The log: :class:`~.diskspace.FullDiskLog`.

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
"""

import collections
import logging
import sqlite3
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple  # noqa: F401

from ..errors import PublishError
from .diskspace import SUMMARY_INTERVAL_S, Budget, FullDiskLog, disk_bytes, free_bytes
from .outboxfile import OutboxFile, OutboxMessage

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 64 << 20
DEFAULT_COMMIT_INTERVAL_S = 0.05
DEFAULT_COMMIT_BATCH = 100
#: Messages held in memory while the disk is full, at most (bytes; never more than max_bytes).
MEMORY_MAX_BYTES = 4 << 20
#: While the disk is full: how often the file system is checked for room.
PROBE_INTERVAL_S = 1.0
#: Free bytes on the file system after which writing is tried again (see _room_needed).
RESUME_FREE_BYTES = 256 << 10

#: Why messages were lost (the ``reason`` label of edged_mqtt_results_lost_total).
OUTBOX_FULL = "outbox_full"  # the outbox reached max_bytes: the oldest were dropped
TOO_LARGE = "too_large"  # larger than the outbox's rows may be
DISK_FULL = "disk_full"  # the disk was full and the memory for results too
WRITE_ERROR = "write_error"  # like disk_full, for another write error (I/O)
AT_EXIT = "not_durable_at_exit"  # held in memory, unacknowledged when edged stopped
LOSS_REASONS = (OUTBOX_FULL, TOO_LARGE, DISK_FULL, WRITE_ERROR, AT_EXIT)


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
        memory_max_bytes: Optional[int] = None,
        probe_interval_s: float = PROBE_INTERVAL_S,
        summary_interval_s: float = SUMMARY_INTERVAL_S,
    ) -> None:
        self.path = path
        self.max_bytes = int(max_bytes)
        self.commit_interval_s = float(commit_interval_s)
        self.commit_batch = max(1, int(commit_batch))
        self.memory_max_bytes = int(
            min(self.max_bytes, MEMORY_MAX_BYTES) if memory_max_bytes is None else memory_max_bytes
        )
        self.probe_interval_s = float(probe_interval_s)
        self._clock = clock
        self._lock = threading.RLock()
        self.file = OutboxFile(path, max_bytes, fsync, clock)
        self._seqs = {}  # type: Dict[str, int]  # the last seq given, per stream
        self._dirty_seqs = set()  # type: Set[str]  # streams whose last seq is not on disk
        self._unremoved = set()  # type: Set[int]  # acknowledged; the delete failed: not resent
        self._last_id = 0  # the newest id given (maybe only in memory)
        # not durable: kept here while the disk is full, oldest first
        self._memory = collections.OrderedDict()  # type: Dict[int, OutboxMessage]
        self._memory_bytes = 0
        self._reason = DISK_FULL  # of the current (or last) full-disk episode
        self._next_probe = 0.0
        self.full = FullDiskLog(path, summary_interval_s, clock)
        self.dropped = 0  # messages dropped because the outbox was full or they were too large
        self.lost = collections.Counter()  # type: collections.Counter  # reason -> messages
        self.not_durable = 0  # messages kept in memory only (the disk was full)

    # -- lifecycle ------------------------------------------------------------------------

    def open(self) -> None:
        """Open (or create) the file, take the lock, load counters and sequences.

        Raises:
            PublishError: see :func:`.outboxfile.open_file`.
        """
        with self._lock:
            try:
                seqs = self.file.open()
            except PublishError as e:  # a full disk: start from memory if the seqs can be read
                seqs = self.file.read_only(e)
                self._disk_full(e.__cause__ or e)
            self._merge_seqs(seqs)
            self._last_id = max(self._last_id, self.file.newest_id)
        logger.info(
            "MQTT outbox %s: %d messages (%d bytes) waiting", self.path, self.messages, self.bytes
        )

    def _merge_seqs(self, on_disk: Dict[str, int]) -> None:
        for stream, seq in on_disk.items():  # never back: a seq given stays used
            self._seqs[stream] = max(self._seqs.get(stream, -1), seq)

    def close(self) -> None:
        """Commit what is pending (and what memory holds, if the disk has room now), close the
        file and release the lock."""
        with self._lock:
            try:
                self.flush()
                self._save_memory()
            finally:
                self.file.close()

    def _save_memory(self) -> None:
        """Messages sent from memory and not acknowledged: to disk if it takes them now, else
        lost (counted)."""
        if not self._memory:
            return
        if self.full.active:
            self._next_probe = 0.0
            self._probe_if_due()
        if not self.full.active:
            try:
                for message in self._memory.values():
                    self.file.insert(message)
                self._write_seqs()
                self.file.commit()
                self._memory.clear()
                self._memory_bytes = 0
                return
            except sqlite3.OperationalError:
                self.file.rollback()
        self._lose(AT_EXIT, len(self._memory))
        logger.error(
            "MQTT outbox %s: %d results sent from memory (the disk was full) were not "
            "acknowledged before the stop: lost",
            self.path,
            len(self._memory),
        )
        self._memory.clear()
        self._memory_bytes = 0

    # -- writing --------------------------------------------------------------------------

    def append(self, topic: str, payload: bytes, qos: int) -> bool:
        """Queue one message; False (and counted as lost) if it can be kept nowhere."""
        with self._lock:
            return self._put(topic, payload, qos)

    def append_result(
        self, stream_id: str, build: Callable[[int], Tuple[str, bytes]], qos: int
    ) -> int:
        """Queue the message ``build(seq)`` makes with the stream's next ``seq``; returns ``seq``.

        ``seq`` is written in the transaction of the message. If ``build`` raises,
        nothing is written and the sequence does not advance. Once built, the seq is
        used: a message lost afterwards (counted in :attr:`lost`) leaves a gap.
        """
        with self._lock:
            seq = self._seqs.get(stream_id, -1) + 1
            topic, payload = build(seq)
            self._seqs[stream_id] = seq
            self._dirty_seqs.add(stream_id)
            self._put(topic, payload, qos)
            return seq

    def _put(self, topic: str, payload: bytes, qos: int) -> bool:
        size = len(payload) + len(topic.encode("utf-8"))
        if size > self.file.budget.data_bytes:
            self.dropped += 1
            self._lose(TOO_LARGE)
            logger.warning(
                "MQTT outbox: a %d-byte message to %s is larger than the outbox's rows may be "
                "(%d bytes of max_bytes %d): dropped",
                size,
                topic,
                self.file.budget.data_bytes,
                self.max_bytes,
            )
            return False
        self._last_id += 1
        message = OutboxMessage(self._last_id, topic, bytes(payload), int(qos), size)
        if self.full.active:  # nothing is written until the probe finds room again
            return self._keep_in_memory(message)
        try:
            self._write(message)
        except sqlite3.OperationalError as e:
            self._write_failed(e)
            return message.id in self._memory
        return True

    def _write(self, message: OutboxMessage) -> None:
        self.file.begin()
        self._drop_oldest(message.size)
        self.file.insert(message)
        self._write_seqs()
        self._maybe_commit()

    def _write_seqs(self) -> None:
        for stream in sorted(self._dirty_seqs):
            self.file.write_seq(stream, self._seqs[stream])
        self._dirty_seqs.clear()

    def _drop_oldest(self, size: int) -> None:
        """Room for ``size`` more bytes: the oldest messages go (counted)."""
        gone = self.file.drop_oldest(size)
        if not gone:
            return
        self._unremoved.difference_update(gone)
        self.dropped += len(gone)
        self._lose(OUTBOX_FULL, len(gone))
        if self.dropped == len(gone) or self.dropped // 1000 != (self.dropped - len(gone)) // 1000:
            logger.warning(
                "MQTT outbox full (%d bytes): dropped the %d oldest messages, %d so far",
                self.max_bytes,
                len(gone),
                self.dropped,
            )

    def _write_failed(self, error: sqlite3.Error) -> None:
        """A write or commit failed (disk full, I/O error): back to what is on disk; the messages
        of the lost transaction and what follows go to memory (not durable)."""
        moved, removed, streams = self.file.rollback()
        self._unremoved.update(removed)
        self._dirty_seqs.update(streams)
        if self.file.at_page_limit():
            # SQLite's page limit (the budget) came before the rows' limit: the rows took more
            # pages than estimated. Drop an eighth; this transaction's messages go to memory.
            self._reason = OUTBOX_FULL
            try:
                self.file.begin()
                budget = self.file.budget.data_bytes
                self._drop_oldest(budget - self.file.bytes + max(1, budget // 8))
                self.file.commit()
            except sqlite3.OperationalError:
                self.file.rollback()
        else:
            self._disk_full(error)
        for message in moved:
            self._keep_in_memory(message)

    def _disk_full(self, error: BaseException) -> None:
        # SQLite says "disk I/O error" when it cannot map its wal-index on a full disk
        full = "full" in str(error) or free_bytes(self.path) < self._room_needed()
        self._reason = DISK_FULL if full else WRITE_ERROR
        self.full.started(str(error), self.memory_max_bytes)
        self._next_probe = self._clock() + self.probe_interval_s
        if self.file.is_open:
            try:  # the WAL's frames into the database: its space can then be written again
                self.file.checkpoint()
            except sqlite3.OperationalError as e:
                logger.debug("MQTT outbox: checkpoint on a full disk failed: %s", e)

    def _keep_in_memory(self, message: OutboxMessage) -> bool:
        if self._memory_bytes + message.size > self.memory_max_bytes:
            self._lose(self._reason)  # the newest goes: the older ones may be on the wire
            return False
        self._memory[message.id] = message
        self._memory_bytes += message.size
        self.not_durable += 1
        self.full.counted(not_durable=1)
        return True

    def _lose(self, reason: str, n: int = 1) -> None:
        if n:
            self.lost[reason] += n
            self.full.counted(lost=n)

    def remove(self, ids: Sequence[int]) -> int:
        """Forget acknowledged messages (unknown ids are ignored); returns how many went."""
        if not ids:
            return 0
        with self._lock:
            gone = 0
            wanted = sorted(self._unremoved)  # acknowledged before; a full disk kept them
            for message_id in ids:
                message = self._memory.pop(message_id, None)
                if message is not None:
                    self._memory_bytes -= message.size
                    gone += 1
                elif message_id not in self._unremoved:
                    wanted.append(message_id)
            if not wanted or not self.file.is_open:
                return gone
            self._unremoved.update(i for i in wanted if i <= self.file.committed_id)
            try:
                found = self.file.delete(wanted)
                self._unremoved.difference_update(wanted)
                self._maybe_commit()
            except sqlite3.OperationalError as e:
                self._write_failed(e)
                return gone
            asked = set(ids)
            return gone + len([i for i in found if i in asked])

    def _maybe_commit(self) -> None:
        # the transaction's pages are WAL frames until the commit: keep them inside the WAL budget
        file = self.file
        if file.in_tx and (
            file.tx_writes >= self.commit_batch or file.tx_bytes >= file.budget.wal_bytes // 4
        ):
            file.commit()

    def flush(self) -> None:
        """Commit the open transaction now (on disk afterwards, unless the disk is full)."""
        with self._lock:
            try:
                self.file.commit()
            except sqlite3.OperationalError as e:
                self._write_failed(e)

    def flush_if_due(self) -> bool:
        """Commit when the open transaction is ``commit_interval_s`` old; True if it committed.
        While the disk is full: the periodic summary, and a probe for room every
        ``probe_interval_s``."""
        with self._lock:
            if self.full.active:
                self.full.tick()
                self._probe_if_due()
            file = self.file
            if file.in_tx and self._clock() - file.tx_started >= self.commit_interval_s:
                self.flush()
                return not file.in_tx
            return False

    def _probe_if_due(self) -> None:
        """Ends the full-disk episode once the file system has room and a write commits (the
        sequences, so that seqs sent from memory are not given again after a restart)."""
        now = self._clock()
        if now < self._next_probe:
            return
        self._next_probe = now + self.probe_interval_s
        if free_bytes(self.path) < self._room_needed():
            return  # still full: nothing is written
        try:
            if not self.file.is_open:  # it could not be opened at the start
                self._merge_seqs(self.file.open())
            self.file.checkpoint()
            self.file.touch()
            self._write_seqs()
            if self._unremoved:
                self._unremoved.difference_update(self.file.delete(sorted(self._unremoved)))
            self.file.commit()
        except (sqlite3.OperationalError, PublishError) as e:
            _, removed, streams = self.file.rollback()
            self._unremoved.update(removed)
            self._dirty_seqs.update(streams)
            logger.debug("MQTT outbox: still cannot write: %s", e)
            return
        self.full.ended()

    def _room_needed(self) -> int:
        """Free bytes that count as "the disk has room again": the WAL's share, at most
        RESUME_FREE_BYTES (a small file system may never have the whole share free)."""
        return min(self.file.budget.wal_bytes, RESUME_FREE_BYTES)

    def next_due_in(self) -> Optional[float]:
        """Seconds until :meth:`flush_if_due` has work (None: nothing pending)."""
        with self._lock:
            if self.full.active:
                return max(0.0, min(self._next_probe - self._clock(), self.commit_interval_s))
            if not self.file.in_tx:
                return None
            return max(0.0, self.file.tx_started + self.commit_interval_s - self._clock())

    # -- reading --------------------------------------------------------------------------

    def pending(self, after_id: int, limit: int) -> List[OutboxMessage]:
        """Up to ``limit`` messages with ids above ``after_id``, oldest first: COMMITTED ones
        and those kept in memory while the disk is full."""
        with self._lock:
            rows = []  # type: List[OutboxMessage]
            if self.file.is_open:
                rows = self.file.rows(after_id, int(limit) + len(self._unremoved))
            found = [m for m in rows if m.id not in self._unremoved]
            if self._memory:
                found.extend(m for m in self._memory.values() if m.id > after_id)
                found.sort(key=lambda m: m.id)
        return found[: int(limit)]

    @property
    def budget(self) -> "Budget":
        return self.file.budget

    def seq(self, stream_id: str) -> Optional[int]:
        """The last ``seq`` given to ``stream_id`` (None: none yet)."""
        with self._lock:
            return self._seqs.get(stream_id)

    @property
    def messages(self) -> int:
        """Messages on disk, not yet acknowledged."""
        return self.file.count - len(self._unremoved)

    @property
    def bytes(self) -> int:
        return self.file.bytes

    @property
    def memory_messages(self) -> int:
        """Messages held in memory only (not durable), waiting for the broker."""
        return len(self._memory)

    @property
    def durable(self) -> bool:
        """False while the disk is full (new messages are kept in memory)."""
        return not self.full.active

    def disk_bytes(self) -> int:
        """Bytes the outbox's files take on disk now."""
        return disk_bytes(self.path)
