"""The device's primary CUDA context, shared by every thread of edged, through pycuda.

TensorRT runs on the primary context, so edged's kernels and buffers live there too. It is
retained once per process and never made current for good: every piece of CUDA work (and every
free) runs between :meth:`CudaContext.push` and :meth:`CudaContext.pop` on the thread doing it,
because worker threads have no current context, and a pycuda object freed on a thread without
its context leaks and warns "could not be cleaned up". ``pycuda.autoinit`` is never used: it
creates a second, private context and leaves it current on the importing thread.
"""

import contextlib
import logging
import threading
from typing import Any, Dict, Iterator, Optional

from .errors import BackendError

logger = logging.getLogger(__name__)

PYCUDA_HINT = "pip install 'pycuda>=2021.1' (edged's [tensorrt] extra)"


class CudaUnavailableError(BackendError):
    """pycuda, the CUDA driver, a GPU or nvcc is missing."""


def import_driver() -> Any:
    """``pycuda.driver``, initialised.

    Raises:
        CudaUnavailableError: pycuda is not installed, or the driver finds no GPU.
    """
    try:
        import pycuda.driver as cuda
    except ImportError as e:
        raise CudaUnavailableError(f"pycuda is not installed ({PYCUDA_HINT}): {e}") from e
    try:
        cuda.init()
        count = cuda.Device.count()
    except cuda.Error as e:
        raise CudaUnavailableError(f"the CUDA driver found no usable GPU: {e}") from e
    if count < 1:
        raise CudaUnavailableError("the CUDA driver found no GPU")
    return cuda


class CudaContext:
    """One device's primary context; :meth:`activated` brackets work on the calling thread."""

    def __init__(self, cuda: Any, ordinal: int = 0) -> None:
        self.cuda = cuda
        self.ordinal = ordinal
        try:
            self.device = cuda.Device(ordinal)
            self.context = self.device.retain_primary_context()
        except cuda.Error as e:
            raise CudaUnavailableError(f"GPU {ordinal}: cannot open its CUDA context: {e}") from e
        attr = cuda.device_attribute
        self.integrated = bool(self.device.get_attribute(attr.INTEGRATED))
        self.can_map_host_memory = bool(self.device.get_attribute(attr.CAN_MAP_HOST_MEMORY))
        major, minor = self.device.compute_capability()
        self.arch = f"sm_{major}{minor}"
        self.name = self.device.name()

    def push(self) -> None:
        self.context.push()

    def pop(self) -> None:
        self.cuda.Context.pop()

    @contextlib.contextmanager
    def activated(self) -> Iterator["CudaContext"]:
        """``push()`` now, ``pop()`` in ``finally``: every push has its pop."""
        self.push()
        try:
            yield self
        finally:
            self.pop()

    def mapped_host_memory(self) -> bool:
        """Whether host frames are read in place (integrated GPU: Jetson) instead of copied."""
        return self.integrated and self.can_map_host_memory

    def describe(self) -> str:
        return f"{self.name} ({self.arch}{', integrated' if self.integrated else ''})"


def blocking_event(cuda: Any) -> Any:
    """A pycuda event whose ``synchronize()`` puts the calling thread to sleep.

    ``Stream.synchronize()`` on a context with the default scheduling (``CU_CTX_SCHED_AUTO``:
    spin while the process has fewer contexts than CPUs; CUDA Driver API reference,
    ``cuCtxCreate``) busy-waits: the thread burns a CPU core for as long as the GPU works
    (benchmarks/results/gpu_preprocess.md: the cuda path's CPU ms per frame equal its wall
    ms). An event created with ``CU_EVENT_BLOCKING_SYNC`` makes ``cuEventSynchronize`` block
    the thread until the device has completed it instead (CUDA Driver API reference,
    ``cuEventCreate`` and ``cuEventSynchronize``); ``CU_EVENT_DISABLE_TIMING`` because no time
    is read from it.
    Create it with the context pushed (it belongs to the current context).
    """
    flags = cuda.event_flags
    return cuda.Event(flags=flags.BLOCKING_SYNC | flags.DISABLE_TIMING)


_lock = threading.Lock()
_contexts: Dict[int, "CudaContext"] = {}


def shared_context(ordinal: int = 0, cuda: Optional[Any] = None) -> CudaContext:
    """The process's one :class:`CudaContext` for GPU ``ordinal`` (created on first use)."""
    with _lock:
        ctx = _contexts.get(ordinal)
        if ctx is None:
            ctx = CudaContext(cuda if cuda is not None else import_driver(), ordinal)
            _contexts[ordinal] = ctx
            logger.info("CUDA: GPU %d is %s", ordinal, ctx.describe())
        return ctx


def probe() -> Optional[str]:
    """None when pycuda and a GPU are usable, else why not (one line)."""
    try:
        shared_context()
    except CudaUnavailableError as e:
        return str(e)
    return None
