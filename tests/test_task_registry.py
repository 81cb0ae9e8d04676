"""The task registry and input contract: recognition, contract resolution, INT8 calibration.

The calibration tests build with the FAKE TensorRT of tests/fake_tensorrt.py (NOT
exercising TensorRT itself): what they check is which pre-processing edged feeds the
calibrator, from real image files, through the same options, JSON and cache path the
build process uses.
"""

import json

import numpy as np
import pytest

from edged.backends.base import TensorSpec
from edged.config import parse_config
from edged.config import schema as config_schema
from edged.engine.builder import EngineBuilder
from edged.engine.cache import EngineCache
from edged.engine.options import BuildOptions, options_for_model
from edged.engine.service import prepare_calibration, target_for
from edged.errors import ConfigError
from edged.modelfile import ModelArtifact
from edged.tasks.base import ModelTensors
from edged.tasks.classification import IMAGENET_MEAN, IMAGENET_STD, ClassificationTask
from edged.tasks.contract import InputContract, InputDefaults
from edged.tasks.detectnet import DetectNetV2Task
from edged.tasks.preprocess import preprocess_image
from edged.tasks.registry import (
    TASKS,
    calibration_contract,
    calibration_request,
    recognise,
    task_class,
    task_names,
)

from .fake_tensorrt import make_trt
from .test_engine_cache import XAVIER

CLASSIFIER_IO = {"inputs": [("input_0", (1, 3, 8, 8))], "outputs": [("output_0", (1, 10))]}
DETECTOR_IO = {
    "inputs": [("input_1", (1, 3, 32, 48))],
    "outputs": [("output_cov/Sigmoid", (1, 3, 2, 3)), ("output_bbox/BiasAdd", (1, 12, 2, 3))],
}


def model(yaml_model, tmp_path):
    return parse_config("models:\n  m: " + yaml_model + "\n", str(tmp_path)).models["m"]


def tensors(io):
    return ModelTensors(
        [TensorSpec(n, s, np.float32) for n, s in io["inputs"]],
        [TensorSpec(n, s, np.float32) for n, s in io["outputs"]],
    )


# -- the registry -----------------------------------------------------------------------------


def test_every_registered_task_is_a_schema_task_and_the_other_way_round():
    schema = config_schema()
    enum = schema["definitions"]["model"]["properties"]["task"]["enum"]
    assert enum == ["auto"] + task_names()
    for task in TASKS:
        assert task.config_section in schema["definitions"]["model"]["properties"]


def test_auto_picks_the_first_task_that_recognises_the_model(tmp_path):
    config = model("{path: m.onnx}", tmp_path)
    assert recognise(tensors(DETECTOR_IO), config) is DetectNetV2Task
    assert recognise(tensors(CLASSIFIER_IO), config) is ClassificationTask
    renamed = model("{path: m.onnx, detection: {coverage_output: cov, bbox_output: box}}", tmp_path)
    outputs = [("cov", (1, 1, 2, 2)), ("box", (1, 4, 2, 2))]
    io = {"inputs": CLASSIFIER_IO["inputs"], "outputs": outputs}
    assert recognise(tensors(io), renamed) is DetectNetV2Task
    assert recognise(tensors(DETECTOR_IO), renamed) is ClassificationTask  # names configured


def test_a_named_task_is_taken_as_named(tmp_path):
    config = model("{path: m.onnx, task: classification}", tmp_path)
    assert recognise(tensors(DETECTOR_IO), config) is ClassificationTask
    assert task_class("detection") is DetectNetV2Task
    with pytest.raises(ConfigError, match="task 'yolo': expected auto or one of detection, class"):
        task_class("yolo")


def test_infer_offers_the_registered_tasks(capsys):
    from edged.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["infer", "x.png", "--task", "detection"]).task == "detection"
    with pytest.raises(SystemExit):
        parser.parse_args(["infer", "x.png", "--task", "yolo"])
    assert "'auto', 'detection', 'classification'" in capsys.readouterr().err


# -- the contract -----------------------------------------------------------------------------


def test_each_task_declares_its_contract_defaults(tmp_path):
    config = model("{path: m.onnx}", tmp_path)
    spec = TensorSpec("input_0", (1, 3, 224, 200), np.float32)
    assert ClassificationTask.input_contract(config, spec) == InputContract(
        200, 224, "rgb", 1.0 / 255.0, IMAGENET_MEAN, IMAGENET_STD, "nearest"
    )
    assert DetectNetV2Task.input_contract(config, spec) == InputContract(200, 224)


def test_the_model_input_config_overrides_the_task_defaults(tmp_path):
    config = model(
        "{path: m.onnx, input: {color: bgr, scale: 1.0, mean: [1, 2, 3], resize: area,"
        " width: 64, height: 32}}",
        tmp_path,
    )
    spec = TensorSpec("input_0", (None, 3, None, None), np.float32)
    got = ClassificationTask.input_contract(config, spec)
    assert got == InputContract(64, 32, "bgr", 1.0, (1.0, 2.0, 3.0), IMAGENET_STD, "area")
    assert InputDefaults().resolve(5, 6) == InputContract(5, 6)


