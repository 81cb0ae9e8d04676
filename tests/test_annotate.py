"""Annotated frames (edged infer --output, the MQTT snapshot): labels whole inside the frame,
not covering each other, drawn with OpenCV on real images."""

import itertools

import numpy as np
import pytest

from edged.annotate import (
    colour,
    detection_labels,
    draw_classifications,
    draw_detections,
    place_label,
)
from edged.tasks.classification import Classification
from edged.tasks.detection import Detection


def inside(rect, shape):
    return 0 <= rect[0] < rect[2] <= shape[1] and 0 <= rect[1] < rect[3] <= shape[0]


def corners_have(image, rect, bgr):
    x1, y1, x2, y2 = rect
    return all(image[y, x].tolist() == list(bgr) for x in (x1, x2 - 1) for y in (y1, y2 - 1))


@pytest.mark.parametrize(
    "bbox",
    [
        (0.0, 0.0, 60.0, 50.0),  # top-left corner
        (250.0, 0.0, 320.0, 40.0),  # top-right corner: the label is wider than the room left
        (300.0, 100.0, 320.0, 140.0),  # a narrow box at the right edge
        (-20.0, 200.0, 30.0, 240.0),  # partly outside on the left, at the bottom
    ],
)
def test_a_label_at_an_edge_is_whole_inside_the_frame(bbox):
    image = np.zeros((240, 320, 3), np.uint8)
    d = Detection(0, "person with a long label", 0.91, bbox)
    (rect,) = detection_labels(image.shape, [d])
    assert inside(rect, image.shape)
    drawn = draw_detections(image, [d])
    assert corners_have(drawn, rect, colour(0))
    if bbox[1] <= 0:  # no room above: inside the box, at its top
        assert rect[1] == 0


def test_a_label_above_its_box_when_there_is_room():
    d = Detection(1, "car", 0.5, (100.0, 100.0, 200.0, 200.0))
    (rect,) = detection_labels((240, 320, 3), [d])
    assert rect[3] == 100 and rect[0] == 100


def test_labels_of_overlapping_boxes_do_not_cover_each_other():
    image = np.zeros((480, 640, 3), np.uint8)
    detections = [
        Detection(0, "person", 0.9, (200.0, 200.0, 300.0, 400.0)),
        Detection(1, "person", 0.8, (205.0, 205.0, 305.0, 405.0)),
        Detection(2, "bag", 0.7, (200.0, 200.0, 300.0, 400.0)),
        Detection(3, "face", 0.6, (250.0, 198.0, 280.0, 230.0)),
        Detection(4, "person", 0.5, (0.0, 0.0, 640.0, 20.0)),
    ]
    rects = detection_labels(image.shape, detections)
    assert all(inside(r, image.shape) for r in rects)
    for a, b in itertools.combinations(rects, 2):
        assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
    drawn = draw_detections(image, detections)
    for d, rect in zip(detections, rects):
        assert corners_have(drawn, rect, colour(d.class_id))


def test_text_wider_than_the_frame_is_drawn_smaller():
    image = np.zeros((60, 80, 3), np.uint8)
    d = Detection(0, "a very long class name indeed", 0.99, (10.0, 10.0, 50.0, 50.0))
    (rect,) = detection_labels(image.shape, [d])
    assert inside(rect, image.shape)
    drawn = draw_detections(image, [d])
    assert corners_have(drawn, rect, colour(0))


def test_place_label_with_no_free_place_stays_in_the_frame():
    taken = [(0, 0, 100, 100)]  # an earlier label covers the whole frame
    assert place_label((10, 10, 50, 50), (30, 20), (100, 100), taken) == (10, 10, 40, 30)
    assert place_label((90, 95, 99, 99), (30, 20), (100, 100), []) == (70, 75, 100, 95)


def test_classification_lines_do_not_overlap_on_large_images():
    image = np.zeros((1600, 2000, 3), np.uint8)  # a large font: taller than the old 26 px step
    classes = [Classification(i, f"class {i}", 0.9 - i / 10) for i in range(3)]
    drawn = draw_classifications(image, classes)
    spans = []
    for c in classes:
        rows = np.nonzero(np.all(drawn == colour(c.class_id), axis=2).any(axis=1))[0]
        assert rows.size, c
        spans.append((rows.min(), rows.max()))
    for (_, bottom_a), (top_b, _) in zip(spans, spans[1:]):
        assert bottom_a < top_b
