"""The protocol between the daemon and its engine-build child process.

The parent (:mod:`edged.engine.runner`) writes one :class:`BuildRequest` as JSON on the child's
stdin; the child (:mod:`edged.engine.worker`) answers with JSON lines (``started``,
``waiting``, ``progress``, then ``result`` or ``error``) and an exit code. This module holds
what both sides must agree on, and how an exit is read (:func:`classify`).
"""

import json
import logging
import signal
import threading
from typing import IO, Any, Dict, List, NamedTuple, Optional

from ..errors import EngineError
from .options import BuildOptions

logger = logging.getLogger(__name__)

PROTOCOL = 1
EXIT_OK = 0
EXIT_INPUT = 2
EXIT_BUILD_FAILED = 3
EXIT_CANCELLED = 4

# Outcome results (the `result` label of edged_engine_builds_total).
HIT, BUILT, FAILED, CANCELLED, KILLED, TIMEOUT = (
    "hit",
    "built",
    "failed",
    "cancelled",
    "killed",
    "timeout",
)


class BuildRequest(NamedTuple):
    """What the child builds. ``key`` is a secret: it travels only on the child's stdin."""

    model_path: str
    options: BuildOptions
    cache_dir: str
    model_name: str = ""
    key: Optional[str] = None
    cache_max_bytes: int = 0
    tensorrt_module: str = "auto"
    force: bool = False
    lock_timeout_s: Optional[float] = None
    #: the parent's PlatformInfo values, so both sides compute the same fingerprint
    platform: Optional[Dict[str, str]] = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "protocol": PROTOCOL,
                "model_path": self.model_path,
                "model_name": self.model_name,
                "key": self.key,
                "options": self.options.to_dict(),
                "cache_dir": self.cache_dir,
                "cache_max_bytes": self.cache_max_bytes,
                "tensorrt_module": self.tensorrt_module,
                "force": self.force,
                "lock_timeout_s": self.lock_timeout_s,
                "platform": self.platform,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> "BuildRequest":
        data = json.loads(text)
        if data.pop("protocol", None) != PROTOCOL:
            raise EngineError(f"build request: unsupported protocol (expected {PROTOCOL})")
        data["options"] = BuildOptions.from_dict(data["options"])
        return cls(**data)

    def __repr__(self) -> str:  # never show the key
        return f"BuildRequest({self.model_path!r}, {self.options!r}, cache {self.cache_dir!r})"


class ChildOutcome(NamedTuple):
    result: str  # HIT, BUILT, FAILED, CANCELLED, KILLED, TIMEOUT
    message: str
    returncode: Optional[int]
    info: Dict[str, Any]  # the child's result line (entry, fingerprint, precision, ...)
    seconds: float  # wall time of the child
    stderr_tail: List[str]

    @property
    def ok(self) -> bool:
        return self.result in (HIT, BUILT)


class JsonLines:
    """Thread-safe JSON-lines writer (the worker's stdout)."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, event: str, **fields: Any) -> None:
        fields["event"] = event
        line = json.dumps(fields, sort_keys=True)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


def parse_line(raw: bytes) -> Optional[Dict[str, Any]]:
    try:
        event = json.loads(raw.decode("utf-8"))
    except ValueError:
        logger.debug("build child printed a non-protocol line: %r", raw[:200])
        return None
    return event if isinstance(event, dict) else None


def classify(
    returncode: int, final: Dict[str, Any], why: Optional[str], tail: List[str], seconds: float
) -> ChildOutcome:
    if returncode == EXIT_OK and final.get("event") == "result":
        result = HIT if final.get("result") == HIT else BUILT
        return ChildOutcome(result, f"engine {result}", returncode, final, seconds, tail)
    message = str(final.get("message") or "")
    if why is not None:
        result = why
        message = message or ("build cancelled" if why == CANCELLED else "build timed out")
    elif returncode == EXIT_CANCELLED:
        result = CANCELLED
    elif returncode is not None and returncode < 0:
        result = KILLED
        name = _signal_name(-returncode)
        message = "build process killed by {}{}".format(
            name, " (out of memory? see `dmesg`)" if -returncode == signal.SIGKILL else ""
        )
    else:
        result = FAILED
        if not message:
            message = "build process exited with code {}: {}".format(
                returncode, tail[-1] if tail else "no output"
            )
    return ChildOutcome(result, message, returncode, final, seconds, tail)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def outcome_fields(outcome: Any) -> Dict[str, Any]:
    manifest = outcome.entry.manifest
    return {
        "result": outcome.result,
        "entry": outcome.entry.path,
        "name": outcome.entry.name,
        "fingerprint": outcome.entry.fingerprint,
        "precision_obtained": manifest.get("precision_obtained"),
        "device_obtained": manifest.get("device_obtained"),
        "engine_bytes": manifest.get("engine_bytes"),
        "build_seconds": round(outcome.seconds, 3),
        "notes": manifest.get("notes", []),
        "waited": outcome.waited,
    }
