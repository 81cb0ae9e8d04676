"""Per-class clustering (NMS, DBSCAN, none) with DeepStream's semantics (nvinfer; docs/parity.md):
NMS against a plain loop implementation on random boxes, and hand-built cases. DBSCAN is
compared with an independent DeepStream re-implementation in tests/test_parity.py."""

import numpy as np
import pytest

from edged.errors import ConfigError
from edged.tasks.clustering import ClusterParams, cluster_boxes
from edged.tasks.detection import DecodeParams, DetectNetV2Postprocessor

# -- plain references -------------------------------------------------------------------------


def plain_iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def plain_nms(boxes, scores, iou_threshold, top_k, post_threshold):
    """DeepStream clusterAndFillDetectionOutputNMS, written as loops."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # sorted() is stable
    kept = []
    for i in order:
        if all(plain_iou(boxes[i], boxes[k]) <= iou_threshold for k in kept):
            kept.append(i)
    kept = [i for i in kept if scores[i] > post_threshold]
    if top_k >= 0:
        kept = kept[:top_k]
    return kept


def random_boxes(seed, n):
    """Boxes around a few centres so that many overlap, plus a few loners."""
    rng = np.random.RandomState(seed)
    centres = rng.uniform(50, 600, (4, 2))
    pick = centres[rng.randint(0, 4, n)] + rng.normal(0, 8, (n, 2))
    size = rng.uniform(20, 80, (n, 2))
    boxes = np.concatenate([pick - size / 2, pick + size / 2], axis=1).astype(np.float32)
    scores = rng.uniform(0.2, 1.0, n).astype(np.float32)
    return boxes, scores


def box(x1, y1, x2, y2):
    return [float(x1), float(y1), float(x2), float(y2)]


# -- IoU --------------------------------------------------------------------------------------


def test_nms_iou_has_no_plus_one():
    # IoU 50/150 = 0.333 without +1 (DeepStream); with +1 it would be 66/176 = 0.375
    boxes = np.array([box(0, 0, 10, 10), box(5, 0, 15, 10)], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    assert len(cluster_boxes(boxes, scores, ClusterParams(iou_threshold=0.34))[0]) == 2
    assert len(cluster_boxes(boxes, scores, ClusterParams(iou_threshold=0.33))[0]) == 1


# -- NMS --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    "iou_threshold, top_k, post_threshold", [(0.5, 20, 0.0), (0.3, -1, 0.0), (0.7, 3, 0.6)]
)
def test_nms_matches_a_plain_loop(seed, iou_threshold, top_k, post_threshold):
    boxes, scores = random_boxes(seed, 60)
    params = ClusterParams(
        method="nms", iou_threshold=iou_threshold, top_k=top_k, post_threshold=post_threshold
    )

    got_boxes, got_scores = cluster_boxes(boxes, scores, params)

    kept = plain_nms(boxes.tolist(), scores.tolist(), iou_threshold, top_k, post_threshold)
    np.testing.assert_array_equal(got_boxes, boxes[kept])
    np.testing.assert_array_equal(got_scores, scores[kept])
    assert 1 < len(kept) < 60


def test_nms_with_equal_scores_keeps_the_earlier_box():
    boxes = np.array([box(0, 0, 10, 10), box(1, 0, 11, 10)], np.float32)
    got, _ = cluster_boxes(boxes, np.array([0.7, 0.7], np.float32), ClusterParams())
    assert got.tolist() == [box(0, 0, 10, 10)]


def _two_boxes_with_iou(iou):
    # [0,0,10,10] and the same box shifted right by d: IoU = (10-d)/(10+d)
    d = 10 * (1 - iou) / (1 + iou)
    boxes = np.array([box(0, 0, 10, 10), box(d, 0, 10 + d, 10)], np.float32)
    assert plain_iou(boxes[0].tolist(), boxes[1].tolist()) == pytest.approx(iou, abs=1e-5)
    return boxes, np.array([0.9, 0.8], np.float32)


def test_nms_suppresses_a_box_with_iou_above_the_threshold():
    boxes, scores = _two_boxes_with_iou(0.6)
    got, got_scores = cluster_boxes(boxes, scores, ClusterParams(method="nms", iou_threshold=0.5))
    assert got.tolist() == [boxes[0].tolist()] and got_scores.tolist() == [pytest.approx(0.9)]


def test_nms_keeps_a_box_with_iou_below_the_threshold():
    boxes, scores = _two_boxes_with_iou(0.4)
    got, _ = cluster_boxes(boxes, scores, ClusterParams(method="nms", iou_threshold=0.5))
    assert len(got) == 2


def test_nms_keeps_a_box_with_iou_equal_to_the_threshold():
    boxes = np.array([box(0, 0, 10, 10), box(0, 0, 10, 20)], np.float32)  # IoU exactly 0.5
    got, _ = cluster_boxes(boxes, np.array([0.9, 0.8], np.float32), ClusterParams())
    assert len(got) == 2


def test_nms_top_k_keeps_the_most_confident():
    boxes = np.array([box(30 * i, 0, 30 * i + 20, 20) for i in range(5)], np.float32)
    scores = np.array([0.3, 0.9, 0.5, 0.8, 0.4], np.float32)
    got, got_scores = cluster_boxes(boxes, scores, ClusterParams(method="nms", top_k=3))
    assert got_scores.tolist() == pytest.approx([0.9, 0.8, 0.5])
    assert got.tolist() == [boxes[1].tolist(), boxes[3].tolist(), boxes[2].tolist()]


def test_nms_post_threshold_drops_a_box_after_it_suppressed_others():
    # DeepStream: suppression happens first, the post-cluster threshold afterwards
    boxes, _ = _two_boxes_with_iou(0.8)
    scores = np.array([0.5, 0.45], np.float32)
    got, _ = cluster_boxes(boxes, scores, ClusterParams(method="nms", post_threshold=0.5))
    assert len(got) == 0  # 0.5 is not > 0.5, and it already suppressed the other box


def test_overlapping_boxes_of_different_classes_are_both_kept():
    cov = np.zeros((2, 2, 2), np.float32)
    cov[:, 0, 0] = [0.9, 0.8]  # both classes fire on the same cell ...
    cov[0, 0, 1] = 0.7  # ... and class 0 also on the neighbour cell
    bbox = np.ones((8, 2, 2), np.float32)  # boxes of 70 x 70 px around each cell centre
    post = DetectNetV2Postprocessor(
        ["person", "bag"], DecodeParams(thresholds=(0.5,)), [ClusterParams(method="nms")]
    )

    detections = post(cov, bbox, 32, 32, 32, 32)

    assert [(d.label, d.confidence) for d in detections] == [
        ("person", pytest.approx(0.9)),
        ("bag", pytest.approx(0.8)),
    ]
    assert detections[0].bbox == detections[1].bbox


# -- DBSCAN -----------------------------------------------------------------------------------


def dbscan(**kwargs):
    return ClusterParams(method="dbscan", top_k=-1, **kwargs)


CHAIN = np.array([box(0, 0, 10, 10), box(3, 0, 13, 10), box(6, 0, 16, 10)], np.float32)


def test_dbscan_a_seed_takes_only_its_direct_neighbours_like_deepstream():
    # IoU neighbours: 0-1 and 1-2 (0.54); 0-2 only 0.25 (distance 0.75 >= eps 0.7).
    # nvdsinfer_dbscan.cpp reads the seed's neighbour count before joinNeighbors grows the
    # list, so box 0's cluster takes box 1 but never reaches box 2, which seeds its own.
    chain = CHAIN.tolist()
    assert plain_iou(chain[0], chain[1]) > 0.3 and plain_iou(chain[1], chain[2]) > 0.3
    assert plain_iou(chain[0], chain[2]) < 0.3
    scores = np.array([0.5, 0.9, 0.6], np.float32)

    got, got_scores = cluster_boxes(CHAIN, scores, dbscan(eps=0.7, min_boxes=1))

    assert got_scores.tolist() == [pytest.approx(0.9), pytest.approx(0.6)]  # maxima, not sums
    np.testing.assert_allclose(got[1], CHAIN[2])


def test_dbscan_box_is_the_confidence_weighted_mean():
    scores = np.array([0.5, 0.9, 0.6], np.float32)
    got, _ = cluster_boxes(CHAIN, scores, dbscan())
    pair = CHAIN[:2].astype(np.float64)
    expected = (scores[:2, None] * pair).sum(axis=0) / scores[:2].sum()
    np.testing.assert_allclose(got[0], expected, rtol=1e-6)


def test_dbscan_min_boxes_drops_isolated_boxes():
    boxes = np.concatenate([CHAIN[:2], [box(100, 100, 120, 120)]]).astype(np.float32)
    scores = np.array([0.6, 0.7, 0.99], np.float32)

    got, got_scores = cluster_boxes(boxes, scores, dbscan(min_boxes=2))

    assert got_scores.tolist() == [pytest.approx(0.7)]  # the loner (0.99) is noise
    assert len(cluster_boxes(boxes, scores, dbscan(min_boxes=1))[0]) == 2


def test_dbscan_neighbours_that_are_no_seeds_stay_out_like_deepstream():
    # with min_boxes=3 only the middle box is a seed; DeepStream leaves its two neighbours
    # unlabelled (textbook DBSCAN would add them as border points)
    scores = np.array([0.5, 0.6, 0.7], np.float32)
    got, got_scores = cluster_boxes(CHAIN, scores, dbscan(min_boxes=3))
    assert got_scores.tolist() == [pytest.approx(0.6)]
    np.testing.assert_allclose(got[0], CHAIN[1])


def test_dbscan_min_score_applies_to_the_sum_of_member_coverage():
    scores = np.array([0.3, 0.3, 0.3], np.float32)  # clusters {0, 1} (sum 0.6) and {2} (0.3)
    assert len(cluster_boxes(CHAIN, scores, dbscan(dbscan_min_score=0.55))[0]) == 1
    assert len(cluster_boxes(CHAIN, scores, dbscan(dbscan_min_score=0.65))[0]) == 0


def test_dbscan_drops_large_clusters_with_few_members_like_deepstreams_athr_filter():
    # sqrt(area) / (members + 1) > 60 network pixels: one 121 x 121 box (60.5) goes,
    # a 119 x 119 one (59.5) stays, and three 121 x 121 boxes (30.25) stay.
    big, small = [box(0, 0, 121, 121)], [box(0, 0, 119, 119)]
    one = np.ones(1, np.float32)
    assert len(cluster_boxes(np.array(big, np.float32), one, dbscan())[0]) == 0
    assert len(cluster_boxes(np.array(small, np.float32), one, dbscan())[0]) == 1
    three = np.array(big * 3, np.float32)
    assert len(cluster_boxes(three, np.ones(3, np.float32), dbscan())[0]) == 1


def test_dbscan_post_threshold_keeps_equal_confidence():
    scores = np.array([0.5, 0.5, 0.25], np.float32)
    _, got_scores = cluster_boxes(CHAIN, scores, dbscan(post_threshold=0.5))
    assert got_scores.tolist() == [0.5]


def test_dbscan_min_boxes_zero_skips_clustering_like_deepstream():
    scores = np.array([0.5, 0.9, 0.6], np.float32)
    got, got_scores = cluster_boxes(CHAIN, scores, dbscan(min_boxes=0))
    # top-k -1: filterTopKOutputs returns at once, so not even sorted
    assert got_scores.tolist() == pytest.approx([0.5, 0.9, 0.6])
    np.testing.assert_array_equal(got, CHAIN)


def test_dbscan_separate_objects_stay_separate_and_top_k_applies():
    pair = CHAIN[:2]
    boxes = np.concatenate([pair, pair + np.float32(200)]).astype(np.float32)
    scores = np.array([0.5, 0.9, 0.45, 0.95], np.float32)
    _, got_scores = cluster_boxes(boxes, scores, ClusterParams(method="dbscan", top_k=5))
    assert got_scores.tolist() == pytest.approx([0.95, 0.9])
    _, top1 = cluster_boxes(boxes, scores, ClusterParams(method="dbscan", top_k=1))
    assert top1.tolist() == pytest.approx([0.95])


def test_empty_input_gives_empty_output_for_every_method():
    empty = np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    for method in ("nms", "dbscan", "none"):
        got, got_scores = cluster_boxes(empty[0], empty[1], ClusterParams(method=method))
        assert got.shape == (0, 4) and got_scores.shape == (0,)


# -- none -------------------------------------------------------------------------------------


def test_none_returns_every_box_in_grid_order_without_top_k():
    boxes, scores = random_boxes(3, 25)
    got, got_scores = cluster_boxes(boxes, scores, ClusterParams(method="none", top_k=-1))
    np.testing.assert_allclose(got, boxes, atol=1e-4)  # via left/top/width/height and back
    np.testing.assert_array_equal(got_scores, scores)


def test_none_still_applies_top_k_like_deepstream():
    boxes, scores = random_boxes(3, 25)
    _, got_scores = cluster_boxes(boxes, scores, ClusterParams(method="none", top_k=2))
    assert got_scores.tolist() == sorted(scores.tolist(), reverse=True)[:2]


# -- parameters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "groupRectangles"}, "method must be one of nms, dbscan, none"),
        ({"iou_threshold": 1.5}, "iou_threshold"),
        ({"eps": -0.1}, "eps"),
        ({"top_k": 0}, "top_k"),
    ],
)
def test_invalid_cluster_params_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ClusterParams(**kwargs)
