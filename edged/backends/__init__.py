"""Inference backends behind one interface (``base.Backend``); ``create_backend`` picks one.

``tensorrt_api`` finds the installed TensorRT and detects what its API offers; the engine
builder (edged.engine, above this package) uses it too.
"""

from typing import Any, Optional

from ..errors import ConfigError
from ..modelfile import ModelArtifact
from .base import Backend, MemoryOptions, TensorSpec, find_tensor

__all__ = ["Backend", "MemoryOptions", "TensorSpec", "create_backend", "find_tensor", "BACKENDS"]

BACKENDS = ("onnxruntime", "tensorrt")


def create_backend(
    name: str,
    artifact: ModelArtifact,
    threads: Optional[int] = None,
    engine: Optional[Any] = None,
    memory: Optional[MemoryOptions] = None,
) -> Backend:
    """Load ``artifact`` into the backend called ``name``.

    ``tensorrt`` runs a built engine: ``engine`` is its
    :class:`~edged.engine.cache.CacheEntry`, which
    :meth:`edged.engine.EngineManager.ensure` returns. ``memory`` applies to onnxruntime
    only (TensorRT sizes its memory when the engine is built).

    Raises:
        ConfigError: unknown backend name.
        ModelError / BackendError: the backend cannot load the model.
    """
    if name == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(artifact, threads=threads or None, memory=memory)
    if name == "tensorrt":
        if engine is None:
            raise ConfigError(
                f"{artifact.path}: backend tensorrt needs a built engine (edged.engine."
                "EngineManager.load_backend, or ensure then create_backend(..., engine=entry))"
            )
        from .tensorrt_backend import TensorRTBackend

        return TensorRTBackend.from_entry(engine)
    raise ConfigError("unknown backend {!r}; expected one of: {}".format(name, ", ".join(BACKENDS)))
