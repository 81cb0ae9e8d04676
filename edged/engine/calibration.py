"""INT8 calibration: from a given cache file, or from a folder of images.

``BuilderFlag.INT8`` needs a calibrator (tao_deploy ``EngineCalibrator``). A *cache-only*
calibrator returns the cache's bytes from ``read_calibration_cache()`` and
``None`` from ``get_batch()`` -- TensorRT then calibrates from the cache
alone (NVIDIA's ``resnet34_peoplenet_int8.txt``, TAO's ``cal.bin``). Without
a cache, :class:`ImageBatches` pre-processes a folder of images exactly like
inference does (the model's :class:`~edged.tasks.contract.InputContract`, resolved by
the task registry from the parsed network: ``edged.tasks.registry``) and the
calibrator feeds the batches through GPU memory; the cache TensorRT writes
back is kept in the engine cache under the images' hash, so the next build
with the same images calibrates from it without touching the GPU for data.

Only the full TensorRT has calibrators (TensorRT-RTX is strongly typed); the
classes are created at build time from the installed module.
"""

import logging
import os
from typing import Any, Callable, Iterator, List, Optional, Sequence

import numpy as np

from ..errors import EngineError
from ..tasks.contract import InputContract
from ..tasks.preprocess import preprocess_image
from .fingerprint import calibration_images

logger = logging.getLogger(__name__)

Upload = Callable[[np.ndarray], int]  # host batch -> device pointer (valid until the next call)


class ImageBatches:
    """Calibration batches (float32 N x 3 x H x W) from images, pre-processed like inference."""

    def __init__(
        self,
        paths: Sequence[str],
        contract: InputContract,
        batch_size: int,
        read_image: Optional[Callable[[str], np.ndarray]] = None,
    ) -> None:
        self.paths = list(paths)
        self.contract = contract
        self.shape = (3, contract.height, contract.width)
        self.batch_size = int(batch_size)
        self._read_image = read_image

    def __iter__(self) -> Iterator[np.ndarray]:
        read = self._read_image or _read_image
        for start in range(0, len(self.paths) - self.batch_size + 1, self.batch_size):
            batch = np.empty((self.batch_size,) + self.shape, dtype=np.float32)
            for i, path in enumerate(self.paths[start : start + self.batch_size]):
                batch[i] = preprocess_image(read(path), self.contract)
            yield batch


def _read_image(path: str) -> np.ndarray:
    from ..media import read_image

    return read_image(path)


def make_cache_calibrator(trt: Any, cache: bytes, batch_size: int = 1) -> Any:
    """A calibrator that only replays ``cache`` (tao_deploy ``EngineCalibrator`` with a cache)."""

    class _CacheOnlyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names: List[str]) -> Optional[List[int]]:
            return None  # no data: TensorRT must use the cache

        def read_calibration_cache(self) -> bytes:
            return cache

        def write_calibration_cache(self, new_cache: Any) -> None:
            return None  # a given cache is never rewritten

    return _CacheOnlyCalibrator()


def make_image_calibrator(
    trt: Any,
    batches: ImageBatches,
    upload: Upload,
    write_cache: Callable[[bytes], None],
) -> Any:
    """A calibrator feeding ``batches`` through ``upload`` and saving the cache it produces."""

    class _ImageCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = iter(batches)
            self.count = 0

        def get_batch_size(self) -> int:
            return batches.batch_size

        def get_batch(self, names: List[str]) -> Optional[List[int]]:
            batch = next(self._batches, None)
            if batch is None:
                return None
            self.count += 1
            if self.count % 10 == 1:
                logger.info("INT8 calibration: batch %d", self.count)
            return [int(upload(np.ascontiguousarray(batch)))] * len(names)

        def read_calibration_cache(self) -> Optional[bytes]:
            return None  # calibrate from the images

        def write_calibration_cache(self, cache: Any) -> None:
            write_cache(bytes(memoryview(cache)) if not isinstance(cache, bytes) else cache)

    return _ImageCalibrator()


class PycudaUploader:
    """The real :data:`Upload`: one device buffer, reused, on the shared primary context.

    TensorRT asks for batches on its builder thread, where no context is current: every
    allocation, copy and free pushes the context first (edged/cudacontext.py).
    """

    def __init__(self) -> None:
        from ..cudacontext import shared_context

        self._ctx = shared_context()
        self._buffer = None  # type: Any
        self._nbytes = 0

    def __call__(self, batch: np.ndarray) -> int:
        batch = np.ascontiguousarray(batch)
        with self._ctx.activated():
            if self._nbytes != batch.nbytes:
                self._free()
                self._buffer = self._ctx.cuda.mem_alloc(max(batch.nbytes, 1))
                self._nbytes = batch.nbytes
            self._ctx.cuda.memcpy_htod(self._buffer, batch)
            return int(self._buffer)

    def _free(self) -> None:
        if self._buffer is not None:
            self._buffer.free()
        self._buffer = None
        self._nbytes = 0

    def close(self) -> None:
        """Free the buffer (with the context pushed). Idempotent."""
        if self._buffer is not None:
            with self._ctx.activated():
                self._free()


def pycuda_uploader() -> PycudaUploader:
    return PycudaUploader()


def image_paths(folder: str, limit: int) -> List[str]:
    if not os.path.isdir(folder):
        raise EngineError(f"{folder}: calibration image folder not found")
    return calibration_images(folder, limit)
