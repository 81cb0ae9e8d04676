"""Classification: the numpy reference pre-processing, softmax/top-k, labels, and a real ORT run."""

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
from edged.tasks.labels import load_labels, parse_labels
from edged.tasks.loader import load_task
from edged.tasks.preprocess import normalisation_terms, preprocess_image

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
    a, b = normalisation_terms(1 / 255.0, IMAGENET_MEAN, IMAGENET_STD)
    ours = preprocess_image(bgr, 60, 40, True, a, b, "nearest")  # exact 2x upscale
    ref = reference_preprocess(bgr, 60, 40, IMAGENET_MEAN, IMAGENET_STD)
    assert ours.shape == (3, 40, 60) and ours.dtype == np.float32 and ours.flags.c_contiguous
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_preprocess_is_a_whole_frame_stretch_not_a_crop():
    bgr = np.zeros((100, 400, 3), np.uint8)
    bgr[:, :100] = (0, 0, 255)  # left quarter red (BGR)
    a, b = normalisation_terms(1 / 255.0, (0, 0, 0), (1, 1, 1))
    out = preprocess_image(bgr, 224, 224, True, a, b, "nearest")
    assert np.allclose(out[0, :, :56], 1.0)  # red channel first (RGB), the left quarter
    assert np.allclose(out[0, :, 56:], 0.0)


def test_bgr_models_keep_opencv_channel_order():
    bgr = np.zeros((8, 8, 3), np.uint8)
    bgr[..., 0] = 255  # blue
    a, b = normalisation_terms(1 / 255.0, (0, 0, 0), (1, 1, 1))
    out = preprocess_image(bgr, 8, 8, False, a, b, "nearest")
    assert np.allclose(out[0], 1.0) and np.allclose(out[2], 0.0)


def test_grayscale_and_bgra_inputs_are_accepted():
    a, b = normalisation_terms(1.0, (0, 0, 0), (1, 1, 1))
    gray = np.full((4, 4), 7, np.uint8)
    assert np.allclose(preprocess_image(gray, 4, 4, True, a, b, "nearest"), 7)
    bgra = np.full((4, 4, 4), 9, np.uint8)
    assert preprocess_image(bgra, 4, 4, True, a, b, "linear").shape == (3, 4, 4)


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
    assert parse_labels("n01440764 tench, Tinca tinca\ncat\n\n") == ["tench, Tinca tinca", "cat"]
    path = tmp_path / "labels.txt"
    path.write_text("zero\none\n")
    assert load_labels(str(path)) == ["zero", "one"]
    with pytest.raises(ModelError, match="labels file not found"):
        load_labels(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ModelError, match="has no labels"):
        load_labels(str(tmp_path / "empty.txt"))


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
