"""TAO deploy's DetectNet_v2 post-processing, reproduced (``detection.compat: tao``).

Sources (docs/parity.md): NVIDIA/tao_deploy ``nvidia_tao_deploy/cv/detectnet_v2/``
``inferencer.py`` (outputs transposed to columns x rows), ``postprocessor.py``
(``abs_bbox_converter``, ``cluster_detections``, ``_scale_bbox``) and ``utils.py``
(``threshold_bboxes``, ``get_keep_indices``, ``cluster_with_dbscan``, ``iou_vectorized``;
DBSCAN is scikit-learn's with a precomputed distance and sample weights). The numpy
dtypes of those files are kept (float32 boxes and coverage, float64 grid centres and
NMS overlaps), so ties and thresholds fall the same way.

1. Decode in network pixels, candidates in (column, row) order; a cell is a candidate
   when ``coverage > threshold`` (strict). Boxes are not clamped yet.
2. Per class: ``nms`` (``get_keep_indices`` method 4: repeatedly swap the best remaining
   box forward, zero the coverage of later boxes whose IoU with ``+1`` on widths and
   heights is ``> iou_threshold``; keep ``coverage > post_threshold``; no top-k),
   ``dbscan`` (below) or ``none`` (every candidate; TAO has no such mode).
3. Clamp to ``[0, net]`` (``x2`` not below ``x1``) and scale about the box centre by
   ``src / net``; then edged's ``min_width``/``min_height`` (source pixels; TAO has
   none, set 0 to match it).

DBSCAN: distance ``1 - inter / (union + 0.01)``; neighbours at distance ``<= eps``
(itself included when its own distance is); a core box has neighbours whose coverage
SUMS to ``>= max(int(min_boxes), 1)`` (TAO's ``dbscan_min_samples``, truncated); clusters
grow through core boxes and take their border boxes (scikit-learn's DBSCAN). A
cluster's box is the coverage-weighted mean of its members' corners, its confidence
the SUM of their coverage; it is dropped when its height is ``<= min_cluster_height``
network pixels, then kept when ``confidence >= post_threshold``.

TAO's own NMS output prints, for each kept box, the coverage found at that box's
original index in the coverage array its NMS reordered in place, i.e. usually
another box's coverage; edged reports each box's own (docs/parity.md).
"""

from typing import List, Sequence, Tuple

import numpy as np

from ..config import ClassSettings
from .compat import Boxes, Compat, finite_rows, register

F32 = np.float32
#: iou_vectorized's regulariser of the union.
UNION_EPSILON = F32(0.01)

PerClass = Tuple[np.ndarray, np.ndarray]  # float32 [N, 4] x1, y1, x2, y2; float32 [N]


def as_proto_float(value: float) -> float:
    """A threshold as TAO reads it from its spec: a protobuf float32, widened."""
    return float(F32(value))


def decode_candidates(cov: np.ndarray, bbox: np.ndarray, decode) -> List[PerClass]:
    """Candidates of each class in network pixels, in (column, row) order as threshold_bboxes."""
    num_classes, grid_h, grid_w = cov.shape
    cov = cov.astype(F32, copy=False)
    terms = bbox.astype(F32, copy=False).reshape(num_classes, 4, grid_h, grid_w)
    thresholds = decode.class_thresholds(num_classes)
    norm = float(decode.bbox_norm)
    out = []
    for c in range(num_classes):
        cols, rows = np.nonzero(cov[c].T > thresholds[c])
        b = terms[c][:, rows, cols].astype(np.float64)
        gcx = (cols * decode.stride + decode.offset) / norm
        gcy = (rows * decode.stride + decode.offset) / norm
        boxes = np.stack(
            [
                (b[0] - gcx).astype(F32) * F32(-norm),
                (b[1] - gcy).astype(F32) * F32(-norm),
                (b[2] + gcx).astype(F32) * F32(norm),
                (b[3] + gcy).astype(F32) * F32(norm),
            ],
            axis=1,
        )
        scores = cov[c][rows, cols]
        keep = finite_rows(boxes, scores)
        out.append((boxes[keep], scores[keep]))
    return out


def nms(boxes: np.ndarray, scores: np.ndarray, params) -> PerClass:
    """get_keep_indices (method 4, original NMS) on one class; each box keeps its own coverage."""
    count = len(scores)
    left, top, right, bottom = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    dets = np.stack([top, left, bottom, right], axis=1).astype(np.float64)
    index = np.arange(count)
    cov = scores.copy()
    areas = (right - left + F32(1)) * (bottom - top + F32(1))
    limit = as_proto_float(params.iou_threshold)
    post = F32(params.post_threshold)
    for i in range(count):
        pos = i + 1
        if i != count - 1:
            best = pos + int(np.argmax(cov[pos:]))
            if cov[i] < cov[best]:
                for arr in (dets, index, cov, areas):
                    arr[[i, best]] = arr[[best, i]]
        if not cov[i] > post:
            break  # the best remaining coverage is too low: nothing from here on is kept
        w = np.maximum(0.0, np.minimum(dets[i, 3], dets[pos:, 3])
                       - np.maximum(dets[i, 1], dets[pos:, 1]) + 1)  # fmt: skip
        h = np.maximum(0.0, np.minimum(dets[i, 2], dets[pos:, 2])
                       - np.maximum(dets[i, 0], dets[pos:, 0]) + 1)  # fmt: skip
        inter = w * h
        with np.errstate(divide="ignore", invalid="ignore"):
            overlap = inter / ((areas[i] + areas[pos:]).astype(np.float64) - inter)
        later = cov[pos:]
        later[overlap > limit] = F32(0)
    kept = index[cov > post]
    return boxes[kept], scores[kept]


