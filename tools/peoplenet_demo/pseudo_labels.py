"""Pseudo ground-truth person boxes for OpenCV's vtest.avi (static camera, pedestrians).

Why this method: vtest.avi is filmed from a fixed camera and every person in it walks on at some
point, so the per-pixel temporal median of the clip is a clean empty-scene background. Differencing
each frame against it finds walking AND standing people (an adaptive model such as MOG2 absorbs
people who stop). Steps, all deterministic:

1. background = per-pixel median of every 3rd frame;
2. foreground = max-channel |frame - background| > 30, minus cast shadows (darker than the
   background by a factor 0.45..0.92 with nearly the same chromaticity, after Prati et al.'s
   HSV/ratio shadow test as used by MOG2), a vertical opening (removes the wind-blown
   barrier tape, a thin horizontal line) and a closing (fills holes in bodies);
3. a ground-plane perspective model, person height = a * foot_y + b, fitted on the
   clearly person-shaped blobs of the whole clip, groups fragments of one person (split by the
   lamp post or the sign) and splits blobs of several people (side by side: along the emptiest
   columns; one behind another: the front person is the bottom person-height of the blob, the
   rear person's foot follows from its head row);
4. boxes are tightened to their foreground pixels and kept when person-shaped (height 0.6..1.35
   of the expected height at their foot row, fill >= 0.3);
5. temporal cleaning: greedy nearest-centre tracking, tracks shorter than 5 frames dropped
   (flicker), gaps up to 3 frames interpolated, coordinates smoothed with a 3-frame median;
6. one "don't care" region, IGNORE_REGIONS: the car park in the top-right corner, where from frame
   ~660 a person half hidden by a car loads its boot and the moving car and boot lid merge with
   them into foreground no box rule separates. Boxes centred there are dropped from the labels,
   training does not penalise the coverage there, and evaluation drops ground truth AND
   detections centred there before matching (KITTI's DontCare practice).

Boxes are [x1, y1, x2, y2] in source pixels (x2, y2 exclusive). They are pseudo labels: close to
what a person would draw for isolated people, rougher in tight groups.
"""

from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

Box = List[int]

BACKGROUND_FRAME_STEP = 3
DIFF_THRESHOLD = 30.0
SHADOW_RATIO = (0.45, 0.92)
SHADOW_CHROMA_MAX = 0.06
MIN_COMPONENT_AREA = 40
MIN_HEIGHT_FRACTION = 0.6
MAX_HEIGHT_FRACTION = 1.35
STACKED_HEIGHT_FRACTION = 1.22
MIN_FILL = 0.3
# [x1, y1, x2, y2] in source pixels, see step 6 of the module docstring.
IGNORE_REGIONS = [[700, 0, 768, 110]]  # type: List[List[int]]
TRACK_STEP = 0.35  # max centre motion per frame, in person heights
MIN_TRACK_LENGTH = 5
MAX_GAP = 3


class PersonGeometry:
    """Expected person size at a foot row: h = slope * foot_y + intercept, w = ratio * h."""

    def __init__(self, slope: float, intercept: float, width_ratio: float) -> None:
        self.slope = slope
        self.intercept = intercept
        self.width_ratio = width_ratio

    def height(self, foot_y: float) -> float:
        return self.slope * foot_y + self.intercept

    def width(self, foot_y: float) -> float:
        return self.width_ratio * self.height(foot_y)

    def foot_from_head(self, head_y: float) -> float:
        """Foot row of a person whose head is at head_y (solves foot - height(foot) = head)."""
        return (head_y + self.intercept) / (1.0 - self.slope)

    def as_dict(self) -> Dict[str, float]:
        return {"slope": self.slope, "intercept": self.intercept, "width_ratio": self.width_ratio}


def median_background(frames: np.ndarray) -> np.ndarray:
    """Per-pixel median over every BACKGROUND_FRAME_STEP-th frame (N x H x W x 3 uint8)."""
    return np.median(frames[::BACKGROUND_FRAME_STEP], axis=0).astype(np.uint8)


def foreground_mask(frame: np.ndarray, background: np.ndarray) -> np.ndarray:
    """uint8 0/1 mask of pixels that differ from the background and are not cast shadow."""
    f = frame.astype(np.float32) + 1.0
    b = background.astype(np.float32) + 1.0
    changed = np.abs(f - b).max(axis=2) > DIFF_THRESHOLD
    f_sum = f.sum(axis=2)
    b_sum = b.sum(axis=2)
    ratio = f_sum / b_sum
    chroma = np.abs(f / f_sum[..., None] - b / b_sum[..., None]).sum(axis=2)
    shadow = (ratio > SHADOW_RATIO[0]) & (ratio < SHADOW_RATIO[1]) & (chroma < SHADOW_CHROMA_MAX)
    mask = (changed & ~shadow).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((5, 1), np.uint8))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((1, 3), np.uint8))
    return cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((9, 5), np.uint8))


