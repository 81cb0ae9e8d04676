"""DeepStream nvinfer's DetectNet_v2 post-processing, reproduced (``detection.compat: deepstream``).

Sources (DeepStream 6.x; docs/parity.md): ``nvdsinfer_context_impl_output_parsing.cpp``
(``parseBoundingBox``, ``clusterAndFillDetectionOutputNMS/DBSCAN``,
``fillUnclusteredOutput``, ``filterTopKOutputs``), ``nvdsinfer_dbscan.cpp`` (as published
in NVIDIA-ISAAC-ROS/isaac_ros_object_detection) and ``gstnvinfer_meta_utils.cpp``
(``attach_metadata_detector``). Arithmetic is float32 in the C++ order, so ties and
thresholds fall the same way.

1. Decode in network pixels: ``gc = float(j*stride + offset) / norm``,
   ``x1 = (b0 - gc) * -norm``, ``x2 = (b2 + gc) * norm``; a cell is a candidate when
   ``coverage >= threshold``. A corner ``>= net`` becomes ``net - 1``, then one ``< 0``
   becomes 0 (a corner in ``[net - 1, net)`` stays); a box with ``x2 < x1`` or
   ``y2 < y1`` is dropped. Boxes are kept as left, top, width, height.
2. Per class: ``nms`` (IoU from ``left + width``, no ``+1``; keep a box while its IoU
   with every kept box is ``<= iou_threshold``; then ``confidence > post_threshold``;
   then top-k), ``dbscan`` (below) or ``none`` (top-k only).
3. Scale to the source (``x / (net / src)``), then drop boxes narrower than
   ``min_width`` or lower than ``min_height`` source pixels (``detected-min-w/h``) and
   boxes whose bottom passes the source's.

DBSCAN (``NvDsInferDBScan::clusterObjects``): neighbours are boxes at ``1 - IoU < eps``;
a box is a seed when ``neighbours + 1 >= min_boxes``. A seed takes its unvisited
direct neighbours that are themselves seeds (the loop bound is read before
``joinNeighbors`` grows the list, so the cluster grows no further, and a neighbour that
is not a seed stays out). A cluster's box is the coverage-weighted mean of left, top,
width, height; it is dropped when its coverage sum is ``< min_score`` or when
``sqrt(area) / (members + 1) > 60`` network pixels (the hard-coded ATHR filter); its
confidence is the highest member coverage. Then ``confidence >= post_threshold`` and
top-k (unsorted when top-k is -1).
"""

from typing import List, Sequence, Tuple

import numpy as np

from ..config import ClassSettings
from .compat import Boxes, Compat, finite_rows, register

F32 = np.float32
#: nvdsinfer_context_impl_output_parsing.cpp ATHR_THRESHOLD: the DBSCAN area-to-hit-ratio cut.
ATHR_THRESHOLD = F32(60.0)

PerClass = Tuple[np.ndarray, np.ndarray]  # float32 [N, 4] left, top, width, height; float32 [N]


def decode_candidates(cov: np.ndarray, bbox: np.ndarray, decode, net_w: int,
                      net_h: int) -> List[PerClass]:  # fmt: skip
    """Candidates of each class in network pixels, in (row, column) order as parseBoundingBox."""
    num_classes, grid_h, grid_w = cov.shape
    cov = cov.astype(F32, copy=False)
    terms = bbox.astype(F32, copy=False).reshape(num_classes, 4, grid_h, grid_w)
    thresholds = decode.class_thresholds(num_classes)
    norm = F32(decode.bbox_norm)
    out = []
    for c in range(num_classes):
        rows, cols = np.nonzero(cov[c] >= thresholds[c])
        b = terms[c][:, rows, cols]
        gcx = (cols * float(decode.stride) + decode.offset).astype(F32) / norm
        gcy = (rows * float(decode.stride) + decode.offset).astype(F32) / norm
        x1 = (b[0] - gcx) * -norm
        y1 = (b[1] - gcy) * -norm
        x2 = (b[2] + gcx) * norm
        y2 = (b[3] + gcy) * norm
        for values, limit in ((x1, net_w), (x2, net_w), (y1, net_h), (y2, net_h)):
            values[values >= F32(limit)] = F32(limit - 1)
        for values in (x1, x2, y1, y2):
            values[values < 0] = F32(0)
        boxes = np.stack([x1, y1, x2 - x1, y2 - y1], axis=1).astype(F32)
        scores = cov[c][rows, cols]
        keep = ~((boxes[:, 2] < 0) | (boxes[:, 3] < 0)) & finite_rows(boxes, scores)
        out.append((boxes[keep], scores[keep]))
    return out