def distances(boxes: np.ndarray) -> np.ndarray:
    """cluster_with_dbscan's ``1 - iou_vectorized(boxes)``, float32."""
    left, top, right, bottom = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    iw = np.maximum(F32(0), np.minimum(right[:, None], right[None, :])
                    - np.maximum(left[:, None], left[None, :]))  # fmt: skip
    ih = np.maximum(F32(0), np.minimum(bottom[:, None], bottom[None, :])
                    - np.maximum(top[:, None], top[None, :]))  # fmt: skip
    inter = iw * ih
    areas = (right - left) * (bottom - top)
    union = areas[:, None] + areas[None, :] - inter
    return F32(1) - inter / (union + UNION_EPSILON)


def dbscan_labels(boxes: np.ndarray, scores: np.ndarray, eps: float,
                  min_samples: int) -> np.ndarray:  # fmt: skip
    """scikit-learn DBSCAN labels (-1: noise) with a precomputed distance and sample weights."""
    near = distances(boxes) <= F32(as_proto_float(eps))
    neighbours = [np.flatnonzero(row) for row in near]
    weight = np.array([np.sum(scores[n]) for n in neighbours], dtype=F32)
    core = weight >= max(int(min_samples), 1)
    labels = np.full(len(boxes), -1, dtype=np.intp)
    cluster = 0
    for start in range(len(boxes)):
        if labels[start] != -1 or not core[start]:
            continue
        stack = [start]
        while stack:
            box = stack.pop()
            if labels[box] != -1:
                continue
            labels[box] = cluster
            if core[box]:
                stack.extend(int(v) for v in neighbours[box] if labels[v] == -1)
        cluster += 1
    return labels


def dbscan(boxes: np.ndarray, scores: np.ndarray, params) -> PerClass:
    labels = dbscan_labels(boxes, scores, params.eps, params.min_boxes)
    out_boxes, out_scores = [], []
    for cluster in np.unique(labels[labels >= 0]):
        members = labels == cluster
        w = scores[members]
        total = np.sum(w)
        mean = np.sum(boxes[members] * (w / total)[:, None], axis=0)
        if mean[3] - mean[1] <= F32(params.min_cluster_height):
            continue
        if total >= F32(params.post_threshold):
            out_boxes.append(mean)
            out_scores.append(total)
    if not out_boxes:
        return np.zeros((0, 4), F32), np.zeros(0, F32)
    return np.stack(out_boxes).astype(F32), np.asarray(out_scores, F32)


def unclustered(boxes: np.ndarray, scores: np.ndarray, params) -> PerClass:
    order = np.argsort(-scores, kind="stable")
    return boxes[order], scores[order]


METHODS = {"nms": nms, "dbscan": dbscan, "none": unclustered}


def to_source(per_class: Sequence[PerClass], decode, net: Tuple[int, int],
              src: Tuple[int, int]) -> Boxes:  # fmt: skip
    """_scale_bbox in float64: clamp to [0, net], scale about the centre; then edged's min size."""
    net_w, net_h = float(net[0]), float(net[1])
    scale_x, scale_y = src[0] / net_w, src[1] / net_h
    boxes, scores, class_ids = [], [], []
    for class_id, (xyxy, conf) in enumerate(per_class):
        b = xyxy.astype(np.float64)
        x1 = np.minimum(np.maximum(0.0, b[:, 0]), net_w)
        y1 = np.minimum(np.maximum(0.0, b[:, 1]), net_h)
        x2 = np.maximum(np.minimum(b[:, 2], net_w), x1)
        y2 = np.maximum(np.minimum(b[:, 3], net_h), y1)
        hx, hy = x2 - x1, y2 - y1
        cx, cy = (x1 + hx / 2) * scale_x, (y1 + hy / 2) * scale_y
        sx, sy = hx * scale_x, hy * scale_y
        out = np.stack([cx - sx / 2, cy - sy / 2, cx + sx / 2, cy + sy / 2], axis=1)
        keep = (sx >= decode.min_width) & (sy >= decode.min_height)
        boxes.append(out[keep])
        scores.append(conf[keep].astype(np.float64))
        class_ids.append(np.full(int(keep.sum()), class_id, dtype=np.intp))
    if not boxes:
        return Boxes.empty()
    return Boxes(np.concatenate(boxes), np.concatenate(scores), np.concatenate(class_ids))


class Tao(Compat):
    name = "tao"
    # tao_deploy cluster_detections: DBSCAN unless told otherwise, NMS IoU 0.3 and
    # confidence 0.1 when unset; PeopleNet's clustering spec (tao-toolkit-triton-apps
    # clustering_config_peoplenet.prototxt): coverage 0.005, eps 0.3, min_samples 0.05
    # (= 1), minimum height 4. TAO has no top-k.
    builtin_default = ClassSettings(
        threshold=0.005,
        clustering="dbscan",
        iou_threshold=0.3,
        top_k=-1,
        eps=0.3,
        min_boxes=1,
        min_score=0.0,
        post_threshold=0.1,
        min_cluster_height=4.0,
    )

    def postprocess(self, cov, bbox, decode, clustering, net, src) -> Boxes:
        candidates = decode_candidates(cov, bbox, decode)
        clustered = [
            METHODS[params.method](boxes, scores, params)
            for (boxes, scores), params in zip(candidates, clustering)
        ]
        return to_source(clustered, decode, net, src)


register(Tao())
