"""ONNX Runtime on the CPU: the backend that runs everywhere, including CI.

Takes the model as bytes so a decrypted ``.etlt`` never touches the disk.
A UFF payload (old PeopleNet ``.etlt`` releases) cannot run here: only
TensorRT <= 8.6 has a UFF parser (``NvUffParser.h`` is gone from NVIDIA/TensorRT 9.1).
"""

import logging
import threading
from typing import Any, Dict, List, Optional

import numpy as np

from ..errors import BackendError, ConfigError, ModelFormatError
from ..modelfile import ONNX, ModelArtifact
from .base import ARENAS, Backend, MemoryOptions, TensorSpec

logger = logging.getLogger(__name__)

# ONNX Runtime's type strings -> numpy dtypes (the ones image models use).
_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}


def _spec(node: Any) -> TensorSpec:
    # ORT reports dynamic dimensions as strings ("batch") or None.
    shape = [d if isinstance(d, int) and d > 0 else None for d in node.shape]
    dtype = _ORT_DTYPES.get(node.type)
    if dtype is None:
        raise ModelFormatError(f"tensor {node.name!r} has unsupported type {node.type}")
    return TensorSpec(node.name, shape, dtype)


#: Session option (ONNX Runtime >= 1.7, incl. JetPack 4.6's 1.10) for intra-op busy-waiting.
_ALLOW_SPINNING = "session.intra_op.allow_spinning"


class OnnxRuntimeBackend(Backend):
    """One ``onnxruntime.InferenceSession`` on the CPU execution provider."""

    name = "onnxruntime"

    def __init__(
        self,
        artifact: ModelArtifact,
        threads: Optional[int] = None,
        memory: Optional[MemoryOptions] = None,
    ) -> None:
        """Load ``artifact``.

        Args:
            artifact: the model; must be an ONNX payload.
            threads: intra-op threads; None lets ONNX Runtime choose (all cores).
            memory: memory pattern and arena; None: :class:`MemoryOptions`' defaults.

        Raises:
            ModelFormatError: a UFF payload, or ONNX Runtime rejects the model.
        """
        if artifact.format != ONNX:
            raise ModelFormatError(
                f"{artifact.path}: contains a UFF model, which only TensorRT 8.6 or older "
                "can build "
                "(backend: tensorrt on JetPack 4.6/5.x); ONNX Runtime cannot run it"
            )
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendError(
                "the onnxruntime backend needs the onnxruntime package (pip install 'edged[cpu]')"
            ) from e
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3  # ORT's warnings go to stderr otherwise
        # ORT's pool threads busy-wait after each run by default; in the daemon they share
        # the cores with decode, pre/post-processing and MQTT, which they then starve
        # (benchmarks/ item 2: pre-processing right after a run 2.6 -> 1.6 ms, run time unchanged).
        options.add_session_config_entry(_ALLOW_SPINNING, "0")
        _set_memory(ort, options, memory or MemoryOptions())
        try:
            self._session = ort.InferenceSession(
                artifact.data, sess_options=options, providers=["CPUExecutionProvider"]
            )
            self._inputs = [_spec(n) for n in self._session.get_inputs()]
            self._outputs = [_spec(n) for n in self._session.get_outputs()]
        except ModelFormatError as e:
            raise ModelFormatError(f"{artifact.path}: {e}") from e
        except Exception as e:  # noqa: BLE001 - ORT raises its own untyped errors at load
            raise ModelFormatError(
                f"{artifact.path}: ONNX Runtime cannot load the model: {_first_line(str(e))}"
            ) from e
        self._output_names = [s.name for s in self._outputs]
        self._path = artifact.path
        logger.debug("loaded %s: inputs %s outputs %s", artifact.path, self._inputs, self._outputs)

    @property
    def inputs(self) -> List[TensorSpec]:
        return list(self._inputs)

    @property
    def outputs(self) -> List[TensorSpec]:
        return list(self._outputs)

    def infer(self, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        try:
            values = self._session.run(self._output_names, inputs)
        except Exception as e:  # noqa: BLE001 - ORT's run errors are not a typed hierarchy
            raise BackendError(f"{self._path}: inference failed: {_first_line(str(e))}") from e
        return dict(zip(self._output_names, values))

    def close(self) -> None:
        self._session = None


def _set_memory(ort: Any, options: Any, memory: MemoryOptions) -> None:
    """Memory pattern and arena of one session (figures: benchmarks/README.md, many streams)."""
    if memory.arena not in ARENAS:
        raise ConfigError(
            "memory_arena must be one of {}, not {!r}".format(", ".join(ARENAS), memory.arena)
        )
    # ORT's default plans one block per input shape and keeps it: with batches of 1..N
    # frames that is N blocks (the demo detector at 4 streams, max_batch 4: 430 -> 362 MB).
    options.enable_mem_pattern = memory.pattern
    options.enable_cpu_mem_arena = memory.arena != "off"
    # ORT's session arena grows by doubling (kNextPowerOfTwo) and the CPU provider has no
    # option to change that; an arena registered on ORT's environment can grow by what is
    # asked (kSameAsRequested): 4 streams at max_batch 4, 339 -> 293 MB back to back.
    if memory.arena == "as_requested" and _shared_arena(ort):
        options.add_session_config_entry(_USE_ENV_ALLOCATORS, "1")


#: Session option (ONNX Runtime >= 1.8) to take allocators registered on ORT's environment.
_USE_ENV_ALLOCATORS = "session.use_env_allocators"
_ARENA_LOCK = threading.Lock()
_arena_registered = None  # type: Optional[bool]  # None: not tried yet


def _shared_arena(ort: Any) -> bool:
    """Register (once per process) a CPU arena that grows by what is asked; False: it cannot be
    (logged once) and sessions keep arenas of their own."""
    global _arena_registered
    with _ARENA_LOCK:
        if _arena_registered is None:
            try:
                # no cap; kSameAsRequested (1); ORT's default first chunk and dead bytes (-1)
                config = ort.OrtArenaCfg(0, 1, -1, -1)
                info = ort.OrtMemoryInfo(
                    "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
                )
                ort.create_and_register_allocator(info, config)
                _arena_registered = True
            except (AttributeError, RuntimeError) as e:  # an older ORT; one already registered
                logger.warning("memory_arena as_requested unavailable, using power_of_two: %s",
                               _first_line(str(e)))  # fmt: skip
                _arena_registered = False
        return _arena_registered


def _first_line(text: str) -> str:
    text = text.strip()
    return text.splitlines()[0] if text else "unknown error"
