"""Model files: every way a model file can be bad gives one ModelError naming the file."""

import pytest

from edged.backends import create_backend
from edged.errors import ModelError, ModelFormatError
from edged.modelcheck import ONNX, UFF
from edged.modelfile import ModelArtifact, load_model_artifact

from . import onnx_models


@pytest.fixture
def good_onnx(tmp_path):
    return onnx_models.write(str(tmp_path / "good.onnx"), onnx_models.classifier(3))


def test_a_good_model_loads_with_its_sha256(good_onnx):
    import hashlib

    artifact = load_model_artifact(good_onnx)
    assert artifact.format == ONNX
    with open(good_onnx, "rb") as f:
        assert artifact.sha256 == hashlib.sha256(f.read()).hexdigest()
    assert artifact.name == "good"


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match=r"nope.onnx: model file not found"):
        load_model_artifact(str(tmp_path / "nope.onnx"))


def test_directory(tmp_path):
    with pytest.raises(ModelError, match="is a directory"):
        load_model_artifact(str(tmp_path))


def test_empty_file(tmp_path):
    path = onnx_models.write(str(tmp_path / "empty.onnx"), b"")
    with pytest.raises(ModelFormatError, match="empty.onnx: model file is empty"):
        load_model_artifact(path)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.999])
def test_truncated_model_is_rejected_before_the_runtime(good_onnx, fraction):
    with open(good_onnx, "rb") as f:
        data = f.read()
    with open(good_onnx, "wb") as f:
        f.write(data[: int(len(data) * fraction)])
    with pytest.raises(ModelFormatError, match="good.onnx: not a valid ONNX model"):
        load_model_artifact(good_onnx)


def test_other_formats_are_rejected(tmp_path):
    png = onnx_models.write(str(tmp_path / "photo.onnx"), b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(ModelFormatError, match="photo.onnx: not a valid ONNX model"):
        load_model_artifact(png)
    text = onnx_models.write(str(tmp_path / "notes.onnx"), b"hello, this is text\n" * 20)
    with pytest.raises(ModelFormatError):
        load_model_artifact(text)


def test_uff_payload_on_onnxruntime_says_why():
    artifact = ModelArtifact("people.etlt", UFF, b"\x08\x01", input_name="input_1", encrypted=True)
    with pytest.raises(ModelFormatError, match="UFF model, which only TensorRT 8.6 or older"):
        create_backend("onnxruntime", artifact)
