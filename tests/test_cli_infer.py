"""`edged infer` as a real process: text and JSON output, annotated copies, bad inputs."""

import json
import os
import subprocess

import cv2
import numpy as np
import pytest

from edged.annotated_output import FALLBACK_FPS, output_fps

from . import onnx_models
from .conftest import run_cli


def make_images(folder):
    """Three images in the jetson-inference layout: <label>/<file>.png."""
    colours = {"r": (0, 0, 255), "g": (0, 255, 0), "b": (255, 0, 0)}
    for label, bgr in colours.items():
        os.makedirs(os.path.join(folder, label))
        image = np.zeros((40, 60, 3), np.uint8)
        image[:] = bgr
        cv2.imwrite(os.path.join(folder, label, "img.png"), image)
    return folder


def classifier(tmp_path):
    model = onnx_models.write(str(tmp_path / "rgb.onnx"), onnx_models.classifier(3))
    labels = tmp_path / "labels.txt"
    labels.write_text("r\ng\nb\n")
    return ["--model", model, "--labels", str(labels)]


def test_json_lines_per_image(tmp_path):
    images = make_images(str(tmp_path / "images"))
    result = run_cli(
        ["infer", "--json", "--top-k", "2", "--threshold", "0"] + classifier(tmp_path) + [images]
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [os.path.basename(os.path.dirname(r["input"])) for r in records] == ["b", "g", "r"]
    for record in records:
        expected = os.path.basename(os.path.dirname(record["input"]))
        assert record["top"][0]["label"] == expected
        assert set(record["top"][0]) == {"label", "class_id", "confidence"}
        assert len(record["top"]) == 2
        assert "frame" not in record


def test_text_output_and_annotated_copies(tmp_path):
    images = make_images(str(tmp_path / "images"))
    out = tmp_path / "out"
    result = run_cli(["infer", "--output", str(out)] + classifier(tmp_path) + [images])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and lines[0].endswith("%)") and ": b (" in lines[0]
    for label in "rgb":
        annotated = cv2.imread(str(out / label / "img.png"))
        assert annotated is not None
        original = cv2.imread(os.path.join(images, label, "img.png"))
        assert annotated.shape[0] >= original.shape[0]  # small images are enlarged for the label
        assert not np.array_equal(cv2.resize(annotated, (60, 40)), original)  # something was drawn


def test_video_input_gives_one_line_per_frame(tmp_path):
    path = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(5):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    out = tmp_path / "out"
    result = run_cli(["infer", "--json", "-o", str(out)] + classifier(tmp_path) + [path])
    assert result.returncode == 0, result.stderr
    frames = [json.loads(line)["frame"] for line in result.stdout.splitlines()]
    assert frames == [0, 1, 2, 3, 4]
    annotated = cv2.VideoCapture(str(out / "clip.mp4"))
    count = 0
    while annotated.read()[0]:
        count += 1
    assert count == 5


def test_an_unreadable_image_is_reported_and_the_rest_still_run(tmp_path):
    images = make_images(str(tmp_path / "images"))
    with open(os.path.join(images, "g", "broken.png"), "wb") as f:
        f.write(b"not a png")
    result = run_cli(["infer", "--json"] + classifier(tmp_path) + [images])
    assert result.returncode == 2
    assert len(result.stdout.splitlines()) == 3
    assert result.stderr.strip().splitlines() == [
        "edged: error: {}: not a readable image".format(os.path.join(images, "g", "broken.png"))
    ]


def test_truncated_model_gives_one_line_and_exit_2(tmp_path):
    data = onnx_models.classifier(3)
    model = onnx_models.write(str(tmp_path / "cut.onnx"), data[: len(data) // 2])
    images = make_images(str(tmp_path / "images"))
    result = run_cli(["infer", "--model", model, images])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"edged: error: {model}: not a valid ONNX model (truncated, damaged or another format)"
    ]


def test_missing_input_and_missing_model(tmp_path):
    result = run_cli(["infer"] + classifier(tmp_path) + [str(tmp_path / "nothing")])
    assert result.returncode == 2
    assert "nothing: no such file or directory" in result.stderr
    result = run_cli(["infer", str(tmp_path)])
    assert result.returncode == 2
    assert result.stderr.strip() == "edged: error: give a model with --model PATH or --config FILE"


@pytest.mark.parametrize(
    "flags, error",
    [(["--threshold", "5"], "--threshold: got 5.0; expected a value >= 0 and <= 1"),
     (["--threshold", "nan"], "--threshold: got nan; expected a finite number"),
     (["--top-k", "0"], "--top-k: got 0; expected a value >= 1 and <= 1000"),
     (["--threads", "-1"], "--threads: got -1; expected a value >= 0 and <= 64")],
)  # fmt: skip
def test_flag_values_are_validated_like_config_and_named_as_flags(tmp_path, flags, error):
    result = run_cli(["infer"] + flags + classifier(tmp_path) + [str(tmp_path)])
    assert result.returncode == 2
    assert result.stderr == f"edged: error: {error}\n"


def test_model_from_config_file(tmp_path):
    images = make_images(str(tmp_path / "images"))
    onnx_models.write(str(tmp_path / "rgb.onnx"), onnx_models.classifier(3))
    config = tmp_path / "edged.yaml"
    config.write_text(
        "models:\n  colours:\n    path: rgb.onnx\n    class_names: [r, g, b]\n"
        "    classification: {top_k: 3, threshold: 0}\n"
    )
    result = run_cli(["infer", "--json", "-c", str(config), images])
    assert result.returncode == 0, result.stderr
    first = json.loads(result.stdout.splitlines()[0])
    assert len(first["top"]) == 3 and first["top"][0]["label"] == "b"


def make_clip(path, fps, frames=5, size=(64, 48), fourcc="MJPG"):
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 40 * i, np.uint8))
    writer.release()
    return path


