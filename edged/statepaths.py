"""Where edged keeps its state and its caches by default (the outbox, the people counters,
engines, compiled kernels).

``$STATE_DIRECTORY`` (systemd >= 240 sets it from ``StateDirectory=edged``, systemd.exec(5)),
else ``~/.local/state/edged``: JetPack 4.6's systemd 237 does not set it, and the unit's home is
/var/lib/edged. Below every package that keeps state, so none imports another for a path.
"""

import os
from typing import Dict, Optional


def state_dir() -> str:
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return state or os.path.join(os.path.expanduser("~"), ".local", "state", "edged")


def default_outbox_path(device_id: str) -> str:
    """The MQTT outbox's SQLite file of ``device_id``."""
    return os.path.join(state_dir(), f"mqtt-outbox-{device_id}.sqlite3")


def cache_dir(environ: Optional[Dict[str, str]] = None) -> str:
    """``$CACHE_DIRECTORY`` (systemd ``CacheDirectory=edged``), else ``~/.cache/edged``
    (``$XDG_CACHE_HOME``, XDG Base Directory Specification)."""
    env = os.environ if environ is None else environ
    systemd = env.get("CACHE_DIRECTORY", "").split(":")[0]
    if systemd:
        return systemd
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "edged")
