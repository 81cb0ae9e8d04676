"""IOU between box sets and a greedy one-to-one assignment.

Greedy on the highest IOU first, as DeepStream's IOU tracker and jetson-inference's
``objectTrackerIOU`` do: with one candidate per track (the usual case at camera frame
rates) it equals the optimal assignment, and it costs a sort instead of a Hungarian
step written in Python (scipy is not a dependency of edged).
"""

from typing import List, Tuple

import numpy as np


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] intersection over union of corner boxes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def greedy_match(score: np.ndarray, minimum: float) -> List[Tuple[int, int]]:
    """(row, column) pairs, best score first, each row and column at most once,
    only pairs scoring at least ``minimum``."""
    if score.size == 0:
        return []
    rows, cols = np.nonzero(score >= minimum)
    if not len(rows):
        return []
    order = np.argsort(-score[rows, cols], kind="stable")
    used_rows = set()  # type: set
    used_cols = set()  # type: set
    pairs = []  # type: List[Tuple[int, int]]
    for k in order.tolist():
        r, c = int(rows[k]), int(cols[k])
        if r in used_rows or c in used_cols:
            continue
        used_rows.add(r)
        used_cols.add(c)
        pairs.append((r, c))
    return pairs
