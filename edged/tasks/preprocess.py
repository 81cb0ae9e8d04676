"""Image pre-processing reference: stretch resize, channel order, normalisation, HWC -> CHW.

``y = (x * scale - mean) / std`` per channel, computed as one multiply-add
(``x * a + b``) on the already-resized image so the work is proportional to
the network's input size, not the camera's. This numpy implementation is the
reference the CUDA kernels of the GPU runtime are checked against (issue 2).
"""

from typing import Sequence, Tuple

import numpy as np

INTERPOLATIONS = ("nearest", "linear", "area")


def cv2_interpolation(name: str) -> int:
    """OpenCV's flag for ``nearest`` / ``linear`` / ``area``."""
    import cv2

    return {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}[name]


def normalisation_terms(
    scale: float, mean: Sequence[float], std: Sequence[float]
) -> Tuple[np.ndarray, np.ndarray]:
    """Per-channel ``a, b`` with ``(x * scale - mean) / std == x * a + b`` (float32, shape [3])."""
    std_arr = np.asarray(std, dtype=np.float64)
    a = scale / std_arr
    b = -np.asarray(mean, dtype=np.float64) / std_arr
    return a.astype(np.float32), b.astype(np.float32)


def preprocess_image(
    frame_bgr: np.ndarray,
    width: int,
    height: int,
    rgb: bool,
    a: np.ndarray,
    b: np.ndarray,
    interpolation: str,
) -> np.ndarray:
    """BGR uint8 HxWx3 (any size) -> float32 3 x height x width, C-contiguous.

    Args:
        frame_bgr: the source image as OpenCV delivers it.
        width, height: the network's input size (a stretch resize: no crop, no letterbox).
        rgb: True when the model wants RGB (PeopleNet, ResNet-18), False for BGR.
        a, b: from :func:`normalisation_terms`, in the MODEL's channel order.
        interpolation: ``nearest`` (jetson-inference parity), ``linear`` or ``area``.
    """
    import cv2

    if frame_bgr.ndim == 2:
        frame_bgr = cv2.cvtColor(frame_bgr, cv2.COLOR_GRAY2BGR)
    elif frame_bgr.shape[2] == 4:
        frame_bgr = cv2.cvtColor(frame_bgr, cv2.COLOR_BGRA2BGR)
    if frame_bgr.shape[1] != width or frame_bgr.shape[0] != height:
        frame_bgr = cv2.resize(
            frame_bgr, (width, height), interpolation=cv2_interpolation(interpolation)
        )
    out = np.empty((3, height, width), dtype=np.float32)
    # contiguous planes first: reading one channel out of interleaved BGR was the cost
    # (issue 7 benchmark: 1.65 -> 1.20 ms at 960x544, bit-identical)
    planes = cv2.split(frame_bgr)
    for c in range(3):
        # model channel c comes from BGR channel 2 - c for RGB models
        src = planes[2 - c if rgb else c]
        # one pass uint8 -> float32 ``x * a + b`` straight into the output plane; numpy's
        # multiply then add is two (issue 7: 1.96 -> 1.31 ms at 768x576 -> 960x544, bit-identical)
        plane = out[c]
        written = cv2.addWeighted(
            src, float(a[c]), src, 0.0, float(b[c]), dst=plane, dtype=cv2.CV_32F
        )
        if written.ctypes.data != plane.ctypes.data:  # a binding that did not honour dst
            plane[...] = written
    return out
