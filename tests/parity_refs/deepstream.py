"""An independent re-implementation of DeepStream nvinfer's DetectNet_v2 post-processing.

Written for the parity tests from the DeepStream 6.x sources, deliberately in their
own shape rather than edged's: one object per box, plain loops, float32 scalars
where the C++ has ``float``:

- ``nvdsinfer_context_impl_output_parsing.cpp``: ``parseBoundingBox`` (grid-centre
  table, ``confidence < threshold`` skips, clip ``>= net`` to ``net - 1`` then ``< 0`` to
  0, underflow check), ``nonMaximumSuppression`` (``overlap1D`` with its swap),
  ``clusterAndFillDetectionOutputNMS/DBSCAN``, ``fillUnclusteredOutput``,
  ``filterTopKOutputs`` (``std::stable_sort``; nothing when topK < 0).
- ``nvdsinfer_dbscan.cpp`` (NVIDIA-ISAAC-ROS/isaac_ros_object_detection copy):
  ``clusterObjects`` with its neighbour matrices, ``findNeighbors``,
  ``joinNeighbors``, the cluster statistics starting at ``numMembers = 1`` and the
  ATHR filter (60).
- ``gstnvinfer_meta_utils.cpp`` ``attach_metadata_detector``: divide by the scale
  ratio (double), then detected-min-w/h and the bottom check.
"""

import math

import numpy as np

f = np.float32


class Obj:
    """NvDsInferObjectDetectionInfo."""

    __slots__ = ("class_id", "left", "top", "width", "height", "conf")

    def __init__(self, class_id, left, top, width, height, conf):
        self.class_id = class_id
        self.left = left
        self.top = top
        self.width = width
        self.height = height
        self.conf = conf


def parse_bounding_box(cov, bbox, net_w, net_h, thresholds, stride, norm, offset):
    classes, grid_h, grid_w = cov.shape
    grid = grid_h * grid_w
    cov_buf = np.ascontiguousarray(cov, dtype=f).ravel()
    bbox_buf = np.ascontiguousarray(bbox, dtype=f).ravel()
    gc0 = [f(float(i * stride + offset)) / f(norm) for i in range(grid_w)]
    gc1 = [f(float(i * stride + offset)) / f(norm) for i in range(grid_h)]
    objects = []
    for c in range(classes):
        base = c * 4 * grid  # outputX1 of class c; Y1, X2, Y2 follow one grid apart
        threshold = f(thresholds[c])
        # Only the cells that pass are visited (in the same h-major order as the C++ loop).
        for i in np.flatnonzero(~(cov_buf[c * grid : (c + 1) * grid] < threshold)):
            i = int(i)
            h, w = divmod(i, grid_w)
            conf = cov_buf[c * grid + i]
            x1 = (bbox_buf[base + i] - gc0[w]) * -f(norm)
            y1 = (bbox_buf[base + grid + i] - gc1[h]) * -f(norm)
            x2 = (bbox_buf[base + 2 * grid + i] + gc0[w]) * f(norm)
            y2 = (bbox_buf[base + 3 * grid + i] + gc1[h]) * f(norm)
            if x1 >= net_w:
                x1 = f(net_w - 1)
            if x2 >= net_w:
                x2 = f(net_w - 1)
            if y1 >= net_h:
                y1 = f(net_h - 1)
            if y2 >= net_h:
                y2 = f(net_h - 1)
            if x1 < 0:
                x1 = f(0)
            if x2 < 0:
                x2 = f(0)
            if y1 < 0:
                y1 = f(0)
            if y2 < 0:
                y2 = f(0)
            if (x2 - x1) < 0 or (y2 - y1) < 0:
                continue
            objects.append(Obj(c, x1, y1, x2 - x1, y2 - y1, conf))
    return objects


def filter_top_k(top_k, objects):
    if top_k < 0:
        return objects
    ranked = sorted(objects, key=lambda o: -o.conf)  # Python's sort is stable
    return ranked[:top_k]


def _overlap_1d(x1min, x1max, x2min, x2max):
    if x1min > x2min:
        x1min, x2min = x2min, x1min
        x1max, x2max = x2max, x1max
    return f(0) if x1max < x2min else min(x1max, x2max) - x2min


def _nms_iou(a, b):
    ox = _overlap_1d(a.left, a.left + a.width, b.left, b.left + b.width)
    oy = _overlap_1d(a.top, a.top + a.height, b.top, b.top + b.height)
    area1 = a.width * a.height
    area2 = b.width * b.height
    overlap = ox * oy
    u = area1 + area2 - overlap
    return f(0) if u == 0 else overlap / u


