"""The chunks a device has asked for and not yet received: a bounded request window.

At most ``size`` chunks are in flight at a time, so an update never takes more than
``size x chunk_bytes`` of the connection that results are published on; a chunk that does not
come within the request timeout (a broker restart lost it) is asked for again.
"""

from typing import Dict, List, Tuple

from . import protocol
from .chunks import ChunkMap


class RequestWindow:
    def __init__(self, size: int) -> None:
        self.size = size
        self._asked: Dict[Tuple[str, int], float] = {}  # (file, index) -> when

    def __len__(self) -> int:
        return len(self._asked)

    def clear(self) -> None:
        self._asked.clear()

    def done(self, name: str, index: int) -> None:
        """A chunk arrived, or arrived damaged: either way it is no longer awaited."""
        self._asked.pop((name, index), None)

    def stale(self, now: float, timeout: float) -> bool:
        """True when the newest request is older than ``timeout`` (the window is cleared)."""
        if self._asked and now - max(self._asked.values()) > timeout:
            self._asked.clear()
            return True
        return False

    def fill(
        self, update: str, maps: Dict[str, ChunkMap], now: float
    ) -> List[protocol.ChunkRequest]:
        """The requests that fill the window up with missing chunks, lowest first."""
        room = self.size - len(self._asked)
        wanted: Dict[str, List[int]] = {}
        for name, chunks in maps.items():
            if room <= 0:
                break
            for index in chunks.missing(self.size + len(self._asked)):
                if room > 0 and (name, index) not in self._asked:
                    wanted.setdefault(name, []).append(index)
                    self._asked[(name, index)] = now
                    room -= 1
        return [protocol.ChunkRequest(update, name, _ranges(ix)) for name, ix in wanted.items()]


def _ranges(indices: List[int]) -> List[Tuple[int, int]]:
    ranges: List[Tuple[int, int]] = []
    for i in sorted(indices):
        if ranges and ranges[-1][1] == i:
            ranges[-1] = (ranges[-1][0], i + 1)
        else:
            ranges.append((i, i + 1))
    return ranges
