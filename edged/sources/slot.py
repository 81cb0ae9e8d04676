"""A bounded latest-frame slot between a capture thread and its consumer.

``put`` never blocks: when the slot is full the OLDEST item is dropped and
counted, so a camera faster than inference costs drops, never latency or
memory (Frigate drops and counts ``skipped_fps``,
frigate/video/ffmpeg.py). Capacity 1 keeps only the newest frame.

Several slots may share one :class:`threading.Condition` so that one worker
batching several streams can wait for "any slot has something" without
polling (pass the same ``condition`` to each slot).
"""

import collections
import threading
from typing import Deque, Generic, Optional, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """Holds at most ``capacity`` items; a put when full replaces the oldest."""

    def __init__(self, capacity: int = 1, condition: Optional[threading.Condition] = None) -> None:
        if capacity < 1:
            raise ValueError(f"slot capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self._items: Deque[T] = collections.deque()
        self._cond = condition if condition is not None else threading.Condition()
        self._puts = 0
        self._drops = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def condition(self) -> threading.Condition:
        return self._cond

    def put(self, item: T) -> bool:
        """Store ``item``; returns True when an older item was dropped to make room."""
        with self._cond:
            dropped = len(self._items) >= self._capacity
            if dropped:
                self._items.popleft()
                self._drops += 1
            self._items.append(item)
            self._puts += 1
            self._cond.notify_all()
        return dropped

    def get(self, timeout: Optional[float] = None) -> Optional[T]:
        """The oldest held item, waiting up to ``timeout`` s (None: forever); None if none came."""
        with self._cond:
            if not self._items:
                self._cond.wait_for(lambda: bool(self._items), timeout)
            return self._take()

    def get_nowait(self) -> Optional[T]:
        with self._cond:
            return self._take()

    def _take(self) -> Optional[T]:
        if not self._items:
            return None
        item = self._items.popleft()
        self._cond.notify_all()  # a producer may be waiting for room (wait_for_room)
        return item

    def wait_for_room(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until a put would drop nothing; True if there is room.

        For producers that can pause (a file, unlike a camera): see the supervisor.
        """
        with self._cond:
            return self._cond.wait_for(lambda: len(self._items) < self._capacity, timeout)

    def clear(self) -> int:
        """Discard what is held (e.g. when a stream restarts); returns how many."""
        with self._cond:
            n = len(self._items)
            self._items.clear()
            return n

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    @property
    def puts(self) -> int:
        """Items ever put."""
        with self._cond:
            return self._puts

    @property
    def drops(self) -> int:
        """Items dropped unread because a newer one arrived while the slot was full."""
        with self._cond:
            return self._drops
