"""An independent re-implementation of TAO deploy's DetectNet_v2 post-processing.

Written for the parity tests from NVIDIA/tao_deploy ``nvidia_tao_deploy/cv/detectnet_v2/``
(``inferencer.py`` trt_output_process_fn, ``postprocessor.py`` BboxHandler,
``utils.py``) and scikit-learn's DBSCAN (``dbscan_inner``), deliberately in another
shape than edged's: per-box loops over Python lists, with numpy float32 scalars where
TAO's arrays are float32 and Python floats where they are float64.

- Outputs are transposed to (class, column, row), so candidates come column by column;
  ``covs > coverage_threshold`` (strict).
- ``abs_bbox_converter``: float64 grid centres, ``(b - gc)`` stored as float32, times
  ``-35`` in float32.
- ``get_keep_indices`` method 4: selection by swapping the best remaining box to
  position i, IoU with ``+1`` (float64 intersection, float32 areas), ``ovr > Nt``
  zeroes the later coverage, keep ``scores > threshold``; ``cluster_with_nms`` then
  reads ``covs[keep]`` from the array the loop reordered (TAO's printed confidence).
- ``cluster_with_dbscan``: ``1 - iou_vectorized`` (union + 0.01), sklearn's
  ``d <= eps`` neighbourhoods (self included when within eps), core when the summed
  sample weight ``>= max(int(min_samples), 1)``, depth-first cluster growth through
  core points; mean box weighted by normalised coverage, confidence = summed coverage,
  ``height <= min_height`` dropped, ``confidence >= threshold`` kept.
- ``_scale_bbox``: clamp to [0, net] in Python floats, scale about the centre.
"""

import math

import numpy as np

f = np.float32


def threshold_bboxes(cov, bbox, c, stride, norm, offset, min_weight):
    """Candidates of class c: [(x1, y1, x2, y2) float32, ...], [cov float32, ...]."""
    classes, grid_h, grid_w = cov.shape
    boxes, covs = [], []
    for col in range(grid_w):  # the transposed (W, H) grid, flattened
        gcx = (col * stride + offset) / float(norm)
        for row in range(grid_h):
            value = f(cov[c, row, col])
            if not value > f(min_weight):
                continue
            gcy = (row * stride + offset) / float(norm)
            t = [float(bbox[4 * c + k, row, col]) for k in range(4)]
            x1 = f(t[0] - gcx) * f(-norm)
            y1 = f(t[1] - gcy) * f(-norm)
            x2 = f(t[2] + gcx) * f(norm)
            y2 = f(t[3] + gcy) * f(norm)
            boxes.append((x1, y1, x2, y2))
            covs.append(value)
    return boxes, covs


def keep_indices_nms(boxes, covs, nt, threshold):
    """get_keep_indices(method=4): (kept original indices, TAO's reordered covs)."""
    n = len(boxes)
    dets = [[float(b[1]), float(b[0]), float(b[3]), float(b[2]), i] for i, b in enumerate(boxes)]
    scores = list(covs)  # this IS TAO's covs array: reordered in place below
    areas = [(b[2] - b[0] + f(1)) * (b[3] - b[1] + f(1)) for b in boxes]
    for i in range(n):
        pos = i + 1
        if i != n - 1:
            maxpos = max(range(pos, n), key=lambda k: (scores[k], -k))  # first maximum
            maxscore = scores[maxpos]
        else:
            maxpos, maxscore = i, scores[-1]
        if scores[i] < maxscore:
            dets[i], dets[maxpos] = dets[maxpos], dets[i]
            scores[i], scores[maxpos] = scores[maxpos], scores[i]
            areas[i], areas[maxpos] = areas[maxpos], areas[i]
        for k in range(pos, n):
            w = max(0.0, min(dets[i][3], dets[k][3]) - max(dets[i][1], dets[k][1]) + 1)
            h = max(0.0, min(dets[i][2], dets[k][2]) - max(dets[i][0], dets[k][0]) + 1)
            inter = w * h
            denominator = float(areas[i] + areas[k]) - inter
            if denominator == 0:  # numpy gives inf (suppresses) or nan (does not)
                overlap = math.inf if inter > 0 else math.nan
            else:
                overlap = inter / denominator
            if overlap > nt:
                scores[k] = f(0)
    keep = [dets[i][4] for i in range(n) if scores[i] > f(threshold)]
    return keep, scores


