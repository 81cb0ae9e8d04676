"""TensorRT engines: build, fingerprint, cache, lock, progress.

* :mod:`edged.backends.tensorrt_api` -- which TensorRT is installed and what its API has.
* :mod:`.builder` -- ONNX/UFF -> serialized engine; precision, DLA, profiles, timing cache.
* :mod:`.plan` -- the builder's decisions (precision, device, profiles) as pure functions.
* :mod:`.fingerprint`, :mod:`.platform` -- the cache key over every build input.
* :mod:`.cache`, :mod:`.lock` -- crash-safe entries with manifests, per-fingerprint locks, LRU.
* :mod:`.service` -- get-or-build in one process (``edged build``, the build child).
* :mod:`.runner` -- the build child process and its JSON-lines protocol.
* :mod:`.manager` -- the daemon's API: :class:`EngineManager` (BUILDING state, stats()).
"""

from .cache import CacheEntry, EngineCache, default_cache_dir
from .errors import EngineBuildError, EngineCancelled, EngineDeserializeError
from .manager import EngineManager
from .options import BuildOptions, options_for_model

__all__ = [
    "BuildOptions",
    "CacheEntry",
    "EngineBuildError",
    "EngineCache",
    "EngineCancelled",
    "EngineDeserializeError",
    "EngineManager",
    "default_cache_dir",
    "options_for_model",
]
