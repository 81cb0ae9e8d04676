"""DetectNet_v2 (PeopleNet, TrafficCamNet, ...) post-processing, exactly as DeepStream or TAO.

Input (NGC PeopleNet model card; DeepStream ``net-scale-factor=1/255``): RGB,
``x / 255``, no mean, stretch resize (no letterbox), planar CHW. Outputs: coverage
``[C, H/16, W/16]`` (sigmoid, one channel per class) and boxes ``[4C, H/16, W/16]``
(channels ``4c + 0..3`` are class c's x1, y1, x2, y2 terms).

Decoding (TAO ``BboxHandler.abs_bbox_converter``, DeepStream
``DetectPostprocessor::parseBoundingBox``), for grid row i, column j, class c,
stride s, normaliser n, offset o::

    cx = s*j + o                 cy = s*i + o
    x1 = cx - n*b[4c+0]          y1 = cy - n*b[4c+1]
    x2 = cx + n*b[4c+2]          y2 = cy + n*b[4c+3]

in network pixels. Everything after that -- the coverage test (``>=`` or ``>``),
clamping (to ``net - 1`` before clustering, or to ``net`` after), clustering, and
scaling to source pixels -- follows the reference named by ``detection.compat``
(:mod:`edged.tasks.compat`; docs/parity.md), so edged's boxes equal that tool's.
``min_width``/``min_height`` then drop boxes smaller than that in source pixels
(DeepStream's ``detected-min-w/h``, applied after clustering as nvinfer does).
"""

import logging
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import ConfigError, ModelContractError
from .clustering import ClusterParams
from .compat import DEFAULT_COMPAT, get_compat

__all__ = [
    "BBOX_ALIASES",
    "COVERAGE_ALIASES",
    "INPUT_ALIASES",
    "ClusterParams",
    "DecodeParams",
    "Detection",
    "DetectNetV2Postprocessor",
    "peoplenet_defaults",
]

logger = logging.getLogger(__name__)

# Tensor names across releases (TAO detectnet_v2 exporter.py; deepstream_tao_apps
# download_models.sh): .etlt/UFF, ONNX (":0"), PeopleNet v1.
COVERAGE_ALIASES = (
    "output_cov/Sigmoid",
    "output_cov/Sigmoid:0",
    "conv2d_cov/Sigmoid",
    "conv2d_cov/Sigmoid:0",
)
BBOX_ALIASES = ("output_bbox/BiasAdd", "output_bbox/BiasAdd:0", "conv2d_bbox", "conv2d_bbox:0")
INPUT_ALIASES = ("input_1", "input_1:0")

#: DeepStream's pre-cluster-threshold default (gstnvinfer_property_parser.h)
DEFAULT_PRE_CLUSTER_THRESHOLD = 0.2


@dataclass(frozen=True)
class DecodeParams:
    """Grid decoding parameters (TAO defaults: stride 16, normaliser 35, offset 0.5).

    ``thresholds`` holds one pre-cluster coverage threshold per class; one value
    applies to every class, none means DeepStream's default 0.2.
    """

    stride: int = 16
    bbox_norm: float = 35.0
    offset: float = 0.5
    thresholds: Tuple[float, ...] = ()
    min_width: float = 4.0  # source pixels, after clustering
    min_height: float = 4.0  # source pixels, after clustering

    def __post_init__(self) -> None:
        if self.stride <= 0 or self.bbox_norm <= 0:
            raise ConfigError(
                "detection stride and bbox_norm must be positive "
                f"(got {self.stride}, {self.bbox_norm})"
            )
        if any(not np.isfinite(t) or t < 0 for t in self.thresholds):
            raise ConfigError(
                f"detection thresholds must be finite and >= 0 (got {list(self.thresholds)})"
            )

    def class_thresholds(self, num_classes: int) -> np.ndarray:
        """float32 [num_classes]; float32 like the coverage it is compared with."""
        given = tuple(self.thresholds) or (DEFAULT_PRE_CLUSTER_THRESHOLD,)
        if len(given) == 1:
            given = given * num_classes
        if len(given) < num_classes:
            raise ModelContractError(
                f"detection thresholds are given for {len(given)} classes "
                f"but the model has {num_classes}"
            )
        return np.asarray(given[:num_classes], dtype=np.float32)


def check_output_shapes(cov: np.ndarray, bbox: np.ndarray) -> None:
    """Raise ModelContractError unless cov is [C, H, W] and bbox is [4C, H, W]."""
    if cov.ndim != 3 or cov.shape[0] < 1:
        raise ModelContractError(
            f"DetectNet_v2 coverage output has shape {list(cov.shape)}; expected classes x H x W"
        )
    expected = (4 * cov.shape[0],) + tuple(cov.shape[1:])
    if tuple(bbox.shape) != expected:
        raise ModelContractError(
            f"DetectNet_v2 bbox output has shape {list(bbox.shape)}; "
            f"expected {list(expected)} for coverage {list(cov.shape)}"
        )


