"""The demo classifier: the deployed `edged infer` reproduces the accuracy training measured."""

import json
import os

from .conftest import REPO, run_cli

MODEL_DIR = os.path.join(REPO, "models", "resnet18-digits")
HOLDOUT = os.path.join(REPO, "tests", "data", "digits", "test")


def stated_accuracy():
    with open(os.path.join(MODEL_DIR, "metrics.json")) as f:
        metrics = json.load(f)
    return metrics["holdout_top1_accuracy"], metrics["holdout_images"]


def test_the_model_readme_states_the_measured_accuracy():
    accuracy, images = stated_accuracy()
    with open(os.path.join(MODEL_DIR, "README.md")) as f:
        readme = f.read()
    assert f"{100 * accuracy:.2f} %" in readme or f"{100 * accuracy:.2f}%" in readme
    assert str(images) in readme


def test_edged_infer_reproduces_the_holdout_accuracy():
    result = run_cli(
        [
            "infer", "--json",
            "--model", os.path.join(MODEL_DIR, "resnet18.onnx"),
            "--labels", os.path.join(MODEL_DIR, "labels.txt"),
            HOLDOUT,
        ]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    accuracy, images = stated_accuracy()
    assert len(records) == images
    correct = sum(
        r["top"][0]["label"] == os.path.basename(os.path.dirname(r["input"])) for r in records
    )
    measured = correct / float(len(records))
    assert measured >= 0.95  # the floor a useful demo classifier must reach
    assert abs(measured - accuracy) <= 0.01, (measured, accuracy)


def test_the_digits_config_runs_the_same_model():
    result = run_cli(
        ["infer", "--json", "-c", os.path.join(REPO, "configs", "classify-digits.yaml"),
         os.path.join(HOLDOUT, "7")]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) >= 40
    assert all(len(r["top"]) <= 3 for r in records)
    assert sum(r["top"][0]["label"] == "7" for r in records) >= len(records) - 1
