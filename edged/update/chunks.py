"""Which chunks of an update have arrived: a bitmap that is persisted with the journal.

The device pulls chunks by asking for the ones it lacks (AWS IoT's MQTT file streams ask the
same way, with a bitmap of wanted blocks), so a broker outage or a daemon restart resumes
where it stopped instead of starting over.
"""

from typing import Iterator, List, Tuple


class ChunkMap:
    """A fixed-size bitmap of ``count`` chunks."""

    __slots__ = ("count", "_bits", "_have")

    def __init__(self, count: int, bits: bytes = b"") -> None:
        if count < 0:
            raise ValueError("negative chunk count")
        self.count = count
        size = (count + 7) // 8
        if bits and len(bits) != size:
            raise ValueError(f"bitmap of {len(bits)} bytes for {count} chunks")
        self._bits = bytearray(bits or bytes(size))
        # clear bits past the end so that equal maps are equal bytes
        if count % 8 and self._bits:
            self._bits[-1] &= (1 << (count % 8)) - 1
        self._have = sum(bin(b).count("1") for b in self._bits)

    def __contains__(self, index: int) -> bool:
        return 0 <= index < self.count and bool(self._bits[index >> 3] & (1 << (index & 7)))

    def add(self, index: int) -> bool:
        """Mark chunk ``index`` received; False when it already was."""
        if not 0 <= index < self.count:
            raise IndexError(f"chunk {index} of {self.count}")
        mask = 1 << (index & 7)
        if self._bits[index >> 3] & mask:
            return False
        self._bits[index >> 3] |= mask
        self._have += 1
        return True

    @property
    def received(self) -> int:
        return self._have

    @property
    def complete(self) -> bool:
        return self._have == self.count

    def missing(self, limit: int) -> List[int]:
        """Up to ``limit`` missing chunk indices, lowest first."""
        out: List[int] = []
        for i in self._missing():
            if len(out) >= limit:
                break
            out.append(i)
        return out

    def missing_ranges(self, limit: int) -> List[Tuple[int, int]]:
        """Up to ``limit`` half-open ranges ``[start, end)`` of missing chunks."""
        ranges: List[Tuple[int, int]] = []
        for i in self._missing():
            if ranges and ranges[-1][1] == i:
                ranges[-1] = (ranges[-1][0], i + 1)
            elif len(ranges) >= limit:
                break
            else:
                ranges.append((i, i + 1))
        return ranges

    def _missing(self) -> Iterator[int]:
        for byte_index, byte in enumerate(self._bits):
            if byte == 0xFF:
                continue
            for bit in range(8):
                i = byte_index * 8 + bit
                if i >= self.count:
                    return
                if not byte & (1 << bit):
                    yield i

    def to_hex(self) -> str:
        return bytes(self._bits).hex()

    @classmethod
    def from_hex(cls, count: int, text: str) -> "ChunkMap":
        return cls(count, bytes.fromhex(text))
