"""Pre-processor registry: ``pipeline.preprocess`` / ``--preprocess`` name -> a pre-processor.

A pre-processor is made for one :class:`~edged.tasks.contract.InputContract` and a batch
size; ``run(frames)`` turns host frames into the model's ``N x 3 x H x W`` host array and
``close()`` frees what it holds. ``cpu`` is the numpy/OpenCV path (:mod:`edged.tasks.preprocess`),
``cuda`` the fused kernel (:mod:`edged.gpu.preprocessor`, its batch copied back to the host for
ONNX Runtime). ``auto`` takes ``cuda`` when pycuda, a GPU and nvcc are there, else ``cpu``,
and logs one line saying which and why; an explicit ``cuda`` that cannot run is an error.
"""

import logging
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np

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
    return None if pre.name == "cpu" else pre


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
