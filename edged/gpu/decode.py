"""DetectNet_v2 grid decoding on the GPU: threshold and box decode, only survivors come back.

``edged_detectnet_decode`` (``kernels.cu``) runs one thread per (class, row, column) cell and
does :func:`edged.gpu.grid_reference.decode_grid`'s arithmetic in double; a surviving cell takes a
slot from an atomic counter and writes its cell index, coverage and box. The host reads the
counts, copies back only the counted slots, and sorts them by cell index -- numpy's (class,
row, column) order, which decides ties in clustering -- so the :class:`Candidates` equal the
numpy decode's. Clustering stays on the host.
"""

from typing import Any, List, Optional, Tuple

import numpy as np

from ..cudacontext import CudaContext, blocking_event, shared_context
from ..errors import ModelContractError
from ..tasks.detection import DecodeParams
from .compiler import load_module
from .grid_reference import Candidates

THREADS = 256


class GpuGridDecoder:
    """Decodes ``batch`` images' coverage [C, H, W] and bbox [4C, H, W] grids (float32)."""

    def __init__(
        self,
        params: DecodeParams,
        classes: int,
        grid_h: int,
        grid_w: int,
        max_batch: int = 1,
        context: Optional[CudaContext] = None,
        cache_dir: Optional[str] = None,
    ) -> None:
        self.params = params
        self.shape = (int(classes), int(grid_h), int(grid_w))
        self.cells = classes * grid_h * grid_w
        self.max_batch = max(1, int(max_batch))
        self._ctx = context if context is not None else shared_context()
        cuda = self._cuda = self._ctx.cuda
        self._buffers = []  # type: List[Any]
        self._hosts = []  # type: List[Any]
        self._stream = self._kernel = self._done = None  # type: Any
        with self._ctx.activated():
            try:
                module = load_module(self._ctx, cache_dir)
                self._kernel = module.get_function("edged_detectnet_decode")
                self._kernel.prepare("PPPiiiddddddddd" + "PPP")
                self._stream = cuda.Stream()
                self._done = blocking_event(cuda)  # the thread sleeps while the GPU decodes
                self._thresholds = self._alloc(params.class_thresholds(classes).nbytes)
                cuda.memcpy_htod(self._thresholds, params.class_thresholds(classes))
                self._counts_host = self._pinned((self.max_batch,), np.uint32)
                self._counts = self._alloc(self._counts_host.nbytes)
                n = self.max_batch * self.cells
                self._cell_ids = self._alloc(4 * n)
                self._values = self._alloc(4 * 5 * n)
                self._cells_host = self._pinned((n,), np.int32)
                self._values_host = self._pinned((n, 5), np.float32)
                self._cov_in = self._bbox_in = None  # type: Any
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

    def decode(
        self, cov: np.ndarray, bbox: np.ndarray, net_w: int, net_h: int,
        sizes: List[Tuple[int, int]],
    ) -> List[Candidates]:  # fmt: skip
        """Host grids ``[N, C, H, W]`` and ``[N, 4C, H, W]`` (uploaded first) -> candidates."""
        cov = np.ascontiguousarray(cov, dtype=np.float32)
        bbox = np.ascontiguousarray(bbox, dtype=np.float32)
        n = cov.shape[0]
        if cov.shape[1:] != self.shape or bbox.shape != (n, 4 * self.shape[0]) + self.shape[1:]:
            raise ModelContractError(
                f"DetectNet_v2 grids {list(cov.shape)} / {list(bbox.shape)} do not fit the GPU "
                f"decoder made for {list(self.shape)}"
            )
        with self._ctx.activated():
            if self._cov_in is None:
                self._cov_in = self._alloc(4 * self.max_batch * self.cells)
                self._bbox_in = self._alloc(16 * self.max_batch * self.cells)
            self._cuda.memcpy_htod_async(self._cov_in, cov, self._stream)
            self._cuda.memcpy_htod_async(self._bbox_in, bbox, self._stream)
            return self._decode(int(self._cov_in), int(self._bbox_in), net_w, net_h, sizes)

    def decode_device(
        self, cov: int, bbox: int, net_w: int, net_h: int, sizes: List[Tuple[int, int]]
    ) -> List[Candidates]:
        """Grids already in device memory (a TensorRT engine's outputs) -> candidates per image."""
        with self._ctx.activated():
            return self._decode(int(cov), int(bbox), net_w, net_h, sizes)

    def _decode(
        self, cov: int, bbox: int, net_w: int, net_h: int, sizes: List[Tuple[int, int]]
    ) -> List[Candidates]:
        cuda, stream, p = self._cuda, self._stream, self.params
        n = len(sizes)
        if not 1 <= n <= self.max_batch:
            raise ModelContractError(f"{n} images for a GPU decoder of batch {self.max_batch}")
        classes, grid_h, grid_w = self.shape
        cuda.memset_d32_async(self._counts, 0, self.max_batch, stream)
        # one launch per image: each has its own source size (the box scale)
        for i, (src_w, src_h) in enumerate(sizes):
            offset_cells = i * self.cells
            self._kernel.prepared_async_call(
                ((self.cells + THREADS - 1) // THREADS, 1, 1), (THREADS, 1, 1), stream,
                cov + 4 * offset_cells, bbox + 16 * offset_cells, int(self._thresholds),
                classes, grid_h, grid_w,
                float(p.stride), float(p.bbox_norm), float(p.offset),
                float(src_w) / float(net_w), float(src_h) / float(net_h),
                float(src_w), float(src_h), float(p.min_width), float(p.min_height),
                int(self._counts) + 4 * i, int(self._cell_ids) + 4 * offset_cells,
                int(self._values) + 20 * offset_cells,
            )  # fmt: skip
        cuda.memcpy_dtoh_async(self._counts_host, self._counts, stream)
        self._done.record(stream)
        self._done.synchronize()
        results = []
        for i in range(n):
            count = int(self._counts_host[i])
            base = i * self.cells
            if count:
                cells = self._cells_host[base : base + count]
                values = self._values_host[base : base + count]
                cuda.memcpy_dtoh_async(cells, int(self._cell_ids) + 4 * base, stream)
                cuda.memcpy_dtoh_async(values, int(self._values) + 20 * base, stream)
        self._done.record(stream)
        self._done.synchronize()
        for i in range(n):
            count = int(self._counts_host[i])
            base = i * self.cells
            cells = self._cells_host[base : base + count].copy()
            values = self._values_host[base : base + count]
            order = np.argsort(cells, kind="stable")
            values = values[order]
            results.append(
                Candidates(
                    np.ascontiguousarray(values[:, 1:5]),
                    np.ascontiguousarray(values[:, 0]),
                    (cells[order] // (grid_h * grid_w)).astype(np.int32),
                )
            )
        return results

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
