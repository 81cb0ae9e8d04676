"""OpenCV sources: backend decisions (CSI/V4L2 pipelines without the hardware) and real
files, image directories and devices through the installed cv2.

No CSI camera or V4L2 device exists in CI: their capture plans (pipeline strings,
properties, backend choice) are checked as data, the GStreamer-missing error is
checked against the installed pip wheel (which really lacks GStreamer), and a
V4L2 open of a device that does not exist goes through the real V4L2 backend.
"""

import logging
import os
import threading

import cv2
import numpy as np
import pytest

from edged.errors import SourceError
from edged.sources import (
    ENDED,
    ImageDirectorySource,
    LatestSlot,
    SourceSupervisor,
    backends,
    build_source,
    capture_plan,
    csi_pipeline,
    opencv_capabilities,
    parse_source,
)
from edged.sources.backends import FFMPEG_OPTIONS_ENV, OpenCvCapabilities, _build_flag

JETSON = OpenCvCapabilities(
    version=(4, 5, 4), ffmpeg=True, gstreamer=True, v4l2=True, open_params=True,
    gstreamer_timeouts=False, origin="cv2 4.5.4 (JetPack 5 style)",
)  # fmt: skip
NANO = JETSON._replace(version=(4, 1, 1), open_params=False, origin="cv2 4.1.1 (JetPack 4.6)")
WHEEL = JETSON._replace(version=(4, 6, 0), gstreamer=False, origin="cv2 4.6.0 (pip wheel)")

CSI_1080P30 = (
    "nvarguscamerasrc sensor-id=0 ! "
    "video/x-raw(memory:NVMM),width=1920,height=1080,framerate=30/1,format=NV12 ! "
    "nvvidconv flip-method=0 ! video/x-raw,format=BGRx ! "
    "videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false"
)


# ---------------------------------------------------------------- capabilities


def test_build_information_flags_are_read_in_both_layouts():
    modern = (
        "  Video I/O:\n    FFMPEG:                      YES\n    GStreamer:                   NO\n"
    )
    assert _build_flag(modern, "FFMPEG") is True
    assert _build_flag(modern, "GStreamer") is False
    jetpack_4 = (
        "  Video I/O:\n    GStreamer:                   \n"
        "      base:                      YES (ver 1.14.5)\n"
        "      app:                       YES (ver 1.14.5)\n    v4l/v4l2:  YES\n"
    )
    assert _build_flag(jetpack_4, "GStreamer") is True
    assert _build_flag("nothing here", "GStreamer") is False


def test_the_installed_pip_wheel_has_ffmpeg_and_v4l2_but_no_gstreamer():
    caps = opencv_capabilities()
    assert caps.ffmpeg and caps.v4l2
    assert not caps.gstreamer, "CI's opencv-python-headless is expected to lack GStreamer"
    assert caps.open_params == (caps.version >= (4, 5, 4))


# ---------------------------------------------------------------- CSI and gst: plans


def test_csi_pipeline_is_the_nvarguscamerasrc_nv12_to_bgr_appsink_chain():
    spec = parse_source("csi://0")
    plan = capture_plan(spec, JETSON)
    assert plan.api == "CAP_GSTREAMER"
    assert plan.target == CSI_1080P30
    assert plan.params == ()  # OpenCV 4.5.4's GStreamer backend has no timeouts


def test_csi_pipeline_carries_sensor_size_rate_and_flip():
    assert csi_pipeline(2, 1280, 720, 60, flip_method=2) == CSI_1080P30.replace(
        "sensor-id=0", "sensor-id=2"
    ).replace(
        "width=1920,height=1080,framerate=30/1", "width=1280,height=720,framerate=60/1"
    ).replace("flip-method=0", "flip-method=2")
    assert "framerate=30000/1001" in csi_pipeline(0, 1920, 1080, 29.97)


def test_gstreamer_timeouts_are_passed_only_where_opencv_supports_them():
    spec = parse_source("csi://0", open_timeout_s=3, read_timeout_s=4)
    plan = capture_plan(spec, JETSON._replace(version=(4, 8, 0), gstreamer_timeouts=True))
    assert dict(plan.params) == {
        "CAP_PROP_OPEN_TIMEOUT_MSEC": 3000,
        "CAP_PROP_READ_TIMEOUT_MSEC": 4000,
    }


