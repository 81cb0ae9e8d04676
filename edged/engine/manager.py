"""The daemon's engine API: cached engines, builds in a child process, state, counters.

The daemon never builds in its own process: a cache miss runs
``python -m edged build --worker`` through :class:`~edged.engine.runner.BuildRunner`, so an
OOM kill on a Nano kills the build and the daemon stays up::

    engines = EngineManager(config.engine, notifier=daemon.notifier, cancel=stop_event)
    backend = engines.load_backend(model_config, artifact, key)   # hit, or build + load

keeps systemd's start timeout extended (``EXTEND_TIMEOUT_USEC``) and writes
``STATUS=building engine NAME: 45% ...`` while the child builds; a reload calls it on its own
thread while the previous engine keeps serving (``ensure(..., extend_timeout=False)``).

A failed build leaves the cache (and so the old engine) untouched and says why
(the EngineBuildError, ``states()[name]["message"]``). ``stats()`` holds the counters
the metrics exporter reads (cache hits/misses, builds by result, build seconds)
and :meth:`add_listener` delivers each event as it happens.
"""

import logging
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from .. import sdnotify
from ..backends.tensorrt_api import import_tensorrt
from ..errors import EngineError
from .cache import CacheEntry, EngineCache, default_cache_dir
from .errors import EngineBuildError, EngineCancelled, EngineDeserializeError
from .options import BuildOptions, options_for_model
from .platform import LivePlatform, PlatformInfo, PlatformProvider
from .progress import LogProgress, ProgressEvent, describe
from .runner import BUILT, CANCELLED, FAILED, HIT, KILLED, TIMEOUT, BuildRequest, BuildRunner
from .service import Target, target_for

logger = logging.getLogger(__name__)

# Per-model states (states()[name]["state"]).
IDLE, BUILDING, READY, FAILED_STATE = "idle", "building", "ready", "failed"
#: systemd start-timeout headroom, re-sent while a blocking build runs.
EXTEND_S = 60.0
#: STATUS= progress lines at most this often.
STATUS_INTERVAL_S = 5.0

Listener = Callable[[Dict[str, Any]], None]


