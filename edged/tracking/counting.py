"""Zones and directed lines of one stream: occupancy, dwell, in/out totals.

An object is where its anchor point is (:data:`.geometry.ANCHORS`, bottom-centre by
default: the feet of a person, the part that stands on the floor plan).

- A zone (polygon) holds the confirmed tracks whose anchor is inside it; entering and
  leaving are events, leaving carries the dwell time.
- A line (directed segment A->B) counts a crossing when a track's anchor moves from one
  side to the other across the segment itself: ``in`` to the right-hand side of A->B as
  seen on screen, ``out`` back. Hysteresis: a side is taken only once the anchor is at
  least ``hysteresis`` pixels from the line, and the crossing is tested on the path from
  the last point taken to the new one, so an anchor jittering on the line counts once,
  and a crossing hidden by an occlusion still counts when the track comes back.

Totals (line in/out and zone entries, per label) are the state that persists:
:meth:`StreamCounter.state` and :meth:`StreamCounter.load_state` give and take a plain
dict. Occupancy is live and is rebuilt from the tracks.
"""

import collections
from dataclasses import dataclass
from typing import Any, Deque, Dict, List, Optional, Sequence, Set, Tuple

from ..errors import ConfigError
from .geometry import (
    ANCHORS,
    UNITS,
    Point,
    point_in_polygon,
    segments_intersect,
    signed_distance,
    to_pixels,
)
from .tracker import TrackView

DIRECTIONS = ("in", "out")
#: Anchor points kept per track for drawing its trail (snapshots, annotated videos).
TRAIL_POINTS = 16


@dataclass(frozen=True)
class ZoneSpec:
    name: str
    points: Tuple[Tuple[float, float], ...]
    units: str = "pixels"
    labels: Tuple[str, ...] = ()  # empty: every label


@dataclass(frozen=True)
class LineSpec:
    name: str
    start: Tuple[float, float]
    end: Tuple[float, float]
    units: str = "pixels"
    labels: Tuple[str, ...] = ()
    hysteresis: float = 4.0  # source pixels


def check_specs(zones: Sequence[ZoneSpec], lines: Sequence[LineSpec], anchor: str) -> None:
    """Raise ConfigError for a spec that cannot count (before any frame arrives)."""
    if anchor not in ANCHORS:
        raise ConfigError(f"tracking anchor {anchor!r} is not one of {', '.join(ANCHORS)}")
    names: Set[Tuple[str, str]] = set()
    for kind, spec in [("zone", z) for z in zones] + [("line", ln) for ln in lines]:
        if spec.units not in UNITS:
            raise ConfigError(f"{kind} {spec.name!r}: units must be one of {UNITS}")
        if (kind, spec.name) in names:
            raise ConfigError(f"{kind} {spec.name!r} is defined twice")
        names.add((kind, spec.name))
    for z in zones:
        if len(z.points) < 3:
            raise ConfigError(f"zone {z.name!r} needs at least 3 points")
    for ln in lines:
        if tuple(ln.start) == tuple(ln.end):
            raise ConfigError(f"line {ln.name!r} has the same start and end")


class _Track:
    """What the counters remember of one track."""

    __slots__ = ("label", "zones", "sides", "refs", "trail")

    def __init__(self, label: str) -> None:
        self.label = label
        self.trail: Deque[Point] = collections.deque(maxlen=TRAIL_POINTS)
        self.zones = {}  # type: Dict[str, float]  # zone -> entered at (monotonic s)
        self.sides = {}  # type: Dict[str, int]  # line -> -1 / +1 once taken
        self.refs = {}  # type: Dict[str, Point]  # line -> anchor when the side was taken


