"""Classification: the numpy reference pre-processing, softmax/top-k, labels, and a real ORT run."""

import struct

import numpy as np
import pytest

from edged.config import build_config
from edged.errors import ModelContractError, ModelError
from edged.tasks.classification import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    classify,
    looks_like_probabilities,
    softmax,
    top_k,
)
from edged.tasks.contract import InputContract
from edged.tasks.labels import load_labels, parse_labels
from edged.tasks.loader import load_task
from edged.tasks.preprocess import nearest_indices, preprocess_image, resize_nearest

from . import onnx_models


def reference_preprocess(bgr, width, height, mean, std):
    """jetson-inference's formula, written out per pixel: nearest stretch, RGB, (x/255-mean)/std."""
    src_h, src_w = bgr.shape[:2]
    out = np.zeros((3, height, width), np.float64)
    for y in range(height):
        for x in range(width):
            sy = min(int(np.floor(y * src_h / height)), src_h - 1)
            sx = min(int(np.floor(x * src_w / width)), src_w - 1)
            b, g, r = bgr[sy, sx]
            for c, v in enumerate((r, g, b)):
                out[c, y, x] = (v / 255.0 - mean[c]) / std[c]
    return out


def test_preprocess_matches_the_per_pixel_formula():
    rng = np.random.RandomState(0)
    bgr = rng.randint(0, 256, size=(20, 30, 3)).astype(np.uint8)
    contract = InputContract(60, 40, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize="nearest")
    ours = preprocess_image(bgr, contract)  # exact 2x upscale
    ref = reference_preprocess(bgr, 60, 40, IMAGENET_MEAN, IMAGENET_STD)
    assert ours.shape == (3, 40, 60) and ours.dtype == np.float32 and ours.flags.c_contiguous
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_preprocess_is_a_whole_frame_stretch_not_a_crop():
    bgr = np.zeros((100, 400, 3), np.uint8)
    bgr[:, :100] = (0, 0, 255)  # left quarter red (BGR)
    out = preprocess_image(bgr, InputContract(224, 224, resize="nearest"))
    assert np.allclose(out[0, :, :56], 1.0)  # red channel first (RGB), the left quarter
    assert np.allclose(out[0, :, 56:], 0.0)


def test_bgr_models_keep_opencv_channel_order():
    bgr = np.zeros((8, 8, 3), np.uint8)
    bgr[..., 0] = 255  # blue
    out = preprocess_image(bgr, InputContract(8, 8, channel_order="bgr", resize="nearest"))
    assert np.allclose(out[0], 1.0) and np.allclose(out[2], 0.0)


def test_grayscale_and_bgra_inputs_are_accepted():
    gray = np.full((4, 4), 7, np.uint8)
    assert np.allclose(preprocess_image(gray, InputContract(4, 4, scale=1.0, resize="nearest")), 7)
    bgra = np.full((4, 4, 4), 9, np.uint8)
    assert preprocess_image(bgra, InputContract(4, 4)).shape == (3, 4, 4)


def test_probabilities_are_recognised():
    assert looks_like_probabilities(np.array([0.1, 0.7, 0.2], np.float32))
    assert not looks_like_probabilities(np.array([2.0, -1.0, 0.5], np.float32))
    assert not looks_like_probabilities(np.array([0.5, 0.5, 0.5], np.float32))


def test_softmax_only_when_outputs_are_not_probabilities():
    labels = ["a", "b", "c"]
    probs = np.array([0.2, 0.5, 0.3], np.float32)
    auto = classify(probs, labels, 3, 0.0, "auto")
    assert [c.label for c in auto] == ["b", "c", "a"]
    assert auto[0].confidence == pytest.approx(0.5)
    logits = np.array([1.0, 3.0, 2.0], np.float32)
    expected = softmax(logits)
    auto = classify(logits, labels, 1, 0.0, "auto")
    assert auto[0].label == "b" and auto[0].confidence == pytest.approx(float(expected[1]))
    never = classify(logits, labels, 1, 0.0, "never")
    assert never[0].confidence == pytest.approx(3.0)
    always = classify(probs, labels, 1, 0.0, "always")
    assert always[0].confidence == pytest.approx(float(softmax(probs)[1]))


