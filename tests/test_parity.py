"""edged's detections equal DeepStream's and TAO's, frame by frame (docs/parity.md).

Each of deepstream/nms, deepstream/dbscan, tao/nms and tao/dbscan is compared with an
independent re-implementation of that reference (tests/parity_refs/, written from the
upstream sources in another shape than edged's): the same boxes within 0.05 source
pixels and the same confidences within 1e-4, in any order,

(a) on synthetic grids built so that boxes touch and cross every border, confidences
    tie, IoUs fall exactly on the threshold, plus empty, one-box and min-samples cases;
(b) on every frame of OpenCV's vtest.avi through the demo detector (a sample of frames
    on Python < 3.11, to keep those runs short; the raw outputs are cached once).
"""

import sys

import numpy as np
import pytest

from tests.parity_refs import compare, deepstream, settings, tao

REFERENCES = {"deepstream": deepstream, "tao": tao}
COMBOS = [("deepstream", "nms"), ("deepstream", "dbscan"), ("tao", "nms"), ("tao", "dbscan")]
LABELS = ("person", "bag", "face")

# -- synthetic grids --------------------------------------------------------------------------

STRIDE = 16
GRID_H, GRID_W = 8, 12
NET_W, NET_H = GRID_W * STRIDE, GRID_H * STRIDE  # 192 x 128
# Quantised coverage: many exact ties, and 0.4 / 0.2 equal to PeopleNet's thresholds.
COVERAGES = np.array([0.125, 0.2, 0.25, 0.4, 0.5, 0.5, 0.75, 1.0], np.float32)
# With norm 1 and offset 0 a corner decodes exactly to the value it was built from, so
# corners can sit exactly on a border and IoUs exactly on a threshold.
EXACT = {"stride": STRIDE, "norm": 1.0, "offset": 0.0}


def _border_value(rng, size):
    """A corner on, just inside or beyond the far border, or at / before 0."""
    return rng.choice([size - 1.0, size - 0.5, float(size), size + 6.0, 0.0, -4.0, 0.5])


