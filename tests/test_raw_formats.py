"""Frames in their camera's own pixel format, from the source to the pre-processor (CPU, CI).

* :mod:`edged.pixels`: every format's conversion to BGR (BGRx, RGB(x) exact; YUV as
  ``cv2.cvtColor`` computes it), checked shapes, one conversion per frame.
* Capture plans as data (no Jetson, no GStreamer in pip's OpenCV): the CSI pipeline for a
  CUDA model (I420, no CPU ``videoconvert``) and for a CPU model (BGR as before); ``gst:``
  pipelines ending in any raw format OpenCV hands over are taken as they are, refused by
  ``edged check-config`` (exit 2) only in a format edged does not read, and refused at
  build time where the installed OpenCV's GStreamer backend refuses them (BGRx before 4.11).
* :class:`FakeCsiCamera` (a stand-in for a Jetson CSI camera, which CI lacks) delivers one
  picture as BGRx, I420 and BGR through the real supervisor into the daemon's worker on the
  CPU path: the same results as the BGR frames of the same picture, exactly; the snapshot's
  annotated JPEG is still drawn on BGR.
"""

import dataclasses
import threading

import cv2
import numpy as np
import pytest

from edged import pixels
from edged.errors import ConfigError, InputError, SourceError
from edged.mqtt.commands import annotated_jpeg
from edged.pipeline import preprocessors
from edged.pipeline.worker import InferenceWorker
from edged.sources import capture_plan, parse_source
from edged.sources.backends import OpenCvCapabilities, OpenCvSource
from edged.sources.frame import Frame
from edged.sources.gst_formats import appsink_caps_format

from . import onnx_models
from .conftest import run_cli
from .fake_csi import capture, picture
from .frames import FORMATS, from_bgr
from .test_pipeline import real_task

NANO = OpenCvCapabilities(
    version=(4, 1, 1), ffmpeg=True, gstreamer=True, v4l2=True, open_params=False,
    gstreamer_timeouts=False, origin="cv2 4.1.1 (JetPack 4.6)",
)  # fmt: skip
ORIN = NANO._replace(version=(4, 11, 0), open_params=True, origin="cv2 4.11.0")
APPSINK = "appsink drop=true max-buffers=1 sync=false"
CSI_HEAD = (
    "nvarguscamerasrc sensor-id=0 ! "
    "video/x-raw(memory:NVMM),width=1920,height=1080,framerate=30/1,format=NV12 ! "
    "nvvidconv flip-method=0 ! "
)
CSI_FOR_CPU = (
    CSI_HEAD + f"video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! {APPSINK}"
)
CSI_FOR_CUDA = CSI_HEAD + f"video/x-raw,format=I420 ! {APPSINK}"


# ---------------------------------------------------------------- edged.pixels


@pytest.mark.parametrize("fmt", ["bgr", "rgb", "bgrx", "rgbx"])
def test_rgb_layouts_convert_to_the_same_bgr_exactly(fmt):
    image = picture()
    np.testing.assert_array_equal(pixels.to_bgr(from_bgr(image, fmt), fmt), image)


@pytest.mark.parametrize(
    "fmt, code",
    [("i420", cv2.COLOR_YUV2BGR_I420), ("nv12", cv2.COLOR_YUV2BGR_NV12),
     ("yuyv", cv2.COLOR_YUV2BGR_YUY2), ("gray", cv2.COLOR_GRAY2BGR)],
)  # fmt: skip
def test_yuv_and_gray_convert_as_opencv_does(fmt, code):
    raw = from_bgr(picture(), fmt)
    got = pixels.to_bgr(raw, fmt)
    assert got.shape == (48, 64, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, cv2.cvtColor(raw, code))
    assert pixels.frame_size(raw, fmt) == (64, 48)


def test_every_format_the_kernel_reads_has_a_bgr_conversion():
    for fmt in FORMATS:
        assert pixels.to_bgr(from_bgr(picture(), fmt), fmt).shape == (48, 64, 3)


def test_a_frame_that_does_not_fit_its_format_is_one_clear_error():
    with pytest.raises(InputError, match=r"i420 frames are \(H\*3/2\) x W"):
        pixels.to_bgr(np.zeros((48, 64, 3), np.uint8), "i420")
    with pytest.raises(InputError, match="unknown pixel format 'uyvy'"):
        pixels.to_bgr(np.zeros((48, 64, 2), np.uint8), "uyvy")


