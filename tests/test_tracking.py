"""The tracker and the counters on synthetic truth generated here: rectangles moving on
known paths (benchmarks/tracking_eval.py), crossing lines, occluding each other, leaving
and re-entering. Crossing counts are asserted exactly, and ids where paths do not cross."""

import json
import random

import pytest

from benchmarks.tracking_eval import (
    DetectorModel,
    Mover,
    bouncing_scene,
    evaluate,
    hungarian_max,
    run_tracking,
    track,
    truth,
)
from edged.config.model import TrackingConfig
from edged.errors import ConfigError
from edged.pipeline.tracking import tracker_params
from edged.tracking.counting import LineSpec, StreamCounter, ZoneSpec
from edged.tracking.geometry import point_in_polygon, segments_intersect, signed_distance
from edged.tracking.tracker import Tracker


def params(**overrides):
    """The tracker's parameters: the config's defaults with ``overrides``."""
    return tracker_params(TrackingConfig(**overrides))


SIZE = (1280, 720)
#: a horizontal line across the middle, drawn left to right: "in" is downwards
MIDDLE = LineSpec("door", (0.0, 0.5), (1.0, 0.5), "fraction", hysteresis=6.0)


def crossings(events):
    out = {"in": 0, "out": 0}
    for frame in events:
        for e in frame:
            if e["event"] == "line_crossed":
                out[e["direction"]] += 1
    return out


def ids_per_truth(gt, hyp):
    """truth id -> the set of track ids its boxes got (matched at IOU >= 0.5)."""
    from edged.tracking.assignment import greedy_match, iou_matrix

    seen = {}
    for g_row, h_row in zip(gt, hyp):
        iou = iou_matrix([b for _, b in g_row], [b for _, b in h_row])
        for gi, hi in greedy_match(iou, 0.5):
            seen.setdefault(g_row[gi][0], set()).add(h_row[hi][0])
    return seen


def test_geometry():
    square = ((0, 0), (10, 0), (10, 10), (0, 10))
    assert point_in_polygon((5, 5), square) and not point_in_polygon((15, 5), square)
    assert segments_intersect((5, -1), (5, 1), (0, 0), (10, 0))
    assert not segments_intersect((15, -1), (15, 1), (0, 0), (10, 0))  # beyond the end
    assert segments_intersect((5, 0), (5, 1), (0, 0), (10, 0))  # touching counts
    assert signed_distance((0, 0), (10, 0), (3, 2)) == 2.0  # below a left-to-right line: +


def test_parallel_walkers_cross_exactly_once_each_without_id_switches():
    # 5 walk down across the door, 3 walk up, 2 walk beside each other without crossing it;
    # lanes 100 px apart: paths never cross, so every walker keeps one id
    movers = [Mover(g, 5 * g, 400, (80.0 + 110 * g, 100.0), (0.0, 3.0)) for g in range(1, 6)]
    movers += [Mover(g, 3 * g, 400, (80.0 + 110 * g, 650.0), (0.0, -3.5)) for g in range(6, 9)]
    movers += [Mover(g, 0, 300, (100.0, 200.0 + 150 * (g - 9)), (3.5, 0.0)) for g in (9, 10)]
    gt = truth(movers, 300, SIZE)
    counter = StreamCounter(lines=[MIDDLE])
    hyp, _, events = track(gt, SIZE, seed=1, counter=counter)
    assert crossings(events) == {"in": 5, "out": 3}
    assert counter.counts()["lines"]["door"]["in"] == 5
    seen = ids_per_truth(gt, hyp)
    assert sorted(seen) == list(range(1, 11))
    assert all(len(ids) == 1 for ids in seen.values()), seen
    assert len({next(iter(ids)) for ids in seen.values()}) == 10  # distinct ids
    assert evaluate(gt, hyp)["id_switches"] == 0