class StreamCounter:
    """Zones and lines of one stream over its tracks."""

    def __init__(self, zones: Sequence[ZoneSpec] = (), lines: Sequence[LineSpec] = (),
                 anchor: str = "bottom_center", labels: Sequence[str] = ()) -> None:  # fmt: skip
        check_specs(zones, lines, anchor)
        self.zones = tuple(zones)
        self.lines = tuple(lines)
        self._anchor = ANCHORS[anchor]
        self._labels = tuple(labels)
        self._size = None  # type: Optional[Tuple[int, int]]
        self._polygons = {}  # type: Dict[str, Tuple[Point, ...]]
        self._segments = {}  # type: Dict[str, Tuple[Point, Point]]
        self._tracks = {}  # type: Dict[int, _Track]
        self.reset_counts()

    # -- persisted totals -----------------------------------------------------------------

    def reset_counts(self) -> None:
        """Line totals and zone entries back to 0 (the operator's reset)."""
        self._crossings = {ln.name: {} for ln in self.lines}  # type: Dict[str, Dict[str, Dict[str, int]]]
        self._entries = {z.name: {} for z in self.zones}  # type: Dict[str, Dict[str, int]]

    def state(self) -> Dict[str, Any]:
        return {
            "lines": {n: {lb: dict(c) for lb, c in v.items()} for n, v in self._crossings.items()},
            "zones": {n: dict(v) for n, v in self._entries.items()},
        }

    def load_state(self, state: Dict[str, Any]) -> None:
        """Restore totals saved by :meth:`state`; zones and lines no longer configured are
        left out, bad numbers are read as 0."""
        for name, by_label in (state.get("lines") or {}).items():
            if name in self._crossings and isinstance(by_label, dict):
                self._crossings[name] = {
                    str(lb): {d: _count(c, d) for d in DIRECTIONS}
                    for lb, c in by_label.items()
                    if isinstance(c, dict)
                }
        for name, by_label in (state.get("zones") or {}).items():
            if name in self._entries and isinstance(by_label, dict):
                self._entries[name] = {str(lb): _count(by_label, lb) for lb in by_label}

    # -- per frame --------------------------------------------------------------------------

    def _resolve(self, size: Tuple[int, int]) -> None:
        if size == self._size:
            return
        self._size = size
        self._polygons = {z.name: to_pixels(z.points, z.units, size) for z in self.zones}
        self._segments = {}
        for ln in self.lines:
            a, b = to_pixels((ln.start, ln.end), ln.units, size)
            self._segments[ln.name] = (a, b)

    def _label(self, class_id: int) -> str:
        if 0 <= class_id < len(self._labels):
            return self._labels[class_id]
        return str(class_id)

    def reset_tracks(self) -> None:
        """Forget the tracks (the tracker was reset); no leave events, totals stay."""
        self._tracks = {}

    def update(self, tracks: Sequence[TrackView], size: Tuple[int, int],
               now: float) -> List[Dict[str, Any]]:  # fmt: skip
        """The tracks alive in this frame -> the events it caused, in order.

        ``now`` is a monotonic time in seconds (dwell); the caller stamps events."""
        self._resolve(size)
        events = []  # type: List[Dict[str, Any]]
        alive: Set[int] = set()
        for view in tracks:
            alive.add(view.track_id)
            track = self._tracks.get(view.track_id)
            if track is None:
                track = self._tracks[view.track_id] = _Track(self._label(view.class_id))
            point = self._anchor(view.box)
            track.trail.append(point)
            self._zones(view.track_id, track, point, now, events)
            self._lines(view.track_id, track, point, events)
        for track_id in [t for t in self._tracks if t not in alive]:
            track = self._tracks.pop(track_id)
            for zone, entered in track.zones.items():
                events.append(_zone_event("zone_leave", zone, track_id, track.label, now - entered))
        return events

    def _zones(self, track_id: int, track: _Track, point: Point, now: float,
               events: List[Dict[str, Any]]) -> None:  # fmt: skip
        for zone in self.zones:
            if zone.labels and track.label not in zone.labels:
                continue
            inside = point_in_polygon(point, self._polygons[zone.name])
            was = zone.name in track.zones
            if inside and not was:
                track.zones[zone.name] = now
                counts = self._entries[zone.name]
                counts[track.label] = counts.get(track.label, 0) + 1
                events.append(_zone_event("zone_enter", zone.name, track_id, track.label, None))
            elif was and not inside:
                dwell = now - track.zones.pop(zone.name)
                events.append(_zone_event("zone_leave", zone.name, track_id, track.label, dwell))

    def _lines(self, track_id: int, track: _Track, point: Point,
               events: List[Dict[str, Any]]) -> None:  # fmt: skip
        for line in self.lines:
            if line.labels and track.label not in line.labels:
                continue
            a, b = self._segments[line.name]
            distance = signed_distance(a, b, point)
            if abs(distance) < line.hysteresis:
                continue  # on the line: keep the side taken before
            side = 1 if distance > 0 else -1
            before = track.sides.get(line.name)
            if (
                before is not None
                and side != before
                and segments_intersect(track.refs[line.name], point, a, b)
            ):
                direction = "in" if side > 0 else "out"
                counts = self._crossings[line.name].setdefault(track.label, {"in": 0, "out": 0})
                counts[direction] += 1
                events.append({"event": "line_crossed", "line": line.name,
                               "direction": direction, "track_id": track_id,
                               "label": track.label})  # fmt: skip
            track.sides[line.name] = side
            track.refs[line.name] = point

    # -- what is published --------------------------------------------------------------------

    def occupancy(self) -> Dict[str, Dict[str, int]]:
        """Zone -> label -> tracks inside now."""
        out = {z.name: {} for z in self.zones}  # type: Dict[str, Dict[str, int]]
        for track in self._tracks.values():
            for zone in track.zones:
                out[zone][track.label] = out[zone].get(track.label, 0) + 1
        return out

    def dwell(self, now: float) -> Dict[str, Dict[int, float]]:
        """Zone -> track id -> seconds inside so far."""
        out = {z.name: {} for z in self.zones}  # type: Dict[str, Dict[int, float]]
        for track_id, track in self._tracks.items():
            for zone, entered in track.zones.items():
                out[zone][track_id] = now - entered
        return out

    def overlay(self) -> Dict[str, Any]:
        """What to draw: zones and lines in source pixels, each track's recent anchor points."""
        return {
            "zones": dict(self._polygons),
            "lines": dict(self._segments),
            "trails": {i: list(t.trail) for i, t in self._tracks.items()},
        }

    def counts(self) -> Dict[str, Any]:
        """Occupancy now and the running totals: the body of the retained counts message."""
        zones: Dict[str, Any] = {}
        for name, by_label in self.occupancy().items():
            zones[name] = {"occupancy": sum(by_label.values()), "by_label": by_label,
                           "entered": dict(self._entries[name])}  # fmt: skip
        lines: Dict[str, Any] = {}
        for name, crossed in self._crossings.items():
            lines[name] = {
                "in": sum(c["in"] for c in crossed.values()),
                "out": sum(c["out"] for c in crossed.values()),
                "by_label": {lb: dict(c) for lb, c in crossed.items()},
            }
        return {"zones": zones, "lines": lines}


def _count(mapping: Dict[str, Any], key: str) -> int:
    value = mapping.get(key, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _zone_event(kind: str, zone: str, track_id: int, label: str,
                dwell: Optional[float]) -> Dict[str, Any]:  # fmt: skip
    event = {"event": kind, "zone": zone, "track_id": track_id, "label": label}  # type: Dict[str, Any]
    if dwell is not None:
        event["dwell_s"] = round(dwell, 3)
    return event
