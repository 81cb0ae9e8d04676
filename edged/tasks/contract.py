"""The input contract: what a model's input tensor expects, declared once and read everywhere.

One frozen value says how a source frame becomes the model's input: the stretch-resize target
size and sampling, the channel order, the normalisation ``y = (x * scale - mean) / std`` per
channel, the layout and the element type. Every pre-processor consumes it (the numpy/OpenCV
reference, the CUDA kernel, INT8 calibration, ``edged infer``), so none of them guesses.
"""

from dataclasses import dataclass, replace
from typing import Any, Tuple

import numpy as np

Triple = Tuple[float, float, float]

#: stretch-resize sampling methods every pre-processor implements
RESIZE_METHODS = ("nearest", "linear", "area")
CHANNEL_ORDERS = ("rgb", "bgr")
LAYOUTS = ("nchw",)
DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class InputContract:
    """How one source frame becomes one model input (a stretch resize: no crop, no letterbox).

    Attributes:
        width, height: the network's input size in pixels.
        channel_order: ``rgb`` or ``bgr``: the order of the model's input planes.
        scale, mean, std: ``y = (x * scale - mean[c]) / std[c]`` for an 8-bit sample ``x``,
            with ``mean``/``std`` in the MODEL's channel order.
        resize: ``nearest`` (jetson-inference's index rounding), ``linear`` or ``area``.
        layout: ``nchw`` (planar).
        dtype: ``float32`` or ``float16``: the element type of the input buffer.
    """

    width: int
    height: int
    channel_order: str = "rgb"
    scale: float = 1.0 / 255.0
    mean: Triple = (0.0, 0.0, 0.0)
    std: Triple = (1.0, 1.0, 1.0)
    resize: str = "linear"
    layout: str = "nchw"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_METHODS:
            raise ValueError(f"resize must be one of {RESIZE_METHODS}, not {self.resize!r}")
        if self.channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be rgb or bgr, not {self.channel_order!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, not {self.layout!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, not {self.dtype!r}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"input size must be positive, not {self.width}x{self.height}")

    @property
    def rgb(self) -> bool:
        return self.channel_order == "rgb"

    @property
    def size(self) -> Tuple[int, int]:
        """``(width, height)``."""
        return self.width, self.height

    def affine(self) -> Tuple[np.ndarray, np.ndarray]:
        """Per-channel ``a, b`` with ``(x * scale - mean) / std == x * a + b`` (float32, [3]).

        Computed in float64 and rounded once, so every pre-processor multiplies by the same
        float32 constants.
        """
        std = np.asarray(self.std, dtype=np.float64)
        a = self.scale / std
        b = -np.asarray(self.mean, dtype=np.float64) / std
        return a.astype(np.float32), b.astype(np.float32)

    def with_size(self, width: int, height: int) -> "InputContract":
        return replace(self, width=int(width), height=int(height))


@dataclass(frozen=True)
class InputDefaults:
    """A task's input contract without the size: what holds unless the model's config says else.

    A task declares one of these; :meth:`resolve` combines it with the model's ``input``
    config section (any of ``color``, ``scale``, ``mean``, ``std``, ``resize`` set there
    wins) and the input tensor's size into the :class:`InputContract` every pre-processor
    reads.
    """

    channel_order: str = "rgb"
    scale: float = 1.0 / 255.0
    mean: Triple = (0.0, 0.0, 0.0)
    std: Triple = (1.0, 1.0, 1.0)
    resize: str = "linear"
    layout: str = "nchw"
    dtype: str = "float32"

    def resolve(self, width: int, height: int, overrides: Any = None) -> InputContract:
        """The contract for a ``width`` x ``height`` input.

        Args:
            overrides: an object with optional ``color``, ``scale``, ``mean``, ``std`` and
                ``resize`` attributes (the config's ``InputConfig``); None values keep the
                default.
        """

        def pick(name: str, default: Any) -> Any:
            value = getattr(overrides, name, None)
            return default if value is None else value

        return InputContract(
            width=int(width),
            height=int(height),
            channel_order=pick("color", self.channel_order),
            scale=float(pick("scale", self.scale)),
            mean=_triple(pick("mean", self.mean)),
            std=_triple(pick("std", self.std)),
            resize=pick("resize", self.resize),
            layout=self.layout,
            dtype=self.dtype,
        )


def _triple(values: Any) -> Triple:
    a, b, c = (float(v) for v in values)
    return a, b, c
