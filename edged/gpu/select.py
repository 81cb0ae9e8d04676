"""DetectNet_v2 outputs left on the GPU: only the cells above threshold come back to the host.

With TensorRT the coverage and bbox grids of a batch are in device memory after inference.
``edged_detectnet_select`` (``kernels.cu``) keeps the cells whose coverage reaches their class
threshold, compacts them, and counts non-finite values; the host copies back only the counted
cells (index, coverage, the four bbox terms, bit for bit) and puts them into otherwise empty
grids (:func:`sparse_grids`). The task then post-processes those grids as it does full ones:
every ``detection.compat`` decodes only cells at or above the threshold, so its boxes, its
clustering and its results are the ones the full grids give (tests/test_hotpath_wiring.py
checks this on the CPU for each compat). Box decoding and clustering stay on the host.
"""

from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ..cudacontext import CudaContext, blocking_event, shared_context
from ..errors import ModelContractError
from .compiler import load_module

THREADS = 256
#: what empty cells hold in :func:`sparse_grids`: below every threshold (DecodeParams: >= 0)
EMPTY_COVERAGE = -1.0


class Survivors(NamedTuple):
    """One image's cells at or above threshold, and its count of non-finite output values."""

    cells: np.ndarray  # int32 [N]: class * H * W + row * W + column
    values: np.ndarray  # float32 [N, 5]: coverage, then the four bbox terms
    nonfinite: int


class GridSpec(NamedTuple):
    """A DetectNet_v2 task's grids, as :class:`DeviceGridOutputs` needs them."""

    coverage: str  # output names
    bbox: str
    shape: Tuple[int, int, int]  # classes, grid H, grid W
    thresholds: np.ndarray  # float32 [classes]: a class the task ignores has +inf