def synthetic_grid(seed, classes=3, objects=5):
    """cov [C, H, W], bbox [4C, H, W]: a few objects, each predicted by every cell it covers
    with integer jitter (0 for some: identical boxes), several of them on the borders."""
    rng = np.random.RandomState(seed)
    cov = np.zeros((classes, GRID_H, GRID_W), np.float32)
    bbox = np.zeros((4 * classes, GRID_H, GRID_W), np.float32)
    for k in range(objects):
        c = rng.randint(classes)
        w, h = rng.randint(20, 90), rng.randint(20, 90)
        x1, y1 = float(rng.randint(-10, NET_W - 10)), float(rng.randint(-10, NET_H - 10))
        x2, y2 = x1 + w, y1 + h
        if k % 2 == 0:  # half of the objects sit on a border
            side = rng.randint(4)
            if side == 0:
                x2 = _border_value(rng, NET_W)
                x1 = min(x1, x2 - 8.0)
            elif side == 1:
                y2 = _border_value(rng, NET_H)
                y1 = min(y1, y2 - 8.0)
            elif side == 2:
                x1 = rng.choice([0.0, -4.0, 0.5, -40.0])
            else:
                y1 = rng.choice([0.0, -4.0, 0.5, -40.0])
        cols = range(max(0, int(x1) // STRIDE), min(GRID_W, int(x2) // STRIDE + 1))
        rows = range(max(0, int(y1) // STRIDE), min(GRID_H, int(y2) // STRIDE + 1))
        for i in rows:
            for j in cols:
                jitter = rng.randint(-2, 3, 4) * rng.randint(0, 2)
                gx, gy = float(j * STRIDE), float(i * STRIDE)
                cov[c, i, j] = rng.choice(COVERAGES)
                bbox[4 * c : 4 * c + 4, i, j] = [
                    gx - (x1 + jitter[0]),
                    gy - (y1 + jitter[1]),
                    (x2 + jitter[2]) - gx,
                    (y2 + jitter[3]) - gy,
                ]
    _plant_iou_tie(rng, cov, bbox, plus=seed % 2)
    return cov, bbox


def _plant_iou_tie(rng, cov, bbox, plus):
    """Two class-0 boxes in neighbouring cells whose IoU is exactly 0.5: without ``+1`` on
    widths and heights (DeepStream's IoU) when plus is 0, with it (TAO's NMS) when 1."""
    i, j = rng.randint(1, GRID_H - 3), rng.randint(1, GRID_W - 3)
    x, y, w, h = j * STRIDE - 5.0, i * STRIDE - 5.0, float(rng.randint(20, 30)), 30.0
    small = (x, y, x + w - plus, y + h - plus)
    large = (x, y, x + 2 * w - plus, y + h - plus)
    for (row, col), box, coverage in (
        ((i, j), large, 0.75),
        ((i, j + 1), small, rng.choice([0.75, 0.5])),
    ):
        gx, gy = float(col * STRIDE), float(row * STRIDE)
        cov[0, row, col] = coverage
        bbox[0:4, row, col] = [gx - box[0], gy - box[1], box[2] - gx, box[3] - gy]


def synthetic_settings(compat, method, **overrides):
    per, dec = settings.settings(compat, method)
    per = [dict(p, **overrides) for p in per]
    return per, dict(dec, **EXACT)


# Per combination: PeopleNet's published settings, then settings that put the thresholds
# where the synthetic boxes tie (IoU 0.5 exactly, coverage sums of 1 and 2, ...).
VARIANTS = {
    ("deepstream", "nms"): [{}, {"iou_threshold": 0.5, "top_k": 3, "post_threshold": 0.25}],
    ("deepstream", "dbscan"): [
        {},
        {"eps": 0.5, "min_boxes": 2, "min_score": 1.0, "post_threshold": 0.5, "top_k": -1},
        {"eps": 0.9, "min_boxes": 1, "top_k": 2},
    ],
    ("tao", "nms"): [{}, {"iou_threshold": 0.5, "post_threshold": 0.25}],
    ("tao", "dbscan"): [
        {},
        {"eps": 0.5, "min_boxes": 2, "min_cluster_height": 30.0, "post_threshold": 1.5},
        {"eps": 0.9, "min_boxes": 1, "post_threshold": 0.0},
    ],
}
SEEDS = range(40)
SOURCES = [(NET_W, NET_H), (240, 100)]


def run_both(compat, per, dec, cov, bbox, src):
    expected = REFERENCES[compat].postprocess(cov, bbox, src[0], src[1], NET_W, NET_H, per, dec)
    post = settings.edged_from(compat, per, dec, LABELS[: cov.shape[0]])
    return expected, compare.as_rows(post(cov, bbox, src[0], src[1], NET_W, NET_H))


@pytest.mark.parametrize("compat, method", COMBOS)
def test_synthetic_grids_give_the_references_boxes(compat, method):
    failures, boxes = [], 0
    for v, overrides in enumerate(VARIANTS[(compat, method)]):
        per, dec = synthetic_settings(compat, method, **overrides)
        for seed in SEEDS:
            cov, bbox = synthetic_grid(seed)
            for src in SOURCES:
                expected, actual = run_both(compat, per, dec, cov, bbox, src)
                reason, _ = compare.difference(expected, actual)
                boxes += len(expected)
                if reason:
                    failures.append(f"variant {v} seed {seed} source {src}: {reason}")
    assert not failures, failures[:5]
    assert boxes > 100  # the cases produce detections, not just empty frames


def _decoded_corners():
    corners = []
    for seed in SEEDS:
        cov, bbox = synthetic_grid(seed)
        for c in range(cov.shape[0]):
            rows, cols = np.nonzero(cov[c] > 0)
            b = bbox[4 * c : 4 * c + 4, rows, cols]
            corners.append(
                np.stack(
                    [
                        cols * STRIDE - b[0],
                        rows * STRIDE - b[1],
                        cols * STRIDE + b[2],
                        rows * STRIDE + b[3],
                    ],
                    axis=1,
                )  # fmt: skip
            )
    return np.concatenate(corners)


def test_the_synthetic_grids_exercise_every_border_and_tie():
    """Guards the comparison above: the situations it claims to cover do occur."""
    xyxy = _decoded_corners()
    x1, y1, x2, y2 = xyxy.T
    assert (x2 == NET_W - 1).any() and ((x2 > NET_W - 1) & (x2 < NET_W)).any()
    assert (x2 == NET_W).any() and (x2 > NET_W).any()
    assert (y2 == NET_H - 1).any() and ((y2 > NET_H - 1) & (y2 < NET_H)).any()
    assert (y2 == NET_H).any() and (y2 > NET_H).any()
    assert (x1 == 0).any() and (x1 < 0).any() and (y1 == 0).any() and (y1 < 0).any()
    # boxes identical to another (IoU 1, often with equal coverage)
    assert len(np.unique(xyxy, axis=0)) < len(xyxy)
    # pairs exactly at IoU 0.5, without +1 (DeepStream) and with it (TAO), among one grid's boxes
    found = {0.0: 0, 1.0: 0}
    for seed in SEEDS:
        cov, bbox = synthetic_grid(seed)
        rows, cols = np.nonzero(cov[0] > 0)
        b = bbox[:4, rows, cols].astype(np.float64)
        boxes = np.stack(
            [cols * 16 - b[0], rows * 16 - b[1], cols * 16 + b[2], rows * 16 + b[3]], 1
        )
        for plus in found:
            w = boxes[:, 2] - boxes[:, 0] + plus
            h = boxes[:, 3] - boxes[:, 1] + plus
            iw = np.minimum(boxes[:, None, 2], boxes[None, :, 2])
            iw = iw - np.maximum(boxes[:, None, 0], boxes[None, :, 0]) + plus
            ih = np.minimum(boxes[:, None, 3], boxes[None, :, 3])
            ih = ih - np.maximum(boxes[:, None, 1], boxes[None, :, 1]) + plus
            inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
            union = (w * h)[:, None] + (w * h)[None, :] - inter
            found[plus] += int((inter * 2 == union).sum())
    assert found[0.0] > 0 and found[1.0] > 0, found


@pytest.mark.parametrize("compat, method", COMBOS)
def test_an_empty_grid_gives_no_boxes(compat, method):
    per, dec = synthetic_settings(compat, method)
    cov = np.zeros((3, GRID_H, GRID_W), np.float32)
    bbox = np.zeros((12, GRID_H, GRID_W), np.float32)
    expected, actual = run_both(compat, per, dec, cov, bbox, (NET_W, NET_H))
    assert expected == [] and actual == []


def one_box_grid(coverage=1.0, box=(40.0, 30.0, 90.0, 110.0), cells=((3, 4),)):
    cov = np.zeros((1, GRID_H, GRID_W), np.float32)
    bbox = np.zeros((4, GRID_H, GRID_W), np.float32)
    for i, j in cells:
        cov[0, i, j] = coverage
        gx, gy = float(j * STRIDE), float(i * STRIDE)
        bbox[:, i, j] = [gx - box[0], gy - box[1], box[2] - gx, box[3] - gy]
    return cov, bbox


@pytest.mark.parametrize("compat, method", COMBOS)
def test_one_box_comes_back_as_itself(compat, method):
    per, dec = synthetic_settings(compat, method, min_boxes=1, post_threshold=0.5)
    cov, bbox = one_box_grid()
    expected, actual = run_both(compat, per[:1], dec, cov, bbox, (NET_W, NET_H))
    assert compare.difference(expected, actual)[0] is None
    assert [a[1:] for a in actual] == [(1.0, 40.0, 30.0, 90.0, 110.0)]


@pytest.mark.parametrize(
    "compat, min_boxes, cells, coverage, found",
    [
        # DeepStream: a seed needs min_boxes boxes within eps, itself included
        ("deepstream", 3, ((3, 4), (3, 5)), 1.0, []),
        ("deepstream", 2, ((3, 4), (3, 5)), 1.0, [1.0]),
        # TAO: a core box needs its neighbours' coverage (itself included) to sum to min_boxes
        ("tao", 2, ((3, 4),), 1.0, []),
        ("tao", 2, ((3, 4), (3, 5)), 1.0, [2.0]),
        ("tao", 2, ((3, 4), (3, 5), (4, 4)), 0.5, []),
        ("tao", 2, ((3, 4), (3, 5), (4, 4), (4, 5)), 0.5, [2.0]),
    ],
)
def test_min_samples_edge(compat, min_boxes, cells, coverage, found):
    per, dec = synthetic_settings(compat, "dbscan", min_boxes=min_boxes, post_threshold=0.0)
    cov, bbox = one_box_grid(coverage, cells=cells)
    expected, actual = run_both(compat, per[:1], dec, cov, bbox, (NET_W, NET_H))
    assert compare.difference(expected, actual)[0] is None
    assert [a[1] for a in actual] == found


# -- every frame of vtest.avi -----------------------------------------------------------------


@pytest.fixture(scope="module")
def vtest():
    from tests.parity_refs import vtest_outputs

    try:
        return vtest_outputs.load()
    except Exception as e:  # noqa: BLE001 (the reason is reported in the skip)
        pytest.skip(f"vtest.avi could not be fetched or run (tools/fetch_vtest.sh): {e}")


def vtest_frames(count):
    """Every frame on Python 3.11+, every 15th elsewhere (the py36/py38 runs stay short)."""
    return range(count) if sys.version_info >= (3, 11) else range(0, count, 15)


@pytest.mark.parametrize("compat, method", COMBOS)
def test_every_vtest_frame_gives_the_references_boxes(vtest, compat, method):
    cov, bbox, sizes = vtest
    assert len(cov) == 795  # vtest.avi's frame count
    per, dec = settings.settings(compat, method)
    post = settings.edged_postprocessor(compat, method)
    frames = vtest_frames(len(cov))
    failures, boxes, worst = [], 0, 0.0
    for i in frames:
        src_w, src_h = (int(v) for v in sizes[i])
        expected = REFERENCES[compat].postprocess(cov[i], bbox[i], src_w, src_h, 960, 544, per, dec)
        actual = compare.as_rows(post(cov[i], bbox[i], src_w, src_h, 960, 544))
        reason, px = compare.difference(expected, actual)
        boxes += len(expected)
        if reason:
            failures.append(f"frame {i}: {reason}")
        else:
            worst = max(worst, px)
    identical = len(frames) - len(failures)
    assert not failures, f"{identical}/{len(frames)} frames identical; {failures[:3]}"
    assert boxes > 2 * len(frames)  # people are detected, the comparison is not vacuous
    assert worst <= compare.BOX_TOLERANCE


def test_taos_nms_prints_another_boxs_coverage_and_edged_reports_each_boxs_own(vtest):
    """tao_deploy's cluster_with_nms reads covs[keep] after get_keep_indices reordered covs in
    place; edged reports the coverage of the box itself (docs/parity.md)."""
    cov, bbox, sizes = vtest
    per, dec = settings.settings("tao", "nms")
    post = settings.edged_postprocessor("tao", "nms")
    src_w, src_h = (int(v) for v in sizes[0])
    own = tao.postprocess(cov[0], bbox[0], src_w, src_h, 960, 544, per, dec)
    printed = tao.postprocess(cov[0], bbox[0], src_w, src_h, 960, 544, per, dec, printed=True)
    assert [o[2:] for o in own] == [p[2:] for p in printed]
    assert any(abs(o[1] - p[1]) > 1e-4 for o, p in zip(own, printed))
    actual = compare.as_rows(post(cov[0], bbox[0], src_w, src_h, 960, 544))
    assert compare.difference(own, actual)[0] is None
    assert compare.difference(printed, actual)[0] is not None


# -- the documented settings ------------------------------------------------------------------

RELEVANT = {
    ("deepstream", "nms"): ("threshold", "iou_threshold", "post_threshold", "top_k"),
    ("deepstream", "dbscan"): (
        "threshold",
        "eps",
        "min_boxes",
        "min_score",
        "post_threshold",
        "top_k",
    ),  # fmt: skip
    ("tao", "nms"): ("threshold", "iou_threshold", "post_threshold"),
    ("tao", "dbscan"): ("threshold", "eps", "min_boxes", "min_cluster_height", "post_threshold"),
}


def documented_blocks():
    import os
    import re

    import yaml

    with open(os.path.join(compare.REPO, "docs", "parity.md")) as f:
        text = f.read()
    blocks = {}
    for body in re.findall(r"```yaml\n(.*?)```", text, re.S):
        name = body.splitlines()[0].lstrip("# ").strip()
        blocks[tuple(name.split("/"))] = yaml.safe_load(body)
    return blocks


@pytest.mark.parametrize("compat, method", COMBOS)
def test_the_settings_in_docs_parity_md_are_the_ones_compared(compat, method):
    from edged.config import build_config
    from edged.tasks.detectnet import class_settings

    detection = documented_blocks()[(compat, method)]
    raw = {"path": "peoplenet.onnx", "class_names": list(LABELS), "detection": detection}
    model = build_config({"models": {"det": raw}}).models["det"]
    resolved = class_settings(model, LABELS)
    per, dec = settings.settings(compat, method)

    assert model.detection.compat == compat
    assert (model.detection.min_width, model.detection.min_height) == (dec["min_w"], dec["min_h"])
    for got, want in zip(resolved, per):
        assert got.clustering == want["method"]
        for key in RELEVANT[(compat, method)]:
            assert getattr(got, key) == pytest.approx(want[key]), key


def test_the_schema_offers_exactly_the_registered_references():
    from edged.config import schema
    from edged.tasks.compat import DEFAULT_COMPAT, names

    compat = schema()["definitions"]["detection"]["properties"]["compat"]
    assert sorted(compat["enum"]) == names() == ["deepstream", "tao"]
    assert compat["default"] == DEFAULT_COMPAT