def ffprobe_rate(path):
    """The video stream's frame rate as ffprobe reads it, e.g. 10.0."""
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "stream=r_frame_rate", "-of", "default=nokey=1:noprint_wrappers=1", path],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=60,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    num, _, den = probe.stdout.strip().partition("/")
    return float(num) / float(den or 1)


@pytest.mark.parametrize("fps", [10.0, 30.0])
def test_annotated_video_keeps_the_source_frame_rate(tmp_path, fps):
    path = make_clip(str(tmp_path / "clip.avi"), fps)
    out = tmp_path / "out"
    result = run_cli(["infer", "-o", str(out)] + classifier(tmp_path) + [path])
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    annotated = cv2.VideoCapture(str(out / "clip.mp4"))
    assert annotated.get(cv2.CAP_PROP_FPS) == pytest.approx(fps)
    assert annotated.get(cv2.CAP_PROP_FRAME_COUNT) == 5
    annotated.release()
    # A second reader: ffprobe (ffmpeg, from tools/apt-packages.txt).
    assert ffprobe_rate(str(out / "clip.mp4")) == pytest.approx(fps)


def test_unknown_frame_rates_fall_back():
    assert output_fps(29.97) == 29.97
    for unusable in (0.0, -1.0, float("nan"), float("inf"), 90000.0):
        assert output_fps(unusable) is None
    assert FALLBACK_FPS == 25.0


def test_inputs_sharing_a_base_name_get_their_own_outputs(tmp_path):
    for folder, bgr in (("a", (0, 0, 255)), ("b", (255, 0, 0))):
        os.makedirs(str(tmp_path / "in" / folder))
        cv2.imwrite(str(tmp_path / "in" / folder / "x.png"), np.full((40, 60, 3), bgr, np.uint8))
    out = tmp_path / "out"
    inputs = [str(tmp_path / "in" / "a" / "x.png"), str(tmp_path / "in" / "b" / "x.png")]
    result = run_cli(["infer", "-o", str(out)] + classifier(tmp_path) + inputs)
    assert result.returncode == 0, result.stderr
    written = sorted(os.path.relpath(os.path.join(r, n), str(out)) for r, _, ns in os.walk(str(out))
                     for n in ns)  # fmt: skip
    assert written == [os.path.join("a", "x.png"), os.path.join("b", "x.png")]
    red = cv2.imread(str(out / "a" / "x.png"))
    blue = cv2.imread(str(out / "b" / "x.png"))
    assert red[-1, -1].tolist() == [0, 0, 255] and blue[-1, -1].tolist() == [255, 0, 0]
    # Two directories: the same mirrored layout.
    out2 = tmp_path / "out2"
    dirs = [str(tmp_path / "in" / "a"), str(tmp_path / "in" / "b")]
    result = run_cli(["infer", "-o", str(out2)] + classifier(tmp_path) + dirs)
    assert result.returncode == 0, result.stderr
    assert (out2 / "a" / "x.png").exists() and (out2 / "b" / "x.png").exists()


def test_videos_that_would_share_an_output_name_are_kept_apart(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    make_clip(str(folder / "x.avi"), 10.0, frames=3)
    make_clip(str(folder / "x.mp4"), 10.0, frames=4, fourcc="mp4v")
    out = tmp_path / "out"
    result = run_cli(["infer", "-o", str(out)] + classifier(tmp_path) + [str(folder)])
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(str(out))) == ["x-2.mp4", "x.mp4"]
    counts = [cv2.VideoCapture(str(out / n)).get(cv2.CAP_PROP_FRAME_COUNT) for n in
              ("x.mp4", "x-2.mp4")]  # fmt: skip
    assert counts == [3, 4]  # x.avi first (sorted), then x.mp4


def test_output_over_an_input_is_refused_and_the_inputs_are_kept(tmp_path):
    images = make_images(str(tmp_path / "images"))
    before = {label: (tmp_path / "images" / label / "img.png").read_bytes() for label in "rgb"}
    result = run_cli(["infer", "-o", images] + classifier(tmp_path) + [images])
    assert result.returncode == 2
    target = os.path.join(images, "b", "img.png")
    assert result.stderr.strip().splitlines() == [
        f"edged: error: --output {images}: would overwrite the input {target}; "
        "choose a directory outside the inputs"
    ]
    assert result.stdout == ""
    for label in "rgb":
        assert (tmp_path / "images" / label / "img.png").read_bytes() == before[label]
