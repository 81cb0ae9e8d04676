"""The model-update protocol over MQTT: topics and the chunk frame.

Topics, under the device's subtree so that one broker ACL pattern per device covers them
(docs/model-updates.md, docs/mqtt.md "Access control")::

    <prefix>/<device>/update/desired     retained, operator -> device: the signed manifest of the
    <prefix>/groups/<group>/update/desired   version the device (or group) should run
    <prefix>/<device>/update/request     device -> operator: chunks wanted (JSON)
    <prefix>/<device>/update/chunk       operator -> device: one chunk (binary frame)
    <prefix>/<device>/update/status      retained, device -> all: state, progress, versions

The desired-state message IS the signed manifest: a device that was offline during a push
gets it from the broker when it reconnects and converges; one that already runs that version
ignores it. Model bytes are never retained (they would replay to every new subscriber):
devices pull chunks by asking for the ones they lack, as AWS IoT's MQTT file streams do.

A chunk frame is ``u16 header length | header JSON | data``; the header names the update
(the manifest's sha256), the file, the chunk index and the sha256 of the data, so a chunk
damaged on the way is dropped and asked for again; the signed whole-file sha256 decides.
"""

import hashlib
import json
import struct
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from ..errors import UpdateError
from ..signing import canonical

#: a request names at most this many chunk ranges (keeps requests small)
MAX_REQUEST_RANGES = 64
MAX_REQUEST_BYTES = 16 * 1024
_HEADER = struct.Struct(">H")
MAX_HEADER_BYTES = 1024


class UpdateTopics:
    """The update topics of one device under one prefix."""

    def __init__(self, prefix: str, device_id: str, groups: Sequence[str] = ()) -> None:
        self.prefix = prefix
        self.device_id = device_id
        self.base = f"{prefix}/{device_id}/update"
        self.groups = list(groups)

    @property
    def desired(self) -> str:
        return self.base + "/desired"

    def group_desired(self, group: str) -> str:
        return f"{self.prefix}/groups/{group}/update/desired"

    @property
    def desired_topics(self) -> List[str]:
        return [self.desired] + [self.group_desired(g) for g in self.groups]

    @property
    def request(self) -> str:
        return self.base + "/request"

    @property
    def chunk(self) -> str:
        return self.base + "/chunk"

    @property
    def status(self) -> str:
        return self.base + "/status"


def device_of(topic: str, prefix: str, leaf: str) -> str:
    """The device id in ``<prefix>/<device>/update/<leaf>``, or "" when it is not one."""
    head = prefix + "/"
    tail = "/update/" + leaf
    if not (topic.startswith(head) and topic.endswith(tail)):
        return ""
    device = topic[len(head) : -len(tail)]
    return "" if "/" in device or not device else device


class ChunkRequest(NamedTuple):
    update: str  # manifest sha256
    file: str
    ranges: List[Tuple[int, int]]  # half-open [start, end)

    def encode(self) -> bytes:
        return canonical.encode(
            {"update": self.update, "file": self.file, "ranges": [list(r) for r in self.ranges]}
        )

    @classmethod
    def decode(cls, data: bytes) -> "ChunkRequest":
        doc = canonical.decode(data, MAX_REQUEST_BYTES, "chunk request")
        try:
            ranges = [(int(a), int(b)) for a, b in doc["ranges"]][:MAX_REQUEST_RANGES]
            request = cls(str(doc["update"]), str(doc["file"]), ranges)
        except (KeyError, TypeError, ValueError) as e:
            raise UpdateError(f"chunk request: malformed ({type(e).__name__})") from None
        if any(not 0 <= a < b for a, b in request.ranges):
            raise UpdateError("chunk request: empty or negative range")
        return request


class Chunk(NamedTuple):
    update: str
    file: str
    index: int  # type: ignore[assignment]  # a field, shadowing tuple.index on purpose
    data: bytes


def encode_chunk(chunk: Chunk) -> bytes:
    header = json.dumps(
        {
            "update": chunk.update,
            "file": chunk.file,
            "index": chunk.index,
            "sha256": hashlib.sha256(chunk.data).hexdigest(),
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    return _HEADER.pack(len(header)) + header + chunk.data


def decode_chunk(frame: bytes, max_data: int) -> Chunk:
    """Raises UpdateError for a frame that is malformed, too large or damaged."""
    if len(frame) < _HEADER.size:
        raise UpdateError("chunk: shorter than its header")
    (size,) = _HEADER.unpack_from(frame)
    if size > MAX_HEADER_BYTES or _HEADER.size + size > len(frame):
        raise UpdateError("chunk: header length out of range")
    try:
        header = json.loads(frame[_HEADER.size : _HEADER.size + size].decode("utf-8"))
        update, name = str(header["update"]), str(header["file"])
        index, digest = int(header["index"]), str(header["sha256"])
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise UpdateError(f"chunk: malformed header ({type(e).__name__})") from None
    data = frame[_HEADER.size + size :]
    if len(data) > max_data:
        raise UpdateError(f"chunk: {len(data)} bytes, more than the chunk size {max_data}")
    if hashlib.sha256(data).hexdigest() != digest:
        raise UpdateError(f"chunk {name}#{index}: damaged (sha256 mismatch)")
    return Chunk(update, name, index, data)


def chunk_header(frame: bytes) -> Optional[Tuple[str, int]]:
    """(file, index) a frame claims to carry, even when its data is damaged; None if unreadable."""
    try:
        (size,) = _HEADER.unpack_from(frame)
        header = json.loads(frame[_HEADER.size : _HEADER.size + size].decode("utf-8"))
        return str(header["file"]), int(header["index"])
    except (struct.error, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None


def status_payload(fields: Dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
