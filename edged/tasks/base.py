"""The Task interface: pre-process frames, run the backend, interpret the outputs.

A task binds one loaded backend to one model config. ``run(frames)`` is what
``edged infer`` and the stream pipeline call; ``preprocess`` and
``postprocess`` are exposed separately so the pipeline can batch several
streams and time each stage. Results are task-specific lists with a
``to_dict()`` per item (JSON output, MQTT payloads).
"""

import abc
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..backends.base import Backend, TensorSpec, find_tensor
from ..config import ModelConfig
from ..errors import ModelContractError
from .preprocess import INTERPOLATIONS, normalisation_terms, preprocess_image

Size = Tuple[int, int]  # (width, height)


class Task(abc.ABC):
    """A model plus the pre- and post-processing its contract needs."""

    #: "detection" or "classification"
    kind = ""
    #: input tensor names to look for when the config names none
    input_aliases = ()  # type: Tuple[str, ...]
    #: task defaults for the pre-processing (overridden by the model's `input` config)
    default_scale = 1.0 / 255.0
    default_mean = (0.0, 0.0, 0.0)
    default_std = (1.0, 1.0, 1.0)
    default_resize = "linear"
    #: sha256 of the loaded model's plain bytes (set by the loader)
    model_sha256 = ""

    def __init__(self, backend: Backend, config: ModelConfig, labels: Sequence[str]) -> None:
        self.backend = backend
        self.config = config
        self.model = config.path
        self.input = self._find_input()
        self.batch_dim = self.input.shape[0]  # None when the model has a dynamic batch
        self.width, self.height = self._input_size()
        cfg = config.input
        self.rgb = cfg.color == "rgb"
        self.resize = cfg.resize or self.default_resize
        assert self.resize in INTERPOLATIONS
        self._a, self._b = normalisation_terms(
            self.default_scale if cfg.scale is None else cfg.scale,
            cfg.mean or self.default_mean,
            cfg.std or self.default_std,
        )
        self.labels = list(labels)

    # -- model contract -------------------------------------------------------------------

    def _find_input(self) -> TensorSpec:
        inputs = self.backend.inputs
        name = self.config.input.name
        if name:
            return find_tensor(inputs, [name], "input", self.model)
        if len(inputs) == 1:
            return inputs[0]
        return find_tensor(inputs, self.input_aliases, "input", self.model)

    def _input_size(self) -> Size:
        shape = self.input.shape
        if len(shape) != 4 or shape[1] not in (3, None):
            raise ModelContractError(
                f"{self.model}: input {self.input.name!r} has shape {_dims(shape)}; "
                "expected N x 3 x H x W (NCHW, 3 channels)"
            )
        width = self.config.input.width or shape[3]
        height = self.config.input.height or shape[2]
        if not width or not height:
            raise ModelContractError(
                f"{self.model}: input {self.input.name!r} has a dynamic size {_dims(shape)}; "
                "set input.width and input.height"
            )
        return int(width), int(height)

    # -- running --------------------------------------------------------------------------

    def preprocess(self, frame_bgr: np.ndarray) -> np.ndarray:
        """One BGR frame -> the model's 3 x H x W float32 input."""
        return preprocess_image(
            frame_bgr, self.width, self.height, self.rgb, self._a, self._b, self.resize
        )

    def infer(self, tensors: Sequence[np.ndarray]) -> List[Dict[str, np.ndarray]]:
        """Run pre-processed tensors; one dict of outputs (batch dim removed) per tensor.

        Batches them in one call when the model has a dynamic batch dimension,
        one call per tensor otherwise.
        """
        if self.batch_dim is None and len(tensors) > 1:
            outputs = self.backend.infer({self.input.name: np.stack(tensors)})
            return [{k: v[i] for k, v in outputs.items()} for i in range(len(tensors))]
        results = []
        for tensor in tensors:
            outputs = self.backend.infer({self.input.name: tensor[np.newaxis]})
            results.append({k: v[0] for k, v in outputs.items()})
        return results

    @abc.abstractmethod
    def postprocess(self, outputs: Dict[str, np.ndarray], source_size: Size) -> List[Any]:
        """Outputs of ONE frame (no batch dim) -> result items with ``to_dict()``."""

    def run(self, frames: Sequence[np.ndarray]) -> List[List[Any]]:
        """Frames (BGR) in, one result list per frame out."""
        tensors = [self.preprocess(f) for f in frames]
        outputs = self.infer(tensors)
        return [
            self.postprocess(out, (frame.shape[1], frame.shape[0]))
            for out, frame in zip(outputs, frames)
        ]

    def describe(self) -> Dict[str, Any]:
        """What the task runs, for logs and the status topic."""
        return {
            "task": self.kind,
            "input": self.input.name,
            "size": [self.width, self.height],
            "classes": len(self.labels),
            "backend": self.backend.name,
        }


def _dims(shape: Sequence[Optional[int]]) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)