def test_a_frame_converts_to_bgr_once_and_a_bgr_frame_not_at_all():
    image = picture()
    bgr = Frame("cam", 0, 0.0, 0.0, (64, 48), image)
    assert bgr.bgr() is image
    i420 = Frame("cam", 0, 0.0, 0.0, (64, 48), from_bgr(image, "i420"), 0, "i420")
    first = i420.bgr()
    assert i420.bgr() is first and first.shape == (48, 64, 3)


# ---------------------------------------------------------------- capture plans as data


def test_csi_pipeline_for_a_cpu_model_converts_to_bgr_as_before():
    plan = capture_plan(parse_source("csi://0"), NANO)
    assert (plan.target, plan.pixel_format) == (CSI_FOR_CPU, "bgr")


def test_csi_pipeline_for_a_cuda_model_hands_over_i420_with_no_cpu_element():
    spec = _with_gpu_frames(parse_source("csi://0"))
    for caps in (NANO, ORIN):
        plan = capture_plan(spec, caps)
        assert (plan.target, plan.pixel_format) == (CSI_FOR_CUDA, "i420")
        assert "videoconvert" not in plan.target


def _with_gpu_frames(spec):
    return dataclasses.replace(spec, gpu_frames=True)  # what the daemon does for a CUDA model


GST = "v4l2src device=/dev/video0 ! nvvidconv ! "


@pytest.mark.parametrize(
    "tail, caps, want",
    [
        (f"video/x-raw,format=I420 ! {APPSINK}", NANO, "i420"),
        (f"video/x-raw, format=(string)NV12, width=1280 ! {APPSINK}", NANO, "nv12"),
        (f'video/x-raw,format="GRAY8" ! {APPSINK}', NANO, "gray"),
        (f"video/x-raw,format=YUY2 ! {APPSINK}", NANO, "yuyv"),
        (f"video/x-raw,format=BGR ! {APPSINK}", NANO, "bgr"),
        (f"videoconvert ! {APPSINK}", NANO, "bgr"),  # OpenCV negotiates BGR itself
        (f"video/x-raw,format=BGRx ! {APPSINK}", ORIN, "bgrx"),
        ("video/x-raw,format=RGBA ! appsink name=opencvsink", ORIN, "rgbx"),
    ],
)
def test_a_gst_pipeline_is_taken_in_the_format_it_ends_in(tail, caps, want):
    plan = capture_plan(parse_source("gst:" + GST + tail), caps)
    assert plan.target == GST + tail and plan.pixel_format == want


def test_bgrx_at_the_appsink_is_refused_where_opencv_refuses_it():
    spec = parse_source(f"gst:{GST}video/x-raw,format=BGRx ! {APPSINK}")
    with pytest.raises(SourceError) as err:
        capture_plan(spec, NANO)
    assert "cv2 4.1.1 (JetPack 4.6) refuses appsink caps format=BGRx" in str(err.value)
    assert "from 4.11.0" in str(err.value) and "I420, NV12 or BGR" in str(err.value)


def test_appsink_caps_are_the_last_caps_before_the_appsink():
    assert appsink_caps_format("a ! video/x-raw,format=NV12 ! b ! appsink") is None
    assert appsink_caps_format("video/x-raw,format=NV12 ! appsink") == "NV12"
    assert appsink_caps_format("appsink") is None


def test_check_config_takes_raw_gst_pipelines_and_refuses_formats_edged_cannot_read(tmp_path):
    model = onnx_models.write(str(tmp_path / "m.onnx"), onnx_models.classifier(3))
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    body = "models:\n  m:\n    path: {}\nstreams:\n  cam:\n    model: m\n    source: 'gst:{}'\n"
    good.write_text(body.format(model, GST + f"video/x-raw,format=I420 ! {APPSINK}"))
    bad.write_text(body.format(model, GST + f"video/x-raw,format=UYVY ! {APPSINK}"))
    result = run_cli(["check-config", str(good)])
    assert result.returncode == 0, result.stderr
    result = run_cli(["check-config", str(bad)])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "streams.cam.source: a GStreamer source's appsink caps format=UYVY" in line
    assert "I420" in line and "BGRx" in line


