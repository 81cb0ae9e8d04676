"""The engine cache on disk: fingerprinted entries, crash-safe writes, quarantine, LRU cap.

Layout under the cache directory (``engine.cache_dir``)::

    entries/<name>/model.engine    the serialized engine
    entries/<name>/manifest.json   every cache-key input, obtained precision, build time, sha256
    entries/<name>/last_used       wall-clock time of the last use (LRU eviction)
    locks/<fingerprint>.lock       one flock per fingerprint (edged.engine.lock)
    tmp/<fingerprint>.<pid>.<rnd>/ an entry being written
    quarantine/<name>.<time>/      entries that failed a check, with reason.txt
    timing/<platform>.cache        TensorRT timing caches, per TensorRT version and GPU
    calibration/<sha256>.cache     INT8 calibration caches produced from image folders

An entry is written into ``tmp/``, every file fsynced, the directory renamed
into ``entries/`` and ``entries/`` fsynced (:mod:`edged.fsutil`; jetson-inference#946
wrote 0-byte engines): a crash leaves either the whole entry or none of it,
and leftovers in ``tmp/`` are removed by the next build of that fingerprint
(under its lock) or by ``edged cache prune``. An entry is used only when its
manifest matches the live inputs and the engine's sha256 matches; anything
else is moved to ``quarantine/`` with the reason, never deleted silently.
"""

import json
import logging
import os
import shutil
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Set, Tuple

from ..errors import EngineError
from ..fsutil import atomic_write, fsync_dir, write_file_synced
from ..statepaths import cache_dir
from . import entryfiles
from .fingerprint import differences, fingerprint_of
from .lock import FileLock

logger = logging.getLogger(__name__)

LAST_USED_FILE = "last_used"
REASON_FILE = "reason.txt"
#: Quarantined entries kept for inspection; older ones are deleted.
KEEP_QUARANTINED = 5

SUBDIRS = ("entries", "locks", "tmp", "quarantine", "timing", "calibration")


def default_cache_dir(environ: Optional[Dict[str, str]] = None) -> str:
    """``$CACHE_DIRECTORY/engines`` (systemd ``CacheDirectory=edged``), else the user's cache."""
    return os.path.join(cache_dir(environ), "engines")


# -- entries ----------------------------------------------------------------------------------


class CacheEntry(NamedTuple):
    """A validated (or, from :meth:`EngineCache.entries`, merely present) cache entry."""

    name: str
    path: str
    manifest: Dict[str, Any]
    size_bytes: int
    last_used: float

    @property
    def engine_path(self) -> str:
        return os.path.join(self.path, entryfiles.ENGINE_FILE)

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


