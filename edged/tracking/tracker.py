"""A per-stream multi-object tracker in ByteTrack's manner (Zhang et al., ECCV 2022).

Each :meth:`Tracker.update` takes one frame's detections and returns a track id per
detection (None while a track is still tentative):

1. every track's box is moved by its constant-velocity Kalman filter (:mod:`.kalman`);
2. detections scoring at least ``high_threshold`` are matched to all tracks by IOU;
3. detections between ``low_threshold`` and ``high_threshold`` are matched to the
   confirmed tracks that were seen in the previous frame and are still unmatched --
   ByteTrack's second pass, which keeps a track through a partial occlusion that lowers
   the detector's confidence instead of letting the track die and come back with a new id;
4. unmatched detections scoring at least ``new_track_threshold`` start tentative tracks.

A tentative track is confirmed (and given the stream's next integer id) after
``min_hits`` consecutive matches, and dropped at its first miss; a confirmed track dies
after ``max_misses`` consecutive misses. With ``per_class`` a track only takes
detections of its own class. Ids count up from 1 and are not reused, also across
:meth:`reset` (a source reconnect): a consumer never sees one id on two objects.
"""

from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from .assignment import greedy_match, iou_matrix
from .kalman import BoxFilters


@dataclass(frozen=True)
class TrackerParams:
    """Thresholds of one tracker, made from the config's ``tracking`` section
    (edged/pipeline/tracking.py ``tracker_params``), where the defaults are
    (edged/config/model.py ``TrackingConfig``)."""

    high_threshold: float
    low_threshold: float
    new_track_threshold: float
    match_iou: float
    low_match_iou: float
    min_hits: int
    max_misses: int
    per_class: bool


class TrackView(NamedTuple):
    """A confirmed, living track as the counters see it."""

    track_id: int
    class_id: int
    box: Tuple[float, float, float, float]  # filtered at the last match (not a prediction)
    seen: bool  # matched in the latest frame


class Tracker:
    """The tracks of one stream."""

    def __init__(self, params: TrackerParams) -> None:
        self.params = params
        self._next_id = 1
        self.reset()

    def reset(self) -> None:
        """Forget every track (a source reconnected: positions no longer follow on)."""
        self._filters = BoxFilters()
        self._ids = np.zeros(0, dtype=np.int64)  # 0: tentative
        self._classes = np.zeros(0, dtype=np.int64)
        self._hits = np.zeros(0, dtype=np.int64)
        self._misses = np.zeros(0, dtype=np.int64)
        self._last = np.zeros((0, 4))

    def __len__(self) -> int:
        return len(self._ids)

    def _associate(self, pred: np.ndarray, boxes: np.ndarray, classes: np.ndarray,
                   dets: np.ndarray, tracks: np.ndarray, minimum: float,
                   assigned: np.ndarray) -> None:  # fmt: skip
        if not len(dets) or not len(tracks):
            return
        score = iou_matrix(pred[tracks], boxes[dets])
        if self.params.per_class:
            score[self._classes[tracks][:, None] != classes[dets][None, :]] = 0.0
        for r, c in greedy_match(score, minimum):
            assigned[dets[c]] = tracks[r]

    def update(self, boxes: Sequence[Sequence[float]], scores: Sequence[float],
               class_ids: Sequence[int], step: int = 1) -> List[Optional[int]]:  # fmt: skip
        """One frame's detections -> one track id (or None) per detection, in order.

        ``step`` is how many frames passed since the previous update (frames dropped
        before inference), so that the predicted boxes move as far as the objects did.
        """
        p = self.params
        box_array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        score_array = np.asarray(scores, dtype=np.float64).reshape(-1)
        classes = np.asarray(class_ids, dtype=np.int64).reshape(-1)
        self._filters.predict(float(max(1, step)))
        pred = self._filters.boxes()
        assigned = np.full(len(box_array), -1, dtype=np.int64)  # detection -> track index
        high = score_array >= p.high_threshold
        low = (score_array >= p.low_threshold) & ~high
        every = np.arange(len(self._ids))
        self._associate(pred, box_array, classes, np.nonzero(high)[0], every, p.match_iou, assigned)
        matched = np.zeros(len(self._ids), dtype=bool)
        matched[assigned[assigned >= 0]] = True
        second = np.nonzero(~matched & (self._ids > 0) & (self._misses == 0))[0]
        self._associate(pred, box_array, classes, np.nonzero(low)[0], second, p.low_match_iou,
                        assigned)  # fmt: skip
        dets = np.nonzero(assigned >= 0)[0]
        tracks = assigned[dets]
        matched[tracks] = True
        self._filters.update(tracks, box_array[dets])
        self._hits[tracks] += 1
        self._misses[tracks] = 0
        # the filtered box, not the raw one: detector jitter would move anchors across lines
        self._last[tracks] = self._filters.boxes()[tracks]
        self._misses[~matched] += 1
        self._confirm()
        out = [None] * len(box_array)  # type: List[Optional[int]]
        for d, t in zip(dets.tolist(), tracks.tolist()):
            out[d] = int(self._ids[t]) or None
        dead = ((self._ids == 0) & (self._misses > 0)) | (self._misses > p.max_misses)
        if dead.any():
            self._keep(~dead)
        born = np.nonzero(~(assigned >= 0) & (score_array >= p.new_track_threshold))[0]
        if len(born):
            self._add(box_array[born], classes[born])
            first = len(self._ids) - len(born)
            self._confirm()
            for k, d in enumerate(born.tolist()):
                out[d] = int(self._ids[first + k]) or None
        return out

    def _confirm(self) -> None:
        for t in np.nonzero((self._ids == 0) & (self._hits >= self.params.min_hits))[0]:
            self._ids[t] = self._next_id
            self._next_id += 1

    def _keep(self, mask: np.ndarray) -> None:
        self._filters.keep(mask)
        self._ids = self._ids[mask]
        self._classes = self._classes[mask]
        self._hits = self._hits[mask]
        self._misses = self._misses[mask]
        self._last = self._last[mask]

    def _add(self, boxes: np.ndarray, classes: np.ndarray) -> None:
        n = len(boxes)
        self._filters.add(boxes)
        self._ids = np.concatenate([self._ids, np.zeros(n, dtype=np.int64)])
        self._classes = np.concatenate([self._classes, classes])
        self._hits = np.concatenate([self._hits, np.ones(n, dtype=np.int64)])
        self._misses = np.concatenate([self._misses, np.zeros(n, dtype=np.int64)])
        self._last = np.concatenate([self._last, boxes])

    def tracks(self) -> List[TrackView]:
        """The confirmed tracks alive now, including those missed for a few frames."""
        return [
            TrackView(int(i), int(c), tuple(float(v) for v in box), m == 0)  # type: ignore[arg-type]
            for i, c, box, m in zip(self._ids.tolist(), self._classes.tolist(),
                                    self._last.tolist(), self._misses.tolist())
            if i > 0
        ]  # fmt: skip

    @property
    def next_id(self) -> int:
        return self._next_id
