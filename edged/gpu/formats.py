"""Source pixel formats the fused pre-processing kernel reads, and how a host frame holds them.

Each format is registered once with its kernel code (``FMT_*`` in ``kernels.cu``) and the
layout of a host frame as numpy holds it (OpenCV's conventions):

* ``bgr``/``rgb``: H x W x 3; ``bgrx``/``rgbx`` (alias ``bgra``/``rgba``, what ``nvvidconv``
  hands over on a Jetson): H x W x 4; ``gray``: H x W;
* ``nv12`` and ``i420`` (decoders): (H * 3/2) x W, the Y plane then the chroma (NV12: one
  interleaved UV plane; I420: U then V, each W/2 x H/2); ``yuyv`` (USB cameras): H x W x 2.

:func:`planes` splits a frame into the plane offsets and pitches the kernel's descriptor holds.
"""

from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError


class PixelFormat(NamedTuple):
    name: str
    code: int  # FMT_* in kernels.cu
    channels: int  # last axis of an H x W x C frame; 0 for 2-D frames
    yuv420: bool  # (H * 3/2) x W with chroma planes after the luma plane


_FORMATS: Dict[str, PixelFormat] = {}


def register(fmt: PixelFormat, *aliases: str) -> None:
    for name in (fmt.name,) + aliases:
        _FORMATS[name] = fmt


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
