"""numpy reference of the fused pre-processing kernel: the same integer and float32 operations.

The CUDA kernel (``kernels.cu``) is checked against this module, and this module against
edged's CPU path (edged/tasks/preprocess.py), bit for bit: for a BGR frame the three give the
same tensor. Each converts the frame to 8-bit RGB, resizes the 8-bit image, then computes
``x * a + b`` per channel in float32 (one IEEE multiply, one IEEE add: the kernel's intrinsics
forbid fusing them, the CPU path looks the 256 values up in a table built the same way).

* colour: BGR/RGB/BGRx/RGBx/gray are copied; YUV (BT.601 limited range, chroma of the pixel's
  2x2 block) is converted in float32 by the kernel's formula and rounded half to even to 8 bits.
* ``nearest`` (jetson-inference's index rounding):
  ``src = int(float32(dst) * float32(src_n / dst_n))``.
* ``linear``: OpenCV's bit-exact bilinear resize, ``cv2.INTER_LINEAR_EXACT``, in integers from
  the sampling tables of :mod:`edged.gpu.linear_tables` (the tables the kernel reads).

Its difference to ``cv2.resize(..., INTER_LINEAR)`` (11-bit weights, platform-dependent SIMD
paths) is at most one level of 255: tests/test_gpu_reference.py.
"""

import numpy as np

from ..tasks.contract import InputContract
from . import formats as fmts
from . import linear_tables

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
    # rounded half to even to 8 bits (the kernel's __float2int_rn): the resize works on 8 bits
    return np.rint(np.stack([r, g, b], axis=-1)).astype(np.uint8)


def to_rgb(frame: np.ndarray, fmt: str) -> np.ndarray:
    """A frame in ``fmt`` -> H x W x 3 uint8 RGB, each pixel as the kernel's ``fetch`` sees it."""
    pf = fmts.get(fmt)
    frame = np.ascontiguousarray(frame)
    geo = fmts.planes(frame, pf)
    w, h = geo.width, geo.height
    name = pf.name
    if name in ("bgr", "bgrx"):
        return np.ascontiguousarray(frame[:, :, 2::-1])
    if name in ("rgb", "rgbx"):
        return np.ascontiguousarray(frame[:, :, :3])
    if name == "gray":
        return np.repeat(frame[:, :, None], 3, axis=2)
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


def resize_rgb(rgb: np.ndarray, width: int, height: int, method: str) -> np.ndarray:
    """H x W x 3 uint8 -> height x width x 3 uint8 with the kernel's sampling."""
    if method not in RESIZES:
        raise ValueError(f"the CUDA pre-processor resizes with {RESIZES}, not {method!r}")
    src_h, src_w = rgb.shape[:2]
    if method == "nearest":
        return rgb[nearest_index(height, src_h)][:, nearest_index(width, src_w)]
    return linear_tables.resize(rgb, width, height)


def preprocess(frame: np.ndarray, fmt: str, contract: InputContract) -> np.ndarray:
    """One frame -> the model's 3 x H x W input in ``contract.dtype``, as the kernel writes it."""
    rgb = resize_rgb(to_rgb(frame, fmt), contract.width, contract.height, contract.resize)
    a, b = contract.affine()
    order = (0, 1, 2) if contract.rgb else (2, 1, 0)
    out = np.empty((3, contract.height, contract.width), dtype=F32)
    for plane, channel in enumerate(order):
        out[plane] = rgb[:, :, channel].astype(F32) * a[plane] + b[plane]
    return out.astype(contract.dtype)