def test_jitter_on_the_line_counts_once():
    # one walker stops on the line and shuffles +-3 px around it for 60 frames, then goes on
    # down; one comes back up after lingering: exactly one in and one out
    rng = random.Random(3)
    gt = []
    for f in range(200):
        if f < 50:
            foot = 200.0 + 3.2 * f
        elif f < 110:
            foot = 360.0 + rng.uniform(-3.0, 3.0)
        else:
            foot = 360.0 + 3.0 * (f - 110)
        gt.append([(1, (600.0, foot - 80, 640.0, foot))])
    back = list(reversed(gt))
    gt = gt + back
    counter = StreamCounter(lines=[MIDDLE])
    _, _, events = track(gt, SIZE, seed=2, counter=counter,
                         model=DetectorModel(false_positive_rate=0.0))  # fmt: skip
    assert crossings(events) == {"in": 1, "out": 1}


def test_occlusion_keeps_counts_exact():
    # two walkers meet head on at the line and pass each other: the one nearer the camera
    # (lower on screen) hides most of the other for several frames
    movers = [
        Mover(1, 0, 260, (100.0, 395.0), (4.0, 0.0)),  # in front, walking right
        Mover(2, 0, 260, (1180.0, 385.0), (-4.0, 0.0)),  # behind, walking left
        Mover(3, 0, 260, (640.0, 60.0), (0.0, 2.5)),  # crosses the door down, alone
    ]
    gt = truth(movers, 260, SIZE)
    vertical = LineSpec("aisle", (0.5, 1.0), (0.5, 0.0), "fraction")  # "in" = to the right
    counter = StreamCounter(lines=[vertical, MIDDLE])
    hyp, _, events = track(gt, SIZE, seed=4, counter=counter)
    totals = counter.counts()["lines"]
    assert (totals["aisle"]["in"], totals["aisle"]["out"]) == (1, 1)
    assert (totals["door"]["in"], totals["door"]["out"]) == (1, 0)
    assert len(ids_per_truth(gt, hyp)[3]) == 1  # its path crosses no other


def test_leaving_and_reentering_gets_a_new_id_and_counts_again():
    slow_to_forget = params(max_misses=10)
    movers = [
        Mover(1, 0, 90, (640.0, 200.0), (0.0, 4.0)),  # down through the door, out at the bottom
        Mover(2, 150, 300, (640.0, 760.0), (0.0, -4.0)),  # back in from the bottom, up through
    ]
    gt = truth(movers, 300, SIZE)
    counter = StreamCounter(lines=[MIDDLE])
    hyp, _, events = track(gt, SIZE, seed=5, tracker=Tracker(slow_to_forget), counter=counter)
    assert crossings(events) == {"in": 1, "out": 1}
    seen = ids_per_truth(gt, hyp)
    (first,), (second,) = seen[1], seen[2]
    assert second > first  # never reused


def test_zone_occupancy_dwell_and_labels():
    zone = ZoneSpec("queue", ((0, 0), (640, 0), (640, 720), (0, 720)), labels=("person",))
    counter = StreamCounter(zones=[zone], labels=("person", "bag"))
    tracker = Tracker(params(min_hits=1))
    events = []
    for f in range(100):
        x = 500.0 + 4 * f  # the person's feet leave the zone at x = 640, frame 35
        boxes = [[x - 20, 300, x + 20, 380], [100, 300, 140, 340]]
        tracker.update(boxes, [0.9, 0.9], [0, 1])
        events += counter.update(tracker.tracks(), SIZE, now=f * 0.5)
        if f == 10:
            assert counter.occupancy() == {"queue": {"person": 1}}  # the bag is not counted
            assert counter.dwell(now=5.0)["queue"] == {1: 5.0}
    kinds = [(e["event"], e["track_id"]) for e in events]
    assert kinds == [("zone_enter", 1), ("zone_leave", 1)]
    # frames 0 .. 35 at 2 fps; the filtered box may trail the raw one by a frame
    assert events[1]["dwell_s"] in (17.5, 18.0)
    assert counter.counts()["zones"]["queue"] == {"occupancy": 0, "by_label": {},
                                                  "entered": {"person": 1}}  # fmt: skip


