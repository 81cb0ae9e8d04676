"""Engine errors, all :class:`~edged.errors.EngineError` (the CLI maps them like any EdgedError).

EngineError (edged.errors)
 ├── EngineBuildError        TensorRT refused to parse or build (the message says why)
 │    └── EngineCancelled    the build was asked to stop (shutdown, timeout)
 ├── EngineDeserializeError  (edged.errors) a cached engine does not load: quarantine, rebuild
 └── LockTimeout             (edged.engine.lock) another process held the build lock too long
"""

from ..errors import EngineDeserializeError, EngineError

__all__ = ["EngineBuildError", "EngineCancelled", "EngineDeserializeError"]


class EngineBuildError(EngineError):
    """TensorRT could not parse the model or build the engine."""


class EngineCancelled(EngineBuildError):
    """The build was cancelled before it finished."""