@dataclass(frozen=True)
class Detection:
    """One detected object in source-pixel coordinates."""

    class_id: int
    label: str
    confidence: float
    bbox: Tuple[float, float, float, float]  # x1, y1, x2, y2
    track_id: Optional[int] = None  # set by the stream's tracker (edged/tracking); None: untracked

    def to_dict(self) -> Dict[str, object]:
        """JSON/MQTT form: bbox to 0.1 px, confidence to 4 decimals; track_id when tracked."""
        out = {
            "label": self.label,
            "class_id": self.class_id,
            "confidence": round(self.confidence, 4),
            "bbox": [round(v, 1) for v in self.bbox],
        }  # type: Dict[str, object]
        if self.track_id is not None:
            out["track_id"] = self.track_id
        return out


class DetectNetV2Postprocessor:
    """Coverage + bbox grids of one image -> clustered detections, most confident first.

    Args:
        labels: one name per class; a model with more classes than labels has the
            extra classes ignored (DeepStream's ``num-detected-classes``).
        decode: grid decoding and pre-cluster thresholds.
        clustering: one :class:`ClusterParams` per class (or one for all).
        compat: whose post-processing to reproduce (``deepstream`` or ``tao``).
    """

    def __init__(
        self,
        labels: Sequence[str],
        decode: DecodeParams,
        clustering: Sequence[ClusterParams],
        compat: str = DEFAULT_COMPAT,
    ) -> None:
        self.compat = get_compat(compat)
        self.labels = tuple(labels)
        if not self.labels:
            raise ConfigError("a detector needs at least one label")
        clustering = tuple(clustering)
        if len(clustering) == 1:
            clustering = clustering * len(self.labels)
        if len(clustering) != len(self.labels):
            raise ConfigError(
                f"{len(clustering)} clustering settings for {len(self.labels)} classes; "
                "give one per class or one for all"
            )
        decode.class_thresholds(len(self.labels))  # fail at start-up, not on the first frame
        self.decode = decode
        self.clustering = clustering
        self._warned_extra_classes = False

    def __call__(
        self,
        cov: np.ndarray,
        bbox: np.ndarray,
        src_w: int,
        src_h: int,
        net_w: int,
        net_h: int,
    ) -> List[Detection]:
        """Detections for ONE image (a leading batch dimension of 1 is accepted)."""
        cov = _single_image(np.asarray(cov), "coverage")
        bbox = _single_image(np.asarray(bbox), "bbox")
        check_output_shapes(cov, bbox)
        cov, bbox = self._known_classes(cov, bbox)
        found = self.compat.postprocess(
            cov, bbox, self.decode, self.clustering, (net_w, net_h), (src_w, src_h)
        )
        detections = [
            Detection(
                int(c),
                self.labels[c],
                float(s),
                (float(b[0]), float(b[1]), float(b[2]), float(b[3])),
            )
            for b, s, c in zip(found.boxes, found.scores, found.class_ids)
        ]
        detections.sort(key=lambda d: -d.confidence)  # stable: class order breaks ties
        return detections

    def _known_classes(self, cov: np.ndarray, bbox: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        num_model, num_labels = cov.shape[0], len(self.labels)
        if num_model < num_labels:
            raise ModelContractError(
                f"the detector outputs {num_model} classes but {num_labels} labels are configured"
            )
        if num_model > num_labels:
            if not self._warned_extra_classes:
                logger.warning(
                    "detector outputs %d classes, %d labels configured: ignoring classes %d..%d",
                    num_model,
                    num_labels,
                    num_labels,
                    num_model - 1,
                )
                self._warned_extra_classes = True
            return cov[:num_labels], bbox[: 4 * num_labels]
        return cov, bbox


def _single_image(tensor: np.ndarray, what: str) -> np.ndarray:
    if tensor.ndim == 4:
        if tensor.shape[0] != 1:
            raise ModelContractError(
                f"DetectNet_v2 {what} output has a batch of {tensor.shape[0]}; "
                "post-process one image at a time"
            )
        return tensor[0]
    return tensor


def peoplenet_defaults(num_classes: int = 3) -> Tuple[DecodeParams, List[ClusterParams]]:
    """DeepStream's current PeopleNet settings.

    ``deepstream_tao_apps`` ``config_infer_primary_peoplenet.txt``: per-class NMS,
    IoU 0.5, top-k 20, pre-cluster threshold 0.2, 0.4 for class 0 (person).
    """
    if num_classes < 1:
        raise ConfigError(f"a detector needs at least one class (got {num_classes})")
    decode = DecodeParams(thresholds=(0.4,) + (0.2,) * (num_classes - 1))
    clustering = [ClusterParams(method="nms", iou_threshold=0.5, top_k=20)] * num_classes
    return decode, clustering