class EngineManager:
    """Cached TensorRT engines for the daemon. Thread-safe.

    Args:
        config: the top-level :class:`edged.config.EngineConfig`.
        notifier: systemd notifier (EXTEND_TIMEOUT_USEC, STATUS) for blocking builds.
        runner: the child-process runner (tests shrink its timeouts).
        platform: the platform provider (tests change the GPU identity with it).
        trt: the TensorRT module (imported from ``config.tensorrt_module`` when None).
        backend_factory: CacheEntry -> Backend (default: the TensorRT backend).
    """

    def __init__(
        self,
        config: Any,
        notifier: Optional[sdnotify.Notifier] = None,
        runner: Optional[BuildRunner] = None,
        platform: Optional[PlatformProvider] = None,
        trt: Any = None,
        backend_factory: Optional[Callable[[CacheEntry], Any]] = None,
        extend_s: float = EXTEND_S,
        status_interval_s: float = STATUS_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        cancel: Optional[threading.Event] = None,
    ) -> None:
        self.config = config
        # set when the daemon stops: a blocking build at start-up or reload ends with it, so
        # `systemctl stop` during a 20-minute Nano build does not wait for systemd's SIGKILL
        self._cancel = cancel or threading.Event()
        self.cache = EngineCache(
            config.cache_dir or default_cache_dir(), int(config.cache_max_mb) << 20
        )
        self.notifier = notifier or sdnotify.Notifier()
        self.runner = runner or BuildRunner(timeout_s=float(config.build_timeout_s))
        self._platform_provider = platform or LivePlatform()
        self._trt = trt
        self._backend_factory = backend_factory
        self._extend_s = extend_s
        self._status_interval_s = status_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._listeners: List[Listener] = []
        self._states = {}  # type: Dict[str, Dict[str, Any]]
        self._counters = {
            "cache_hits": 0,
            "cache_misses": 0,
            "quarantined": 0,
            "build_seconds_total": 0.0,
        }  # type: Dict[str, Any]
        self._builds = {r: 0 for r in (BUILT, HIT, FAILED, CANCELLED, KILLED, TIMEOUT)}
        self._last_seconds = {}  # type: Dict[str, float]

    # -- environment --------------------------------------------------------------------------

    @property
    def trt(self) -> Any:
        if self._trt is None:
            self._trt = import_tensorrt(self.config.tensorrt_module)
        return self._trt

    def platform(self) -> PlatformInfo:
        return self._platform_provider(self.trt)

    def options(self, model: Any) -> BuildOptions:
        return options_for_model(self.config, model)

    def target(self, model: Any, artifact: Any, key: Optional[str] = None) -> Target:
        return target_for(artifact, self.options(model), self.platform(), key)

    # -- cache --------------------------------------------------------------------------------

    def lookup(self, model: Any, artifact: Any, key: Optional[str] = None) -> Optional[CacheEntry]:
        """The valid cached engine, or None (also None while another process builds it)."""
        target = self.target(model, artifact, key)
        lock = self.cache.lock(target.fingerprint)
        if not lock.acquire(blocking=False):
            return None
        try:
            before = self.cache.quarantine_count
            entry = self.cache.lookup(target.name, target.fingerprint, target.inputs)
            if self.cache.quarantine_count != before:
                self._count_quarantine(model.name, "cache entry failed its checks")
            return entry
        finally:
            lock.release()

    def ensure(
        self,
        model: Any,
        artifact: Any,
        key: Optional[str] = None,
        cancel: Optional[threading.Event] = None,
        extend_timeout: bool = True,
    ) -> CacheEntry:
        """The model's engine: from the cache, else built in a child process (blocking).

        Raises:
            EngineBuildError: the build failed, was killed or timed out (message says why);
                the cache is unchanged.
            EngineCancelled: ``cancel`` was set.
        """
        entry = self.lookup(model, artifact, key)
        if entry is not None:
            self._bump("cache_hits")
            self._emit({"event": "cache_hit", "model": model.name, "entry": entry.path})
            self._set_state(
                model.name,
                state=READY,
                fraction=1.0,
                message="cached",
                entry=entry.path,
                precision=entry.manifest.get("precision_obtained"),
            )
            return entry
        self._bump("cache_misses")
        self._emit({"event": "cache_miss", "model": model.name})
        return self._build(model, artifact, key, cancel, extend_timeout)

    def _build(
        self,
        model: Any,
        artifact: Any,
        key: Optional[str],
        cancel: Optional[threading.Event],
        extend_timeout: bool,
    ) -> CacheEntry:
        platform = self.platform()
        request = BuildRequest(
            model_path=artifact.path,
            options=self.options(model),
            cache_dir=self.cache.root,
            model_name=model.name,
            key=key,
            cache_max_bytes=self.cache.max_bytes,
            tensorrt_module=self.config.tensorrt_module,
            platform=platform.as_dict(),
        )
        self._set_state(
            model.name,
            state=BUILDING,
            fraction=0.0,
            phase="prepare",
            message="",
            started=time.time(),
        )
        status = f"building engine {model.name}"
        logger.info("%s (child process, timeout %.0f s)", status, self.runner_timeout())
        on_progress = self._progress_sink(model.name, status)
        if extend_timeout:
            with sdnotify.TimeoutExtender(
                self.notifier,
                status,
                extend_s=self._extend_s,
                max_total_s=self.runner_timeout() + self._extend_s,
            ):
                outcome = self.runner.run(request, on_progress, cancel)
        else:
            outcome = self.runner.run(request, on_progress, cancel)
        self._record_build(model.name, outcome)
        if not outcome.ok:
            message = f"engine build for {model.name} {outcome.result}: {outcome.message}"
            self._set_state(model.name, state=FAILED_STATE, message=message)
            logger.error("%s (the previous engine, if any, stays in use)", message)
            raise (EngineCancelled if outcome.result == CANCELLED else EngineBuildError)(message)
        entry = self.lookup(model, artifact, key)
        if entry is None:
            message = (
                f"engine for {model.name} was built by the child but does not validate "
                f"in {self.cache.root}"
            )
            self._set_state(model.name, state=FAILED_STATE, message=message)
            raise EngineError(message)
        self._set_state(
            model.name,
            state=READY,
            fraction=1.0,
            message=outcome.result,
            entry=entry.path,
            precision=entry.manifest.get("precision_obtained"),
        )
        return entry

    def runner_timeout(self) -> float:
        return float(self.config.build_timeout_s)

    def _progress_sink(self, name: str, status: str) -> Callable[[ProgressEvent], None]:
        log = LogProgress(name)
        last = [-1e9]

        def sink(event: ProgressEvent) -> None:
            log(event)
            self._set_state(name, fraction=event.fraction, phase=event.phase, detail=event.detail)
            now = self._clock()
            if now - last[0] >= self._status_interval_s:
                last[0] = now
                self.notifier.status(f"{status}: {describe(event)}")

        return sink

    def load_backend(self, model: Any, artifact: Any, key: Optional[str] = None) -> Any:
        """:meth:`ensure` the engine and deserialize it; an engine TensorRT cannot deserialize is
        quarantined and rebuilt once (TensorRT's Python ``deserialize_cuda_engine`` returns None).
        A build ends early when the manager's ``cancel`` event is set.

        Raises:
            EngineCancelled: ``cancel`` was set during the build.
            EngineError: the rebuilt engine does not deserialize either (TensorRT/GPU mismatch).
            EngineBuildError, BackendError: as :meth:`ensure` and the backend.
        """
        entry = self.ensure(model, artifact, key, cancel=self._cancel)
        try:
            return self._make_backend(entry)
        except EngineDeserializeError as e:
            self._quarantine_entry(model.name, entry, str(e))
        entry = self.ensure(model, artifact, key, cancel=self._cancel)
        try:
            return self._make_backend(entry)
        except EngineDeserializeError as e:
            self._quarantine_entry(model.name, entry, str(e))
            raise EngineError(
                f"engine for {model.name} does not deserialize even after a rebuild -- "
                f"this TensorRT cannot run engines on this machine: {e}"
            ) from e

    def _make_backend(self, entry: CacheEntry) -> Any:
        if self._backend_factory is not None:
            return self._backend_factory(entry)
        from ..backends.tensorrt_backend import TensorRTBackend

        return TensorRTBackend.from_entry(entry, trt=self.trt)

    def _quarantine_entry(self, model: str, entry: CacheEntry, reason: str) -> None:
        """Quarantine ``entry`` if it is still the one in place (under its lock)."""
        with self.cache.lock(entry.fingerprint, timeout_s=self.runner_timeout()):
            current, problem = self.cache.validate(entry.path, entry.fingerprint)
            same = current is not None and current.manifest.get(
                "engine_sha256"
            ) == entry.manifest.get("engine_sha256")
            if same or problem is not None:
                self.cache.quarantine(entry.name, reason)
                self._count_quarantine(model, reason)

    def cancel_all(self) -> None:
        """Stop the running build, if any, and every later one (shutdown): sets ``cancel``."""
        self._cancel.set()

    # -- state and counters -------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """``listener(event_dict)`` for cache_hit, cache_miss, build_finished, quarantined.
        Called on the thread that did the work: keep it quick (increment a counter)."""
        with self._lock:
            self._listeners.append(listener)

    def _emit(self, event: Dict[str, Any]) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(dict(event))

    def _bump(self, counter: str, by: float = 1) -> None:
        with self._lock:
            self._counters[counter] += by

    def _count_quarantine(self, model: str, reason: str) -> None:
        self._bump("quarantined")
        self._emit({"event": "quarantined", "model": model, "reason": reason})

    def _record_build(self, model: str, outcome: Any) -> None:
        with self._lock:
            self._builds[outcome.result] = self._builds.get(outcome.result, 0) + 1
            if outcome.result == BUILT:
                seconds = float(outcome.info.get("build_seconds", outcome.seconds))
                self._counters["build_seconds_total"] += seconds
                self._last_seconds[model] = seconds
        self._emit(
            {
                "event": "build_finished",
                "model": model,
                "result": outcome.result,
                "seconds": outcome.seconds,
                "message": outcome.message,
            }
        )

    def _set_state(self, model: str, **fields: Any) -> None:
        with self._lock:
            state = self._states.setdefault(
                model, {"state": IDLE, "fraction": 0.0, "phase": "", "detail": "", "message": ""}
            )
            state.update(fields)

    def state(self, model: str) -> Dict[str, Any]:
        with self._lock:
            return dict(self._states.get(model, {"state": IDLE}))

    def states(self) -> Dict[str, Dict[str, Any]]:
        """Per model: state (idle/building/ready/failed), fraction, phase, detail, message."""
        with self._lock:
            return {name: dict(state) for name, state in self._states.items()}

    def stats(self) -> Dict[str, Any]:
        """Counters for metrics (all monotonic except ``building`` and ``build_seconds_last``).

        ``builds`` counts child-process outcomes by result: built, hit (another process built
        it first), failed, cancelled, killed (signal: OOM), timeout.
        """
        with self._lock:
            out = dict(self._counters)
            out["builds"] = dict(self._builds)
            out["build_seconds_last"] = dict(self._last_seconds)
            out["building"] = sorted(n for n, s in self._states.items() if s["state"] == BUILDING)
        return out
