"""Pre-processor registry: ``pipeline.preprocess`` / ``--preprocess`` name -> a pre-processor.

A pre-processor is made for one :class:`~edged.tasks.contract.InputContract` and a batch
size; ``run(frames)`` turns host frames into the model's ``N x 3 x H x W`` host array and
``close()`` frees what it holds. ``cpu`` is the numpy/OpenCV path (:mod:`edged.tasks.preprocess`),
``cuda`` the fused kernel (:mod:`edged.gpu.preprocessor`, its batch copied back to the host for
ONNX Runtime). ``auto`` takes ``cuda`` when pycuda, a GPU and nvcc are there, else ``cpu``,
and logs one line saying which and why; an explicit ``cuda`` that cannot run is an error.

When the pre-processor can write on the device (``run_device``) and the task's backend takes a
batch in its own input buffer (TensorRT: ``input_buffer``/``infer_prefilled``),
:func:`for_task` hands out a :class:`DeviceFeed`: the batch never leaves the GPU.
"""

import logging
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np

from ..backends.base import PrefilledBatch
from ..errors import BackendError, ConfigError
from ..tasks.contract import InputContract

logger = logging.getLogger(__name__)

CHOICES = ("auto", "cpu", "cuda")

Factory = Callable[[InputContract, int], Any]
_FACTORIES: Dict[str, Factory] = {}


def register(name: str, factory: Factory) -> None:
    _FACTORIES[name] = factory


class CpuPreprocessor:
    """The CPU path: OpenCV resize and one-pass normalisation per frame; frames in another
    format than BGR are converted first (:func:`edged.pixels.to_bgr`)."""

    name = "cpu"

    def __init__(self, contract: InputContract, max_batch: int = 1) -> None:
        self.contract = contract
        self._a, self._b = contract.affine()

    def run(
        self, frames: Sequence[np.ndarray], formats: Optional[Sequence[str]] = None
    ) -> np.ndarray:
        from ..pixels import resolve, to_bgr
        from ..tasks.preprocess import preprocess_image

        c = self.contract
        out = np.empty((len(frames), 3, c.height, c.width), dtype=c.dtype)
        # formats None: told from each frame's shape, as the CUDA pre-processor does
        for i, (frame, fmt) in enumerate(zip(frames, resolve(frames, formats))):
            out[i] = preprocess_image(to_bgr(frame, fmt.name), c)
        return out

    def close(self) -> None:
        return None


def _cuda_factory(contract: InputContract, max_batch: int) -> Any:
    from ..gpu.preprocessor import CudaPreprocessor

    return CudaPreprocessor(contract, max_batch)


register("cpu", CpuPreprocessor)
register("cuda", _cuda_factory)


def create(choice: str, contract: InputContract, max_batch: int = 1, model: str = "") -> Any:
    """The pre-processor ``choice`` names (``auto`` resolved here, with one log line).

    Raises:
        ConfigError: an unknown choice.
        CudaUnavailableError: ``cuda`` was asked for and cannot run (the reason named).
    """
    what = f"model {model}: " if model else ""
    if choice == "auto":
        try:
            pre = _FACTORIES["cuda"](contract, max_batch)
        except BackendError as e:  # no pycuda/GPU/nvcc, or a contract the kernel lacks (area)
            logger.info("%spre-processing on the CPU (preprocess: auto, no CUDA: %s)", what, e)
            return _FACTORIES["cpu"](contract, max_batch)
        logger.info("%spre-processing on CUDA (preprocess: auto found pycuda, a GPU and nvcc)",
                    what)  # fmt: skip
        return pre
    if choice not in _FACTORIES:
        raise ConfigError(
            "preprocess must be one of {}, not {!r}".format(", ".join(CHOICES), choice)
        )
    pre = _FACTORIES[choice](contract, max_batch)
    logger.info("%spre-processing on %s (preprocess: %s)", what,
                "CUDA" if choice == "cuda" else "the CPU", choice)  # fmt: skip
    return pre


