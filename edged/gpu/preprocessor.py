"""The CUDA pre-processor: frames of several streams -> one model input batch, in one launch.

One fused kernel (``kernels.cu``) per batch reads each frame in its own pixel format (BGR,
BGRx/RGBA, NV12, I420, YUYV, gray), stretch-resizes it (nearest with jetson-inference's index
rounding, or OpenCV's bit-exact bilinear from sampling tables uploaded once per source size,
as the CPU path computes it), puts the channels in the model's order, applies ``x * a + b`` and
writes planar float32/float16 straight into the input device buffer: no CPU colour conversion,
no intermediate image in memory. Host frames are copied into page-locked staging memory and
uploaded on this pre-processor's stream; on an integrated GPU (Jetson) the staging memory is
mapped, so the kernel reads it in place and nothing is copied. Everything runs with the shared
primary context pushed on the calling thread, frees included (:meth:`close`).

The calling thread sleeps while the GPU works (a blocking-sync event,
:func:`edged.cudacontext.blocking_event`). :meth:`CudaPreprocessor.run` hands back
the batch in one of :data:`HOST_RING` page-locked host buffers, not a copy of it.
"""

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..cudacontext import CudaContext, blocking_event, shared_context
from ..errors import BackendError
from ..tasks.contract import InputContract
from . import formats as fmts
from . import linear_tables
from .compiler import load_module
from .reference import RESIZES

logger = logging.getLogger(__name__)

DESC_WORDS = 9  # D_WORDS in kernels.cu
#: bilinear sampling tables kept on the device, one per source size (a few KiB each); past
#: this many sizes they are all dropped before the next batch and rebuilt on demand
MAX_TABLES = 16
#: threads per block: 32 x 4 and 64 x 2 measured fastest (benchmarks/results/gpu_preprocess.md)
BLOCK = (32, 4, 1)

#: Page-locked host output buffers that :meth:`CudaPreprocessor.run` takes in turn. The batch it
#: returns stays valid for the next HOST_RING - 1 calls. The inference worker
#: (edged/pipeline/worker.py) holds at most three batches at once with ``pipeline.overlap``: one
#: being pre-processed, one waiting in the one-batch handoff, one in inference (it drops the
#: batch's tensors once the model has run); without overlap, one. So by the time ``run`` comes
#: back to a buffer, the batch that used it has been through inference.
HOST_RING = 3


class _Staging:
    """One frame slot's page-locked host buffer and (unless mapped) its device copy."""

    __slots__ = ("host", "device", "pointer", "nbytes")

    def __init__(self) -> None:
        self.host = None  # type: Any
        self.device = None  # type: Any
        self.pointer = 0
        self.nbytes = 0

    def free(self) -> None:
        if self.device is not None:
            self.device.free()
        if self.host is not None:
            self.host.base.free()
        self.host = self.device = None
        self.pointer = self.nbytes = 0