class FakeCapture:
    """cv2.VideoCapture stand-in: hands over ``frames`` (what GStreamer's appsink would)."""

    def __init__(self, frames):
        self.frames = list(frames)

    def isOpened(self):
        return True

    def read(self):
        return (True, self.frames.pop(0)) if self.frames else (False, None)

    def set(self, *_):
        return True

    def release(self):
        pass


class FakeCv2:
    """The installed cv2 (constants, cvtColor), with VideoCapture opening a FakeCapture."""

    def __init__(self, frames):
        self._frames = frames
        self.error = cv2.error

    def __getattr__(self, name):
        return getattr(cv2, name)

    def VideoCapture(self, *args):  # noqa: N802 - cv2's name
        return FakeCapture(self._frames)


def test_opencv_source_hands_a_pipelines_raw_frames_over_unconverted():
    i420 = from_bgr(picture(), "i420")
    spec = _with_gpu_frames(parse_source("csi://0"))
    source = OpenCvSource(spec, FakeCv2([i420, np.zeros((48, 64, 3), np.uint8)]), NANO)
    assert source.pixel_format == "i420"
    source.open()
    assert source.read() is i420
    with pytest.raises(SourceError, match="i420 frames are"):
        source.read()  # a BGR array where I420 was declared: the source is broken, not the frame


# ---------------------------------------------------------------- the daemon's worker


@pytest.mark.parametrize("preprocess", ["task", "cpu preprocessor"])
def test_bgrx_and_i420_frames_give_the_results_of_the_same_picture_in_bgr(tmp_path, preprocess):
    task = real_task(tmp_path)
    pictures = [picture(seed=s) for s in range(3)]
    i420_pictures = [pixels.to_bgr(from_bgr(p, "i420"), "i420") for p in pictures]

    def results(fmt, source_pictures):
        pre = None
        if preprocess != "task":
            pre = preprocessors.CpuPreprocessor(preprocessors.contract_of(task))
        worker = InferenceWorker("m", task, lambda r: None, threading.Event(), preprocessor=pre)
        frames = capture(worker, fmt, source_pictures)
        assert [(f.pixel_format, f.source_size) for f in frames] == [(fmt, (64, 48))] * 3
        out = [worker.process([f])[0] for f in frames]
        return [[i.to_dict() for i in r.items] for r in out], worker

    bgr, _ = results("bgr", pictures)
    bgrx, worker = results("bgrx", pictures)
    assert bgrx == bgr  # BGRx -> BGR drops a byte: exact
    # I420 is the picture subsampled: compared with the BGR picture OpenCV makes of it
    assert results("i420", pictures)[0] == results("bgr", i420_pictures)[0]

    frame, result = worker.latest["cam"]
    assert frame.pixel_format == "bgrx" and frame.image.shape == (48, 64, 4)
    jpeg, size = annotated_jpeg(frame.bgr(), result, 640, 90)
    drawn = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_UNCHANGED)
    assert drawn.shape == (size[1], size[0], 3)
    assert jpeg == annotated_jpeg(pictures[-1], result, 640, 90)[0]  # the BGR picture's JPEG


def test_cpu_preprocessor_takes_each_frames_format(tmp_path):
    task = real_task(tmp_path)
    pre = preprocessors.CpuPreprocessor(preprocessors.contract_of(task))
    image = picture()
    want = pre.run([image])[0]
    got = pre.run([from_bgr(image, "bgrx"), image], ["bgrx", "bgr"])
    np.testing.assert_array_equal(got[0], want)
    np.testing.assert_array_equal(got[1], want)
    guessed = pre.run([from_bgr(image, "bgrx")])[0]  # no formats: told from the shape
    np.testing.assert_array_equal(guessed, want)


def test_daemon_asks_for_gpu_frames_only_for_a_cuda_worker(tmp_path):
    from edged.daemon_streams import source_for

    spec = parse_source("csi://0")

    class Cuda:
        name = "cuda"

    cuda = InferenceWorker("m", None, lambda r: None, threading.Event(), preprocessor=Cuda())
    cpu = InferenceWorker("m", None, lambda r: None, threading.Event())
    assert source_for(spec, cuda).gpu_frames is True
    assert source_for(spec, cpu) is spec and spec.gpu_frames is False
    with pytest.raises(ConfigError):
        parse_source(f"gst:{GST}video/x-raw,format=UYVY ! {APPSINK}")