def _components(mask: np.ndarray) -> List[Tuple[int, int, int, int, int]]:
    """(x, y, w, h, area) of each connected component of at least MIN_COMPONENT_AREA pixels."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    return [
        tuple(int(v) for v in stats[k])
        for k in range(1, count)
        if stats[k][4] >= MIN_COMPONENT_AREA
    ]


def fit_geometry(masks: Sequence[np.ndarray]) -> PersonGeometry:
    """Fit height(foot_y) on blobs that look like one upright person (aspect 2.2..3.8, big)."""
    feet, heights, widths = [], [], []
    for mask in masks:
        for _, y, w, h, area in _components(mask):
            if area > 300 and 2.2 < h / w < 3.8:
                feet.append(y + h)
                heights.append(h)
                widths.append(w)
    design = np.stack([np.asarray(feet, np.float64), np.ones(len(feet))], axis=1)
    heights_arr = np.asarray(heights, np.float64)
    slope, intercept = np.linalg.lstsq(design, heights_arr, rcond=None)[0]
    ratio = float(np.median(np.asarray(widths, np.float64) / heights_arr))
    return PersonGeometry(float(slope), float(intercept), ratio)


def _merge_fragments(boxes: List[Box], geometry: PersonGeometry) -> List[Box]:
    """Union fragments whose joint box still fits one person at its foot row."""
    boxes = [list(b) for b in boxes]
    merged = True
    while merged:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, c = boxes[i], boxes[j]
                union = [min(a[0], c[0]), min(a[1], c[1]), max(a[2], c[2]), max(a[3], c[3])]
                expected = geometry.height(union[3])
                if union[3] - union[1] <= 1.2 * expected and union[2] - union[0] <= 0.6 * expected:
                    boxes[i] = union
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    return boxes


def _tight_box(mask: np.ndarray, region: Box) -> Tuple[Box, int]:
    """Bounding box of the foreground pixels inside region, and their count."""
    x1, y1, x2, y2 = region
    ys, xs = np.nonzero(mask[y1:y2, x1:x2])
    if len(ys) == 0:
        return [x1, y1, x1, y1], 0
    return [
        x1 + int(xs.min()),
        y1 + int(ys.min()),
        x1 + int(xs.max()) + 1,
        y1 + int(ys.max()) + 1,
    ], len(ys)


def _split_stacked(mask: np.ndarray, box: Box, geometry: PersonGeometry) -> List[Box]:
    """Split a blob taller than one person into a front (bottom) and a rear (top) person."""
    x1, y1, x2, y2 = box
    expected = geometry.height(y2)
    if y2 - y1 <= STACKED_HEIGHT_FRACTION * expected:
        return [box]
    front_top = int(round(y2 - expected))
    front, _ = _tight_box(mask, [x1, front_top, x2, y2])
    head, _ = _tight_box(mask, [x1, y1, x2, front_top])
    rear_foot = min(int(round(geometry.foot_from_head(head[1]))), y2)
    return [front, [head[0], head[1], head[2], rear_foot]]


def _split_side_by_side(mask: np.ndarray, box: Box, geometry: PersonGeometry) -> List[Box]:
    """Split a blob wider than one person at the emptiest columns near equal spacing."""
    x1, y1, x2, y2 = box
    width = x2 - x1
    expected_w = geometry.width(y2)
    if width <= 1.6 * expected_w:
        return [box]
    parts = int(round(width / expected_w))
    if parts < 2:
        return [box]
    columns = mask[y1:y2, x1:x2].sum(axis=0).astype(np.float64)
    cuts = [0]
    for s in range(1, parts):
        centre = int(s * width / parts)
        reach = int(0.3 * expected_w)
        lo = max(centre - reach, cuts[-1] + 1)
        hi = min(centre + reach, width - 1)
        if hi <= lo:
            continue
        cuts.append(lo + int(np.argmin(columns[lo : hi + 1])))
    cuts.append(width)
    return [[x1 + a, y1, x1 + b, y2] for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def boxes_from_mask(mask: np.ndarray, geometry: PersonGeometry) -> List[Box]:
    """Person boxes of one frame's foreground mask (before temporal cleaning)."""
    blobs = [[x, y, x + w, y + h] for x, y, w, h, _ in _components(mask)]
    people = []
    for blob in _merge_fragments(blobs, geometry):
        if blob[3] - blob[1] < MIN_HEIGHT_FRACTION * geometry.height(blob[3]):
            continue
        for part in _split_stacked(mask, blob, geometry):
            for piece in _split_side_by_side(mask, part, geometry):
                tight, count = _tight_box(mask, piece)
                height = tight[3] - tight[1]
                expected = geometry.height(tight[3])
                if not MIN_HEIGHT_FRACTION * expected <= height <= MAX_HEIGHT_FRACTION * expected:
                    continue
                if count < MIN_FILL * height * (tight[2] - tight[0]):
                    continue
                people.append(tight)
    return people


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _close_enough(box: Box, previous: Box, frames_apart: int) -> Optional[float]:
    """Centre distance in person heights if box can continue previous, else None.

    vtest.avi is about 10 frames/s, so a walker moves up to ~0.2 of their height per frame: IoU
    between consecutive boxes is too strict, a size-normalised centre distance is not.
    """
    h_prev = float(previous[3] - previous[1])
    h_box = float(box[3] - box[1])
    if not 0.75 <= h_box / h_prev <= 1.33:
        return None
    dx = (box[0] + box[2] - previous[0] - previous[2]) / 2.0
    dy = (box[1] + box[3] - previous[1] - previous[3]) / 2.0
    distance = (dx * dx + dy * dy) ** 0.5 / h_prev
    return distance if distance <= TRACK_STEP * frames_apart else None


