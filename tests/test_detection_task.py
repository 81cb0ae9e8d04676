"""The DetectNet_v2 task end to end on real ONNX models: tensor aliases, batches, class settings."""

import numpy as np
import pytest

from edged.config import build_config
from edged.errors import ConfigError, ModelContractError
from edged.tasks.detectnet import class_settings
from edged.tasks.loader import load_task

from . import onnx_models

NAME_FAMILIES = {
    "etlt": ("input_1", "output_cov/Sigmoid", "output_bbox/BiasAdd"),
    "onnx-release": ("input_1:0", "output_cov/Sigmoid:0", "output_bbox/BiasAdd:0"),
    "peoplenet-v1": ("input_1", "conv2d_cov/Sigmoid", "conv2d_bbox"),
}


def one_person_grids(classes=3, gh=34, gw=60):
    """Coverage 0.9 at cell (row 10, col 20) for class 0; box terms 1.0 -> a 70x70 px box."""
    cov = np.zeros((classes, gh, gw), np.float32)
    bbox = np.zeros((4 * classes, gh, gw), np.float32)
    cov[0, 10, 20] = 0.9
    bbox[0:4, 10, 20] = 1.0
    return cov, bbox


def load(tmp_path, model_bytes, **extra):
    path = onnx_models.write(str(tmp_path / "det.onnx"), model_bytes)
    raw = {"path": path, "class_names": ["person", "bag", "face"]}
    raw.update(extra)
    return load_task(build_config({"models": {"det": raw}}).models["det"])


@pytest.mark.parametrize("family", sorted(NAME_FAMILIES))
def test_every_alias_family_is_detected_and_decoded(tmp_path, family):
    cov, bbox = one_person_grids()
    task = load(tmp_path, onnx_models.detectnet(3, names=NAME_FAMILIES[family], cov=cov, bbox=bbox))
    assert task.kind == "detection"  # task: auto found the coverage and bbox outputs
    (detections,) = task.run([np.zeros((544, 960, 3), np.uint8)])
    assert len(detections) == 1
    d = detections[0]
    assert (d.label, d.class_id) == ("person", 0)
    assert d.confidence == pytest.approx(0.9)
    cx, cy = 16 * 20 + 0.5, 16 * 10 + 0.5
    assert d.bbox == pytest.approx((cx - 35, cy - 35, cx + 35, cy + 35))


def test_boxes_are_scaled_to_the_source_frame(tmp_path):
    cov, bbox = one_person_grids()
    task = load(tmp_path, onnx_models.detectnet(3, cov=cov, bbox=bbox))
    (detections,) = task.run([np.zeros((576, 768, 3), np.uint8)])  # vtest.avi's size
    cx, cy = 16 * 20 + 0.5, 16 * 10 + 0.5
    sx, sy = 768 / 960.0, 576 / 544.0
    expected = ((cx - 35) * sx, (cy - 35) * sy, (cx + 35) * sx, (cy + 35) * sy)
    assert detections[0].bbox == pytest.approx(expected, rel=1e-5)


def test_dynamic_batch_models_run_several_frames_in_one_call(tmp_path):
    cov, bbox = one_person_grids()
    task = load(tmp_path, onnx_models.detectnet(3, batch=None, cov=cov, bbox=bbox))
    assert task.batch_dim is None
    calls = []
    infer = task.backend.infer
    task.backend.infer = lambda feeds: calls.append(feeds) or infer(feeds)
    results = task.run([np.zeros((544, 960, 3), np.uint8)] * 3)
    assert len(calls) == 1 and next(iter(calls[0].values())).shape[0] == 3
    assert [len(r) for r in results] == [1, 1, 1]
    assert results[0] == results[2]


def test_person_threshold_is_0_4_and_others_0_2_by_default(tmp_path):
    cov, bbox = one_person_grids()
    cov[0, 10, 20] = 0.35  # below person's 0.4
    cov[1, 20, 40] = 0.35  # above bag's 0.2
    bbox[4:8, 20, 40] = 1.0
    task = load(tmp_path, onnx_models.detectnet(3, cov=cov, bbox=bbox))
    (detections,) = task.run([np.zeros((544, 960, 3), np.uint8)])
    assert [d.label for d in detections] == ["bag"]


def test_class_settings_resolve_label_then_default_then_builtin(tmp_path):
    config = build_config({"models": {"det": {
        "path": "x.onnx",
        "detection": {"classes": {
            "default": {"threshold": 0.3, "top_k": 5},
            "face": {"threshold": 0.9, "clustering": "dbscan"},
        }},
    }}}).models["det"]  # fmt: skip
    person, bag, face = class_settings(config, ["person", "bag", "face"])
    assert person.threshold == 0.3 and person.top_k == 5 and person.clustering == "nms"
    assert bag.threshold == 0.3 and bag.iou_threshold == 0.5
    assert face.threshold == 0.9 and face.clustering == "dbscan" and face.top_k == 5


def test_unknown_class_in_config_is_named(tmp_path):
    config = build_config({"models": {"det": {
        "path": "x.onnx", "detection": {"classes": {"persn": {"threshold": 0.5}}},
    }}}).models["det"]  # fmt: skip
    with pytest.raises(ConfigError, match=r"models.det.detection.classes.persn: no such class"):
        class_settings(config, ["person", "bag", "face"])


def test_top_k_zero_is_rejected_with_its_key_path(tmp_path):
    with pytest.raises(ConfigError, match=r"models.det.detection.classes.default: .*top_k"):
        load(tmp_path, onnx_models.detectnet(3), detection={"classes": {"default": {"top_k": 0}}})


def test_a_one_class_and_a_four_class_detector(tmp_path):
    for classes, names in ((1, ["person"]), (4, ["car", "bicycle", "person", "road_sign"])):
        cov = np.zeros((classes, 34, 60), np.float32)
        bbox = np.zeros((4 * classes, 34, 60), np.float32)
        cov[classes - 1, 5, 5] = 0.8
        bbox[4 * (classes - 1) : 4 * classes, 5, 5] = 0.5
        path = onnx_models.write(str(tmp_path / f"m{classes}.onnx"),
                                 onnx_models.detectnet(classes, cov=cov, bbox=bbox))  # fmt: skip
        task = load_task(build_config({"models": {"m": {"path": path, "class_names": names}}})
                         .models["m"])  # fmt: skip
        (detections,) = task.run([np.zeros((544, 960, 3), np.uint8)])
        assert [d.label for d in detections] == [names[-1]]


def test_missing_bbox_output_with_explicit_task_is_a_contract_error(tmp_path):
    data = onnx_models.classifier(3, input_name="input_1", output_name="output_cov/Sigmoid")
    with pytest.raises(ModelContractError, match="no bbox tensor named"):
        load(tmp_path, data, task="detection")
