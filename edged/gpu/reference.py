"""numpy reference of the fused pre-processing kernel: the same sampling formulas, op for op.

The CUDA kernel (``kernels.cu``) is checked against this module, not against ``cv2.resize``:
both convert each source pixel to RGB floats (BT.601 limited range for YUV, chroma of the
pixel's 2x2 block), sample it with the same float32 index arithmetic, keep the resized value
in float (no rounding to 8 bits), then apply ``x * a + b`` per channel. Every float32 operation
here is one IEEE operation in the order the kernel performs it, so the two agree to rounding
(bit for bit where the kernel's intrinsics forbid fused multiply-adds).

* ``nearest`` (jetson-inference's index rounding):
  ``src = int(float32(dst) * float32(src_n / dst_n))``.
* ``linear`` (OpenCV's half-pixel-centre convention): ``f = max((dst + 0.5) * scale - 0.5, 0)``,
  ``i0 = floor(f)``, ``w = f - i0``; at or past the last source index ``i0 = n - 1, w = 0``;
  ``i1 = min(i0 + 1, n - 1)``; value ``(p00 (1-wx) + p01 wx) (1-wy) + (p10 (1-wx) + p11 wx) wy``.

Its largest difference to ``cv2.resize(..., INTER_LINEAR)`` on 8-bit images is below one level
(OpenCV rounds its fixed-point result to 8 bits; this keeps the float): tests/test_gpu_reference.py.
"""

from typing import Tuple

import numpy as np

from ..tasks.contract import InputContract
from . import formats as fmts

F32 = np.float32
#: BT.601 limited-range YUV -> RGB, the constants of kernels.cu
KY, KRV, KGU, KGV, KBU = F32(1.164383), F32(1.596027), F32(-0.391762), F32(-0.812968), F32(2.017232)
RESIZES = ("nearest", "linear")


def _yuv_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    yy = KY * (y.astype(np.int32) - 16).astype(F32)
    uu = (u.astype(np.int32) - 128).astype(F32)
    vv = (v.astype(np.int32) - 128).astype(F32)
    r = np.clip(yy + KRV * vv, F32(0), F32(255))
    g = np.clip((yy + KGU * uu) + KGV * vv, F32(0), F32(255))
    b = np.clip(yy + KBU * uu, F32(0), F32(255))
    return np.stack([r, g, b], axis=-1).astype(F32)


def to_rgb(frame: np.ndarray, fmt: str) -> np.ndarray:
    """A frame in ``fmt`` -> H x W x 3 float32 RGB, each pixel as the kernel's ``fetch`` sees it."""
    pf = fmts.get(fmt)
    frame = np.ascontiguousarray(frame)
    geo = fmts.planes(frame, pf)
    w, h = geo.width, geo.height
    name = pf.name
    if name in ("bgr", "bgrx"):
        return frame[:, :, 2::-1].astype(F32)
    if name in ("rgb", "rgbx"):
        return frame[:, :, :3].astype(F32)
    if name == "gray":
        return np.repeat(frame[:, :, None], 3, axis=2).astype(F32)
    if name == "yuyv":
        y = frame[:, :, 0]
        u = np.repeat(frame[:, 0::2, 1], 2, axis=1)
        v = np.repeat(frame[:, 1::2, 1], 2, axis=1)
        return _yuv_to_rgb(y, u, v)
    flat = frame.reshape(-1)
    y = flat[: w * h].reshape(h, w)
    if name == "nv12":
        uv = flat[geo.offset1 : geo.offset1 + w * h // 2].reshape(h // 2, w // 2, 2)
        u, v = uv[:, :, 0], uv[:, :, 1]
    else:  # i420
        quarter = (w // 2) * (h // 2)
        u = flat[geo.offset1 : geo.offset1 + quarter].reshape(h // 2, w // 2)
        v = flat[geo.offset2 : geo.offset2 + quarter].reshape(h // 2, w // 2)
    u = np.repeat(np.repeat(u, 2, axis=0), 2, axis=1)
    v = np.repeat(np.repeat(v, 2, axis=0), 2, axis=1)
    return _yuv_to_rgb(y, u, v)


def nearest_index(dst_n: int, src_n: int) -> np.ndarray:
    """jetson-inference's nearest: ``int(float32(i) * float32(src_n / dst_n))``, clamped."""
    scale = F32(src_n) / F32(dst_n)
    idx = (np.arange(dst_n, dtype=F32) * scale).astype(np.int64)
    return np.minimum(idx, src_n - 1)


def linear_coords(dst_n: int, src_n: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i0, i1, w)`` of every destination index (the module docstring's formula)."""
    scale = F32(src_n) / F32(dst_n)
    f = np.maximum((np.arange(dst_n, dtype=F32) + F32(0.5)) * scale - F32(0.5), F32(0))
    i0 = f.astype(np.int64)
    w = (f - i0.astype(F32)).astype(F32)
    last = i0 >= src_n - 1
    i0[last] = src_n - 1
    w[last] = F32(0)
    return i0, np.minimum(i0 + 1, src_n - 1), w


def resize_rgb(rgb: np.ndarray, width: int, height: int, method: str) -> np.ndarray:
    """H x W x 3 float32 -> height x width x 3 float32 with the kernel's sampling."""
    if method not in RESIZES:
        raise ValueError(f"the CUDA pre-processor resizes with {RESIZES}, not {method!r}")
    src_h, src_w = rgb.shape[:2]
    if method == "nearest":
        return rgb[nearest_index(height, src_h)][:, nearest_index(width, src_w)]
    x0, x1, wx = linear_coords(width, src_w)
    y0, y1, wy = linear_coords(height, src_h)
    ix, iy = F32(1) - wx, F32(1) - wy
    wx, ix = wx[None, :, None], ix[None, :, None]
    wy, iy = wy[:, None, None], iy[:, None, None]
    rows0, rows1 = rgb[y0], rgb[y1]
    top = rows0[:, x0] * ix + rows0[:, x1] * wx
    bottom = rows1[:, x0] * ix + rows1[:, x1] * wx
    return (top * iy + bottom * wy).astype(F32)


def preprocess(frame: np.ndarray, fmt: str, contract: InputContract) -> np.ndarray:
    """One frame -> the model's 3 x H x W input in ``contract.dtype``, as the kernel writes it."""
    rgb = resize_rgb(to_rgb(frame, fmt), contract.width, contract.height, contract.resize)
    a, b = contract.affine()
    order = (0, 1, 2) if contract.rgb else (2, 1, 0)
    out = np.empty((3, contract.height, contract.width), dtype=F32)
    for plane, channel in enumerate(order):
        out[plane] = rgb[:, :, channel] * a[plane] + b[plane]
    return out.astype(contract.dtype)
