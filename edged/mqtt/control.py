"""What the MQTT service needs from the daemon, behind one small interface.

:class:`DaemonControl` is the seam: :class:`DaemonAdapter` reads a running
:class:`~edged.daemon.Daemon` through :class:`~edged.daemon_view.DaemonReader` (its
frozen ``snapshot()``, ``model_view()``, ``engines`` and ``request_reload``); tests of
the MQTT service pass a stand-in.
Everything here is called from the MQTT threads, never from the daemon's: it
only reads, and a reload is requested the way SIGHUP requests it (the main
thread applies it).
"""

import dataclasses
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from ..daemon_view import DaemonReader, ModelView
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

    def __init__(self, daemon: DaemonReader, stop: Optional[threading.Event] = None) -> None:
        self._daemon = daemon
        self._stop = stop if stop is not None else threading.Event()

    def _model(self, name: str) -> Dict[str, Any]:
        view = self._daemon.model_view(name)  # per result: one model, not a whole snapshot
        if view is None:
            return DaemonControl.model_info(self, name)
        return _model_dict(view)

    def models(self) -> List[Dict[str, Any]]:
        return [_model_dict(view) for _, view in sorted(self._daemon.snapshot().models.items())]

    def model_info(self, name: str) -> Dict[str, Any]:
        return self._model(name)

    def stream_ids(self) -> List[str]:
        return sorted(self._daemon.snapshot().streams)

    def stream_states(self) -> Dict[str, Tuple[Dict[str, Any], Optional[str]]]:
        """Running streams' capture states, each with its model's engine state; and, while a
        model's TensorRT engine builds, the streams waiting for it as ``stopped``
        with ``engine.state: building`` -- so a first start is visible, not silent."""
        snapshot = self._daemon.snapshot()
        engines = self._daemon.engines
        engine_states = engines.states() if engines is not None else {}
        states: Dict[str, Tuple[Dict[str, Any], Optional[str]]] = {}
        for stream_id, view in snapshot.streams.items():
            status: Dict[str, Any] = dict(view.status.to_dict())
            status["engine"] = _engine_state(engine_states.get(view.model))
            states[stream_id] = (status, view.model)
        config = snapshot.config
        for stream_id, stream in sorted(config.streams.items()) if config else ():
            engine = engine_states.get(stream.model, {})
            if stream.enabled and stream_id not in states and engine.get("state") == "building":
                waiting = {"stream_id": stream_id, "source": stream.source.display,
                           "state": "stopped", "engine": _engine_state(engine)}  # fmt: skip
                states[stream_id] = (waiting, stream.model)
        return states

    def effective_config(self) -> Dict[str, Any]:
        return redact_config(self._daemon.snapshot().config)

    def reload(self, timeout: float) -> Tuple[bool, str]:
        before = self._daemon.snapshot()
        self._daemon.request_reload()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stop.is_set():
            now = self._daemon.snapshot()
            if now.reloads_applied > before.reloads_applied:
                return True, "configuration reloaded"
            if now.reloads_rejected > before.reloads_rejected:
                detail = now.last_reload_error
                return False, "reload rejected, the running configuration is kept: {}".format(
                    detail or "see the daemon log"
                )
            self._stop.wait(RELOAD_POLL_S)
        return False, f"the reload did not finish within {timeout:.0f} s"

    def latest(self, stream_id: str) -> Optional[Tuple[Any, InferenceResult]]:
        stream = self._daemon.snapshot().streams.get(stream_id)
        if stream is None or stream.last_inferred is None:
            return None
        frame, result = stream.last_inferred
        return frame.bgr(), result  # drawn and JPEG-encoded: BGR, whatever the camera gave

    def mqtt_config(self) -> Any:
        config = self._daemon.snapshot().config
        return config.mqtt if config is not None else None

    def tracking_stages(self) -> List[Any]:
        from ..pipeline.tracking import stages_of

        return list(stages_of(self._daemon))


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


def _model_dict(view: ModelView) -> Dict[str, Any]:
    return model_dict(view.name, view.version, view.sha256, view.precision, view.backend, view.kind)
