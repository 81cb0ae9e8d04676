"""Registry of DetectNet_v2 post-processing references: ``detection.compat`` picks one.

Each reference (DeepStream's nvinfer, TAO deploy) decodes, thresholds, clusters
and scales boxes its own way; a module per reference registers a
:class:`Compat` under its name, and ``clustering: nms | dbscan | none`` then
means that reference's algorithm exactly (docs/parity.md). The registry keeps
the choice a lookup, not an if/else chain.
"""

from typing import TYPE_CHECKING, Dict, List, NamedTuple, Sequence, Tuple

import numpy as np

from ..config import ClassSettings
from ..errors import ConfigError

if TYPE_CHECKING:  # only for annotations: detection.py imports this module
    from .clustering import ClusterParams
    from .detection import DecodeParams

DEFAULT_COMPAT = "deepstream"


class Boxes(NamedTuple):
    """Final boxes of one image: source pixels, each class's boxes together."""

    boxes: np.ndarray  # float64 [N, 4] x1, y1, x2, y2
    scores: np.ndarray  # float64 [N]
    class_ids: np.ndarray  # intp [N]

    @staticmethod
    def empty() -> "Boxes":
        return Boxes(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.intp))


class Compat:
    """One reference's post-processing; subclasses register themselves with :func:`register`.

    Attributes:
        name: the ``detection.compat`` value.
        builtin_default: class settings used where the config leaves a value unset.
        builtin_by_label: settings by lower-case label, above ``builtin_default``.
    """

    name = ""
    builtin_default = ClassSettings()
    builtin_by_label: Dict[str, ClassSettings] = {}

    def postprocess(
        self,
        cov: np.ndarray,
        bbox: np.ndarray,
        decode: "DecodeParams",
        clustering: Sequence["ClusterParams"],
        net: Tuple[int, int],
        src: Tuple[int, int],
    ) -> Boxes:
        """Coverage [C, H, W] and bbox [4C, H, W] of one image -> final boxes.

        ``clustering`` holds one ClusterParams per class; ``net`` and ``src`` are
        (width, height) of the network input and of the source image.
        """
        raise NotImplementedError


_REGISTRY: Dict[str, Compat] = {}


def register(compat: Compat) -> Compat:
    """Make ``compat`` selectable as ``detection.compat: <compat.name>``."""
    _REGISTRY[compat.name] = compat
    return compat


def names() -> List[str]:
    """Registered reference names, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def get_compat(name: str) -> Compat:
    """The registered reference called ``name``.

    Raises:
        ConfigError: no reference has that name.
    """
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            "detection.compat must be one of {} (got {!r})".format(
                ", ".join(sorted(_REGISTRY)), name
            )
        ) from None


def _load_builtin() -> None:
    # Importing the modules registers them; done lazily because they import this module.
    from . import compat_deepstream, compat_tao  # noqa: F401


def finite_rows(boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Mask of candidates whose corners and score are all finite.

    Neither reference checks for NaN: DeepStream would pass a NaN box on, and in
    either one a NaN box could suppress or join others. edged drops such a
    candidate before clustering, the one place it departs from both.
    """
    return np.isfinite(boxes).all(axis=1) & np.isfinite(scores)
