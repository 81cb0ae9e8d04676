"""OpenCV's bit-exact bilinear resize (``cv2.INTER_LINEAR_EXACT``): sampling tables, numpy twin.

The CPU path (edged/tasks/preprocess.py) resizes with ``INTER_LINEAR_EXACT``, whose result is
defined in integers and is the same on every platform (OpenCV's
modules/imgproc/src/resize.cpp, ``resize_bitExact`` with ``interpolationLinear``; the fixed-point
types of modules/imgproc/src/fixedpoint.inl.hpp). The CUDA kernel and the numpy reference
compute the same integers from the tables built here, so the three agree bit for bit.

OpenCV's arithmetic, per axis (source size ``n``, destination size ``m``):

* ``scale = 1 / (m / n)`` in double (``cv::resize`` passes ``inv_scale = (double)m / n``,
  the interpolator takes its reciprocal), ``f = scale * (i + 0.5) - 0.5`` in double, one
  rounding per operation, ``i0 = floor(f)``;
* ``i0 < 0`` (or ``n == 1``): the first source pixel; ``i0 >= n - 1``: the last one;
  otherwise taps ``i0`` and ``i0 + 1`` with weights ``256 - w`` and
  ``w = round_half_even((f - i0) * 256)`` (8 fractional bits, ``ufixedpoint16``);
* horizontal pass: ``h = p0 * (256 - wx) + p1 * wx``, kept exact (at most 255 * 256);
* vertical pass: ``(h0 * (256 - wy) + h1 * wy + 2**15) >> 16`` (``ufixedpoint32`` rounded to
  8 bits; rows above/below the image copy the border row's ``h`` rounded the same way).

A border sample is the tap ``(i0, 256)``, which gives the same integers as OpenCV's copy of
the border, so one formula covers every destination index. Each index is one int32 word:
``i0 << SHIFT | w``; the second tap is ``min(i0 + 1, n - 1)``.
"""

import functools

import numpy as np

#: fractional bits of a weight (OpenCV's ufixedpoint16 for 8-bit images)
WEIGHT_BITS = 8
ONE = 1 << WEIGHT_BITS
#: a table word is ``i0 << SHIFT | w`` with ``0 <= w <= ONE`` (kernels.cu: TAB_SHIFT)
SHIFT = WEIGHT_BITS + 1
ROUND = 1 << (2 * WEIGHT_BITS - 1)


def axis_table(src: int, dst: int) -> np.ndarray:
    """int32 word ``i0 << SHIFT | w`` of each of ``dst`` destination indices (read-only, cached)."""
    return _axis_table(int(src), int(dst))


@functools.lru_cache(maxsize=64)
def _axis_table(src: int, dst: int) -> np.ndarray:
    if src < 1 or dst < 1 or src >= 1 << (31 - SHIFT):
        raise ValueError(f"cannot resize {src} pixels to {dst}")
    scale = 1.0 / (float(dst) / float(src))  # both roundings OpenCV makes, in IEEE double
    f = scale * (np.arange(dst, dtype=np.float64) + 0.5) - 0.5  # numpy: no fused multiply-add
    i0 = np.floor(f)
    inside = (i0 >= 0) & (i0 < src - 1)  # src == 1: never inside
    weight = np.where(inside, np.rint((f - i0) * ONE), 0).astype(np.int64)  # rint: half to even
    first = np.where(inside, i0, np.where(i0 < 0, 0, src - 1)).astype(np.int64)
    if src == 1:
        first[:] = 0
    table = ((first << SHIFT) | weight).astype(np.int32)
    table.setflags(write=False)  # shared by every caller through the cache
    return table


def frame_tables(src_w: int, src_h: int, dst_w: int, dst_h: int) -> np.ndarray:
    """The columns' words then the rows' words: what the CUDA kernel reads for one source size."""
    return np.concatenate([axis_table(src_w, dst_w), axis_table(src_h, dst_h)])


def _taps(src: int, dst: int):
    words = axis_table(src, dst).astype(np.int64)
    first = words >> SHIFT
    weight = words & ((1 << SHIFT) - 1)
    return first, np.minimum(first + 1, src - 1), ONE - weight, weight


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 H x W [x C] -> height x width [x C] uint8, equal to ``cv2.INTER_LINEAR_EXACT``."""
    src_h, src_w = image.shape[:2]
    x0, x1, wx0, wx1 = _taps(src_w, width)
    y0, y1, wy0, wy1 = _taps(src_h, height)
    pixels = image.reshape(src_h, src_w, -1).astype(np.int64)
    extra = (slice(None), None)  # broadcast a column weight over the channels
    horizontal = pixels[:, x0] * wx0[extra] + pixels[:, x1] * wx1[extra]  # exact 8.8 fixed point
    rows = horizontal[y0] * wy0[:, None, None] + horizontal[y1] * wy1[:, None, None]
    out = ((rows + ROUND) >> (2 * WEIGHT_BITS)).astype(np.uint8)
    return out.reshape((height, width) + image.shape[2:])
