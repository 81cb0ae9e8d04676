"""Engine errors, all :class:`~edged.errors.EngineError` (the CLI maps them like any EdgedError).

EngineError (edged.errors)
 ├── EngineBuildError        TensorRT refused to parse or build (the message says why)
 │    └── EngineCancelled    the build was asked to stop (shutdown, timeout)
 ├── EngineDeserializeError  TensorRT returned None for a cached engine: quarantine, rebuild
 └── LockTimeout             (edged.engine.lock) another process held the build lock too long
"""

from ..errors import EngineError


class EngineBuildError(EngineError):
    """TensorRT could not parse the model or build the engine."""


class EngineCancelled(EngineBuildError):
    """The build was cancelled before it finished."""


class EngineDeserializeError(EngineError):
    """TensorRT could not deserialize an engine (``deserialize_cuda_engine`` returned None)."""