class EngineCache:
    """One cache directory. Safe to share between processes (locks per fingerprint).

    Args:
        root: the cache directory (created on first use).
        max_bytes: size cap of ``entries/`` for :meth:`evict` (0: none).
        clock: wall-clock time for ``last_used`` (LRU across restarts needs wall time).
    """

    def __init__(
        self,
        root: str,
        max_bytes: int = 0,
        clock: Callable[[], float] = time.time,
        keep_quarantined: int = KEEP_QUARANTINED,
    ) -> None:
        self.root = os.path.abspath(root)
        self.max_bytes = int(max_bytes)
        self._clock = clock
        self._keep_quarantined = keep_quarantined
        self._ready = False
        #: entries this object moved to quarantine/ (the daemon's metrics read the change)
        self.quarantine_count = 0

    def _dir(self, sub: str, *parts: str) -> str:
        return os.path.join(self.root, sub, *parts)

    def ensure(self) -> None:
        """Create the directory tree.

        Raises:
            EngineError: the cache directory cannot be created or written
                (a read-only model folder is no place for engines: jetson-inference#1644).
        """
        if self._ready:
            return
        try:
            for sub in SUBDIRS:
                os.makedirs(self._dir(sub), exist_ok=True)
        except OSError as e:
            raise EngineError(
                f"{self.root}: cannot create the engine cache ({e.strerror or e}); "
                "set engine.cache_dir to a writable directory"
            ) from e
        if not os.access(self._dir("tmp"), os.W_OK):
            raise EngineError(f"{self.root}: engine cache is not writable; set engine.cache_dir")
        self._ready = True

    # -- locks --------------------------------------------------------------------------------

    def lock(
        self,
        fingerprint: str,
        timeout_s: Optional[float] = None,
        on_wait: Optional[Callable[[str], None]] = None,
        stop: Any = None,
    ) -> FileLock:
        self.ensure()
        entryfiles.check_fingerprint(fingerprint)
        return FileLock(self._dir("locks", fingerprint + ".lock"), timeout_s, on_wait, stop)

    # -- lookup and validation ----------------------------------------------------------------

    def lookup(
        self, name: str, fingerprint: str, inputs: Dict[str, Any], quarantine: bool = True
    ) -> Optional[CacheEntry]:
        """The entry ``name`` if it is valid for ``fingerprint`` and ``inputs``, else None.

        An invalid entry is quarantined with the reason when ``quarantine`` is
        True -- call that only while holding the fingerprint's lock.
        """
        self.ensure()
        path = self._dir("entries", entryfiles.safe_name(name))
        if not os.path.isdir(path):
            return None
        entry, problem = self.validate(path, fingerprint, inputs)
        if problem is None:
            self.touch(entry)
            return entry
        logger.warning("engine cache entry %s is not usable: %s", name, problem)
        if quarantine:
            self.quarantine(name, problem)
        return None

    def validate(
        self,
        path: str,
        fingerprint: Optional[str] = None,
        inputs: Optional[Dict[str, Any]] = None,
        environment: Optional[Dict[str, Any]] = None,
        check_engine: bool = True,
    ) -> Tuple[Any, Optional[str]]:
        """(CacheEntry, None) for a good entry, (partial entry or None, problem) otherwise."""
        name = os.path.basename(path)
        manifest, problem = entryfiles.read_manifest(path)
        if manifest is None:
            return None, problem
        size = entryfiles.tree_bytes(path)
        entry = CacheEntry(name, path, manifest, size, self._last_used(path, manifest))
        recorded: Dict[str, Any] = manifest.get("inputs") or {}
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
            problem = entryfiles.engine_problem(path, manifest)
            if problem is not None:
                return entry, problem
        return entry, None

    def touch(self, entry: CacheEntry) -> None:
        """Record a use (LRU); a failure to record is not a reason to refuse the engine."""
        try:
            atomic_write(
                os.path.join(entry.path, LAST_USED_FILE), f"{self._clock():.3f}\n".encode("ascii")
            )
        except OSError as e:
            logger.warning("cannot record use of %s: %s", entry.path, e)

    def _last_used(self, path: str, manifest: Dict[str, Any]) -> float:
        try:
            with open(os.path.join(path, LAST_USED_FILE)) as f:
                return float(f.read().strip())
        except (OSError, ValueError):
            return float(manifest.get("built_at_epoch", 0.0) or 0.0)

    # -- writing ------------------------------------------------------------------------------

    def publish(
        self, name: str, fingerprint: str, engine: bytes, manifest: Dict[str, Any]
    ) -> CacheEntry:
        """Write an entry crash-safely and make it visible atomically (hold the lock).

        An existing entry of the same name is quarantined first ("replaced").

        Raises:
            EngineError: the cache cannot be written (disk full, read-only).
        """
        self.ensure()
        name = entryfiles.safe_name(name)
        staging = self._dir("tmp", f"{fingerprint}.{os.getpid()}.{os.urandom(4).hex()}")
        final = self._dir("entries", name)
        try:
            os.mkdir(staging)
            write_file_synced(os.path.join(staging, entryfiles.ENGINE_FILE), engine)
            write_file_synced(
                os.path.join(staging, entryfiles.MANIFEST_FILE),
                (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8"),
            )
            write_file_synced(
                os.path.join(staging, LAST_USED_FILE), f"{self._clock():.3f}\n".encode("ascii")
            )
            fsync_dir(staging)
            if os.path.exists(final):
                self.quarantine(name, "replaced by a new build")
            os.rename(staging, final)
            fsync_dir(self._dir("entries"))
        except OSError as e:
            shutil.rmtree(staging, ignore_errors=True)
            raise EngineError(
                f"{final}: cannot write engine cache entry ({e.strerror or e})"
            ) from e
        logger.info("engine cached: %s (%d bytes)", final, len(engine))
        return CacheEntry(name, final, manifest, entryfiles.tree_bytes(final), self._clock())

    def quarantine(self, name: str, reason: str) -> Optional[str]:
        """Move entry ``name`` aside with ``reason``; returns the new path (None if absent)."""
        self.ensure()
        source = self._dir("entries", entryfiles.safe_name(name))
        target = self._dir(
            "quarantine",
            "{}.{}.{}".format(
                name,
                time.strftime("%Y%m%dT%H%M%S", time.gmtime(self._clock())),
                os.urandom(3).hex(),
            ),
        )
        try:
            os.rename(source, target)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise EngineError(f"{source}: cannot quarantine ({e.strerror or e})") from e
        fsync_dir(self._dir("entries"))
        try:
            with open(os.path.join(target, REASON_FILE), "w") as f:
                f.write(reason + "\n")
        except OSError as e:
            logger.warning("cannot write %s: %s", os.path.join(target, REASON_FILE), e)
        self.quarantine_count += 1
        logger.warning("engine cache entry %s quarantined to %s: %s", name, target, reason)
        self._trim_quarantine()
        return target

    def _trim_quarantine(self) -> None:
        folder = self._dir("quarantine")
        items = sorted(
            os.listdir(folder), key=lambda n: entryfiles.mtime_of(os.path.join(folder, n))
        )
        for stale in items[: max(0, len(items) - self._keep_quarantined)]:
            shutil.rmtree(os.path.join(folder, stale), ignore_errors=True)

    # -- listing, eviction, cleaning ----------------------------------------------------------

    def entries(self, check_engine: bool = False) -> List[EntryState]:
        """Every directory under ``entries/`` (read-only: creates nothing)."""
        out = []  # type: List[EntryState]
        folder = self._dir("entries")
        for name in entryfiles.listdir_sorted(folder):
            path = os.path.join(folder, name)
            if not os.path.isdir(path):
                continue
            entry, problem = self.validate(path, check_engine=check_engine)
            manifest = entry.manifest if entry is not None else None
            size = entry.size_bytes if entry is not None else entryfiles.tree_bytes(path)
            last = entry.last_used if entry is not None else entryfiles.mtime_of(path)
            out.append(EntryState(name, path, manifest, size, last, problem))
        return out

    def total_bytes(self) -> int:
        return sum(e.size_bytes for e in self.entries())

    def remove(self, name: str) -> bool:
        """Delete an entry: rename it out of ``entries/`` first (atomic), then delete."""
        source = self._dir("entries", entryfiles.safe_name(name))
        doomed = self._dir("tmp", f"evict.{os.getpid()}.{os.urandom(4).hex()}")
        try:
            os.rename(source, doomed)
        except FileNotFoundError:
            return False
        fsync_dir(self._dir("entries"))
        shutil.rmtree(doomed, ignore_errors=True)
        return True

    def evict(self, max_bytes: Optional[int] = None, protect: Sequence[str] = ()) -> List[str]:
        """Remove least recently used entries until ``entries/`` fits ``max_bytes``.

        Entries in ``protect`` and entries whose fingerprint lock is held (being
        rebuilt or quarantined right now) are skipped. Returns the removed names.
        """
        cap = self.max_bytes if max_bytes is None else max_bytes
        if cap <= 0:
            return []
        states = self.entries()
        total = sum(s.size_bytes for s in states)
        removed = []  # type: List[str]
        keep: Set[str] = set(protect)
        for state in sorted(states, key=lambda s: s.last_used):
            if total <= cap:
                break
            if state.name in keep or not self._remove_if_unlocked(state):
                continue
            total -= state.size_bytes
            removed.append(state.name)
            logger.info(
                "engine cache: evicted %s (%d bytes, least recently used)",
                state.name,
                state.size_bytes,
            )
        return removed

    def _remove_if_unlocked(self, state: EntryState) -> bool:
        fp = str((state.manifest or {}).get("fingerprint", ""))
        if not entryfiles.is_fingerprint(fp):
            return self.remove(state.name)  # unreadable manifest: no lock to respect
        lock = self.lock(fp)
        if not lock.acquire(blocking=False):
            return False
        try:
            return self.remove(state.name)
        finally:
            lock.release()

    def clean_tmp(self, fingerprint: Optional[str] = None) -> List[str]:
        """Remove leftovers of interrupted writes.

        With ``fingerprint`` (caller holds its lock): that fingerprint's staging
        directories. Without: every staging directory whose fingerprint lock is
        free (no live writer), and eviction leftovers.
        """
        self.ensure()
        folder = self._dir("tmp")
        removed = []  # type: List[str]
        for item in sorted(os.listdir(folder)):
            fp = item.split(".", 1)[0]
            path = os.path.join(folder, item)
            if fingerprint is not None:
                if fp != fingerprint:
                    continue
                shutil.rmtree(path, ignore_errors=True)
            elif entryfiles.is_fingerprint(fp):
                lock = self.lock(fp)
                if not lock.acquire(blocking=False):
                    continue
                try:
                    shutil.rmtree(path, ignore_errors=True)
                finally:
                    lock.release()
            elif fp == "evict" and not entryfiles.pid_alive(item):
                shutil.rmtree(path, ignore_errors=True)
            else:
                continue
            removed.append(item)
            logger.info("engine cache: removed leftover %s", path)
        return removed

    def leftovers(self) -> List[str]:
        """Names under ``tmp/`` (interrupted writes, evictions in progress)."""
        return entryfiles.listdir_sorted(self._dir("tmp"))

    def quarantined(self) -> List[str]:
        return entryfiles.listdir_sorted(self._dir("quarantine"))

    def clear_quarantine(self) -> int:
        names = self.quarantined()
        for name in names:
            shutil.rmtree(self._dir("quarantine", name), ignore_errors=True)
        return len(names)

    # -- side stores: timing and calibration caches ---------------------------------------------

    def read_blob(self, kind: str, key: str) -> Optional[bytes]:
        path = self._blob_path(kind, key)
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            logger.warning("cannot read %s: %s", path, e)
            return None

    def write_blob(self, kind: str, key: str, data: bytes) -> None:
        try:
            atomic_write(self._blob_path(kind, key), data)
        except OSError as e:  # losing a timing cache costs time, not correctness
            logger.warning("cannot write %s cache %s: %s", kind, key, e)

    def _blob_path(self, kind: str, key: str) -> str:
        if kind not in ("timing", "calibration"):
            raise ValueError(kind)
        self.ensure()
        return self._dir(kind, entryfiles.safe_name(key) + ".cache")