def test_track_death_leaves_the_zone_and_reset_keeps_ids_unique():
    zone = ZoneSpec("all", ((0, 0), (1, 0), (1, 1), (0, 1)), "fraction")
    counter = StreamCounter(zones=[zone])
    tracker = Tracker(params(min_hits=2, max_misses=3))
    for _ in range(3):
        tracker.update([[10, 10, 50, 90]], [0.9], [0])
        counter.update(tracker.tracks(), SIZE, 0.0)
    assert counter.occupancy()["all"] == {"0": 1}
    for _ in range(3):  # missed, still alive: still inside
        tracker.update([], [], [])
        assert counter.update(tracker.tracks(), SIZE, 1.0) == []
    tracker.update([], [], [])
    assert [e["event"] for e in counter.update(tracker.tracks(), SIZE, 2.0)] == ["zone_leave"]
    tracker.reset()
    counter.reset_tracks()
    out = [tracker.update([[10, 10, 50, 90]], [0.9], [0]) for _ in range(2)]
    assert out == [[None], [2]]  # tentative first; then the next id, not 1 again


def test_low_confidence_pass_keeps_a_track_and_never_starts_one():
    tracker = Tracker(params(min_hits=1))
    assert tracker.update([[0, 0, 40, 80]], [0.9], [0]) == [1]
    assert tracker.update([[1, 0, 41, 80]], [0.2], [0]) == [1]  # second pass
    assert tracker.update([[600, 0, 640, 80]], [0.2], [0]) == [None]  # too low to start
    assert tracker.update([[2, 0, 42, 80]], [0.9], [1]) == [2]  # another class: another id


def test_counts_state_round_trip_and_reset():
    counter = StreamCounter(lines=[MIDDLE], zones=[ZoneSpec("z", ((0, 0), (1, 0), (1, 1)),
                                                            "fraction")])  # fmt: skip
    counter.load_state({"lines": {"door": {"person": {"in": 4, "out": "x"}}, "gone": {}},
                        "zones": {"z": {"person": 2, "bag": -1}}})  # fmt: skip
    state = json.loads(json.dumps(counter.state()))
    assert state == {"lines": {"door": {"person": {"in": 4, "out": 0}}},
                     "zones": {"z": {"person": 2, "bag": 0}}}  # fmt: skip
    again = StreamCounter(lines=[MIDDLE], zones=counter.zones)
    again.load_state(state)
    door = again.counts()["lines"]["door"]
    assert door == {"in": 4, "out": 0, "by_label": {"person": {"in": 4, "out": 0}}}
    again.reset_counts()
    assert again.counts()["lines"]["door"]["in"] == 0


@pytest.mark.parametrize(
    "zones, lines, anchor, message",
    [
        ([], [], "feet", "anchor 'feet'"),
        ([ZoneSpec("a", ((0, 0), (1, 1)))], [], "center", "at least 3 points"),
        ([], [LineSpec("l", (1, 1), (1, 1))], "center", "same start and end"),
        ([], [LineSpec("l", (0, 0), (1, 1), "percent")], "center", "units"),
        ([], [LineSpec("l", (0, 0), (1, 1))] * 2, "center", "defined twice"),
    ],
)
def test_bad_specs_are_config_errors(zones, lines, anchor, message):
    with pytest.raises(ConfigError, match=message):
        StreamCounter(zones, lines, anchor)


def test_evaluator_on_known_answers():
    gt = [[(1, (0, 0, 10, 10)), (2, (50, 0, 60, 10))] for _ in range(4)]
    assert evaluate(gt, gt)["mota"] == 1.0 and evaluate(gt, gt)["idf1"] == 1.0
    swapped = gt[:2] + [[(2, (0, 0, 10, 10)), (1, (50, 0, 60, 10))] for _ in range(2)]
    figures = evaluate(gt, swapped)
    assert figures["id_switches"] == 2
    assert figures["idf1"] == pytest.approx(0.5)
    assert sorted(hungarian_max(__import__("numpy").array([[1.0, 5.0], [4.0, 1.0]]))) == [
        (0, 1), (1, 0)]  # fmt: skip


def test_benchmark_entry_runs_on_a_short_scene():
    figures = run_tracking(frames=60, objects=20)
    assert set(figures) >= {"mota", "idf1", "id_switches", "cpu_ms_per_frame_mean"}
    assert len(bouncing_scene(3, 5, SIZE, 0)) == 5