def test_a_raw_gstreamer_pipeline_is_opened_as_given():
    pipeline = "v4l2src device=/dev/video0 ! videoconvert ! video/x-raw,format=BGR ! appsink"
    plan = capture_plan(parse_source("gst:" + pipeline), JETSON)
    assert (plan.api, plan.target) == ("CAP_GSTREAMER", pipeline)


@pytest.mark.parametrize("source", ["csi://0", "gst:videotestsrc ! appsink"])
def test_gstreamer_sources_on_an_opencv_without_gstreamer_fail_with_one_clear_line(source):
    with pytest.raises(SourceError) as raised:
        capture_plan(parse_source(source), WHEEL)
    text = str(raised.value)
    assert "needs OpenCV built with GStreamer" in text
    assert "JetPack's python3-opencv has it; pip wheels do not" in text


def test_the_real_pip_wheel_refuses_a_csi_camera_before_opening_anything():
    with pytest.raises(SourceError, match="needs OpenCV built with GStreamer"):
        build_source(parse_source("csi://0"))


# ---------------------------------------------------------------- network plans


def test_rtsp_opens_with_ffmpeg_timeouts_as_open_params_and_tcp_transport():
    spec = parse_source("rtsp://u:p@cam/s", open_timeout_s=5, read_timeout_s=7)
    plan = capture_plan(spec, JETSON)
    assert plan.api == "CAP_FFMPEG"
    assert dict(plan.params) == {
        "CAP_PROP_OPEN_TIMEOUT_MSEC": 5000,
        "CAP_PROP_READ_TIMEOUT_MSEC": 7000,
    }
    assert plan.ffmpeg_options == "rtsp_transport;tcp"
    assert capture_plan(parse_source("rtsp://cam/s", transport="udp"), JETSON).ffmpeg_options == (
        "rtsp_transport;udp"
    )


def test_old_opencv_gets_the_read_timeout_as_ffmpeg_stimeout_instead():
    plan = capture_plan(parse_source("rtsp://cam/s", read_timeout_s=7), NANO)
    assert plan.params == ()
    assert plan.ffmpeg_options == "rtsp_transport;tcp|stimeout;7000000"


def test_non_rtsp_urls_leave_the_ffmpeg_options_alone():
    plan = capture_plan(parse_source("http://cam/video.mjpg"), JETSON)
    assert plan.ffmpeg_options is None and plan.api == "CAP_FFMPEG"


def test_network_sources_without_ffmpeg_suggest_a_gstreamer_pipeline():
    with pytest.raises(SourceError, match="needs OpenCV built with FFmpeg.*gst:rtspsrc"):
        capture_plan(parse_source("rtsp://cam/s"), JETSON._replace(ffmpeg=False))


class RecordingCv2:
    """Stands in for cv2 only to observe the process environment during an open."""

    CAP_FFMPEG = 1900
    CAP_PROP_OPEN_TIMEOUT_MSEC = 53
    CAP_PROP_READ_TIMEOUT_MSEC = 54
    error = cv2.error

    def __init__(self):
        self.calls = []

    def VideoCapture(self, *args):  # noqa: N802 - cv2's name
        self.calls.append((args, os.environ.get(FFMPEG_OPTIONS_ENV)))
        return "capture"


def test_rtsp_transport_is_set_in_the_environment_only_for_the_duration_of_the_open(monkeypatch):
    monkeypatch.delenv(FFMPEG_OPTIONS_ENV, raising=False)
    monkeypatch.setattr(backends, "_OPERATOR_FFMPEG_OPTIONS", None)
    fake = RecordingCv2()
    plan = capture_plan(parse_source("rtsp://cam/s", open_timeout_s=2, read_timeout_s=3), JETSON)
    assert backends._open_with_ffmpeg_options(fake, plan) == "capture"
    ((args, env_during_open),) = fake.calls
    assert env_during_open == "rtsp_transport;tcp"
    assert args == ("rtsp://cam/s", 1900, [53, 2000, 54, 3000])
    assert FFMPEG_OPTIONS_ENV not in os.environ


def test_an_operators_own_ffmpeg_options_win(monkeypatch, caplog):
    monkeypatch.setenv(FFMPEG_OPTIONS_ENV, "rtsp_transport;udp")
    monkeypatch.setattr(backends, "_OPERATOR_FFMPEG_OPTIONS", "rtsp_transport;udp")
    monkeypatch.setattr(backends, "_warned_operator_options", False)
    fake = RecordingCv2()
    plan = capture_plan(parse_source("rtsp://cam/s"), JETSON)
    with caplog.at_level(logging.INFO, logger="edged.sources.backends"):
        backends._open_with_ffmpeg_options(fake, plan)
        backends._open_with_ffmpeg_options(fake, plan)
    assert [env for _, env in fake.calls] == ["rtsp_transport;udp"] * 2
    assert caplog.text.count("is set in the environment") == 1


