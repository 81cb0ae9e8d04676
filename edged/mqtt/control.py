"""What the MQTT service needs from the daemon, behind one small interface.

:class:`DaemonControl` is the seam: :class:`DaemonAdapter` reads a running
:class:`~edged.daemon.Daemon` (its public ``config``, ``workers``, ``streams``,
``reloads`` and ``request_reload``); tests of the MQTT service pass a stand-in.
Everything here is called from the MQTT threads, never from the daemon's: it
only reads, and a reload is requested the way SIGHUP requests it (the main
thread applies it).
"""

import dataclasses
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from ..pipeline.results import InferenceResult
from ..redact import redact
from .payloads import model_dict

#: Config keys whose values are secrets: shown as "***" by ``get_config``.
SECRET_KEYS = frozenset(["key", "password"])
REDACTED = "***"
#: How often :meth:`DaemonAdapter.reload` looks whether the main thread is done.
RELOAD_POLL_S = 0.05


class DaemonControl:
    """The daemon as the MQTT service sees it (override every method)."""

    def models(self) -> List[Dict[str, Any]]:
        """``model_dict`` of every loaded model (birth message)."""
        return []

    def model_info(self, name: str) -> Dict[str, Any]:
        """``model_dict`` of one model, for result payloads."""
        return model_dict(name, "", "", "fp32", "unknown", "unknown")

    def stream_ids(self) -> List[str]:
        return []

    def stream_states(self) -> Dict[str, Tuple[Dict[str, Any], Optional[str]]]:
        """Per running stream: ``(SourceStatus.to_dict(), model name)``."""
        return {}

    def effective_config(self) -> Dict[str, Any]:
        """The running configuration with defaults filled in and secrets redacted."""
        return {}

    def reload(self, timeout: float) -> Tuple[bool, str]:
        """Apply the config file again; ``(applied, message)``."""
        return False, "reload is not available"

    def latest(self, stream_id: str) -> Optional[Tuple[Any, InferenceResult]]:
        """The newest ``(frame image, result)`` of a stream, or None."""
        return None

    def mqtt_config(self) -> Any:
        """The ``mqtt`` section of the running configuration (to notice changes)."""
        return None

    def tracking_stages(self) -> List[Any]:
        """The models' ``TrackingStage`` objects (edged/pipeline/tracking.py)."""
        return []


def redact_config(value: Any) -> Any:
    """A JSON-friendly copy of a config structure with secrets masked and URLs redacted."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in SECRET_KEYS and item is not None:
                out[str(key)] = REDACTED
            else:
                out[str(key)] = redact_config(item)
        return out
    if isinstance(value, (list, tuple)):
        return [redact_config(v) for v in value]
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return redact(str(value))


class DaemonAdapter(DaemonControl):
    """:class:`DaemonControl` of a running :class:`~edged.daemon.Daemon`."""

    def __init__(self, daemon: Any, stop: Optional[threading.Event] = None) -> None:
        self._daemon = daemon
        self._stop = stop if stop is not None else threading.Event()

    def _model(self, name: str) -> Dict[str, Any]:
        worker = self._daemon.workers.get(name)
        if worker is None:
            return DaemonControl.model_info(self, name)
        task = worker.task
        config = getattr(task, "config", None)
        backend = getattr(task, "backend", None)
        return model_dict(
            name,
            getattr(config, "version", "") or "",
            getattr(task, "model_sha256", "") or "",
            getattr(backend, "precision", None) or "fp32",
            getattr(backend, "name", None) or "unknown",
            getattr(task, "kind", "") or "unknown",
        )

    def models(self) -> List[Dict[str, Any]]:
        return [self._model(name) for name in sorted(list(self._daemon.workers))]

    def model_info(self, name: str) -> Dict[str, Any]:
        return self._model(name)

    def stream_ids(self) -> List[str]:
        return sorted(list(self._daemon.streams))

    def stream_states(self) -> Dict[str, Tuple[Dict[str, Any], Optional[str]]]:
        """Running streams' capture states, each with its model's engine state; and, while a
        model's TensorRT engine builds (issue 6), the streams waiting for it as ``stopped``
        with ``engine.state: building`` -- so a first start is visible, not silent."""
        daemon = self._daemon
        engines = getattr(daemon, "engines", None)
        engine_states = engines.states() if engines is not None else {}
        states = {}
        for stream_id, stream in list(daemon.streams.items()):
            status = stream.supervisor.status().to_dict()
            status["engine"] = _engine_state(engine_states.get(stream.worker))
            states[stream_id] = (status, stream.worker)
        config = getattr(daemon, "config", None)
        for stream_id, stream in sorted(config.streams.items()) if config else ():
            engine = engine_states.get(stream.model, {})
            if stream.enabled and stream_id not in states and engine.get("state") == "building":
                waiting = {"stream_id": stream_id, "source": stream.source.display,
                           "state": "stopped", "engine": _engine_state(engine)}  # fmt: skip
                states[stream_id] = (waiting, stream.model)
        return states

    def effective_config(self) -> Dict[str, Any]:
        return redact_config(self._daemon.config)

    def reload(self, timeout: float) -> Tuple[bool, str]:
        reloads = self._daemon.reloads
        applied, rejected = reloads["applied"], reloads["rejected"]
        self._daemon.request_reload()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stop.is_set():
            if reloads["applied"] > applied:
                return True, "configuration reloaded"
            if reloads["rejected"] > rejected:
                detail = getattr(self._daemon, "last_reload_error", None)
                return False, "reload rejected, the running configuration is kept: {}".format(
                    detail or "see the daemon log"
                )
            self._stop.wait(RELOAD_POLL_S)
        return False, f"the reload did not finish within {timeout:.0f} s"

    def latest(self, stream_id: str) -> Optional[Tuple[Any, InferenceResult]]:
        stream = self._daemon.streams.get(stream_id)
        if stream is None:
            return None
        worker = self._daemon.workers.get(stream.worker)
        held = getattr(worker, "latest", {}).get(stream_id) if worker is not None else None
        if held is None:
            return None
        frame, result = held
        return frame.image, result

    def mqtt_config(self) -> Any:
        config = self._daemon.config
        return getattr(config, "mqtt", None) if config is not None else None

    def tracking_stages(self) -> List[Any]:
        workers = list(self._daemon.workers.values())
        return [w.tracking for w in workers if getattr(w, "tracking", None) is not None]


def _engine_state(state: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The engine manager's per-model state for the stream-state payload (None: no engine)."""
    if not state:
        return None
    return {
        "state": state.get("state", "idle"),
        "fraction": round(float(state.get("fraction") or 0.0), 2),
        "phase": state.get("phase") or None,
        "message": state.get("message") or None,
    }
