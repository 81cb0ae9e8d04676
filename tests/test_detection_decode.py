"""DetectNet_v2 grid decoding against a deliberately plain per-cell implementation of the formula
(with each compat's threshold, clamp and scale; docs/parity.md), plus the post-processor's
contract and the pre-processing."""

import numpy as np
import pytest

from edged.backends.base import TensorSpec, find_tensor
from edged.errors import ConfigError, ModelContractError
from edged.tasks.detection import (
    BBOX_ALIASES,
    COVERAGE_ALIASES,
    INPUT_ALIASES,
    ClusterParams,
    DecodeParams,
    Detection,
    DetectNetV2Postprocessor,
    peoplenet_defaults,
)

# -- the reference: one Python loop over every cell, the formula as written ---------------------


def reference_decode(cov, bbox, thresholds, params, net_w, net_h, src_w, src_h, compat):
    """List of (class, score, x1, y1, x2, y2), unclustered, in float64.

    deepstream: coverage >= threshold, a corner >= net becomes net - 1 and one < 0 becomes 0,
    then scaled, then the min size in source pixels. tao: coverage > threshold, clamped to
    [0, net] (x2 not below x1), then scaled.
    """
    out = []
    classes, rows, cols = cov.shape
    for c in range(classes):
        for i in range(rows):
            for j in range(cols):
                score = np.float32(cov[c, i, j])
                t = np.float32(thresholds[c])
                if not (score >= t if compat == "deepstream" else score > t):
                    continue
                cx = params.stride * j + params.offset
                cy = params.stride * i + params.offset
                n = params.bbox_norm
                x1 = cx - n * float(bbox[4 * c + 0, i, j])
                y1 = cy - n * float(bbox[4 * c + 1, i, j])
                x2 = cx + n * float(bbox[4 * c + 2, i, j])
                y2 = cy + n * float(bbox[4 * c + 3, i, j])
                if compat == "deepstream":
                    x1, x2 = [net_w - 1.0 if v >= net_w else v for v in (x1, x2)]
                    y1, y2 = [net_h - 1.0 if v >= net_h else v for v in (y1, y2)]
                    x1, y1, x2, y2 = [max(v, 0.0) for v in (x1, y1, x2, y2)]
                    if x2 < x1 or y2 < y1:
                        continue
                else:
                    x1, y1 = min(max(x1, 0.0), net_w), min(max(y1, 0.0), net_h)
                    x2, y2 = max(min(x2, net_w), x1), max(min(y2, net_h), y1)
                x1, x2 = x1 * src_w / net_w, x2 * src_w / net_w
                y1, y2 = y1 * src_h / net_h, y2 * src_h / net_h
                if x2 - x1 < params.min_width or y2 - y1 < params.min_height:
                    continue
                out.append((c, float(score), x1, y1, x2, y2))
    return out


def random_outputs(seed, classes, rows, cols):
    rng = np.random.RandomState(seed)
    cov = rng.uniform(0.0, 1.0, (classes, rows, cols)).astype(np.float32)
    # mostly positive extents of a few cells, some negative (degenerate boxes), some huge (clamped)
    bbox = rng.normal(1.0, 1.5, (4 * classes, rows, cols)).astype(np.float32)
    return cov, bbox


def decode_all(cov, bbox, params, net_w, net_h, src_w, src_h, compat="deepstream"):
    """Every candidate, unclustered, as (class, score, x1, y1, x2, y2) best first."""
    labels = [f"c{i}" for i in range(cov.shape[0])]
    post = DetectNetV2Postprocessor(labels, params, [ClusterParams("none", top_k=-1)], compat)
    found = post(cov, bbox, src_w, src_h, net_w, net_h)
    return [(d.class_id, d.confidence) + d.bbox for d in found]


def assert_same(found, expected):
    expected = sorted(expected, key=lambda e: -e[1])  # stable: (class, row, column) breaks ties
    assert len(found) == len(expected)
    if not expected:
        return
    assert [f[0] for f in found] == [e[0] for e in expected]
    assert [f[1] for f in found] == [e[1] for e in expected]
    np.testing.assert_allclose([f[2:] for f in found], [e[2:] for e in expected], atol=1e-3)


CASES = [
    # classes, (net_w, net_h), (src_w, src_h), thresholds
    pytest.param(1, (960, 544), (960, 544), (0.5,), id="N1-same-size"),
    pytest.param(3, (960, 544), (768, 576), (0.4, 0.2, 0.2), id="N3-peoplenet-vtest"),
    pytest.param(4, (480, 320), (1920, 1080), (0.3, 0.6, 0.1, 0.9), id="N4-upscale"),
    pytest.param(4, (320, 480), (333, 250), (0.5,), id="N4-portrait-net-one-threshold"),
]


