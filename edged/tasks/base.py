"""The Task interface: pre-process frames, run the backend, interpret the outputs.

A task binds one loaded backend to one model config. ``run(frames)`` is what
``edged infer`` and the stream pipeline call; ``preprocess`` and
``postprocess`` are exposed separately so the pipeline can batch several
streams and time each stage. Results are task-specific lists with a
``to_dict()`` per item (JSON output, MQTT payloads).
"""

import abc
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from ..backends.base import Backend, PrefilledBatch, TensorSpec, find_tensor
from ..config import ModelConfig
from ..errors import ModelContractError
from .contract import InputContract, InputDefaults
from .preprocess import preprocess_image

Size = Tuple[int, int]  # (width, height)
#: what :meth:`Task.infer` takes: per-frame tensors, one stacked batch, or a batch on the device
Batch = Union[Sequence[np.ndarray], np.ndarray, PrefilledBatch]


class ModelTensors(NamedTuple):
    """A model's input and output tensors: what recognises its task (a Backend has the same)."""

    inputs: List[TensorSpec]
    outputs: List[TensorSpec]


#: what :meth:`Task.matches` looks at: a loaded backend, or the tensors of a parsed network
Tensors = Union[Backend, ModelTensors]


class Task(abc.ABC):
    """A model plus the pre- and post-processing its contract needs.

    A task class declares, and :mod:`edged.tasks.registry` reads: its ``kind`` (the name
    in ``models.NAME.task``), its ``config_section`` (the section of the model's config
    holding its settings), its ``input_defaults`` (the input contract unless the model's
    ``input`` config says else) and :meth:`matches` (does ``task: auto`` pick it).
    """

    #: the task's name in ``models.NAME.task`` ("detection", "classification")
    kind = ""
    #: the section of ``models.NAME`` holding this task's settings
    config_section = ""
    #: the input contract without its size (the model's `input` config overrides it)
    input_defaults = InputDefaults()
    #: input tensor names to look for when the config names none
    input_aliases = ()  # type: Tuple[str, ...]
    #: the keys of ``config_section`` that :meth:`matches` reads (INT8 calibration sends them
    #: to the build process, which recognises the task from the parsed network)
    recognition_keys = ()  # type: Tuple[str, ...]
    #: sha256 of the loaded model's plain bytes (set by the loader)
    model_sha256 = ""

    def __init__(
        self, backend: Backend, config: ModelConfig, labels: Optional[Sequence[str]]
    ) -> None:
        self.backend = backend
        self.config = config
        self.model = config.path
        self.input = self.find_input(backend, config)
        self.batch_dim = self.input.shape[0]  # None when the model has a dynamic batch
        self.contract = self.input_contract(config, self.input)
        self.width, self.height = self.contract.size
        self.labels = list(labels or ())  # a subclass checks them against the model first

    # -- model contract -------------------------------------------------------------------

    @classmethod
    def matches(cls, model: Tensors, config: ModelConfig) -> bool:
        """True when ``task: auto`` should pick this task for ``model``'s tensors."""
        return False

    @classmethod
    def find_input(cls, model: Tensors, config: ModelConfig) -> TensorSpec:
        """The image input: the configured name, the only input, or one of the aliases."""
        inputs = model.inputs
        name = config.input.name
        if name:
            return find_tensor(inputs, [name], "input", config.path)
        if len(inputs) == 1:
            return inputs[0]
        return find_tensor(inputs, cls.input_aliases, "input", config.path)

    @classmethod
    def input_contract(cls, config: ModelConfig, spec: TensorSpec) -> InputContract:
        """The task's defaults, the model's ``input`` config and ``spec``'s size, resolved.

        Raises:
            ModelContractError: the input is not N x 3 x H x W, or its size is dynamic and
                not configured.
        """
        shape = spec.shape
        if len(shape) != 4 or shape[1] not in (3, None):
            raise ModelContractError(
                f"{config.path}: input {spec.name!r} has shape {_dims(shape)}; "
                "expected N x 3 x H x W (NCHW, 3 channels)"
            )
        width = config.input.width or shape[3]
        height = config.input.height or shape[2]
        if not width or not height:
            raise ModelContractError(
                f"{config.path}: input {spec.name!r} has a dynamic size {_dims(shape)}; "
                "set input.width and input.height"
            )
        return cls.input_defaults.resolve(int(width), int(height), config.input)

    # -- running --------------------------------------------------------------------------

    def preprocess(self, frame_bgr: np.ndarray) -> np.ndarray:
        """One BGR frame -> the model's 3 x H x W float32 input."""
        return preprocess_image(frame_bgr, self.contract)

    def infer(self, tensors: Batch) -> List[Dict[str, np.ndarray]]:
        """Run pre-processed tensors; one dict of outputs (batch dim removed) per tensor.

        ``tensors``: 3 x H x W arrays, one N x 3 x H x W array (the CPU path's
        :func:`stack_batch` or a pre-processor's batch: used as it is, not copied again), or a
        :class:`PrefilledBatch` already in the backend's input buffer. Batches them in one call
        when the model has a dynamic batch dimension, one call per tensor otherwise.
        """
        if isinstance(tensors, PrefilledBatch):
            if tensors.reader is not None:  # outputs read on the device
                return tensors.reader(self.backend, tensors.size, tensors.slot)
            outputs = self.backend.infer_prefilled(tensors.size, tensors.slot)  # type: ignore
            return [{k: v[i] for k, v in outputs.items()} for i in range(tensors.size)]
        if self.batch_dim is None and len(tensors) > 1:
            stacked = tensors if isinstance(tensors, np.ndarray) else np.stack(tensors)
            outputs = self.backend.infer({self.input.name: stacked})
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


def stack_batch(
    frames: Sequence[np.ndarray], preprocess: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """``preprocess`` of each frame written into one N x 3 x H x W array.

    One frame is a view of its tensor (no copy); more are written into the array one by one,
    so a batch holds one copy of its pixels rather than a list of tensors plus the stacked
    input :meth:`Task.infer` would otherwise make (benchmarks/README.md, many streams).
    """
    first = preprocess(frames[0])
    if len(frames) == 1:
        return first[np.newaxis]
    out = np.empty((len(frames),) + first.shape, first.dtype)
    out[0] = first
    del first
    for i, frame in enumerate(frames[1:], 1):
        out[i] = preprocess(frame)
    return out
