"""Inference backends behind one interface (``base.Backend``); ``create_backend`` picks one."""

from typing import Optional

from ..errors import ConfigError
from ..modelfile import ModelArtifact
from .base import Backend, TensorSpec, find_tensor

__all__ = ["Backend", "TensorSpec", "create_backend", "find_tensor", "BACKENDS"]

BACKENDS = ("onnxruntime",)


def create_backend(name: str, artifact: ModelArtifact, threads: Optional[int] = None) -> Backend:
    """Load ``artifact`` into the backend called ``name``.

    Raises:
        ConfigError: unknown backend name.
        ModelError / BackendError: the backend cannot load the model.
    """
    if name == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(artifact, threads=threads or None)
    raise ConfigError(
        "unknown backend {!r}; expected one of: {}".format(name, ", ".join(BACKENDS))
    )