@pytest.mark.parametrize("compat", ["deepstream", "tao"])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("classes, net, src, thresholds", CASES)
def test_decoding_matches_the_per_cell_formula(seed, classes, net, src, thresholds, compat):
    params = DecodeParams(thresholds=thresholds, min_width=0.0, min_height=0.0)
    cov, bbox = random_outputs(seed, classes, net[1] // 16, net[0] // 16)
    per_class = thresholds * classes if len(thresholds) == 1 else thresholds

    got = decode_all(cov, bbox, params, net[0], net[1], src[0], src[1], compat)

    assert_same(got, reference_decode(cov, bbox, per_class, params, *net, *src, compat))
    assert len(got) > 10  # the case really exercises the formula


@pytest.mark.parametrize("compat", ["deepstream", "tao"])
def test_decoding_honours_stride_normaliser_offset_and_min_size(compat):
    params = DecodeParams(
        stride=8, bbox_norm=20.0, offset=0.0, thresholds=(0.3, 0.5), min_width=10, min_height=2
    )
    cov, bbox = random_outputs(7, 2, 23, 31)  # non-square, odd grid

    got = decode_all(cov, bbox, params, 248, 184, 640, 480, compat)

    assert_same(got, reference_decode(cov, bbox, (0.3, 0.5), params, 248, 184, 640, 480, compat))


def test_random_case_drops_and_clamps_boxes():
    """Guards the random cases above: they contain dropped, clamped and plain boxes."""
    cov, bbox = random_outputs(0, 3, 34, 60)
    params = DecodeParams(thresholds=(0.0,), min_width=0.0, min_height=0.0)
    got = np.array([g[2:] for g in decode_all(cov, bbox, params, 960, 544, 768, 576)])
    assert 0 < len(got) < 3 * 34 * 60  # degenerate boxes dropped
    right, bottom = np.float32(959 * 768 / 960), np.float32(543 * 576 / 544)
    assert (got[:, 0] == 0).any() and np.isclose(got[:, 2], right, rtol=0, atol=1e-3).any()
    assert (got[:, 1] == 0).any() and np.isclose(got[:, 3], bottom, rtol=0, atol=1e-3).any()


def test_threshold_is_inclusive_for_deepstream_and_strict_for_tao():
    cov = np.array([[[0.5, np.nextafter(np.float32(0.5), np.float32(1))]]], dtype=np.float32)
    bbox = np.ones((4, 1, 2), dtype=np.float32)
    params = DecodeParams(thresholds=(0.5,), min_width=0, min_height=0)
    assert len(decode_all(cov, bbox, params, 32, 16, 32, 16, "deepstream")) == 2
    assert len(decode_all(cov, bbox, params, 32, 16, 32, 16, "tao")) == 1


def test_deepstream_clamps_to_the_last_network_pixel_and_tao_to_the_edge():
    cov = np.ones((1, 1, 1), dtype=np.float32)
    bbox = np.full((4, 1, 1), 100.0, dtype=np.float32)  # far outside on every side
    params = DecodeParams(min_width=0, min_height=0)
    assert decode_all(cov, bbox, params, 16, 16, 640, 480)[0][2:] == (0.0, 0.0, 600.0, 450.0)
    assert decode_all(cov, bbox, params, 16, 16, 640, 480, "tao")[0][2:] == (0, 0, 640, 480)


def test_one_cell_decodes_to_the_documented_numbers():
    # PeopleNet cell row 2, column 3 of class 1: cx = 16*3 + 0.5 = 48.5, cy = 32.5
    cov = np.zeros((3, 34, 60), dtype=np.float32)
    bbox = np.zeros((12, 34, 60), dtype=np.float32)
    cov[1, 2, 3] = 0.9
    bbox[4:8, 2, 3] = [0.5, 0.25, 1.0, 2.0]
    got = decode_all(cov, bbox, DecodeParams(), 960, 544, 960, 544)
    assert [g[0] for g in got] == [1]
    np.testing.assert_allclose(got[0][2:], [48.5 - 17.5, 32.5 - 8.75, 48.5 + 35, 32.5 + 70])


@pytest.mark.parametrize("compat", ["deepstream", "tao"])
def test_nan_outputs_never_become_detections(compat):
    cov = np.array([[[np.nan, 0.9]]], dtype=np.float32)
    bbox = np.ones((4, 1, 2), dtype=np.float32)
    bbox[0, 0, 1] = np.nan
    assert decode_all(cov, bbox, DecodeParams(), 32, 16, 32, 16, compat) == []


def test_mismatched_output_shapes_are_a_contract_error():
    cov = np.zeros((3, 34, 60), np.float32)
    with pytest.raises(ModelContractError, match=r"bbox output has shape \[8, 34, 60\]"):
        decode_all(cov, np.zeros((8, 34, 60), np.float32), DecodeParams(), 960, 544, 960, 544)


def test_too_few_thresholds_is_a_contract_error():
    cov, bbox = random_outputs(0, 3, 4, 4)
    with pytest.raises(ModelContractError, match="thresholds are given for 2 classes"):
        decode_all(cov, bbox, DecodeParams(thresholds=(0.1, 0.2)), 64, 64, 64, 64)


def test_an_unknown_compat_is_a_config_error():
    with pytest.raises(ConfigError, match="detection.compat must be one of deepstream, tao"):
        DetectNetV2Postprocessor(["a"], DecodeParams(), [ClusterParams()], "jetson")


# -- the post-processor -----------------------------------------------------------------------


def unclustered(labels, thresholds):
    return DetectNetV2Postprocessor(
        labels, DecodeParams(thresholds=thresholds), [ClusterParams(method="none", top_k=-1)]
    )


@pytest.mark.parametrize("classes", [1, 3, 4])
def test_postprocessor_without_clustering_returns_every_decoded_box_best_first(classes):
    labels = [f"c{i}" for i in range(classes)]
    thresholds = tuple(0.5 + 0.1 * i for i in range(classes))
    cov, bbox = random_outputs(classes, classes, 34, 60)

    detections = unclustered(labels, thresholds)(cov, bbox, 768, 576, 960, 544)

    params = DecodeParams()
    expected = reference_decode(cov, bbox, thresholds, params, 960, 544, 768, 576, "deepstream")
    expected.sort(key=lambda e: -e[1])
    assert [(d.class_id, d.label) for d in detections] == [(e[0], labels[e[0]]) for e in expected]
    np.testing.assert_allclose([d.confidence for d in detections], [e[1] for e in expected])
    np.testing.assert_allclose([d.bbox for d in detections], [e[2:] for e in expected], atol=1e-3)


def test_dynamic_batch_each_image_equals_running_it_alone():
    decode, clustering = peoplenet_defaults(3)
    post = DetectNetV2Postprocessor(["person", "bag", "face"], decode, clustering)
    cov0, bbox0 = random_outputs(10, 3, 34, 60)
    cov1, bbox1 = random_outputs(11, 3, 34, 60)
    batch_cov, batch_bbox = np.stack([cov0, cov1]), np.stack([bbox0, bbox1])  # [2, C, H, W]

    from_batch = [post(batch_cov[i], batch_bbox[i], 768, 576, 960, 544) for i in range(2)]
    alone = [post(cov0, bbox0, 768, 576, 960, 544), post(cov1, bbox1, 768, 576, 960, 544)]
    with_batch_dim = [
        post(batch_cov[i : i + 1], batch_bbox[i : i + 1], 768, 576, 960, 544) for i in range(2)
    ]

    assert from_batch == alone == with_batch_dim
    assert from_batch[0] != from_batch[1]
    assert all(0 < len(d) <= 3 * 20 for d in from_batch)  # NMS top-k 20 per class


def test_a_batch_of_two_in_one_call_is_refused():
    decode, clustering = peoplenet_defaults(3)
    post = DetectNetV2Postprocessor(["person", "bag", "face"], decode, clustering)
    cov, bbox = random_outputs(0, 3, 34, 60)
    with pytest.raises(ModelContractError, match="batch of 2"):
        post(np.stack([cov, cov]), np.stack([bbox, bbox]), 768, 576, 960, 544)


def test_classes_beyond_the_labels_are_ignored_like_deepstream_num_detected_classes():
    cov, bbox = random_outputs(3, 3, 34, 60)
    person_only = unclustered(["person"], (0.5,))(cov, bbox, 960, 544, 960, 544)
    all_three = unclustered(["person", "bag", "face"], (0.5,))(cov, bbox, 960, 544, 960, 544)
    assert person_only == [d for d in all_three if d.class_id == 0]
    assert person_only


def test_more_labels_than_model_classes_is_a_contract_error():
    cov, bbox = random_outputs(0, 1, 34, 60)
    with pytest.raises(ModelContractError, match="outputs 1 classes but 3 labels"):
        unclustered(["person", "bag", "face"], (0.5,))(cov, bbox, 960, 544, 960, 544)


def test_postprocessor_configuration_errors_are_config_errors():
    with pytest.raises(ConfigError, match="2 clustering settings for 3 classes"):
        DetectNetV2Postprocessor(["a", "b", "c"], DecodeParams(), [ClusterParams()] * 2)
    with pytest.raises(ConfigError, match="at least one label"):
        DetectNetV2Postprocessor([], DecodeParams(), [ClusterParams()])
    with pytest.raises(ModelContractError, match="thresholds are given for 2 classes"):
        DetectNetV2Postprocessor(
            ["a", "b", "c"], DecodeParams(thresholds=(0.1, 0.2)), [ClusterParams()]
        )
    with pytest.raises(ConfigError, match="stride"):
        DecodeParams(stride=0)
    with pytest.raises(ConfigError, match="thresholds"):
        DecodeParams(thresholds=(float("nan"),))


def test_peoplenet_defaults_follow_deepstreams_current_config():
    decode, clustering = peoplenet_defaults(3)
    assert decode.class_thresholds(3).tolist() == pytest.approx([0.4, 0.2, 0.2])
    assert (decode.stride, decode.bbox_norm, decode.offset) == (16, 35.0, 0.5)
    assert len(clustering) == 3
    assert all((c.method, c.iou_threshold, c.top_k) == ("nms", 0.5, 20) for c in clustering)


def test_default_threshold_is_deepstreams_pre_cluster_default():
    assert DecodeParams().class_thresholds(2).tolist() == pytest.approx([0.2, 0.2])


def test_detection_to_dict_is_json_ready_and_rounded():
    d = Detection(0, "person", 0.876543, (10.04, 20.06, 30.0, 40.56))
    out = d.to_dict()
    assert out == {
        "label": "person",
        "class_id": 0,
        "confidence": 0.8765,
        "bbox": [10.0, 20.1, 30.0, 40.6],
    }
    assert all(type(v) is float for v in out["bbox"])


def test_detection_values_are_plain_python_types():
    cov, bbox = random_outputs(0, 1, 34, 60)
    d = unclustered(["person"], (0.5,))(cov, bbox, 960, 544, 960, 544)[0]
    assert type(d.confidence) is float and type(d.class_id) is int
    assert all(type(v) is float for v in d.bbox)


# -- tensor names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "names",
    [
        ("input_1", "output_cov/Sigmoid", "output_bbox/BiasAdd"),  # .etlt / UFF
        ("input_1:0", "output_cov/Sigmoid:0", "output_bbox/BiasAdd:0"),  # NGC ONNX releases
        ("input_1", "conv2d_cov/Sigmoid", "conv2d_bbox"),  # PeopleNet v1
    ],
)
def test_every_alias_family_resolves_to_its_role(names):
    inp, cov, bbox = names
    outputs = [
        TensorSpec(bbox, [None, 12, 34, 60], np.float32),
        TensorSpec(cov, [None, 3, 34, 60], np.float32),
    ]
    assert (
        find_tensor(
            [TensorSpec(inp, [None, 3, 544, 960], np.float32)], INPUT_ALIASES, "input", "m"
        ).name
        == inp
    )
    assert find_tensor(outputs, COVERAGE_ALIASES, "coverage", "m").name == cov
    assert find_tensor(outputs, BBOX_ALIASES, "bbox", "m").name == bbox