def iou_one_to_many(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """nonMaximumSuppression's computeIoU of one left/top/width/height box with many, float32."""
    l1, t1, w1, h1 = box
    l2, t2, w2, h2 = others[:, 0], others[:, 1], others[:, 2], others[:, 3]
    ox = np.maximum(F32(0), np.minimum(l1 + w1, l2 + w2) - np.maximum(l1, l2))
    oy = np.maximum(F32(0), np.minimum(t1 + h1, t2 + h2) - np.maximum(t1, t2))
    overlap = ox * oy
    union = (w1 * h1 + w2 * h2) - overlap
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union == 0, F32(0), overlap / union)


def _top_k(order: np.ndarray, scores: np.ndarray, top_k: int) -> np.ndarray:
    # filterTopKOutputs: nothing at all (not even a sort) for top-k < 0.
    if top_k < 0:
        return order
    ranked = order[np.argsort(-scores[order], kind="stable")]
    return ranked[:top_k]


def nms(boxes: np.ndarray, scores: np.ndarray, params) -> PerClass:
    # nonMaximumSuppression tests each box against the boxes kept before it; removing, after
    # each kept box, the later boxes it overlaps by more than the threshold is the same
    # (the IoU is symmetric, bit for bit) and loops once per kept box, not per candidate.
    order = np.argsort(-scores, kind="stable")
    threshold, post = F32(params.iou_threshold), F32(params.post_threshold)
    kept: List[int] = []
    while order.size and scores[order[0]] > post:  # below it, no later box is output either
        best = int(order[0])
        kept.append(best)
        if len(kept) == params.top_k:
            break
        rest = order[1:]
        order = rest[iou_one_to_many(boxes[best], boxes[rest]) <= threshold]
    keep = np.asarray(kept, dtype=np.intp)
    return boxes[keep], scores[keep]


def distances(boxes: np.ndarray) -> np.ndarray:
    """nvdsinfer_dbscan.cpp's 1 - IoU of every pair, float32 (the diagonal is never read)."""
    left, top, width, height = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = width * height
    iw = np.maximum(
        F32(0),
        np.minimum((left + width)[:, None], (left + width)[None, :])
        - np.maximum(left[:, None], left[None, :]),
    )
    ih = np.maximum(
        F32(0),
        np.minimum((top + height)[:, None], (top + height)[None, :])
        - np.maximum(top[:, None], top[None, :]),
    )
    inter = iw * ih
    with np.errstate(divide="ignore", invalid="ignore"):
        return F32(1) - inter / ((area[:, None] + area[None, :]) - inter)


def dbscan_labels(boxes: np.ndarray, eps: float, min_boxes: int) -> Tuple[np.ndarray, int]:
    """Cluster id of each box (-1: none) and the number of clusters, as clusterObjects."""
    count = len(boxes)
    near = distances(boxes) < F32(eps)  # NaN (two empty boxes) is no neighbour
    np.fill_diagonal(near, False)
    seed = near.sum(axis=1) + 1 >= min_boxes
    visited = np.zeros(count, dtype=bool)
    labels = np.full(count, -1, dtype=np.intp)
    clusters = 0
    for i in range(count):
        if visited[i]:
            continue
        visited[i] = True
        if not seed[i]:
            continue
        labels[i] = clusters
        for j in np.flatnonzero(near[i]):
            if not visited[j]:
                visited[j] = True
                if seed[j]:
                    labels[j] = clusters
        clusters += 1
    return labels, clusters