def test_a_loaded_task_preprocesses_with_its_contract(tmp_path):
    from edged.tasks.loader import load_task

    from . import onnx_models

    path = onnx_models.write(str(tmp_path / "c.onnx"), onnx_models.classifier(3, size=16))
    task = load_task(model("{path: " + path + "}", tmp_path))
    assert task.contract == InputContract(
        16, 16, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize="nearest"
    )
    frame = np.random.RandomState(1).randint(0, 256, (37, 51, 3)).astype(np.uint8)
    assert np.array_equal(task.preprocess(frame), preprocess_image(frame, task.contract))


# -- INT8 calibration (the defect: a classifier calibrated as a detector) ---------------------


def calibrated_batch(tmp_path, yaml_model, io):
    """The first batch the calibrator hands TensorRT for ``yaml_model`` parsed as ``io``."""
    import cv2

    folder = tmp_path / "calib"
    folder.mkdir()
    rng = np.random.RandomState(7)
    images = [rng.randint(0, 256, (21, 33, 3)).astype(np.uint8) for _ in range(2)]
    for i, image in enumerate(images):
        assert cv2.imwrite(str(folder / f"{i}.png"), image)
    config = parse_config(
        "models:\n  m: " + yaml_model + "\n", str(tmp_path)
    ).models["m"]  # fmt: skip
    engine = parse_config("models: {}\n", str(tmp_path)).engine
    options = options_for_model(engine, config)
    # what the build child receives: the options as JSON
    options = BuildOptions.from_dict(json.loads(json.dumps(options.to_dict())))
    artifact = ModelArtifact(str(tmp_path / "m.onnx"), "onnx", b"model")
    target = target_for(artifact, options, XAVIER)
    calibration = prepare_calibration(options, EngineCache(str(tmp_path / "c")), target.inputs)
    uploaded = []
    calibration = calibration._replace(upload=lambda b: uploaded.append(b.copy()) or 1)
    trt = make_trt(fast_int8=True, io=io)
    EngineBuilder(trt).build(artifact, options, calibration=calibration)
    assert trt.config.int8_calibrator.get_batch(["input"]) == [1]
    return images, uploaded[0]


INT8 = "engine: {precision: int8, calibration: {images: calib, batch_size: 2}}"
AUTO_INT8 = "{path: m.onnx, " + INT8 + "}"


def test_int8_calibration_of_an_auto_classifier_uses_the_classification_contract(tmp_path):
    images, batch = calibrated_batch(tmp_path, AUTO_INT8, CLASSIFIER_IO)
    contract = InputContract(8, 8, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize="nearest")
    assert batch.shape == (2, 3, 8, 8)
    for got, image in zip(batch, images):
        assert np.array_equal(got, preprocess_image(image, contract))


def test_int8_calibration_of_an_auto_detector_uses_the_detection_contract(tmp_path):
    images, batch = calibrated_batch(tmp_path, AUTO_INT8, DETECTOR_IO)
    assert batch.shape == (2, 3, 32, 48)
    for got, image in zip(batch, images):
        assert np.array_equal(got, preprocess_image(image, InputContract(48, 32)))


def test_int8_calibration_follows_the_input_config(tmp_path):
    yaml_model = "{path: m.onnx, task: classification, input: {resize: linear, scale: 1.0}, "
    images, batch = calibrated_batch(tmp_path, yaml_model + INT8 + "}", DETECTOR_IO)
    contract = InputContract(
        48, 32, scale=1.0, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize="linear"
    )
    assert np.array_equal(batch[0], preprocess_image(images[0], contract))


def test_the_calibration_request_holds_only_what_shapes_the_contract(tmp_path):
    base = model("{path: m.onnx}", tmp_path)
    other_threshold = model("{path: m.onnx, detection: {classes: {default: {threshold: 0.9}}}}",
                            tmp_path)  # fmt: skip
    renamed = model("{path: m.onnx, detection: {coverage_output: cov}}", tmp_path)
    assert calibration_request(base) == calibration_request(other_threshold)
    assert calibration_request(base) != calibration_request(renamed)
    named = model("{path: m.onnx, task: detection}", tmp_path)
    assert "recognise" not in calibration_request(named)


def test_calibration_of_an_implicit_batch_uff_network_reads_chw(tmp_path):
    io = [
        {"name": "input_1", "mode": "input", "shape": [3, 544, 960], "dtype": "float"},
        {"name": "output_cov/Sigmoid", "mode": "output", "shape": [3, 34, 60], "dtype": "float"},
        {"name": "output_bbox/BiasAdd", "mode": "output", "shape": [12, 34, 60], "dtype": "float"},
    ]
    request = calibration_request(model("{path: p.etlt}", tmp_path))
    assert calibration_contract(request, io, "p.etlt") == InputContract(960, 544)
