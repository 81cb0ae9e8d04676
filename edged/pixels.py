"""Host frames in a camera's own pixel format: their layout, and their conversion to BGR.

A frame travels from its source to the pre-processor in the format the source delivered:
the CUDA pre-processor (``edged/gpu/kernels.cu``) reads every format registered here itself,
so a camera feeding a CUDA model is never colour-converted on the CPU. Everything on the CPU
that needs BGR (the CPU pre-processing path, annotation, snapshots and their JPEG, tracking
overlays) converts here, in :func:`to_bgr`, and nowhere else;
:meth:`edged.sources.frame.Frame.bgr` calls it at most once per frame.

Each format is registered once with its kernel code (``FMT_*`` in ``kernels.cu``), the layout
of a host frame as numpy holds it (OpenCV's conventions) and the ``cv2.cvtColor`` code that
turns it into BGR:

* ``bgr``/``rgb``: H x W x 3; ``bgrx``/``rgbx`` (alias ``bgra``/``rgba``, what ``nvvidconv``
  hands over on a Jetson): H x W x 4; ``gray``: H x W;
* ``nv12`` and ``i420`` (decoders, ``nvvidconv``): (H * 3/2) x W, the Y plane then the chroma
  (NV12: one interleaved UV plane; I420: U then V, each W/2 x H/2); ``yuyv`` (USB cameras):
  H x W x 2.

The YUV conversions are BT.601 limited range, the matrix of the CUDA kernel too, so both
paths see the same colours. :func:`planes` splits a frame into the plane offsets and pitches
the kernel's descriptor holds. This module is a leaf (it imports no edged package but
``errors``): the capture side (``edged.sources``) and ``edged.gpu`` both use it.
"""

from typing import Any, Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from .errors import InputError


class PixelFormat(NamedTuple):
    name: str
    code: int  # FMT_* in kernels.cu
    channels: int  # last axis of an H x W x C frame; 0 for 2-D frames
    yuv420: bool  # (H * 3/2) x W with chroma planes after the luma plane


_FORMATS: Dict[str, PixelFormat] = {}


def register(fmt: PixelFormat, *aliases: str) -> None:
    for name in (fmt.name,) + aliases:
        _FORMATS[name] = fmt


#: canonical format name -> cv2 attribute turning it into BGR (None: it is BGR)
_TO_BGR: Dict[str, Optional[str]] = {}


def register_bgr(name: str, cv2_code: Optional[str]) -> None:
    """``name`` converts to BGR with ``cv2.<cv2_code>``."""
    _TO_BGR[get(name).name] = cv2_code


register(PixelFormat("bgr", 0, 3, False))
register(PixelFormat("rgb", 1, 3, False))
register(PixelFormat("bgrx", 2, 4, False), "bgra")
register(PixelFormat("rgbx", 3, 4, False), "rgba")
register(PixelFormat("gray", 4, 0, False))
register(PixelFormat("nv12", 5, 0, True))
register(PixelFormat("i420", 6, 0, True))
register(PixelFormat("yuyv", 7, 2, False), "yuy2")


def names() -> Tuple[str, ...]:
    """Every accepted format name (aliases included)."""
    return tuple(sorted(_FORMATS))


def get(name: str) -> PixelFormat:
    try:
        return _FORMATS[name.lower()]
    except KeyError:
        raise InputError(
            "unknown pixel format {!r} (known: {})".format(name, ", ".join(names()))
        ) from None


def guess(frame: np.ndarray) -> PixelFormat:
    """The format of a frame nobody named: H x W -> gray, x3 -> bgr (OpenCV), x4 -> bgrx."""
    if frame.ndim == 2:
        return _FORMATS["gray"]
    if frame.ndim == 3 and frame.shape[2] in (3, 4):
        return _FORMATS["bgr" if frame.shape[2] == 3 else "bgrx"]
    raise InputError(f"cannot tell the pixel format of a frame of shape {list(frame.shape)}")