def test_softmax_is_stable_for_large_logits():
    out = softmax(np.array([1000.0, 1001.0], np.float32))
    assert np.all(np.isfinite(out)) and out.sum() == pytest.approx(1.0)


def test_top_k_orders_and_thresholds():
    p = np.array([0.05, 0.6, 0.3, 0.05], np.float32)
    assert top_k(p, 2, 0.0) == [1, 2]
    assert top_k(p, 4, 0.1) == [1, 2]
    assert top_k(p, 4, 0.0) == [1, 2, 0, 3]  # ties keep the lower index first


def test_labels_follow_jetson_inference_synset_rule(tmp_path):
    assert parse_labels("n01440764 tench, Tinca tinca\ncat\n") == ["tench, Tinca tinca", "cat"]
    path = tmp_path / "labels.txt"
    path.write_text("zero\none\n")
    assert load_labels(str(path)) == ["zero", "one"]
    with pytest.raises(ModelError, match="labels file not found"):
        load_labels(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ModelError, match="has no labels"):
        load_labels(str(tmp_path / "empty.txt"))


def test_labels_count_blank_lines_as_classes_like_jetson_inference():
    # imageNet::LoadClassInfo: every line is a class, a blank one included; 'n' + any 8
    # characters + a space at index 9 is a synset whose description follows; no trimming
    text = "n01440764 tench\n\nnot-a-synset line\nn0144076 short id\nnabcdefgh x\n  padded \n\n"
    assert parse_labels(text) == [
        "tench", "", "not-a-synset line", "n0144076 short id", "x", "  padded ", "",
    ]  # fmt: skip
    assert parse_labels("n01440764 \n") == [""]  # a synset line with an empty description
    assert parse_labels("n01440764\n") == ["n01440764"]  # no space at index 9: a plain label
    assert parse_labels("a\r\nb\r\n") == ["a", "b"]  # a file written on Windows
    assert parse_labels("a\nb") == ["a", "b"]  # no line break after the last line