def sparse_grids(found: Survivors, shape: Tuple[int, int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """Coverage [C, H, W] and bbox [4C, H, W] holding only ``found``'s cells.

    Empty cells hold :data:`EMPTY_COVERAGE` and zero terms, which no compat decodes. When the
    outputs held NaN or infinity that no surviving cell carries (a NaN coverage never passes a
    threshold), one empty cell's first term is NaN: the worker's non-finite check still sees the
    frame, and no decode reads that term.
    """
    classes, gh, gw = shape
    plane = gh * gw
    cov = np.full((classes, plane), EMPTY_COVERAGE, np.float32)
    bbox = np.zeros((classes, 4, plane), np.float32)
    c, rc = np.divmod(found.cells.astype(np.intp), plane)
    cov[c, rc] = found.values[:, 0]
    bbox[c, :, rc] = found.values[:, 1:5]
    if found.nonfinite and np.isfinite(found.values).all():
        empty = np.flatnonzero(cov.reshape(-1) == EMPTY_COVERAGE)
        if empty.size:
            ec, erc = divmod(int(empty[0]), plane)
            bbox[ec, 0, erc] = np.nan
    return cov.reshape(classes, gh, gw), bbox.reshape(4 * classes, gh, gw)


class GpuGridSelector:
    """Runs ``edged_detectnet_select`` on up to ``max_batch`` images' grids in device memory."""

    def __init__(
        self,
        thresholds: np.ndarray,
        shape: Tuple[int, int, int],
        max_batch: int = 1,
        context: Optional[CudaContext] = None,
        cache_dir: Optional[str] = None,
    ) -> None:
        self.shape = tuple(int(d) for d in shape)
        classes, gh, gw = self.shape
        self.cells = classes * gh * gw
        self.max_batch = max(1, int(max_batch))
        self._ctx = context if context is not None else shared_context()
        cuda = self._cuda = self._ctx.cuda
        self._buffers: List[Any] = []
        self._hosts: List[Any] = []
        self._stream = self._kernel = self._done = None  # type: Any
        with self._ctx.activated():
            try:
                module = load_module(self._ctx, cache_dir)
                self._kernel = module.get_function("edged_detectnet_select")
                self._kernel.prepare("PPPiiiPPPP")
                self._stream = cuda.Stream()
                self._done = blocking_event(cuda)
                thresholds = np.ascontiguousarray(thresholds, np.float32)
                self._thresholds = self._alloc(thresholds.nbytes)
                cuda.memcpy_htod(self._thresholds, thresholds)
                self._counts_host = self._pinned((2, self.max_batch), np.uint32)
                self._counts = self._alloc(self._counts_host.nbytes)  # counts, then non-finite
                n = self.max_batch * self.cells
                self._cell_ids = self._alloc(4 * n)
                self._values = self._alloc(4 * 5 * n)
                self._cells_host = self._pinned((n,), np.int32)
                self._values_host = self._pinned((n, 5), np.float32)
            except BaseException:
                self._release()
                raise

    def _alloc(self, nbytes: int) -> Any:
        buf = self._cuda.mem_alloc(max(int(nbytes), 1))
        self._buffers.append(buf)
        return buf

    def _pinned(self, shape: Tuple[int, ...], dtype: Any) -> np.ndarray:
        arr = self._cuda.pagelocked_empty(shape, dtype)
        self._hosts.append(arr)
        return arr

    def select(self, cov: int, bbox: int, count: int) -> List[Survivors]:
        """Grids of ``count`` images at device addresses ``cov`` and ``bbox`` -> survivors."""
        if not 1 <= count <= self.max_batch:
            raise ModelContractError(f"{count} images for a GPU selector of batch {self.max_batch}")
        classes, gh, gw = self.shape
        cuda, stream = self._cuda, self._stream
        with self._ctx.activated():
            cuda.memset_d32_async(self._counts, 0, 2 * self.max_batch, stream)
            self._kernel.prepared_async_call(
                ((self.cells + THREADS - 1) // THREADS, count, 1), (THREADS, 1, 1), stream,
                int(cov), int(bbox), int(self._thresholds), classes, gh, gw,
                int(self._counts), int(self._counts) + 4 * self.max_batch,
                int(self._cell_ids), int(self._values),
            )  # fmt: skip
            cuda.memcpy_dtoh_async(self._counts_host, self._counts, stream)
            self._wait()
            counts = [int(v) for v in self._counts_host[0, :count]]
            for i, n in enumerate(counts):
                if n:  # only the counted cells come back
                    base = i * self.cells
                    cuda.memcpy_dtoh_async(self._cells_host[base : base + n],
                                           int(self._cell_ids) + 4 * base, stream)  # fmt: skip
                    cuda.memcpy_dtoh_async(self._values_host[base : base + n],
                                           int(self._values) + 20 * base, stream)  # fmt: skip
            self._wait()
        found = []
        for i, n in enumerate(counts):
            base = i * self.cells
            found.append(Survivors(self._cells_host[base : base + n].copy(),
                                   self._values_host[base : base + n].copy(),
                                   int(self._counts_host[1, i])))  # fmt: skip
        return found

    def _wait(self) -> None:
        self._done.record(self._stream)
        self._done.synchronize()

    def close(self) -> None:
        """Free the buffers with the context pushed. Idempotent."""
        if not self._buffers and not self._hosts:
            return
        with self._ctx.activated():
            self._release()

    def _release(self) -> None:
        for buf in self._buffers:
            buf.free()
        for arr in self._hosts:
            arr.base.free()
        self._buffers = []
        self._hosts = []
        self._stream = self._kernel = self._done = None


class DeviceGridOutputs:
    """Reads a DetectNet_v2 batch's outputs on the device: per frame, the sparse grids.

    ``backend`` is a TensorRT backend (``infer_prefilled_on_device``); the grids it returns
    stay valid until its next inference, which the same (inference) thread runs.
    """

    def __init__(self, spec: GridSpec, max_batch: int, selector: Any = None) -> None:
        self.spec = spec
        self.selector = selector or GpuGridSelector(spec.thresholds, spec.shape, max_batch)

    def __call__(self, backend: Any, count: int, slot: int) -> List[Dict[str, np.ndarray]]:
        on_device = backend.infer_prefilled_on_device(count, slot)
        cov, bbox = on_device[self.spec.coverage], on_device[self.spec.bbox]
        found = self.selector.select(cov, bbox, count)
        frames = []
        for survivors in found:
            c, b = sparse_grids(survivors, self.spec.shape)
            frames.append({self.spec.coverage: c, self.spec.bbox: b})
        return frames

    def close(self) -> None:
        self.selector.close()


def grid_spec(task: Any) -> Optional[GridSpec]:
    """The task's :class:`GridSpec`, or None when it has no DetectNet_v2 grids of fixed size."""
    describe: Optional[Any] = getattr(task, "grid_outputs", None)
    if describe is None:
        return None
    found: Optional[Sequence[Any]] = describe()
    if found is None:
        return None
    coverage, bbox, shape, thresholds = found
    classes, rows, columns = (int(d) for d in shape)
    return GridSpec(coverage, bbox, (classes, rows, columns), thresholds)