def test_concurrent_network_opens_each_see_their_own_transport(monkeypatch):
    monkeypatch.delenv(FFMPEG_OPTIONS_ENV, raising=False)
    monkeypatch.setattr(backends, "_OPERATOR_FFMPEG_OPTIONS", None)
    fake = RecordingCv2()
    plans = [
        capture_plan(parse_source(f"rtsp://cam{i}/s", transport=("tcp", "udp")[i % 2]), JETSON)
        for i in range(40)
    ]
    threads = [
        threading.Thread(target=backends._open_with_ffmpeg_options, args=(fake, p)) for p in plans
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    for ((args, env),) in ((c,) for c in fake.calls):
        index = int(args[0][len("rtsp://cam") :].split("/")[0])
        assert env == "rtsp_transport;" + ("tcp", "udp")[index % 2]


# ---------------------------------------------------------------- V4L2


def test_v4l2_plan_sets_format_size_rate_and_a_one_frame_buffer():
    spec = parse_source("/dev/video0", width=1280, height=720, fps=30, fourcc="MJPG")
    plan = capture_plan(spec, JETSON)
    assert plan.api == "CAP_V4L2"
    assert dict(plan.set_after_open) == {
        "CAP_PROP_FOURCC": float(cv2.VideoWriter_fourcc(*"MJPG")),
        "CAP_PROP_FRAME_WIDTH": 1280.0,
        "CAP_PROP_FRAME_HEIGHT": 720.0,
        "CAP_PROP_FPS": 30.0,
        "CAP_PROP_BUFFERSIZE": 1.0,
    }


def test_v4l2_by_id_links_are_resolved_at_every_open(tmp_path):
    link = tmp_path / "usb-cam-video-index0"
    os.symlink("/dev/video7", str(link))
    spec = parse_source("v4l2://" + str(link))
    assert capture_plan(spec, JETSON).target == "/dev/video7"
    os.remove(str(link))
    os.symlink("/dev/video9", str(link))  # replugged: the camera came back as video9
    assert capture_plan(spec, JETSON).target == "/dev/video9"


def test_a_missing_v4l2_device_fails_to_open_with_a_hint_and_is_retried_not_refused():
    source = build_source(parse_source("/dev/video97"))  # devices may appear later: no preflight
    with pytest.raises(SourceError, match="cannot open /dev/video97 with OpenCV's V4L2 backend"):
        source.open()
    source.close()


# ---------------------------------------------------------------- real files


@pytest.fixture(scope="module")
def avi(tmp_path_factory):
    """10 distinct 64x48 frames at 20 fps, written by OpenCV's own VideoWriter (MJPG/AVI)."""
    path = str(tmp_path_factory.mktemp("video") / "ten.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 20.0, (64, 48))
    assert writer.isOpened(), "OpenCV cannot write MJPG/AVI here"
    for i in range(10):
        frame = np.zeros((48, 64, 3), np.uint8)
        cv2.putText(frame, str(i), (20, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (255, 255, 255), 2)
        writer.write(frame)
    writer.release()
    return path


def read_all(source, limit):
    images = []
    while len(images) < limit:
        image = source.read()
        if image is None:
            if source.ended:
                break
            continue
        images.append(image)
    return images


def test_a_video_file_played_once_ends_after_its_last_frame(avi):
    source = build_source(parse_source(avi, loop=False))
    source.open()
    images = read_all(source, 100)
    source.close()
    assert len(images) == 10 and source.ended
    assert all(i.shape == (48, 64, 3) and i.dtype == np.uint8 for i in images)


def test_a_looping_video_file_starts_again_at_its_end(avi):
    source = build_source(parse_source(avi, loop=True))
    source.open()
    images = read_all(source, 25)
    source.close()
    assert len(images) == 25 and not source.ended
    assert np.array_equal(images[0], images[10]) and np.array_equal(images[3], images[23])


def test_a_file_is_paced_at_its_own_frame_rate_unless_told_otherwise(avi):
    source = build_source(parse_source(avi))
    source.open()
    assert source.pace_fps == pytest.approx(20.0)
    source.close()
    assert build_source(parse_source(avi, fps=5)).pace_fps == 5
    assert build_source(parse_source(avi, realtime=False)).pace_fps is None


def test_a_missing_file_is_refused_up_front(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        build_source(parse_source(str(tmp_path / "nope.mp4")))


def test_a_file_that_is_not_a_video_fails_to_open(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("not a video")
    with pytest.raises(SourceError, match="cannot open .*notes.mp4 .*not a video"):
        build_source(parse_source(str(path))).open()


def test_supervised_file_played_once_delivers_every_frame_then_ends(avi):
    stop = threading.Event()
    spec = parse_source(avi, loop=False, realtime=False)
    supervisor = SourceSupervisor("file", build_source(spec), stop, slot=LatestSlot(100))
    supervisor.start()
    supervisor._thread.join(30)
    status = supervisor.status()
    assert status.state == ENDED and status.frames == 10 and status.drops == 0
    assert [supervisor.slot.get_nowait().seq for _ in range(10)] == list(range(10))
    assert supervisor.stop() is True


def test_a_file_read_as_fast_as_possible_waits_for_a_slow_consumer_and_loses_nothing(avi):
    stop = threading.Event()
    spec = parse_source(avi, loop=True, realtime=False)  # as fast as the consumer takes them
    supervisor = SourceSupervisor("fast", build_source(spec), stop)
    supervisor.start()
    seen = []
    largest = 0
    try:
        while len(seen) < 20:
            largest = max(largest, len(supervisor.slot))
            frame = supervisor.slot.get(timeout=5)
            assert frame is not None, supervisor.status()
            seen.append(frame.seq)
            stop.wait(0.02)  # a slow consumer: 50 frames per second at most
    finally:
        stop.set()
        assert supervisor.stop() is True
    assert largest <= 1
    assert supervisor.status().drops == 0
    assert seen == list(range(20))  # every frame, in order: a file is not a camera


# ---------------------------------------------------------------- image directories


@pytest.fixture()
def image_dir(tmp_path):
    for i, name in enumerate(["b.png", "a.jpg", "c.bmp"]):
        cv2.imwrite(str(tmp_path / name), np.full((8, 12, 3), 50 * (i + 1), np.uint8))
    cv2.imwrite(str(tmp_path / "gray.png"), np.full((8, 12), 7, np.uint8))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "notes.txt").write_text("ignored")
    return tmp_path


def test_an_image_directory_delivers_sorted_files_as_bgr_and_skips_broken_ones(image_dir, caplog):
    source = build_source(parse_source(str(image_dir), loop=False))
    assert isinstance(source, ImageDirectorySource)
    source.open()
    assert [os.path.basename(p) for p in source.files()] == [
        "a.jpg",
        "b.png",
        "broken.jpg",
        "c.bmp",
        "gray.png",
    ]
    with caplog.at_level(logging.WARNING, logger="edged.sources.images"):
        reads = [source.read() for _ in range(6)]
    values = [None if r is None else int(r[0, 0, 0]) for r in reads]
    assert values == [100, 50, None, 150, 7, None]
    assert all(r.shape == (8, 12, 3) for r in reads if r is not None)
    assert source.ended
    assert caplog.text.count("broken.jpg") == 1


def test_a_looping_image_directory_starts_over_and_picks_up_new_files(image_dir):
    source = build_source(parse_source(str(image_dir), loop=True))
    source.open()
    first_round = [source.read() for _ in range(5)]
    cv2.imwrite(str(image_dir / "d.png"), np.full((8, 12, 3), 222, np.uint8))
    second_round = [source.read() for _ in range(6)]
    assert not source.ended
    assert int(second_round[0][0, 0, 0]) == int(first_round[0][0, 0, 0])
    assert int(second_round[4][0, 0, 0]) == 222


def test_an_empty_or_missing_image_directory_is_an_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="has no"):
        build_source(parse_source(str(empty))).open()
    with pytest.raises(SourceError, match="does not exist"):
        build_source(parse_source(str(tmp_path / "gone") + "/"))


def test_image_directories_pace_at_their_fps():
    spec = parse_source("/srv/images/", fps=2)
    assert ImageDirectorySource(spec).pace_fps == 2
    assert ImageDirectorySource(parse_source("/srv/images/")).pace_fps == backends.DEFAULT_IMAGE_FPS
