"""MQTT payloads: the versioned result contract, status, stream state and command replies.

The contract is published as JSON Schema (``edged/schemas/*.v1.json``, copied to
``docs/schemas/``). Shape choices, against other daemons: DeepStream's
(nvmsgconv) minimal schema names boxes ``topleftx ...`` and
has no sequence number; Frigate sends events, not frames. edged sends one message
per published frame with

* ``seq``: per stream, +1 for every message edged publishes, kept in the outbox
  file across restarts, so a gap means a lost message and a repeat a duplicate:
  consumers dedupe by ``(device_id, stream_id, seq)``;
* ``frame_seq``: the capture's frame number in this process (``boot_id``); gaps
  are frames dropped before inference or not published (publish modes);
* capture time as RFC 3339 UTC with milliseconds and as epoch milliseconds;
* boxes as ``{x1, y1, x2, y2}`` in source pixels and ``bbox_norm`` in 0..1.

Every payload is compact JSON (ASCII) and bounded: detections beyond
``max_bytes`` are cut, lowest confidence first, and ``truncated`` says so.
"""

import datetime
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .. import __version__
from ..errors import PublishError
from ..pipeline.results import InferenceResult

#: Version of every payload shape in this module (also the ``v1`` in result topics).
SCHEMA_VERSION = 1
SCHEMA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "schemas")
#: The published schemas, by payload kind (file ``<kind>.v1.json``).
SCHEMA_NAMES = ("result", "status", "stream-state", "command", "command-reply", "counts", "event")

#: Why a result was published (publish modes, see :mod:`edged.mqtt.policy`).
REASONS = ("frame", "change", "heartbeat")

_EPOCH = datetime.datetime(1970, 1, 1)


def schema_path(kind: str) -> str:
    return os.path.join(SCHEMA_DIR, f"{kind}.v{SCHEMA_VERSION}.json")


def load_schema(kind: str) -> Dict[str, Any]:
    """A payload schema: one of :data:`SCHEMA_NAMES`."""
    if kind not in SCHEMA_NAMES:
        raise ValueError("no payload schema {!r} (have: {})".format(kind, ", ".join(SCHEMA_NAMES)))
    with open(schema_path(kind)) as f:
        return json.load(f)


def encode(payload: Mapping[str, Any]) -> bytes:
    """Compact, ASCII-only JSON (every consumer can read it; no float NaN)."""
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("ascii")


