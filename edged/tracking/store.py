"""The counters' persisted state: one small JSON file beside the MQTT outbox.

``{"version": 1, "streams": {stream: StreamCounter.state()}}``, replaced atomically
(temp file, fsync, rename: :func:`edged.engine.cache.atomic_write`) on every change of a
total, so that a crossing counted before a crash or kill -9 is still counted after it.
A file that cannot be read is moved aside (``.bad``), never silently overwritten.
"""

import json
import logging
import os
import threading
from typing import Any, Dict, Optional

from ..engine.cache import atomic_write

logger = logging.getLogger(__name__)

VERSION = 1
#: A counts file larger than this is not ours.
MAX_BYTES = 4 << 20


def default_counts_path(outbox_path: str, device_id: str) -> str:
    """``counts-<device>.json`` in the outbox's directory."""
    return os.path.join(os.path.dirname(os.path.abspath(outbox_path)), f"counts-{device_id}.json")


class CountsStore:
    """Reads once, writes the whole state on change; shared by the models' tracking stages
    (each saves its own streams, merged here under a lock)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.write_failures = 0
        self._lock = threading.Lock()
        self._streams: Optional[Dict[str, Dict[str, Any]]] = None

    def load(self) -> Dict[str, Dict[str, Any]]:
        """Stream -> saved counter state; {} when there is no usable file."""
        with self._lock:
            if self._streams is None:
                self._streams = self._read()
            return json.loads(json.dumps(self._streams))

    def _read(self) -> Dict[str, Dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                raw = f.read(MAX_BYTES + 1)
        except FileNotFoundError:
            return {}
        except OSError as e:
            logger.warning("counts file %s not readable (%s): counting starts from 0", self.path,
                           e.strerror)  # fmt: skip
            return {}
        try:
            if len(raw) > MAX_BYTES:
                raise ValueError(f"larger than {MAX_BYTES} bytes")
            data = json.loads(raw.decode("utf-8"))
            if not isinstance(data, dict) or data.get("version") != VERSION:
                raise ValueError(f"not a version {VERSION} counts file")
            streams = data.get("streams")
            if not isinstance(streams, dict):
                raise ValueError("no streams")
        except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            bad = self.path + ".bad"
            logger.error("counts file %s is unusable (%s): moved to %s, counting starts from 0",
                         self.path, e, bad)  # fmt: skip
            try:
                os.replace(self.path, bad)
            except OSError:
                pass
            return {}
        return {str(k): v for k, v in streams.items() if isinstance(v, dict)}

    def save(self, streams: Dict[str, Dict[str, Any]]) -> bool:
        """Merge these streams' states in and replace the file; False (logged, counted)
        when it cannot be written."""
        with self._lock:
            if self._streams is None:
                self._streams = self._read()
            self._streams.update(json.loads(json.dumps(streams)))
            return self._write(self._streams)

    def _write(self, streams: Dict[str, Dict[str, Any]]) -> bool:
        data = json.dumps({"version": VERSION, "streams": streams}, sort_keys=True)
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            atomic_write(self.path, data.encode("utf-8"))
            return True
        except OSError as e:
            self.write_failures += 1
            if self.write_failures == 1 or self.write_failures % 100 == 0:
                logger.error("counts file %s not written (%d failures so far): %s", self.path,
                             self.write_failures, e.strerror or e)  # fmt: skip
            return False