BASE = """
models:
  m: {path: /m.onnx, tracking: {enabled: %s}}
streams:
  s: {source: /tmp/clip.mp4, model: m, %s}
"""


@pytest.mark.parametrize(
    "enabled, stream, message",
    [
        ("false", "lines: {d: {start: [0, 0], end: [9, 9]}}",
         "streams.s.lines.d: model 'm' does not track"),
        ("true", "zones: {q: {points: [[0, 0], [2, 0], [1, 1]], units: fraction}}",
         "streams.s.zones.q: units is fraction but a point is outside 0..1"),
        ("true", "lines: {d: {start: [5, 5], end: [5, 5]}}", "start and end are the same point"),
        ("true", "zones: {q: {points: [[0, 0], [1, 1]]}}", "expected at least 3"),
        ("true", "lines: {'a/b': {start: [0, 0], end: [1, 1]}}", "streams.s.lines: invalid name"),
    ],
)  # fmt: skip
def test_counting_config_errors_name_the_key(enabled, stream, message):
    from edged.config import parse_config

    with pytest.raises(ConfigError, match=message):
        parse_config(BASE % (enabled, stream))


def test_counting_config_is_frozen_in_dataclasses():
    from edged.config import parse_config

    config = parse_config(BASE % ("true", "lines: {d: {start: [0, 0.5], end: [1, 0.5], "
                                          "units: fraction, labels: [person]}}"))  # fmt: skip
    (line,) = config.streams["s"].lines
    assert (line.name, line.start, line.end, line.units, line.labels, line.hysteresis) == (
        "d", (0.0, 0.5), (1.0, 0.5), "fraction", ("person",), 4.0)  # fmt: skip
    assert config.models["m"].tracking.min_hits == 3


def test_overlay_draws_zones_lines_and_trails_and_the_snapshot_has_them():
    import dataclasses as dc

    import cv2
    import numpy as np

    from edged.mqtt.commands import annotated_jpeg
    from edged.pipeline.results import InferenceResult
    from edged.pipeline.tracking import TrackingUpdate
    from edged.tasks.detection import Detection
    from edged.tracking.draw import LINE_COLOUR, ZONE_COLOUR, draw_overlay

    counter = StreamCounter(zones=[ZoneSpec("q", ((10, 10), (100, 10), (100, 100), (10, 100)))],
                            lines=[LineSpec("d", (0, 200), (320, 200))])  # fmt: skip
    tracker = Tracker(params(min_hits=1))
    for f in range(5):
        tracker.update([[150 + 10 * f, 100, 190 + 10 * f, 180]], [0.9], [0])
        counter.update(tracker.tracks(), (320, 240), f)
    overlay = counter.overlay()
    assert overlay["trails"][1][0] == (170.0, 180.0)  # bottom centre of the first box
    image = draw_overlay(np.zeros((240, 320, 3), np.uint8), overlay)

    def near(pixels, colour):  # anti-aliased lines: the strongest pixel, within a tolerance
        best = pixels[pixels.astype(int).sum(axis=1).argmax()]
        return all(abs(int(a) - b) <= 60 for a, b in zip(best, colour))

    assert near(image[8:13, 50], ZONE_COLOUR)  # the zone's top edge
    assert near(image[198:203, 20], LINE_COLOUR)
    assert image[180, 175:205].any()  # the trail
    result = InferenceResult("cam", 4, 0.0, 0.0, (320, 240), "m", "detection",
                             [Detection(0, "person", 0.9, (190, 100, 230, 180), 1)], {},
                             TrackingUpdate([], counter.counts(), False, overlay))  # fmt: skip
    jpeg, size = annotated_jpeg(np.zeros((240, 320, 3), np.uint8), result, 1280, 95)
    decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert size == (320, 240)
    assert abs(int(decoded[200, 20][0]) - 255) < 40 and int(decoded[200, 20][1]) < 60  # magenta
    plain = annotated_jpeg(np.zeros((240, 320, 3), np.uint8), dc.replace(result, tracking=None),
                           1280, 95)[0]  # fmt: skip
    assert cv2.imdecode(np.frombuffer(plain, np.uint8), cv2.IMREAD_COLOR)[200, 20].max() < 40
