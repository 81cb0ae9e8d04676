"""Drawing results onto frames: boxes with label and confidence, or the top class.

Labels stay whole inside the frame: above their box, inside it when the box touches the top
edge, clamped at the sides, moved past labels drawn before them when they would cover one,
and drawn smaller when the text is wider than the frame.
"""

from typing import Any, List, NamedTuple, Sequence, Tuple

import numpy as np

# A fixed palette so a class keeps its colour across frames and runs (BGR).
_PALETTE = (
    (0, 200, 0), (0, 140, 255), (255, 80, 0), (200, 0, 200), (0, 220, 220), (255, 200, 0),
    (120, 0, 255), (0, 90, 180),
)  # fmt: skip

#: x1, y1, x2, y2 in pixels, x2 and y2 exclusive.
Rect = Tuple[int, int, int, int]

_PAD = 2  # pixels around the text inside its background
_MIN_SCALE = 0.3  # smallest font scale still legible (Hershey simplex ~ 9 px tall)


def colour(class_id: int) -> Tuple[int, int, int]:
    return _PALETTE[class_id % len(_PALETTE)]


class LabelStyle(NamedTuple):
    text: str  # shortened with ".." when even the smallest font is wider than the frame
    scale: float
    thickness: int
    width: int  # of the background rectangle
    height: int
    baseline: int


def label_style(image_shape: Tuple[int, ...], text: str) -> LabelStyle:
    """Font size for ``text`` on an image of ``image_shape``: by image size, shrunk to fit."""
    import cv2

    height, width = image_shape[:2]
    scale = max(0.4, min(height, width) / 900.0)
    shown = text
    while True:
        thickness = max(1, int(round(scale * 2)))
        (w, h), base = cv2.getTextSize(shown, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        box_w, box_h = w + 2 * _PAD, h + base + _PAD
        if box_w <= width or len(shown) <= 3:
            return LabelStyle(shown, scale, thickness, box_w, box_h, base)
        if scale > _MIN_SCALE:
            scale = max(_MIN_SCALE, scale * width / box_w)
        else:
            shown = shown[: len(shown) - 3] + ".."


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_label(
    box: Rect, size: Tuple[int, int], frame: Tuple[int, int], taken: Sequence[Rect]
) -> Rect:
    """Where a label of ``size`` (w, h) goes for ``box`` in a ``frame`` (w, h).

    Above the box; inside its top edge when there is no room above; then, if that covers a
    label in ``taken``, below the box, inside its bottom edge, or slid down past the labels it
    covers. Always whole inside the frame (when it fits at all).
    """
    w, h = size
    frame_w, frame_h = frame
    x = min(max(0, box[0]), max(0, frame_w - w))

    def at(y: int) -> Rect:
        y = min(max(0, y), max(0, frame_h - h))
        return (x, y, x + w, y + h)

    first = at(box[1] - h) if box[1] - h >= 0 else at(box[1])
    for rect in (first, at(box[3]), at(box[3] - h)):
        if not any(_overlaps(rect, t) for t in taken):
            return rect
    rect = first
    for _ in range(len(taken) + 1):  # each step clears at least one earlier label
        hits = [t for t in taken if _overlaps(rect, t)]
        if not hits:
            return rect
        y = max(t[3] for t in hits)
        if y + h > frame_h:
            break
        rect = at(y)
    return first  # no free place: readable on top of the others rather than clipped


def _draw_label(image: np.ndarray, rect: Rect, style: LabelStyle, bg: Tuple[int, int, int]) -> None:
    import cv2

    x1, y1, x2, y2 = rect
    cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), bg, -1)
    cv2.putText(image, style.text, (x1 + _PAD, y2 - style.baseline - 1), cv2.FONT_HERSHEY_SIMPLEX,
                style.scale, (255, 255, 255), style.thickness, cv2.LINE_AA)  # fmt: skip


def detection_labels(image_shape: Tuple[int, ...], detections: Sequence[Any]) -> List[Rect]:
    """The label rectangle of each detection, in order (see :func:`place_label`)."""
    frame = (image_shape[1], image_shape[0])
    taken = []  # type: List[Rect]
    for d in detections:
        style = label_style(image_shape, _detection_text(d))
        x1, y1, x2, y2 = (int(round(v)) for v in d.bbox)
        taken.append(place_label((x1, y1, x2, y2), (style.width, style.height), frame, taken))
    return taken


def _detection_text(d: Any) -> str:
    track_id = getattr(d, "track_id", None)  # edged/tracking: "#7 person 91%"
    prefix = f"#{track_id} " if track_id is not None else ""
    return f"{prefix}{d.label} {100 * d.confidence:.0f}%"


def draw_detections(image: np.ndarray, detections: Sequence[Any]) -> np.ndarray:
    """A copy of ``image`` with each detection's box, label and confidence."""
    import cv2

    out = image.copy()
    thickness = max(2, min(out.shape[:2]) // 300)
    for d in detections:
        x1, y1, x2, y2 = (int(round(v)) for v in d.bbox)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour(d.class_id), thickness)
    # Labels after every box, so no box line crosses a label.
    for d, rect in zip(detections, detection_labels(out.shape, detections)):
        _draw_label(out, rect, label_style(out.shape, _detection_text(d)), colour(d.class_id))
    return out


def draw_classifications(image: np.ndarray, classes: Sequence[Any]) -> np.ndarray:
    """A copy of ``image`` with the top classes written in its top-left corner, one per line."""
    out = image.copy()
    if out.shape[0] < 160 or out.shape[1] < 160:  # tiny images: enlarge so text is legible
        import cv2

        factor = int(np.ceil(160.0 / min(out.shape[:2])))
        out = cv2.resize(out, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST)
    lines = [(f"{c.label} {100 * c.confidence:.1f}%", colour(c.class_id)) for c in classes]
    if not lines:
        lines = [("(no class above threshold)", (80, 80, 80))]
    top = 4
    for text, bg in lines:
        style = label_style(out.shape, text)
        x = min(4, max(0, out.shape[1] - style.width))
        _draw_label(out, (x, top, x + style.width, top + style.height), style, bg)
        top += style.height + 2  # the next line below this one, whatever the font size
    return out