def timestamp(epoch_s: float) -> Tuple[str, int]:
    """``("2024-01-15T10:30:00.123Z", 1705314600123)``: the same instant, consistently rounded."""
    epoch_ms = int(round(epoch_s * 1000.0))
    moment = _EPOCH + datetime.timedelta(milliseconds=epoch_ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z", epoch_ms


def _round(value: float, digits: int) -> float:
    return round(float(value), digits)


def detection_dict(item: Any, width: int, height: int) -> Dict[str, Any]:
    x1, y1, x2, y2 = (float(v) for v in item.bbox)
    w = float(width) if width else 1.0
    h = float(height) if height else 1.0

    def norm(value: float, size: float) -> float:
        return _round(min(1.0, max(0.0, value / size)), 4)

    out = {
        "label": item.label,
        "class_id": int(item.class_id),
        "confidence": _round(item.confidence, 4),
        "bbox": {
            "x1": _round(x1, 1),
            "y1": _round(y1, 1),
            "x2": _round(x2, 1),
            "y2": _round(y2, 1),
        },
        "bbox_norm": {"x1": norm(x1, w), "y1": norm(y1, h), "x2": norm(x2, w), "y2": norm(y2, h)},
    }  # type: Dict[str, Any]
    if getattr(item, "track_id", None) is not None:  # edged/tracking: optional in schema v1
        out["track_id"] = int(item.track_id)
    return out


def classification_dict(item: Any) -> Dict[str, Any]:
    return {
        "label": item.label,
        "class_id": int(item.class_id),
        "confidence": _round(item.confidence, 4),
    }


def result_payload(
    result: InferenceResult,
    device_id: str,
    boot_id: str,
    seq: int,
    model: Mapping[str, Any],
    reason: str,
    max_bytes: int,
) -> bytes:
    """The v1 result message of ``result`` as bytes, at most ``max_bytes`` long.

    ``model`` is :func:`model_dict`'s output. When the items do not fit, the ones
    with the lowest confidence are left out and ``truncated`` is true; ``count``
    always says how many the model found.

    Raises:
        PublishError: not even a message without items fits in ``max_bytes``.
    """
    width, height = (int(v) for v in result.frame_size)
    captured_at, captured_ms = timestamp(result.captured_wall)
    detector = result.task == "detection"
    items = sorted(result.items, key=lambda i: -float(i.confidence))  # stable: ties keep order
    if detector:
        encoded: List[Dict[str, Any]] = [detection_dict(i, width, height) for i in items]
    else:
        encoded = [classification_dict(i) for i in items]
    message = {
        "schema_version": SCHEMA_VERSION,
        "device_id": device_id,
        "stream_id": result.stream_id,
        "seq": int(seq),
        "frame_seq": int(result.seq),
        "boot_id": boot_id,
        "captured_at": captured_at,
        "captured_at_ms": captured_ms,
        "frame": {"width": width, "height": height},
        "model": dict(model),
        "latency_ms": {k: _round(v, 2) for k, v in sorted(result.latency_ms.items())},
        "reason": reason,
        "count": len(encoded),
        "truncated": False,
    }  # type: Dict[str, Any]
    key = "detections" if detector else "classifications"
    return _fit(message, key, encoded, max_bytes)


def _fit(message: Dict[str, Any], key: str, items: Sequence[Any], max_bytes: int) -> bytes:
    """``message`` with as many leading ``items`` as fit in ``max_bytes`` (binary search)."""
    message[key] = list(items)
    data = encode(message)
    if len(data) <= max_bytes:
        return data
    message["truncated"] = True
    low, high = 0, len(items) - 1  # the most items that fit lies in [low, high]
    while low < high:
        middle = (low + high + 1) // 2
        message[key] = list(items[:middle])
        if len(encode(message)) <= max_bytes:
            low = middle
        else:
            high = middle - 1
    message[key] = list(items[:low])
    data = encode(message)
    if len(data) > max_bytes:
        raise PublishError(
            "a result of stream {} does not fit in mqtt.max_payload_bytes {} even without "
            "items ({} bytes)".format(message.get("stream_id"), max_bytes, len(data))
        )
    return data


def model_dict(
    name: str, version: str, sha256: str, precision: str, backend: str, task: str
) -> Dict[str, Any]:
    """The ``model`` object of a result (``sha256`` shortened to 12 hex digits)."""
    return {
        "name": name,
        "version": version,
        "sha256": (sha256 or "")[:12],
        "precision": precision,
        "backend": backend,
        "task": task,
    }


# -- status (birth / LWT / stopped), as frigate/comms/mqtt.py --------------------------------------


def status_payload(
    state: str,
    device_id: str,
    boot_id: str,
    now: float,
    models: Optional[Sequence[Mapping[str, Any]]] = None,
    streams: Optional[Sequence[str]] = None,
) -> bytes:
    """``online`` (birth: version, models, streams), ``offline`` (the LWT) or ``stopped``."""
    at, _ = timestamp(now)
    message = {
        "schema_version": SCHEMA_VERSION,
        "state": state,
        "device_id": device_id,
        "boot_id": boot_id,
        "time": at,
    }  # type: Dict[str, Any]
    if state == "online":
        message["version"] = __version__
        message["models"] = [dict(m) for m in (models or [])]
        message["streams"] = list(streams or [])
    return encode(message)


def stream_state_payload(
    device_id: str, status: Mapping[str, Any], model: Optional[str], now: float
) -> bytes:
    """The retained state of one stream, from a ``SourceStatus.to_dict()``."""
    since, _ = timestamp(now - float(status.get("state_age_s") or 0.0))
    at, _ = timestamp(now)
    size = status.get("source_size")
    message = {
        "schema_version": SCHEMA_VERSION,
        "device_id": device_id,
        "stream_id": status["stream_id"],
        "state": status["state"],
        "since": since,
        "time": at,
        "source": status.get("source"),
        "model": model,
        "fps": _round(status.get("fps") or 0.0, 2),
        "frames": int(status.get("frames") or 0),
        "reconnects": int(status.get("reconnects") or 0),
        "last_error": status.get("last_error"),
        "frame": {"width": int(size[0]), "height": int(size[1])} if size else None,
        "engine": status.get("engine"),
    }
    return encode(message)


def reply_payload(
    request_id: Any, ok: bool, result: Any = None, error: Optional[str] = None
) -> bytes:
    """``{request_id, ok, result}`` or ``{request_id, ok: false, error}``."""
    message = {"schema_version": SCHEMA_VERSION, "request_id": request_id, "ok": bool(ok)}
    if ok:
        message["result"] = result
    else:
        message["error"] = error or "failed"
    return encode(message)
