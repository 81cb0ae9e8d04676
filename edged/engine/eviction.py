"""Engine cache upkeep: LRU eviction to a size cap, and leftovers of interrupted writes.

Both respect the per-fingerprint locks of :class:`~edged.engine.cache.EngineCache`: an entry
being built or quarantined, and a staging directory with a live writer, are left alone.
"""

import errno
import logging
import os
import shutil
from typing import TYPE_CHECKING, List, Optional, Sequence

from .entry import HEX_FINGERPRINT, EntryState

if TYPE_CHECKING:  # pragma: no cover
    from .cache import EngineCache  # noqa: F401

logger = logging.getLogger(__name__)


def evict(cache: "EngineCache", cap: int, protect: Sequence[str] = ()) -> List[str]:
    """Remove least recently used entries of ``cache`` until ``entries/`` fits ``cap`` bytes.

    Entries in ``protect`` and entries whose fingerprint lock is held (being
    rebuilt or quarantined right now) are skipped. Returns the removed names.
    """
    if cap <= 0:
        return []
    states = cache.entries()
    total = sum(s.size_bytes for s in states)
    removed = []  # type: List[str]
    keep = set(protect)
    for state in sorted(states, key=lambda s: s.last_used):
        if total <= cap:
            break
        if state.name in keep or not _remove_if_unlocked(cache, state):
            continue
        total -= state.size_bytes
        removed.append(state.name)
        logger.info(
            "engine cache: evicted %s (%d bytes, least recently used)",
            state.name,
            state.size_bytes,
        )
    return removed


def _remove_if_unlocked(cache: "EngineCache", state: EntryState) -> bool:
    fp = str((state.manifest or {}).get("fingerprint", ""))
    if not HEX_FINGERPRINT.match(fp):
        return cache.remove(state.name)  # unreadable manifest: no lock to respect
    lock = cache.lock(fp)
    if not lock.acquire(blocking=False):
        return False
    try:
        return cache.remove(state.name)
    finally:
        lock.release()


def clean_tmp(cache: "EngineCache", fingerprint: Optional[str] = None) -> List[str]:
    """Remove leftovers of interrupted writes.

    With ``fingerprint`` (caller holds its lock): that fingerprint's staging
    directories. Without: every staging directory whose fingerprint lock is
    free (no live writer), and eviction leftovers.
    """
    cache.ensure()
    folder = cache._dir("tmp")
    removed = []  # type: List[str]
    for item in sorted(os.listdir(folder)):
        fp = item.split(".", 1)[0]
        path = os.path.join(folder, item)
        if fingerprint is not None:
            if fp != fingerprint:
                continue
            shutil.rmtree(path, ignore_errors=True)
        elif HEX_FINGERPRINT.match(fp):
            lock = cache.lock(fp)
            if not lock.acquire(blocking=False):
                continue
            try:
                shutil.rmtree(path, ignore_errors=True)
            finally:
                lock.release()
        elif fp == "evict" and not _pid_alive(item):
            shutil.rmtree(path, ignore_errors=True)
        else:
            continue
        removed.append(item)
        logger.info("engine cache: removed leftover %s", path)
    return removed


def _pid_alive(item: str) -> bool:
    try:
        pid = int(item.split(".")[1])
    except (IndexError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM
    return True
