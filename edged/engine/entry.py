"""Engine cache entries: the files of one entry, its manifest, and the checks of both.

An entry is a directory ``entries/<name>/`` holding the serialized engine, a manifest of
every cache-key input with the engine's size and sha256, and the time of its last use
(layout: :mod:`edged.engine.cache`). Nothing here writes: :class:`~edged.engine.cache.EngineCache`
publishes, quarantines and evicts entries; this module reads and verifies them.
"""

import json
import os
import re
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from ..errors import EngineError
from .fingerprint import differences, fingerprint_of, sha256_file

ENGINE_FILE = "model.engine"
MANIFEST_FILE = "manifest.json"
LAST_USED_FILE = "last_used"
REASON_FILE = "reason.txt"
MANIFEST_VERSION = 1
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
HEX_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")


def tree_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


class CacheEntry(NamedTuple):
    """A validated (or, from :meth:`EngineCache.entries`, merely present) cache entry."""

    name: str
    path: str
    manifest: Dict[str, Any]
    size_bytes: int
    last_used: float

    @property
    def engine_path(self) -> str:
        return os.path.join(self.path, ENGINE_FILE)

    @property
    def fingerprint(self) -> str:
        return str(self.manifest.get("fingerprint", ""))

    def read_engine(self) -> bytes:
        with open(self.engine_path, "rb") as f:
            return f.read()


class EntryState(NamedTuple):
    """One directory under ``entries/`` as ``edged cache list/verify`` see it."""

    name: str
    path: str
    manifest: Optional[Dict[str, Any]]
    size_bytes: int
    last_used: float
    problem: Optional[str]  # None: the entry is internally consistent


def validate_entry(
    path: str,
    fingerprint: Optional[str] = None,
    inputs: Optional[Dict[str, Any]] = None,
    environment: Optional[Dict[str, Any]] = None,
    check_engine: bool = True,
) -> Tuple[Optional[CacheEntry], Optional[str]]:
    """(CacheEntry, None) for a good entry, (partial entry or None, problem) otherwise.

    ``fingerprint``/``inputs``/``environment``, when given, must match what the manifest
    recorded; ``check_engine`` also checks the engine file's size and sha256.
    """
    name = os.path.basename(path)
    manifest, problem = read_manifest(path)
    if manifest is None:
        return None, problem
    size = tree_bytes(path)
    entry = CacheEntry(name, path, manifest, size, last_used(path, manifest))
    recorded = manifest["inputs"]  # read_manifest checked it is there
    if fingerprint_of(recorded) != manifest.get("fingerprint"):
        return entry, "manifest fingerprint does not match its recorded inputs (edited?)"
    if fingerprint is not None and manifest["fingerprint"] != fingerprint:
        return entry, "fingerprint {} expected, manifest has {}".format(
            fingerprint[:12], str(manifest["fingerprint"])[:12]
        )
    if inputs is not None and recorded != inputs:
        return entry, "manifest does not match the live build inputs: " + "; ".join(
            differences(recorded, inputs)[:4]
        )
    if environment is not None and recorded.get("environment") != environment:
        return entry, "built for another environment: " + "; ".join(
            differences(recorded.get("environment"), environment, "environment")[:4]
        )
    if check_engine:
        problem = check_engine_file(path, manifest)
        if problem is not None:
            return entry, problem
    return entry, None


def last_used(path: str, manifest: Dict[str, Any]) -> float:
    """The entry's recorded last use (wall-clock seconds), else its build time."""
    try:
        with open(os.path.join(path, LAST_USED_FILE)) as f:
            return float(f.read().strip())
    except (OSError, ValueError):
        return float(manifest.get("built_at_epoch", 0.0) or 0.0)


def read_manifest(path: str) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
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


def check_engine_file(path: str, manifest: Dict[str, Any]) -> Optional[str]:
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
    if not SAFE_NAME.match(name) or name in (".", ".."):
        raise EngineError(f"invalid cache entry name {name!r}")
    return name


def check_fingerprint(fingerprint: str) -> None:
    if not HEX_FINGERPRINT.match(fingerprint):
        raise EngineError(f"invalid engine fingerprint {fingerprint!r}")


def listdir(folder: str) -> List[str]:
    try:
        return sorted(os.listdir(folder))
    except FileNotFoundError:
        return []


def mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0
