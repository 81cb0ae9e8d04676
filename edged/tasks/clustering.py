"""Per-class clustering of detector candidate boxes: its parameters and a per-reference dispatch.

DetectNet_v2 predicts a box in every grid cell its coverage threshold lets
through, so one person yields a dozen near-identical boxes; clustering turns
them into one detection. ``nms``, ``dbscan`` and ``none`` mean exactly the
algorithm of the reference chosen with ``detection.compat`` (DeepStream's nvinfer
by default, or TAO deploy): see :mod:`edged.tasks.compat_deepstream`,
:mod:`edged.tasks.compat_tao` and docs/parity.md for what each reproduces.

``top_k < 0`` keeps everything (DeepStream's default ``topk=-1``; TAO has no top-k).
"""

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from ..errors import ConfigError

NMS = "nms"
DBSCAN = "dbscan"
NONE = "none"
METHODS = (NMS, DBSCAN, NONE)

Boxes = Tuple[np.ndarray, np.ndarray]  # (boxes float32 [K, 4] x1 y1 x2 y2, scores float32 [K])


@dataclass(frozen=True)
class ClusterParams:
    """How one class's candidates are clustered (DeepStream ``[class-attrs-N]``)."""

    method: str = NMS
    iou_threshold: float = 0.5  # nms-iou-threshold
    top_k: int = 20  # topk; -1 = all
    eps: float = 0.7  # eps (DBSCAN distance 1 - IoU; TAO: dbscan_eps)
    min_boxes: int = 1  # minBoxes (TAO: dbscan_min_samples, summed coverage)
    dbscan_min_score: float = 0.0  # dbscan-min-score (sum of member coverage; DeepStream)
    post_threshold: float = 0.0  # post-cluster-threshold (TAO: nms/dbscan_confidence_threshold)
    min_cluster_height: float = 0.0  # TAO minimum_bounding_box_height (network px, dbscan)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(
                "clustering method must be one of {} (got {!r})".format(
                    ", ".join(METHODS), self.method
                )
            )
        if not 0.0 <= self.iou_threshold <= 1.0:
            raise ConfigError(
                f"clustering iou_threshold must be in [0, 1] (got {self.iou_threshold})"
            )
        if not 0.0 <= self.eps <= 1.0:
            raise ConfigError(f"clustering eps must be in [0, 1] (got {self.eps})")
        if self.top_k == 0:
            raise ConfigError("clustering top_k must be -1 (keep all) or at least 1 (got 0)")


def cluster_boxes(boxes: np.ndarray, scores: np.ndarray, params: ClusterParams) -> Boxes:
    """Cluster ONE class's candidates as DeepStream does; returns (boxes, scores).

    Boxes are x1, y1, x2, y2 (network pixels for exact parity, as DeepStream clusters
    before scaling); the result keeps DeepStream's order (best first after top-k).
    """
    from .compat_deepstream import METHODS as DEEPSTREAM_METHODS

    xyxy = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    ltwh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    ltwh, scores = DEEPSTREAM_METHODS[params.method](ltwh, scores, params)
    return np.concatenate([ltwh[:, :2], ltwh[:, :2] + ltwh[:, 2:]], axis=1), scores