def dbscan(boxes: np.ndarray, scores: np.ndarray, params) -> PerClass:
    if params.min_boxes > 0 and len(boxes):
        boxes, scores = _clusters(boxes, scores, params)
    keep = np.flatnonzero(~(scores < F32(params.post_threshold)))
    keep = _top_k(keep, scores, params.top_k)
    return boxes[keep], scores[keep]


def _f32_sum(values: np.ndarray) -> F32:
    # The C++ adds member by member in float32; cumsum is sequential (np.sum is pairwise).
    return np.cumsum(values, dtype=F32)[-1]


def _clusters(boxes: np.ndarray, scores: np.ndarray, params) -> PerClass:
    labels, clusters = dbscan_labels(boxes, params.eps, params.min_boxes)
    out_boxes, out_scores = [], []
    for cluster in range(clusters):
        members = np.flatnonzero(labels == cluster)
        weights = scores[members]
        total = _f32_sum(weights)
        if total < F32(params.dbscan_min_score):
            continue
        mean = np.array([_f32_sum(weights * boxes[members, k]) for k in range(4)], F32) / total
        hit_ratio = np.sqrt(mean[2] * mean[3]) / F32(len(members) + 1)
        if hit_ratio > ATHR_THRESHOLD:
            continue
        out_boxes.append(mean)
        out_scores.append(max(F32(0), weights.max()))
    if not out_boxes:
        return np.zeros((0, 4), F32), np.zeros(0, F32)
    return np.stack(out_boxes).astype(F32), np.asarray(out_scores, F32)


def unclustered(boxes: np.ndarray, scores: np.ndarray, params) -> PerClass:
    keep = _top_k(np.arange(len(scores)), scores, params.top_k)
    return boxes[keep], scores[keep]


METHODS = {"nms": nms, "dbscan": dbscan, "none": unclustered}


def to_source(per_class: Sequence[PerClass], decode, net: Tuple[int, int],
              src: Tuple[int, int]) -> Boxes:  # fmt: skip
    """attach_metadata_detector: scale by net/src (double), then the min-size and bottom checks."""
    ratio_x = float(net[0]) / float(src[0])
    ratio_y = float(net[1]) / float(src[1])
    boxes, scores, class_ids = [], [], []
    for class_id, (ltwh, conf) in enumerate(per_class):
        left = (ltwh[:, 0].astype(np.float64) / ratio_x).astype(F32)
        top = (ltwh[:, 1].astype(np.float64) / ratio_y).astype(F32)
        width = (ltwh[:, 2].astype(np.float64) / ratio_x).astype(F32)
        height = (ltwh[:, 3].astype(np.float64) / ratio_y).astype(F32)
        keep = ~(width < F32(decode.min_width)) & ~(height < F32(decode.min_height))
        keep &= ~(top + height > F32(src[1]))
        left, top, width, height = (v[keep].astype(np.float64) for v in (left, top, width, height))
        boxes.append(np.stack([left, top, left + width, top + height], axis=1))
        scores.append(conf[keep].astype(np.float64))
        class_ids.append(np.full(int(keep.sum()), class_id, dtype=np.intp))
    if not boxes:
        return Boxes.empty()
    return Boxes(np.concatenate(boxes), np.concatenate(scores), np.concatenate(class_ids))


class DeepStream(Compat):
    name = "deepstream"
    # deepstream_tao_apps config_infer_primary_peoplenet.txt: NMS, IoU 0.5, top-k 20,
    # pre-cluster threshold 0.2 (0.4 for person); eps/minBoxes from its DBSCAN block.
    builtin_default = ClassSettings(
        threshold=0.2,
        clustering="nms",
        iou_threshold=0.5,
        top_k=20,
        eps=0.7,
        min_boxes=1,
        min_score=0.0,
        post_threshold=0.0,
        min_cluster_height=0.0,
    )
    builtin_by_label = {"person": ClassSettings(threshold=0.4)}

    def postprocess(self, cov, bbox, decode, clustering, net, src) -> Boxes:
        candidates = decode_candidates(cov, bbox, decode, net[0], net[1])
        clustered = [
            METHODS[params.method](boxes, scores, params)
            for (boxes, scores), params in zip(candidates, clustering)
        ]
        return to_source(clustered, decode, net, src)


register(DeepStream())