def cluster_nms(objects, params):
    score_index = sorted(range(len(objects)), key=lambda r: -objects[r].conf)
    indices = []
    for idx in score_index:
        keep = True
        for kept in indices:
            if not keep:
                break
            keep = _nms_iou(objects[idx], objects[kept]) <= f(params["iou_threshold"])
        if keep:
            indices.append(idx)
    post = [objects[i] for i in indices if objects[i].conf > f(params["post_threshold"])]
    return filter_top_k(params["top_k"], post)


def _dbscan_distance(a, b):
    area_a = a.width * a.height
    area_b = b.width * b.height
    left = max(a.left, b.left)
    top = max(a.top, b.top)
    right = min(a.left + a.width, b.left + b.width)
    bottom = min(a.top + a.height, b.top + b.height)
    inter = max(f(0), right - left) * max(f(0), bottom - top)
    union = (area_a + area_b) - inter
    if union == 0:  # then inter is 0 too: 0/0 is NaN in C++, and NaN < eps is false
        return f("nan")
    return f(1) - inter / union


def cluster_dbscan(objects, params):
    """NvDsInferDBScan::clusterObjects (not hybrid) on one class's objects."""
    n = len(objects)
    if params["min_boxes"] <= 0 or n == 0:
        clustered = objects
    else:
        dist = [[None] * n for _ in range(n)]
        for a in range(n):
            for b in range(a + 1, n):
                dist[a][b] = dist[b][a] = _dbscan_distance(objects[a], objects[b])
        neighbour_list = [[] for _ in range(n)]
        neighbourship = [set() for _ in range(n)]
        visited = [False] * n
        labels = [-1] * n
        eps = f(params["eps"])

        def find_neighbors(box):
            for other in range(n):
                d = dist[box][other]
                if other != box and d < eps:
                    neighbour_list[box].append(other)
                    neighbourship[box].add(other)

        def join_neighbors(dst, src):
            for new in list(neighbour_list[src]):
                if new not in neighbourship[dst]:
                    neighbour_list[dst].append(new)
                    neighbourship[dst].add(new)

        cluster_id = 0
        for i in range(n):
            if visited[i]:
                continue
            visited[i] = True
            find_neighbors(i)
            count = len(neighbour_list[i])
            if count + 1 >= params["min_boxes"]:
                labels[i] = cluster_id
                for k in range(count):  # the bound is read once, before any join
                    j = neighbour_list[i][k]
                    if not visited[j]:
                        visited[j] = True
                        find_neighbors(j)
                        if len(neighbour_list[j]) + 1 >= params["min_boxes"]:
                            join_neighbors(i, j)
                            labels[j] = cluster_id
                cluster_id += 1
        clustered = []
        for c in range(cluster_id):
            best, total = f(0), f(0)
            sx = sy = sw = sh = f(0)
            members = 1
            for i in range(n):
                if labels[i] != c:
                    continue
                o = objects[i]
                best = max(best, o.conf)
                total = total + o.conf
                sx = sx + o.conf * o.left
                sy = sy + o.conf * o.top
                sw = sw + o.conf * o.width
                sh = sh + o.conf * o.height
                members += 1
            if total < f(params["min_score"]):
                continue
            box = Obj(objects[0].class_id, sx / total, sy / total, sw / total, sh / total, best)
            if f(math.sqrt(box.width * box.height)) / f(members) > f(60.0):
                continue
            clustered.append(box)
    kept = [o for o in clustered if not (o.conf < f(params["post_threshold"]))]
    return filter_top_k(params["top_k"], kept)


def cluster_none(objects, params):
    return filter_top_k(params["top_k"], objects)


CLUSTER = {"nms": cluster_nms, "dbscan": cluster_dbscan, "none": cluster_none}


def postprocess(cov, bbox, src_w, src_h, net_w, net_h, per_class, decode):
    """Final detections [(class_id, confidence, x1, y1, x2, y2)] in source pixels.

    ``per_class``: a dict of parameters per class (method, iou_threshold, post_threshold,
    top_k, eps, min_boxes, min_score, threshold); ``decode``: stride, norm, offset,
    min_w, min_h.
    """
    thresholds = [p["threshold"] for p in per_class]
    objects = parse_bounding_box(
        cov, bbox, net_w, net_h, thresholds, decode["stride"], decode["norm"], decode["offset"]
    )
    out = []
    for c, params in enumerate(per_class):
        mine = [o for o in objects if o.class_id == c]
        for o in CLUSTER[params["method"]](mine, params):
            ratio_x = float(net_w) / float(src_w)
            ratio_y = float(net_h) / float(src_h)
            left = f(float(o.left) / ratio_x)
            top = f(float(o.top) / ratio_y)
            width = f(float(o.width) / ratio_x)
            height = f(float(o.height) / ratio_y)
            if width < decode["min_w"] or height < decode["min_h"]:
                continue
            if top + height > f(src_h):
                continue
            x1, y1 = float(left), float(top)
            out.append((c, float(o.conf), x1, y1, x1 + float(width), y1 + float(height)))
    return out
