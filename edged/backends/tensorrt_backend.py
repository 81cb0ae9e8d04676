"""The TensorRT runtime backend: deserialize an engine from the cache and run it.

Two I/O paths, chosen by what the engine object has (the TensorRT Python API
reference of each release), never by the version string:

* the **name API** (``num_io_tensors``, ``get_tensor_*``, ``set_input_shape``,
  ``set_tensor_address``, ``execute_async_v3``): TensorRT >= 8.5, the only one in 10;
* the **binding API** (``num_bindings``, ``get_binding_*``, ``set_binding_shape``,
  ``execute_async_v2``): TensorRT 8.0-8.4 (Nano's 8.0/8.2). Implicit-batch
  engines (UFF ``.etlt``) must use ``execute_async(batch_size, ...)``, which
  only this path has (``pyCoreDoc.h`` @8.2.1).

CUDA goes through :class:`~edged.backends.cudaruntime.CudaRuntime`; the real one is pycuda on the
*primary* context (the one TensorRT uses; :mod:`edged.cudacontext`), pushed
around every call and popped in ``finally`` because inference runs on worker
threads where no context is current (pycuda's documentation, "Multiple threads"). Buffers, the
execution context and the engine are freed before the last pop.

``deserialize_cuda_engine`` returns None for an engine of another TensorRT or
GPU, or a damaged one (TensorRT's developer guide: engines are not portable): that raises
:class:`~edged.engine.errors.EngineDeserializeError`, and
:class:`~edged.engine.manager.EngineManager` quarantines the entry and rebuilds.
This module runs only where TensorRT can execute (a Jetson); CI checks its
decisions with a fake ``tensorrt`` and a fake CUDA (tests/fake_tensorrt.py).
"""

import logging
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import BackendError, EngineDeserializeError
from .base import Backend, TensorSpec
from .cudaruntime import CudaRuntime, PycudaRuntime  # noqa: F401 - re-exported
from .tensorrt_api import CapturingLogger, import_tensorrt, recent_errors

logger = logging.getLogger(__name__)

NAME_API = "name"
BINDING_API = "binding"
EXEC_V3 = "execute_async_v3"
EXEC_V2 = "execute_async_v2"
EXEC_IMPLICIT = "execute_async"

#: Input buffer sets a GPU pre-processor writes into in turn (:meth:`TensorRTBackend.input_buffer`).
#: With ``pipeline.overlap`` the worker pre-processes batch k+1 while batch k is in inference, and
#: takes batch k+2 only after batch k's inference has returned (edged/pipeline/worker.py: the
#: one-batch handoff has room only once the inference thread took k+1, which it does after k):
#: two sets, used alternately, never have a batch written over one still being read.
INPUT_SETS = 2


class _Tensor:
    """One engine I/O tensor and its buffers."""

    __slots__ = ("name", "index", "is_input", "shape", "max_shape", "dtype", "host", "device",
                 "sets")  # fmt: skip

    def __init__(
        self, name: str, index: int, is_input: bool, shape: Tuple[int, ...], dtype: "np.dtype"
    ) -> None:
        self.name = name
        self.index = index
        self.is_input = is_input
        self.shape = shape  # -1 for a dynamic dimension
        self.max_shape = shape
        self.dtype = np.dtype(dtype)
        self.host = None  # type: Optional[np.ndarray]
        self.device = None  # type: Any
        self.sets = []  # type: List[Any]  # inputs: device buffer of each input set, [0] is device

    @property
    def dynamic(self) -> bool:
        return any(d < 0 for d in self.shape)

    def spec(self) -> TensorSpec:
        return TensorSpec(self.name, [None if d < 0 else d for d in self.shape], self.dtype)


def choose_io_api(engine: Any) -> Tuple[str, str]:
    """(I/O API, execute call) for ``engine``, by feature detection.

    Implicit-batch engines need ``execute_async(batch_size)`` and the binding
    API; otherwise the name API wherever the engine has it (8.5+), else bindings.
    """
    if getattr(engine, "has_implicit_batch_dimension", False):
        return BINDING_API, EXEC_IMPLICIT
    if hasattr(engine, "num_io_tensors"):
        return NAME_API, EXEC_V3
    if hasattr(engine, "num_bindings"):
        return BINDING_API, EXEC_V2
    raise BackendError("this TensorRT engine has neither the name nor the binding I/O API")


