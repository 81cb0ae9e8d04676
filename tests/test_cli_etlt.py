"""`edged infer` on .etlt files: decrypted in memory, and every bad file is one line with exit 2."""

import json
import os
import struct

import cv2
import numpy as np

from edged.etlt import encode_etlt

from . import onnx_models
from .conftest import run_cli


def detector_bytes():
    cov = np.zeros((3, 34, 60), np.float32)
    bbox = np.zeros((12, 34, 60), np.float32)
    cov[0, 10, 20] = 0.9
    bbox[0:4, 10, 20] = 1.0
    return onnx_models.detectnet(3, cov=cov, bbox=bbox)


def frame_file(tmp_path):
    path = str(tmp_path / "frame.png")
    cv2.imwrite(path, np.zeros((576, 768, 3), np.uint8))
    return path


def infer(tmp_path, model, *extra):
    return run_cli(["infer", "--json", "--model", model] + list(extra) + [frame_file(tmp_path)])


def one_error_line(result):
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_etlt_gives_the_same_detections_as_its_onnx(tmp_path):
    plain = onnx_models.write(str(tmp_path / "det.onnx"), detector_bytes())
    etlt = onnx_models.write(
        str(tmp_path / "det.etlt"), encode_etlt(detector_bytes(), "tlt_encode")
    )
    from_onnx = infer(tmp_path, plain, "--labels", labels(tmp_path))
    from_etlt = infer(tmp_path, etlt, "--model-key", "tlt_encode", "--labels", labels(tmp_path))
    assert from_onnx.returncode == 0 and from_etlt.returncode == 0, from_etlt.stderr
    assert from_onnx.stdout == from_etlt.stdout
    (record,) = [json.loads(line) for line in from_etlt.stdout.splitlines()]
    assert [d["label"] for d in record["detections"]] == ["person"]
    assert record["frame"] == 0


def labels(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("person\nbag\nface\n")
    return str(path)


def test_the_key_can_come_from_a_file_or_the_environment(tmp_path):
    etlt = onnx_models.write(str(tmp_path / "det.etlt"), encode_etlt(detector_bytes(), "k3y"))
    key_file = tmp_path / "key.txt"
    key_file.write_text("k3y\n")
    assert infer(tmp_path, etlt, "--model-key-file", str(key_file)).returncode == 0
    env_run = run_cli(
        ["infer", "--model", etlt, "--model-key-env", "EDGED_TEST_KEY", frame_file(tmp_path)],
        env={"EDGED_TEST_KEY": "k3y"},
    )
    assert env_run.returncode == 0, env_run.stderr


def test_wrong_key(tmp_path):
    etlt = onnx_models.write(str(tmp_path / "det.etlt"), encode_etlt(detector_bytes(), "right"))
    line = one_error_line(infer(tmp_path, etlt, "--model-key", "wrong"))
    assert line == f"edged: error: {etlt}: wrong model key or corrupt file"


def test_the_key_never_appears_in_output(tmp_path):
    etlt = onnx_models.write(str(tmp_path / "det.etlt"), encode_etlt(detector_bytes(), "s3cr3t"))
    result = run_cli(
        ["-vv", "infer", "--model", etlt, "--model-key", "n0tIt", frame_file(tmp_path)]
    )
    assert "n0tIt" not in result.stderr + result.stdout
    result = run_cli(["-vv", "infer", "--model", etlt, "--model-key", "s3cr3t",
                      frame_file(tmp_path)])  # fmt: skip
    assert result.returncode == 0
    assert "s3cr3t" not in result.stderr + result.stdout


def test_missing_key(tmp_path):
    etlt = onnx_models.write(str(tmp_path / "det.etlt"), encode_etlt(detector_bytes(), "k"))
    line = one_error_line(infer(tmp_path, etlt))
    assert line.startswith(f"edged: error: {etlt}: an .etlt model needs its model key")


def test_truncated_etlt(tmp_path):
    blob = encode_etlt(detector_bytes(), "tlt_encode")
    for size in (2, 10, len(blob) // 2):
        etlt = onnx_models.write(str(tmp_path / f"cut{size}.etlt"), blob[:size])
        line = one_error_line(infer(tmp_path, etlt, "--model-key", "tlt_encode"))
        assert line.startswith(f"edged: error: {etlt}: "), line
        assert (
            "truncated" in line or "wrong model key or corrupt file" in line or "not a TAO" in line
        )


def test_absurd_name_length(tmp_path):
    body = encode_etlt(detector_bytes(), "tlt_encode")[4:]
    for n in (2**31, 2**31 - 1):  # 2**31 wraps to a negative int32
        header = struct.pack("<I", n)
        etlt = onnx_models.write(str(tmp_path / f"n{n}.etlt"), header + body)
        line = one_error_line(infer(tmp_path, etlt, "--model-key", "tlt_encode"))
        assert line.startswith(f"edged: error: {etlt}: not a TAO .etlt file"), line


def test_uff_payload_on_onnxruntime_says_what_it_needs(tmp_path):
    # A UFF-style header (N > 0: the input node name) with a plausible UFF MetaGraph payload.
    uff = b"\x08\x01\x10\x01"  # version = 1, descriptor_core_version = 1
    etlt = onnx_models.write(
        str(tmp_path / "old_peoplenet.etlt"), encode_etlt(uff, "tlt_encode", input_name="input_1")
    )
    line = one_error_line(infer(tmp_path, etlt, "--model-key", "tlt_encode"))
    assert "UFF model, which only TensorRT 8.6 or older" in line
    assert os.path.basename(etlt) in line
