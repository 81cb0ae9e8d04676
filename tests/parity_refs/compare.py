"""Frame-by-frame comparison of edged's detections with a reference's."""

import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BOX_TOLERANCE = 0.05  # source pixels
CONFIDENCE_TOLERANCE = 1e-4


def as_rows(detections):
    """edged Detection objects -> [(class_id, confidence, x1, y1, x2, y2)]."""
    return [(d.class_id, d.confidence) + tuple(d.bbox) for d in detections]


def difference(expected, actual):
    """None when both lists hold the same boxes (any order), else a one-line reason.

    Also returns the largest box difference of the matched pairs: (reason, max_px).
    """
    if len(expected) != len(actual):
        return f"{len(expected)} boxes expected, {len(actual)} found", None
    unmatched = list(actual)
    worst = 0.0
    for e in expected:
        best = None
        for a in unmatched:
            if a[0] != e[0] or abs(a[1] - e[1]) > CONFIDENCE_TOLERANCE:
                continue
            px = max(abs(x - y) for x, y in zip(a[2:], e[2:]))
            if px <= BOX_TOLERANCE and (best is None or px < best[0]):
                best = (px, a)
        if best is None:
            return f"no match for {e}", None
        worst = max(worst, best[0])
        unmatched.remove(best[1])
    return None, worst
