"""Per-class clustering of detector candidate boxes: NMS, DBSCAN, or none.

DetectNet_v2 predicts a box in every grid cell its coverage threshold lets
through, so one person yields a dozen near-identical boxes; clustering turns
them into one detection. The three methods follow DeepStream's nvinfer
(``nvdsinfer_context_impl_output_parsing.cpp``; tao-tensorrt.md 3.3), so
thresholds from a DeepStream ``config_infer_*.txt`` carry over unchanged:

``nms`` (``cluster-mode=2``, ``clusterAndFillDetectionOutputNMS``)
    Sort by score, descending and stable (ties keep grid order); greedily keep a
    box while its IoU with every box kept so far is ``<= iou_threshold`` (IoU from
    ``x2 - x1`` / ``y2 - y1``, no ``+1``). Suppressed boxes are gone even when the
    box that suppressed them is later dropped. Then keep ``score > post_threshold``,
    then the first ``top_k``.

``dbscan`` (``cluster-mode=1``, ``nvdsinfer_dbscan.cpp``)
    Distance ``1 - IoU``; neighbours are boxes at distance ``< eps``; a box is a
    core box when ``neighbours + 1 >= min_boxes``. A cluster's box is the
    confidence-weighted mean of its members' corners and its confidence is the
    **maximum** member coverage; a cluster whose coverage **sum** is
    ``< dbscan_min_score`` is dropped. Then keep ``confidence >= post_threshold``
    (DeepStream removes ``< post-cluster-threshold`` here, unlike NMS's ``>``), then
    the ``top_k`` most confident. ``min_boxes < 1`` skips clustering, as DeepStream does.

    TAO (``tao_deploy .../detectnet_v2/utils.py``, sklearn DBSCAN) instead scores a
    cluster by the **sum** of its members' coverage, so TAO's
    ``dbscan_confidence_threshold`` values (0.9, 0.7 ...) are not probabilities and do
    not transfer. edged follows DeepStream (max) so DeepStream thresholds transfer.

    Cluster membership is textbook DBSCAN (as sklearn in TAO): clusters grow
    transitively through core boxes, and non-core boxes next to a core box join it as
    border boxes. DeepStream's published source (isaac_ros_object_detection copy of
    ``nvdsinfer_dbscan.cpp``) means to do the same (``joinNeighbors``) but its loop
    bound is copied before the join, so it only reaches a seed's direct neighbours and
    it drops border boxes; with ``min_boxes=1`` that differs only for chains of boxes.
    DeepStream's hard-coded area-to-hit-ratio filter (``sqrt(area) / (members + 1) >
    60`` network pixels drops a cluster) is not applied: it is undocumented, not
    configurable, and depends on the network resolution.

``none`` (``cluster-mode=4``, ``fillUnclusteredOutput``)
    Every candidate, best first, cut to ``top_k``; DeepStream applies no
    post-cluster threshold here, and neither does edged.

``top_k < 0`` keeps everything (DeepStream's default ``topk=-1``).
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
    eps: float = 0.7  # eps (DBSCAN distance 1 - IoU)
    min_boxes: int = 1  # minBoxes
    dbscan_min_score: float = 0.0  # dbscan-min-score (sum of member coverage)
    post_threshold: float = 0.0  # post-cluster-threshold

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


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` [N, 4] with every box in ``b`` [M, 4] -> [N, M] float64.

    Boxes are x1, y1, x2, y2 in continuous coordinates: width is ``x2 - x1``
    (no ``+1``), as DeepStream's ``computeIoU``. An empty union gives 0.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    inter_w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    inter_h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(inter_w, 0.0, None) * np.clip(inter_h, 0.0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def cluster_boxes(boxes: np.ndarray, scores: np.ndarray, params: ClusterParams) -> Boxes:
    """Cluster ONE class's candidates; returns (boxes, scores), most confident first."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if params.method == NMS:
        return _nms(boxes, scores, params)
    if params.method == DBSCAN:
        return _dbscan(boxes, scores, params)
    return _best_first(boxes, scores, params.top_k)


def _best_first(boxes: np.ndarray, scores: np.ndarray, top_k: int) -> Boxes:
    # DeepStream filterTopKOutputs: stable sort by confidence, descending, then cut.
    order = np.argsort(-scores, kind="stable")
    if top_k >= 0:
        order = order[:top_k]
    return boxes[order], scores[order]


def _nms(boxes: np.ndarray, scores: np.ndarray, params: ClusterParams) -> Boxes:
    order = np.argsort(-scores, kind="stable")
    kept = []
    passing = 0  # kept boxes that also pass the post-cluster threshold
    while order.size and (params.top_k < 0 or passing < params.top_k):
        best = order[0]
        kept.append(best)
        if scores[best] > params.post_threshold:
            passing += 1
        rest = order[1:]
        overlap = iou_matrix(boxes[best : best + 1], boxes[rest])[0]
        order = rest[overlap <= params.iou_threshold]
    # Kept boxes are in score order, so "post threshold, then top-k" is a plain filter here;
    # the loop above already stopped once top_k boxes passed.
    keep = np.asarray(kept, dtype=np.intp)
    keep = keep[scores[keep] > params.post_threshold]
    return boxes[keep], scores[keep]


def _dbscan(boxes: np.ndarray, scores: np.ndarray, params: ClusterParams) -> Boxes:
    if params.min_boxes >= 1 and len(boxes):
        boxes, scores = _dbscan_clusters(boxes, scores, params)
    keep = scores >= params.post_threshold
    return _best_first(boxes[keep], scores[keep], params.top_k)


def _dbscan_labels(boxes: np.ndarray, eps: float, min_boxes: int) -> Tuple[np.ndarray, int]:
    """Cluster id per box (-1 = noise) and the number of clusters."""
    neighbours = (1.0 - iou_matrix(boxes, boxes)) < eps
    np.fill_diagonal(neighbours, False)
    core = neighbours.sum(axis=1) + 1 >= min_boxes
    labels = np.full(len(boxes), -1, dtype=np.intp)
    clusters = 0
    for seed in range(len(boxes)):
        if labels[seed] >= 0 or not core[seed]:
            continue
        labels[seed] = clusters
        frontier = [seed]
        while frontier:
            box = frontier.pop()
            if not core[box]:
                continue  # a border box joins the cluster but does not extend it
            reached = np.flatnonzero(neighbours[box] & (labels < 0))
            labels[reached] = clusters
            frontier.extend(reached.tolist())
        clusters += 1
    return labels, clusters


def _dbscan_clusters(boxes: np.ndarray, scores: np.ndarray, params: ClusterParams) -> Boxes:
    labels, clusters = _dbscan_labels(boxes, params.eps, params.min_boxes)
    member = labels >= 0
    ids = labels[member]
    weights = scores[member].astype(np.float64)
    corners = boxes[member].astype(np.float64)
    total = np.bincount(ids, weights=weights, minlength=clusters)
    weighted = np.stack(
        [np.bincount(ids, weights=weights * corners[:, k], minlength=clusters) for k in range(4)],
        axis=1,
    )
    best = np.full(clusters, -np.inf)
    np.maximum.at(best, ids, weights)
    # total == 0 only when every member has coverage 0 (a threshold of 0): no mean exists.
    keep = (total >= params.dbscan_min_score) & (total > 0)
    mean = weighted[keep] / total[keep, None]
    return mean.astype(np.float32), best[keep].astype(np.float32)
