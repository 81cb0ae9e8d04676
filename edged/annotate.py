"""Drawing results onto frames: boxes with label and confidence, or the top class."""

from typing import Any, Sequence, Tuple

import numpy as np

# A fixed palette so a class keeps its colour across frames and runs (BGR).
_PALETTE = (
    (0, 200, 0), (0, 140, 255), (255, 80, 0), (200, 0, 200), (0, 220, 220), (255, 200, 0),
    (120, 0, 255), (0, 90, 180),
)  # fmt: skip


def colour(class_id: int) -> Tuple[int, int, int]:
    return _PALETTE[class_id % len(_PALETTE)]


def _label(image: np.ndarray, text: str, x: int, y: int, bg: Tuple[int, int, int]) -> None:
    import cv2

    scale = max(0.4, min(image.shape[:2]) / 900.0)
    thickness = max(1, int(round(scale * 2)))
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    y = max(y, h + base + 2)
    cv2.rectangle(image, (x, y - h - base - 2), (x + w + 4, y), bg, -1)
    cv2.putText(image, text, (x + 2, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), thickness, cv2.LINE_AA)  # fmt: skip


def draw_detections(image: np.ndarray, detections: Sequence[Any]) -> np.ndarray:
    """A copy of ``image`` with each detection's box, label and confidence."""
    import cv2

    out = image.copy()
    thickness = max(2, min(out.shape[:2]) // 300)
    for d in detections:
        x1, y1, x2, y2 = (int(round(v)) for v in d.bbox)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour(d.class_id), thickness)
        _label(out, f"{d.label} {100 * d.confidence:.0f}%", x1, y1, colour(d.class_id))
    return out


def draw_classifications(image: np.ndarray, classes: Sequence[Any]) -> np.ndarray:
    """A copy of ``image`` with the top classes written in its top-left corner."""
    out = image.copy()
    if out.shape[0] < 160 or out.shape[1] < 160:  # tiny images: enlarge so text is legible
        import cv2

        factor = int(np.ceil(160.0 / min(out.shape[:2])))
        out = cv2.resize(out, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST)
    line = 0
    for c in classes:
        _label(out, f"{c.label} {100 * c.confidence:.1f}%", 4, 4 + 26 * (line + 1),
               colour(c.class_id))  # fmt: skip
        line += 1
    if not classes:
        _label(out, "(no class above threshold)", 4, 30, (80, 80, 80))
    return out