def describe_engine(trt: Any, engine: Any, api: str) -> List[_Tensor]:
    """The engine's tensors in order; implicit-batch shapes get a leading dynamic batch."""
    tensors = []  # type: List[_Tensor]
    if api == NAME_API:
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            shape = tuple(int(d) for d in engine.get_tensor_shape(name))
            tensors.append(
                _Tensor(name, i, is_input, shape, trt.nptype(engine.get_tensor_dtype(name)))
            )
        return tensors
    implicit = bool(getattr(engine, "has_implicit_batch_dimension", False))
    for i in range(engine.num_bindings):
        shape = tuple(int(d) for d in engine.get_binding_shape(i))
        if implicit:
            shape = (-1,) + shape
        tensors.append(
            _Tensor(
                engine.get_binding_name(i),
                i,
                bool(engine.binding_is_input(i)),
                shape,
                trt.nptype(engine.get_binding_dtype(i)),
            )
        )
    return tensors


class TensorRTBackend(Backend):
    """A deserialized engine with its execution context and buffers.

    Args:
        engine: the serialized engine (from the cache: :meth:`from_entry`).
        source: names the engine in messages (the cache entry path).
        trt: the TensorRT module (imported when None).
        cuda: the CUDA seam (:class:`PycudaRuntime` when None).
        dla_core: the DLA core the engine was built for (``runtime.DLA_core``), or None.

    Raises:
        EngineDeserializeError: TensorRT returned None (other TensorRT/GPU, or damaged).
        BackendError: the execution context or buffers cannot be created.
    """

    name = "tensorrt"

    def __init__(
        self,
        engine: bytes,
        source: str,
        trt: Any = None,
        cuda: Optional[CudaRuntime] = None,
        dla_core: Optional[int] = None,
    ) -> None:
        self._trt = trt if trt is not None else import_tensorrt()
        self._cuda = cuda if cuda is not None else PycudaRuntime()
        self._source = source
        self._lock = threading.Lock()  # one execution context: one inference at a time
        # input sets are added while an inference runs (the next batch is written meanwhile)
        self._sets_lock = threading.Lock()
        self._engine = self._context = self._runtime = self._stream = None  # type: Any
        self._tensors = []  # type: List[_Tensor]
        with self._cuda.activated():
            try:
                self._load(engine, dla_core)
            except BaseException:
                self._release()
                raise

    @classmethod
    def from_entry(
        cls, entry: Any, trt: Any = None, cuda: Optional[CudaRuntime] = None
    ) -> "TensorRTBackend":
        """Load a :class:`~edged.engine.cache.CacheEntry`; the manifest says which DLA core."""
        device = str(entry.manifest.get("device_obtained", "gpu"))
        dla_core = int(device[3:]) if device.startswith("dla") else None
        return cls(entry.read_engine(), entry.path, trt=trt, cuda=cuda, dla_core=dla_core)

    # -- loading ------------------------------------------------------------------------------

    def _load(self, engine: bytes, dla_core: Optional[int]) -> None:
        trt = self._trt
        self._trt_logger = CapturingLogger.create(trt)
        self._runtime = trt.Runtime(self._trt_logger)
        if dla_core is not None:
            self._runtime.DLA_core = dla_core
        self._engine = self._runtime.deserialize_cuda_engine(engine)
        if self._engine is None:
            raise EngineDeserializeError(
                "{}: TensorRT could not deserialize the engine (built by "
                "another TensorRT or for another GPU, or damaged): {}".format(
                    self._source, recent_errors(self._trt_logger) or "no details"
                )
            )
        self.io_api, self.execute_call = choose_io_api(self._engine)
        self._tensors = describe_engine(trt, self._engine, self.io_api)
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise BackendError(
                f"{self._source}: TensorRT could not create an execution context (GPU memory?)"
            )
        self._max_batch = int(getattr(self._engine, "max_batch_size", 1) or 1)
        self._size_buffers()
        self._stream = self._cuda.stream()
        for t in self._tensors:
            t.host = self._cuda.pagelocked(t.max_shape, t.dtype)
            t.device = self._cuda.device_alloc(t.host.nbytes)
            t.sets = [t.device] if t.is_input else []
        self._bound = 0  # the input set the execution context reads
        if self.io_api == NAME_API:
            for t in self._tensors:
                self._context.set_tensor_address(t.name, int(t.device))
        self._bindings = [int(t.device) for t in sorted(self._tensors, key=lambda t: t.index)]
        logger.info(
            "TensorRT engine %s loaded: %s API, %s, inputs %s, outputs %s",
            self._source,
            self.io_api,
            self.execute_call,
            self.inputs,
            self.outputs,
        )

    def _size_buffers(self) -> None:
        """Largest shapes: the profile's max for dynamic inputs, then what outputs become."""
        if self.execute_call == EXEC_IMPLICIT:
            for t in self._tensors:
                t.max_shape = (self._max_batch,) + t.shape[1:]
            return
        for t in self._tensors:
            if t.is_input and t.dynamic:
                t.max_shape = tuple(int(d) for d in self._profile_max(t))
                self._set_shape(t, t.max_shape)
        for t in self._tensors:
            if not t.is_input and t.dynamic:
                t.max_shape = self._context_shape(t)

    def _profile_max(self, t: _Tensor) -> Sequence[int]:
        if self.io_api == NAME_API:
            return self._engine.get_tensor_profile_shape(t.name, 0)[2]
        return self._engine.get_profile_shape(0, t.index)[2]

    def _set_shape(self, t: _Tensor, shape: Sequence[int]) -> None:
        ok = (
            self._context.set_input_shape(t.name, tuple(shape))
            if self.io_api == NAME_API
            else self._context.set_binding_shape(t.index, tuple(shape))
        )
        if ok is False:
            raise BackendError(
                f"{self._source}: shape {list(shape)} is outside the engine's profile for {t.name}"
            )

    def _context_shape(self, t: _Tensor) -> Tuple[int, ...]:
        if self.io_api == NAME_API:
            return tuple(int(d) for d in self._context.get_tensor_shape(t.name))
        return tuple(int(d) for d in self._context.get_binding_shape(t.index))

    # -- Backend ------------------------------------------------------------------------------

    @property
    def inputs(self) -> List[TensorSpec]:
        return [t.spec() for t in self._tensors if t.is_input]

    @property
    def outputs(self) -> List[TensorSpec]:
        return [t.spec() for t in self._tensors if not t.is_input]

    def infer(self, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        with self._lock:
            if self._engine is None:
                raise BackendError(f"{self._source}: backend is closed")
            with self._cuda.activated():
                return self._infer(inputs)

    def _infer(self, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        batch = None  # type: Optional[int]
        for t in self._tensors:
            if not t.is_input:
                continue
            array = self._checked_input(t, inputs)
            batch = array.shape[0] if batch is None else batch
            if self.execute_call != EXEC_IMPLICIT and t.dynamic:
                self._set_shape(t, array.shape)
            staged = _host(t).reshape(-1)[: array.size].reshape(array.shape)
            np.copyto(staged, array)
            self._cuda.htod_async(t.device, staged, self._stream)
        self._bind(0)
        return self._execute_and_fetch(batch or 1)

    def input_buffer(self, name: str, slot: int = 0) -> int:
        """Device address of input ``name`` in input set ``slot`` (0 .. INPUT_SETS - 1): a GPU
        pre-processor writes the batch there (edged/gpu/preprocessor.py ``run_device``), then
        :meth:`infer_prefilled` with the same ``slot`` runs it. Sets past 0 are allocated on
        first use (only this path needs them)."""
        if not 0 <= slot < INPUT_SETS:
            raise BackendError(f"input set {slot} is not one of 0..{INPUT_SETS - 1}")
        with self._sets_lock:  # not self._lock: the running inference must not hold it up
            for t in self._tensors:
                if t.is_input and t.name == name and t.device is not None:
                    if slot >= len(t.sets):
                        with self._cuda.activated():
                            while len(t.sets) <= slot:
                                t.sets.append(self._cuda.device_alloc(_host(t).nbytes))
                    return int(t.sets[slot])
        raise BackendError(f"{self._source}: no input named {name!r}")

    def _bind(self, slot: int) -> None:
        """Point the execution context at input set ``slot`` (outputs stay where they are)."""
        if slot == self._bound:
            return
        for t in self._tensors:
            if t.is_input and slot >= len(t.sets):
                raise BackendError(f"{self._source}: input set {slot} of {t.name} not allocated")
        if self.io_api == NAME_API:
            for t in self._tensors:
                if t.is_input:
                    self._context.set_tensor_address(t.name, int(t.sets[slot]))
        by_index = sorted(self._tensors, key=lambda t: t.index)
        self._bindings = [int(t.sets[slot] if t.is_input else t.device) for t in by_index]
        self._bound = slot

    def infer_prefilled(self, batch: int, slot: int = 0) -> Dict[str, np.ndarray]:
        """Run on inputs already written into :meth:`input_buffer` ``slot`` (nothing uploaded)."""
        with self._lock:
            if self._engine is None:
                raise BackendError(f"{self._source}: backend is closed")
            with self._cuda.activated():
                self._prefilled_shapes(batch, slot)
                return self._execute_and_fetch(batch)

    def infer_prefilled_on_device(self, batch: int, slot: int = 0) -> Dict[str, int]:
        """As :meth:`infer_prefilled`, but the outputs stay on the device: their addresses,
        filled once this returns and valid until the next inference (edged/gpu/select.py)."""
        with self._lock:
            if self._engine is None:
                raise BackendError(f"{self._source}: backend is closed")
            with self._cuda.activated():
                self._prefilled_shapes(batch, slot)
                self._execute_checked(batch)
                self._cuda.wait(self._stream)
                return {t.name: int(t.device) for t in self._tensors if not t.is_input}

    def _prefilled_shapes(self, batch: int, slot: int) -> None:
        self._bind(slot)
        for t in self._tensors:
            if t.is_input and t.max_shape[0] < batch:
                raise BackendError(
                    f"{self._source}: batch {batch} is more than the engine takes "
                    f"({t.max_shape[0]})"
                )
            if t.is_input and self.execute_call != EXEC_IMPLICIT and t.dynamic:
                self._set_shape(t, (batch,) + tuple(t.max_shape[1:]))

    def _execute_checked(self, batch: int) -> None:
        if not self._execute(batch):
            raise BackendError(
                "{}: TensorRT inference failed: {}".format(
                    self._source, recent_errors(self._trt_logger) or "no details"
                )
            )

    def _execute_and_fetch(self, batch: int) -> Dict[str, np.ndarray]:
        self._execute_checked(batch)
        results = {}  # type: Dict[str, np.ndarray]
        staged_outputs = []  # type: List[Tuple[str, np.ndarray]]
        for t in self._tensors:
            if t.is_input:
                continue
            shape = (
                (batch,) + t.shape[1:]
                if self.execute_call == EXEC_IMPLICIT
                else self._context_shape(t)
            )
            staged = _host(t).reshape(-1)[: int(np.prod(shape))].reshape(shape)
            self._cuda.dtoh_async(staged, t.device, self._stream)
            staged_outputs.append((t.name, staged))
        self._cuda.wait(self._stream)  # sleeps, not spins, on a GPU (PycudaRuntime.wait)
        for name, staged in staged_outputs:
            results[name] = staged.copy()  # the staging buffer is reused by the next call
        return results

    def _checked_input(self, t: _Tensor, inputs: Dict[str, np.ndarray]) -> np.ndarray:
        if t.name not in inputs:
            raise BackendError(
                "{}: missing input {!r} (got {})".format(
                    self._source, t.name, ", ".join(sorted(inputs)) or "none"
                )
            )
        array = np.ascontiguousarray(inputs[t.name], dtype=t.dtype)
        if array.ndim != len(t.shape) or any(
            (want >= 0 and got != want) or got > top
            for got, want, top in zip(array.shape, t.shape, t.max_shape)
        ):
            raise BackendError(
                f"{self._source}: input {t.name} has shape {list(array.shape)}, the engine "
                f"takes {list(t.shape)} (at most {list(t.max_shape)})"
            )
        return array

    def _execute(self, batch: int) -> bool:
        handle = self._stream.handle
        if self.execute_call == EXEC_V3:
            return bool(self._context.execute_async_v3(stream_handle=handle))
        if self.execute_call == EXEC_V2:
            return bool(
                self._context.execute_async_v2(bindings=self._bindings, stream_handle=handle)
            )
        return bool(
            self._context.execute_async(
                batch_size=batch, bindings=self._bindings, stream_handle=handle
            )
        )

    def close(self) -> None:
        with self._lock, self._sets_lock:
            if self._engine is None and self._runtime is None:
                return
            with self._cuda.activated():
                self._release()

    def _release(self) -> None:
        """Free device buffers, then the context and engine -- inside a push (a pycuda object
        freed without its context leaks: "could not be cleaned up")."""
        for t in self._tensors:
            for extra in t.sets[1:]:
                extra.free()
            if t.device is not None:
                t.device.free()
                t.device = None
            t.sets = []
            t.host = None
        self._context = None
        self._engine = None
        self._runtime = None
        self._stream = None


def _host(binding: Any) -> np.ndarray:
    """A binding's page-locked host array (allocated with the binding's buffers)."""
    if binding.host is None:
        raise BackendError(f"tensor {binding.name}: no host buffer (buffers not allocated)")
    return binding.host