class CudaPreprocessor:
    """Pre-processes up to ``max_batch`` frames per call for one :class:`InputContract`.

    Raises:
        CudaUnavailableError: no pycuda, GPU or nvcc.
        BackendError: the contract asks for something the kernel does not do (``area``).
    """

    name = "cuda"

    def __init__(
        self,
        contract: InputContract,
        max_batch: int = 1,
        context: Optional[CudaContext] = None,
        cache_dir: Optional[str] = None,
        mapped: Optional[bool] = None,
        block: Tuple[int, int] = BLOCK[:2],
    ) -> None:
        if contract.resize not in RESIZES:
            raise BackendError(
                f"the CUDA pre-processor resizes with {' or '.join(RESIZES)}, not "
                f"{contract.resize!r}; choose one of those or pipeline.preprocess: cpu"
            )
        self.contract = contract
        self.max_batch = max(1, int(max_batch))
        self.dtype = np.dtype(contract.dtype)
        self._ctx = context if context is not None else shared_context()
        cuda = self._cuda = self._ctx.cuda
        # mapped: the kernel reads page-locked host frames in place (None: on integrated GPUs)
        self._mapped = self._ctx.mapped_host_memory() if mapped is None else bool(mapped)
        a, b = contract.affine()
        self._affine = [float(v) for v in list(a) + list(b)]  # exact: a, b are float32
        self._block = (int(block[0]), int(block[1]), 1)
        self._columns = 1
        self._closed = False
        self._staging = [_Staging() for _ in range(self.max_batch)]
        self._descs = self._output = self._descs_host = self._done = None  # type: Any
        self._ring: List[np.ndarray] = []
        self._next = 0  # the ring buffer the next run() fills
        self._stream = None  # type: Any
        self._tables: Dict[Tuple[int, int], Any] = {}
        with self._ctx.activated():
            try:
                self.use_module(load_module(self._ctx, cache_dir))
                self._stream = cuda.Stream()
                self._descs_host = cuda.pagelocked_empty((self.max_batch, DESC_WORDS), np.int64)
                self._descs = cuda.mem_alloc(self._descs_host.nbytes)
                self._done = blocking_event(cuda)
                self._output = cuda.mem_alloc(self.output_nbytes)
            except BaseException:
                self._release()
                raise

    def use_module(self, module: Any) -> None:
        """Launch this contract's kernel from ``module`` (a build of kernels.cu; context pushed)."""
        kernel = module.get_function(
            f"edged_preprocess_{self.contract.resize}_{self.contract.dtype}"
        )
        kernel.prepare("PPiiffffffi")
        pointer, _ = module.get_global("edged_columns")
        columns = np.zeros(1, np.int32)
        self._cuda.memcpy_dtoh(columns, pointer)
        self._kernel, self._columns = kernel, max(1, int(columns[0]))

    # -- running --------------------------------------------------------------------------

    @property
    def output_pointer(self) -> int:
        """The device address of this pre-processor's own N x 3 x H x W output buffer."""
        return int(self._output)

    @property
    def output_nbytes(self) -> int:
        """Bytes of a full batch (``max_batch`` x 3 x H x W)."""
        c = self.contract
        return self.max_batch * 3 * c.height * c.width * self.dtype.itemsize

    @property
    def stream(self) -> Any:
        return self._stream

    def run(
        self, frames: Sequence[np.ndarray], formats: Optional[Sequence[str]] = None
    ) -> np.ndarray:
        """Host frames -> N x 3 x H x W host array in page-locked memory, not copied.

        The array is valid until :data:`HOST_RING` - 1 more calls have returned.
        """
        n = len(frames)
        with self._ctx.activated():
            self._upload_and_launch(frames, formats, self.output_pointer)
            if not self._ring:  # on first use: a pre-processor feeding TensorRT never needs it
                shape = (self.max_batch, 3, self.contract.height, self.contract.width)
                self._ring = [self._cuda.pagelocked_empty(shape, self.dtype)
                              for _ in range(HOST_RING)]  # fmt: skip
            out = self._ring[self._next][:n]
            self._next = (self._next + 1) % HOST_RING
            self._cuda.memcpy_dtoh_async(out, self._output, self._stream)
            self._wait()
        return out

    def run_device(
        self,
        frames: Sequence[np.ndarray],
        formats: Optional[Sequence[str]] = None,
        dst: Optional[int] = None,
    ) -> int:
        """Host frames -> the batch in device memory at ``dst`` (default: own buffer), synchronised.

        ``dst`` is a model's input device buffer on the same context (TensorRT), which then
        needs no copy at all.
        """
        target = self.output_pointer if dst is None else int(dst)
        with self._ctx.activated():
            self._upload_and_launch(frames, formats, target)
            self._wait()
        return target

    def _wait(self) -> None:
        """Sleep until the stream's work is done (context pushed)."""
        self._done.record(self._stream)
        self._done.synchronize()

    def set_device_frames(self, frames: Sequence[Any]) -> int:
        """Describe frames already in device memory: ``(pointer, planes, format name)`` each.

        For callers that own the frame memory (benchmarks, a decoder's output); follow with
        :meth:`launch`. Call with the context pushed. Returns the frame count.
        """
        self._check_count(len(frames))
        self._trim_tables()
        for i, (pointer, geo, name) in enumerate(frames):
            self._describe(i, int(pointer), geo, fmts.get(name))
        self._cuda.memcpy_htod_async(self._descs, self._descs_host, self._stream)
        return len(frames)

    def launch(self, count: int, dst: int) -> None:
        """Queue the kernel for the first ``count`` described frames (context pushed, async)."""
        w, h = self.contract.width, self.contract.height
        bx, by, _ = self._block
        across = bx * self._columns
        grid = ((w + across - 1) // across, (h + by - 1) // by, count)
        self._kernel.prepared_async_call(
            grid, self._block, self._stream, int(self._descs), int(dst), int(w), int(h),
            *self._affine, 0 if self.contract.rgb else 1,
        )  # fmt: skip

    def _check_count(self, n: int) -> None:
        if self._closed:
            raise BackendError("the CUDA pre-processor is closed")
        if not 1 <= n <= self.max_batch:
            raise BackendError(f"{n} frames for a CUDA pre-processor of batch {self.max_batch}")

    def _upload_and_launch(
        self, frames: Sequence[np.ndarray], formats: Optional[Sequence[str]], dst: int
    ) -> None:
        self._check_count(len(frames))
        self._trim_tables()
        for i, (frame, pf) in enumerate(zip(frames, fmts.resolve(frames, formats))):
            frame = np.ascontiguousarray(frame)
            geo = fmts.planes(frame, pf)
            self._describe(i, self._stage(i, frame), geo, pf)
        self._cuda.memcpy_htod_async(self._descs, self._descs_host, self._stream)
        self.launch(len(frames), dst)

    def _describe(self, i: int, pointer: int, geo: fmts.Planes, pf: fmts.PixelFormat) -> None:
        self._descs_host[i] = (
            pointer,
            pointer + geo.offset1 if geo.offset1 else 0,
            pointer + geo.offset2 if geo.offset2 else 0,
            geo.width,
            geo.height,
            geo.pitch,
            geo.pitch1,
            pf.code,
            self._table_pointer(geo.width, geo.height),
        )

    def _table_pointer(self, src_w: int, src_h: int) -> int:
        """Device address of the bilinear sampling tables for this source size (0: nearest).

        Built on the host in double precision (edged/gpu/linear_tables.py, OpenCV's
        INTER_LINEAR_EXACT coefficients) and uploaded once per size: the kernel does no
        double arithmetic, which is slow on Jetson GPUs.
        """
        if self.contract.resize != "linear":
            return 0
        key = (src_w, src_h)
        table = self._tables.get(key)
        if table is None:
            host = linear_tables.frame_tables(
                src_w, src_h, self.contract.width, self.contract.height
            )
            table = self._cuda.mem_alloc(host.nbytes)
            self._tables[key] = table
            self._cuda.memcpy_htod(table, host)
        return int(table)

    def _trim_tables(self) -> None:
        """Before a batch is described (never during: its frames' pointers stay valid)."""
        if len(self._tables) > MAX_TABLES:
            self._free_tables()

    def _free_tables(self) -> None:
        if self._stream is not None:
            self._stream.synchronize()  # a queued launch may still read them
        for table in self._tables.values():
            table.free()
        self._tables.clear()

    def _stage(self, i: int, frame: np.ndarray) -> int:
        """Put ``frame`` where the GPU reads it; its device address."""
        cuda = self._cuda
        slot = self._staging[i]
        if frame.nbytes > slot.nbytes:
            slot.free()
            if self._mapped:
                slot.host = cuda.pagelocked_empty(
                    frame.nbytes, np.uint8, mem_flags=cuda.host_alloc_flags.DEVICEMAP
                )
                slot.pointer = int(slot.host.base.get_device_pointer())
            else:
                slot.host = cuda.pagelocked_empty(frame.nbytes, np.uint8)
                slot.device = cuda.mem_alloc(frame.nbytes)
                slot.pointer = int(slot.device)
            slot.nbytes = frame.nbytes
        staged = slot.host[: frame.nbytes]
        np.copyto(staged, frame.reshape(-1).view(np.uint8))
        if slot.device is not None:
            cuda.memcpy_htod_async(slot.device, staged, self._stream)
        return slot.pointer

    # -- teardown -------------------------------------------------------------------------

    def close(self) -> None:
        """Free every buffer, with the context pushed on this thread. Idempotent."""
        if self._closed:
            return
        with self._ctx.activated():
            self._release()

    def _release(self) -> None:
        self._closed = True
        if self._stream is not None:
            self._stream.synchronize()
        for slot in self._staging:
            slot.free()
        self._free_tables()
        for dev in (self._descs, self._output):
            if dev is not None:
                dev.free()
        for host in [self._descs_host] + self._ring:
            if host is not None:
                host.base.free()
        self._descs = self._output = self._descs_host = self._done = None
        self._ring = []
        self._stream = None
        self._kernel = None
