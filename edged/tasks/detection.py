"""DetectNet_v2 (PeopleNet, TrafficCamNet, ...) pre- and post-processing, as TAO and DeepStream.

Input (tao-tensorrt.md 3.1): RGB, ``x / 255``, no mean, stretch resize (no
letterbox), planar CHW. Outputs: coverage ``[C, H/16, W/16]`` (sigmoid, one
channel per class) and boxes ``[4C, H/16, W/16]`` (channels ``4c + 0..3`` are
class c's x1, y1, x2, y2 terms).

Decoding (tao-tensorrt.md 3.2; TAO ``BboxHandler.abs_bbox_converter``,
DeepStream ``DetectPostprocessor::parseBoundingBox``, jetson-inference
``postProcessDetectNet_v2``), for grid row i, column j, class c, stride s,
normaliser n, offset o::

    cx = s*j + o                 cy = s*i + o
    x1 = cx - n*b[4c+0]          y1 = cy - n*b[4c+1]
    x2 = cx + n*b[4c+2]          y2 = cy + n*b[4c+3]

in network pixels, then scaled by ``src_w / net_w`` and ``src_h / net_h``.

- A cell is a candidate when ``coverage >= threshold[c]``: DeepStream's parser
  skips a cell only when ``confidence < perClassPreclusterThreshold`` (so ``>=``
  passes), and its ``pre-cluster-threshold=1.0`` idiom disables a class.
- Boxes are in continuous edge coordinates (pixel k covers [k, k+1)), so they
  are clamped to ``[0, src_w] x [0, src_h]``, the image's true extent. DeepStream
  clamps to ``[0, net_w - 1]`` because it treats corners as pixel indices; that
  pulls a box touching the right edge about one network pixel inwards and makes
  its width depend on the network size. edged keeps the formula's coordinates.
- Then boxes narrower than ``min_width`` or lower than ``min_height`` source
  pixels are dropped (DeepStream's ``detected-min-w/h``, in source pixels here);
  boxes with no area are always dropped, as are NaNs.

Clustering per class is in :mod:`edged.tasks.clustering` (NMS, DBSCAN, none). Its
DBSCAN scores a cluster by its MAX member coverage, as DeepStream does; TAO sums the
coverage instead, so DeepStream thresholds transfer to edged and TAO's do not.
"""

import logging
from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ..errors import ConfigError, ModelContractError
from .clustering import ClusterParams, cluster_boxes

__all__ = [
    "BBOX_ALIASES",
    "COVERAGE_ALIASES",
    "INPUT_ALIASES",
    "Candidates",
    "ClusterParams",
    "DecodeParams",
    "Detection",
    "DetectNetV2Postprocessor",
    "decode_grid",
    "peoplenet_defaults",
]

logger = logging.getLogger(__name__)

# Tensor names across releases (tao-tensorrt.md 2, 3.1): .etlt/UFF, ONNX (":0"), PeopleNet v1.
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
    min_width: float = 4.0  # source pixels
    min_height: float = 4.0  # source pixels

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


class Candidates(NamedTuple):
    """Decoded, thresholded boxes of one image, before clustering."""

    boxes: np.ndarray  # float32 [N, 4] x1, y1, x2, y2 in source pixels
    scores: np.ndarray  # float32 [N] coverage
    class_ids: np.ndarray  # int32 [N]


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


def decode_grid(
    cov: np.ndarray,
    bbox: np.ndarray,
    params: DecodeParams,
    net_w: int,
    net_h: int,
    src_w: int,
    src_h: int,
) -> Candidates:
    """Decode one image's coverage [C, H, W] and bbox [4C, H, W] grids into candidates.

    Candidates come in (class, row, column) order -- DeepStream's order, which
    decides ties in clustering.
    """
    cov = np.asarray(cov)
    bbox = np.asarray(bbox)
    check_output_shapes(cov, bbox)
    num_classes, grid_h, grid_w = cov.shape
    hits = cov >= params.class_thresholds(num_classes)[:, None, None]
    cls, row, col = np.nonzero(hits)
    scores = cov[cls, row, col].astype(np.float32)
    # [C, 4, H, W] indexed by (cls, :, row, col) -> [N, 4]: the advanced axis goes first.
    terms = bbox.reshape(num_classes, 4, grid_h, grid_w)[cls, :, row, col].astype(np.float64)

    norm = float(params.bbox_norm)
    cx = col * float(params.stride) + params.offset
    cy = row * float(params.stride) + params.offset
    scale_x = float(src_w) / float(net_w)
    scale_y = float(src_h) / float(net_h)
    boxes = np.empty((len(cls), 4), dtype=np.float64)
    boxes[:, 0] = (cx - norm * terms[:, 0]) * scale_x
    boxes[:, 1] = (cy - norm * terms[:, 1]) * scale_y
    boxes[:, 2] = (cx + norm * terms[:, 2]) * scale_x
    boxes[:, 3] = (cy + norm * terms[:, 3]) * scale_y
    np.clip(boxes[:, 0::2], 0.0, float(src_w), out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], 0.0, float(src_h), out=boxes[:, 1::2])

    width = boxes[:, 2] - boxes[:, 0]
    height = boxes[:, 3] - boxes[:, 1]
    # NaN compares False, so NaN boxes go too.
    keep = (width > 0) & (height > 0) & (width >= params.min_width) & (height >= params.min_height)
    return Candidates(boxes[keep].astype(np.float32), scores[keep], cls[keep].astype(np.int32))


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
    """

    def __init__(
        self,
        labels: Sequence[str],
        decode: DecodeParams,
        clustering: Sequence[ClusterParams],
    ) -> None:
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
        candidates = decode_grid(cov, bbox, self.decode, net_w, net_h, src_w, src_h)
        detections = []  # type: List[Detection]
        for class_id, params in enumerate(self.clustering):
            mine = candidates.class_ids == class_id
            if not mine.any():
                continue
            boxes, scores = cluster_boxes(candidates.boxes[mine], candidates.scores[mine], params)
            label = self.labels[class_id]
            detections.extend(
                Detection(class_id, label, float(s), tuple(float(v) for v in b))
                for b, s in zip(boxes, scores)
            )
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
    """DeepStream's current PeopleNet settings (tao-tensorrt.md 3.3).

    ``deepstream_tao_apps`` ``config_infer_primary_peoplenet.txt``: per-class NMS,
    IoU 0.5, top-k 20, pre-cluster threshold 0.2, 0.4 for class 0 (person).
    """
    if num_classes < 1:
        raise ConfigError(f"a detector needs at least one class (got {num_classes})")
    decode = DecodeParams(thresholds=(0.4,) + (0.2,) * (num_classes - 1))
    clustering = [ClusterParams(method="nms", iou_threshold=0.5, top_k=20)] * num_classes
    return decode, clustering