def _tao_distance(a, b):
    left = max(a[0], b[0])
    top = max(a[1], b[1])
    right = min(a[2], b[2])
    bottom = min(a[3], b[3])
    inter = max(f(0), right - left) * max(f(0), bottom - top)
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    return f(1) - inter / (area_a + area_b - inter + f(0.01))


def dbscan_labels(boxes, covs, eps, min_samples):
    n = len(boxes)
    neighbourhoods = [[] for _ in range(n)]
    for a in range(n):
        for b in range(a, n):  # 1 - IoU is symmetric, also in float32
            if _tao_distance(boxes[a], boxes[b]) <= f(eps):
                neighbourhoods[a].append(b)
                if b != a:
                    neighbourhoods[b].append(a)
    for nb in neighbourhoods:
        nb.sort()  # sklearn lists neighbours in index order
    core = [sum(float(covs[k]) for k in nb) >= max(int(min_samples), 1) for nb in neighbourhoods]
    labels = [-1] * n
    label = 0
    for i in range(n):
        if labels[i] != -1 or not core[i]:
            continue
        stack = []
        while True:
            if labels[i] == -1:
                labels[i] = label
                if core[i]:
                    for v in neighbourhoods[i]:
                        if labels[v] == -1:
                            stack.append(v)
            if not stack:
                break
            i = stack.pop()
        label += 1
    return labels


def cluster_dbscan(boxes, covs, p):
    labels = dbscan_labels(boxes, covs, p["eps"], p["min_boxes"])
    out = []
    for label in sorted(set(v for v in labels if v >= 0)):
        members = [k for k in range(len(boxes)) if labels[k] == label]
        total = sum(float(covs[k]) for k in members)
        mean = [sum(float(boxes[k][j]) * float(covs[k]) for k in members) / total for j in range(4)]
        if mean[3] - mean[1] <= p["min_cluster_height"]:
            continue
        if total >= float(f(p["post_threshold"])):
            out.append((total, total, mean))
    return out


def cluster_nms(boxes, covs, p):
    nt = float(f(p["iou_threshold"]))
    keep, reordered = keep_indices_nms(boxes, covs, nt, p["post_threshold"])
    # (own coverage, TAO's printed coverage, box)
    return [(float(covs[k]), float(reordered[k]), [float(v) for v in boxes[k]]) for k in keep]


def cluster_none(boxes, covs, p):
    return [(float(c), float(c), [float(v) for v in b]) for b, c in zip(boxes, covs)]


CLUSTER = {"nms": cluster_nms, "dbscan": cluster_dbscan, "none": cluster_none}


def scale_bbox(bbox, scaling, frame_height, frame_width):
    x1 = min(max(0.0, float(bbox[0])), frame_width)
    y1 = min(max(0.0, float(bbox[1])), frame_height)
    x2 = max(min(float(bbox[2]), frame_width), x1)
    y2 = max(min(float(bbox[3]), frame_height), y1)
    hx, hy = x2 - x1, y2 - y1
    cx = x1 + hx / 2
    cy = y1 + hy / 2
    nx, ny = cx * scaling[0], cy * scaling[1]
    nhx, nhy = hx * scaling[0], hy * scaling[1]
    return [nx - nhx / 2, ny - nhy / 2, nx + nhx / 2, ny + nhy / 2]


def postprocess(cov, bbox, src_w, src_h, net_w, net_h, per_class, decode, printed=False):
    """Final detections [(class_id, confidence, x1, y1, x2, y2)] in source pixels.

    ``printed``: report TAO's printed NMS confidence instead of each box's own.
    """
    scaling = (src_w / net_w, src_h / net_h)
    out = []
    for c, p in enumerate(per_class):
        boxes, covs = threshold_bboxes(
            cov, bbox, c, decode["stride"], decode["norm"], decode["offset"], p["threshold"]
        )
        if not covs:
            continue
        for own, shown, box in CLUSTER[p["method"]](boxes, covs, p):
            x1, y1, x2, y2 = scale_bbox(box, scaling, net_h, net_w)
            out.append((c, shown if printed else own, x1, y1, x2, y2))
    return out