def test_a_blank_line_that_makes_the_count_wrong_is_named(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("zero\none\n\n")  # 3 classes for jetson-inference, the model has 2
    with pytest.raises(ModelContractError, match=r"2 classes but 3 labels were given \(1 of them"):
        load_task(model_config(tmp_path, onnx_models.classifier(2), labels=str(labels)))


def jetson_nearest_reference(src, dst):
    """jetson-inference's source index per output index, in float32 via struct (not numpy)."""

    def f32(value):
        return struct.unpack("f", struct.pack("f", value))[0]

    scale = f32(f32(src) / f32(dst))  # exact quotient of two float32s, rounded once
    return [int(f32(f32(i) * scale)) for i in range(dst)]  # product rounded once, truncated


def test_nearest_indices_are_jetson_inference_rounding_on_many_size_pairs():
    rng = np.random.RandomState(15)
    pairs = [(s, d) for s in range(1, 40) for d in range(1, 40)]
    pairs += [(1920, 224), (1080, 224), (1280, 224), (720, 224), (224, 224), (640, 299)]
    pairs += [(3840, 960), (2160, 544), (4095, 4097), (7, 4096), (65535, 257), (999, 1001)]
    pairs += [tuple(int(v) for v in rng.randint(1, 5000, 2)) for _ in range(300)]
    for src, dst in pairs:
        ref = jetson_nearest_reference(src, dst)
        assert max(ref) < src, (src, dst)  # the formula itself stays inside the image
        assert nearest_indices(src, dst).tolist() == ref, (src, dst)


def test_nearest_resize_differs_from_opencv_where_jetson_inference_does():
    # the rows/columns where OpenCV's INTER_NEAREST picks a neighbouring pixel are exactly
    # where this resize must not follow it
    import cv2

    rng = np.random.RandomState(2)
    src = rng.randint(0, 256, size=(1080, 1920, 3)).astype(np.uint8)
    ours = resize_nearest(src, 224, 224)
    expected = src[np.array(jetson_nearest_reference(1080, 224))[:, None],
                   np.array(jetson_nearest_reference(1920, 224))]  # fmt: skip
    assert np.array_equal(ours, expected)
    opencv = cv2.resize(src, (224, 224), interpolation=cv2.INTER_NEAREST)
    assert not np.array_equal(opencv, expected)


def test_nearest_preprocess_is_bit_identical_to_the_jetson_formula_on_odd_sizes():
    rng = np.random.RandomState(3)
    for (src_w, src_h), (w, h) in [((641, 479), (224, 224)), ((33, 17), (61, 13)),
                                   ((1919, 1081), (299, 227))]:  # fmt: skip
        bgr = rng.randint(0, 256, size=(src_h, src_w, 3)).astype(np.uint8)
        contract = InputContract(w, h, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize="nearest")
        ours = preprocess_image(bgr, contract)
        rows = np.array(jetson_nearest_reference(src_h, h))
        cols = np.array(jetson_nearest_reference(src_w, w))
        picked = np.ascontiguousarray(bgr[rows[:, None], cols])  # already the network size
        assert np.array_equal(ours, preprocess_image(picked, contract))  # same normalisation
        a, b = contract.affine()
        rgb = picked[..., ::-1].transpose(2, 0, 1).astype(np.float64)
        np.testing.assert_allclose(ours, rgb * a[:, None, None] + b[:, None, None], atol=1e-5)


def test_nearest_resize_of_images_wider_than_opencv_maps_hold():
    wide = np.random.RandomState(4).randint(0, 256, size=(3, 40000, 3)).astype(np.uint8)
    expected = wide[np.array(jetson_nearest_reference(3, 5))[:, None],
                    np.array(jetson_nearest_reference(40000, 7))]  # fmt: skip
    assert np.array_equal(resize_nearest(wide, 7, 5), expected)


def test_nearest_indices_are_computed_once_per_size_pair():
    assert nearest_indices(1920, 224) is nearest_indices(1920, 224)
    assert not nearest_indices(1920, 224).flags.writeable


def model_config(tmp_path, data, **extra):
    path = onnx_models.write(str(tmp_path / "m.onnx"), data)
    raw = {"path": path}
    raw.update(extra)
    return build_config({"models": {"m": raw}}).models["m"]


def test_a_real_onnx_classifier_runs_end_to_end(tmp_path):
    config = model_config(tmp_path, onnx_models.classifier(3), class_names=["r", "g", "b"])
    task = load_task(config)
    assert task.kind == "classification"
    assert (task.width, task.height) == (224, 224)
    blue = np.zeros((50, 70, 3), np.uint8)
    blue[..., 0] = 255  # BGR blue -> RGB channel 2 -> class 2 ("b") scores highest
    (result,) = task.run([blue])
    assert result[0].label == "b"
    assert result[0].to_dict()["class_id"] == 2


def test_logit_models_are_softmaxed(tmp_path):
    config = model_config(tmp_path, onnx_models.classifier(3, softmax=False), task="classification")
    task = load_task(config)
    (result,) = task.run([np.full((10, 10, 3), 200, np.uint8)])
    assert 0.0 < result[0].confidence <= 1.0
    assert task.labels == ["class_0", "class_1", "class_2"]


def test_label_count_mismatch_names_the_model(tmp_path):
    config = model_config(tmp_path, onnx_models.classifier(3), class_names=["a", "b"])
    with pytest.raises(ModelContractError, match="has 3 classes but 2 labels"):
        load_task(config)


def test_wrong_input_rank_is_one_clear_error(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Softmax", ["input_0"], ["output_0"], axis=1)],
        "rank2",
        [helper.make_tensor_value_info("input_0", TensorProto.FLOAT, [1, 10])],
        [helper.make_tensor_value_info("output_0", TensorProto.FLOAT, [1, 10])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 6
    config = model_config(tmp_path, model.SerializeToString(), task="classification")
    with pytest.raises(
        ModelContractError, match=r"m.onnx: input 'input_0' has shape 1x10; expected N x 3"
    ):
        load_task(config)


def test_explicit_tensor_names_must_exist(tmp_path):
    config = model_config(
        tmp_path, onnx_models.classifier(3), task="classification",
        classification={"output": "prob"},
    )  # fmt: skip
    with pytest.raises(ModelContractError, match="no output tensor named 'prob'"):
        load_task(config)