def _track(per_frame: List[List[Box]]) -> List[Dict[int, Box]]:
    """Greedy nearest-centre tracking: each track maps frame index -> box."""
    tracks = []  # type: List[Dict[int, Box]]
    for t, boxes in enumerate(per_frame):
        live = [tr for tr in tracks if t - max(tr) <= MAX_GAP + 1]
        pairs = []
        for bi, box in enumerate(boxes):
            for ti, tr in enumerate(live):
                last = max(tr)
                distance = _close_enough(box, tr[last], t - last)
                if distance is not None:
                    pairs.append((distance, bi, ti))
        used_boxes, used_tracks = set(), set()
        for _, bi, ti in sorted(pairs):
            if bi in used_boxes or ti in used_tracks:
                continue
            live[ti][t] = boxes[bi]
            used_boxes.add(bi)
            used_tracks.add(ti)
        for bi, box in enumerate(boxes):
            if bi not in used_boxes:
                tracks.append({t: box})
    return tracks


def _fill_and_smooth(track: Dict[int, Box]) -> Dict[int, Box]:
    """Interpolate gaps, then 3-frame median of each coordinate."""
    frames = sorted(track)
    dense = {}  # type: Dict[int, np.ndarray]
    for a, b in zip(frames[:-1], frames[1:]):
        for t in range(a, b):
            w = (t - a) / float(b - a)
            dense[t] = (1 - w) * np.asarray(track[a], np.float64) + w * np.asarray(
                track[b], np.float64
            )
    dense[frames[-1]] = np.asarray(track[frames[-1]], np.float64)
    smoothed = {}
    for t in dense:
        window = [dense[s] for s in (t - 1, t, t + 1) if s in dense]
        smoothed[t] = [int(round(v)) for v in np.median(np.stack(window), axis=0)]
    return smoothed


def temporal_clean(per_frame: List[List[Box]]) -> List[List[Box]]:
    """Drop short-lived boxes, fill short gaps, smooth (see module docstring, step 5)."""
    cleaned = [[] for _ in per_frame]  # type: List[List[Box]]
    for track in _track(per_frame):
        if len(track) < MIN_TRACK_LENGTH:
            continue
        for t, box in sorted(_fill_and_smooth(track).items()):
            cleaned[t].append(box)
    return [sorted(boxes) for boxes in cleaned]


def in_ignore_region(box: Sequence[float], regions: Sequence[Sequence[float]]) -> bool:
    """True when the centre of box lies inside one of the [x1, y1, x2, y2] regions."""
    cx = (box[0] + box[2]) / 2.0
    cy = (box[1] + box[3]) / 2.0
    return any(r[0] <= cx < r[2] and r[1] <= cy < r[3] for r in regions)


def pseudo_labels(frames: np.ndarray) -> Tuple[List[List[Box]], PersonGeometry]:
    """Person boxes for every frame of a static-camera clip (N x H x W x 3 BGR uint8)."""
    background = median_background(frames)
    masks = [foreground_mask(frame, background) for frame in frames]
    geometry = fit_geometry(masks)
    raw = [boxes_from_mask(mask, geometry) for mask in masks]
    cleaned = temporal_clean(raw)
    return [
        [b for b in boxes if not in_ignore_region(b, IGNORE_REGIONS)] for boxes in cleaned
    ], geometry
