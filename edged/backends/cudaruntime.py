"""CUDA as the TensorRT backend needs it: a small interface and its pycuda implementation.

:class:`CudaRuntime` is what :class:`~edged.backends.tensorrt_backend.TensorRTBackend` calls
(allocate, copy, stream, synchronise, inside a context); tests use a fake of it
(tests/fake_tensorrt.py). :class:`PycudaRuntime` runs on the device's primary context
(:mod:`edged.cudacontext`), pushed around every call on the calling thread.
"""

import abc
import contextlib
from typing import Any, Iterator, Sequence

import numpy as np


class CudaRuntime(abc.ABC):
    """The CUDA operations the backend needs (pycuda on a Jetson, a fake in tests)."""

    @abc.abstractmethod
    def push(self) -> None:
        """Make the shared context current on this thread."""

    @abc.abstractmethod
    def pop(self) -> None:
        """Undo one :meth:`push`."""

    @abc.abstractmethod
    def pagelocked(self, shape: Sequence[int], dtype: "np.dtype") -> np.ndarray:
        """Page-locked host memory: asynchronous copies need it (CUDA C programming guide,
        "Page-Locked Host Memory")."""

    @abc.abstractmethod
    def device_alloc(self, nbytes: int) -> Any:
        """Device memory; ``int(buf)`` is its address, ``buf.free()`` releases it."""

    @abc.abstractmethod
    def stream(self) -> Any:
        """A stream with ``.handle`` (int) and ``.synchronize()``."""

    @abc.abstractmethod
    def htod_async(self, device: Any, host: np.ndarray, stream: Any) -> None:
        """Copy ``host`` into ``device``."""

    @abc.abstractmethod
    def dtoh_async(self, host: np.ndarray, device: Any, stream: Any) -> None:
        """Copy ``device`` into ``host`` (``host.nbytes`` bytes)."""

    def wait(self, stream: Any) -> None:
        """Return once everything queued on ``stream`` has run (context pushed)."""
        stream.synchronize()

    @contextlib.contextmanager
    def activated(self) -> Iterator[None]:
        """``push()`` now, ``pop()`` in ``finally``: every push has its pop (tensorrt_demos#148)."""
        self.push()
        try:
            yield
        finally:
            self.pop()


class PycudaRuntime(CudaRuntime):
    """pycuda on the device's primary context, shared with edged's kernels (edged/cudacontext.py).

    Never ``pycuda.autoinit`` (a private context) nor ``pycuda.autoprimaryctx`` (it leaves the
    context pushed on the importing thread): every use pushes and pops on its own thread.
    """

    def __init__(self) -> None:
        from ..cudacontext import shared_context

        shared = shared_context()  # CudaUnavailableError (a BackendError) without pycuda/GPU
        self._cuda = shared.cuda
        self._context = shared.context

    def push(self) -> None:
        self._context.push()

    def pop(self) -> None:
        self._cuda.Context.pop()

    def pagelocked(self, shape: Sequence[int], dtype: "np.dtype") -> np.ndarray:
        return self._cuda.pagelocked_empty(tuple(shape), dtype, mem_flags=0)

    def device_alloc(self, nbytes: int) -> Any:
        return self._cuda.mem_alloc(max(int(nbytes), 1))

    def stream(self) -> Any:
        return self._cuda.Stream()

    def htod_async(self, device: Any, host: np.ndarray, stream: Any) -> None:
        self._cuda.memcpy_htod_async(device, host, stream)

    def dtoh_async(self, host: np.ndarray, device: Any, stream: Any) -> None:
        self._cuda.memcpy_dtoh_async(host, device, stream)

    def wait(self, stream: Any) -> None:
        """Sleep, not spin, until ``stream`` is done (:func:`edged.cudacontext.blocking_event`)."""
        from ..cudacontext import blocking_event

        done = blocking_event(self._cuda)
        done.record(stream)
        done.synchronize()
        # ``done`` is destroyed on return, while the caller still has the context pushed
