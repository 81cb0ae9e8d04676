"""Image pre-processing reference: stretch resize, channel order, normalisation, HWC -> CHW.

Everything it does is read from one :class:`~edged.tasks.contract.InputContract`.
``y = (x * scale - mean) / std`` per channel is computed as one multiply-add
(``x * a + b``, :meth:`InputContract.affine`) on the already-resized image, so the work
is proportional to the network's input size, not the camera's. This numpy/OpenCV
implementation is the reference: any other pre-processor (on the GPU, say) must match it, and
the CUDA pre-processor does, bit for bit (edged/gpu/reference.py, tests/test_gpu_reference.py).

``linear`` is OpenCV's bit-exact bilinear resize, ``INTER_LINEAR_EXACT``: integer arithmetic
defined the same on every platform, which a GPU kernel can reproduce exactly
(edged/gpu/linear_tables.py). Plain ``INTER_LINEAR`` takes SIMD/IPP paths that differ between
x86 and ARM, and no float kernel matched it: on the demo clip the detector's boxes moved by up
to 2.6 px between the two. The exact resize costs more: 768x576 -> 960x544 BGR 1.34 ms against
0.78 ms, 1920x1080 -> 960x544 2.30 against 1.04 ms (OpenCV 5.0; 4.6: 1.48/0.77, 2.51/1.03;
timeit, best of 15, x86-64, 1 thread, on a loaded machine).

``nearest`` is jetson-inference's sampling, not OpenCV's: jetson-inference's
``c/tensorConvert.cu`` (``gpuTensorNormMean``) reads, for output column ``x``, the source
column ``int(float(x) * scale_x)`` with ``scale_x = float(in_w) / float(out_w)``, all in
float32 (rows likewise). OpenCV's ``INTER_NEAREST`` computes its indices differently and
picks a neighbouring source pixel on about 1 % of rows/columns, so edged computes
jetson-inference's indices itself, once per (source size, network size).
"""

import functools
from typing import Tuple

import numpy as np

from .contract import RESIZE_METHODS, InputContract

#: the sampling methods (kept as a name for callers that list them)
INTERPOLATIONS = RESIZE_METHODS


def cv2_interpolation(name: str) -> int:
    """OpenCV's flag for ``linear`` / ``area`` (``nearest`` does not use OpenCV)."""
    import cv2

    flags = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR_EXACT}
    flags["area"] = cv2.INTER_AREA
    return flags[name]


def nearest_indices(src: int, dst: int) -> np.ndarray:
    """Source index of each of ``dst`` output positions, as jetson-inference samples them.

    ``int(float32(i) * float32(float32(src) / float32(dst)))``: the product is rounded to
    float32 once (jetson-inference's CUDA kernel does one float multiply) and truncated toward
    zero. The result is clamped to ``src - 1``, which the formula never exceeds for sizes up to
    2**16 but a rounded-up product could otherwise reach.
    """
    return _nearest_indices(int(src), int(dst))


@functools.lru_cache(maxsize=64)
def _nearest_indices(src: int, dst: int) -> np.ndarray:
    scale = np.float32(src) / np.float32(dst)  # float32 / float32 -> float32
    positions = np.arange(dst, dtype=np.float32) * scale  # float32 products
    indices = np.minimum(positions.astype(np.int64), src - 1).astype(np.intp)
    indices.setflags(write=False)  # shared by every caller through the cache
    return indices


#: cv2.remap's integer maps (CV_16SC2) hold coordinates up to this
_REMAP_MAX = 32767


def resize_nearest(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` (H x W [x C]) stretched to ``width`` x ``height`` with jetson-inference's indices.

    The gather is ``cv2.remap`` over a cached map of those exact integer indices (no
    rounding left to OpenCV): 0.08 ms for 1920x1080 -> 224x224 where numpy's fancy
    indexing took 0.56 ms and ``take`` along both axes 0.19 ms (timeit, x86-64, 1 core).
    """
    src_h, src_w = image.shape[:2]
    if max(src_w, src_h, width, height) > _REMAP_MAX:
        rows = nearest_indices(src_h, height)
        cols = nearest_indices(src_w, width)
        return image.take(rows, axis=0).take(cols, axis=1)
    import cv2

    return cv2.remap(image, _nearest_map(src_w, src_h, width, height), None, cv2.INTER_NEAREST)


@functools.lru_cache(maxsize=8)
def _nearest_map(src_w: int, src_h: int, width: int, height: int) -> np.ndarray:
    """int16 (x, y) source coordinates of every output pixel (2 MiB at 960x544)."""
    xy = np.empty((height, width, 2), dtype=np.int16)
    xy[..., 0] = nearest_indices(src_w, width)[np.newaxis, :]
    xy[..., 1] = nearest_indices(src_h, height)[:, np.newaxis]
    xy.setflags(write=False)
    return xy


def resize(image: np.ndarray, width: int, height: int, method: str) -> np.ndarray:
    """Stretch ``image`` to ``width`` x ``height`` with ``nearest``, ``linear`` or ``area``."""
    if image.shape[1] == width and image.shape[0] == height:
        return image
    if method == "nearest":
        return resize_nearest(image, width, height)
    import cv2

    return cv2.resize(image, (width, height), interpolation=cv2_interpolation(method))


def preprocess_image(frame_bgr: np.ndarray, contract: InputContract) -> np.ndarray:
    """BGR uint8 HxWx3 (any size; gray and BGRA are converted) -> float32 3 x H x W.

    The output is C-contiguous, ``contract.height`` x ``contract.width``, planes in the
    contract's channel order, normalised with the contract's scale, mean and std.
    """
    import cv2

    if frame_bgr.ndim == 2:
        frame_bgr = cv2.cvtColor(frame_bgr, cv2.COLOR_GRAY2BGR)
    elif frame_bgr.shape[2] == 4:
        frame_bgr = cv2.cvtColor(frame_bgr, cv2.COLOR_BGRA2BGR)
    width, height = contract.size
    frame_bgr = resize(frame_bgr, width, height, contract.resize)
    tables = _affine_tables(contract)
    out = np.empty((3, height, width), dtype=np.float32)
    # contiguous planes first: reading one channel out of interleaved BGR was the cost
    # (benchmarks/: 1.65 -> 1.20 ms at 960x544, bit-identical)
    planes = cv2.split(np.ascontiguousarray(frame_bgr))
    for c in range(3):
        # model channel c comes from BGR channel 2 - c for RGB models
        src = planes[2 - c if contract.rgb else c]
        # one pass uint8 -> float32 straight into the output plane: a lookup of the 256
        # values of ``x * a + b`` (float32 multiply, then add: what the CUDA kernel computes).
        # cv2.addWeighted, used before, computes in double and differs in the last bit; per
        # 960x544 plane the lookup takes 0.16 ms, addWeighted 0.11 (OpenCV 5.0) / 0.19 (4.6)
        plane = out[c]
        written = cv2.LUT(src, tables[c], dst=plane)
        if written.ctypes.data != plane.ctypes.data:  # a binding that did not honour dst
            plane[...] = written
    return out


@functools.lru_cache(maxsize=32)
def _affine_tables(contract: InputContract) -> Tuple[np.ndarray, ...]:
    """Per model channel, ``x * a + b`` in float32 for each 8-bit ``x`` (one IEEE op each)."""
    a, b = contract.affine()
    levels = np.arange(256, dtype=np.float32)
    tables = tuple(
        (levels * np.float32(a[c]) + np.float32(b[c])).astype(np.float32) for c in range(3)
    )
    for table in tables:
        table.setflags(write=False)
    return tables
