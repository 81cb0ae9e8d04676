"""The backend seam: what every inference runtime (ONNX Runtime, TensorRT) offers.

A backend is created from a :class:`~edged.modelfile.ModelArtifact`, reports
its input and output specs, and runs ``infer(inputs by name) -> outputs by
name``. Tasks find tensors through :func:`find_tensor`, which matches names
with or without the ``:0`` suffix that TensorFlow-exported ONNX files carry
(PeopleNet's ONNX releases name ``input_1:0``: NVIDIA-AI-IOT/deepstream_tao_apps
``build_triton_engine.sh``).
"""

import abc
from typing import TYPE_CHECKING, Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

if TYPE_CHECKING:  # numpy.typing is numpy >= 1.20; Python 3.6 has 1.19
    from numpy.typing import DTypeLike

from ..errors import ModelContractError

Shape = Tuple[Optional[int], ...]


class MemoryOptions(NamedTuple):
    """How a CPU runtime keeps the memory of a run's intermediate tensors (models.NAME keys
    ``memory_pattern`` and ``memory_arena``; configs/edged.yaml says what each costs)."""

    pattern: bool = False  # one planned block per input shape, kept
    arena: str = "as_requested"  # as_requested | power_of_two | off (ARENAS)


#: ``memory_arena`` values: the arena grows by what a run asks for; by doubling; no arena.
ARENAS = ("as_requested", "power_of_two", "off")


class TensorSpec:
    """Name, shape (None for a dynamic dimension) and numpy dtype of one tensor."""

    __slots__ = ("name", "shape", "dtype")

    def __init__(self, name: str, shape: Sequence[Optional[int]], dtype: "DTypeLike") -> None:
        self.name = name
        self.shape = tuple(shape)  # type: Shape
        self.dtype = np.dtype(dtype)

    def __repr__(self) -> str:
        dims = "x".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}[{dims} {self.dtype.name}]"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TensorSpec) and (self.name, self.shape, self.dtype) == (
            other.name,
            other.shape,
            other.dtype,
        )


class PrefilledBatch(NamedTuple):
    """A batch a GPU pre-processor wrote straight into a backend's input set ``slot``
    (``TensorRTBackend.input_buffer``): :meth:`Task.infer <edged.tasks.base.Task.infer>` runs
    it with ``infer_prefilled(size, slot)``; nothing goes through the host. ``reader``, when
    set, runs it instead and reads the outputs on the device (``reader(backend, size, slot)``
    -> one dict of outputs per frame; edged/gpu/select.py)."""

    slot: int
    size: int  # frames in the batch
    reader: Any = None


class Backend(abc.ABC):
    """An inference runtime holding one loaded model."""

    #: short name used in config, logs and metrics ("onnxruntime", "tensorrt")
    name = "backend"
    #: numeric precision the loaded model actually runs in ("fp32", "fp16", "int8")
    precision = "fp32"

    @property
    @abc.abstractmethod
    def inputs(self) -> List[TensorSpec]:
        """Specs of the model's inputs, in model order."""

    @property
    @abc.abstractmethod
    def outputs(self) -> List[TensorSpec]:
        """Specs of the model's outputs, in model order."""

    @abc.abstractmethod
    def infer(self, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Run the model. Keys are the model's own tensor names.

        Raises:
            BackendError: the runtime failed.
        """

    def close(self) -> None:  # noqa: B027 - optional hook: most backends hold nothing to release
        """Release the runtime's resources; the backend is unusable afterwards."""


def strip_suffix(name: str) -> str:
    """``output_cov/Sigmoid:0`` -> ``output_cov/Sigmoid``; other names unchanged."""
    return name[:-2] if name.endswith(":0") else name


def find_tensor(
    specs: Sequence[TensorSpec], candidates: Sequence[str], role: str, model: str
) -> TensorSpec:
    """Return the first spec whose name matches one of ``candidates``.

    A candidate matches a tensor with the same name or the same name with or
    without a ``:0`` suffix. Candidates are tried in order.

    Raises:
        ModelContractError: no tensor matches; the message lists what the model has.
    """
    by_name = {}  # type: Dict[str, TensorSpec]
    for spec in specs:
        by_name.setdefault(spec.name, spec)
        by_name.setdefault(strip_suffix(spec.name), spec)
    for candidate in candidates:
        for key in (candidate, strip_suffix(candidate)):
            if key in by_name:
                return by_name[key]
    raise ModelContractError(
        "{}: no {} tensor named {} (the model has {})".format(
            model,
            role,
            " or ".join(repr(c) for c in candidates),
            ", ".join(repr(s.name) for s in specs) or "none",
        )
    )
