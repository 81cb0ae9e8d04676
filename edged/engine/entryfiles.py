"""One engine cache entry on disk: its file names, manifest and engine checks, safe names.

:class:`~edged.engine.cache.EngineCache` decides what to do with an entry; the functions here
only read and check, and never raise for a damaged entry: they return why it is unusable.
"""

import errno
import json
import os
import re
from typing import Any, Dict, List, Optional, Tuple

from ..errors import EngineError
from .fingerprint import sha256_file

ENGINE_FILE = "model.engine"
MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HEX = re.compile(r"^[0-9a-f]{64}$")


def tree_bytes(path: str) -> int:
    """Bytes of every file under ``path`` (files that vanish meanwhile count 0)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def read_manifest(path: str) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """(manifest, None) for the entry directory ``path``, or (None, why it is unusable)."""
    try:
        with open(os.path.join(path, MANIFEST_FILE), "rb") as f:
            manifest = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        return None, "manifest.json is missing"
    except (OSError, ValueError) as e:
        return None, f"manifest.json is unreadable ({e})"
    except RecursionError:
        return None, "manifest.json is unreadable (nested too deeply)"
    if not isinstance(manifest, dict) or manifest.get("manifest_version") != MANIFEST_VERSION:
        return None, f"manifest.json is not a version {MANIFEST_VERSION} manifest"
    for key in ("fingerprint", "inputs", "engine_sha256", "engine_bytes"):
        if key not in manifest:
            return None, f"manifest.json lacks {key}"
    return manifest, None


def engine_problem(path: str, manifest: Dict[str, Any]) -> Optional[str]:
    """Why the entry's engine file does not match its manifest (size, sha256), or None."""
    engine = os.path.join(path, ENGINE_FILE)
    try:
        size = os.path.getsize(engine)
    except OSError:
        return "model.engine is missing"
    if size != manifest["engine_bytes"]:
        return "model.engine has {} bytes, the manifest says {} (truncated?)".format(
            size, manifest["engine_bytes"]
        )
    try:
        digest = sha256_file(engine)
    except OSError as e:
        return f"model.engine is unreadable ({e.strerror or e})"
    if digest != manifest["engine_sha256"]:
        return "model.engine's sha256 does not match the manifest (damaged)"
    return None


def safe_name(name: str) -> str:
    """``name`` if it is safe as one path component, else EngineError."""
    if not _SAFE.match(name) or name in (".", ".."):
        raise EngineError(f"invalid cache entry name {name!r}")
    return name


def is_fingerprint(text: str) -> bool:
    """Whether ``text`` is a fingerprint (64 lowercase hex digits)."""
    return bool(_HEX.match(text))


def check_fingerprint(fingerprint: str) -> None:
    """EngineError unless ``fingerprint`` is a fingerprint (used in lock and tmp names)."""
    if not _HEX.match(fingerprint):
        raise EngineError(f"invalid engine fingerprint {fingerprint!r}")


def listdir_sorted(folder: str) -> List[str]:
    """The names in ``folder``, sorted; none when it does not exist."""
    try:
        return sorted(os.listdir(folder))
    except FileNotFoundError:
        return []


def mtime_of(path: str) -> float:
    """Modification time of ``path``; 0.0 when it cannot be read."""
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def pid_alive(item: str) -> bool:
    """Whether the process named in a ``tmp/`` item (``<fingerprint>.<pid>.<rnd>``) lives."""
    try:
        pid = int(item.split(".")[1])
    except (IndexError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM
    return True
