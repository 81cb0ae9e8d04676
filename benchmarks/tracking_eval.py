"""Synthetic tracking truth and a CLEAR-MOT / IDF1 evaluator of our own (numpy only).

Scenes are rectangles moving on known straight paths (:class:`Mover`); :func:`detect`
turns one frame of truth into what a detector would report: jittered boxes, a
confidence that drops when another object covers part of the box (the one whose bottom
edge is lower is in front, as on a camera looking down at a floor), boxes lost when
mostly covered, random misses and short-lived false positives.

Figures (Bernardin and Stiefelhagen 2008, CLEAR MOT; Ristani et al. 2016, IDF1):

- MOTA = 1 - (misses + false positives + id switches) / truth boxes, matching truth and
  tracked boxes at IOU >= 0.5 per frame and keeping last frame's pairs where they hold;
- IDF1 = 2 IDTP / (2 IDTP + IDFP + IDFN), with truth ids paired with track ids once
  for the whole sequence by the assignment that maximises the frames they match.
"""

import random
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from edged.tracking.assignment import greedy_match, iou_matrix

Box = Tuple[float, float, float, float]
Truth = List[List[Tuple[int, Box]]]  # per frame: (truth id, box)
Tracked = List[List[Tuple[int, Box]]]  # per frame: (track id, box)


class Mover(NamedTuple):
    """A truth object: visible from ``start`` to ``end`` (frames, end excluded), its box
    centre moving from ``p0`` by ``v`` pixels per frame."""

    gid: int
    start: int
    end: int
    p0: Tuple[float, float]
    v: Tuple[float, float]
    size: Tuple[float, float] = (40.0, 80.0)

    def box(self, frame: int) -> Optional[Box]:
        if not self.start <= frame < self.end:
            return None
        t = frame - self.start
        cx, cy = self.p0[0] + self.v[0] * t, self.p0[1] + self.v[1] * t
        w, h = self.size
        return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def truth(movers: Sequence[Mover], frames: int, size: Tuple[int, int]) -> Truth:
    """Per frame, the movers whose box is at least half inside the frame."""
    out = []  # type: Truth
    for f in range(frames):
        row = []
        for m in movers:
            b = m.box(f)
            if b is None:
                continue
            inner = (min(b[2], size[0]) - max(b[0], 0)) * (min(b[3], size[1]) - max(b[1], 0))
            if inner >= 0.5 * (b[2] - b[0]) * (b[3] - b[1]):
                row.append((m.gid, b))
        out.append(row)
    return out


class DetectorModel(NamedTuple):
    """How :func:`detect` degrades the truth."""

    jitter_px: float = 1.5
    miss_rate: float = 0.02
    false_positive_rate: float = 0.05  # per frame
    hidden_at: float = 0.7  # covered fraction at which a box is not detected
    low_at: float = 0.25  # covered fraction from which the confidence is low


def detect(frame: List[Tuple[int, Box]], rng: random.Random, model: DetectorModel,
           size: Tuple[int, int]) -> List[Tuple[Box, float]]:  # fmt: skip
    """One frame of truth -> (box, confidence) as a detector would report it."""
    out = []  # type: List[Tuple[Box, float]]
    for gid, b in frame:
        area = (b[2] - b[0]) * (b[3] - b[1])
        covered = 0.0
        for other, o in frame:
            if other != gid and o[3] > b[3]:  # lower bottom edge: in front
                iw = min(b[2], o[2]) - max(b[0], o[0])
                ih = min(b[3], o[3]) - max(b[1], o[1])
                if iw > 0 and ih > 0:
                    covered = max(covered, iw * ih / area)
        if covered >= model.hidden_at or rng.random() < model.miss_rate:
            continue
        score = rng.uniform(0.15, 0.45) if covered >= model.low_at else rng.uniform(0.6, 0.95)
        j = model.jitter_px
        out.append((tuple(v + rng.gauss(0.0, j) for v in b), score))  # type: ignore[misc]
    if rng.random() < model.false_positive_rate:
        x, y = rng.uniform(0, size[0] - 40), rng.uniform(0, size[1] - 80)
        out.append(((x, y, x + 40, y + 80), rng.uniform(0.5, 0.7)))
    return out


