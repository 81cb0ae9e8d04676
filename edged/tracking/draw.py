"""Drawing what the counters see: zones, directed lines and track trails.

Zones are outlined with their name; a line is drawn with its name and a small arrow
towards its ``in`` side (the right-hand side of start -> end as seen on screen); each
track's trail joins its last anchor points in the track's colour. Track ids are in the
box labels (:func:`edged.annotate.draw_detections`).
"""

from typing import Any, Dict, Optional

import numpy as np

ZONE_COLOUR = (0, 200, 255)  # BGR amber
LINE_COLOUR = (255, 0, 255)  # BGR magenta


def track_colour(track_id: int) -> tuple:
    """A stable, varied colour per id (golden-ratio hue steps)."""
    import cv2

    hue = int((track_id * 0.618033988749895 % 1.0) * 179)
    bgr = cv2.cvtColor(np.array([[[hue, 200, 255]]], dtype=np.uint8), cv2.COLOR_HSV2BGR)[0, 0]
    return tuple(int(v) for v in bgr)


def draw_overlay(image: np.ndarray, overlay: Optional[Dict[str, Any]]) -> np.ndarray:
    """``image`` (drawn on in place and returned) with ``overlay`` from
    :meth:`edged.tracking.counting.StreamCounter.overlay`; None draws nothing."""
    import cv2  # lazy: on a Jetson OpenCV comes from JetPack

    if not overlay:
        return image
    thick = max(1, int(round(image.shape[1] / 640.0)))
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = 0.4 * thick
    for name, points in sorted(overlay.get("zones", {}).items()):
        pts = np.round(np.asarray(points, dtype=np.float64)).astype(np.int32)
        cv2.polylines(image, [pts.reshape(-1, 1, 2)], True, ZONE_COLOUR, thick, cv2.LINE_AA)
        x, y = (int(v) for v in pts.min(axis=0))
        cv2.putText(image, name, (x + 3, y + 14 * thick), font, scale, ZONE_COLOUR, thick)
    for name, (a, b) in sorted(overlay.get("lines", {}).items()):
        pa = (int(round(a[0])), int(round(a[1])))
        pb = (int(round(b[0])), int(round(b[1])))
        cv2.line(image, pa, pb, LINE_COLOUR, thick + 1, cv2.LINE_AA)
        mid = ((a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0)
        dx, dy = b[0] - a[0], b[1] - a[1]
        length = max(1e-6, (dx * dx + dy * dy) ** 0.5)
        normal = (-dy / length, dx / length)  # towards the right-hand side on screen: "in"
        tip = (
            int(round(mid[0] + 20 * thick * normal[0])),
            int(round(mid[1] + 20 * thick * normal[1])),
        )
        start = (int(round(mid[0])), int(round(mid[1])))
        cv2.arrowedLine(image, start, tip, LINE_COLOUR, thick, cv2.LINE_AA, tipLength=0.4)
        cv2.putText(image, name, (pa[0] + 3, pa[1] - 4), font, scale, LINE_COLOUR, thick)
    for track_id, trail in sorted(overlay.get("trails", {}).items()):
        if len(trail) > 1:
            pts = np.round(np.asarray(trail, dtype=np.float64)).astype(np.int32)
            cv2.polylines(image, [pts.reshape(-1, 1, 2)], False, track_colour(track_id), thick,
                          cv2.LINE_AA)  # fmt: skip
    return image