def resolve(
    frames: Sequence[np.ndarray], formats: Optional[Sequence[str]]
) -> Tuple[PixelFormat, ...]:
    if formats is None:
        return tuple(guess(f) for f in frames)
    if isinstance(formats, str):
        formats = [formats] * len(frames)
    if len(formats) != len(frames):
        raise InputError(f"{len(formats)} pixel formats for {len(frames)} frames")
    return tuple(get(f) for f in formats)


class Planes(NamedTuple):
    """Image size and where the planes lie, as byte offsets from the frame's first byte."""

    width: int
    height: int
    pitch: int  # bytes per row of the first plane
    offset1: int  # second plane (NV12 UV, I420 U); 0 when none
    offset2: int  # third plane (I420 V); 0 when none
    pitch1: int  # bytes per row of the chroma planes


def planes(frame: np.ndarray, fmt: PixelFormat) -> Planes:
    """Geometry of a C-contiguous uint8 ``frame`` in ``fmt``.

    Raises:
        InputError: the frame's shape or type does not fit the format.
    """
    shape = list(frame.shape)
    if frame.dtype != np.uint8:
        raise InputError(f"{fmt.name} frames are uint8, not {frame.dtype}")
    if fmt.yuv420:
        if frame.ndim != 2 or frame.shape[0] % 3 or frame.shape[1] % 2:
            raise InputError(f"{fmt.name} frames are (H*3/2) x W with even H and W, not {shape}")
        height, width = frame.shape[0] * 2 // 3, frame.shape[1]
        if height % 2:
            raise InputError(f"{fmt.name} frames need an even height, not {height}")
        luma = width * height
        if fmt.name == "nv12":
            return Planes(width, height, width, luma, 0, width)
        return Planes(width, height, width, luma, luma + luma // 4, width // 2)
    want_ndim = 2 if fmt.channels == 0 else 3
    if frame.ndim != want_ndim or (fmt.channels and frame.shape[2] != fmt.channels):
        layout = "H x W" if fmt.channels == 0 else f"H x W x {fmt.channels}"
        raise InputError(f"{fmt.name} frames are {layout}, not {shape}")
    height, width = frame.shape[:2]
    if fmt.name == "yuyv" and width % 2:
        raise InputError(f"yuyv frames need an even width, not {width}")
    return Planes(width, height, width * max(fmt.channels, 1), 0, 0, 0)


register_bgr("bgr", None)
register_bgr("rgb", "COLOR_RGB2BGR")
register_bgr("bgrx", "COLOR_BGRA2BGR")  # drops the 4th byte: exact
register_bgr("rgbx", "COLOR_RGBA2BGR")
register_bgr("gray", "COLOR_GRAY2BGR")
register_bgr("nv12", "COLOR_YUV2BGR_NV12")
register_bgr("i420", "COLOR_YUV2BGR_I420")
register_bgr("yuyv", "COLOR_YUV2BGR_YUY2")


def frame_size(image: np.ndarray, fmt: str = "bgr") -> Tuple[int, int]:
    """``(width, height)`` of the picture ``image`` holds in ``fmt`` (an I420 array is
    (H * 3/2) x W).

    Raises:
        InputError: unknown format, or an array that does not fit it.
    """
    geometry = planes(image, get(fmt))
    return geometry.width, geometry.height


def to_bgr(image: np.ndarray, fmt: str = "bgr", cv2: Any = None) -> np.ndarray:
    """``image`` (in ``fmt``) as an H x W x 3 BGR uint8 array; a BGR image is returned as is.

    Raises:
        InputError: unknown format, or an array that does not fit it.
    """
    pf = get(fmt)
    planes(image, pf)  # shape and type checked before OpenCV sees them
    code = _TO_BGR.get(pf.name)
    if code is None:
        if pf.name != "bgr":
            raise InputError(f"no conversion from {pf.name} to BGR is registered")
        return image
    if cv2 is None:
        import cv2 as opencv  # noqa: PLC0415 - optional dependency, imported where it is used
    else:
        opencv = cv2
    return opencv.cvtColor(np.ascontiguousarray(image), getattr(opencv, code))