def hungarian_max(weight: np.ndarray) -> List[Tuple[int, int]]:
    """Pairs (row, column) maximising the total weight (rectangular, weights >= 0).

    The shortest augmenting path form of the Hungarian method with potentials, O(n^3);
    offline evaluation only (the tracker itself matches greedily)."""
    n_rows, n_cols = weight.shape
    n = max(n_rows, n_cols)
    if n == 0:
        return []
    cost = np.zeros((n, n))
    cost[:n_rows, :n_cols] = -weight
    u = [0.0] * (n + 1)
    v = [0.0] * (n + 1)
    match = [0] * (n + 1)  # column -> row (1-based), 0 free
    way = [0] * (n + 1)
    for i in range(1, n + 1):
        match[0] = i
        j0 = 0
        minv = [float("inf")] * (n + 1)
        used = [False] * (n + 1)
        while True:
            used[j0] = True
            i0, delta, j1 = match[j0], float("inf"), 0
            for j in range(1, n + 1):
                if not used[j]:
                    cur = cost[i0 - 1, j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j], way[j] = cur, j0
                    if minv[j] < delta:
                        delta, j1 = minv[j], j
            for j in range(n + 1):
                if used[j]:
                    u[match[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if match[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            match[j0] = match[j1]
            j0 = j1
    return [(match[j] - 1, j - 1) for j in range(1, n + 1)
            if match[j] and match[j] - 1 < n_rows and j - 1 < n_cols]  # fmt: skip


def evaluate(gt: Truth, hyp: Tracked, min_iou: float = 0.5) -> Dict[str, float]:
    """MOTA, IDF1 and their parts over a sequence."""
    misses = false_positives = switches = matches = total_gt = total_hyp = 0
    last = {}  # type: Dict[int, int]  # truth id -> track id it was last matched with
    pairs = {}  # type: Dict[Tuple[int, int], int]  # (truth, track) -> frames matched
    for g_row, h_row in zip(gt, hyp):
        total_gt += len(g_row)
        total_hyp += len(h_row)
        g_ids = [g for g, _ in g_row]
        h_ids = [h for h, _ in h_row]
        iou = iou_matrix([b for _, b in g_row], [b for _, b in h_row])
        for gi, g in enumerate(g_ids):  # every pair above the threshold, for IDF1
            for hi, h in enumerate(h_ids):
                if iou[gi, hi] >= min_iou:
                    pairs[(g, h)] = pairs.get((g, h), 0) + 1
        # CLEAR MOT: keep last frame's correspondences that still hold, then match the rest
        score = iou.copy()
        for gi, g in enumerate(g_ids):
            if g in last and last[g] in h_ids:
                hi = h_ids.index(last[g])
                if iou[gi, hi] >= min_iou:
                    score[gi, hi] += 10.0
        matched = greedy_match(score, min_iou)
        for gi, hi in matched:
            g, h = g_ids[gi], h_ids[hi]
            if g in last and last[g] != h:
                switches += 1
            last[g] = h
        matches += len(matched)
        misses += len(g_ids) - len(matched)
        false_positives += len(h_ids) - len(matched)
    gt_ids = sorted({g for g, _ in pairs})
    hyp_ids = sorted({h for _, h in pairs})
    weight = np.zeros((len(gt_ids), len(hyp_ids)))
    for (g, h), n in pairs.items():
        weight[gt_ids.index(g), hyp_ids.index(h)] = n
    idtp = sum(weight[r, c] for r, c in hungarian_max(weight))
    idfp, idfn = total_hyp - idtp, total_gt - idtp
    return {
        "mota": 1.0 - (misses + false_positives + switches) / max(1, total_gt),
        "idf1": float(2 * idtp / max(1.0, 2 * idtp + idfp + idfn)),
        "id_switches": switches,
        "misses": misses,
        "false_positives": false_positives,
        "truth_boxes": total_gt,
        "matches": matches,
    }


def bouncing_scene(objects: int, frames: int, size: Tuple[int, int], seed: int) -> Truth:
    """``objects`` rectangles at constant speeds reflecting off the frame's edges: paths
    cross and occlude each other (the benchmark's scene)."""
    rng = random.Random(seed)
    state = []
    for gid in range(1, objects + 1):
        w, h = rng.uniform(30, 50), rng.uniform(60, 100)
        state.append([gid, rng.uniform(w, size[0] - w), rng.uniform(h, size[1] - h),
                      rng.uniform(-4, 4), rng.uniform(-3, 3), w, h])  # fmt: skip
    out = []  # type: Truth
    for _ in range(frames):
        row = []
        for s in state:
            gid, cx, cy, vx, vy, w, h = s
            row.append((int(gid), (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)))
            cx, cy = cx + vx, cy + vy
            if not w / 2 <= cx <= size[0] - w / 2:
                vx = -vx
            if not h / 2 <= cy <= size[1] - h / 2:
                vy = -vy
            s[1:5] = [cx, cy, vx, vy]
        out.append(row)
    return out


def track(gt: Truth, size: Tuple[int, int], seed: int = 0,
          model: Optional[DetectorModel] = None, tracker: Optional[object] = None,
          counter: Optional[object] = None) -> Tuple[Tracked, List[float], list]:  # fmt: skip
    """Run the tracker (and a counter) over detections made from ``gt``.

    Returns the tracked boxes per frame, the CPU seconds per frame of the tracker and
    counter (``time.thread_time``: this thread only; process time on 3.6), and the
    counter's events per frame.
    """
    import time

    from edged.config.model import TrackingConfig
    from edged.pipeline.tracking import tracker_params
    from edged.tracking.tracker import Tracker

    clock = getattr(time, "thread_time", time.process_time)  # thread_time: Python 3.7+
    t = tracker if tracker is not None else Tracker(tracker_params(TrackingConfig()))
    rng = random.Random(seed)
    hyp = []  # type: Tracked
    cost = []  # type: List[float]
    events = []  # type: list
    for f, row in enumerate(gt):
        dets = detect(row, rng, model or DetectorModel(), size)
        boxes = [b for b, _ in dets]
        scores = [s for _, s in dets]
        c0 = clock()
        ids = t.update(boxes, scores, [0] * len(dets))  # type: ignore[attr-defined]
        if counter is not None:
            events.append(counter.update(t.tracks(), size, f / 25.0))  # type: ignore
        cost.append(clock() - c0)
        hyp.append([(i, b) for i, b in zip(ids, boxes) if i is not None])
    return hyp, cost, events


def run_tracking(frames: int = 3000, objects: int = 20, seed: int = 7) -> Dict[str, float]:
    """The benchmark: ``objects`` bouncing rectangles, ``frames`` frames at 1280x720."""
    from edged.tracking.counting import LineSpec, StreamCounter, ZoneSpec

    size = (1280, 720)
    gt = bouncing_scene(objects, frames, size, seed)
    counter = StreamCounter(
        zones=[ZoneSpec("left", ((0, 0), (0.5, 0), (0.5, 1), (0, 1)), "fraction")],
        lines=[LineSpec("middle", (0.5, 0.0), (0.5, 1.0), "fraction")],
    )
    hyp, cost, _ = track(gt, size, seed, counter=counter)
    figures = evaluate(gt, hyp)  # type: Dict[str, float]
    ms = sorted(1000.0 * c for c in cost)
    stage_ms = sorted(1000.0 * c for c in stage_cost(gt, size, seed))
    figures.update({
        "frames": frames,
        "objects": objects,
        "cpu_ms_per_frame_mean": sum(ms) / len(ms),
        "cpu_ms_per_frame_p99": ms[int(0.99 * (len(ms) - 1))],
        "stage_ms_per_frame_mean": sum(stage_ms) / len(stage_ms),
    })  # fmt: skip
    return figures


def stage_cost(gt: Truth, size: Tuple[int, int], seed: int) -> List[float]:
    """CPU seconds per frame of the pipeline's whole tracking step
    (:meth:`edged.pipeline.tracking.TrackingStage.apply`: tracker, counter, track ids on
    the detections, counts, the overlay) with one zone and one line, as the worker runs it."""
    import time

    import numpy as np

    from edged.config.model import LineConfig, StreamConfig, TrackingConfig, ZoneConfig
    from edged.pipeline.results import InferenceResult
    from edged.pipeline.tracking import TrackingStage
    from edged.sources.frame import Frame
    from edged.tasks.detection import Detection

    clock = getattr(time, "thread_time", time.process_time)
    stage = TrackingStage("bench", TrackingConfig(enabled=True), ["object"])
    half = ((0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0))
    middle = LineConfig("middle", (0.5, 0.0), (0.5, 1.0), "fraction")
    zones = (ZoneConfig("left", half, "fraction"),)
    stage.add_stream(StreamConfig("cam", None, "bench", zones=zones, lines=(middle,)))
    rng = random.Random(seed)
    image = np.zeros((1, 1, 3), np.uint8)
    cost = []  # type: List[float]
    for f, row in enumerate(gt):
        found = [Detection(0, "object", s, b) for b, s in detect(row, rng, DetectorModel(), size)]
        result = InferenceResult("cam", f, f / 25.0, f / 25.0, size, "bench", "detection", found)
        frame = Frame("cam", f, f / 25.0, f / 25.0, size, image)
        c0 = clock()
        stage.apply(frame, result)
        cost.append(clock() - c0)
    return cost