# -- pre-processing ---------------------------------------------------------------------------
# The detection task uses the shared reference pre-processing with PeopleNet's terms: x/255, RGB.


def preprocess_detectnet(frame, width, height, interpolation):
    from edged.tasks.contract import InputContract
    from edged.tasks.preprocess import preprocess_image

    return preprocess_image(frame, InputContract(width, height, resize=interpolation))


def test_preprocess_is_stretch_resize_rgb_over_255_chw():
    import cv2

    rng = np.random.RandomState(0)
    frame = rng.randint(0, 256, (576, 768, 3)).astype(np.uint8)

    tensor = preprocess_detectnet(frame, 960, 544, "linear")

    # linear is OpenCV's bit-exact bilinear resize (edged/tasks/preprocess.py)
    resized = cv2.resize(frame, (960, 544), interpolation=cv2.INTER_LINEAR_EXACT)
    expected = (resized[:, :, ::-1].astype(np.float64) / 255.0).transpose(2, 0, 1)
    assert tensor.shape == (3, 544, 960) and tensor.dtype == np.float32
    assert tensor.flags["C_CONTIGUOUS"]
    # x * float32(1/255) is within one float32 ulp of x / 255
    np.testing.assert_allclose(tensor, expected, rtol=0, atol=1e-7)


def test_preprocess_puts_red_first():
    frame = np.zeros((4, 4, 3), np.uint8)
    frame[:, :, 2] = 255  # red in BGR
    tensor = preprocess_detectnet(frame, 4, 4, "nearest")
    assert np.allclose(tensor[0], 1.0) and tensor[1].max() == 0.0 and tensor[2].max() == 0.0


def test_preprocess_accepts_gray_and_bgra_frames():
    gray = np.full((10, 20), 51, np.uint8)
    bgra = np.zeros((10, 20, 4), np.uint8)
    bgra[:, :, 0] = 255  # blue
    assert np.allclose(preprocess_detectnet(gray, 8, 4, "area"), 0.2)
    out = preprocess_detectnet(bgra, 8, 4, "area")
    assert out.shape == (3, 4, 8) and np.allclose(out[2], 1.0) and out[0].max() == 0.0