class DeviceFeed:
    """A GPU pre-processor writing each batch into the task's backend input buffer.

    ``run`` returns a :class:`PrefilledBatch` that ``Task.infer`` runs in place. Batches take
    the backend's input sets in turn (``INPUT_SETS`` in edged/backends/tensorrt_backend.py says
    why two are enough with ``pipeline.overlap``). One thread calls ``run`` (the worker's
    pre-processing thread).
    """

    name = "cuda"

    def __init__(self, pre: Any, task: Any, sets: int, reader: Any = None) -> None:
        self.pre = pre
        self.reader = reader  # reads the outputs on the device (edged/gpu/select.py), or None
        self.contract = pre.contract
        self._backend = task.backend
        self._input = task.input.name
        self._sets = sets
        self._next = 0

    def run(self, frames: Sequence[np.ndarray], formats: Optional[Sequence[str]] = None
            ) -> PrefilledBatch:  # fmt: skip
        slot = self._next
        self._next = (slot + 1) % self._sets
        self.pre.run_device(frames, formats, dst=self._backend.input_buffer(self._input, slot))
        return PrefilledBatch(slot, len(frames), self.reader)

    def close(self) -> None:
        self.pre.close()
        if self.reader is not None:
            self.reader.close()


def on_device(pre: Any, task: Any, max_batch: int) -> Any:
    """``pre`` wrapped in a :class:`DeviceFeed` where the batch can stay on the device."""
    backend = task.backend
    if not (hasattr(pre, "run_device") and hasattr(backend, "input_buffer")
            and hasattr(backend, "infer_prefilled")):  # fmt: skip
        return pre
    fixed = task.batch_dim
    if fixed is not None and max_batch > fixed:  # Task.infer would split it: stay on the host
        return pre
    from ..backends.tensorrt_backend import INPUT_SETS

    return DeviceFeed(pre, task, INPUT_SETS, device_outputs(task, max_batch))


def device_outputs(task: Any, max_batch: int) -> Any:
    """A reader of the task's outputs on the device (DetectNet_v2 grids: only the cells above
    threshold come back, edged/gpu/select.py), or None: the outputs are copied back whole."""
    from ..gpu.select import DeviceGridOutputs, grid_spec

    spec = grid_spec(task)
    if spec is None or not hasattr(task.backend, "infer_prefilled_on_device"):
        return None
    try:
        return DeviceGridOutputs(spec, max_batch)
    except BackendError as e:  # the kernel module loaded for pre-processing: not expected
        logger.warning("DetectNet_v2 outputs copied to the host (no GPU selection: %s)", e)
        return None


def for_task(choice: str, task: Any, max_batch: int = 1, model: str = "") -> Optional[Any]:
    """The pre-processor of a worker running ``task``; None: the task's own CPU path.

    ``cpu``, and ``auto`` without CUDA, keep the task's ``preprocess`` (nothing is created).
    """
    if choice == "cpu":
        return None
    if choice == "auto":
        from ..cudacontext import probe

        reason = probe()
        if reason is not None:
            logger.info("%spre-processing on the CPU (preprocess: auto, no CUDA: %s)",
                        f"model {model}: " if model else "", reason)  # fmt: skip
            return None
    pre = create(choice, contract_of(task), max_batch, model)
    return None if pre.name == "cpu" else on_device(pre, task, max_batch)


def contract_of(task: Any) -> InputContract:
    """The task's input contract (``task.contract`` where tasks declare one)."""
    contract = getattr(task, "contract", None)
    if isinstance(contract, InputContract):
        return contract
    cfg = task.config.input
    return InputContract(
        width=task.width,
        height=task.height,
        channel_order="rgb" if task.rgb else "bgr",
        scale=task.default_scale if cfg.scale is None else cfg.scale,
        mean=tuple(cfg.mean or task.default_mean),
        std=tuple(cfg.std or task.default_std),
        resize=task.resize,
    )
