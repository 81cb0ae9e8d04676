"""The numpy reference of the GPU DetectNet_v2 decode: threshold and box decode, in one pass.

What ``edged_detectnet_decode`` (``kernels.cu``) computes: every grid cell whose coverage is at
least its class threshold becomes a candidate box, decoded as DetectNet_v2 does (TAO
``nvidia_tao_deploy/cv/detectnet_v2/postprocessor.py``: centre ``stride * cell + offset``,
corners ``centre -/+ bbox_norm * term``), scaled to source pixels and clipped. Candidates come in
(class, row, column) order. The compat modules (edged/tasks/compat_*.py) then apply each
reference's own comparisons and clamps on the host: the GPU decode is the superset both start
from (DeepStream keeps coverage >= threshold, TAO > threshold).
"""

from typing import NamedTuple

import numpy as np

from ..tasks.detection import DecodeParams, check_output_shapes


class Candidates(NamedTuple):
    """Decoded, thresholded boxes of one image, before clustering."""

    boxes: np.ndarray  # float32 [N, 4] x1, y1, x2, y2 in source pixels
    scores: np.ndarray  # float32 [N] coverage
    class_ids: np.ndarray  # int32 [N]


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
