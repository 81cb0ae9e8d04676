"""Test frames in every pixel format the CUDA pre-processor reads: random, or from a real image."""

import numpy as np

FORMATS = ("bgr", "rgb", "bgrx", "rgbx", "gray", "nv12", "i420", "yuyv")


def random_frame(rng, fmt, width, height):
    """Random bytes laid out as a ``width`` x ``height`` frame in ``fmt`` (edged/gpu/formats.py)."""
    if fmt in ("nv12", "i420"):
        return rng.integers(0, 256, (height * 3 // 2, width), dtype=np.uint8)
    channels = {"bgr": 3, "rgb": 3, "bgrx": 4, "rgbx": 4, "gray": 0, "yuyv": 2}[fmt]
    shape = (height, width, channels) if channels else (height, width)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def from_bgr(image, fmt):
    """A real BGR image (even width and height) converted to ``fmt`` with OpenCV."""
    import cv2

    if fmt == "bgr":
        return image
    if fmt == "rgb":
        return np.ascontiguousarray(image[:, :, ::-1])
    if fmt == "bgrx":
        return cv2.cvtColor(image, cv2.COLOR_BGR2BGRA)
    if fmt == "rgbx":
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGBA)
    if fmt == "gray":
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    h, w = image.shape[:2]
    i420 = cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)
    if fmt == "i420":
        return i420
    flat = i420.reshape(-1)
    y = flat[: w * h].reshape(h, w)
    u = flat[w * h : w * h + w * h // 4].reshape(h // 2, w // 2)
    v = flat[w * h + w * h // 4 :].reshape(h // 2, w // 2)
    if fmt == "nv12":
        uv = np.stack([u, v], axis=-1).reshape(h // 2, w)
        return np.ascontiguousarray(np.concatenate([y, uv], axis=0))
    assert fmt == "yuyv"
    out = np.empty((h, w, 2), dtype=np.uint8)
    out[:, :, 0] = y
    rows_u = np.repeat(u, 2, axis=0)
    rows_v = np.repeat(v, 2, axis=0)
    out[:, 0::2, 1] = rows_u
    out[:, 1::2, 1] = rows_v
    return out
